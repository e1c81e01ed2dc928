//! `citus-ha run` reading the DCS from a real etcd (Debian's etcd-server 3.4) in Patroni's key
//! layout, against a real PostgreSQL 15 with the Citus emulation. The test writes the keys as
//! Patroni writes them; the agent only watches.

#[path = "run_support/mod.rs"]
mod support;

#[path = "run_support/etcd.rs"]
mod etcd;

use etcd::{Etcd, PREFIX, SCOPE};
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use support::*;

/// A config for member `name` whose DCS is `etcd` (Patroni's top-level `scope` and `etcd3`).
fn etcd_config(
    env: &Env,
    etcd: &Etcd,
    name: &str,
    address: &str,
    port: u16,
    extra: &str,
) -> PathBuf {
    let path = env.dir.path().join(format!("{name}.yaml"));
    let mut text = format!(
        "name: {name}\n\
         scope: {SCOPE}\n\
         etcd3: {{hosts: ['{}']}}\n\
         citus: {{group: 0, database: citus}}\n\
         postgresql: {{connect_address: '{address}'}}\n\
         coordinator: {{url: '{}'}}\n\
         restapi: {{listen: '127.0.0.1:{port}'}}\n\
         policy: {{cache_dir: {}}}\n",
        etcd.endpoint(),
        env.pg.url("citus"),
        policy_cache().display(),
    );
    if !extra.contains("loop_wait:") {
        text.push_str("loop_wait: 1\n");
    }
    if !extra.contains("ttl:") {
        text.push_str("ttl: 30\n");
    }
    text.push_str(extra);
    std::fs::write(&path, text).unwrap();
    path
}

/// etcd with the standard cluster written, the agent (coord1) leading, the cluster registered.
async fn standard_etcd(extra: &str) -> (Env, Etcd, Agent) {
    let env = Env::start().await;
    let etcd = Etcd::start().await;
    etcd.write_cluster(&initial_cluster()).await;
    let port = free_port();
    let agent = Agent::start(
        &etcd_config(&env, &etcd, "coord1", "10.0.0.1:5432", port, extra),
        port,
    )
    .await;
    agent.wait_leader(true).await;
    env.wait_registered().await;
    (env, etcd, agent)
}

