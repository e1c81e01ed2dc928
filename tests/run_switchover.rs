//! `citus-ha run` against a real PostgreSQL 15 (Citus emulation): worker switchovers driven
//! over HTTP, the pause held in an open transaction, deadlines, lost connections, and policy
//! swaps in the middle of a switchover.

#[path = "run_support/mod.rs"]
mod support;

use serde_json::{json, Value};
use support::*;

/// Sends before_demote for group 1 and checks that the answer comes only once the pause is
/// in place: the `-demoted` rename is uncommitted (other sessions still see w1a), citus-ha's
/// session is idle in transaction, and writes to the group block. Returns that transaction's
/// (pid, xact_start).
async fn pause_group1(env: &Env, agent: &Agent, timeout: u64) -> (i32, String) {
    let (code, answer) = agent.event(&before_demote(1, "w1a", timeout)).await;
    assert_eq!(
        (code, &answer["status"]),
        (200, &json!("paused")),
        "{answer}"
    );
    let (pid, xact) = env
        .open_transaction()
        .await
        .expect("the pause is an open transaction of citus-ha's session");
    assert_eq!(
        env.primary(1).await.unwrap().1,
        "10.0.1.1",
        "the rename is not committed: other sessions still see the old primary"
    );
    assert!(
        !env.can_write_group(1).await,
        "writes to group 1 must block during the pause"
    );
    assert!(env.can_write_group(2).await, "other groups are not paused");
    (pid, xact)
}

/// Promotes w1b in the DCS and sends after_promote; waits for the committed result.
async fn finish_group1(env: &Env, agent: &Agent, old_primary_id: i32) {
    env.write_dcs(&cluster("coord1", g1_led_by_w1b(), g2_led_by_w2a()));
    let (code, answer) = agent.event(&after_promote(1, "w1b")).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["status"], "queued", "{answer}");
    eventually("group 1's switchover is committed", || async {
        let rows = env.rows().await;
        let primary = rows.iter().find(|r| r.1 == 1 && r.3 == "primary")?;
        let secondary = rows.iter().find(|r| r.1 == 1 && r.3 == "secondary")?;
        (primary.2 == "10.0.1.2"
            && secondary.2 == "10.0.1.1"
            && env.open_transaction().await.is_none())
        .then_some(())
    })
    .await;
    assert_eq!(
        env.primary(1).await.unwrap().0,
        old_primary_id,
        "the primary row keeps its nodeid"
    );
    assert!(env.can_write_group(1).await, "writes resume after COMMIT");
}

