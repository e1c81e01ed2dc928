"""A seeded generator of replay scenarios (docs/scenario-format.md) for the conformance suite.

Each scenario is played on a small model of a Citus cluster as an HA manager sees it: a
coordinator group and 1-4 worker groups whose members have addresses, roles, states and tags.
The model moves through what happens to real clusters (switchovers with and without worker
events, failovers, secondaries added, replaced and removed, whole groups appearing, outside
changes of pg_dist_node, injected statement failures, clock jumps past deadlines, demotes,
reloads, live swaps) and every step is written as the DCS view or event a host would get.

Most scenarios are valid and make the coordinator send statements; about one in twelve carries
one deliberate mistake (a malformed step, an impossible table, a bad view) so the hosts'
error paths are compared too. The same `(seed, index)` always gives the same bytes: only
`random.Random` seeded with a string is used, never the clock or hash order.

    python tests/conformance/generate.py --seed 7 --count 20 --out DIR
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

#: The `match` kinds of a `fail` step.
FAIL_KINDS = ("citus_update_node", "citus_add_node", "citus_remove_node", "pg_dist_node",
              "BEGIN", "COMMIT", "ROLLBACK")
#: Error texts an armed failure carries (non-ASCII and quotes included: they are echoed).
FAIL_ERRORS = ("connection reset", "server closed the connection unexpectedly",
               "terminating connection due to administrator command",
               'relation "pg_dist_node" is locked', "Verbindung verloren: Zeitüberschreitung")

Row = Tuple[int, int, str, int, str]


def _dumps(v: object) -> str:
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False)


@dataclass
class Member:
    """One member of a group in the DCS."""

    name: str
    host: str
    port: int
    role: str = "replica"
    state: Optional[str] = "running"
    noloadbalance: bool = False
    #: How it publishes its address: "url", "kwargs" (port a number) or "kwargs-str".
    style: str = "url"
    #: Whether `tags` is written even when noloadbalance is false.
    tags: bool = True

    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"postgres://{host}:{self.port}/postgres"

    def to_json(self) -> Dict[str, object]:
        m: Dict[str, object] = {"name": self.name}
        if self.style == "url":
            m["conn_url"] = self.url()
        else:
            port: object = self.port if self.style == "kwargs" else str(self.port)
            m["conn_kwargs"] = {"host": self.host, "port": port}
        m["role"] = self.role
        if self.state is not None:
            m["state"] = self.state
        if self.tags or self.noloadbalance:
            m["tags"] = {"noloadbalance": self.noloadbalance}
        return m


@dataclass
class Group:
    """A group in the DCS: its leader's name and its members."""

    gid: int
    leader: Optional[str]
    members: List[Member] = field(default_factory=list)
    #: Next member letter, so a new member never reuses a name.
    next_letter: int = 0

    def member(self, name: Optional[str]) -> Optional[Member]:
        return next((m for m in self.members if m.name == name), None)

    def replicas(self) -> List[Member]:
        return [m for m in self.members if m.name != self.leader]

    def to_json(self) -> Dict[str, object]:
        return {"leader": self.leader, "members": [m.to_json() for m in self.members]}


