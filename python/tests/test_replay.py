"""`python -m citus_ha replay` prints what `citus-ha replay` prints, byte for byte, for every
scenario of the library, and exits as it does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SCENARIOS, citus_ha_bin

ALL = sorted(SCENARIOS.glob("*.jsonl"))


def py_replay(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "citus_ha", "replay", *args],
                          capture_output=True, text=True, timeout=120)


def test_the_library_is_there() -> None:
    assert len(ALL) >= 19


@pytest.mark.parametrize("scenario", ALL, ids=lambda p: p.stem)
def test_same_bytes_as_the_rust_host(scenario: Path) -> None:
    py = py_replay(str(scenario))
    assert py.returncode == 0, py.stderr
    assert py.stdout == scenario.with_suffix(".expected").read_text()
    rust = citus_ha_bin()
    if rust is None:
        pytest.skip("citus-ha is not built (cargo build -p citus-ha)")
    r = subprocess.run([str(rust), "replay", str(scenario)], capture_output=True, text=True,
                       timeout=120, env={**os.environ, "RUST_LOG": "off"})
    assert r.returncode == 0, r.stderr
    assert py.stdout == r.stdout


@pytest.mark.parametrize("text, line", [
    ('{"op":"run"}\n', 1),
    ('{"op":"config","citus":{"group":0,"database":"c"},"name":"c","conn_url":"postgres://h/d"}\n'
     '# comment\n\n{"op":"jump"}\n', 4),
    ('{"op":"config","citus":{"group":0,"database":"c"},"name":"c","conn_url":"postgres://h/d"}\n'
     '{"op":"fail","match":"x","error":"e"}\n', 2),
    ('{"op":"config","citus":{"group":"x","database":"c"},"name":"c","conn_url":"postgres://h/d"}'
     '\n', 1),
])
def test_malformed_scenarios_exit_2_naming_the_line(tmp_path: Path, text: str, line: int) -> None:
    f = tmp_path / "bad.jsonl"
    f.write_text(text)
    py = py_replay(str(f))
    assert py.returncode == 2, py.stdout
    assert f"line {line}:" in py.stderr
    rust = citus_ha_bin()
    if rust is not None:
        r = subprocess.run([str(rust), "replay", str(f)], capture_output=True, text=True)
        assert r.returncode == 2
        assert f"line {line}:" in r.stderr


def test_a_refused_event_is_a_note(tmp_path: Path) -> None:
    # The same notes as the Rust host (a library scenario with one).
    s = SCENARIOS / "differs_unknown_event_type.jsonl"
    out = py_replay(str(s)).stdout
    assert '{"note":"line ' in out and "event refused: type:" in out
