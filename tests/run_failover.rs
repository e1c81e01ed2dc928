//! `citus-ha run` against a real PostgreSQL 15 (Citus emulation): failovers that only the DCS
//! tells about (no worker events), and coordinator leadership moving between two agents.

#[path = "run_support/mod.rs"]
mod support;

use serde_json::json;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_worker_failover_from_heartbeat_alone() {
    let (env, agent) = standard().await;
    let (old_id, _) = env.primary(1).await.unwrap();
    let mark = env.log_mark();
    // w1a is gone; w1b is the new primary. Nobody sends an event.
    env.write_dcs(&cluster(
        "coord1",
        group("w1b", vec![member("w1b", "10.0.1.2", "primary")]),
        g2_led_by_w2a(),
    ));
    eventually("group 1 follows the DCS", || async {
        let rows = env.rows().await;
        let g1: Vec<_> = rows.iter().filter(|r| r.1 == 1).collect();
        // The primary row keeps its id and gets the new address; the dead primary's address
        // disappears once Citus has synced its metadata.
        let ok =
            g1.len() == 1 && g1[0].0 == old_id && g1[0].2 == "10.0.1.2" && g1[0].3 == "primary";
        (ok && env.open_transaction().await.is_none()).then_some(())
    })
    .await;
    assert!(env.count_since(mark, "citus_update_node") >= 1);
    assert!(env.count_since(mark, "citus_remove_node") >= 1);
    assert_eq!(
        env.count_since(mark, "statement: BEGIN"),
        env.count_since(mark, "statement: COMMIT"),
        "every transaction was committed: {:#?}",
        env.sent_since(mark)
    );
    assert!(
        env.rows()
            .await
            .iter()
            .all(|r| r.1 != 2 || r.2.starts_with("10.0.2.")),
        "group 2 untouched"
    );
    let status = agent.status().await;
    assert_eq!(status["leader"], true);
    // The only refusals allowed are Citus' "metadata out of sync" after the update, which
    // the policy waits out and retries.
    assert_eq!(
        status["failed_statements"], status["metrics"]["sync_retries"],
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_coordinator_failover_moves_the_work_to_the_new_leader() {
    let env = Env::start().await;
    let (p1, p2) = (free_port(), free_port());
    let coord1 = Agent::start(&env.config("coord1", "10.0.0.1:5432", p1, ""), p1).await;
    let coord2 = Agent::start(&env.config("coord2", "10.0.0.2:5432", p2, ""), p2).await;
    coord1.wait_leader(true).await;
    env.wait_registered().await;
    coord2.next_dcs_read().await;
    assert_eq!(coord2.status().await["leader"], false);
    let coordinator_row = env.primary(0).await.unwrap();
    assert_eq!(coordinator_row.1, "10.0.0.1");

    // The replica's agent ignores (valid) events and validates malformed ones all the same.
    let (code, answer) = coord2.event(&before_demote(1, "w1a", 30)).await;
    assert_eq!(
        (code, &answer["status"]),
        (200, &json!("ignored")),
        "{answer}"
    );
    let (code, answer) = coord2
        .event(&json!({"type": "before_demote", "group": 0, "leader": "w1a", "timeout": 30}))
        .await;
    assert_eq!((code, &answer["field"]), (400, &json!("group")), "{answer}");
    assert!(env.open_transaction().await.is_none());

    // coord1 holds a pause when the coordinator fails over to coord2.
    let (code, answer) = coord1.event(&before_demote(1, "w1a", 30)).await;
    assert_eq!(
        (code, &answer["status"]),
        (200, &json!("paused")),
        "{answer}"
    );
    let (paused_pid, _) = env.open_transaction().await.expect("coord1's pause");
    env.write_dcs(&cluster("coord2", g1_led_by_w1a(), g2_led_by_w2a()));

    // coord1 stops acting: its session and the open transaction are gone.
    coord1.wait_leader(false).await;
    eventually("coord1's transaction is gone", || async {
        env.agent_sessions()
            .await
            .iter()
            .all(|s| s.0 != paused_pid)
            .then_some(())
    })
    .await;
    // coord2 registers itself as the coordinator's primary, in the same row.
    coord2.wait_leader(true).await;
    eventually("coord2 is the coordinator row", || async {
        let p = env.primary(0).await?;
        (p == (coordinator_row.0, "10.0.0.2".to_string()) && env.open_transaction().await.is_none())
            .then_some(())
    })
    .await;
    assert!(
        env.rows()
            .await
            .iter()
            .any(|r| r.1 == 0 && r.2 == "10.0.0.1" && r.3 == "secondary"),
        "the old coordinator is now a secondary: {:?}",
        env.rows().await
    );
    assert_eq!(
        env.primary(1).await.unwrap().1,
        "10.0.1.1",
        "coord1's pause was rolled back"
    );
    assert!(env.can_write_group(1).await);

    // The old leader now only answers "ignored", and does not write.
    let mark = env.log_mark();
    let coord1_pids: Vec<i32> = env.agent_sessions().await.iter().map(|s| s.0).collect();
    let (code, answer) = coord1.event(&before_demote(2, "w2a", 30)).await;
    assert_eq!(
        (code, &answer["status"]),
        (200, &json!("ignored")),
        "{answer}"
    );
    assert!(
        answer["reason"].as_str().unwrap().contains("coord2"),
        "{answer}"
    );
    coord1.next_dcs_read().await;
    assert_eq!(env.primary(2).await.unwrap().1, "10.0.2.1");
    assert_eq!(
        env.count_since(mark, "citus_update_node"),
        0,
        "{:#?}",
        env.sent_since(mark)
    );
    assert!(env
        .agent_sessions()
        .await
        .iter()
        .all(|s| coord1_pids.contains(&s.0) || s.1 != "idle in transaction"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_dcs_change_noticed_between_heartbeats_despite_busy_api() {
    let env = Env::start().await;
    let port = free_port();
    // Heartbeats are 60 s apart: only the DCS file watch can notice the change in time.
    let agent = Agent::start(
        &env.config("coord1", "10.0.0.1:5432", port, "loop_wait: 60\nttl: 120\n"),
        port,
    )
    .await;
    agent.wait_leader(true).await;
    env.wait_registered().await;
    env.write_dcs(&cluster(
        "coord1",
        group("w1b", vec![member("w1b", "10.0.1.2", "primary")]),
        g2_led_by_w2a(),
    ));
    // A monitor polling /status every 20 ms must not starve the watch.
    let started = tokio::time::Instant::now();
    loop {
        let _ = agent.status().await;
        if env.primary(1).await.unwrap().1 == "10.0.1.2" {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the DCS change was not noticed within 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        agent.status().await["heartbeats"],
        2,
        "the initial heartbeat and the one for the change"
    );
}
