"""The policy component in Python's terms: `Policy` (a loaded build and its pure functions)
and `Handler` (the coordinator's metadata state machine), sandboxed and self-healing."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import wasmtime.component as wc

from ._runtime import DEFAULT_LIMITS, Instance, Limits, compile_component, exports_of, imports_of
from .errors import InvalidInput, PolicyLoadError, PolicyTrap
from .statements import Batch, Results
from .view import ClusterView, GroupBodies, ViewWriter, view_text

log = logging.getLogger("citus_ha")

CONTRACT = "0.4.0"
_POLICY = f"citus-ha:policy/policy@{CONTRACT}"
_HOST = (f"citus-ha:policy/types@{CONTRACT}", f"citus-ha:policy/host@{CONTRACT}")
#: A build that traps this many times in a row is replaced by the bundled one.
TRAPS_BEFORE_FALLBACK = 2


@dataclass(frozen=True)
class CitusConfig:
    """The validated `citus` config section."""

    group: int
    database: str

    @property
    def is_coordinator(self) -> bool:
        return self.group == 0


@dataclass(frozen=True)
class ReplicationSlot:
    name: str
    slot_type: str
    database: Optional[str] = None
    plugin: Optional[str] = None


@dataclass(frozen=True)
class SuperuserAuth:
    password: Optional[str] = None
    sslcert: Optional[str] = None
    sslkey: Optional[str] = None


@dataclass(frozen=True)
class CreateDatabase:
    """Create this database unless it exists (quote it server-side with format('%I'))."""

    name: str


@dataclass(frozen=True)
class CreateExtension:
    """CREATE EXTENSION IF NOT EXISTS citus, in the citus database."""


@dataclass(frozen=True)
class InsertAuthinfo:
    """INSERT INTO pg_catalog.pg_dist_authinfo VALUES (0, current_user, $1)"""

    authinfo: str


@dataclass(frozen=True)
class SetCoordinatorHost:
    """SELECT pg_catalog.citus_set_coordinator_host($1, $2, 'primary', 'default')"""

    host: str
    port: int


BootstrapStep = Union[CreateDatabase, CreateExtension, InsertAuthinfo, SetCoordinatorHost]


@dataclass(frozen=True)
class Queued:
    """The event's task is queued; `Handler.poll_completed` reports the ticket when done."""

    ticket: int


@dataclass(frozen=True)
class Unchanged:
    """Nothing to do: the metadata already matches."""


@dataclass(frozen=True)
class Discarded:
    """Not acted on (not ready yet, the sender does not lead its group, ...)."""

    reason: str


EventOutcome = Union[Queued, Unchanged, Discarded]


@dataclass(frozen=True)
class Metrics:
    deadline_rollbacks: int
    statements: int
    failed_statements: int
    sync_retries: int
    #: Pauses dropped, never started, because their caller stopped waiting first.
    expired_events: int
    queued_tasks: int
    in_flight: bool


def _invalid(r: Any) -> InvalidInput:
    return InvalidInput(r.field, r.reason)


def _tagged(r: Any) -> Tuple[str, Any]:
    """A `result`: the runtime lifts every one tagged (`Variant('ok'|'err', payload)`)."""
    return r.tag, r.payload


def _checked(r: Any) -> Any:
    """The ok payload of a `result<_, invalid-input>`-like answer, or the InvalidInput."""
    if r.tag == "err":
        raise _invalid(r.payload)
    return r.payload


def _record(**fields: Any) -> wc.Record:
    r = wc.Record()
    for k, v in fields.items():
        setattr(r, k.replace("_", "-"), v)
    return r


def _bundled(name: str) -> bytes:
    try:
        return resources.files("citus_ha").joinpath("components", name).read_bytes()
    except (FileNotFoundError, OSError) as e:
        raise PolicyLoadError(
            f"the bundled component {name} is missing: build it with `cargo build -p citus-ha` "
            "and install the package with ./dev (it copies target/guest/*.wasm here)") from e


