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
    let (env, agent) = standard_with("ttl: 3\n").await;

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

/// A peer that accepts TCP connections and never says a word (a frozen coordinator, or a
/// partition that black-holes the traffic): connections are held open until the test ends.
fn silent_peer() -> (u16, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let handle = std::thread::spawn(move || {
        let mut held = Vec::new();
        let until = Instant::now() + Duration::from_secs(120);
        while Instant::now() < until && held.len() < 64 {
            match listener.accept() {
                Ok((s, _)) => held.push(s),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    (port, handle)
}

/// Once the whole agent froze on a coordinator that accepted the connection and never
/// answered: /status hung and SIGTERM waited for the peer. Now every wait on the
/// coordinator is bounded, the agent keeps answering, and SIGTERM ends it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_that_never_answers_does_not_freeze_the_agent() {
    let env = Env::start().await;
    let (silent, _peer) = silent_peer();
    let port = free_port();
    let config = env.config(
        "coord1",
        "10.0.0.1:5432",
        port,
        &format!("retry_timeout: 2\ncoordinator: {{url: 'postgres://postgres@127.0.0.1:{silent}/citus'}}\n"),
    );
    let mut agent = Agent::start(&config, port).await;
    agent.wait_leader(true).await;
    // The agent keeps answering while its session waits on the silent peer.
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(5) {
        let asked = Instant::now();
        let status = agent.status().await;
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "/status took {:?}: {status}",
            asked.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eventually(
        "the silent coordinator is reported as a failed statement",
        || async {
            let s = agent.status().await;
            (s["failed_statements"].as_u64().unwrap() > 0).then_some(())
        },
    )
    .await;
    assert!(
        agent.log_text().contains("no answer within 2 s"),
        "{}",
        agent.log_text()
    );
    // A worker event is answered (as a timeout of its own), not swallowed.
    let (code, answer) = agent.event(&before_demote(1, "w1a", 1)).await;
    assert_eq!(code, 200, "{answer}");
    // Stopping never waits on the stuck statement.
    agent.signal("TERM");
    let stopped = Instant::now();
    let status = agent.wait_exit(Duration::from_secs(2));
    assert!(
        status.is_some(),
        "still running {:?} after SIGTERM:\n{}",
        stopped.elapsed(),
        agent.log_text()
    );
}

/// `replay --db` against such a peer ends with an error instead of hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_against_a_coordinator_that_never_answers_ends() {
    let (silent, _peer) = silent_peer();
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("s.jsonl");
    std::fs::write(
        &scenario,
        concat!(
            r#"{"op":"config","citus":{"group":0,"database":"citus"},"name":"coord1","conn_url":"postgres://10.0.0.1:5432/postgres"}"#,
            "\n",
            r#"{"op":"sync","cluster":{"leader":"coord1","members":[{"name":"coord1","conn_url":"postgres://10.0.0.1:5432/postgres","role":"primary","state":"running"}]}}"#,
            "\n",
            r#"{"op":"run"}"#,
            "\n"
        ),
    )
    .unwrap();
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_citus-ha"))
            .arg("replay")
            .arg(&scenario)
            .args(["--db-timeout", "1", "--db"])
            .arg(format!("postgres://postgres@127.0.0.1:{silent}/citus"))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no answer within 1 s"), "{stderr}");
}

/// Reads what the server sends until it closes the connection or `limit` passes.
async fn read_answer(s: &mut tokio::net::TcpStream, limit: Duration) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    match tokio::time::timeout(limit, s.read_to_end(&mut buf)).await {
        Ok(_) => Some(String::from_utf8_lossy(&buf).into_owned()),
        Err(_) => None,
    }
}

async fn connect(port: u16) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect")
}

/// Slowloris and friends: heads that never end, bodies that never arrive and Content-Length
/// lies were held forever; now each is bounded and answered as HTTP says, and the API keeps
/// serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_lying_clients_cannot_hold_the_rest_api() {
    use tokio::io::AsyncWriteExt;
    let env = Env::start().await;
    let port = free_port();
    let config = env.config(
        "coord1",
        "10.0.0.1:5432",
        port,
        &format!(
            "restapi: {{listen: '127.0.0.1:{port}', request_timeout: 1, max_connections: 20}}\n"
        ),
    );
    let agent = Agent::start(&config, port).await;

    // 30 connections stop half-way through their heads: 20 are held (briefly), the rest are
    // turned away at once with 503.
    let mut slow = Vec::new();
    for _ in 0..30 {
        let mut s = connect(port).await;
        s.write_all(b"POST /citus HTTP/1.1\r\nHost: x\r\nContent-")
            .await
            .unwrap();
        slow.push(s);
    }
    let started = Instant::now();
    let mut busy = 0;
    let mut closed = 0;
    for s in &mut slow {
        let answer = read_answer(s, Duration::from_secs(5)).await;
        match answer {
            Some(a) if a.starts_with("HTTP/1.1 503") => busy += 1,
            Some(_) => closed += 1,
            None => panic!("a half-sent head was held for more than 5 s"),
        }
    }
    assert!(busy >= 10, "{busy} answered 503");
    assert_eq!(busy + closed, 30);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        agent.status().await["name"],
        "coord1",
        "the API serves again"
    );

    // A body that never completes: 408.
    let mut s = connect(port).await;
    s.write_all(b"POST /citus HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"type\":")
        .await
        .unwrap();
    let answer = read_answer(&mut s, Duration::from_secs(5))
        .await
        .expect("answered");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""status":"timeout""#), "{answer}");

    // A Content-Length lie: 413 before a byte of the body is read.
    let mut s = connect(port).await;
    s.write_all(b"POST /citus HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000\r\n\r\n")
        .await
        .unwrap();
    let answer = read_answer(&mut s, Duration::from_secs(3))
        .await
        .expect("answered");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#""status":"too_large""#), "{answer}");

    // 404 and 405 speak JSON like the rest.
    let r = agent.http.get(agent.url("/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["status"], "not_found", "{v}");
    let r = agent.http.get(agent.url("/citus")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["status"], "method_not_allowed", "{v}");
}

/// Ten concurrent 60 MB reload bodies once took the agent from 118 to 893 MB. Now a body
/// over 16 MiB is refused from its Content-Length, and reloads go one at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_bodies_cannot_inflate_memory() {
    use tokio::io::AsyncWriteExt;
    let env = Env::start().await;
    let port = free_port();
    let config = env.config(
        "coord1",
        "10.0.0.1:5432",
        port,
        &format!("restapi: {{listen: '127.0.0.1:{port}', request_timeout: 2}}\n"),
    );
    let agent = Agent::start(&config, port).await;
    agent.wait_leader(true).await;
    let before = agent.rss_bytes();
    let chunk = vec![0u8; 1 << 20];
    let mut uploads = Vec::new();
    for _ in 0..10 {
        let chunk = chunk.clone();
        uploads.push(tokio::spawn(async move {
            let mut s = connect(port).await;
            let head = format!(
                "POST /policy/reload HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
                60 << 20
            );
            s.write_all(head.as_bytes()).await.unwrap();
            // The server may answer and close while this is still sending.
            for _ in 0..60 {
                if s.write_all(&chunk).await.is_err() {
                    break;
                }
            }
            read_answer(&mut s, Duration::from_secs(10)).await
        }));
    }
    for u in uploads {
        let answer = u.await.unwrap().unwrap_or_default();
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 413"),
            "{answer}"
        );
        // Refused unread, so the connection is not kept for another request.
        assert!(
            answer.is_empty() || answer.to_ascii_lowercase().contains("connection: close"),
            "{answer}"
        );
    }
    let grew = agent.rss_bytes().saturating_sub(before);
    assert!(grew < 64 << 20, "the agent grew by {} MiB", grew >> 20);

    // One reload at a time: while one is sending its body, another is refused (409).
    let mut first = connect(port).await;
    first
        .write_all(b"POST /policy/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (code, answer) = agent.reload(vec![1, 2, 3]).await;
    assert_eq!(code, 409, "{answer}");
    assert_eq!(answer["status"], "busy", "{answer}");
    let answer = read_answer(&mut first, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    // Afterwards a reload goes through (empty body: the embedded build again).
    let (code, answer) = agent.reload(Vec::new()).await;
    assert_eq!(code, 200, "{answer}");
}

/// `timeout: 31536000` once paused a group for a year and held every other group's failover
/// behind it. Now a pause lasts at most max_pause, the answer says it was clamped, and
/// another group's failover follows within that bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_year_long_pause_is_clamped_and_other_groups_still_fail_over() {
    let (env, agent) = standard_with("max_pause: 3\n").await;

    let (_, answer) = agent.event(&before_demote(1, "w1a", 31_536_000)).await;
    assert_eq!(answer["status"], "paused", "{answer}");
    assert_eq!(answer["timeout_clamped"]["max_pause_s"], 3.0, "{answer}");
    assert_eq!(
        answer["timeout_clamped"]["asked_timeout_s"], 31_536_000.0,
        "{answer}"
    );
    let paused = Instant::now();
    // Group 2 fails over meanwhile (its primary is gone; the DCS names w2b).
    env.write_dcs(&cluster(
        "coord1",
        g1_led_by_w1a(),
        group("w2b", vec![member("w2b", "10.0.2.2", "primary")]),
    ));
    eventually("group 2 follows", || async {
        (env.primary(2).await.map(|p| p.1).as_deref() == Some("10.0.2.2")).then_some(())
    })
    .await;
    let waited = paused.elapsed();
    assert!(
        waited < Duration::from_secs(3 + 3),
        "group 2 waited {waited:?} behind a pause capped at 3 s"
    );
    assert!(env.open_transaction().await.is_none());
    assert!(env.can_write_group(1).await);
}

