"""The classes Patroni finds for its `citus` section once `register()` ran.

`Citus` is what Patroni's DCS layer gets from `get_mpp` (the group, the coordinator's group
id, the group key pattern); `CitusHandler` is what Patroni's `Postgresql` gets from
`Citus.get_handler_impl`, found there as Patroni finds its own handler (the first direct
subclass whose name starts with the class name). Their `type` is `Citus`, as Patroni's code
and its REST endpoint expect.

Every decision is the policy component's. On the coordinator, from the first heartbeat on,
one owner thread (`owner.py`) makes every component call and runs every statement; the
methods Patroni calls from its heartbeat and REST threads only hand their inputs over, and
only `handle_event(before_demote)`, `bootstrap`, `adjust_postgres_gucs` and
`ignore_replication_slot` wait for an answer, each with a bound. A worker (or a coordinator
before it leads) has no state machine to run and no owner thread: its pure calls run on the
thread that asks, one at a time under the owner's lock.
"""

from __future__ import annotations

import functools
import logging
import threading
import weakref
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Union

from patroni.postgresql.mpp import AbstractMPPHandler
from patroni.postgresql.mpp.citus import Citus as _StockCitus

from ..errors import CitusHaError
from ..policy import (
    BootstrapStep,
    CitusConfig,
    CreateDatabase,
    CreateExtension,
    InsertAuthinfo,
    Policy,
    ReplicationSlot,
    SetCoordinatorHost,
    SuperuserAuth,
)
from .dcs_view import cluster_bodies
from .owner import Owner, OwnerTimeout, OwnerUnavailable, Timing, wait_bound
from .section import CitusSection, CitusSectionError, read_section
from .session import POOL_NAME, PatroniSession, sqlstate

if TYPE_CHECKING:  # pragma: no cover
    from patroni.dcs import Cluster
    from patroni.postgresql import Postgresql

log = logging.getLogger("citus_ha.patroni")

#: Bounds on the calls that wait for the owner (seconds). A pure call waits at most for the
#: statement the owner is running (itself bounded by `statement_timeout`).
GUC_WAIT = 60.0
SLOT_WAIT = 30.0
BOOTSTRAP_WAIT = 600.0
#: `statement_timeout` of the bootstrap's statements (CREATE DATABASE may copy a large template).
BOOTSTRAP_STATEMENT_TIMEOUT_MS = 300_000


def _section(config: Mapping[str, Any]) -> CitusSection:
    verdict = read_section(config)
    if not isinstance(verdict, CitusSection):
        raise CitusSectionError("citus", verdict.reason)
    return verdict


class Citus(_StockCitus):
    """Patroni's Citus MPP (its group pattern and coordinator group id), with the group read
    as `section.py` reads it."""

    @staticmethod
    def validate_config(config: Any) -> bool:
        try:
            return isinstance(read_section(config), CitusSection)
        except CitusSectionError:
            return False

    @property
    def group(self) -> int:
        return _section(self._config).group


def _timing() -> Timing:
    """Patroni's `ttl`, `loop_wait` and `retry_timeout` as its global configuration has them
    now (it follows the DCS's dynamic configuration)."""
    from patroni import global_config

    return Timing(float(global_config.get_int("ttl", 30)),
                  float(global_config.get_int("loop_wait", 10)),
                  float(global_config.get_int("retry_timeout", 10)))


def _typed(old: Any, new: str) -> Any:
    """A GUC value the policy printed, in the type Patroni had it in (an int stays an int)."""
    if isinstance(old, int) and not isinstance(old, bool):
        try:
            return int(new)
        except ValueError:
            return new
    return new


