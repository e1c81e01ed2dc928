"""PostgreSQL's log as the cases read it: `log_line_prefix` is LOG_LINE_PREFIX, and with
`log_min_duration_statement = 0` every statement is logged once it has finished, with its bound
parameters on the DETAIL line that follows."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import List, Optional

LOG_LINE_PREFIX = "%m [%p] db=%d app=%a: "
_LOG_LINE = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) UTC \[(?P<pid>\d+)\] db=(?P<db>\S*) "
    r"app=(?P<app>.*?): (?P<level>[A-Z]+\d?):  (?P<msg>.*)$")
_DURATION = re.compile(r"^duration: [0-9.]+ ms  (?:statement|execute [^:]*): (?P<sql>.*)$")


@dataclass
class LogEntry:
    """One message of a PostgreSQL log; `detail` holds the DETAIL line that followed it (for a
    statement run with bound parameters, their values)."""

    at: float  # unix time
    pid: int
    db: str
    app: str
    level: str
    msg: str
    detail: str = ""

    @property
    def sql(self) -> Optional[str]:
        """The statement of a `log_min_duration_statement` line: logged once it has finished."""
        m = _DURATION.match(self.msg)
        return m.group("sql") if m else None

    @property
    def text(self) -> str:
        return f"{self.msg} {self.detail}"


def read_pg_log(path: Path) -> List[LogEntry]:
    entries: List[LogEntry] = []
    if not path.exists():
        return entries
    for line in path.read_text(errors="replace").splitlines():
        m = _LOG_LINE.match(line)
        if not m:
            continue  # a continuation line of a multi-line message
        if m.group("level") == "DETAIL" and entries and entries[-1].pid == int(m.group("pid")):
            entries[-1].detail = m.group("msg")
            continue
        at = datetime.strptime(m.group("ts") + "+0000", "%Y-%m-%d %H:%M:%S.%f%z").timestamp()
        entries.append(LogEntry(at, int(m.group("pid")), m.group("db"), m.group("app"),
                                m.group("level"), m.group("msg")))
    return entries