/// 20 callers asked for pauses with `timeout: 1`; after they had all given up, the agent
/// still paused their groups one after another for 19 s. Now a pause whose caller gave up
/// before it could start is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pauses_whose_callers_gave_up_are_never_started() {
    let env = Env::start().await;
    let groups = 20;
    let mut workers = serde_json::Map::new();
    for g in 1..=groups {
        workers.insert(
            g.to_string(),
            group(
                &format!("w{g}a"),
                vec![
                    member(&format!("w{g}a"), &format!("10.0.{g}.1"), "primary"),
                    member(&format!("w{g}b"), &format!("10.0.{g}.2"), "replica"),
                ],
            ),
        );
    }
    env.write_dcs(&json!({"leader": "coord1",
        "members": [member("coord1", "10.0.0.1", "primary")],
        "workers": workers}));
    let port = free_port();
    let agent = Agent::start(&env.config("coord1", "10.0.0.1:5432", port, ""), port).await;
    agent.wait_leader(true).await;
    eventually("every group is registered", || async {
        let rows = env.rows().await;
        (rows.len() == 1 + 2 * groups && env.open_transaction().await.is_none()).then_some(())
    })
    .await;

    let mark = env.log_mark();
    let asks = (1..=groups).map(|g| {
        let body = before_demote(g as i32, &format!("w{g}a"), 1);
        let agent = &agent;
        async move {
            agent.event(&body).await.1["status"]
                .as_str()
                .unwrap_or("")
                .to_string()
        }
    });
    let answers = futures::future::join_all(asks).await;
    let paused = answers.iter().filter(|a| *a == "paused").count();
    assert!(paused >= 1, "{answers:?}");
    let begins = env.count_since(mark, "statement: BEGIN");
    // Every caller has returned: nothing may start from here on (once, the agent went on
    // pausing the remaining groups one after another for 19 s).
    let returned = env.log_mark();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let late = env.count_since(returned, "statement: BEGIN");
    assert_eq!(
        late, 0,
        "{late} pauses started after every caller had gone: {answers:?}"
    );
    // A pause may start just before its caller's deadline and finish setting up just after
    // it; most callers' pauses are dropped, never started.
    assert!(
        begins < groups / 2,
        "{begins} pauses started for {answers:?}"
    );
    let dropped = agent.log_text().matches("stopped waiting").count();
    assert!(
        dropped + begins >= groups,
        "{dropped} dropped, {begins} started"
    );
    assert!(env.open_transaction().await.is_none());
}

/// Connection errors say what happened ("connection refused", "database ... does not
/// exist"), not "error connecting to server" or "db error".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_errors_name_their_cause() {
    use citus_ha::session::pg::{PgSession, SessionLimits};
    use citus_ha::session::MetadataSession;
    use citus_ha_policy::{Statement, StatementResult};
    let pg = citus_ha_pg_harness::PgServer::start().expect("start PostgreSQL");
    let closed = free_port();
    let cases = [
        (
            format!("postgres://postgres@127.0.0.1:{closed}/citus"),
            "onnection refused",
        ),
        (
            pg.url("no_such_db"),
            "database \"no_such_db\" does not exist",
        ),
    ];
    for (url, cause) in cases {
        let mut s = PgSession::new(&url, false, SessionLimits::default()).unwrap();
        match s.execute(&Statement::LoadMetadata).await {
            StatementResult::Failed(e) => {
                assert!(e.message.contains(cause), "{url}: {}", e.message);
                assert!(e.connection_lost, "{url}");
            }
            other => panic!("{url}: {other:?}"),
        }
    }
}
