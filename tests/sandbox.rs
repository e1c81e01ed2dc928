//! A runaway policy (endless loop, unbounded allocation) is stopped by the host, which logs it
//! and keeps serving with the known-good policy.

#[path = "common_policy.rs"]
mod common;

use citus_ha::agent::Agent;
use citus_ha::policy::PolicyError;
use citus_ha::session::sim::SimSession;
use citus_ha::EMBEDDED_POLICY;
use citus_ha_policy::{EventOutcome, Statement};
use common::*;
use std::time::{Duration, Instant};

async fn runaway(features: &str) {
    let engine = engine(200);
    let bad = load_variant(&engine, features);
    let good = engine.load(EMBEDDED_POLICY, "embedded").unwrap();
    let id = identity();
    let policy = bad
        .new_handler(&id.config, &id.name, &id.connect_url)
        .unwrap();
    let mut agent = Agent::new(policy, id, SimSession::new(steady_sim()));
    agent.set_fallback(good.clone());

    for attempt in 0..2 {
        let started = Instant::now();
        let r = agent.heartbeat(attempt * 1000, &view("w1a")).await;
        assert!(matches!(r, Err(PolicyError::Trap(_))), "{features}: {r:?}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{features}: the call was not stopped in time"
        );
    }
    assert_eq!(agent.traps, 2);
    assert_eq!(
        agent.loaded().unwrap().hash,
        good.hash,
        "{features}: fell back to the good build"
    );

    // The good policy serves: heartbeat, turn, and a worker event that pauses group 1.
    agent.heartbeat(3000, &view("w1a")).await.unwrap();
    assert_eq!(turn(&mut agent, 3000).await, vec![Statement::LoadMetadata]);
    let out = agent
        .event(4000, &view("w1a"), &event("before_demote", "w1a"))
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(out, EventOutcome::Queued(_)));
    let stmts = turn(&mut agent, 4000).await;
    assert!(
        matches!(&stmts[..], [Statement::Begin, Statement::UpdateNode { host, .. }] if host == "10.0.1.1-demoted"),
        "{stmts:?}"
    );
}

#[tokio::test]
async fn endless_loop_is_stopped_and_the_host_keeps_serving() {
    runaway("fault-loop").await;
}

#[tokio::test]
async fn unbounded_allocation_is_stopped_and_the_host_keeps_serving() {
    runaway("fault-alloc").await;
}

#[tokio::test]
async fn a_build_that_refuses_packed_views_still_gets_every_heartbeat() {
    // A host and a 0.3.0 build that disagree on the packed view: the 0.3.0 adapter logs the
    // refusal and sends the view as records (which that contract also takes); nothing is lost.
    let engine = engine(2000);
    let refusing = load_variant(&engine, "wit-v0_3,fault-packed");
    let good = engine.load(EMBEDDED_POLICY, "embedded").unwrap();
    let mut seen = Vec::new();
    for build in [refusing, good] {
        let id = identity();
        let policy = build
            .new_handler(&id.config, &id.name, &id.connect_url)
            .unwrap();
        let mut sim = steady_sim();
        sim.replace_rows(sim.rows().into_iter().filter(|r| r.groupid != 2).collect());
        let mut agent = Agent::new(policy, id, SimSession::new(sim));
        let mut stmts = Vec::new();
        for now in [0, 1000, 2000] {
            agent.heartbeat(now, &view("w1b")).await.unwrap();
            stmts.push(turn(&mut agent, now).await);
        }
        assert_eq!(agent.traps, 0);
        seen.push(stmts);
    }
    assert_eq!(seen[0], seen[1]);
    assert_eq!(seen[0][0][0], Statement::LoadMetadata, "{:?}", seen[0]);
    assert!(seen[0][0].len() > 1, "the heartbeat acted: {:?}", seen[0]);
    assert!(seen[0][2].is_empty(), "settled: {:?}", seen[0]);
}

/// A build that traps on every heartbeat while every turn between them succeeds: the traps
/// are counted per kind of call, so the agent still falls back to the known-good build (and
/// worker events are then acted on, not discarded for want of a heartbeat).
#[tokio::test]
async fn a_build_that_traps_on_every_heartbeat_is_replaced() {
    let engine = engine(200);
    let bad = load_variant(&engine, "fault-trap-heartbeat");
    let good = engine.load(EMBEDDED_POLICY, "embedded").unwrap();
    let id = identity();
    let policy = bad
        .new_handler(&id.config, &id.name, &id.connect_url)
        .unwrap();
    let mut agent = Agent::new(policy, id, SimSession::new(steady_sim()));
    agent.set_fallback(good.clone());
    for now in [0, 1000] {
        let r = agent.heartbeat(now, &view("w1a")).await;
        assert!(matches!(r, Err(PolicyError::Trap(_))), "{r:?}");
        // The turn between two heartbeats succeeds, as it did in the field.
        turn(&mut agent, now + 1).await;
    }
    assert_eq!(agent.traps, 2);
    assert_eq!(agent.loaded().unwrap().hash, good.hash, "fell back");
    agent.heartbeat(2000, &view("w1a")).await.unwrap();
    assert_eq!(turn(&mut agent, 2000).await, vec![Statement::LoadMetadata]);
    let out = agent
        .event(3000, &view("w1a"), &event("before_demote", "w1a"))
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(out, EventOutcome::Queued(_)), "{out:?}");
}