class Cluster:
    """The model: the coordinator group (0) and the worker groups, as the DCS has them."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.groups: Dict[int, Group] = {}
        self.next_host: Dict[int, int] = {}
        self.style = rng.choice(["url", "url", "url", "kwargs", "mixed"])
        #: Names and addresses with what text formats trip over: escapes of the view's text
        #: form, line separators inside a JSON string, non-ASCII, upper case, IPv6.
        self.exotic = rng.random() < 0.15

    def new_member(self, g: Group, role: str = "replica") -> Member:
        letter = "abcdefghijklmnopqrstuvwxyz"[g.next_letter % 26]
        g.next_letter += 1
        n = self.next_host.get(g.gid, 0) + 1
        self.next_host[g.gid] = n
        prefix = "coord" if g.gid == 0 else f"w{g.gid}"
        name = f"{prefix}{n}" if g.gid == 0 else f"{prefix}{letter}"
        host = f"10.0.{g.gid}.{n}"
        if self.rng.random() < 0.08:
            host = f"{name}.db.internal"
        if self.exotic and self.rng.random() < 0.5:
            name += self.rng.choice(["\t1", "\\x", "\u2028", "-ü", " ", "\U0001f418", "\r"])
            host = self.rng.choice([f"{name.strip()}.DB.Internal".replace("\t", "-"),
                                    f"fd00::{g.gid}:{n}", f"wörker-{g.gid}-{n}.example",
                                    f"W{g.gid}N{n}.EXAMPLE", host])
            host = "".join(c for c in host if c.isprintable() and c not in " \\")
        style = self.style
        if style == "mixed":
            style = self.rng.choice(["url", "kwargs", "kwargs-str"])
        port = 5432 if self.rng.random() < 0.85 else self.rng.choice([5433, 6432])
        m = Member(name, host, port, role, "running", False, style,
                   tags=self.rng.random() < 0.7)
        if role == "replica" and self.rng.random() < 0.15:
            m.noloadbalance = True
        if role == "replica" and self.rng.random() < 0.08:
            m.state = self.rng.choice(["stopped", "starting", None])
        g.members.append(m)
        return m

    def add_group(self, gid: int, size: int) -> Group:
        g = Group(gid, None)
        self.groups[gid] = g
        leader = self.new_member(g, "primary")
        g.leader = leader.name
        for _ in range(size - 1):
            self.new_member(g)
        return g

    def workers(self) -> List[Group]:
        return [g for gid, g in sorted(self.groups.items()) if gid != 0]

    def multi_member_groups(self) -> List[Group]:
        return [g for _, g in sorted(self.groups.items()) if len(g.members) > 1]

    def view(self) -> Dict[str, object]:
        v = self.groups[0].to_json()
        v["workers"] = {str(g.gid): g.to_json() for g in self.workers()}
        return v

    def rows(self, perturb: float) -> List[Row]:
        """pg_dist_node as it would be if it followed this view, each row perturbed with
        probability `perturb` (a stale primary, a missing or extra secondary, a leftover
        `-demoted` row), with nodeids that have gaps. Never two rows with one id or address."""
        rng = self.rng
        rows: List[Tuple[int, str, int, str]] = []
        for gid, g in sorted(self.groups.items()):
            leader = g.member(g.leader)
            if leader is not None:
                host = leader.host
                if rng.random() < perturb:
                    other = g.replicas()
                    host = rng.choice(other).host if other else f"10.9.{gid}.1"
                rows.append((gid, host, leader.port, "primary"))
            for m in g.replicas():
                if m.state == "running" and not m.noloadbalance and rng.random() >= perturb:
                    rows.append((gid, m.host, m.port, "secondary"))
            if rng.random() < perturb / 2:
                rows.append((gid, f"10.9.{gid}.{rng.randint(2, 9)}", 5432,
                             rng.choice(["secondary", "unavailable"])))
            if leader is not None and rng.random() < perturb / 3:
                rows.append((gid, f"{leader.host}-demoted", leader.port, "secondary"))
        out: List[Row] = []
        seen = set()
        nodeid = rng.randint(1, 4)
        for gid, host, port, role in rows:
            if (host, port) in seen:
                continue
            seen.add((host, port))
            out.append((nodeid, gid, host, port, role))
            nodeid += rng.choice([1, 1, 1, 2, 5])
        return out


class Writer:
    """Collects the scenario's lines and the clock, with comments and the occasional field a
    step does not know (which every host must ignore)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.lines: List[str] = []
        self.statements_expected = False

    def comment(self, text: str) -> None:
        if self.rng.random() < 0.6:
            self.lines.append(f"# {text}")
        if self.rng.random() < 0.05:
            self.lines.append("")

    def step(self, op: str, **fields: object) -> None:
        s: Dict[str, object] = {"op": op, **fields}
        if self.rng.random() < 0.03:
            s["note_for_humans"] = "ignored by every host"
        self.lines.append(_dumps(s))

    def advance(self, seconds: float) -> None:
        self.step("advance", seconds=seconds)

    def sync(self, c: Cluster) -> None:
        self.step("sync", cluster=c.view())

    def event(self, c: Cluster, body: object) -> None:
        self.step("event", cluster=c.view(), event=body)

    def run(self) -> None:
        self.step("run")

    def text(self) -> str:
        # Some files come from Windows editors.
        end = "\r\n" if self.rng.random() < 0.05 else "\n"
        return end.join(self.lines) + end


