//! Hot-swapping the policy: a new build takes over mid-switchover without repeating or losing
//! anything, an older-contract build still runs, and a bad candidate never takes over.

#[path = "common_policy.rs"]
mod common;

use citus_ha::agent::{Agent, SwapRefused};
use citus_ha::session::sim::SimSession;
use citus_ha::EMBEDDED_POLICY;
use citus_ha_guest_build::{dummy_component, policy_variant};
use citus_ha_policy::{EventOutcome, Statement};
use common::*;
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The worker switchover scenario with a swap step right after before_demote's turn.
fn with_swap(component: &std::path::Path) -> tempfile::NamedTempFile {
    let original =
        std::fs::read_to_string(root().join("tests/scenarios/worker_switchover_with_pause.jsonl"))
            .unwrap();
    let mut out = String::new();
    let mut after_demote = false;
    for line in original.lines() {
        out.push_str(line);
        out.push('\n');
        if line.contains(r#""type":"before_demote""#) {
            after_demote = true;
        } else if after_demote && line == r#"{"op":"run"}"# {
            out.push_str(&format!(
                "{{\"op\":\"swap\",\"path\":{}}}\n",
                serde_json::to_string(component.to_str().unwrap()).unwrap()
            ));
            after_demote = false;
        }
    }
    assert!(out.contains(r#""op":"swap""#));
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), out).unwrap();
    f
}