class CitusHandler(Citus, AbstractMPPHandler):
    """Patroni's Citus handler, every decision made by the citus-ha policy component."""

    def __init__(self, postgresql: Postgresql, config: Dict[str, Union[str, int]]) -> None:
        AbstractMPPHandler.__init__(self, postgresql, config)
        section = _section(config)
        self.citus = CitusConfig(section.group, section.database)
        self._owner: Optional[Owner] = None
        self._owner_lock = threading.Lock()

    # ----- the owner ----------------------------------------------------------------------

    @property
    def owner(self) -> Optional[Owner]:
        """The owner, once something needed the policy; its thread runs from the first
        heartbeat on (a worker's pure calls run on the thread that asks, one at a time)."""
        return self._owner

    def _session(self, timing: Timing) -> PatroniSession:
        # Patroni's own pooled connection, as the reference handler gets it: Patroni's
        # connection parameters (kept current on reload) and the Citus database. Connecting
        # waits at most retry_timeout, a statement at most ttl; an open pause has no limit
        # but the policy's deadline.
        conn = self._postgresql.connection_pool.get(POOL_NAME, {
            "dbname": self.citus.database,
            "connect_timeout": max(1, int(timing.retry_timeout)),
            "options": f"-c statement_timeout={int(timing.ttl * 1000)} "
                       "-c idle_in_transaction_session_timeout=0"})
        return PatroniSession(conn, int(timing.ttl * 1000))

    def _owner_for(self) -> Owner:
        owner = self._owner
        if owner is not None:
            return owner
        with self._owner_lock:
            if self._owner is None:
                timing = _timing()
                coordinator = self.is_coordinator()
                # Patroni asks for GUCs before it knows its connection string: the first
                # heartbeat hands the string over.
                url = getattr(self._postgresql, "connection_string", None)
                self._owner = Owner(self.citus, self._postgresql.name,
                                    url if isinstance(url, str) else "",
                                    self._session(timing) if coordinator else None,
                                    timing=timing, load_policy=Policy.load)
                # A handler Patroni let go of (a new Postgresql object) stops its thread.
                weakref.finalize(self, self._owner.stop, 0)
            return self._owner

    def _call(self, what: str, fn: Any, timeout: float) -> Any:
        try:
            return self._owner_for().call(fn, timeout)
        except OwnerTimeout as e:
            raise CitusHaError(f"citus-ha: {what}: the policy's owner did not answer within "
                               f"{timeout:.0f} s") from e

    # ----- the heartbeat loop -------------------------------------------------------------

    def sync_meta_data(self, cluster: Cluster) -> None:
        """Hands this loop's DCS view over to the owner; returns at once."""
        if not self.is_coordinator():
            return
        owner = self._owner_for()
        owner.heartbeat(functools.partial(cluster_bodies, cluster),
                        self._postgresql.connection_string or "", _timing())
        owner.start()

    def on_demote(self) -> None:
        """The coordinator stops leading: its session (and a pause it holds) is dropped."""
        if self._owner is not None:
            self._owner.demote()

    def schedule_cache_rebuild(self) -> None:
        """pg_dist_node must be read again before the next decision."""
        if self._owner is not None:
            self._owner.reload()

    # ----- the REST API -------------------------------------------------------------------

    def handle_event(self, cluster: Cluster, event: Dict[str, Any]) -> None:
        """A worker's event. `before_demote` returns once the pause is in place, or after the
        event's `timeout` (the worker's `ttl`); every other event returns at once."""
        if not self.is_coordinator():
            return
        owner = self._owner
        if owner is None or not owner.running:
            log.info("Discarding event %s: no heartbeat handed over yet", event)
            return
        wait = wait_bound(event, owner.timing.ttl)
        reply = owner.event(functools.partial(cluster_bodies, cluster), event, wait)
        if isinstance(event, dict) and event.get("type") == "before_demote":
            if not reply.wait(wait):
                log.warning("before_demote from group %s: the pause was not in place after "
                            "%.0f s", event.get("group"), wait)
                return
            try:
                reply.result(0)
            except CitusHaError as e:
                log.warning("event %s: %s", event, e)

    # ----- configuration, bootstrap, slots ------------------------------------------------

    def adjust_postgres_gucs(self, parameters: Dict[str, Any]) -> None:
        """Citus's parameters, as the policy adjusts them, written into `parameters`."""
        host = self._postgresql.connection_pool.conn_kwargs.get("host")
        given = {k: v for k, v in parameters.items() if v is not None}
        adjusted = self._call("adjust_postgres_gucs",
                              lambda p: p.adjust_gucs(given, host if isinstance(host, str)
                                                      else None), GUC_WAIT)
        for k, v in adjusted.items():
            old = parameters.get(k)
            if old is None or str(old) != v or isinstance(old, bool):
                parameters[k] = _typed(old, v)

    def _slot_name(self, slot: Mapping[str, Any]) -> Optional[str]:
        name = slot.get("name")
        if isinstance(name, str):
            return name
        # Patroni 4.1 hands over the slot's attributes without its name; the name is the key
        # the same dictionary is kept under in Patroni's slot handler.
        handler = getattr(self._postgresql, "slots_handler", None)
        known = getattr(handler, "_replication_slots", None)
        if isinstance(known, dict):
            for key, value in known.items():
                if value is slot:
                    return str(key)
        return None

    def ignore_replication_slot(self, slot: Dict[str, str]) -> bool:
        """True for a slot Citus made (a shard move or split) on a primary: never dropped."""
        name = self._slot_name(slot)
        if name is None:
            log.warning("replication slot %s: its name is unknown, so it is not kept", slot)
            return False
        is_primary = bool(self._postgresql.is_primary())
        rs = ReplicationSlot(name, str(slot.get("type")), slot.get("database"), slot.get("plugin"))
        citus = self.citus
        try:
            return bool(self._call("ignore_replication_slot",
                                   lambda p: p.keep_replication_slot(citus, is_primary, rs),
                                   SLOT_WAIT))
        except (CitusHaError, OwnerUnavailable) as e:
            # Dropping a shard move's slot breaks the move; keeping a stray one costs WAL
            # until the next check. Keep it.
            log.warning("replication slot %s: %s; kept for now", name, e)
            return True

    def bootstrap(self) -> None:
        """Prepares a new node for Citus: the database, the extension, pg_dist_authinfo, and
        on the coordinator its own row, as the policy plans them."""
        pg = self._postgresql
        superuser = pg.config.superuser
        auth = SuperuserAuth(*(superuser.get(k) for k in ("password", "sslcert", "sslkey")))
        url = pg.connection_string if self.is_coordinator() else None
        citus, default_db = self.citus, pg.database
        conn_kwargs = {**pg.connection_pool.conn_kwargs,
                       "options": "-c synchronous_commit=local "
                                  f"-c statement_timeout={BOOTSTRAP_STATEMENT_TIMEOUT_MS}"}

        def run(policy: Policy) -> None:
            steps = policy.bootstrap_plan(citus, default_db, auth, url)
            _run_bootstrap(steps, conn_kwargs, citus.database)

        self._call("bootstrap", run, BOOTSTRAP_WAIT)


