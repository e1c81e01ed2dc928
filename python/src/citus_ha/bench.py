"""`python -m citus_ha bench [--quick] [--json]`: the Python host's cost of the three hot paths,
on the fixture `citus-ha bench` uses (shared/peer-bench's shape): a coordinator `coord-0` with
two replicas and N worker groups, each a primary and two running replicas.

- `heartbeat_steady_N`: one heartbeat whose view matches the handler's cache, timed from the
  Python-side `ClusterView` to the end of the call (the view is written as text every time);
- `heartbeat_new_N`: one heartbeat that queues N tasks (the cache holds only the coordinator);
- `drain_N`: the turn that processes those N tasks against the simulator component (5
  statements per group), batches and results crossing as text.

Wall time (`perf_counter_ns`) with the garbage collector off during each sample, median of
the samples, as the reference's harness measures.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from typing import Callable, List, Optional, Tuple, TypeVar

from .policy import CitusConfig, Handler, Policy
from .session import SimSession
from .sim import Simulator
from .statements import NodeRole, PgDistRow
from .view import ClusterView, GroupView, Member

NAME = "coord-0"
CONNECT_URL = "postgres://10.0.0.1:5432/postgres"
CONFIG = CitusConfig(0, "citus")

T = TypeVar("T")


def host_of(g: int, m: int) -> str:
    return f"10.{g >> 8}.{g & 255}.{m}"


def _member(name: str, host: str, role: str) -> Member:
    return Member(name, f"postgres://{host}:5432/postgres", None, role, "running")


def view(n: int) -> ClusterView:
    coordinator = GroupView(NAME, (_member(NAME, "10.0.0.1", "primary"),
                                   _member("coord-1", "10.0.0.2", "replica"),
                                   _member("coord-2", "10.0.0.3", "replica")))
    workers = {g: GroupView(f"g{g}-m1", tuple(
        _member(f"g{g}-m{m}", host_of(g, m), "primary" if m == 1 else "replica")
        for m in (1, 2, 3))) for g in range(1, n + 1)}
    return ClusterView(coordinator, workers)


def coordinator_rows() -> List[PgDistRow]:
    return [PgDistRow(m, 0, host_of(0, m), 5432,
                      NodeRole.PRIMARY if m == 1 else NodeRole.SECONDARY) for m in (1, 2, 3)]


def sim_with(rows: List[PgDistRow]) -> SimSession:
    s = SimSession(Simulator.load())
    s.set_rows(rows)
    return s


def turn(h: Handler, session: SimSession, now: int) -> int:
    """One turn against the simulator (the loop `Agent.run_turn` runs, without its snapshot);
    how many statements ran."""
    n = 0
    batch = h.poll_statements(now)
    while batch:
        results = session.execute(batch)
        n += results.text.count("\n")
        batch = h.handle_results(now, results)
    return n


def reset_to_coordinator(h: Handler) -> None:
    h.heartbeat(0, view(0))
    h.demote()
    assert turn(h, sim_with(coordinator_rows()), 0) == 1, "a reset is one load"


def sample(prepare: Callable[[], T], run: Callable[[T], None], check: Callable[[T], None],
           samples: int) -> List[int]:
    state = prepare()
    run(state)  # warm-up on the same path
    check(state)
    out: List[int] = []
    for _ in range(samples):
        state = prepare()
        gc.collect()
        gc.disable()
        try:
            t = time.perf_counter_ns()
            run(state)
            out.append(time.perf_counter_ns() - t)
        finally:
            gc.enable()
        check(state)
    return out


def heartbeat_steady(policy: Policy, n: int, samples: int) -> List[int]:
    v = view(n)
    h = policy.handler(CONFIG, NAME, CONNECT_URL)
    sim = SimSession(Simulator.load())
    h.heartbeat(0, v)
    assert turn(h, sim, 0) == 1 + 5 * (n + 1)

    def run(_: None) -> None:
        h.heartbeat(1, v)

    def check(_: None) -> None:
        assert h.poll_statements(1).text == "", "a steady heartbeat queued tasks"

    return sample(lambda: None, run, check, samples)


def heartbeat_new(policy: Policy, n: int, samples: int) -> List[int]:
    v = view(n)
    h = policy.handler(CONFIG, NAME, CONNECT_URL)
    verified = [False]

    def prepare() -> Handler:
        reset_to_coordinator(h)
        return h

    def run(h: Handler) -> None:
        h.heartbeat(2, v)

    def check(h: Handler) -> None:
        if not verified[0]:
            assert turn(h, sim_with(coordinator_rows()), 2) == 5 * n, "every group queued"
            verified[0] = True

    return sample(prepare, run, check, samples)


def drain(policy: Policy, n: int, samples: int) -> List[int]:
    v = view(n)
    h = policy.handler(CONFIG, NAME, CONNECT_URL)
    ran = [0]

    def prepare() -> Tuple[Handler, SimSession]:
        reset_to_coordinator(h)
        h.heartbeat(3, v)
        return h, sim_with(coordinator_rows())

    def run(s: Tuple[Handler, SimSession]) -> None:
        ran[0] = turn(s[0], s[1], 3)

    def check(s: Tuple[Handler, SimSession]) -> None:
        assert ran[0] == 5 * n, "statements of the drain"
        assert len(s[1].rows()) == 3 * (n + 1), "rows after the drain"

    return sample(prepare, run, check, samples)


def main(args: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m citus_ha bench")
    ap.add_argument("--quick", action="store_true", help="fewer samples")
    ap.add_argument("--json", action="store_true", help="one JSON object per line")
    ap.add_argument("--policy", help="a policy component other than the bundled one")
    ap.add_argument("--groups", type=int, default=1000)
    a = ap.parse_args(args)
    policy = Policy.load(a.policy)
    n = a.groups
    samples = 7 if a.quick else 31
    for name, fn in ((f"heartbeat_steady_{n}", heartbeat_steady),
                     (f"heartbeat_new_{n}", heartbeat_new), (f"drain_{n}", drain)):
        s = sorted(fn(policy, n, samples))
        q = statistics.quantiles(s, n=10) if len(s) >= 10 else [s[0]] * 9
        rec = {"bench": name, "groups": n, "median_ns": round(statistics.median(s)),
               "p10_ns": round(q[0]), "p90_ns": round(q[-1]), "min_ns": s[0],
               "samples": len(s), "host": "python", "contract": policy.contract}
        if a.json:
            print(json.dumps(rec), flush=True)
        else:
            print(f"{name:<24} {rec['median_ns'] / 1e6:9.3f} ms  "
                  f"(p10 {rec['p10_ns'] / 1e6:.3f}, p90 {rec['p90_ns'] / 1e6:.3f}, "
                  f"{len(s)} samples)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
