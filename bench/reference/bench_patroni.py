#!/usr/bin/env python3
"""Time the reference: Patroni's Citus handler in CPython, on what `citus-ha bench` measures.

No database and no DCS: the handler's PostgreSQL object, its connection pool and its
connection are stub doubles (plain classes that answer like `pg_dist_node` would), and the
handler's worker thread is never started, so every timed call runs on this thread exactly as
Patroni's heartbeat loop and worker thread would run it.

Each measurement prints one JSON object on stdout: the median, p10, p90 and minimum of the
per-call time over many samples, each sample one batch of calls on inputs prepared outside
the timed region, with the garbage collector off while it runs. Every batch's results are
checked, so a change in Patroni's behaviour fails the run instead of timing something else.
The first line (`"bench": "meta"`) describes the interpreter and the machine.

    python bench_patroni.py [--quick] [--only SUBSTRING] [--groups 10,100,1000]

Run it with PYTHONHASHSEED=0: Patroni keeps nodes in sets, so its work depends on the seed.
`bench/compare.py` puts the output beside a `citus-ha bench --json` run of the same sitting.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from patroni.dcs import Cluster, Leader, Member, Status, SyncState
from patroni.postgresql.mpp.citus import (
    Citus,
    CitusHandler,
    PgDistGroup,
    PgDistNode,
    PgDistTask,
)
from patroni.version import __version__ as PATRONI_VERSION

In = TypeVar("In")
Out = TypeVar("Out")

CITUS_CONFIG: dict[str, str | int] = {"group": 0, "database": "citus"}
COORDINATOR_URL = "postgres://10.0.0.1:5432/postgres"
SOCKET_DIR = "/var/run/postgresql"  # what the stub pool reports as its connection host
CITUS_FUNCTION = re.compile(r"\bcitus_\w+")


# ------------------------------------------------------------------------------- the doubles


def statement_kind(sql: str) -> str:
    """`citus_add_node` for `SELECT pg_catalog.citus_add_node(...)`, `BEGIN` for `BEGIN`,
    `pg_dist_node` for the metadata load."""
    if "FROM pg_catalog.pg_dist_node" in sql:
        return "pg_dist_node"
    function = CITUS_FUNCTION.search(sql)
    return function.group(0) if function else sql.split(maxsplit=1)[0]


@dataclass
class FakeCoordinator:
    """The coordinator's side of the connection: counts statements, hands out nodeids.

    Its cost is part of every handler figure, so it is kept to a dictionary lookup per
    statement: Patroni's SQL texts are constants, each is classified once.
    """

    rows: list[tuple[Any, ...]] = field(default_factory=list)
    next_nodeid: int = 1000
    counts: dict[str, int] = field(default_factory=dict)
    _kinds: dict[str, str] = field(default_factory=dict)

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        kind = self._kinds.get(sql)
        if kind is None:
            kind = self._kinds[sql] = statement_kind(sql)
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if kind == "citus_add_node":
            self.next_nodeid += 1
            return [(self.next_nodeid,)]
        if kind == "pg_dist_node":
            return self.rows
        return []

    def count(self, kind: str) -> int:
        return self.counts.get(kind, 0)

    def reset_counts(self) -> None:
        self.counts.clear()


class StubConnection:
    """What `connection_pool.get()` returns: Patroni only calls `query` and `close`."""

    def __init__(self, coordinator: FakeCoordinator) -> None:
        self.query = coordinator.query

    def close(self) -> None:
        pass


class StubPool:
    def __init__(self, connection: StubConnection) -> None:
        self.conn_kwargs = {"host": SOCKET_DIR, "port": 5432}
        self._connection = connection

    def get(
        self, name: str, kwargs_override: dict[str, Any] | None = None
    ) -> StubConnection:
        return self._connection


class StubPostgresql:
    """The few attributes of Patroni's `Postgresql` that the Citus handler reads."""

    name = "coord-0"
    connection_string = COORDINATOR_URL

    def __init__(self, coordinator: FakeCoordinator) -> None:
        self.connection_pool = StubPool(StubConnection(coordinator))

    def is_primary(self) -> bool:
        return True


@contextlib.contextmanager
def thread_never_started() -> Iterator[list[CitusHandler]]:
    """A coordinator's handler starts its worker thread in __init__: make that a no-op."""
    started: list[CitusHandler] = []
    original = CitusHandler.start
    CitusHandler.start = lambda self: started.append(self)  # type: ignore[method-assign]
    try:
        yield started
    finally:
        CitusHandler.start = original  # type: ignore[method-assign]


