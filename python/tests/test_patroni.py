"""citus_ha.patroni with Patroni 4.1 installed: how `citus.group` is read, activation, every
handler method, the threading rule (every component call and statement on the owner thread;
sync_meta_data never waits; before_demote waits for the pause, within its bound), slot
filtering with Patroni's nameless slots, and a switchover on a real PostgreSQL 15 through
Patroni's own connection pool."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

import pytest

pytest.importorskip("patroni")

from patroni.dcs import Cluster, Leader, Status, SyncState
from patroni.dcs import Member as PMember

import citus_ha.patroni as cp
from citus_ha import ClusterView, GroupView, Member
from citus_ha import view as view_mod
from citus_ha._runtime import Instance
from citus_ha.patroni import dcs_view
from citus_ha.patroni.section import CitusSection, CitusSectionError, NotCitus

COORD_URL = "postgres://10.0.0.1:5432/citus"


# ------------------------------------------------------------------------------- doubles


class FakeConnection:
    """Patroni's NamedConnection as the handler uses it: `query`, `get`, `close`. Answers
    like pg_dist_node would, records each statement with the thread it ran on, and blocks a
    statement matching `block` until `release` is set."""

    def __init__(self) -> None:
        self.log: List[Tuple[str, str, Tuple[Any, ...]]] = []
        self.block: Optional[str] = None
        self.release = threading.Event()
        self.blocked = threading.Event()
        self.next_id = 1
        self.conn = object()
        self.closed = 0

    def get(self) -> Any:
        return self.conn

    def close(self) -> None:
        self.closed += 1
        self.conn = object()

    def query(self, sql: str, *params: Any) -> List[Tuple[Any, ...]]:
        self.log.append((threading.current_thread().name, sql, params))
        if self.block and self.block in sql:
            self.blocked.set()
            self.release.wait(10)
        if "citus_add_node" in sql:
            self.next_id += 1
            return [(self.next_id - 1,)]
        if "set_config" in sql:
            return [(params[0],)]
        return []

    def sql(self) -> List[str]:
        return [s.split("(")[0].replace("SELECT pg_catalog.", "") for _, s, _ in self.log
                if "set_config" not in s]


class FakePool:
    def __init__(self, conn: Any, host: str = "/var/run/postgresql") -> None:
        self.conn = conn
        self.conn_kwargs: Dict[str, Any] = {"host": host, "port": 5432}
        self.asked: List[Tuple[str, Dict[str, Any]]] = []

    def get(self, name: str, override: Optional[Dict[str, Any]] = None) -> Any:
        self.asked.append((name, dict(override or {})))
        return self.conn


class FakeSlots:
    def __init__(self) -> None:
        self._replication_slots: Dict[str, Dict[str, Any]] = {}


class FakeConfig:
    def __init__(self) -> None:
        self.superuser = {"username": "postgres", "password": "secret"}


class FakePostgresql:
    """The attributes of Patroni's Postgresql the handler reads."""

    def __init__(self, pool: Any, primary: bool = True) -> None:
        self.name = "coord1"
        self.connection_string = COORD_URL
        self.connection_pool = pool
        self.database = "postgres"
        self.config = FakeConfig()
        self.slots_handler = FakeSlots()
        self.primary = primary

    def is_primary(self) -> bool:
        return self.primary


def pmember(name: str, host: str, role: str, state: str = "running", **extra: Any) -> PMember:
    return PMember(1, name, 30, {"conn_url": f"postgres://{host}:5432/citus", "role": role,
                                 "state": state, **extra})


def pcluster(leader: Optional[PMember], members: List[PMember],
             workers: Optional[Dict[int, Cluster]] = None) -> Cluster:
    return Cluster(None, None, None if leader is None else Leader(1, 30, leader),
                   Status.empty(), members, None, SyncState.empty(), None, None, workers or {})


def world(w1_leader: str = "w1a") -> Cluster:
    a = pmember("w1a", "10.0.1.1", "primary" if w1_leader == "w1a" else "replica")
    b = pmember("w1b", "10.0.1.2", "primary" if w1_leader == "w1b" else "replica")
    c0 = pmember("coord1", "10.0.0.1", "primary")
    return pcluster(c0, [c0], {1: pcluster(a if w1_leader == "w1a" else b, [a, b])})


