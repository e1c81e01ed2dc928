"""Patroni's `Cluster` (the coordinator's group with its `workers`) as the policy's DCS view.

The bodies are written straight from Patroni's `Member.data`, the dictionary each member
publishes, without building a `ClusterView` first: a heartbeat of 1000 groups is one pass
over their members. A field of the wrong type (a hand-edited member key) is written as
absent, which is what the reference's string comparisons make of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, List, Optional, Tuple

from ..view import text_field

if TYPE_CHECKING:  # pragma: no cover
    from patroni.dcs import Cluster, Member


def _str(v: Any) -> Optional[str]:
    return v if isinstance(v, str) else None


def _member(m: Member) -> str:
    data = m.data
    kwargs = data.get("conn_kwargs")
    if isinstance(kwargs, dict):
        port = kwargs.get("port")
        kw = (f"k\t{text_field(_str(kwargs.get('host')))}\t"
              f"{text_field(None if port is None or isinstance(port, bool) else str(port))}")
    else:
        kw = "-\t\\N\t\\N"
    tags = data.get("tags")
    nolb = "1" if isinstance(tags, dict) and tags.get("noloadbalance") else "0"
    return (f"{text_field(m.name)}\t{text_field(_str(data.get('conn_url')))}\t{kw}\t"
            f"{text_field(_str(data.get('role')))}\t{text_field(_str(data.get('state')))}\t"
            f"{nolb}")


def group_body(cluster: Cluster) -> str:
    """One group's body: its leader's name, then each member's fields."""
    leader = cluster.leader
    parts: List[str] = [text_field(leader.member.name if leader is not None else None)]
    parts.extend(_member(m) for m in cluster.members)
    return "\t".join(parts)


def cluster_bodies(cluster: Cluster) -> Iterator[Tuple[int, str]]:
    """The coordinator's group (0), then every worker group in ascending id."""
    yield 0, group_body(cluster)
    workers = cluster.workers
    for gid in sorted(workers):
        yield gid, group_body(workers[gid])
