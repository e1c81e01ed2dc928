"""Patroni 4.1.x with the citus-ha drop-in on a real cluster: etcd, five Patroni members in
three Citus groups, PostgreSQL 15 with the citus extension (real, or the project's stand-in).

The cases run in order on one cluster; each starts by waiting until the cluster is healthy.
"""

from __future__ import annotations

import threading
import time
from typing import List, Optional

import psycopg

from .client import Writer
from .patroni_cluster import SCOPE, TTL, Cluster, Member
from .pglog import LogEntry
from .processes import wait_for


def other(cluster: Cluster, m: Member) -> Member:
    return next(x for x in cluster.group(m.group) if x is not m)


def first(entries: List[LogEntry], *needles: str) -> Optional[LogEntry]:
    return next((e for e in entries if all(n in e.text for n in needles)), None)


def statements_of(entries: List[LogEntry], sql: str) -> List[LogEntry]:
    return [e for e in entries if e.sql is not None and e.sql.strip().upper() == sql]


def assert_rows_present(coordinator: Member, writer: Writer) -> None:
    """No insert failed, and every row the client wrote is in the group's shards, once."""
    inserts = writer.stop()
    errors = [i for i in inserts if i.error]
    assert not errors, f"{len(errors)} client errors, first: {errors[0]}"
    with psycopg.connect(coordinator.dsn("e2e-probe"), autocommit=True) as c:
        keys = [k for (k,) in c.execute(f"SELECT key FROM {writer.table} WHERE value = %s "
                                        "ORDER BY key", (writer.tag,))]
    assert keys == [i.key for i in inserts], "rows lost or duplicated"
    assert len(keys) > 20, "the client kept writing"


def assert_switchover_transaction(cluster: Cluster, writer: Writer, old: Member, new: Member,
                                  since: float, until: float) -> None:
    """One transaction (BEGIN .. COMMIT, no ROLLBACK) holds the switchover; the `-demoted`
    rename that pauses writes finished before the old primary was asked to stop, and a client
    write was held while the group had no writable primary."""
    stmts = cluster.handler_statements(since, until)
    begins, commits = statements_of(stmts, "BEGIN"), statements_of(stmts, "COMMIT")
    rollbacks = statements_of(stmts, "ROLLBACK")
    log = "\n".join(f"{e.at:.3f} {e.text}" for e in stmts)
    assert (len(begins), len(commits), len(rollbacks)) == (1, 1, 0), log
    demote = first(stmts, "citus_update_node", "-demoted", str(old.pg_port))
    assert demote is not None, log
    promote = [e for e in stmts if "citus_update_node" in e.text and str(new.pg_port) in e.text]
    assert promote, log
    assert begins[0].at <= demote.at <= promote[-1].at <= commits[0].at, log
    stops = cluster.shutdowns(old, since)
    assert stops, f"{old.name} was not shut down"
    (asked, done) = stops[0]
    assert demote.at < asked and done < commits[0].at, (
        f"pause at {demote.at:.3f}, {old.name} asked to stop at {asked:.3f} and down at "
        f"{done:.3f}, commit at {commits[0].at:.3f}\n{log}")
    # The group had no writable primary from `done` until the new one was ready: a write
    # sent before that was held (not failed) until the commit.
    ready = cluster.ready(new, done)
    assert ready, f"{new.name} never became ready for writes"
    assert writer.held_across(ready[0]), f"no client write was held until {new.name} took over"


def test_1_coordinator_registers_every_primary_and_replica(cluster: Cluster) -> None:
    cluster.wait_rows_follow([0, 1, 2])
    rows = cluster.pg_dist_node()
    for g in (0, 1):
        assert rows[g] == {m.address: "primary" if m.name.endswith("m0") else "secondary"
                           for m in cluster.group(g)}, rows
    assert rows[2] == {cluster.member("g2m0").address: "primary"}, rows
    # The Citus handler is the one asked for: the drop-in says so when it takes over.
    coordinator_log = cluster.member("g0m0").patroni_log.read_text()
    assert ("citus-ha policy" in coordinator_log) == (cluster.command.kind == "drop-in"), (
        f"{cluster.command.kind} Patroni expected on g0m0")
    # The coordinator's Citus handler wrote them, through the Citus functions.
    stmts = cluster.handler_statements(0, members=[cluster.member("g0m0")])
    for m in cluster.group(1) + cluster.group(2):
        assert first(stmts, "citus_add_node", str(m.pg_port)), f"{m.name} not added"