def _event(rng: random.Random, kind: str, gid: int, leader: str, timeout: int,
           cooldown: Optional[int]) -> Dict[str, object]:
    body: Dict[str, object] = {"type": kind, "group": gid, "leader": leader, "timeout": timeout}
    if cooldown is not None:
        body["cooldown"] = cooldown
    if rng.random() < 0.05:
        body["group"] = str(gid)
    return body


def _small_advance(w: Writer, rng: random.Random) -> None:
    w.advance(rng.choice([0, 0.5, 1, 1, 2, 3, 5, 10, 10, 10, 1.25]))


def _switchover(w: Writer, c: Cluster, rng: random.Random) -> None:
    """A planned switchover of a worker group: before_demote, before_promote, after_promote,
    each with the view of its moment, with the variations real ones have (a missing event,
    a heartbeat in between, the deadline passing, a failure or a demote midway)."""
    groups = [g for g in c.workers() if g.replicas() and g.member(g.leader)]
    if not groups:
        return _heartbeat(w, c, rng)
    g = rng.choice(groups)
    old = g.member(g.leader)
    assert old is not None
    running = [m for m in g.replicas() if m.state == "running"] or g.replicas()
    new = rng.choice(running)
    timeout = rng.choice([5, 20, 30, 30, 30, 60])
    cooldown = rng.choice([None, 10, 10, 5, 1, 0])
    with_events = rng.random() < 0.8
    w.comment(f"switchover group {g.gid}: {old.name} -> {new.name}"
              + ("" if with_events else " without worker events"))
    if not with_events:
        g.leader, old.role, new.role = new.name, "replica", "primary"
        _small_advance(w, rng)
        w.sync(c)
        w.run()
        return None
    _small_advance(w, rng)
    sender = old.name if rng.random() < 0.93 else new.name
    w.event(c, _event(rng, "before_demote", g.gid, sender, timeout, cooldown))
    w.run()
    twist = rng.random()
    if twist < 0.08:
        w.comment("the switchover stalls past the event's deadline")
        w.advance(timeout + rng.choice([1, 5, 30]))
        w.run()
    elif twist < 0.14:
        kind = rng.choice(FAIL_KINDS)
        w.comment(f"a {kind} fails mid-switchover")
        w.step("fail", match=kind, error=rng.choice(FAIL_ERRORS))
    elif twist < 0.18:
        w.comment("the coordinator is demoted mid-switchover")
        w.step("demote")
    elif twist < 0.22:
        w.comment("a metadata reload is requested mid-switchover")
        w.step("rebuild")
    old.role, old.state = "replica", rng.choice(["stopped", "stopped", "running"])
    g.leader = new.name
    if rng.random() < 0.85:
        w.advance(rng.choice([0.5, 1, 2, 3]))
        w.event(c, _event(rng, "before_promote", g.gid, new.name, timeout, cooldown))
        w.run()
    if rng.random() < 0.3:
        w.comment("a heartbeat during the switchover")
        w.sync(c)
        w.run()
    new.role, old.state = "primary", "running"
    if rng.random() < 0.85:
        w.advance(rng.choice([0.5, 1, 2]))
        w.event(c, _event(rng, "after_promote", g.gid, new.name, timeout, cooldown))
        w.run()
    else:
        w.comment("after_promote never arrives")
    w.statements_expected = True
    return None


def _failover(w: Writer, c: Cluster, rng: random.Random) -> None:
    """The leader dies: the group may go without a leader for a beat, then a replica is
    promoted (with events sometimes); the old primary is gone, stopped or back as a replica."""
    groups = [g for g in c.workers() if g.replicas()]
    if not groups:
        return _heartbeat(w, c, rng)
    g = rng.choice(groups)
    old = g.member(g.leader)
    new = rng.choice(g.replicas())
    w.comment(f"failover group {g.gid}: {g.leader} dies, {new.name} takes over")
    if rng.random() < 0.25:
        g.leader = None
        if old is not None:
            old.state = "stopped"
        _small_advance(w, rng)
        w.sync(c)
        w.run()
    g.leader, new.role, new.state = new.name, "primary", "running"
    if old is not None:
        fate = rng.choice(["gone", "stopped", "replica"])
        if fate == "gone":
            g.members.remove(old)
        else:
            old.role, old.state = "replica", "stopped" if fate == "stopped" else "running"
    _small_advance(w, rng)
    if rng.random() < 0.3:
        w.event(c, _event(rng, "before_promote", g.gid, new.name, 30, None))
        w.run()
        w.event(c, _event(rng, "after_promote", g.gid, new.name, 30, None))
        w.run()
    w.sync(c)
    w.run()
    w.statements_expected = True
    return None