class Policy:
    """A loaded policy build: its pure functions, and handlers that run in its sandbox."""

    def __init__(self, wasm: bytes, source: str, limits: Limits = DEFAULT_LIMITS) -> None:
        self.component, self.sha256 = compile_component(wasm, source)
        self.source = source
        self.limits = limits
        exports = exports_of(self.component)
        if _POLICY not in exports:
            raise PolicyLoadError(
                f"{source}: exports {list(exports)}, but this host runs contract {CONTRACT} "
                f"({_POLICY})")
        self.imports = imports_of(self.component)
        extra = [i for i in self.imports if i not in _HOST]
        if extra:
            raise PolicyLoadError(f"{source}: imports {extra}; a policy may import only {_HOST}")
        self.contract = CONTRACT
        self._functions: Optional[Instance] = None

    @classmethod
    def load(cls, path: Union[str, Path, None] = None, *, limits: Limits = DEFAULT_LIMITS
             ) -> Policy:
        """The bundled policy build, or the component at `path`."""
        if path is None:
            return cls(_bundled("policy.wasm"), "bundled", limits)
        p = Path(path)
        try:
            wasm = p.read_bytes()
        except OSError as e:
            raise PolicyLoadError(f"cannot read {p}: {e}") from e
        return cls(wasm, str(p), limits)

    @property
    def label(self) -> str:
        return f"{self.contract}@{self.sha256[:12]}"

    def instance(self) -> Instance:
        return Instance(self.component, _POLICY, self.label, self.limits, _HOST)

    def _call(self, name: str, *args: Any) -> Any:
        if self._functions is None or self._functions.dead:
            self._functions = self.instance()
        return self._functions.call(name, *args)

    # ----- pure functions -----------------------------------------------------------------

    def version(self) -> str:
        return str(self._call("policy-version"))

    def validate_config(self, section: Union[Mapping[str, Any], str]) -> CitusConfig:
        """The `citus` config section (a mapping or its JSON), validated."""
        text = section if isinstance(section, str) else json.dumps(section)
        tag, r = _tagged(self._call("validate-config", text))
        if tag == "err":
            raise _invalid(r)
        return CitusConfig(r.group, r.database)

    def adjust_gucs(self, params: Mapping[str, Any], local_host: Optional[str] = None
                    ) -> Dict[str, str]:
        """PostgreSQL parameters adjusted for Citus (values as PostgreSQL would print them)."""
        def text(v: Any) -> str:
            if isinstance(v, bool):
                return "on" if v else "off"
            return str(v)
        tag, r = _tagged(self._call("adjust-gucs", [(k, text(v)) for k, v in params.items()],
                                    local_host))
        if tag == "err":
            raise _invalid(r)
        return dict(r)

    def keep_replication_slot(self, config: CitusConfig, is_primary: bool,
                              slot: ReplicationSlot) -> bool:
        """True when this slot belongs to Citus and must never be dropped."""
        return bool(self._call("keep-replication-slot", _record(group=config.group,
                                                                database=config.database),
                               is_primary,
                               _record(name=slot.name, slot_type=slot.slot_type,
                                       database=slot.database, plugin=slot.plugin)))

    def bootstrap_plan(self, config: CitusConfig, default_database: str,
                       auth: SuperuserAuth = SuperuserAuth(),
                       connect_url: Optional[str] = None) -> List[BootstrapStep]:
        """The statements that prepare a new node for Citus."""
        tag, r = _tagged(self._call(
            "bootstrap-plan", _record(group=config.group, database=config.database),
            default_database, _record(password=auth.password, sslcert=auth.sslcert,
                                      sslkey=auth.sslkey), connect_url))
        if tag == "err":
            raise _invalid(r)
        steps: List[BootstrapStep] = []
        for s in r:
            t, p = (s.tag, s.payload) if isinstance(s, wc.Variant) else (str(s), None)
            if t == "create-database":
                steps.append(CreateDatabase(p))
            elif t == "create-extension":
                steps.append(CreateExtension())
            elif t == "insert-authinfo":
                steps.append(InsertAuthinfo(p))
            elif t == "set-coordinator-host":
                steps.append(SetCoordinatorHost(p[0], p[1]))
        return steps

    # ----- handlers -----------------------------------------------------------------------

    def handler(self, config: CitusConfig, name: str, connect_url: str) -> Handler:
        """A fresh state machine for this node."""
        return Handler._new(self, config, name, connect_url)

    def import_handler(self, state: str) -> Handler:
        """A state machine continuing from an exported state (`InvalidInput` if refused)."""
        return Handler._import(self, state)


