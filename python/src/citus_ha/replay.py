"""`python -m citus_ha replay FILE`: the scenario format (docs/scenario-format.md) driven
through the same `Agent`, `Handler` and simulator component as everything else, printing what
`citus-ha replay` prints, byte for byte: one line per statement, `note` lines, the final
pg_dist_node. Exit status 2 names the line of a malformed scenario."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from typing import IO, Any, Callable, Dict, List, Optional, Tuple, Union

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
        out: List[PgDistRow] = []
        ids: Dict[int, int] = {}
        addresses: Dict[Tuple[str, int], int] = {}
        for i, r in enumerate(rows):
            try:
                row = _row(r)
            except ValueError as e:
                raise ValueError(f"`metadata`: rows[{i}]: {e}") from e
            # pg_dist_node has both as unique keys: such a table cannot exist, and loading it
            # would silently drop a row.
            j = ids.setdefault(row.nodeid, i)
            if j != i:
                raise ValueError(f"`metadata`: rows[{i}] repeats nodeid {row.nodeid} of rows[{j}]")
            j = addresses.setdefault((row.nodename, row.nodeport), i)
            if j != i:
                raise ValueError(f"`metadata`: rows[{i}] repeats the address "
                                 f"{row.nodename}:{row.nodeport} of rows[{j}]")
            out.append(row)
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


def _finite(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise ValueError(f"number out of range: {text}")
    return v


def _integer(text: str) -> Union[int, float]:
    # Beyond 64 bits a JSON integer is read as a float, as the Rust host reads it.
    v = int(text)
    return v if -2**63 <= v < 2**64 else _finite(text)


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _has_surrogate(v: Any) -> bool:
    if isinstance(v, str):
        return any("\ud800" <= c <= "\udfff" for c in v)
    if isinstance(v, list):
        return any(_has_surrogate(x) for x in v)
    if isinstance(v, dict):
        return any(_has_surrogate(k) or _has_surrogate(x) for k, x in v.items())
    return False


def _loads(text: str) -> Any:
    """JSON as strictly as the Rust host reads it: no NaN or Infinity, no number out of a
    float's range, no lone surrogate escape (which no UTF-8 text can carry on)."""
    v = json.loads(text, parse_float=_finite, parse_int=_integer, parse_constant=_not_json)
    if "\\u" in text and _has_surrogate(v):
        raise ValueError("a \\u escape is a lone surrogate")
    return v


#: Unicode's White_Space, which the Rust host trims from each line (str.strip() would also
#: take U+001C..U+001F, which JSON then refuses).
_WHITESPACE = ("\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
               "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")


def _lines(text: str) -> List[str]:
    """Lines as the Rust host splits them: at "\\n" only (a raw U+2028 inside a JSON string is
    not a line break, as str.splitlines() would have it), each without one trailing "\\r"."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def parse_scenario(text: str) -> List[Step]:
    steps: List[Step] = []
    for i, raw in enumerate(_lines(text)):
        line = i + 1
        t = raw.strip(_WHITESPACE)
        if not t or t.startswith("#"):
            continue
        try:
            v = _loads(t)
        except ValueError as e:
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


@dataclass(frozen=True)
class DbLimits:
    """`--db-timeout`: how long connecting and each statement may take (a forced update gets
    its cooldown on top) before the session counts as lost."""

    connect: float = 10.0
    statement: float = 10.0


def replay(steps: List[Step], policy: Policy, db: Optional[str], out: IO[str],
           err: IO[str], limits: DbLimits = DbLimits()) -> None:
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
    handler = policy.handler(config, name, conn_url)
    try:
        # The policy registers the coordinator's own row from it: refuse it here, with the
        # line, rather than as a member skipped later (the policy's own URL parser decides).
        handler.set_connect_url(conn_url)
    except InvalidInput as e:
        raise ScenarioError(first.line, f"`config`: `conn_url`: {e.reason}") from e
    inner: Any = (SimSession() if db is None
                  else PgSession(db, connect_timeout=limits.connect,
                                 statement_timeout=limits.statement))
    session = FaultySession(inner)
    agent = Agent(handler, session)
    try:
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
    finally:
        # A batch replays many files in one process: no connection outlives its scenario.
        if isinstance(inner, PgSession):
            inner.close()


PolicySource = Callable[[], Policy]


def replay_file(path: str, load_policy: PolicySource, db: Optional[str], limits: DbLimits,
                out: IO[str], err: IO[str]) -> int:
    """Replays one file as `replay FILE` does; returns its exit status (0 ran, 2 malformed,
    1 the policy or the database could not be used)."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        err.write(f"citus_ha replay: cannot read {path}: {e}\n")
        return 2
    try:
        steps = parse_scenario(text)
    except ScenarioError as e:
        err.write(f"citus_ha replay: {path}: {e}\n")
        return 2
    try:
        policy = load_policy()
    except CitusHaError as e:
        err.write(f"citus_ha replay: {e}\n")
        return 1
    try:
        replay(steps, policy, db, out, err, limits)
    except ScenarioError as e:
        err.write(f"citus_ha replay: {path}: {e}\n")
        return 2
    except Exception as e:
        err.write(f"citus_ha replay: {e}\n")
        return 1
    return 0


