"""The Python Agent against a real PostgreSQL 15 with the Citus emulation: a worker switchover
with a registered secondary (the pause in place before `before_demote` returns, one BEGIN and
one COMMIT), a failover seen only by heartbeats, and a deadline rollback while another group
waits."""

from __future__ import annotations

from typing import Dict, List

import psycopg
import pytest

from citus_ha import Agent, ClusterView, GroupView, Member, PgSession, Policy, Queued
from citus_ha.replay import statement_line

COORD = "postgres://10.0.0.1:5432/citus"


def m(name: str, host: str, role: str, state: str = "running") -> Member:
    return Member(name, f"postgres://{host}:5432/citus", None, role, state)


def view(g1: GroupView, g2: GroupView) -> ClusterView:
    coord = GroupView("coord1", (m("coord1", "10.0.0.1", "primary"),))
    return ClusterView(coord, {1: g1, 2: g2})


W1 = GroupView("w1a", (m("w1a", "10.0.1.1", "primary"), m("w1b", "10.0.1.2", "replica")))
W2 = GroupView("w2a", (m("w2a", "10.0.2.1", "primary"), m("w2b", "10.0.2.2", "replica")))


def rows(conn: psycopg.Connection) -> Dict[int, List[tuple]]:
    out: Dict[int, List[tuple]] = {}
    for g, name, role in conn.execute(
            "SELECT groupid, nodename, noderole::text FROM pg_dist_node ORDER BY nodeid"):
        out.setdefault(g, []).append((name, role))
    return out


@pytest.fixture
def cluster(pg):
    """A fresh citus database with groups 0-2 registered through the agent."""
    with psycopg.connect(pg.url("postgres"), autocommit=True) as c:
        c.execute("DROP DATABASE IF EXISTS citus WITH (FORCE)")
        c.execute("CREATE DATABASE citus")
    from conftest import ROOT

    with psycopg.connect(pg.url("citus"), autocommit=True) as c:
        c.execute((ROOT / "tests/sql/citus_emulation.sql").read_text())
        c.execute("UPDATE citus_emulation.config SET metadata_sync_delay_ms = 0")
    session = PgSession(pg.url("citus"))
    agent = Agent.start({"group": 0, "database": "citus"}, "coord1", COORD, session,
                        Policy.load())
    agent.heartbeat(0, view(W1, W2))
    agent.run_turn(0)
    probe = psycopg.connect(pg.url("citus"), autocommit=True)
    assert rows(probe) == {0: [("10.0.0.1", "primary")],
                           1: [("10.0.1.1", "primary"), ("10.0.1.2", "secondary")],
                           2: [("10.0.2.1", "primary"), ("10.0.2.2", "secondary")]}
    yield agent, probe
    probe.close()
    session.close()


def writes_blocked(probe: psycopg.Connection, group: int) -> bool:
    try:
        with probe.transaction():
            probe.execute("SET LOCAL lock_timeout = '300ms'")
            probe.execute(f"INSERT INTO citus_emulation.shard_{group} VALUES (1, 'probe')")
        return False
    except psycopg.errors.LockNotAvailable:
        return True


def test_worker_switchover_pauses_in_one_transaction(cluster) -> None:
    agent, probe = cluster
    clock = [1000]
    seen: List[str] = []
    agent.seen = lambda s, r: seen.append(statement_line(s, r))

    def sleep(seconds: float) -> None:
        clock[0] += max(1, int(seconds * 1000))

    ev = {"type": "before_demote", "group": 1, "leader": "w1a", "timeout": 30, "cooldown": 10}
    outcome = agent.handle_event(lambda: clock[0], view(W1, W2), ev, 30_000, sleep)
    assert isinstance(outcome, Queued)
    # before_demote returned: the pause is in place (writes to group 1 wait, group 2's do not).
    assert writes_blocked(probe, 1)
    assert not writes_blocked(probe, 2)
    assert agent.handler.metrics().in_flight
    moved = GroupView("w1b", (m("w1a", "10.0.1.1", "replica", "stopped"),
                              m("w1b", "10.0.1.2", "primary")))
    for kind in ("before_promote", "after_promote"):
        clock[0] += 1000
        agent.handle_event(lambda: clock[0], view(moved, W2),
                           {"type": kind, "group": 1, "leader": "w1b", "timeout": 30}, 30_000,
                           sleep)
    assert seen.count('{"op":"begin"}') == 1, seen
    assert seen.count('{"op":"commit"}') == 1, seen
    assert not writes_blocked(probe, 1)
    back = GroupView("w1b", (m("w1a", "10.0.1.1", "replica"), m("w1b", "10.0.1.2", "primary")))
    agent.heartbeat(clock[0], view(back, W2))
    agent.run_turn(clock[0])
    assert rows(probe)[1] == [("10.0.1.2", "primary"), ("10.0.1.1", "secondary")]


