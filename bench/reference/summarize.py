#!/usr/bin/env python3
"""Print runs of bench_patroni.py as one Markdown table, a column of medians per run.

    python summarize.py RUN.jsonl [MORE.jsonl ...]

The first run gives the rows and its spread (p10..p90); each further run adds its median
beside it, so several runs of one sitting show how stable a figure is. Lines that are not
measurements (the `meta` lines) are left out. `bench/compare.py` does the comparison with
`citus-ha bench` itself.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

Key = tuple[Any, ...]
LABELS = ("bench", "case", "groups")


def measurements(path: Path) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise SystemExit(f"{path}:{number}: not a JSON line: {e}") from None
        if isinstance(record, dict) and "median_ns" in record:
            rows.append(record)
    return rows


def key(record: dict[str, Any]) -> Key:
    return tuple(record.get(label) for label in LABELS)


def duration(ns: float) -> str:
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.0f} ns"


def table(runs: Sequence[list[dict[str, Any]]]) -> list[str]:
    first, *others = runs
    by_key = [{key(r): r for r in run} for run in others]
    head = ["bench", "case", "N groups", "median", "p10..p90", "samples x batch"]
    head += [f"median (run {i})" for i in range(2, len(runs) + 1)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in first:
        cells = [
            r["bench"],
            str(r.get("case", "")),
            str(r.get("groups", "")),
            duration(r["median_ns"]),
            f"{duration(r['p10_ns'])}..{duration(r['p90_ns'])}",
            f"{r['samples']} x {r['batch']}",
        ]
        for other in by_key:
            match = other.get(key(r))
            cells.append(duration(match["median_ns"]) if match else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(argv: Sequence[str]) -> int:
    if not argv:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    runs = [measurements(Path(p)) for p in argv]
    print("\n".join(table(runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
