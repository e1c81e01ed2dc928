"""`python -m citus_ha replay FILE`: the scenario format (shared/scenario-format.md) driven
through the same `Agent`, `Handler` and simulator component as everything else, printing what
`citus-ha replay` prints, byte for byte: one line per statement, `note` lines, the final
pg_dist_node. Exit status 2 names the line of a malformed scenario."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from typing import IO, Any, List, Optional, Tuple

from .agent import Agent
from .errors import CitusHaError, InvalidInput, PolicyTrap, SwapRefused
from .policy import Discarded, Policy
from .session import FaultySession, PgSession, SimSession
from .statements import KINDS, Failed, NodeRole, PgDistRow, RolledBack, Statement, StatementResult
from .statements import statement_line as _json_line
from .view import ClusterView, cluster_from_dict

_FAIL_KINDS = ("citus_update_node", "citus_add_node", "citus_remove_node", "pg_dist_node",
               "BEGIN", "COMMIT", "ROLLBACK")
assert set(_FAIL_KINDS) == set(KINDS)


class ScenarioError(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


@dataclass
class Step:
    op: str
    line: int
    args: Any = None


def _dumps(v: Any) -> str:
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False)


def _string(o: dict, op: str, name: str) -> str:
    if name not in o:
        raise ValueError(f"`{op}` needs the field `{name}`")
    if not isinstance(o[name], str):
        raise ValueError(f"`{op}`: `{name}` must be a string")
    return o[name]


def _field(o: dict, op: str, name: str) -> Any:
    if name not in o:
        raise ValueError(f"`{op}` needs the field `{name}`")
    return o[name]


def _row(v: Any) -> PgDistRow:
    if not (isinstance(v, list) and len(v) == 5):
        raise ValueError('must be [nodeid, groupid, "nodename", nodeport, "noderole"]')

    def num(i: int, what: str) -> int:
        x = v[i]
        if isinstance(x, bool) or not isinstance(x, int) or not -2**31 <= x < 2**31:
            raise ValueError(f"{what} must be an integer")
        return x
    if v[4] not in ("primary", "secondary", "unavailable"):
        raise ValueError('noderole must be "primary", "secondary" or "unavailable"')
    nodeid, groupid = num(0, "nodeid"), num(1, "groupid")
    if not isinstance(v[2], str):
        raise ValueError("nodename must be a string")
    return PgDistRow(nodeid, groupid, v[2], num(3, "nodeport"), NodeRole(v[4]))


def _cluster(v: Any, op: str) -> ClusterView:
    try:
        return cluster_from_dict(v)
    except InvalidInput as e:
        raise ValueError(f"`{op}`: {e.field}: {e.reason}") from e


def _step(v: Any, line: int) -> Step:
    if not isinstance(v, dict):
        raise ValueError("a step must be a JSON object")
    if "op" not in v:
        raise ValueError("the step has no `op`")
    op = v["op"]
    if not isinstance(op, str):
        raise ValueError("`op` must be a string")
    if op == "config":
        citus = _field(v, op, "citus")
        if not isinstance(citus, dict):
            raise ValueError("`config`: `citus` must be an object")
        return Step(op, line, (citus, _string(v, op, "name"), _string(v, op, "conn_url")))
    if op == "metadata":
        rows = _field(v, op, "rows")
        if not isinstance(rows, list):
            raise ValueError("`metadata`: `rows` must be a list")
        out = []
        for i, r in enumerate(rows):
            try:
                out.append(_row(r))
            except ValueError as e:
                raise ValueError(f"`metadata`: rows[{i}]: {e}") from e
        return Step(op, line, out)
    if op == "sync":
        return Step(op, line, _cluster(_field(v, op, "cluster"), op))
    if op == "event":
        cluster = _cluster(_field(v, op, "cluster"), op)
        return Step(op, line, (cluster, json.dumps(_field(v, op, "event"),
                                                   separators=(",", ":"), sort_keys=True,
                                                   ensure_ascii=False)))
    if op in ("run", "demote", "rebuild"):
        return Step(op, line)
    if op == "advance":
        s = _field(v, op, "seconds")
        if isinstance(s, bool) or not isinstance(s, (int, float)):
            raise ValueError("`advance`: `seconds` must be a number")
        if not 0 <= s <= 1e9:
            raise ValueError(f"`advance`: `seconds` must be 0 or more, got {s}")
        return Step(op, line, math.floor(s * 1000.0 + 0.5))
    if op == "fail":
        kind = _string(v, op, "match")
        if kind not in _FAIL_KINDS:
            raise ValueError(f"`fail`: `match` must be one of {', '.join(_FAIL_KINDS)}, "
                             f"got {json.dumps(kind)}")
        return Step(op, line, (kind, _string(v, op, "error")))
    if op == "swap":
        return Step(op, line, _string(v, op, "path"))
    raise ValueError(f"unknown op {json.dumps(op)}")


def parse_scenario(text: str) -> List[Step]:
    steps: List[Step] = []
    for i, raw in enumerate(text.splitlines()):
        line = i + 1
        t = raw.strip()
        if not t or t.startswith("#"):
            continue
        try:
            v = json.loads(t)
        except json.JSONDecodeError as e:
            raise ScenarioError(line, f"not valid JSON: {e}") from e
        try:
            step = _step(v, line)
        except ValueError as e:
            raise ScenarioError(line, str(e)) from e
        if not steps and step.op != "config":
            raise ScenarioError(line, 'the first step must be {"op":"config",...}')
        if steps and step.op == "config":
            raise ScenarioError(line, "`config` may appear only once, as the first step")
        steps.append(step)
    if not steps:
        raise ScenarioError(0, "the scenario has no steps (it must start with a `config` step)")
    return steps


def statement_line(stmt: Statement, result: StatementResult) -> str:
    """The documented output line for a statement and its result."""
    line = _json_line(stmt)
    if isinstance(result, Failed):
        return line[:-1] + f',"error":{_dumps(result.message)}}}'
    if isinstance(result, RolledBack):
        return line[:-1] + ',"error":"COMMIT answered ROLLBACK"}'
    return line


def final_line(rows: List[PgDistRow]) -> str:
    return '{"final":' + _dumps([r.as_list() for r in sorted(rows, key=lambda r: r.nodeid)]) + "}"


def _note(out: IO[str], text: str) -> None:
    out.write(_dumps({"note": text}) + "\n")


def replay(steps: List[Step], policy: Policy, db: Optional[str], out: IO[str],
           err: IO[str]) -> None:
    if db is not None:
        for s in steps:
            if s.op == "metadata":
                raise ScenarioError(
                    s.line, "a `metadata` step only works with the simulator, not with --db")
    first = steps[0]
    citus, name, conn_url = first.args
    try:
        config = policy.validate_config(_dumps(citus))
    except InvalidInput as e:
        raise ScenarioError(first.line, f"invalid config: {e}") from e
    inner: Any = SimSession() if db is None else PgSession(db)
    session = FaultySession(inner)
    agent = Agent(policy.handler(config, name, conn_url), session)
    now = 0
    for step in steps[1:]:
        try:
            if step.op == "metadata":
                session.inner.set_rows(step.args)
            elif step.op == "sync":
                agent.heartbeat(now, step.args)
            elif step.op == "event":
                cluster, body = step.args
                try:
                    outcome = agent.event(now, cluster, body)
                except InvalidInput as e:
                    _note(out, f"line {step.line}: event refused: {e}")
                else:
                    if isinstance(outcome, Discarded):
                        err.write(f"line {step.line}: event discarded: {outcome.reason}\n")
            elif step.op == "run":
                def seen(s: Statement, r: StatementResult) -> None:
                    out.write(statement_line(s, r) + "\n")

                agent.run_turn(now, seen)
            elif step.op == "advance":
                now += step.args
            elif step.op == "fail":
                session.arm(*step.args)
            elif step.op == "demote":
                agent.demote()
            elif step.op == "rebuild":
                agent.schedule_reload()
            elif step.op == "swap":
                try:
                    agent.swap(Policy.load(step.args, limits=policy.limits))
                except (CitusHaError, SwapRefused) as e:
                    _note(out, f"line {step.line}: swap refused: {e}")
        except PolicyTrap as e:
            _note(out, f"line {step.line}: {e}")
    out.write(final_line(session.rows()) + "\n")


def main(args: List[str], out: IO[str] = sys.stdout, err: IO[str] = sys.stderr) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m citus_ha replay",
                                 description="Replay a scenario and print every statement.")
    ap.add_argument("file")
    ap.add_argument("--db", help="run against this PostgreSQL instead of the simulator")
    ap.add_argument("--policy", help="use this policy component instead of the bundled one")
    a = ap.parse_args(args)
    try:
        with open(a.file, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        err.write(f"citus_ha replay: cannot read {a.file}: {e}\n")
        return 2
    try:
        steps = parse_scenario(text)
    except ScenarioError as e:
        err.write(f"citus_ha replay: {a.file}: {e}\n")
        return 2
    try:
        policy = Policy.load(a.policy)
    except CitusHaError as e:
        err.write(f"citus_ha replay: {e}\n")
        return 1
    try:
        replay(steps, policy, a.db, out, err)
    except ScenarioError as e:
        err.write(f"citus_ha replay: {a.file}: {e}\n")
        return 2
    except Exception as e:
        err.write(f"citus_ha replay: {e}\n")
        return 1
    return 0


__all__: Tuple[str, ...] = ("main", "parse_scenario", "replay")