def test_a_failover_seen_only_by_heartbeats(cluster) -> None:
    agent, probe = cluster
    failed = GroupView("w2b", (m("w2b", "10.0.2.2", "primary"),))
    agent.heartbeat(5000, view(W1, failed))
    agent.run_turn(5000)
    # The primary row moves at once; the gone replica's row goes on the next turn (Citus
    # refuses a remove in the transaction of an update).
    assert rows(probe)[2][0] == ("10.0.2.2", "primary")
    agent.heartbeat(6000, view(W1, failed))
    agent.run_turn(6000)
    assert rows(probe)[2] == [("10.0.2.2", "primary")]
    assert rows(probe)[1] == [("10.0.1.1", "primary"), ("10.0.1.2", "secondary")]


def test_a_deadline_rollback_while_another_group_waits(cluster) -> None:
    agent, probe = cluster
    ev = {"type": "before_demote", "group": 1, "leader": "w1a", "timeout": 2, "cooldown": 10}
    assert isinstance(agent.event(1000, view(W1, W2), ev), Queued)
    agent.run_turn(1000)
    assert writes_blocked(probe, 1)
    # Group 1's worker never comes back; group 2 fails over and must not wait for ever.
    failed = GroupView("w2b", (m("w2b", "10.0.2.2", "primary"),))
    agent.heartbeat(2000, view(W1, failed))
    seen: List[str] = []
    agent.run_turn(2000, lambda s, r: seen.append(statement_line(s, r)))
    assert rows(probe)[2] == [("10.0.2.1", "primary"), ("10.0.2.2", "secondary")], "waits"
    deadline = agent.handler.poll_timeout()
    assert deadline is not None and deadline <= 3000
    agent.run_turn(deadline, lambda s, r: seen.append(statement_line(s, r)))
    assert '{"op":"rollback"}' in seen
    assert agent.handler.metrics().deadline_rollbacks == 1
    assert not writes_blocked(probe, 1)
    assert rows(probe)[1] == [("10.0.1.1", "primary"), ("10.0.1.2", "secondary")]
    assert rows(probe)[2][0] == ("10.0.2.2", "primary")


def test_a_statement_that_never_answers_costs_the_bound_and_the_session(cluster, pg) -> None:
    # `replay --db-timeout` / PgSession(statement_timeout=...), as the Rust host bounds it: a
    # load stuck behind an outside lock is cut after the bound and the session counts as lost.
    import time

    from citus_ha.statements import Batch, Failed, LoadMetadata, Metadata
    from citus_ha.statements import statement_line as line

    _, probe = cluster
    session = PgSession(pg.url("citus"), statement_timeout=0.5)
    load = Batch(line(LoadMetadata()) + "\n")
    with probe.transaction():
        probe.execute("LOCK pg_catalog.pg_dist_node IN ACCESS EXCLUSIVE MODE")
        t = time.monotonic()
        (r,) = session.execute(load).results
        waited = time.monotonic() - t
    assert isinstance(r, Failed) and r.connection_lost, r
    assert r.message.startswith("the coordinator did not answer within 0.5 s")
    assert 0.4 < waited < 5
    # The next statement opens a new session and works.
    (again,) = session.execute(load).results
    assert isinstance(again, Metadata) and len(again.rows) == 5