/// Exactly one transaction (BEGIN..COMMIT) with the three updates of a switchover.
fn assert_one_switchover_transaction(env: &Env, mark: u64) {
    let sent = env.sent_since(mark);
    let count = |needle: &str| sent.iter().filter(|l| l.contains(needle)).count();
    assert_eq!(count("statement: BEGIN"), 1, "{sent:#?}");
    assert_eq!(count("statement: COMMIT"), 1, "{sent:#?}");
    assert_eq!(count("statement: ROLLBACK"), 0, "{sent:#?}");
    assert_eq!(count("citus_update_node"), 3, "{sent:#?}");
    let begin = sent
        .iter()
        .position(|l| l.contains("statement: BEGIN"))
        .unwrap();
    let commit = sent
        .iter()
        .position(|l| l.contains("statement: COMMIT"))
        .unwrap();
    let updates: Vec<usize> = (0..sent.len())
        .filter(|i| sent[*i].contains("citus_update_node"))
        .collect();
    assert!(
        updates.iter().all(|i| begin < *i && *i < commit),
        "{sent:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_worker_switchover_holds_before_demote_until_paused() {
    let (env, agent) = standard().await;
    let old_primary = env.primary(1).await.unwrap().0;
    let mark = env.log_mark();
    let (pid, xact) = pause_group1(&env, &agent, 30).await;
    // The pause stays across heartbeats (the DCS still names w1a) until after_promote.
    agent.next_heartbeat().await;
    agent.next_heartbeat().await;
    assert_eq!(
        env.open_transaction().await,
        Some((pid, xact)),
        "the same transaction holds the pause"
    );
    finish_group1(&env, &agent, old_primary).await;
    assert_one_switchover_transaction(&env, mark);
    assert!(
        agent
            .log_text()
            .contains(r#"statement {"op":"update_node""#),
        "statements are logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_transaction_rolled_back_at_deadline_while_another_group_waits() {
    let (env, agent) = standard().await;
    let mark = env.log_mark();
    let (pid, _) = pause_group1(&env, &agent, 6).await;
    // Group 2 fails over meanwhile: its task must wait for group 1's transaction.
    env.write_dcs(&cluster(
        "coord1",
        g1_led_by_w1a(),
        group("w2b", vec![member("w2b", "10.0.2.2", "primary")]),
    ));
    agent.next_heartbeat().await;
    agent.next_heartbeat().await;
    assert_eq!(
        env.open_transaction().await.map(|t| t.0),
        Some(pid),
        "group 1's pause is still held"
    );
    assert_eq!(
        env.primary(2).await.unwrap().1,
        "10.0.2.1",
        "group 2 waits behind the open transaction"
    );
    // At the deadline the transaction is rolled back and group 2 goes ahead.
    eventually("group 2 failed over after the rollback", || async {
        (env.primary(2).await?.1 == "10.0.2.2").then_some(())
    })
    .await;
    assert_eq!(
        env.primary(1).await.unwrap().1,
        "10.0.1.1",
        "the rollback restored group 1"
    );
    assert!(env.rows().await.iter().all(|r| !r.2.ends_with("-demoted")));
    assert!(env.can_write_group(1).await);
    assert_eq!(
        env.count_since(mark, "statement: ROLLBACK"),
        1,
        "{:#?}",
        env.sent_since(mark)
    );
    let status = agent.status().await;
    assert_eq!(status["metrics"]["deadline_rollbacks"], 1, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_connection_killed_mid_transaction_converges() {
    let (env, agent) = standard().await;
    let old_primary = env.primary(1).await.unwrap().0;
    let (pid, _) = pause_group1(&env, &agent, 30).await;
    let killed: bool = env
        .db
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap()
        .get(0);
    assert!(killed);
    let mark = env.log_mark();
    // The server rolled the pause back with the session.
    eventually("the killed session is gone", || async {
        env.agent_sessions()
            .await
            .iter()
            .all(|s| s.0 != pid)
            .then_some(())
    })
    .await;
    assert!(env.can_write_group(1).await);
    env.write_dcs(&cluster("coord1", g1_led_by_w1b(), g2_led_by_w2a()));
    let (code, _) = agent.event(&after_promote(1, "w1b")).await;
    assert_eq!(code, 200);
    // The metadata converges on a new session (the heartbeat redoes what the lost
    // transaction did not finish).
    eventually("group 1 converged on w1b", || async {
        let rows = env.rows().await;
        let p = rows.iter().find(|r| r.1 == 1 && r.3 == "primary")?;
        let ok = p.0 == old_primary
            && p.2 == "10.0.1.2"
            && rows.iter().all(|r| !r.2.ends_with("-demoted"))
            && env.open_transaction().await.is_none();
        ok.then_some(())
    })
    .await;
    let sessions = env.agent_sessions().await;
    assert!(
        !sessions.is_empty() && sessions.iter().all(|s| s.0 != pid),
        "{sessions:?}"
    );
    // Nothing the lost transaction was to do ran autocommitted on the new session.
    assert_eq!(env.updates_outside_transactions(mark), Vec::<String>::new());
    assert_eq!(
        env.count_since(mark, "citus_update_node"),
        3,
        "{:#?}",
        env.sent_since(mark)
    );
    let status = agent.status().await;
    assert!(
        status["failed_statements"].as_u64().unwrap() >= 1,
        "{status}"
    );
}

/// The embedded build with a custom section appended: the same policy, another hash.
fn variant_of_embedded(tag: &str) -> Vec<u8> {
    let mut bytes = citus_ha::EMBEDDED_POLICY.to_vec();
    let name = b"citus-ha-test";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    assert!(payload.len() < 128);
    bytes.push(0); // custom section id
    bytes.push(payload.len() as u8);
    bytes.extend_from_slice(&payload);
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_policy_reload_over_http_mid_switchover() {
    // Built first (a cargo build of the guest): the pause below must not wait for it.
    let v01 = tokio::task::spawn_blocking(|| citus_ha_guest_build::policy_variant("wit-v0_1"))
        .await
        .unwrap()
        .expect("build the 0.1.0 policy");
    let env = Env::start().await;
    warm_policy_cache(std::fs::read(&v01).unwrap()).await;
    let port = free_port();
    let config = env.config(
        "coord1",
        "10.0.0.1:5432",
        port,
        &format!("restapi: {{listen: '127.0.0.1:{port}', authentication: {{username: admin, password: 's3cret'}}}}\n"),
    );
    let anonymous = Agent::start(&config, port).await;
    anonymous.wait_leader(true).await;
    env.wait_registered().await;
    let before = anonymous.get("/policy").await;
    let old_hash = before["running"]["sha256"].as_str().unwrap().to_string();
    assert_eq!(before["running"]["contract"], "0.4.0", "{before}");
    assert!(
        before["running"]["version"]
            .as_str()
            .unwrap()
            .starts_with("citus-ha-policy"),
        "{before}"
    );
    assert_eq!(before["previous"], Value::Null);

    // Authentication is required on every POST, not on GETs.
    let (code, _) = anonymous.reload(Vec::new()).await;
    assert_eq!(code, 401);
    let (code, _) = anonymous.event(&before_demote(1, "w1a", 30)).await;
    assert_eq!(code, 401);
    assert!(
        env.open_transaction().await.is_none(),
        "an unauthenticated event changes nothing"
    );
    let agent = anonymous.with_auth("admin", "s3cret");

    let old_primary = env.primary(1).await.unwrap().0;
    let mark = env.log_mark();
    let (pid, xact) = pause_group1(&env, &agent, 30).await;

    // Refused candidates leave the running policy in place.
    let (code, answer) = agent.reload(b"\0asm\x0d\0\x01\0garbage".to_vec()).await;
    assert_eq!(
        (code, &answer["status"]),
        (422, &json!("refused")),
        "{answer}"
    );
    let (code, answer) = agent
        .reload(citus_ha::EMBEDDED_POLICY[..1000].to_vec())
        .await;
    assert_eq!(
        (code, &answer["status"]),
        (422, &json!("refused")),
        "{answer}"
    );
    assert_eq!(
        agent.get("/policy").await["running"]["sha256"],
        json!(old_hash)
    );

    // The previous-contract build takes over in the middle of the switchover.
    let (code, answer) = agent.reload(std::fs::read(&v01).unwrap()).await;
    assert_eq!(
        (code, &answer["status"]),
        (200, &json!("swapped")),
        "{answer}"
    );
    assert_eq!(answer["to"]["contract"], "0.1.0", "{answer}");
    let report = agent.get("/policy").await;
    assert_eq!(report["running"]["contract"], "0.1.0", "{report}");
    assert_eq!(report["previous"]["sha256"], json!(old_hash), "{report}");
    assert_eq!(report["refused_swaps"], 2, "{report}");
    assert_eq!(
        env.open_transaction().await,
        Some((pid, xact)),
        "the swap keeps the session and its transaction"
    );
    assert!(
        agent.log_text().contains("policy reload refused"),
        "refusals are logged"
    );

    finish_group1(&env, &agent, old_primary).await;
    assert_one_switchover_transaction(&env, mark);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_policy_reload_on_sighup_and_file_change_mid_switchover() {
    let env = Env::start().await;
    let port = free_port();
    let policy = env.dir.path().join("policy.wasm");
    std::fs::write(&policy, citus_ha::EMBEDDED_POLICY).unwrap();
    let config = env.config(
        "coord1",
        "10.0.0.1:5432",
        port,
        &format!(
            "policy: {{path: {}, cache_dir: {}}}\n",
            policy.display(),
            policy_cache().display()
        ),
    );
    let agent = Agent::start(&config, port).await;
    agent.wait_leader(true).await;
    env.wait_registered().await;
    let old_primary = env.primary(1).await.unwrap().0;
    let first = agent.get("/policy").await;
    // Compiled before the pause, so the swap below only loads it.
    let variant = variant_of_embedded("sighup-test");
    warm_policy_cache(variant.clone()).await;
    assert_eq!(
        first["running"]["source"],
        json!(policy.display().to_string()),
        "{first}"
    );

    let mark = env.log_mark();
    let (pid, xact) = pause_group1(&env, &agent, 30).await;

    // SIGHUP re-reads policy.path (same bytes) and swaps.
    agent.signal("HUP");
    let report = eventually("the SIGHUP swap", || async {
        let r = agent.get("/policy").await;
        (r["swaps"] == 1).then_some(r)
    })
    .await;
    assert_eq!(
        report["previous"]["sha256"], first["running"]["sha256"],
        "{report}"
    );
    assert_ne!(
        report["running"]["loaded_at"], first["running"]["loaded_at"],
        "{report}"
    );

    // A new file at policy.path is noticed and swapped in too.
    let tmp = env.dir.path().join("policy.wasm.tmp");
    std::fs::write(&tmp, &variant).unwrap();
    std::fs::rename(&tmp, &policy).unwrap();
    let report = eventually("the file-change swap", || async {
        let r = agent.get("/policy").await;
        (r["swaps"] == 2).then_some(r)
    })
    .await;
    let new_hash = hex_sha256(&variant);
    assert_eq!(report["running"]["sha256"], json!(new_hash), "{report}");
    assert_eq!(
        env.open_transaction().await,
        Some((pid, xact)),
        "the swaps keep the transaction"
    );

    finish_group1(&env, &agent, old_primary).await;
    assert_one_switchover_transaction(&env, mark);
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
