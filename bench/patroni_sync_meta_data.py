#!/usr/bin/env python3
"""Stock Patroni's `sync_meta_data` beside citus-ha's drop-in, on the same Patroni `Cluster`
in one sitting.

The cluster: the coordinator's group and N worker groups (default 1000), each a running
primary and two running replicas. Both handlers get the same stub PostgreSQL object (its
connection answers like pg_dist_node), start from the same registered metadata and are timed
on a steady heartbeat: the view matches pg_dist_node, so no statement is sent.

- stock: Patroni 4.1's `CitusHandler.sync_meta_data`, which compares the view with its cache
  on the caller's (the HA loop's) thread; its worker thread is never started (nothing is
  queued in a steady heartbeat, so it would not run anyway).
- drop-in: `citus_ha.patroni.CitusHandler.sync_meta_data` hands the `Cluster` over and
  returns; its owner thread then writes the view, calls the policy and runs the (empty) turn.
  Both halves are reported: the hand-over on the HA thread, and the owner's work, measured on
  the owner thread; their sum is what the comparison uses.

Run (Patroni 4.1.5 from bench/reference/setup.sh, plus this package):

    bash bench/reference/setup.sh && target/reference-venv/bin/pip install ./python
    PYTHONHASHSEED=0 target/reference-venv/bin/python bench/patroni_sync_meta_data.py

`--groups`, `--samples` and `--json` change the size, the number of timed heartbeats and the
output. No database, DCS or network is used.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import citus_ha.patroni
from citus_ha.patroni.dcs_view import cluster_bodies
from patroni.dcs import Cluster, Leader, Member, Status, SyncState
from patroni.postgresql.mpp.citus import CitusHandler as StockHandler
from patroni.version import __version__ as PATRONI_VERSION

COORDINATOR_URL = "postgres://10.0.0.1:5432/citus"


class FakeCoordinator:
    """pg_dist_node behind Patroni's `NamedConnection` interface (`query`, `get`, `close`)."""

    def __init__(self) -> None:
        self.rows: List[Tuple[Any, ...]] = []
        self.next_nodeid = 1
        self.statements = 0
        self._conn = object()

    def get(self) -> Any:
        return self._conn

    def close(self) -> None:
        pass

    def query(self, sql: str, *params: Any) -> List[Tuple[Any, ...]]:
        self.statements += 1
        if "citus_add_node" in sql:
            self.next_nodeid += 1
            return [(self.next_nodeid - 1,)]
        if "FROM pg_catalog.pg_dist_node" in sql:
            return self.rows
        if "set_config" in sql:
            return [(params[0],)]
        return []


class Pool:
    def __init__(self, conn: FakeCoordinator) -> None:
        self.conn_kwargs = {"host": "/var/run/postgresql", "port": 5432}
        self._conn = conn

    def get(self, name: str, override: Optional[Dict[str, Any]] = None) -> FakeCoordinator:
        return self._conn


class Postgresql:
    """The attributes of Patroni's `Postgresql` both handlers read."""

    name = "coord-0"
    connection_string = COORDINATOR_URL
    database = "postgres"

    def __init__(self, conn: FakeCoordinator) -> None:
        self.connection_pool = Pool(conn)

    def is_primary(self) -> bool:
        return True


def address(group: int, member: int) -> str:
    return f"10.{group >> 8}.{group & 255}.{member}"


def member(name: str, host: str, role: str) -> Member:
    return Member(1, name, 30, {"conn_url": f"postgres://{host}:5432/citus",
                                "state": "running", "role": role})


def group(leader: Member, members: List[Member], workers: Dict[int, Cluster]) -> Cluster:
    return Cluster(None, None, Leader(1, 30, leader), Status.empty(), members, None,
                   SyncState.empty(), None, None, workers)


def cluster_of(groups: int) -> Cluster:
    workers = {}
    for g in range(1, groups + 1):
        ms = [member(f"g{g}-m{m}", address(g, m), "primary" if m == 1 else "replica")
              for m in (1, 2, 3)]
        workers[g] = group(ms[0], ms, {})
    coord = [member(f"coord-{m}", f"10.0.0.{m + 1}", "primary" if m == 0 else "replica")
             for m in (0, 1, 2)]
    return group(coord[0], coord, workers)


def registered_rows(cluster: Cluster) -> List[Tuple[Any, ...]]:
    """pg_dist_node as both handlers register this cluster (nodeid, groupid, host, port, role)."""
    rows: List[Tuple[Any, ...]] = []
    groups = {0: cluster, **cluster.workers}
    for gid in sorted(groups):
        for i, m in enumerate(groups[gid].members):
            host = m.data["conn_url"].split("//")[1].split(":")[0]
            rows.append((len(rows) + 1, gid, host, 5432, "primary" if i == 0 else "secondary"))
    return rows


def stock_handler(cluster: Cluster) -> Tuple[StockHandler, FakeCoordinator]:
    db = FakeCoordinator()
    start = StockHandler.start
    StockHandler.start = lambda self: None  # type: ignore[method-assign]
    try:
        h = StockHandler(Postgresql(db), {"group": 0, "database": "citus"})  # type: ignore[arg-type]
    finally:
        StockHandler.start = start  # type: ignore[method-assign]
    # Its cache as after registering this cluster: reloaded from the same rows.
    db.rows = [(g, host, port, role, nodeid) for nodeid, g, host, port, role
               in registered_rows(cluster)]
    assert h.load_pg_dist_group()
    h.sync_meta_data(cluster)
    assert h._tasks == [], "the stock handler's cache does not match the cluster"
    return h, db


