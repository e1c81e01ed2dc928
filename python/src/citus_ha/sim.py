"""The in-memory pg_dist_node (`citus-sim`) as its capability-free component: the same
simulator `citus-ha replay` uses, so a Python replay refuses exactly what Citus refuses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List, Union

from ._runtime import DEFAULT_LIMITS, Instance, Limits, compile_component
from .errors import InvalidInput
from .policy import _bundled
from .statements import PgDistRow

_SIM = "citus-ha:sim/simulator@0.1.0"


def _ok(r: Any, field: str) -> Any:
    """The ok payload of a `result<T, string>` (the runtime lifts results tagged)."""
    if r.tag == "err":
        raise InvalidInput(field, str(r.payload))
    return r.payload


class Simulator:
    """One coordinator's pg_dist_node and its one metadata session."""

    def __init__(self, wasm: bytes, source: str = "bundled",
                 limits: Limits = DEFAULT_LIMITS) -> None:
        component, digest = compile_component(wasm, source)
        self._inst = Instance(component, _SIM, f"sim@{digest[:12]}", limits)
        self._res = self._inst.call("[constructor]coordinator")

    @classmethod
    def load(cls, path: Union[str, Path, None] = None) -> Simulator:
        if path is None:
            return cls(_bundled("sim.wasm"))
        return cls(Path(path).read_bytes(), str(path))

    def set_rows(self, rows: List[PgDistRow]) -> None:
        """An outside change: the committed rows become these."""
        text = json.dumps([r.as_list() for r in rows])
        _ok(self._inst.call("[method]coordinator.set-rows", self._res, text), "rows")

    def rows(self) -> List[PgDistRow]:
        text = self._inst.call("[method]coordinator.rows", self._res)
        return [PgDistRow.from_list(r) for r in json.loads(text)]

    def execute(self, statements: str) -> str:
        """Statements (JSON Lines) in, results (JSON Lines) out."""
        return str(_ok(self._inst.call("[method]coordinator.execute", self._res, statements),
                       "statements"))

    def lose_session(self) -> None:
        self._inst.call("[method]coordinator.lose-session", self._res)