def _secondaries(w: Writer, c: Cluster, rng: random.Random) -> None:
    """Replicas come, go, move, stop, or are tagged out of load balancing."""
    g = rng.choice([*c.workers(), c.groups[0]])
    what = rng.choice(["add", "add", "remove", "replace", "stop", "tag"])
    replicas = g.replicas()
    if what == "add" or not replicas:
        m = c.new_member(g)
        w.comment(f"group {g.gid}: {m.name} joins as a replica")
    elif what == "remove":
        m = rng.choice(replicas)
        g.members.remove(m)
        w.comment(f"group {g.gid}: {m.name} is removed")
    elif what == "replace":
        m = rng.choice(replicas)
        n = c.next_host.get(g.gid, 0) + 1
        c.next_host[g.gid] = n
        i = g.members.index(m)
        g.members[i] = replace(m, host=f"10.0.{g.gid}.{n}", state="running")
        w.comment(f"group {g.gid}: {m.name} is rebuilt on a new host")
    elif what == "stop":
        m = rng.choice(replicas)
        m.state = "stopped" if m.state == "running" else "running"
        w.comment(f"group {g.gid}: {m.name} is now {m.state}")
    else:
        m = rng.choice(replicas)
        m.noloadbalance = not m.noloadbalance
        w.comment(f"group {g.gid}: {m.name} noloadbalance={m.noloadbalance}")
    _small_advance(w, rng)
    w.sync(c)
    w.run()
    w.statements_expected = True


def _heartbeat(w: Writer, c: Cluster, rng: random.Random) -> None:
    _small_advance(w, rng)
    if rng.random() < 0.2 and c.multi_member_groups():
        g = rng.choice(c.multi_member_groups())
        rng.shuffle(g.members)
        w.comment(f"group {g.gid} lists its members in another order")
    w.sync(c)
    w.run()


def _new_group(w: Writer, c: Cluster, rng: random.Random) -> None:
    gid = max(c.groups) + 1
    if rng.random() < 0.2:
        gid += rng.randint(1, 5)
    c.add_group(gid, rng.randint(1, 3))
    w.comment(f"a new worker group {gid}")
    _small_advance(w, rng)
    w.sync(c)
    w.run()
    w.statements_expected = True


def _group_leaves(w: Writer, c: Cluster, rng: random.Random) -> None:
    workers = c.workers()
    if len(workers) < 2:
        return _heartbeat(w, c, rng)
    g = rng.choice(workers)
    del c.groups[g.gid]
    w.comment(f"worker group {g.gid} disappears from the DCS")
    _small_advance(w, rng)
    w.sync(c)
    w.run()
    return None


def _outside_change(w: Writer, c: Cluster, rng: random.Random) -> None:
    w.comment("outside change: an operator rewrites pg_dist_node")
    w.step("metadata", rows=c.rows(perturb=rng.choice([0.0, 0.3, 0.6])))
    if rng.random() < 0.5:
        w.step("rebuild")
    _small_advance(w, rng)
    w.sync(c)
    w.run()


def _failure(w: Writer, c: Cluster, rng: random.Random) -> None:
    kinds = rng.sample(FAIL_KINDS, rng.choice([1, 1, 1, 2]))
    w.comment("armed failures: " + ", ".join(kinds))
    for k in kinds:
        w.step("fail", match=k, error=rng.choice(FAIL_ERRORS))
    if rng.random() < 0.7:
        _failover(w, c, rng)
    else:
        _secondaries(w, c, rng)
    if rng.random() < 0.7:
        w.advance(10)
        w.sync(c)
        w.run()


