#!/usr/bin/env python3
"""Every host's three hot paths and the reference's, in one sitting, as BENCHMARKS.md's table.

Usage (from the project root, after `./dev test` has made target/venv and js/generated, and
`bash bench/reference/setup.sh` has made target/reference-venv):

    cargo build --release -p citus-ha
    python3 bench/all_hosts.py [--quick] [--rust-bin target/release/citus-ha]

Runs, one after the other: `citus-ha bench --json` (Wasm and native), `python -m citus_ha bench
--json`, `node js/bin/citus-ha.mjs bench --json`, and the reference's `bench_patroni.py` (its
stub doubles, 1000 groups). The machine is shared and noisy: only the ratios within one run
mean anything, which is why they are taken together.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
LINES = ("heartbeat_steady_1000", "heartbeat_new_1000", "drain_1000")
#: Our line -> the reference's (bench, case) at 1000 groups.
REFERENCE = {
    "heartbeat_steady_1000": ("sync_meta_data", "steady_state_no_tasks"),
    "heartbeat_new_1000": ("sync_meta_data", "all_groups_new"),
    "drain_1000": ("process_tasks", "drain_all_new"),
}


def records(argv: List[str]) -> List[dict]:
    """The JSON lines a bench command prints (anything else it prints is passed over)."""
    print("$ " + " ".join(argv), file=sys.stderr, flush=True)
    out = subprocess.run(argv, cwd=ROOT, check=True, capture_output=True, text=True,
                         timeout=1800).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def by_bench(recs: List[dict], key: str) -> Dict[str, float]:
    return {r["bench"]: float(r[key]) for r in recs if key in r and r.get("bench") in LINES}


def fmt(ns: Optional[float]) -> str:
    if ns is None:
        return "-"
    return f"{ns / 1e6:.2f} ms" if ns >= 1e6 else f"{ns / 1e3:.1f} us"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer samples in every bench")
    ap.add_argument("--rust-bin", type=Path, default=ROOT / "target/release/citus-ha")
    ap.add_argument("--python", type=Path, default=ROOT / "target/venv/bin/python")
    ap.add_argument("--reference-python", type=Path,
                    default=ROOT / "target/reference-venv/bin/python")
    a = ap.parse_args()
    quick = ["--quick"] if a.quick else []

    rust = records([str(a.rust_bin), "bench", "--json", *quick, "--only", "_1000"])
    python = records([str(a.python), "-m", "citus_ha", "bench", "--json", *quick])
    js = records(["node", "js/bin/citus-ha.mjs", "bench", "--json", *quick])
    ref_recs = records([str(a.reference_python), "bench/reference/bench_patroni.py",
                        "--groups", "1000", *quick])
    ref: Dict[Tuple[str, str], float] = {
        (r.get("bench"), r.get("case")): float(r["median_ns"]) for r in ref_recs
        if "median_ns" in r and r.get("double", "stub") == "stub" and r.get("groups") == 1000
    }

    wasm, native = by_bench(rust, "wasm_ns"), by_bench(rust, "native_ns")
    py, node = by_bench(python, "median_ns"), by_bench(js, "median_ns")
    print("| bench | Rust (Wasm) | Rust (native) | Python | JavaScript | reference "
          "| reference / Rust, Python, JS |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for line in LINES:
        r = ref.get(REFERENCE[line])
        ratios = ", ".join(f"{r / h[line]:.1f}x" if r and h.get(line) else "-"
                           for h in (wasm, py, node))
        print(f"| {line} | {fmt(wasm.get(line))} | {fmt(native.get(line))} "
              f"| {fmt(py.get(line))} | {fmt(node.get(line))} | {fmt(r)} | {ratios} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
