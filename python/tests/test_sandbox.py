"""The sandbox in Python: a looping and an allocating build are stopped within their bounds
and the agent keeps serving; a build that keeps trapping falls back to the bundled one; a
swap mid-switchover gives the same statements as no swap; a bad build is refused."""

from __future__ import annotations

import time
from typing import List, Tuple

import pytest
from conftest import SCENARIOS, policy_variant

from citus_ha import Agent, Limits, Policy, PolicyLoadError, PolicyTrap, SimSession, SwapRefused
from citus_ha.replay import parse_scenario, statement_line

SMALL = Limits(fuel=200_000_000, max_memory=64 << 20)


def switchover() -> List:
    return parse_scenario((SCENARIOS / "worker_switchover_with_pause.jsonl").read_text())


def drive(policy: Policy, swap_to: Policy = None, swap_at: int = -1) -> Tuple[List[str], Agent]:
    """The library's switchover through an Agent on the simulator component, optionally
    swapping builds before step `swap_at` (in the middle of the pause)."""
    steps = switchover()
    citus, name, url = steps[0].args
    agent = Agent(policy.handler(policy.validate_config(citus), name, url), SimSession())
    out: List[str] = []
    now = 0
    for i, step in enumerate(steps[1:]):
        if i == swap_at and swap_to is not None:
            assert agent.handler.metrics().in_flight, "the pause is open"
            agent.swap(swap_to)
        if step.op == "metadata":
            agent.session.set_rows(step.args)
        elif step.op == "sync":
            agent.heartbeat(now, step.args)
        elif step.op == "event":
            agent.event(now, *step.args)
        elif step.op == "run":
            agent.run_turn(now, lambda s, r: out.append(statement_line(s, r)))
        elif step.op == "advance":
            now += step.args
    return out, agent


@pytest.mark.parametrize("features", ["fault-loop", "fault-alloc"])
def test_runaway_builds_are_stopped_and_the_agent_keeps_serving(features: str) -> None:
    bad = Policy.load(policy_variant(features), limits=SMALL)
    steps = switchover()
    citus, name, url = steps[0].args
    agent = Agent(bad.handler(bad.validate_config(citus), name, url), SimSession())
    view = steps[2].args
    t = time.monotonic()
    with pytest.raises(PolicyTrap) as e:
        agent.heartbeat(0, view)
    assert time.monotonic() - t < 30, "the bound stopped it"
    assert ("fuel" if features == "fault-loop" else "unreachable") in str(e.value)
    # Restored in a fresh instance: the handler answers.
    assert agent.handler.export_state()
    assert agent.handler.traps == 1
    # The second trap in a row falls back to the bundled build, which then serves.
    with pytest.raises(PolicyTrap):
        agent.heartbeat(0, view)
    assert agent.handler.policy.sha256 == Policy.load().sha256
    agent.heartbeat(0, view)
    seen: List[str] = []
    agent.run_turn(0, lambda s, r: seen.append(statement_line(s, r)))
    assert seen[0] == '{"op":"load_metadata"}'


def test_a_swap_mid_switchover_gives_the_same_statements() -> None:
    current = Policy.load()
    plain, _ = drive(current)
    expected = (SCENARIOS / "worker_switchover_with_pause.expected").read_text().splitlines()
    assert plain == expected[:-1]
    assert plain.count('{"op":"begin"}') == 1 and plain.count('{"op":"commit"}') == 1
    # Swap to another build (same contract, different bytes, reads only JSON state) while the
    # pause is open: after before_demote's turn, before before_promote.
    other = Policy.load(policy_variant("state-json-only"))
    assert other.sha256 != current.sha256
    swapped, agent = drive(current, other, swap_at=6)
    assert swapped == plain
    assert agent.handler.policy.sha256 == other.sha256


def test_a_bad_build_is_refused_and_the_old_one_keeps_running() -> None:
    current = Policy.load()
    _, agent = drive(current)
    with pytest.raises(SwapRefused):
        agent.swap(Policy.load(policy_variant("fault-import")))
    with pytest.raises(SwapRefused):
        agent.swap(Policy.load(policy_variant("fault-trap-warmup")))
    assert agent.handler.policy.sha256 == current.sha256
    agent.run_turn(100_000)
    with pytest.raises(PolicyLoadError):
        Policy.load(policy_variant("wit-v0_3"))