def _time_passes(w: Writer, c: Cluster, rng: random.Random) -> None:
    w.comment("time passes")
    w.advance(rng.choice([31, 45.5, 61, 120, 600]))
    w.run()
    if rng.random() < 0.5:
        w.sync(c)
        w.run()


def _demote(w: Writer, c: Cluster, rng: random.Random) -> None:
    w.comment("the coordinator is demoted, then promoted again")
    w.step("demote")
    if rng.random() < 0.4:
        w.step("metadata", rows=c.rows(perturb=0.3))
    w.advance(rng.choice([5, 30]))
    w.sync(c)
    w.run()


def _rebuild(w: Writer, c: Cluster, rng: random.Random) -> None:
    w.comment("a metadata reload is requested")
    w.step("rebuild")
    w.run()
    w.sync(c)
    w.run()


def _odd_event(w: Writer, c: Cluster, rng: random.Random) -> None:
    """An event the policy refuses (a note) or discards (stderr): wrong type, missing or
    mistyped fields, a group or leader the view does not know."""
    g = rng.choice(c.workers())
    leader = g.leader or "nobody"
    bodies: List[object] = [
        {"type": "before_restart", "group": g.gid, "leader": leader, "timeout": 30},
        {"type": "before_demote", "leader": leader, "timeout": 30},
        {"type": "before_demote", "group": g.gid, "timeout": 30},
        {"type": "before_demote", "group": "one", "leader": leader, "timeout": 30},
        {"type": "before_demote", "group": g.gid, "leader": leader, "timeout": -5},
        {"type": "before_demote", "group": g.gid, "leader": leader, "timeout": 30.5,
         "cooldown": 2.5},
        {"type": "after_promote", "group": 99, "leader": "w99a", "timeout": 30},
        {"type": "before_demote", "group": g.gid, "leader": "someone-else", "timeout": 30},
        {"type": 7},
        ["before_demote"],
        "before_demote",
        None,
        {"type": "before_promote", "group": g.gid, "leader": leader, "timeout": 30,
         "cooldown": "10"},
        # Numbers past 64 bits, fractions, negative zero, exponents: each host hands the
        # policy the event as text, and they must write the same text.
        {"type": "before_demote", "group": 18446744073709551616, "leader": leader,
         "timeout": 30},
        {"type": "before_demote", "group": g.gid, "leader": leader, "timeout": 1e-7},
        {"type": "before_demote", "group": g.gid, "leader": leader, "timeout": -0.0},
        {"type": "before_demote", "group": g.gid, "leader": leader, "timeout": 3e10},
        {"type": "before_demote", "group": float(g.gid), "leader": leader, "timeout": 30},
        {"type": "before_demote", "group": g.gid, "leader": leader, "timeout": 30,
         "cooldown": 99999999999},
        {"type": "before_demote", "group": g.gid, "leader": leader + "\u2028", "timeout": 30},
        {"type": "before_demote", "group": g.gid, "leader": leader, "timeout": 30, "x": [{}]},
    ]
    w.comment("an event the policy does not take")
    w.event(c, rng.choice(bodies))
    w.run()


def _swap(w: Writer, c: Cluster, rng: random.Random, component: str) -> None:
    if rng.random() < 0.8:
        w.comment("live swap to the same build")
        w.step("swap", path=component)
    else:
        w.comment("a swap to a file that is not there is refused")
        w.step("swap", path="no/such/policy.wasm")
    w.sync(c)
    w.run()


ACTIONS = (
    (_heartbeat, 10), (_switchover, 22), (_failover, 12), (_secondaries, 14), (_new_group, 3),
    (_group_leaves, 2), (_outside_change, 5), (_failure, 9), (_time_passes, 5), (_demote, 3),
    (_rebuild, 3), (_odd_event, 5),
)


