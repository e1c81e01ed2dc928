"""The `citus` section of a Patroni configuration, read the way Patroni 4.1 reads it.

Patroni takes a section as Citus when it is a mapping whose `database` is a string and whose
`group` its `parse_int` understands; anything else silently turns Citus off (the Null MPP).
It then reads the group with `int()`, so `"01"`, `" 1"` and `1.0` mean group 1, while
`"1.0"` or `"0x1"` pass its check and crash later, and `1.5` passes as group 2 and is used as
group 1. This module keeps every meaning Patroni gives and refuses, naming the field, what it
would misread: a group that is negative, not whole, or not written in decimal digits.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Mapping, Union

from ..errors import InvalidInput

#: What `int()` takes from a string and Patroni's `parse_int` agrees with: ASCII decimal
#: digits, an optional `+`, surrounding blanks.
_DECIMAL = re.compile(r"^\s*\+?([0-9]+)\s*$", re.ASCII)


class CitusSectionError(InvalidInput):
    """The `citus` section is one Patroni would take for Citus, but with a value it would
    misread: Patroni must not start with it."""


@dataclass(frozen=True)
class CitusSection:
    """A `citus` section Patroni takes for Citus, with its group as the number it means."""

    group: int
    database: str


@dataclass(frozen=True)
class NotCitus:
    """A `citus` section stock Patroni ignores (Citus off), and why."""

    reason: str


def _patroni_parse_int(value: Any) -> Any:
    from patroni.utils import parse_int

    return parse_int(value)


def parse_group(value: Any) -> int:
    """The group id a `citus.group` value means, or `CitusSectionError`."""
    if isinstance(value, bool):
        raise CitusSectionError("citus.group", f"must be a number, not {value!r}")
    if isinstance(value, int):
        n = value
    elif isinstance(value, float):
        if not (math.isfinite(value) and value.is_integer()):
            raise CitusSectionError("citus.group", f"{value!r} is not a whole number")
        n = int(value)
    elif isinstance(value, str):
        m = _DECIMAL.match(value)
        if m is None:
            raise CitusSectionError(
                "citus.group", f"{value!r} is not a group id written in decimal digits")
        n = int(m.group(1))
    else:
        raise CitusSectionError("citus.group", f"must be a number, not {type(value).__name__}")
    if n < 0:
        raise CitusSectionError("citus.group", f"{value!r}: a Citus group id is 0 or more")
    if n > 2**31 - 1:
        raise CitusSectionError("citus.group", f"{value!r} is larger than a Citus group id")
    return n


def read_section(section: Any) -> Union[CitusSection, NotCitus]:
    """The section as stock Patroni 4.1 would take it: `NotCitus` where it would silently
    turn Citus off, `CitusSection` where it would run Citus, and `CitusSectionError` where it
    would run Citus on a misread group (or crash on it later)."""
    if not isinstance(section, Mapping):
        return NotCitus(f"citus: must be a mapping, not {type(section).__name__}")
    database = section.get("database")
    if not isinstance(database, str):
        return NotCitus("citus.database: is required and must be a string")
    group = section.get("group")
    if _patroni_parse_int(group) is None:
        why = "is required" if group is None else f"{group!r} is not a number"
        return NotCitus(f"citus.group: {why}")
    if not database.strip():
        raise CitusSectionError("citus.database", "must not be empty")
    return CitusSection(parse_group(group), database)


def check_local_section(section: Any) -> None:
    """Refuses (`CitusSectionError`) a `citus` section from Patroni's configuration file and
    environment that stock Patroni would run without Citus, silently: besides what
    `read_section` refuses or ignores, a group that is not an integer in YAML (`group: "1"`),
    since Patroni's configuration loader drops such a section before anyone sees it."""
    verdict = read_section(section)
    if isinstance(verdict, NotCitus):
        raise CitusSectionError("citus", f"{verdict.reason}; stock Patroni would run with "
                                "Citus silently turned off")
    group = section.get("group")
    if isinstance(group, bool) or not isinstance(group, int):
        raise CitusSectionError(
            "citus.group", f"{group!r} is not a YAML integer: Patroni drops such a citus "
            f"section and runs without Citus; write `group: {verdict.group}`")
