"""The policy in Python's terms: pure functions, the handler's calls, the one error type."""

from __future__ import annotations

import pytest

from citus_ha import (
    AddNode,
    Begin,
    CitusConfig,
    ClusterView,
    CreateDatabase,
    Discarded,
    GroupView,
    InvalidInput,
    LoadMetadata,
    Member,
    Metadata,
    NodeRole,
    PgDistRow,
    Policy,
    PolicyLoadError,
    Queued,
    Results,
    SuperuserAuth,
)
from citus_ha.view import ViewWriter, view_text

URL = "postgres://10.0.0.1:5432/postgres"


@pytest.fixture(scope="module")
def policy() -> Policy:
    return Policy.load()


def cluster(workers: dict) -> ClusterView:
    coord = GroupView("c1", (Member("c1", URL, None, "primary", "running"),))
    return ClusterView(coord, workers)


def group(leader: str, *members: Member) -> GroupView:
    return GroupView(leader, members)


def m(name: str, host: str, role: str = "primary", state: str = "running") -> Member:
    return Member(name, f"postgres://{host}:5432/postgres", None, role, state)


def test_pure_functions(policy: Policy) -> None:
    assert policy.version().startswith("citus-ha-policy")
    assert policy.contract == "0.4.0"
    assert policy.validate_config({"group": 0, "database": "citus"}) == CitusConfig(0, "citus")
    with pytest.raises(InvalidInput) as e:
        policy.validate_config({"group": "x", "database": "citus"})
    assert e.value.field == "citus.group" and "\"x\"" in e.value.reason
    gucs = policy.adjust_gucs({"max_connections": 100, "shared_preload_libraries": "pg_stat"},
                              "10.0.0.9")
    assert gucs["shared_preload_libraries"] == "citus,pg_stat"
    assert gucs["max_prepared_transactions"] == "200"
    assert gucs["citus.local_hostname"] == "10.0.0.9"
    # As the reference: max_connections is needed only to derive max_prepared_transactions.
    assert policy.adjust_gucs({"max_prepared_transactions": 50})["max_prepared_transactions"] \
        == "50"
    with pytest.raises(InvalidInput) as e:
        policy.adjust_gucs({})
    assert e.value.field == "max_connections"
    steps = policy.bootstrap_plan(CitusConfig(1, "citus"), "postgres", SuperuserAuth("pw"),
                                  "postgres://10.0.1.1:5432/postgres")
    assert steps[0] == CreateDatabase("citus")


def test_a_switchover_through_the_handler(policy: Policy) -> None:
    h = policy.handler(CitusConfig(0, "citus"), "c1", URL)
    w1 = group("w1a", m("w1a", "10.0.1.1"), m("w1b", "10.0.1.2", "replica"))
    h.heartbeat(0, cluster({1: w1}))
    batch = h.poll_statements(0)
    assert batch.statements == (LoadMetadata(),)
    rows = (PgDistRow(1, 0, "10.0.0.1", 5432, NodeRole.PRIMARY),
            PgDistRow(2, 1, "10.0.1.1", 5432, NodeRole.PRIMARY),
            PgDistRow(3, 1, "10.0.1.2", 5432, NodeRole.SECONDARY))
    assert h.handle_results(0, Results(results=[Metadata(rows)])).text == ""
    outcome = h.event(1000, cluster({1: w1}), {"type": "before_demote", "group": 1,
                                               "leader": "w1a", "timeout": 30})
    assert isinstance(outcome, Queued)
    batch = h.poll_statements(1000)
    assert batch.statements[0] == Begin()
    assert "-demoted" in batch.text
    assert h.metrics().statements == 3  # load, then BEGIN and the rename
    with pytest.raises(InvalidInput) as e:
        h.event(1000, cluster({1: w1}), {"type": "bogus", "group": 1})
    assert e.value.field == "type"
    assert isinstance(h.event(1000, cluster({}), {"type": "after_promote", "group": 7,
                                                  "leader": "x", "timeout": 30}), Discarded)


def test_bad_inputs_name_the_field(policy: Policy) -> None:
    h = policy.handler(CitusConfig(0, "citus"), "c1", URL)
    with pytest.raises(InvalidInput) as e:
        h.handle_results(0, Results(text='{"result":"nope"}\n'))
    assert e.value.field == "results"
    with pytest.raises(InvalidInput) as e:
        h.set_connect_url("not a url")
    assert e.value.field == "connect-url"
    h.set_connect_url("postgres://10.0.0.5:5432/postgres")
    h.heartbeat(0, cluster({}))
    assert h.poll_statements(0).statements == (LoadMetadata(),)
    batch = h.handle_results(0, Results(results=[Metadata(())]))
    assert batch.statements == (AddNode("10.0.0.5", 5432, 0, NodeRole.PRIMARY),)
    with pytest.raises(InvalidInput) as e:
        policy.import_handler("not a state")
    assert e.value.field == "state"


def test_state_round_trips_in_both_formats(policy: Policy) -> None:
    h = policy.handler(CitusConfig(0, "citus"), "c1", URL)
    h.heartbeat(0, cluster({}))
    for fmt in ("compact", "json"):
        other = policy.import_handler(h.export_state(fmt))
        assert other.poll_statements(0).statements == (LoadMetadata(),)


def test_the_view_writer_flags_what_did_not_change() -> None:
    w = ViewWriter()
    v = cluster({1: group("w1a", m("w1a", "10.0.1.1")), 2: group("w2a", m("w2a", "10.0.2.1"))})
    first = w.write(v)
    assert all(line.split("\t")[1] == "+" for line in first.splitlines()[1:])
    second = w.write(cluster({1: group("w1a", m("w1a", "10.0.1.1")),
                              2: group("w2a", m("w2a", "10.0.2.9"))}))
    assert [line.split("\t")[1] for line in second.splitlines()[1:]] == ["=", "=", "+"]
    odd = Member("a\tb\\c", None, ("h", None), None, None, True)
    text = view_text(cluster({3: group("a\tb\\c", odd)}))
    assert "a\\tb\\\\c\t\\N\tk\th\t\\N\t\\N\t\\N\t1" in text
    assert "\n3\t+\t33\ta\\tb" in text


def test_escaped_values_reach_the_policy(policy: Policy) -> None:
    # A tab in a member's name cannot be read in place: the policy reads that view in full.
    from citus_ha import Agent, SimSession

    agent = Agent(policy.handler(CitusConfig(0, "citus"), "c1", URL), SimSession())
    odd = Member("w\t1", "postgres://10.0.1.1:5432/postgres", None, "primary", "running")
    agent.heartbeat(0, cluster({1: group("w\t1", odd)}))
    seen = []
    agent.run_turn(0, lambda s, r: seen.append(s))
    assert AddNode("10.0.1.1", 5432, 1, NodeRole.PRIMARY) in seen


def test_not_a_policy_is_refused(tmp_path) -> None:
    f = tmp_path / "x.wasm"
    f.write_bytes(b"\0asm\x01\0\0\0")
    with pytest.raises(PolicyLoadError) as e:
        Policy.load(f)
    assert "not a WebAssembly component" in str(e.value)
    # The simulator component is no policy either.
    from citus_ha.policy import _bundled

    f.write_bytes(_bundled("sim.wasm"))
    with pytest.raises(PolicyLoadError) as e:
        Policy.load(f)
    assert "0.4.0" in str(e.value)