@pytest.fixture(autouse=True)
def registered():
    cp.register()
    yield
    cp.unregister()


def handler(pg: Any, group: Any = 0) -> Any:
    from patroni.postgresql.mpp import get_mpp

    return get_mpp({"citus": {"group": group, "database": "citus"}}).get_handler_impl(pg)


@pytest.fixture
def coordinator():
    conn = FakeConnection()
    pg = FakePostgresql(FakePool(conn))
    h = handler(pg)
    yield h, conn, pg
    conn.release.set()
    if h.owner is not None:
        h.owner.stop()


def idle(h: Any) -> None:
    assert h.owner.wait_idle(10), "the owner did not settle"


# ------------------------------------------------------------------------------- citus.group


@pytest.mark.parametrize("value,group", [
    (0, 0), (1, 1), ("01", 1), (" 1", 1), ("1 ", 1), ("+2", 2), (1.0, 1), (" 0 ", 0),
    (2**31 - 1, 2**31 - 1)])
def test_group_values_stock_patroni_accepts_keep_its_meaning(value: Any, group: int) -> None:
    from patroni.utils import parse_int

    assert cp.read_section({"group": value, "database": "citus"}) == CitusSection(group, "citus")
    assert int(value) == group and parse_int(value) is not None  # what stock Patroni makes of it


@pytest.mark.parametrize("value,why", [
    (-1, "0 or more"), ("-3", "decimal digits"), (1.5, "whole number"), ("1.0", "decimal"),
    ("0x1", "decimal"), ("1e3", "decimal"), (2**31, "larger")])
def test_group_values_stock_patroni_misreads_are_refused(value: Any, why: str) -> None:
    with pytest.raises(CitusSectionError) as e:
        cp.read_section({"group": value, "database": "citus"})
    assert e.value.field == "citus.group" and why in e.value.reason


@pytest.mark.parametrize("section,field", [
    ({"group": None, "database": "citus"}, "citus.group"),
    ({"database": "citus"}, "citus.group"), ({"group": "abc", "database": "citus"}, "citus.group"),
    ({"group": True, "database": "citus"}, "citus.group"), ({"group": 1}, "citus.database"),
    ({"group": 1, "database": 5}, "citus.database"), (["group"], "citus")])
def test_sections_stock_patroni_ignores_are_named(section: Any, field: str) -> None:
    verdict = cp.read_section(section)
    assert isinstance(verdict, NotCitus) and verdict.reason.startswith(field + ":")


def test_empty_database_is_refused() -> None:
    with pytest.raises(CitusSectionError, match=r"citus\.database"):
        cp.read_section({"group": 0, "database": " "})


# ------------------------------------------------------------------------------- activation


def test_register_makes_patroni_find_the_drop_in() -> None:
    import patroni.postgresql.mpp as mpp
    from patroni.postgresql.mpp.citus import Citus as StockCitus

    m = mpp.get_mpp({"citus": {"group": "01", "database": "citus"}})
    assert type(m) is cp.Citus and isinstance(m, StockCitus)
    assert (m.type, m.group, m.is_worker(), m.k8s_group_label) == ("Citus", 1, True, "citus-group")
    h = m.get_handler_impl(FakePostgresql(FakePool(FakeConnection())))
    assert type(h) is cp.CitusHandler and (h.type, h.group, h.is_coordinator()) == ("Citus", 1,
                                                                                   False)
    # Patroni's own lookup from its own Citus class still finds its own handler.
    from patroni.postgresql.mpp.citus import CitusHandler as StockHandler

    assert list(StockCitus({"group": 0, "database": "x"})._get_handler_cls()) == [StockHandler]
    assert type(mpp.get_mpp({})).__name__ == "Null"
    cp.unregister()
    assert not cp.is_registered() and type(mpp.get_mpp({"citus": {"group": 0,
                                                                  "database": "x"}})) is StockCitus


def test_patronictl_gets_the_drop_in_too() -> None:
    import patroni.ctl as ctl

    assert ctl.get_mpp is cp.get_mpp
    assert type(ctl.get_mpp({"citus": {"group": 2, "database": "citus"}})) is cp.Citus