def _valid(rng: random.Random, component: str) -> Writer:
    w = Writer(rng)
    c = Cluster(rng)
    coord = c.add_group(0, 1 if rng.random() < 0.75 else 2)
    for gid in range(1, rng.randint(1, 4) + 1):
        c.add_group(gid, rng.choice([1, 2, 2, 2, 3, 3, 4]))
    me = coord.member(coord.leader)
    assert me is not None
    name, url = me.name, me.url()
    coordinator_failover = len(coord.members) == 2 and rng.random() < 0.5
    if coordinator_failover:
        other = coord.members[1]
        name, url = other.name, other.url()
    group: object = 0 if rng.random() < 0.9 else "0"
    worker_node = rng.random() < 0.03
    if worker_node:
        group, g1 = 1, c.groups[1]
        name = g1.leader or "w1a"
    w.step("config", citus={"group": group, "database": "citus"}, name=name, conn_url=url)
    start = rng.random()
    if start < 0.25:
        w.comment("an empty pg_dist_node: the first heartbeat registers everything")
    else:
        w.comment("initial metadata" + (": matching" if start < 0.6 else ": stale"))
        w.step("metadata", rows=c.rows(perturb=0.0 if start < 0.6 else 0.4))
    if rng.random() < 0.1:
        w.comment("an event before the first heartbeat is discarded")
        g = c.workers()[0]
        w.event(c, _event(rng, "before_demote", g.gid, g.leader or "x", 30, 10))
        w.run()
    if coordinator_failover:
        w.comment(f"the coordinator fails over to {name}")
        old, new = coord.members
        coord.leader, old.role, old.state, new.role = new.name, "replica", "stopped", "primary"
    w.sync(c)
    w.run()
    weights = [wt for _, wt in ACTIONS]
    for _ in range(rng.randint(3, 12)):
        action = rng.choices([a for a, _ in ACTIONS], weights)[0]
        action(w, c, rng)
        if rng.random() < 0.04:
            _swap(w, c, rng, component)
    if rng.random() < 0.15:
        w.comment("the scenario ends with a transaction open")
        g = rng.choice(c.workers())
        if g.leader:
            w.event(c, _event(rng, "before_demote", g.gid, g.leader, 30, 10))
            w.run()
    if worker_node:
        w.statements_expected = False
    return w


