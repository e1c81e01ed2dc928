"""The DCS view an HA manager hands the policy, and its text form (contract 0.4.0).

The text is PostgreSQL's COPY text format: one line per group (its id, flag and body length,
then the body), tab-separated fields, `\\N` for an absent value. `ViewWriter` flags each
group whose body did not change since the view it wrote before, so the policy skips what it
already settled: a steady heartbeat of 1000 groups is one string, no group decoded.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from .errors import InvalidInput

_ABSENT = "\\N"
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_SEQ = itertools.count(1)


@dataclass(frozen=True)
class Member:
    """One member of a group as the HA manager publishes it."""

    name: str
    conn_url: Optional[str] = None
    #: (host, port) when the member publishes `conn_kwargs` instead of a URL.
    conn_kwargs: Optional[Tuple[Optional[str], Optional[str]]] = None
    role: Optional[str] = None
    state: Optional[str] = None
    noloadbalance: bool = False


@dataclass(frozen=True)
class GroupView:
    """One group: its leader's name and its members."""

    leader: Optional[str] = None
    members: Tuple[Member, ...] = ()


@dataclass(frozen=True)
class ClusterView:
    """This coordinator's group and the worker groups by id."""

    coordinator: GroupView = field(default_factory=GroupView)
    workers: Mapping[int, GroupView] = field(default_factory=dict)


def _opt_str(v: Any, path: str) -> Optional[str]:
    if v is None or isinstance(v, str):
        return v
    raise InvalidInput(path, "must be a string")


def _member(v: Any, path: str) -> Member:
    if not isinstance(v, dict):
        raise InvalidInput(path, "must be an object")
    name = _opt_str(v.get("name"), f"{path}.name")
    if name is None:
        raise InvalidInput(f"{path}.name", "is required")
    kwargs = v.get("conn_kwargs")
    kw: Optional[Tuple[Optional[str], Optional[str]]] = None
    if isinstance(kwargs, dict):
        port = kwargs.get("port")
        if isinstance(port, bool) or not (port is None or isinstance(port, (int, float, str))):
            raise InvalidInput(f"{path}.conn_kwargs.port", "must be a number")
        kw = (_opt_str(kwargs.get("host"), f"{path}.conn_kwargs.host"),
              None if port is None else str(port))
    elif kwargs is not None:
        raise InvalidInput(f"{path}.conn_kwargs", "must be an object")
    tags = v.get("tags")
    nolb = False
    if isinstance(tags, dict):
        t = tags.get("noloadbalance")
        if t is not None and not isinstance(t, bool):
            raise InvalidInput(f"{path}.tags.noloadbalance", "must be true or false")
        nolb = bool(t)
    elif tags is not None:
        raise InvalidInput(f"{path}.tags", "must be an object")
    return Member(name, _opt_str(v.get("conn_url"), f"{path}.conn_url"), kw,
                  _opt_str(v.get("role"), f"{path}.role"),
                  _opt_str(v.get("state"), f"{path}.state"), nolb)


def _group(v: Any, path: str) -> GroupView:
    if not isinstance(v, dict):
        raise InvalidInput(path, "must be an object")
    members = v.get("members")
    if members is None:
        members = []
    if not isinstance(members, list):
        raise InvalidInput(f"{path}.members", "must be a list")
    return GroupView(_opt_str(v.get("leader"), f"{path}.leader"),
                     tuple(_member(m, f"{path}.members[{i}]") for i, m in enumerate(members)))


def cluster_from_dict(v: Any) -> ClusterView:
    """A view in the HA manager's own shape (the scenario format's CLUSTER):
    `{"leader", "members": [{"name", "conn_url", "role", "state", "tags"}], "workers": {"1": ...}}`.
    """
    if not isinstance(v, dict):
        raise InvalidInput("cluster", "must be an object")
    coordinator = _group(v, "cluster")
    workers: Dict[int, GroupView] = {}
    w = v.get("workers")
    if isinstance(w, dict):
        for k, g in w.items():
            if not (k.isdigit() and str(int(k)) == k and int(k) >= 1):
                raise InvalidInput("cluster.workers",
                                   f"{k!r} is not a worker group id (1 or more)")
            workers[int(k)] = _group(g, f"cluster.workers.{k}")
    elif w is not None:
        raise InvalidInput("cluster.workers", "must be an object keyed by group id")
    return ClusterView(coordinator, dict(sorted(workers.items())))


def text_field(s: Optional[str]) -> str:
    """One field of a group's body: `\\N` for an absent value, the COPY escapes applied."""
    if s is None:
        return _ABSENT
    if "\\" in s or "\t" in s or "\n" in s or "\r" in s:
        return s.translate(_ESCAPES)
    return s


_v = text_field


def group_body(g: GroupView) -> str:
    """A group's line after its flag: the leader, then 8 fields per member."""
    parts = [_v(g.leader)]
    for m in g.members:
        kw = m.conn_kwargs
        parts.append(
            f"{_v(m.name)}\t{_v(m.conn_url)}\t"
            + ("-\t\\N\t\\N" if kw is None else f"k\t{_v(kw[0])}\t{_v(kw[1])}")
            + f"\t{_v(m.role)}\t{_v(m.state)}\t{'1' if m.noloadbalance else '0'}"
        )
    return "\t".join(parts)


#: Each group's id and body (`group_body`), the coordinator's (0) first, then the workers in
#: ascending id: what a view's text is written from.
GroupBodies = Iterable[Tuple[int, str]]


def _groups(view: ClusterView) -> Iterable[Tuple[int, GroupView]]:
    yield 0, view.coordinator
    ids: Sequence[int] = list(view.workers)
    if any(a >= b for a, b in zip(ids, ids[1:])):
        ids = sorted(ids)
    for gid in ids:
        yield gid, view.workers[gid]


def _line(gid: int, flag: str, body: str) -> str:
    n = len(body) if body.isascii() else len(body.encode("utf-8"))
    return f"{gid}\t{flag}\t{n}\t{body}"


def bodies(view: ClusterView) -> GroupBodies:
    """The view's groups as the bodies its text is written from."""
    return ((gid, group_body(g)) for gid, g in _groups(view))


def view_text(view: Union[ClusterView, GroupBodies]) -> str:
    """A view written once, with no base (events, tests)."""
    groups = bodies(view) if isinstance(view, ClusterView) else view
    lines = [f"CHV2\t0\t{_ABSENT}"]
    lines.extend(_line(gid, "+", body) for gid, body in groups)
    return "\n".join(lines) + "\n"


class ViewWriter:
    """Writes successive heartbeat views for one handler, flagging (`=`) each group whose body
    is what it was in the previous view."""

    def __init__(self) -> None:
        self._seq: Optional[int] = None
        self._bodies: Dict[int, str] = {}

    def reset(self) -> None:
        """The next view is sent with no base (the handler was replaced or refused a view)."""
        self._seq = None

    def write(self, view: ClusterView) -> str:
        return self.write_bodies(bodies(view))

    def write_bodies(self, groups: GroupBodies) -> str:
        """A view written from its groups' bodies (an HA manager that writes them from its own
        objects skips building a `ClusterView`)."""
        base = self._seq
        seq = next(_SEQ)
        prev = self._bodies if base is not None else {}
        seen: Dict[int, str] = {}
        lines: List[str] = [f"CHV2\t{seq}\t{_ABSENT if base is None else base}"]
        for gid, body in groups:
            seen[gid] = body
            lines.append(_line(gid, "=" if prev.get(gid) == body else "+", body))
        self._bodies = seen
        self._seq = seq
        lines.append("")
        return "\n".join(lines)