def test_strict_refuses_what_stock_patroni_silently_ignores(caplog: Any) -> None:
    from patroni.postgresql.mpp import get_mpp

    with pytest.raises(CitusSectionError, match=r"citus\.group: is required"):
        get_mpp({"citus": {"database": "citus", "group": None}})
    with pytest.raises(CitusSectionError, match="decimal digits"):
        get_mpp({"citus": {"database": "citus", "group": "0x1"}})
    cp.register(strict=False)
    with caplog.at_level(logging.ERROR, logger="citus_ha.patroni"):
        assert type(get_mpp({"citus": {"database": "citus", "group": None}})).__name__ == "Null"
    assert "Citus is OFF" in caplog.text and "citus.group: is required" in caplog.text
    with pytest.raises(CitusSectionError):  # misread values are refused even then
        get_mpp({"citus": {"database": "citus", "group": 1.5}})


def test_an_untested_patroni_is_refused_unless_allowed(monkeypatch: Any) -> None:
    cp.unregister()
    monkeypatch.setattr("patroni.version.__version__", "4.2.0")
    monkeypatch.delenv(cp.ALLOW_UNTESTED_ENV, raising=False)
    with pytest.raises(cp.UntestedPatroni, match=cp.ALLOW_UNTESTED_ENV):
        cp.register()
    assert not cp.is_registered()
    from citus_ha.patroni.__main__ import main

    assert main(["--version"]) == 2
    cp.register(allow_untested=True)
    assert cp.is_registered()
    cp.unregister()
    monkeypatch.setenv(cp.ALLOW_UNTESTED_ENV, "1")
    cp.register()
    assert cp.is_registered()


