//! `citus-ha run` under faults and hostile input (real PostgreSQL 15, Citus emulation): each
//! test is one defect that once kept writes paused, acted on a view nobody held any more, or
//! froze the agent.

#[path = "run_support/mod.rs"]
mod support;

use serde_json::json;
use std::time::{Duration, Instant};
use support::*;

/// With the DCS source unreadable for longer than `ttl`, the agent stops acting as leader
/// exactly as on losing leadership (the open pause is rolled back by the server), says so in
/// /status, and leads again once the view is fresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dcs_view_older_than_ttl_ends_leadership_until_it_is_fresh() {
    let env = Env::start().await;
    let port = free_port();
    let config = env.config("coord1", "10.0.0.1:5432", port, "ttl: 3\n");
    let agent = Agent::start(&config, port).await;
    agent.wait_leader(true).await;
    env.wait_registered().await;

    let (_, answer) = agent.event(&before_demote(1, "w1a", 60)).await;
    assert_eq!(answer["status"], "paused", "{answer}");
    assert!(env.open_transaction().await.is_some());

    // The HA manager's DCS goes away (the file source cannot read it any more).
    let hidden = env.dir.path().join("dcs.hidden");
    std::fs::rename(&env.dcs, &hidden).unwrap();
    let gone = Instant::now();
    // The last confirmation was at most one loop_wait (1 s) before: stale from 2 s on.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(agent.status().await["leader"], true, "not before ttl");
    agent.wait_leader(false).await;
    let after = gone.elapsed();
    assert!(
        after >= Duration::from_millis(1_900) && after <= Duration::from_secs(3 + 1 + 2),
        "stepped down {after:?} after the DCS went away (ttl 3 s, loop_wait 1 s)"
    );
    let status = agent.status().await;
    assert_eq!(status["dcs_stale"], true, "{status}");
    assert!(
        status["dcs_view_age_ms"].as_u64().unwrap() >= 3_000,
        "{status}"
    );
    assert_eq!(status["dcs_source"]["kind"], "file", "{status}");
    assert!(status["dcs_error"].is_string(), "{status}");
    eventually("the pause is rolled back", || async {
        env.open_transaction().await.is_none().then_some(())
    })
    .await;
    assert!(env.can_write_group(1).await, "group 1 writes again");
    // Events are ignored meanwhile, and say why.
    let (_, answer) = agent.event(&before_demote(2, "w2a", 5)).await;
    assert_eq!(answer["status"], "ignored", "{answer}");
    assert!(
        answer["reason"].as_str().unwrap().contains("ttl"),
        "{answer}"
    );

    std::fs::rename(&hidden, &env.dcs).unwrap();
    agent.wait_leader(true).await;
    let status = agent.status().await;
    assert_eq!(status["dcs_stale"], false, "{status}");
    env.wait_registered().await;
    let (_, answer) = agent.event(&json!({"type": "after_promote", "group": 2, "leader": "w2a", "timeout": 30, "cooldown": 10})).await;
    assert_ne!(answer["status"], "ignored", "{answer}");
}
