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


CONFIG = ('{"op":"config","citus":{"group":0,"database":"c"},"name":"c",'
          '"conn_url":"postgres://h/d"}\n')


@pytest.mark.parametrize("text, line", [
    ('{"op":"run"}\n', 1),
    ('{"op":"config","citus":{"group":0,"database":"c"},"name":"c","conn_url":"postgres://h/d"}\n'
     '# comment\n\n{"op":"jump"}\n', 4),
    ('{"op":"config","citus":{"group":0,"database":"c"},"name":"c","conn_url":"postgres://h/d"}\n'
     '{"op":"fail","match":"x","error":"e"}\n', 2),
    ('{"op":"config","citus":{"group":"x","database":"c"},"name":"c","conn_url":"postgres://h/d"}'
     '\n', 1),
    # Found by the conformance suite (tests/conformance): each ran to its end in Python only.
    ('{"op":"config","citus":{"group":0,"database":"c"},"name":"c","conn_url":"postgres://h:x/d"}'
     '\n', 1),
    (CONFIG + '{"op":"metadata","rows":[[1,0,"a",5432,"primary"],[1,1,"b",5432,"primary"]]}\n', 2),
    (CONFIG + '{"op":"metadata","rows":[[1,0,"a",5432,"primary"],[2,1,"a",5432,"secondary"]]}\n',
     2),
    (CONFIG + '{"op":"sync","cluster":{"workers":{"99999999999":{}}}}\n', 2),
    (CONFIG + '{"op":"advance","seconds":NaN}\n', 2),
    (CONFIG + '{"op":"event","cluster":{},"event":{"timeout":1e400}}\n', 2),
    (CONFIG + '{"op":"event","cluster":{},"event":{"leader":"\\ud800"}}\n', 2),
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


def test_lines_break_where_the_rust_host_breaks_them(tmp_path: Path) -> None:
    # A raw U+2028 inside a JSON string and CRLF endings: one step per "\n", as in Rust.
    f = tmp_path / "lines.jsonl"
    f.write_bytes((CONFIG + '{"op":"sync","cluster":{"leader":"a\u2028b"}}\n{"op":"run"}\n')
                  .replace("\n", "\r\n").encode())
    py = py_replay(str(f))
    assert py.returncode == 0, py.stderr
    rust = citus_ha_bin()
    if rust is not None:
        r = subprocess.run([str(rust), "replay", str(f)], capture_output=True, text=True)
        assert (r.returncode, r.stdout) == (0, py.stdout)


def test_batch_mode_writes_what_each_lone_replay_prints(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"op":"run"}\n')
    files = [*ALL[:4], bad]
    out = tmp_path / "out"
    batch = py_replay("--out-dir", str(out), *map(str, files))
    assert batch.returncode == 0, batch.stderr
    for f in files:
        alone = py_replay(str(f))
        name = f.name[:-len(".jsonl")]
        assert (out / f"{name}.out").read_text() == alone.stdout
        assert (out / f"{name}.code").read_text().strip() == str(alone.returncode)
    assert (out / "bad.code").read_text().strip() == "2"
    assert "line 1:" in (out / "bad.err").read_text()


def test_batch_mode_refuses_two_files_of_one_name(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    twin = tmp_path / "a" / ALL[0].name
    twin.write_text(ALL[0].read_text())
    r = py_replay("--out-dir", str(tmp_path / "out"), str(ALL[0]), str(twin))
    assert r.returncode == 2 and "would both write" in r.stderr