class Handler:
    """The coordinator's metadata state machine, in the policy's sandbox.

    Inputs go in (heartbeats, worker events, results, demote, reload), statements come out.
    Every call runs with a fuel budget in a memory-capped Store. When a call traps, the
    Handler raises `PolicyTrap` after replacing its instance: restored from its last
    `snapshot()`, or (without one) a fresh handler that reloads pg_dist_node first; when the
    build traps twice in a row, from the bundled build instead.
    """

    def __init__(self, policy: Policy, instance: Instance, resource: Any,
                 identity: Tuple[CitusConfig, str, str]) -> None:
        self.policy = policy
        self._inst = instance
        self._res = resource
        self._identity = identity
        self._writer = ViewWriter()
        self._snapshot: Optional[str] = None
        self._consecutive_traps = 0
        self.traps = 0
        #: The build used when this one keeps trapping (None: the bundled build, if loadable).
        self.fallback: Optional[Policy] = None

    @classmethod
    def _new(cls, policy: Policy, config: CitusConfig, name: str, url: str) -> Handler:
        inst = policy.instance()
        res = inst.call("[constructor]handler",
                        _record(group=config.group, database=config.database), name, url)
        return cls(policy, inst, res, (config, name, url))

    @classmethod
    def _import(cls, policy: Policy, state: str,
                identity: Optional[Tuple[CitusConfig, str, str]] = None) -> Handler:
        inst = policy.instance()
        r = inst.call("[static]handler.import-state", state)
        if r.tag == "err":
            raise InvalidInput("state", str(r.payload))
        h = cls(policy, inst, r.payload, identity or (CitusConfig(0, ""), "", ""))
        h._snapshot = state
        return h

    # ----- the sandbox --------------------------------------------------------------------

    def _call(self, name: str, *args: Any) -> Any:
        try:
            r = self._inst.call(name, self._res, *args)
        except PolicyTrap:
            self.traps += 1
            self._consecutive_traps += 1
            self._recover()
            raise
        return r

    def _recover(self) -> None:
        build = self.policy
        if self._consecutive_traps >= TRAPS_BEFORE_FALLBACK:
            try:
                fallback = self.fallback or Policy.load(limits=self.policy.limits)
            except PolicyLoadError as e:
                log.error("no build to fall back to: %s", e)
                fallback = self.policy
            if fallback.sha256 != self.policy.sha256:
                log.warning("the policy keeps trapping; falling back to %s", fallback.source)
            build = fallback
        self._writer.reset()
        if self._snapshot is not None:
            try:
                h = Handler._import(build, self._snapshot, self._identity)
                self._adopt(h)
                return
            except (InvalidInput, PolicyTrap) as e:
                log.error("cannot restore the last snapshot: %s", e)
        config, name, url = self._identity
        h = Handler._new(build, config, name, url)
        h._inst.call("[method]handler.schedule-reload", h._res)
        self._adopt(h)

    def _adopt(self, other: Handler) -> None:
        if self.policy.sha256 != other.policy.sha256:
            self._consecutive_traps = 0
        self.policy, self._inst, self._res = other.policy, other._inst, other._res

    def snapshot(self) -> str:
        """Exports the state and keeps it as the point to restore after a trap (the `Agent`
        does this after every turn)."""
        self._snapshot = self.export_state()
        self._consecutive_traps = 0
        return self._snapshot

    def replace(self, policy: Policy) -> None:
        """Hot swap: export, import into `policy`, warm up, and only then switch. Raises
        `SwapRefused` (this handler keeps running) if any step fails."""
        from .errors import SwapRefused

        try:
            state = self.export_state()
        except PolicyTrap as e:
            raise SwapRefused(f"the running policy could not export its state: {e}") from e
        try:
            nxt = Handler._import(policy, state, self._identity)
        except (InvalidInput, PolicyTrap) as first:
            # A build older than the compact format reads only JSON: offer that.
            try:
                nxt = Handler._import(policy, self.export_state("json"), self._identity)
            except (InvalidInput, PolicyTrap) as e:
                raise SwapRefused(f"state import failed: {first}; as JSON: {e}") from e
        try:
            nxt._inst.call("[method]handler.poll-timeout", nxt._res)
            nxt.policy.version()
        except PolicyTrap as e:
            raise SwapRefused(f"warm-up failed: {e}") from e
        self.policy, self._inst, self._res = policy, nxt._inst, nxt._res
        self._writer.reset()
        self._snapshot = state
        self._consecutive_traps = 0

    # ----- inputs -------------------------------------------------------------------------

    def heartbeat(self, now: int, view: Union[ClusterView, GroupBodies]) -> None:
        """Reconcile with this DCS view (coordinator only): a `ClusterView`, or its groups'
        bodies as an HA manager writes them from its own objects."""
        text = (self._writer.write(view) if isinstance(view, ClusterView)
                else self._writer.write_bodies(view))
        try:
            r = self._call("[method]handler.handle-heartbeat", now, text)
        except PolicyTrap:
            self._writer.reset()
            raise
        if r.tag == "err":
            self._writer.reset()
            raise _invalid(r.payload)

    def event(self, now: int, view: Union[ClusterView, GroupBodies],
              body: Union[str, Mapping[str, Any]]) -> EventOutcome:
        """A worker's REST event (the JSON body as received) with the DCS view now."""
        text = body if isinstance(body, str) else json.dumps(body)
        r = _checked(self._call("[method]handler.handle-event", now, view_text(view), text))
        if isinstance(r, int) and not isinstance(r, bool):
            return Queued(r)
        if isinstance(r, str):
            return Discarded(r)
        return Unchanged()

    def schedule_reload(self) -> None:
        """The metadata cache must be reloaded before the next decision."""
        self._call("[method]handler.schedule-reload")

    def demote(self) -> None:
        """This coordinator stopped being the leader: forget everything."""
        self._call("[method]handler.handle-demote")

    def set_connect_url(self, url: str) -> None:
        """This node's connection URL changed (used from the next heartbeat on)."""
        _checked(self._call("[method]handler.set-connect-url", url))
        c, n, _ = self._identity
        self._identity = (c, n, url)

    # ----- outputs ------------------------------------------------------------------------

    def poll_statements(self, now: int) -> Batch:
        """The first statements of a turn, in order (empty: nothing to do); then each
        `handle_results` answers with the next batch."""
        return Batch(self._call("[method]handler.poll-statements", now))

    def handle_results(self, now: int, results: Results) -> Batch:
        """The results of the last batch, in order, up to the first that failed; answers
        with the next batch (empty: this turn is over), so a turn is one call per batch."""
        return Batch(_checked(self._call("[method]handler.handle-results", now, results.text)))

    def poll_timeout(self) -> Optional[int]:
        """When the host must run a turn even without new input (ms on the host's clock)."""
        r = self._call("[method]handler.poll-timeout")
        return None if r is None else int(r)

    def poll_completed(self) -> List[int]:
        """Tickets whose tasks were processed since the last call."""
        return list(self._call("[method]handler.poll-completed"))

    def metrics(self) -> Metrics:
        m = self._call("[method]handler.metrics")
        return Metrics(getattr(m, "deadline-rollbacks"), m.statements,
                       getattr(m, "failed-statements"), getattr(m, "sync-retries"),
                       getattr(m, "expired-events"), getattr(m, "queued-tasks"),
                       getattr(m, "in-flight"))

    def export_state(self, format: str = "compact") -> str:
        """The state: `compact` (base64 of state format 2) or `json` (format 1, which every
        build reads)."""
        if format not in ("compact", "json"):
            raise InvalidInput("format", "must be 'compact' or 'json'")
        return str(self._call("[method]handler.export-state", format))