def test_module_entry_point_refuses_a_bad_section_before_patroni_runs(tmp_path: Any) -> None:
    import subprocess
    import sys

    cfg = tmp_path / "patroni.yml"
    cfg.write_text("scope: s\nname: n\netcd3: {hosts: '127.0.0.1:1'}\n"
                   "restapi: {listen: '127.0.0.1:0', connect_address: '127.0.0.1:1'}\n"
                   f"postgresql: {{data_dir: {tmp_path}/d, listen: '127.0.0.1:1'}}\n"
                   "citus: {group: -1, database: citus}\n")
    r = subprocess.run([sys.executable, "-m", "citus_ha.patroni", str(cfg)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "citus.group" in r.stderr and "0 or more" in r.stderr
    v = subprocess.run([sys.executable, "-m", "citus_ha.patroni", "--version"],
                       capture_output=True, text=True, timeout=60)
    assert v.returncode == 0 and "4.1." in v.stdout


# ------------------------------------------------------------------------------- the DCS view


def test_the_view_from_patroni_members_is_what_the_cluster_view_writes() -> None:
    odd = PMember(1, "w\t2", 30, {"conn_kwargs": {"host": "10.0.2.9", "port": 6432},
                                  "role": "replica", "state": "running",
                                  "tags": {"noloadbalance": True}})
    bad = PMember(1, "w3", 30, {"conn_url": 5, "role": ["x"], "state": "running"})
    c = world()
    c.workers[2] = pcluster(odd, [odd, bad])
    c.workers[0 + 10] = pcluster(None, [])
    expected = ClusterView(
        GroupView("coord1", (Member("coord1", "postgres://10.0.0.1:5432/citus", None, "primary",
                                    "running"),)),
        {1: GroupView("w1a", (Member("w1a", "postgres://10.0.1.1:5432/citus", None, "primary",
                                     "running"),
                              Member("w1b", "postgres://10.0.1.2:5432/citus", None, "replica",
                                     "running"))),
         2: GroupView("w\t2", (Member("w\t2", None, ("10.0.2.9", "6432"), "replica", "running",
                                      True), Member("w3", None, None, None, "running"))),
         10: GroupView(None, ())})
    assert list(dcs_view.cluster_bodies(c)) == list(view_mod.bodies(expected))


# ------------------------------------------------------------------------------- the handler


def test_a_worker_hands_nothing_over(coordinator: Any) -> None:
    conn = FakeConnection()
    h = handler(FakePostgresql(FakePool(conn)), group=1)
    h.sync_meta_data(world())
    h.handle_event(world(), {"type": "before_demote", "group": 1, "leader": "w1a",
                             "timeout": 30, "cooldown": 10})
    h.on_demote()
    h.schedule_cache_rebuild()
    assert h.owner is None and conn.log == []


def test_heartbeat_registers_every_group_on_patronis_citus_connection(coordinator: Any) -> None:
    h, conn, pg = coordinator
    h.sync_meta_data(world())
    idle(h)
    assert pg.connection_pool.asked == [("citus", {
        "dbname": "citus", "connect_timeout": 10,
        "options": "-c statement_timeout=30000 -c idle_in_transaction_session_timeout=0"})]
    assert conn.sql() == ["SELECT nodeid, groupid, nodename, nodeport, noderole::text FROM "
                          "pg_catalog.pg_dist_node ORDER BY nodeid", "citus_add_node", "BEGIN",
                          "citus_add_node", "citus_add_node", "COMMIT"]
    # Every statement is bounded: statement_timeout (ttl) set on the connection first.
    assert "set_config('statement_timeout'" in conn.log[0][1] and conn.log[0][2] == ("30000ms",)
    adds = [p for _, s, p in conn.log if "citus_add_node" in s]
    assert adds == [("10.0.0.1", 5432, 0, "primary"), ("10.0.1.1", 5432, 1, "primary"),
                    ("10.0.1.2", 5432, 1, "secondary")]
    # A steady heartbeat sends nothing.
    n = len(conn.log)
    h.sync_meta_data(world())
    idle(h)
    assert len(conn.log) == n


def test_every_component_call_and_statement_runs_on_the_owner_thread(coordinator: Any,
                                                                     monkeypatch: Any) -> None:
    h, conn, pg = coordinator
    threads: List[str] = []
    original = Instance.call

    def spy(self: Instance, name: str, *args: Any) -> Any:
        threads.append(threading.current_thread().name)
        return original(self, name, *args)

    monkeypatch.setattr(Instance, "call", spy)
    h.sync_meta_data(world())
    idle(h)
    h.handle_event(world(), {"type": "before_demote", "group": 1, "leader": "w1a",
                             "timeout": 30, "cooldown": 10})
    params = {"max_connections": 100, "max_prepared_transactions": 0}
    h.adjust_postgres_gucs(params)
    pg.slots_handler._replication_slots["s"] = slot = {"type": "physical"}
    h.ignore_replication_slot(slot)
    h.schedule_cache_rebuild()
    h.on_demote()
    idle(h)
    assert threading.current_thread().name == "MainThread"
    assert len(threads) > 10 and set(threads) == {"citus-ha-owner"}
    assert {t for t, _, _ in conn.log} == {"citus-ha-owner"}


def test_without_an_owner_thread_one_caller_at_a_time_is_in_the_policy(monkeypatch: Any
                                                                       ) -> None:
    h = handler(FakePostgresql(FakePool(FakeConnection())), group=2)
    inside: List[int] = []
    overlaps: List[int] = []
    original = Instance.call

    def spy(self: Instance, name: str, *args: Any) -> Any:
        inside.append(1)
        if len(inside) > 1:
            overlaps.append(len(inside))
        time.sleep(0.002)
        try:
            return original(self, name, *args)
        finally:
            inside.pop()

    monkeypatch.setattr(Instance, "call", spy)

    def gucs() -> None:
        for _ in range(5):
            h.adjust_postgres_gucs({"max_connections": 100, "max_prepared_transactions": 0})

    threads = [threading.Thread(target=gucs) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert h.owner is not None and h.owner.thread is None and overlaps == []


def test_sync_meta_data_never_waits_for_the_database(coordinator: Any) -> None:
    h, conn, _ = coordinator
    conn.block = "citus_add_node"
    h.sync_meta_data(world())
    assert conn.blocked.wait(10)
    took = []
    for _ in range(50):
        t = time.perf_counter()
        h.sync_meta_data(world())
        took.append(time.perf_counter() - t)
    assert max(took) < 0.05, max(took)
    conn.release.set()
    idle(h)


def test_before_demote_returns_with_the_pause_in_place(coordinator: Any) -> None:
    h, conn, _ = coordinator
    h.sync_meta_data(world())
    idle(h)
    conn.log.clear()
    h.handle_event(world(), {"type": "before_demote", "group": 1, "leader": "w1a",
                             "timeout": 30, "cooldown": 10})
    assert conn.sql() == ["BEGIN", "citus_update_node"]
    assert conn.log[-1][2] == (2, "10.0.1.1-demoted", 5432, True, 10000)
    h.handle_event(world("w1b"), {"type": "after_promote", "group": 1, "leader": "w1b",
                                  "timeout": 30, "cooldown": 10})
    idle(h)
    assert conn.sql()[-1] == "COMMIT" and conn.sql().count("BEGIN") == 1


def test_before_demote_waits_no_longer_than_its_timeout(coordinator: Any) -> None:
    h, conn, _ = coordinator
    h.sync_meta_data(world())
    idle(h)
    conn.block = "citus_update_node"
    t = time.monotonic()
    h.handle_event(world(), {"type": "before_demote", "group": 1, "leader": "w1a",
                             "timeout": 1, "cooldown": 10})
    took = time.monotonic() - t
    assert conn.blocked.is_set() and 0.9 < took < 3, took
    conn.release.set()


def test_events_before_the_first_heartbeat_are_discarded(coordinator: Any,
                                                         caplog: Any) -> None:
    h, conn, _ = coordinator
    # Patroni asked for GUCs already (the policy is loaded), but nothing leads yet.
    h.adjust_postgres_gucs({"max_connections": 100, "max_prepared_transactions": 0})
    h.schedule_cache_rebuild()
    h.on_demote()
    t = time.monotonic()
    with caplog.at_level(logging.INFO, logger="citus_ha.patroni"):
        h.handle_event(world(), {"type": "before_demote", "group": 1, "leader": "w1a",
                                 "timeout": 30, "cooldown": 10})
    assert time.monotonic() - t < 1
    assert "Discarding event" in caplog.text and conn.log == [] and not h.owner.running


def test_on_demote_drops_the_session_and_its_pause(coordinator: Any) -> None:
    h, conn, _ = coordinator
    h.sync_meta_data(world())
    idle(h)
    h.handle_event(world(), {"type": "before_demote", "group": 1, "leader": "w1a",
                             "timeout": 30, "cooldown": 10})
    closed = conn.closed
    conn.log.clear()
    h.on_demote()
    idle(h)
    # The connection (and the pause with it) is gone; nothing runs until the next heartbeat.
    assert conn.closed > closed and conn.log == []
    # After a demote the policy reads pg_dist_node before acting again.
    h.sync_meta_data(world())
    idle(h)
    assert conn.sql()[0].startswith("SELECT nodeid")


def test_schedule_cache_rebuild_reads_pg_dist_node_again(coordinator: Any) -> None:
    h, conn, _ = coordinator
    h.sync_meta_data(world())
    idle(h)
    conn.log.clear()
    h.schedule_cache_rebuild()
    h.sync_meta_data(world())
    idle(h)
    assert conn.sql()[0].startswith("SELECT nodeid")


def test_connection_string_reload_moves_the_coordinator_row(coordinator: Any) -> None:
    h, conn, pg = coordinator
    h.sync_meta_data(world())
    idle(h)
    conn.log.clear()
    pg.connection_string = "postgres://10.0.0.9:5432/citus"
    h.sync_meta_data(world())
    idle(h)
    assert [p for _, s, p in conn.log if "citus_update_node" in s] == [
        (1, "10.0.0.9", 5432, True, 10000)]


def test_adjust_postgres_gucs_keeps_patronis_types(coordinator: Any) -> None:
    from patroni.collections import CaseInsensitiveDict

    h, _, _ = coordinator
    params = CaseInsensitiveDict({"max_connections": 100, "max_prepared_transactions": 0,
                                  "shared_preload_libraries": "pg_stat_statements, citus",
                                  "wal_level": "replica", "port": 5432})
    h.adjust_postgres_gucs(params)
    assert dict(params) == {"max_connections": 100, "max_prepared_transactions": 200,
                            "shared_preload_libraries": "citus,pg_stat_statements",
                            "wal_level": "logical", "port": 5432,
                            "citus.local_hostname": "/var/run/postgresql"}
    assert h.owner is not None and h.owner.session is not None  # coordinator


def test_ignore_replication_slot_finds_the_name_patroni_leaves_out(coordinator: Any) -> None:
    h, _, pg = coordinator
    slots = pg.slots_handler._replication_slots
    move = {"type": "logical", "database": "citus", "plugin": "pgoutput", "datoid": 1}
    split = {"type": "logical", "database": "citus", "plugin": "citus"}
    other_db = {"type": "logical", "database": "postgres", "plugin": "pgoutput"}
    wrong_plugin = {"type": "logical", "database": "citus", "plugin": "citus"}
    slots.update({"citus_shard_move_slot_1_2_3": move, "citus_shard_split_slot_1_2_3": split,
                  "citus_shard_move_slot_4_5_6": other_db,
                  "citus_shard_move_slot_7_8_9": wrong_plugin, "mine": {"type": "logical",
                                                                        "database": "citus",
                                                                        "plugin": "pgoutput"}})
    got = {name: h.ignore_replication_slot(v) for name, v in slots.items()}
    assert got == {"citus_shard_move_slot_1_2_3": True, "citus_shard_split_slot_1_2_3": True,
                   "citus_shard_move_slot_4_5_6": False, "citus_shard_move_slot_7_8_9": False,
                   "mine": False}
    pg.primary = False
    assert h.ignore_replication_slot(move) is False
    # A slot Patroni does not keep: its name is unknown, so it is not kept.
    assert h.ignore_replication_slot({"type": "logical", "database": "citus",
                                      "plugin": "pgoutput"}) is False
    # A caller that does pass the name is served too.
    pg.primary = True
    assert h.ignore_replication_slot({**move, "name": "citus_shard_move_slot_1_2_3"}) is True


def test_stock_patroni_raises_keyerror_name_on_the_same_slot() -> None:
    from patroni.postgresql.mpp.citus import CitusHandler as Stock

    pg = FakePostgresql(FakePool(FakeConnection()))
    stock = Stock.__new__(Stock)
    stock._postgresql, stock._config = pg, {"group": 1, "database": "citus"}
    with pytest.raises(KeyError, match="name"):
        stock.ignore_replication_slot({"type": "logical", "database": "citus",
                                       "plugin": "pgoutput"})


def test_bootstrap_runs_the_policys_plan_with_bound_parameters(coordinator: Any,
                                                               monkeypatch: Any) -> None:
    h, _, _ = coordinator
    ran: List[Tuple[str, Optional[str], str, Any]] = []

    class Cursor:
        def __init__(self, db: Optional[str]) -> None:
            self.db = db

        def __enter__(self) -> Cursor:
            return self

        def __exit__(self, *a: Any) -> None:
            pass

        def execute(self, sql: str, params: Any = None) -> None:
            ran.append((threading.current_thread().name, self.db, sql, params))

    class Conn:
        def __init__(self, **kw: Any) -> None:
            self.kw = kw

        def cursor(self) -> Cursor:
            return Cursor(self.kw.get("dbname"))

        def close(self) -> None:
            pass

    monkeypatch.setattr("patroni.postgresql.mpp.citus.connect", lambda **kw: Conn(**kw))
    monkeypatch.setattr("patroni.postgresql.mpp.citus.quote_ident",
                        lambda name, conn: '"' + name.replace('"', '""') + '"')
    # Bootstrap comes before this node leads: no owner thread yet, it runs on the caller's.
    h.bootstrap()
    assert h.owner.thread is None and {t for t, *_ in ran} == {"MainThread"}
    assert [(db, sql.split("(")[0], p) for _, db, sql, p in ran] == [
        (None, 'CREATE DATABASE "citus"', None),
        ("citus", "CREATE EXTENSION IF NOT EXISTS citus", None),
        ("citus", "INSERT INTO pg_catalog.pg_dist_authinfo VALUES ", ("password=secret",)),
        ("citus", "SELECT pg_catalog.citus_set_coordinator_host", ("10.0.0.1", 5432))]


def test_a_policy_that_does_not_load_fails_loudly(monkeypatch: Any, caplog: Any) -> None:
    from citus_ha import PolicyLoadError
    from citus_ha.patroni import handler as handler_mod

    def broken() -> Any:
        raise PolicyLoadError("bundled component missing")

    monkeypatch.setattr(handler_mod.Policy, "load", staticmethod(broken))
    h = handler(FakePostgresql(FakePool(FakeConnection())))
    with caplog.at_level(logging.ERROR, logger="citus_ha.patroni"), \
            pytest.raises(Exception, match="did not start: bundled component missing"):
        h.adjust_postgres_gucs({"max_connections": 100, "max_prepared_transactions": 0})
    assert "did not start" in caplog.text


# ------------------------------------------------------------------------------- real server


def test_switchover_on_postgres_through_patronis_connection_pool(pg: Any) -> None:
    import psycopg
    from patroni.postgresql.connection import ConnectionPool

    with psycopg.connect(pg.url("postgres"), autocommit=True) as c:
        c.execute("DROP DATABASE IF EXISTS citus WITH (FORCE)")
        c.execute("CREATE DATABASE citus")
    from conftest import ROOT

    with psycopg.connect(pg.url("citus"), autocommit=True) as c:
        c.execute((ROOT / "tests/sql/citus_emulation.sql").read_text())
        c.execute("UPDATE citus_emulation.config SET metadata_sync_delay_ms = 0")
    pool = ConnectionPool()
    pool.conn_kwargs = {"host": "127.0.0.1", "port": pg.port, "user": "postgres",
                        "dbname": "postgres"}
    h = handler(FakePostgresql(pool))
    probe = psycopg.connect(pg.url("citus"), autocommit=True)
    try:
        def rows() -> List[Tuple[Any, ...]]:
            return probe.execute("SELECT groupid, nodename, noderole::text FROM pg_dist_node "
                                 "ORDER BY nodeid").fetchall()

        h.sync_meta_data(world())
        idle(h)
        assert rows() == [(0, "10.0.0.1", "primary"), (1, "10.0.1.1", "primary"),
                          (1, "10.0.1.2", "secondary")]
        h.handle_event(world(), {"type": "before_demote", "group": 1, "leader": "w1a",
                                 "timeout": 30, "cooldown": 10})
        # The pause is an open transaction on Patroni's own "citus" connection.
        state = probe.execute("SELECT state FROM "
                              "pg_stat_activity WHERE application_name = 'Patroni citus'"
                              ).fetchall()
        assert state == [("idle in transaction",)], state
        h.handle_event(world("w1b"), {"type": "after_promote", "group": 1, "leader": "w1b",
                                      "timeout": 30, "cooldown": 10})
        idle(h)
        assert rows() == [(0, "10.0.0.1", "primary"), (1, "10.0.1.2", "primary"),
                          (1, "10.0.1.1", "secondary")]
    finally:
        probe.close()
        h.owner.stop()
        pool.close()


@pytest.mark.parametrize("yaml_group,env,refused", [
    ("1", {}, False), ("'1'", {}, True), ("1.0", {}, True), ("null", {}, True),
    ("'1'", {"PATRONI_CITUS_GROUP": "01"}, False), ("-1", {}, True)])
def test_the_entry_point_checks_the_section_patroni_will_load(tmp_path: Any, monkeypatch: Any,
                                                              yaml_group: str,
                                                              env: Dict[str, str],
                                                              refused: bool) -> None:
    from citus_ha.patroni import preflight

    monkeypatch.delenv("PATRONI_CITUS_GROUP", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    cfg = tmp_path / "patroni.yml"
    cfg.write_text(f"scope: s\ncitus:\n  group: {yaml_group}\n  database: citus\n")
    if refused:
        with pytest.raises(CitusSectionError, match=r"citus(\.group)?:"):
            preflight.check([str(cfg)])
    else:
        preflight.check([str(cfg)])
    # The variables Patroni consumes at load are still there for it.
    for k, v in env.items():
        assert __import__("os").environ[k] == v
