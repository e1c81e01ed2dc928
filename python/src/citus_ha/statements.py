"""What the policy asks the metadata session to run, and what comes back, as dataclasses, with
the JSON Lines of the contract (`poll-statements`, `handle-results`) on either side."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any, Iterable, List, Optional, Sequence, Tuple, Union

from .errors import InvalidInput


class NodeRole(str, enum.Enum):
    """The `noderole` column of pg_dist_node."""

    PRIMARY = "primary"
    SECONDARY = "secondary"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class PgDistRow:
    """One row of pg_dist_node."""

    nodeid: int
    groupid: int
    nodename: str
    nodeport: int
    noderole: NodeRole

    def as_list(self) -> List[Any]:
        return [self.nodeid, self.groupid, self.nodename, self.nodeport, self.noderole.value]

    @classmethod
    def from_list(cls, row: Sequence[Any]) -> PgDistRow:
        nodeid, groupid, nodename, nodeport, role = row
        return cls(int(nodeid), int(groupid), str(nodename), int(nodeport), NodeRole(role))


@dataclass(frozen=True)
class LoadMetadata:
    """SELECT nodeid, groupid, nodename, nodeport, noderole FROM pg_catalog.pg_dist_node"""


@dataclass(frozen=True)
class Begin:
    """BEGIN"""


@dataclass(frozen=True)
class Commit:
    """COMMIT"""


@dataclass(frozen=True)
class Rollback:
    """ROLLBACK"""


@dataclass(frozen=True)
class AddNode:
    """SELECT pg_catalog.citus_add_node($1, $2, $3, $4::noderole, 'default')"""

    host: str
    port: int
    groupid: int
    role: NodeRole


@dataclass(frozen=True)
class UpdateNode:
    """SELECT pg_catalog.citus_update_node($1, $2, $3, $4, $5)"""

    nodeid: int
    host: str
    port: int
    force: bool
    cooldown_ms: int


@dataclass(frozen=True)
class RemoveNode:
    """SELECT pg_catalog.citus_remove_node($1, $2)"""

    host: str
    port: int


Statement = Union[LoadMetadata, Begin, Commit, Rollback, AddNode, UpdateNode, RemoveNode]

_SIMPLE = {"load_metadata": LoadMetadata(), "begin": Begin(), "commit": Commit(),
           "rollback": Rollback()}
_KIND = {LoadMetadata: "pg_dist_node", Begin: "BEGIN", Commit: "COMMIT", Rollback: "ROLLBACK",
         AddNode: "citus_add_node", UpdateNode: "citus_update_node",
         RemoveNode: "citus_remove_node"}
#: Statement kinds as a scenario's `fail` step names them.
KINDS: Tuple[str, ...] = tuple(_KIND.values())


def kind(stmt: Statement) -> str:
    """The kind of a statement, as a scenario's `fail` step names it."""
    return _KIND[type(stmt)]


def parse_statement(line: str) -> Statement:
    """One statement line of `poll-statements`."""
    o = json.loads(line)
    op = o["op"]
    if op in _SIMPLE:
        return _SIMPLE[op]
    if op == "add_node":
        return AddNode(o["host"], o["port"], o["groupid"], NodeRole(o["role"]))
    if op == "update_node":
        return UpdateNode(o["nodeid"], o["host"], o["port"], o["force"], o["cooldown_ms"])
    if op == "remove_node":
        return RemoveNode(o["host"], o["port"])
    raise InvalidInput("statements", f"unknown op {op!r}")


def statement_line(stmt: Statement) -> str:
    """A statement as the contract's (and the replay's) JSON line."""
    return json.dumps(_statement_obj(stmt), separators=(",", ":"), ensure_ascii=False)