def _patroni_sql() -> Any:
    # Patroni's own `connect` (autocommit, its driver) and `quote_ident` (the driver's
    # identifier quoting), looked up where the reference handler imports them, so that a
    # test replacing the reference's replaces ours too.
    from patroni.postgresql.mpp import citus as stock

    return stock


def _run_bootstrap(steps: List[BootstrapStep], conn_kwargs: Dict[str, Any],
                   database: str) -> None:
    creates = [s for s in steps if isinstance(s, CreateDatabase)]
    rest = [s for s in steps if not isinstance(s, CreateDatabase)]
    sql = _patroni_sql()
    if creates:
        conn = sql.connect(**conn_kwargs)
        try:
            with conn.cursor() as cur:
                for create in creates:
                    # An identifier cannot be a bound parameter: the driver quotes it.
                    try:
                        cur.execute(f"CREATE DATABASE {sql.quote_ident(create.name, conn)}")
                    except Exception as e:
                        if sqlstate(e) != "42P04":  # duplicate_database: it exists already
                            raise
                        log.debug("database %s exists already", create.name)
        finally:
            conn.close()
    if not rest:
        return
    conn = sql.connect(**{**conn_kwargs, "dbname": database})
    try:
        with conn.cursor() as cur:
            for s in rest:
                if isinstance(s, CreateExtension):
                    cur.execute("CREATE EXTENSION IF NOT EXISTS citus")
                elif isinstance(s, InsertAuthinfo):
                    cur.execute("INSERT INTO pg_catalog.pg_dist_authinfo VALUES "
                                "(0, pg_catalog.current_user(), %s)", (s.authinfo,))
                elif isinstance(s, SetCoordinatorHost):
                    cur.execute("SELECT pg_catalog.citus_set_coordinator_host(%s, %s, "
                                "'primary', 'default')", (s.host, s.port))
    finally:
        conn.close()