def drop_in_handler(cluster: Cluster) -> Tuple[Any, FakeCoordinator]:
    from patroni.postgresql.mpp import get_mpp

    db = FakeCoordinator()
    db.rows = registered_rows(cluster)
    h = get_mpp({"citus": {"group": 0, "database": "citus"}}).get_handler_impl(Postgresql(db))
    h.sync_meta_data(cluster)
    assert h.owner.wait_idle(60)
    before = db.statements
    h.sync_meta_data(cluster)
    assert h.owner.wait_idle(60)
    assert db.statements == before, "the drop-in sent statements on a steady heartbeat"
    return h, db


def timed(samples: int, one: Callable[[], float]) -> Dict[str, float]:
    one()
    gc.collect()
    gc.disable()
    try:
        xs = sorted(one() for _ in range(samples))
    finally:
        gc.enable()
    q = statistics.quantiles(xs, n=10) if len(xs) >= 10 else [xs[0]] * 9
    return {"median_ms": statistics.median(xs) * 1e3, "p10_ms": q[0] * 1e3,
            "p90_ms": q[-1] * 1e3, "min_ms": xs[0] * 1e3}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--groups", type=int, default=1000)
    ap.add_argument("--samples", type=int, default=51)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    citus_ha.patroni.register()
    cluster = cluster_of(args.groups)

    stock, _ = stock_handler(cluster)

    def stock_once() -> float:
        t = time.perf_counter()
        stock.sync_meta_data(cluster)
        took = time.perf_counter() - t
        assert not stock._tasks
        return took

    ours, ours_db = drop_in_handler(cluster)
    owner = ours.owner
    handover: List[float] = []

    def ours_once() -> float:
        n = owner.stats.heartbeats
        t = time.perf_counter()
        ours.sync_meta_data(cluster)
        handover.append(time.perf_counter() - t)
        while owner.stats.heartbeats == n or not owner.wait_idle(10):
            time.sleep(0.0005)
        return handover[-1] + owner.stats.last_heartbeat_seconds

    statements = ours_db.statements
    # Alternate, so that both see the same machine load.
    s_stock: List[float] = []
    s_ours: List[float] = []
    for _ in range(3):
        s_stock.append(timed(args.samples // 3 or 1, stock_once)["median_ms"])
        s_ours.append(timed(args.samples // 3 or 1, ours_once)["median_ms"])
    stock_t = timed(args.samples, stock_once)
    handover.clear()
    ours_t = timed(args.samples, ours_once)

    def bodies_once() -> float:
        t = time.perf_counter()
        for _ in cluster_bodies(cluster):
            pass
        return time.perf_counter() - t

    bodies_t = timed(args.samples, bodies_once)
    assert ours_db.statements == statements, "statements sent on a steady heartbeat"
    hand = sorted(handover)
    record = {
        "bench": "patroni_sync_meta_data_steady", "groups": args.groups,
        "members_per_group": 3, "patroni": PATRONI_VERSION,
        "python": platform.python_version(), "machine": platform.machine(),
        "stock": stock_t, "drop_in_total": ours_t, "drop_in_view_bodies": bodies_t,
        "drop_in_handover_median_ms": statistics.median(hand) * 1e3,
        "drop_in_handover_max_ms": hand[-1] * 1e3,
        "rounds_stock_median_ms": s_stock, "rounds_drop_in_median_ms": s_ours,
        "ratio_median": stock_t["median_ms"] / ours_t["median_ms"],
        "ratio_handover": stock_t["median_ms"] / (statistics.median(hand) * 1e3),
    }
    owner.stop()
    if args.json:
        print(json.dumps(record))
    else:
        print(f"sync_meta_data, steady heartbeat, {args.groups} groups x 3 members, "
              f"Patroni {PATRONI_VERSION}, CPython {platform.python_version()}")
        print(f"  stock Patroni:        median {stock_t['median_ms']:8.2f} ms "
              f"(p10 {stock_t['p10_ms']:.2f}, p90 {stock_t['p90_ms']:.2f})")
        print(f"  citus-ha, total:      median {ours_t['median_ms']:8.2f} ms "
              f"(p10 {ours_t['p10_ms']:.2f}, p90 {ours_t['p90_ms']:.2f})"
              f"   {record['ratio_median']:.1f}x faster")
        print(f"  citus-ha, HA thread:  median {record['drop_in_handover_median_ms']:8.3f} ms "
              f"(max {record['drop_in_handover_max_ms']:.3f})   "
              f"{record['ratio_handover']:.0f}x faster")
        print(f"  of which the view's bodies from Member.data: median "
              f"{bodies_t['median_ms']:.2f} ms (min {bodies_t['min_ms']:.2f})")
        print("  rounds (stock / drop-in medians): "
              + ", ".join(f"{a:.1f}/{b:.1f}" for a, b in zip(s_stock, s_ours)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