def test_2_coordinator_failover_then_switchover(cluster: Cluster) -> None:
    cluster.wait_healthy(90)
    old = cluster.leader(0)
    new = other(cluster, old)
    for command in ("failover", "switchover"):
        since = time.time()
        args = ["--leader", old.name] if command == "switchover" else []
        cluster.patronictl(command, "--group", "0", *args, "--candidate", new.name, "--force")
        wait_for(f"{new.name} to lead the coordinator group",
                 lambda n=new: n.state() == ("primary", "running"), 60)
        cluster.wait_healthy(90)
        rows = cluster.pg_dist_node()
        assert rows[0] == {new.address: "primary", old.address: "secondary"}, rows
        # The new leader's handler took pg_dist_node over: the rows moved by its statements.
        stmts = cluster.handler_statements(since, members=[new])
        assert first(stmts, "citus_update_node", str(new.pg_port)), (
            f"{new.name} never updated its own row after {command}")
        if cluster.command.kind == "drop-in":
            assert "owns pg_dist_node" in new.patroni_log.read_text(), (
                f"the drop-in on {new.name} never took over")
        old, new = new, old


def test_3_worker_switchover_back_and_forth_under_writes(cluster: Cluster) -> None:
    cluster.wait_healthy(90)
    coordinator = cluster.leader(0)
    writer = Writer(coordinator, 1, "case3")
    windows = []
    try:
        time.sleep(0.5)
        for _ in range(2):
            old = cluster.leader(1)
            new = other(cluster, old)
            since = time.time()
            cluster.patronictl("switchover", "--group", "1", "--leader", old.name,
                               "--candidate", new.name, "--force")
            wait_for(f"{new.name} to lead group 1",
                     lambda n=new: n.state() == ("primary", "running"), 60)
            cluster.wait_healthy(90)
            windows.append((old, new, since, time.time()))
            time.sleep(0.5)
    finally:
        assert_rows_present(coordinator, writer)
    for old, new, since, until in windows:
        assert_switchover_transaction(cluster, writer, old, new, since, until)


def test_4_worker_primary_restart_under_writes(cluster: Cluster) -> None:
    cluster.wait_healthy(90)
    coordinator = cluster.leader(0)
    primary = cluster.leader(1)
    writer = Writer(coordinator, 1, "case4")
    try:
        time.sleep(0.5)
        since = time.time()
        cluster.patronictl("restart", SCOPE, primary.name, "--group", "1", "--force")
        cluster.wait_healthy(90)
        assert cluster.leader(1) is primary
        time.sleep(0.5)
    finally:
        assert_rows_present(coordinator, writer)
    stops = cluster.shutdowns(primary, since)
    assert stops, f"{primary.name} was not restarted"
    (asked, done) = stops[0]
    stmts = cluster.handler_statements(since)
    demote = first(stmts, "citus_update_node", "-demoted", str(primary.pg_port))
    assert demote is not None and demote.at < asked, "no pause before the restart"
    ready = cluster.ready(primary, done)
    assert ready, f"{primary.name} never came back"
    assert writer.held_across(ready[0]), f"no client write was held while {primary.name} was down"


def test_5_deadline_rollback_while_another_group_waits(cluster: Cluster) -> None:
    cluster.wait_healthy(90)
    coordinator = cluster.leader(0)
    lonely = cluster.member("g2m0")
    restarted = cluster.leader(1)
    since = time.time()
    # Group 2's only member shuts down: its Patroni pauses the group first and never comes
    # back to finish, so the coordinator holds an open transaction.
    stopper = threading.Thread(target=cluster.stop_member, args=(lonely,))
    stopper.start()
    paused = wait_for("group 2's pause", lambda: first(
        cluster.handler_statements(since), "-demoted", str(lonely.pg_port)), 30)
    # Meanwhile group 1's primary restarts: its change has to wait behind the open transaction.
    failures: List[BaseException] = []

    def restart() -> None:
        try:
            cluster.patronictl("restart", SCOPE, restarted.name, "--group", "1", "--force",
                               timeout=TTL + 60)
        except BaseException as e:  # reported by the test thread below
            failures.append(e)

    restarter = threading.Thread(target=restart)
    restarter.start()
    rollback = wait_for("the rollback at the pause's deadline", lambda: next(
        iter(statements_of(cluster.handler_statements(paused.at), "ROLLBACK")), None),
        TTL + 20, 0.5)
    held = rollback.at - paused.at
    assert TTL - 2 <= held <= TTL + 6, f"the pause was held {held:.1f} s, ttl is {TTL} s"
    stopper.join(60)
    restarter.join(TTL + 70)
    assert not failures, failures
    g1_pause = first(cluster.handler_statements(since), "-demoted", str(restarted.pg_port))
    assert g1_pause is not None and g1_pause.at > rollback.at, (
        "group 1's change did not wait for the rollback")
    cluster.wait_rows_follow([0, 1], 90)
    rows = cluster.pg_dist_node()
    assert rows[2] == {lonely.address: "primary"}, f"the rollback did not restore group 2: {rows}"
    with psycopg.connect(coordinator.dsn("e2e-probe"), autocommit=True) as c:
        c.execute("SET lock_timeout = '2s'")
        for g in (1, 2):
            c.execute(f"INSERT INTO citus_emulation.shard_{g} (key, value) VALUES (0, 'case5')")