#: Deliberate mistakes: a short name and the edit that makes the scenario malformed (exit 2),
#: or a host-level problem that must be reported the same way by every host.
def _break(rng: random.Random, w: Writer) -> str:
    lines = w.lines
    steps = [i for i, t in enumerate(lines) if t and not t.startswith("#")]
    at = rng.choice(steps[1:]) if len(steps) > 1 else len(lines)
    kind = rng.choice(["unknown-op", "bad-json", "advance", "fail-match", "dup-id",
                       "dup-address", "bad-row", "config-twice", "no-config", "bad-config",
                       "bad-url", "bad-view", "missing-field", "empty", "not-object",
                       "not-json-numbers"])
    bad: str
    if kind == "unknown-op":
        bad = '{"op":"teleport"}'
    elif kind == "bad-json":
        bad = '{"op":"run"'
    elif kind == "advance":
        bad = rng.choice(['{"op":"advance","seconds":-1}', '{"op":"advance","seconds":"10"}',
                          '{"op":"advance"}', '{"op":"advance","seconds":true}'])
    elif kind == "fail-match":
        bad = '{"op":"fail","match":"citus_drop_node","error":"x"}'
    elif kind == "dup-id":
        bad = _dumps({"op": "metadata", "rows": [[1, 0, "10.0.0.1", 5432, "primary"],
                                                 [1, 1, "10.0.1.1", 5432, "primary"]]})
    elif kind == "dup-address":
        bad = _dumps({"op": "metadata", "rows": [[1, 0, "10.0.0.1", 5432, "primary"],
                                                 [2, 1, "10.0.0.1", 5432, "secondary"]]})
    elif kind == "bad-row":
        bad = rng.choice([
            '{"op":"metadata","rows":[[1,0,"10.0.0.1",5432]]}',
            '{"op":"metadata","rows":[[1,0,"10.0.0.1",5432,"leader"]]}',
            '{"op":"metadata","rows":[[1.5,0,"10.0.0.1",5432,"primary"]]}',
            '{"op":"metadata","rows":[[1,0,"10.0.0.1",4294967296,"primary"]]}',
            '{"op":"metadata","rows":{"1":[]}}'])
    elif kind == "config-twice":
        bad = lines[steps[0]]
    elif kind == "no-config":
        del lines[steps[0]]
        return kind
    elif kind == "bad-config":
        lines[steps[0]] = rng.choice([
            '{"op":"config","citus":{"group":-1,"database":"citus"},"name":"c","conn_url":"postgres://h/d"}',
            '{"op":"config","citus":{"group":0},"name":"c","conn_url":"postgres://h/d"}',
            '{"op":"config","citus":{"group":"01","database":"citus"},"name":"c","conn_url":"postgres://h/d"}',
            '{"op":"config","citus":{"group":0,"database":"citus","extra":1},"name":"c","conn_url":"postgres://h/d"}',
            '{"op":"config","citus":[0],"name":"c","conn_url":"postgres://h/d"}',
            '{"op":"config","citus":{"group":0,"database":"citus"},"conn_url":"postgres://h/d"}'])
        return kind
    elif kind == "bad-url":
        lines[steps[0]] = rng.choice([
            '{"op":"config","citus":{"group":0,"database":"citus"},"name":"c","conn_url":"postgres://h:notaport/d"}',
            '{"op":"config","citus":{"group":0,"database":"citus"},"name":"c","conn_url":"mysql://h/d"}',
            '{"op":"config","citus":{"group":0,"database":"citus"},"name":"c","conn_url":""}'])
        return kind
    elif kind == "bad-view":
        bad = rng.choice([
            '{"op":"sync","cluster":{"members":5}}',
            '{"op":"sync","cluster":{"members":[{"conn_url":"postgres://h/d"}]}}',
            '{"op":"sync","cluster":{"workers":{"0":{}}}}',
            '{"op":"sync","cluster":{"workers":{"01":{}}}}',
            '{"op":"sync","cluster":{"workers":{"99999999999":{}}}}',
            '{"op":"sync","cluster":{"workers":[]}}',
            '{"op":"sync","cluster":{"leader":5}}',
            '{"op":"sync","cluster":{"members":[{"name":"a","tags":{"noloadbalance":"yes"}}]}}',
            '{"op":"sync","cluster":{"members":[{"name":"a","conn_kwargs":{"port":[5432]}}]}}',
            '{"op":"event","cluster":"x","event":{}}',
            '{"op":"sync","cluster":[]}'])
    elif kind == "missing-field":
        bad = rng.choice(['{"op":"sync"}', '{"op":"event","cluster":{}}',
                          '{"op":"fail","match":"BEGIN"}', '{"op":"swap"}',
                          '{"op":"metadata"}', '{"op":5}', '{"run":1}'])
    elif kind == "not-object":
        bad = rng.choice(['[1,2]', '"run"', '42', 'null'])
    elif kind == "not-json-numbers":
        bad = rng.choice(['{"op":"advance","seconds":NaN}', '{"op":"advance","seconds":Infinity}',
                          '{"op":"advance","seconds":1e400}',
                          '{"op":"event","cluster":{},"event":{"timeout":1e400}}',
                          '{"op":"event","cluster":{},"event":{"leader":"\\ud800"}}'])
    else:
        lines.clear()
        lines.append("# nothing but a comment")
        return kind
    lines.insert(at, bad)
    return kind


@dataclass(frozen=True)
class Scenario:
    name: str
    text: str
    #: The generator meant it to be malformed (exit status 2 expected).
    malformed: bool
    #: The generator expects statements (a valid scenario on a coordinator that acts).
    statements_expected: bool


def generate_one(seed: int, index: int, component: str) -> Scenario:
    """The scenario number `index` of `seed`; `component` is the path written in swap steps."""
    rng = random.Random(f"citus-ha conformance {seed}:{index}")
    w = _valid(rng, component)
    name = f"gen-{seed}-{index:04d}"
    malformed = rng.random() < 1 / 12
    if malformed:
        name += "-" + _break(rng, w)
    return Scenario(name, w.text(), malformed, w.statements_expected and not malformed)


def generate(seed: int, count: int, component: str) -> Iterator[Scenario]:
    for i in range(count):
        yield generate_one(seed, i, component)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--count", type=int, default=20)
    ap.add_argument("--swap-component", default="python/src/citus_ha/components/policy.wasm")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    for s in generate(a.seed, a.count, a.swap_component):
        (a.out / f"{s.name}.jsonl").write_text(s.text, encoding="utf-8")


if __name__ == "__main__":
    main()