def _policy_once(path: Optional[str]) -> PolicySource:
    """Loads the policy on first use and remembers the outcome, so a batch pays for it once
    and every file still gets the exit status a lone replay would."""
    cached: List[Union[Policy, CitusHaError]] = []

    def load() -> Policy:
        if not cached:
            try:
                cached.append(Policy.load(path))
            except CitusHaError as e:
                cached.append(e)
        got = cached[0]
        if isinstance(got, CitusHaError):
            raise got
        return got
    return load


def _db_seconds(text: str) -> float:
    import argparse

    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not (math.isfinite(v) and 0 < v <= 86_400):
        raise argparse.ArgumentTypeError(f"{json.dumps(text)} is not a number of seconds "
                                         "from 0 to 86400")
    return v


def batch_names(files: List[str]) -> List[str]:
    """`--out-dir` file names: each FILE's name without its directory and `.jsonl`; refuses
    two files that would write the same outputs."""
    from pathlib import Path

    names = [Path(f).name[:-len(".jsonl")] if f.endswith(".jsonl") else Path(f).name
             for f in files]
    seen: Dict[str, str] = {}
    for f, n in zip(files, names):
        if n in seen:
            raise ValueError(f"{seen[n]} and {f} would both write {n}.out")
        seen[n] = f
    return names


def main(args: List[str], out: IO[str] = sys.stdout, err: IO[str] = sys.stderr) -> int:
    import argparse
    import io
    import logging
    import os

    ap = argparse.ArgumentParser(
        prog="python -m citus_ha replay",
        description="Replay a scenario and print every statement. With --out-dir, replay "
                    "each FILE in turn in this one process and write DIR/NAME.out (what "
                    "`replay FILE` prints), DIR/NAME.code (its exit status) and DIR/NAME.err, "
                    "NAME being the file's name without `.jsonl`; `{name}` in the --db URL "
                    "becomes NAME, so that each file can have a database of its own.")
    ap.add_argument("files", nargs="+", metavar="FILE")
    ap.add_argument("--db", help="run against this PostgreSQL instead of the simulator")
    ap.add_argument("--db-timeout", type=_db_seconds, default=10.0, metavar="SECONDS",
                    help="with --db: seconds to wait for a connection or for any statement's "
                         "answer (a forced update gets its cooldown on top) before counting "
                         "the session as lost (default 10)")
    ap.add_argument("--policy", help="use this policy component instead of the bundled one")
    ap.add_argument("--out-dir", metavar="DIR",
                    help="batch mode: write each FILE's output and exit status into DIR")
    a = ap.parse_args(args)
    limits = DbLimits(a.db_timeout, a.db_timeout)
    load = _policy_once(a.policy)
    if a.out_dir is None:
        if len(a.files) != 1:
            ap.error("several FILEs need --out-dir")
        db = None if a.db is None else a.db.replace("{name}", batch_names(a.files)[0])
        return replay_file(a.files[0], load, db, limits, out, err)
    try:
        names = batch_names(a.files)
        os.makedirs(a.out_dir, exist_ok=True)
    except (ValueError, OSError) as e:
        err.write(f"citus_ha replay: --out-dir: {e}\n")
        return 2
    log = logging.getLogger("citus_ha")
    for path, name in zip(a.files, names):
        db = None if a.db is None else a.db.replace("{name}", name)
        o, e = io.StringIO(), io.StringIO()
        # The policy's log lines of this file go with its other diagnostics, into NAME.err.
        to_err = logging.StreamHandler(e)
        log.addHandler(to_err)
        propagate, log.propagate = log.propagate, False
        try:
            code = replay_file(path, load, db, limits, o, e)
        finally:
            log.removeHandler(to_err)
            log.propagate = propagate
        base = os.path.join(a.out_dir, name)
        try:
            for suffix, text in ((".out", o.getvalue()), (".err", e.getvalue()),
                                 (".code", f"{code}\n")):
                with open(base + suffix, "w", encoding="utf-8", newline="") as f:
                    f.write(text)
        except OSError as x:
            err.write(f"citus_ha replay: --out-dir: {x}\n")
            return 1
    return 0


__all__: Tuple[str, ...] = ("DbLimits", "main", "parse_scenario", "replay", "replay_file")
