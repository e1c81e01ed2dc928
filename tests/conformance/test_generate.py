"""The generator is a pure function of its seed: the suite's failures can be replayed from
the seed and index they print, and a raised count only adds scenarios."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from generate import FAIL_KINDS, generate, generate_one

SWAP = "python/src/citus_ha/components/policy.wasm"


def test_the_same_seed_gives_the_same_bytes() -> None:
    first = [(s.name, s.text) for s in generate(7, 60, SWAP)]
    again = [(s.name, s.text) for s in generate(7, 60, SWAP)]
    assert first == again
    assert generate_one(7, 42, SWAP) == generate_one(7, 42, SWAP)


def test_other_seeds_give_other_scenarios() -> None:
    a = {s.text for s in generate(1, 30, SWAP)}
    b = {s.text for s in generate(2, 30, SWAP)}
    assert len(a) == 30 and not a & b


def test_a_larger_count_extends_the_same_sequence() -> None:
    short = [s.text for s in generate(3, 10, SWAP)]
    longer = [s.text for s in generate(3, 25, SWAP)]
    assert longer[:10] == short


def test_valid_scenarios_are_json_lines_starting_with_config() -> None:
    ops = set()
    for s in generate(5, 200, SWAP):
        if s.malformed:
            continue
        # Lines end at "\n" only: names may hold a raw U+2028, which splitlines() breaks at.
        steps = [json.loads(t) for t in s.text.split("\n")
                 if t.strip() and not t.startswith("#")]
        assert steps[0]["op"] == "config", s.name
        ops.update(step["op"] for step in steps)
        for step in steps:
            if step["op"] == "fail":
                assert step["match"] in FAIL_KINDS
    # Everything the format offers shows up in a default run.
    assert ops >= {"config", "metadata", "sync", "event", "run", "advance", "fail", "demote",
                   "rebuild", "swap"}


def test_some_scenarios_are_malformed_on_purpose() -> None:
    gen = list(generate(1, 200, SWAP))
    bad = [s for s in gen if s.malformed]
    assert 5 <= len(bad) <= 40, len(bad)
    assert all(not s.statements_expected for s in bad)
