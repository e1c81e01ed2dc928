"""The runner's comparison: it fails on the first byte that differs, naming the scenario, the
host and the line, and keeps the scenario and every host's output."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pgserver import split_initial_metadata
from run import Disagreement, Outcome, Scenario, compare, first_difference


def outcomes(**by_host: bytes) -> dict:
    return {h: {"s1": Outcome(0, out)} for h, out in by_host.items()}


def test_identical_outputs_pass(tmp_path: Path) -> None:
    s = tmp_path / "s1.jsonl"
    s.write_text("{}\n")
    same = b'{"op":"begin"}\n{"final":[]}\n'
    compare([Scenario("s1", s)], outcomes(rust=same, python=same, js=same),
            ["rust", "python", "js"], "simulator", tmp_path / "failing", lambda _: None)
    assert not (tmp_path / "failing").exists()


def test_the_first_differing_line_is_named_and_the_scenario_kept(tmp_path: Path) -> None:
    s = tmp_path / "s1.jsonl"
    s.write_text('{"op":"config"}\n')
    rust = b'{"op":"begin"}\n{"op":"commit"}\n{"final":[]}\n'
    js = b'{"op":"begin"}\n{"op":"rollback"}\n{"final":[]}\n'
    with pytest.raises(Disagreement) as e:
        compare([Scenario("s1", s)], outcomes(rust=rust, python=rust, js=js),
                ["rust", "python", "js"], "db", tmp_path / "failing", lambda _: None)
    text = str(e.value)
    assert "scenario s1" in text and "host js differs from rust at output line 2" in text
    assert '{"op":"rollback"}' in text and '{"op":"commit"}' in text
    assert (tmp_path / "failing" / "s1.jsonl").read_text() == '{"op":"config"}\n'
    assert (tmp_path / "failing" / "s1.js.out").read_bytes() == js


def test_exit_status_and_expected_output_count(tmp_path: Path) -> None:
    s = tmp_path / "s1.jsonl"
    s.write_text("{}\n")
    results = {"rust": {"s1": Outcome(0, b"x\n")}, "python": {"s1": Outcome(1, b"x\n")}}
    with pytest.raises(Disagreement, match=r"exit status \(python 1, rust 0\)"):
        compare([Scenario("s1", s)], results, ["rust", "python"], "simulator",
                tmp_path / "f", lambda _: None)
    with pytest.raises(Disagreement, match=r"host rust differs from its \.expected"):
        compare([Scenario("s1", s, expected=s)], outcomes(rust=b"x\n"), ["rust"],
                "simulator", tmp_path / "f", lambda _: b"y\n")


def test_first_difference_counts_a_missing_line() -> None:
    assert first_difference(b"a\nb\n", b"a\n") == (2, "b", "")
    assert first_difference(b"a\n", b"a\nb\n") == (2, "", "b")


def test_only_a_leading_metadata_step_qualifies_for_the_database() -> None:
    config = '{"op":"config"}'
    rows = '{"op":"metadata","rows":[[1,0,"h",5432,"primary"]]}'
    body, initial = split_initial_metadata(f"{config}\n# c\n{rows}\n{{\"op\":\"run\"}}\n")
    assert initial == [(1, 0, "h", 5432, "primary")]
    assert body.split("\n")[2] == "# metadata inserted with SQL"
    assert split_initial_metadata(f"{config}\n{{\"op\":\"run\"}}\n{rows}\n") is None
    assert split_initial_metadata(f"{config}\n{{\"op\":\"run\"}}\n") == (
        f"{config}\n{{\"op\":\"run\"}}\n", [])