@dataclass
class Coordinator:
    handler: CitusHandler
    db: FakeCoordinator


def new_coordinator() -> Coordinator:
    db = FakeCoordinator()
    with thread_never_started() as started:
        handler = CitusHandler(StubPostgresql(db), dict(CITUS_CONFIG))  # type: ignore[arg-type]
    assert handler.is_coordinator() and started == [handler] and not handler.is_alive()
    return Coordinator(handler, db)


def set_cache(c: Coordinator, cache: dict[int, PgDistTask]) -> None:
    """Puts the handler back to an idle turn with this metadata cache."""
    h = c.handler
    h._tasks = []
    h._in_flight = None
    h._schedule_load_pg_dist_group = False
    h._pg_dist_group = cache


# ------------------------------------------------------------------------------- the DCS view


def address(group: int, member: int) -> str:
    """10.<g/256>.<g%256>.<m>: valid IPv4 literals for any number of groups."""
    return f"10.{group >> 8}.{group & 255}.{member}"


def member(name: str, host: str, role: str) -> Member:
    data = {
        "conn_url": f"postgres://{host}:5432/postgres",
        "state": "running",
        "role": role,
    }
    return Member(1, name, 30, data)


def group_cluster(
    leader: Member, members: list[Member], workers: dict[int, Cluster]
) -> Cluster:
    return Cluster(
        None,
        None,
        Leader(1, 30, leader),
        Status.empty(),
        members,
        None,
        SyncState.empty(),
        None,
        None,
        workers,
    )


def cluster_of(groups: int) -> Cluster:
    """The coordinator group (a leader and two replicas) and `groups` worker groups, each a
    running primary 10.x.y.1 and two running replicas 10.x.y.2 and .3."""
    workers = {}
    for g in range(1, groups + 1):
        ms = [
            member(f"g{g}-m{m}", address(g, m), "primary" if m == 1 else "replica")
            for m in (1, 2, 3)
        ]
        workers[g] = group_cluster(ms[0], ms, {})
    coord = [
        member(f"coord-{m}", f"10.0.0.{m + 1}", "primary" if m == 0 else "replica")
        for m in (0, 1, 2)
    ]
    return group_cluster(coord[0], coord, workers)


def coordinator_only_cache() -> dict[int, PgDistTask]:
    nodes = {
        PgDistNode(f"10.0.0.{m}", 5432, "primary" if m == 1 else "secondary", m)
        for m in (1, 2, 3)
    }
    return {0: PgDistTask(0, nodes, "after_promote")}