def _statement_obj(s: Statement) -> dict:
    if isinstance(s, AddNode):
        return {"op": "add_node", "host": s.host, "port": s.port, "groupid": s.groupid,
                "role": s.role.value}
    if isinstance(s, UpdateNode):
        return {"op": "update_node", "nodeid": s.nodeid, "host": s.host, "port": s.port,
                "force": s.force, "cooldown_ms": s.cooldown_ms}
    if isinstance(s, RemoveNode):
        return {"op": "remove_node", "host": s.host, "port": s.port}
    return {"op": {LoadMetadata: "load_metadata", Begin: "begin", Commit: "commit",
                   Rollback: "rollback"}[type(s)]}


@dataclass(frozen=True)
class Done:
    """Success without a value (BEGIN, COMMIT, ROLLBACK, update, remove)."""


@dataclass(frozen=True)
class RolledBack:
    """A COMMIT the server answered with ROLLBACK (the transaction had failed)."""


@dataclass(frozen=True)
class Added:
    """citus_add_node returned this nodeid."""

    nodeid: int


@dataclass(frozen=True)
class Metadata:
    """The rows of pg_dist_node."""

    rows: Tuple[PgDistRow, ...]


@dataclass(frozen=True)
class Failed:
    """The statement failed; the session has already discarded its open transaction."""

    message: str
    sqlstate: Optional[str] = None
    connection_lost: bool = False


StatementResult = Union[Done, RolledBack, Added, Metadata, Failed]


def ends_batch(r: StatementResult) -> bool:
    """The statement did not do its work, so the rest of its batch must not run."""
    return isinstance(r, (Failed, RolledBack))


def result_obj(r: StatementResult) -> dict:
    if isinstance(r, Done):
        return {"result": "done"}
    if isinstance(r, RolledBack):
        return {"result": "rolled_back"}
    if isinstance(r, Added):
        return {"result": "added", "nodeid": r.nodeid}
    if isinstance(r, Metadata):
        return {"result": "metadata", "rows": [row.as_list() for row in r.rows]}
    return {"result": "failed", "message": r.message, "sqlstate": r.sqlstate,
            "connection_lost": r.connection_lost}


def results_text(results: Iterable[StatementResult]) -> str:
    """Results as the contract's JSON Lines."""
    return "".join(json.dumps(result_obj(r), separators=(",", ":"), ensure_ascii=False) + "\n"
                   for r in results)


def parse_result(line: str) -> StatementResult:
    o = json.loads(line)
    tag = o["result"]
    if tag == "done":
        return Done()
    if tag == "rolled_back":
        return RolledBack()
    if tag == "added":
        return Added(o["nodeid"])
    if tag == "metadata":
        return Metadata(tuple(PgDistRow.from_list(r) for r in o["rows"]))
    if tag == "failed":
        return Failed(o["message"], o.get("sqlstate"), bool(o.get("connection_lost", False)))
    raise InvalidInput("results", f"unknown result {tag!r}")


class Batch:
    """The statements of one `poll-statements`, as the text the policy wrote; parsed into
    dataclasses only when someone looks (a simulator session passes the text on unread)."""

    __slots__ = ("_statements", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self._statements: Optional[Tuple[Statement, ...]] = None

    @property
    def statements(self) -> Tuple[Statement, ...]:
        if self._statements is None:
            self._statements = tuple(parse_statement(line) for line in self.lines())
        return self._statements

    def lines(self) -> List[str]:
        return [line for line in self.text.splitlines() if line]

    def __bool__(self) -> bool:
        return bool(self.text)

    def __len__(self) -> int:
        return len(self.statements)


class Results:
    """The results of a batch, as text, as dataclasses, or both (each made from the other when
    first asked for)."""

    __slots__ = ("_results", "_text")

    def __init__(self, *, text: Optional[str] = None,
                 results: Optional[Sequence[StatementResult]] = None) -> None:
        if text is None and results is None:
            raise ValueError("Results needs text or results")
        self._text = text
        self._results = tuple(results) if results is not None else None

    @property
    def text(self) -> str:
        if self._text is None:
            assert self._results is not None
            self._text = results_text(self._results)
        return self._text

    @property
    def results(self) -> Tuple[StatementResult, ...]:
        if self._results is None:
            assert self._text is not None
            self._results = tuple(parse_result(line) for line in self._text.splitlines() if line)
        return self._results