#[test]
fn swap_mid_switchover_prints_exactly_the_same_statements() {
    let expected = std::fs::read_to_string(
        root().join("tests/scenarios/worker_switchover_with_pause.expected"),
    )
    .unwrap();
    assert_eq!(expected.matches(r#"{"op":"begin"}"#).count(), 1);
    assert_eq!(expected.matches(r#"{"op":"commit"}"#).count(), 1);
    // To a fresh build of the current contract, and across contracts to the 0.3.0 build
    // (packed view, batches of records) and the 0.2.0 and 0.1.0 builds (which take the view
    // as records and one statement per call).
    let current = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(current.path(), EMBEDDED_POLICY).unwrap();
    let v03 = policy_variant("wit-v0_3").unwrap();
    let v02 = policy_variant("wit-v0_2").unwrap();
    let v01 = policy_variant("wit-v0_1").unwrap();
    for component in [current.path().to_path_buf(), v03, v02, v01] {
        let scenario = with_swap(&component);
        assert_eq!(
            replay(scenario.path(), &[]),
            expected,
            "swap to {}",
            component.display()
        );
    }
}

#[test]
fn older_contract_builds_run_beside_the_current_one() {
    let engine = engine(2000);
    assert_eq!(
        engine.load(EMBEDDED_POLICY, "current").unwrap().contract,
        "0.4.0"
    );
    for (feature, contract) in [
        ("wit-v0_3", "0.3.0"),
        ("wit-v0_2", "0.2.0"),
        ("wit-v0_1", "0.1.0"),
    ] {
        let older = policy_variant(feature).unwrap();
        let loaded = engine
            .load(&std::fs::read(&older).unwrap(), "older")
            .unwrap();
        assert_eq!(loaded.contract, contract);
        // Library scenarios replay identically through the older adapter.
        for name in [
            "worker_failover",
            "differs_secondary_churn",
            "deadline_rollback_while_another_group_waits",
        ] {
            let s = root().join(format!("tests/scenarios/{name}.jsonl"));
            let expected = std::fs::read_to_string(s.with_extension("expected")).unwrap();
            assert_eq!(
                replay(&s, &["--policy", older.to_str().unwrap()]),
                expected,
                "{name} on {contract}"
            );
        }
    }
}

/// An agent in the middle of a switchover of group 1 (its pause transaction open).
async fn paused_agent() -> (Agent<SimSession>, citus_ha::policy::PolicyEngine) {
    let engine = engine(2000);
    let loaded = engine.load(EMBEDDED_POLICY, "embedded").unwrap();
    let id = identity();
    let policy = loaded
        .new_handler(&id.config, &id.name, &id.connect_url)
        .unwrap();
    let mut agent = Agent::new(policy, id, SimSession::new(steady_sim()));
    agent.heartbeat(0, &view("w1a")).await.unwrap();
    assert_eq!(turn(&mut agent, 0).await, vec![Statement::LoadMetadata]);
    let out = agent
        .event(1000, &view("w1a"), &event("before_demote", "w1a"))
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(out, EventOutcome::Queued(_)));
    let stmts = turn(&mut agent, 1000).await;
    assert_eq!(stmts.len(), 2, "BEGIN and the -demoted rename: {stmts:?}");
    assert!(agent.session.sim.in_transaction());
    (agent, engine)
}

/// w1b reports `after_promote` for group 1; the statements of the turn that follows.
async fn promote_w1b(agent: &mut Agent<SimSession>, at: u64) -> Vec<Statement> {
    agent
        .event(at, &view("w1b"), &event("after_promote", "w1b"))
        .await
        .unwrap()
        .unwrap();
    turn(agent, at).await
}

#[tokio::test]
async fn bad_candidates_are_refused_and_the_old_policy_keeps_serving() {
    let (mut agent, engine) = paused_agent().await;
    let running = agent.loaded().unwrap().hash.clone();

    // A truncated file is not a component.
    let truncated = &EMBEDDED_POLICY[..EMBEDDED_POLICY.len() / 2];
    let e = engine
        .load(truncated, "truncated.wasm")
        .err()
        .expect("refused");
    assert!(e.contains("truncated.wasm"), "{e}");

    // A component of a contract version this host does not run.
    let wit = std::fs::read_to_string(root().join("wit/since_v0.4.0/policy.wit"))
        .unwrap()
        .replace(
            "package citus-ha:policy@0.4.0;",
            "package citus-ha:policy@9.0.0;",
        );
    let unknown = dummy_component(&wit, "policy-component").unwrap();
    let e = engine.load(&unknown, "v9.wasm").err().expect("refused");
    assert!(
        e.contains("citus-ha:policy/policy@9.0.0") && e.contains("0.4.0"),
        "{e}"
    );

    // A build whose state import fails, and one that traps on warm-up.
    let import = load_variant(&engine, "fault-import");
    match agent.swap(import, None).await {
        // Refused in the binary format, and again when offered as JSON.
        Err(SwapRefused::Import(e)) => assert!(e.contains("as JSON"), "{e}"),
        other => panic!("{other:?}"),
    }
    let warmup = load_variant(&engine, "fault-trap-warmup");
    assert!(matches!(
        agent.swap(warmup, None).await,
        Err(SwapRefused::Warmup(_))
    ));
    // A build that traps on every heartbeat passes a warm-up of cheap calls, so the warm-up
    // also hands it the current view (on a copy of the state).
    let heartbeat_trap = load_variant(&engine, "fault-trap-heartbeat");
    match agent.swap(heartbeat_trap, Some((1500, &view("w1a")))).await {
        Err(SwapRefused::Warmup(e)) => assert!(e.contains("heartbeat"), "{e}"),
        other => panic!("a build that traps on heartbeats was taken: {other:?}"),
    }

    // The old policy is still the one running, with the transaction it opened.
    assert_eq!(agent.loaded().unwrap().hash, running);
    assert!(agent.session.sim.in_transaction());
    let during = view("w1b");
    agent
        .event(2000, &during, &event("before_promote", "w1b"))
        .await
        .unwrap()
        .unwrap();
    agent
        .event(2500, &during, &event("after_promote", "w1b"))
        .await
        .unwrap()
        .unwrap();
    let stmts = turn(&mut agent, 3000).await;
    assert_eq!(
        stmts.iter().filter(|s| **s == Statement::Begin).count(),
        0,
        "{stmts:?}"
    );
    assert_eq!(stmts.last(), Some(&Statement::Commit), "{stmts:?}");
    assert!(!agent.session.sim.in_transaction());
    let primary = agent
        .session
        .sim
        .rows()
        .into_iter()
        .find(|r| r.nodeid == 2)
        .unwrap();
    assert_eq!(primary.nodename, "10.0.1.2");
}

#[tokio::test]
async fn a_good_swap_keeps_the_open_transaction_and_queued_tasks() {
    let (mut agent, engine) = paused_agent().await;
    // A task for group 2 waits behind group 1's transaction.
    let mut v = view("w1a");
    v.workers[1].1.members.pop();
    agent.heartbeat(1500, &v).await.unwrap();
    let older = load_variant(&engine, "wit-v0_1");
    let before = agent.loaded().unwrap().hash.clone();
    agent.swap(older, None).await.expect("swap");
    assert_eq!(agent.previous().unwrap().hash, before);
    assert_eq!(agent.loaded().unwrap().contract, "0.1.0");
    let stmts = promote_w1b(&mut agent, 2000).await;
    // Group 1 finishes in the same transaction, then group 2's queued task runs.
    assert!(!stmts.contains(&Statement::Begin), "{stmts:?}");
    assert_eq!(
        stmts.iter().filter(|s| **s == Statement::Commit).count(),
        1,
        "{stmts:?}"
    );
    assert!(
        stmts
            .iter()
            .any(|s| matches!(s, Statement::RemoveNode { host, .. } if host == "10.0.2.2")),
        "the queued group-2 task survived the swap: {stmts:?}"
    );
}

#[tokio::test]
async fn a_swap_back_to_a_build_that_reads_only_json_state_goes_through_json() {
    // Builds before state format 2 refuse the binary export; the running build then hands
    // over the same state as JSON, mid-switchover.
    let (mut agent, engine) = paused_agent().await;
    let json_only = load_variant(&engine, "state-json-only");
    agent
        .swap(json_only, None)
        .await
        .expect("swap through JSON");
    assert!(agent.session.sim.in_transaction());
    let stmts = promote_w1b(&mut agent, 2000).await;
    assert!(!stmts.contains(&Statement::Begin), "{stmts:?}");
    assert_eq!(stmts.last(), Some(&Statement::Commit), "{stmts:?}");
    let primary = agent.session.sim.rows().into_iter().find(|r| r.nodeid == 2);
    assert_eq!(primary.unwrap().nodename, "10.0.1.2");
}

#[test]
fn the_component_has_no_wasi_imports() {
    let engine = engine(2000);
    for (name, bytes) in [
        ("embedded", EMBEDDED_POLICY.to_vec()),
        (
            "older",
            std::fs::read(policy_variant("wit-v0_1").unwrap()).unwrap(),
        ),
    ] {
        let loaded = engine.load(&bytes, name).unwrap();
        assert!(!loaded.imports.is_empty());
        for i in &loaded.imports {
            assert!(i.starts_with("citus-ha:policy/"), "{name} imports {i}");
        }
    }
}