/// Polls (every 5 ms) until group `g`'s committed primary is `host`; returns how long it took.
async fn primary_becomes(env: &Env, g: i32, host: &str, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if env.primary(g).await.map(|p| p.1).as_deref() == Some(host) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "group {g}'s primary did not become {host} within {within:?}: {:?}",
            env.rows().await
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_drives_a_switchover_and_a_heartbeat_only_failover() {
    // Heartbeats 60 s apart: only the watch can make the agent see a change in time.
    let (env, etcd, agent) = standard_etcd("loop_wait: 60\nttl: 120\n").await;
    let status = agent.status().await;
    assert_eq!(status["dcs_error"], json!(null), "{status}");

    // A planned switchover of group 1, as Patroni does it: before_demote, the keys move,
    // after_promote.
    let (code, answer) = agent.event(&before_demote(1, "w1a", 30)).await;
    assert_eq!(
        (code, &answer["status"]),
        (200, &json!("paused")),
        "{answer}"
    );
    assert!(!env.can_write_group(1).await, "writes to group 1 wait");
    etcd.put_member(1, "w1a", "10.0.1.1", "replica").await;
    etcd.put_member(1, "w1b", "10.0.1.2", "primary").await;
    etcd.put_leader(1, "w1b").await;
    let (code, answer) = agent.event(&after_promote(1, "w1b")).await;
    assert_eq!(code, 200, "{answer}");
    primary_becomes(&env, 1, "10.0.1.2", WAIT).await;
    eventually("the switchover committed", || async {
        env.open_transaction().await.is_none().then_some(())
    })
    .await;
    assert!(env.can_write_group(1).await);

    // A failover of group 2 nobody announces: w2a is gone, w2b leads. pg_dist_node must
    // follow within 500 ms of the write that names the new leader.
    etcd.delete_member(2, "w2a").await;
    etcd.put_member(2, "w2b", "10.0.2.2", "primary").await;
    let mark = env.log_mark();
    etcd.put_leader(2, "w2b").await;
    let took = primary_becomes(&env, 2, "10.0.2.2", Duration::from_secs(5)).await;
    eprintln!("pg_dist_node followed the etcd leader write in {took:?}");
    assert!(
        took < Duration::from_millis(500),
        "pg_dist_node followed the leader change after {took:?} (> 500 ms)"
    );
    assert!(env.count_since(mark, "citus_update_node") >= 1);

    let status = agent.status().await;
    assert_eq!(status["leader"], true, "{status}");
    assert_eq!(status["dcs_leader"], "coord1");
    // /status names the source, the revision its view reflects, and the view's age.
    let source = &status["dcs_source"];
    assert_eq!(source["kind"], "etcd3", "{status}");
    let location = source["location"].as_str().unwrap();
    assert_eq!(
        location,
        format!("http://{} {PREFIX}", etcd.endpoint()),
        "{status}"
    );
    assert_eq!(source["revision"], json!(etcd.revision().await), "{status}");
    assert!(status["dcs_view_age_ms"].as_u64().is_some(), "{status}");
    assert_eq!(status["dcs_stale"], false, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_stopped_longer_than_ttl_steps_down_and_resumes() {
    let (env, etcd, agent) = standard_etcd("ttl: 3\n").await;
    let (code, answer) = agent.event(&before_demote(1, "w1a", 60)).await;
    assert_eq!(
        (code, &answer["status"]),
        (200, &json!("paused")),
        "{answer}"
    );
    let (paused_pid, _) = env.open_transaction().await.expect("the pause");

    // etcd stops answering (its connections stay open: only the bounded waits notice).
    etcd.signal("STOP");
    let stopped = Instant::now();
    agent.wait_leader(false).await;
    let stepped_down = stopped.elapsed();
    eprintln!("stepped down {stepped_down:?} after etcd stopped (ttl 3 s)");
    assert!(
        stepped_down >= Duration::from_secs(2),
        "stepped down after {stepped_down:?}, before the view could be stale"
    );
    assert!(stepped_down < Duration::from_secs(8), "{stepped_down:?}");
    eventually("the pause is rolled back", || async {
        env.agent_sessions()
            .await
            .iter()
            .all(|s| s.0 != paused_pid)
            .then_some(())
    })
    .await;
    assert!(env.can_write_group(1).await, "writes to group 1 go through");
    assert_eq!(env.primary(1).await.unwrap().1, "10.0.1.1");
    let status = agent.status().await;
    assert!(
        status["dcs_error"].as_str().unwrap_or("").contains("etcd3"),
        "{status}"
    );
    assert_eq!(status["dcs_stale"], true, "{status}");
    assert!(
        status["dcs_view_age_ms"].as_u64().unwrap() > 3000,
        "{status}"
    );

    // Back: the agent leads again and acts on a change made meanwhile... once etcd answers.
    etcd.signal("CONT");
    agent.wait_leader(true).await;
    etcd.put_leader(1, "w1b").await;
    etcd.put_member(1, "w1b", "10.0.1.2", "primary").await;
    etcd.delete_member(1, "w1a").await;
    primary_becomes(&env, 1, "10.0.1.2", WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_broken_watch_and_compaction_lose_no_change() {
    let (env, mut etcd, agent) = standard_etcd("ttl: 8\n").await;

    // 1. The watch breaks (etcd dies and comes back); a change made right after the restart,
    //    before the agent has re-established its watch, still arrives.
    etcd.kill();
    etcd.restart().await;
    etcd.delete_member(1, "w1a").await;
    etcd.put_member(1, "w1b", "10.0.1.2", "primary").await;
    etcd.put_leader(1, "w1b").await;
    primary_becomes(&env, 1, "10.0.1.2", WAIT).await;

    // 2. The agent is frozen while etcd restarts and the changes it would resume from are
    //    compacted away: the resumed watch is refused, and the agent lists again.
    agent.signal("STOP");
    etcd.kill();
    etcd.restart().await;
    etcd.delete_member(2, "w2a").await;
    etcd.put_member(2, "w2b", "10.0.2.2", "primary").await;
    let rev = etcd.put_leader(2, "w2b").await;
    etcd.compact(rev).await;
    agent.signal("CONT");
    primary_becomes(&env, 2, "10.0.2.2", WAIT).await;
    eventually("the agent logged the compaction", || async {
        agent.log_text().contains("compacted").then_some(())
    })
    .await;
    agent.wait_leader(true).await;
    // The gone primaries' addresses leave pg_dist_node once Citus has synced its metadata.
    eventually(
        "only the new primaries are left in groups 1 and 2",
        || async {
            let rows = env.rows().await;
            rows.iter()
                .all(|r| r.2 != "10.0.1.1" && r.2 != "10.0.2.1")
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_malformed_member_is_reported_and_skipped() {
    let (env, etcd, agent) = standard_etcd("").await;
    let before = env.rows().await;
    let bad_key = format!("{PREFIX}1/members/w1c");
    etcd.put(
        &bad_key,
        "{\"conn_url\": \"postgres://10.0.1.3:5432/postgres\",",
    )
    .await;
    let typed_key = format!("{PREFIX}2/members/w2c");
    etcd.put(
        &typed_key,
        r#"{"conn_url": 5432, "role": "replica", "state": "running"}"#,
    )
    .await;
    eventually("both keys are reported", || async {
        let log = agent.log_text();
        (log.contains(&format!("{bad_key}: not JSON"))
            && log.contains(&format!("{typed_key}: value.conn_url: must be a string")))
        .then_some(())
    })
    .await;
    agent.next_heartbeat().await;
    assert_eq!(env.rows().await, before, "nothing else changed");
    assert_eq!(agent.status().await["leader"], true);

    // The source still follows: a valid change right after is acted on.
    etcd.put_member(1, "w1c", "10.0.1.3", "replica").await;
    eventually("the fixed member is registered", || async {
        env.rows()
            .await
            .iter()
            .any(|r| r.1 == 1 && r.2 == "10.0.1.3" && r.3 == "secondary")
            .then_some(())
    })
    .await;
}

#[test]
fn check_config_names_every_etcd3_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "name: c\nscope: a/b\ncitus: {group: 0, database: citus}\npostgresql: {connect_address: '10.0.0.1:5432'}\n\
         etcd3: {hosts: ['etcd1:2379', 'x'], protocol: https, cacert: missing-ca.pem, username: u, srv: x}\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_citus-ha"))
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for expected in [
        "scope: must not contain '/'",
        "etcd3.hosts[1]: \"x\" is not \"host:port\"",
        "etcd3.password: is required when username is set",
        "etcd3.srv: unknown setting",
        "etcd3.cacert: cannot read",
        "5 problems",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
}