# ------------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Settings:
    samples: int
    sample_ns: int  # how long one sample (batch) should take
    heartbeat_samples: Callable[[int], int]

    @staticmethod
    def of(quick: bool) -> Settings:
        if quick:
            return Settings(
                samples=11, sample_ns=2_000_000, heartbeat_samples=lambda n: 5
            )
        return Settings(
            samples=101,
            sample_ns=5_000_000,
            heartbeat_samples=lambda n: max(21, min(301, 30_000 // n)),
        )


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def batch_for(settings: Settings, one_call: Callable[[], object]) -> int:
    """How many calls make one sample of about `settings.sample_ns`."""
    one_call()  # warm

    def fastest_of_three(n: int) -> int:
        runs = []
        for _ in range(3):
            t0 = time.perf_counter_ns()
            for _ in range(n):
                one_call()
            runs.append(time.perf_counter_ns() - t0)
        return min(
            runs
        )  # one slow outlier (a GC, another process) must not size the batch

    n = 1
    while True:
        took = fastest_of_three(n)
        if took * 10 >= settings.sample_ns or n >= 1 << 20:
            return max(1, n * settings.sample_ns // max(took, 1))
        n *= 4


def measure(
    bench: str,
    labels: dict[str, Any],
    *,
    prepare: Callable[[int], In],
    run: Callable[[In], Out],
    check: Callable[[In, Out], None],
    batch: int,
    samples: int,
) -> None:
    """Times `run(prepare(batch))` `samples` times and emits the per-call statistics.

    `prepare` is untimed and gives every sample fresh inputs (the calls may consume them);
    `check` verifies each sample's results after its timing ended.
    """
    inputs = prepare(batch)
    check(inputs, run(inputs))  # warm-up on the very code path that is timed
    per_call: list[float] = []
    gc.collect()
    for _ in range(samples):
        inputs = prepare(batch)
        gc.disable()
        try:
            t0 = time.perf_counter_ns()
            out = run(inputs)
            took = time.perf_counter_ns() - t0
        finally:
            gc.enable()
        check(inputs, out)
        per_call.append(took / batch)
    per_call.sort()
    deciles = (
        statistics.quantiles(per_call, n=10, method="inclusive")
        if len(per_call) > 1
        else per_call * 9
    )
    median = statistics.median(per_call)
    emit(
        {
            "bench": bench,
            "double": "stub",
            **labels,
            "median_ns": round(median, 1),
            "ops_per_s": round(1e9 / median, 1),
            "p10_ns": round(deciles[0], 1),
            "p90_ns": round(deciles[-1], 1),
            "min_ns": round(per_call[0], 1),
            "samples": samples,
            "batch": batch,
        }
    )


def repeat_call(f: Callable[[Any], Out]) -> Callable[[Sequence[Any]], Out | None]:
    def run(inputs: Sequence[Any]) -> Out | None:
        out = None
        for x in inputs:
            out = f(x)
        return out

    return run


# ------------------------------------------------------------------------------- the benches


def bench_validate_config(s: Settings) -> None:
    for case, conf, valid in (
        ("valid", {"database": "citus", "group": 0}, True),
        ("invalid_group", {"database": "citus", "group": "abc"}, False),
    ):

        def check(
            _: object, out: object, valid: bool = valid, case: str = case
        ) -> None:
            assert out is valid, (case, out)

        measure(
            "validate_config",
            {"case": case},
            prepare=lambda b, conf=conf: [conf] * b,
            run=repeat_call(Citus.validate_config),
            check=check,
            batch=batch_for(s, lambda conf=conf: Citus.validate_config(conf)),
            samples=s.samples,
        )


# A typical parameter set (16 entries) for the handler to adjust for Citus.
PARAMETERS: dict[str, Any] = {
    "max_connections": 200,
    "max_prepared_transactions": 0,
    "max_wal_senders": 10,
    "max_replication_slots": 10,
    "max_worker_processes": 8,
    "wal_level": "replica",
    "hot_standby": "on",
    "wal_log_hints": "on",
    "track_commit_timestamp": "off",
    "shared_buffers": "4GB",
    "work_mem": "16MB",
    "maintenance_work_mem": "512MB",
    "listen_addresses": "0.0.0.0",
    "port": 5432,
    "cluster_name": "demo",
    "shared_preload_libraries": "pg_stat_statements, citus ,auto_explain",
}


def bench_adjust_gucs(s: Settings) -> None:
    h = new_coordinator().handler

    def check(inputs: list[dict[str, Any]], _: object) -> None:
        for p in inputs:
            assert (
                p["shared_preload_libraries"] == "citus,pg_stat_statements,auto_explain"
            ), p
            assert (
                p["max_prepared_transactions"] == 400 and p["wal_level"] == "logical"
            ), p
            assert p["citus.local_hostname"] == SOCKET_DIR, p

    measure(
        "adjust_postgres_gucs",
        {"n_params": len(PARAMETERS)},
        prepare=lambda b: [dict(PARAMETERS) for _ in range(b)],
        run=repeat_call(h.adjust_postgres_gucs),
        check=check,
        batch=batch_for(s, lambda: h.adjust_postgres_gucs(dict(PARAMETERS))),
        samples=s.samples,
    )


def bench_slot_filter(s: Settings) -> None:
    h = new_coordinator().handler
    for case, slot, ignored in (
        ("match_move", {"name": "citus_shard_move_slot_1_2_3", "type": "logical",
                        "database": "citus", "plugin": "pgoutput"}, True),
        ("nomatch_name", {"name": "my_logical_slot", "type": "logical", "database": "citus",
                          "plugin": "pgoutput"}, False),
    ):  # fmt: skip

        def check(
            _: object, out: object, ignored: bool = ignored, case: str = case
        ) -> None:
            assert out is ignored, (case, out)

        measure(
            "ignore_replication_slot",
            {"case": case},
            prepare=lambda b, slot=slot: [slot] * b,
            run=repeat_call(h.ignore_replication_slot),
            check=check,
            batch=batch_for(s, lambda slot=slot: h.ignore_replication_slot(slot)),
            samples=s.samples,
        )


def group(groupid: int, nodes: Sequence[tuple[str, str, int | None]]) -> PgDistGroup:
    return PgDistGroup(
        groupid, {PgDistNode(host, 5432, role, nodeid) for host, role, nodeid in nodes}
    )


def bench_transition(s: Settings) -> None:
    """`PgDistGroup.transition`: the statements that take a group from its rows to the view."""

    def plan(pairs: list[tuple[PgDistGroup, PgDistGroup]]) -> list[list[PgDistNode]]:
        return [list(new.transition(old)) for old, new in pairs]

    def switchover() -> tuple[PgDistGroup, PgDistGroup]:
        old = group(1, [("10.0.1.1", "primary", 1), ("10.0.1.2", "secondary", 2)])
        new = group(1, [("10.0.1.1", "secondary", None), ("10.0.1.2", "primary", None)])
        return old, new

    def check_switchover(
        pairs: list[tuple[PgDistGroup, PgDistGroup]], plans: list[list[PgDistNode]]
    ) -> None:
        for (_, new), steps in zip(pairs, plans):
            # The -demoted rename frees the old primary's address, the secondary row takes it,
            # then the primary row gets the new address.
            got = [(n.nodeid, n.host, n.role) for n in steps]
            assert got == [
                (1, "10.0.1.1", "demoted"),
                (2, "10.0.1.1", "secondary"),
                (1, "10.0.1.2", "primary"),
            ], got
            assert new.failover is True

    def replace_10_of_50() -> tuple[PgDistGroup, PgDistGroup]:
        kept = [(f"10.0.1.{i + 2}", "secondary") for i in range(40)]
        old = group(
            1,
            [("10.0.1.1", "primary", 1)]
            + [(f"10.0.1.{i + 2}", "secondary", i + 2) for i in range(50)],
        )
        new = group(
            1,
            [("10.0.1.1", "primary", None)]
            + [(h, r, None) for h, r in kept]
            + [(f"10.0.2.{i + 1}", "secondary", None) for i in range(10)],
        )
        return old, new

    def check_replace(
        pairs: list[tuple[PgDistGroup, PgDistGroup]], plans: list[list[PgDistNode]]
    ) -> None:
        for (_, new), steps in zip(pairs, plans):
            # Every new secondary reuses the row of one that is gone: ten updates, no add/remove.
            assert {n.host for n in steps} == {f"10.0.2.{i + 1}" for i in range(10)}, (
                steps
            )
            assert {n.nodeid for n in steps} == set(range(42, 52)), steps
            assert all(n.role == "secondary" for n in steps) and not new.failover

    for case, make, check, nodes in (
        ("switchover_1_secondary", switchover, check_switchover, 2),
        ("replace_10_of_50_secondaries", replace_10_of_50, check_replace, 51),
    ):
        measure(
            "transition",
            {"case": case, "old_nodes": nodes, "new_nodes": nodes},
            prepare=lambda b, make=make: [make() for _ in range(b)],
            run=plan,
            check=check,
            batch=batch_for(s, lambda make=make: plan([make()])),
            samples=s.samples,
        )


def bench_heartbeat(s: Settings, n: int) -> None:
    """`sync_meta_data` (Patroni's heartbeat hook) and `process_tasks` (its worker's turn)."""
    cluster = cluster_of(n)
    samples = s.heartbeat_samples(n)

    # The steady cache, built the way Patroni builds it: queue every group, then drain.
    steady = new_coordinator()
    set_cache(steady, {})
    steady.handler.sync_meta_data(cluster)
    steady.handler.process_tasks()
    cache = steady.handler._pg_dist_group
    assert steady.handler._tasks == [] and len(cache) == n + 1
    assert all(len(t) == 3 and all(x.nodeid for x in t) for t in cache.values())

    def heartbeats(count: int) -> None:
        for _ in range(count):
            steady.handler.sync_meta_data(cluster)

    def check_steady(_: object, __: object) -> None:
        h = steady.handler
        assert h._tasks == [] and h._in_flight is None and h._pg_dist_group is cache

    measure(
        "sync_meta_data",
        {"groups": n, "case": "steady_state_no_tasks", "tasks_added": 0},
        prepare=lambda b: b,
        run=heartbeats,
        check=check_steady,
        batch=batch_for(s, lambda: heartbeats(1)),
        samples=samples,
    )

    # A heartbeat that finds every worker group new consumes the handler's state, so one
    # sample runs one call on each of k handlers prepared beforehand.
    probe = new_coordinator()
    set_cache(probe, coordinator_only_cache())
    t0 = time.perf_counter_ns()
    probe.handler.sync_meta_data(cluster)
    one = max(1, time.perf_counter_ns() - t0)
    k = max(1, min(64, s.sample_ns // one))
    handlers = [new_coordinator() for _ in range(k)]

    def fresh(queue_tasks: bool) -> Callable[[int], list[Coordinator]]:
        def prepare(_: int) -> list[Coordinator]:
            for c in handlers:
                set_cache(c, coordinator_only_cache())
                if queue_tasks:
                    c.handler.sync_meta_data(cluster)
                    c.db.reset_counts()
            return handlers

        return prepare

    def sync_all(cs: list[Coordinator]) -> None:
        for c in cs:
            c.handler.sync_meta_data(cluster)

    def check_new(cs: list[Coordinator], _: object) -> None:
        for c in cs:
            tasks = c.handler._tasks
            assert [t.groupid for t in tasks] == list(range(1, n + 1)), len(tasks)
            assert all(
                len(t) == 3 and t.primary().host == address(t.groupid, 1) for t in tasks
            )

    measure(
        "sync_meta_data",
        {"groups": n, "case": "all_groups_new", "tasks_added": n},
        prepare=fresh(queue_tasks=False),
        run=sync_all,
        check=check_new,
        batch=k,
        samples=samples,
    )

    def drain_all(cs: list[Coordinator]) -> None:
        for c in cs:
            c.handler.process_tasks()

    def check_drained(cs: list[Coordinator], _: object) -> None:
        for c in cs:
            h = c.handler
            assert (
                h._tasks == []
                and h._in_flight is None
                and len(h._pg_dist_group) == n + 1
            )
            # Per group: BEGIN, citus_add_node for the primary and both secondaries, COMMIT.
            counts = (
                c.db.count("BEGIN"),
                c.db.count("citus_add_node"),
                c.db.count("COMMIT"),
            )
            assert counts == (n, 3 * n, n), counts
            assert (
                c.db.count("citus_update_node") == 0
                and c.db.count("citus_remove_node") == 0
            )

    measure(
        "process_tasks",
        {"groups": n, "case": "drain_all_new", "tasks_drained": n, "queries": 5 * n},
        prepare=fresh(queue_tasks=True),
        run=drain_all,
        check=check_drained,
        batch=k,
        samples=samples,
    )


# ------------------------------------------------------------------------------- main


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        cpu = next(
            (
                line.split(":", 1)[1].strip()
                for line in f
                if line.startswith("model name")
            ),
            "",
        )
    return {
        "bench": "meta",
        "patroni": PATRONI_VERSION,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "platform": platform.platform(),
        "hashseed": os.environ.get("PYTHONHASHSEED", "random"),
        "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def group_counts(text: str) -> list[int]:
    try:
        counts = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of group counts"
        ) from None
    if not counts or any(c < 1 for c in counts):
        raise argparse.ArgumentTypeError(
            f"{text!r}: every group count must be 1 or more"
        )
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="few samples: a smoke run of a few seconds"
    )
    parser.add_argument(
        "--only",
        default="",
        metavar="SUBSTRING",
        help="run only benches whose name contains this",
    )
    parser.add_argument(
        "--groups",
        type=group_counts,
        default=[10, 100, 1000],
        help="worker group counts (10,100,1000)",
    )
    args = parser.parse_args(argv)
    s = Settings.of(args.quick)

    benches: list[tuple[str, Callable[[], None]]] = [
        ("validate_config", lambda: bench_validate_config(s)),
        ("adjust_postgres_gucs", lambda: bench_adjust_gucs(s)),
        ("ignore_replication_slot", lambda: bench_slot_filter(s)),
        ("transition", lambda: bench_transition(s)),
    ]
    benches += [
        (f"heartbeat_{n}", lambda n=n: bench_heartbeat(s, n)) for n in args.groups
    ]

    emit(machine())
    for name, run in benches:
        if args.only in name:
            run()
    emit(
        {"bench": "meta_end", "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()]}
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
