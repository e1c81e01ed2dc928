//! `citus-ha run` against a real PostgreSQL 15 (Citus emulation): events that must change
//! nothing, hostile DCS data, the status endpoints, and `check-config`.

#[path = "run_support/mod.rs"]
mod support;

use serde_json::json;
use std::process::Command;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_event_from_non_leader_member_is_discarded() {
    let (env, agent) = standard().await;
    let before = env.rows().await;
    let mark = env.log_mark();
    // w1b is a replica of group 1: only the group's DCS leader may pause it.
    let (code, answer) = agent.event(&before_demote(1, "w1b", 30)).await;
    assert_eq!(
        (code, &answer["status"]),
        (200, &json!("discarded")),
        "{answer}"
    );
    assert!(
        answer["reason"].as_str().unwrap().contains("w1a"),
        "{answer}"
    );
    // A group the DCS does not know.
    let (code, answer) = agent.event(&before_demote(7, "w7a", 30)).await;
    assert_eq!(
        (code, &answer["status"]),
        (200, &json!("discarded")),
        "{answer}"
    );
    agent.next_heartbeat().await;
    assert!(env.open_transaction().await.is_none());
    assert_eq!(env.rows().await, before);
    assert_eq!(
        env.count_since(mark, "statement: BEGIN"),
        0,
        "{:#?}",
        env.sent_since(mark)
    );
    assert!(env.can_write_group(1).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_malformed_event_answered_400_changes_nothing() {
    let (env, agent) = standard().await;
    let before = env.rows().await;
    let statements = agent.status().await["statements"].as_u64().unwrap();
    let mark = env.log_mark();
    for (body, field) in [
        (r#"{"type":"before_demote","group":1,"#.to_string(), "event"),
        ("[1,2]".to_string(), "event"),
        (
            r#"{"type":"before_demote","group":"1","leader":"w1a","timeout":30}"#.to_string(),
            "group",
        ),
        (
            r#"{"type":"restart","group":1,"leader":"w1a","timeout":30}"#.to_string(),
            "type",
        ),
        (
            r#"{"type":"before_demote","group":1,"leader":"w1a","timeout":-5}"#.to_string(),
            "timeout",
        ),
        (
            r#"{"type":"before_demote","group":1,"timeout":30}"#.to_string(),
            "leader",
        ),
    ] {
        let (code, answer) = agent.event_raw(body.clone()).await;
        assert_eq!(code, 400, "{body}: {answer}");
        assert_eq!(answer["status"], "invalid", "{body}: {answer}");
        assert_eq!(answer["field"], field, "{body}: {answer}");
        assert!(!answer["reason"].as_str().unwrap().is_empty(), "{answer}");
    }
    // Larger than the 64 KiB limit: refused before anyone parses it.
    let huge = format!(
        r#"{{"type":"before_demote","group":1,"leader":"{}","timeout":30}}"#,
        "w".repeat(70_000)
    );
    let (code, _) = agent.event_raw(huge).await;
    assert_eq!(code, 413);
    // Nothing ran, nothing changed.
    agent.next_heartbeat().await;
    assert!(env.open_transaction().await.is_none());
    assert_eq!(env.rows().await, before);
    assert_eq!(
        env.count_since(mark, "statement: BEGIN"),
        0,
        "{:#?}",
        env.sent_since(mark)
    );
    assert_eq!(
        agent.status().await["statements"].as_u64().unwrap(),
        statements
    );
    // The same body, well-formed, works: the 400s were about the body, not the service.
    let (code, answer) = agent.event(&before_demote(1, "w1a", 30)).await;
    assert_eq!(
        (code, &answer["status"]),
        (200, &json!("paused")),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_hostile_member_address_stored_verbatim() {
    let (env, agent) = standard().await;
    env.db
        .batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (42);")
        .await
        .unwrap();
    // Hosts are compared lower-cased (as the reference does), so the hostile text is lower case
    // to be stored byte for byte.
    let hostile = "x'); drop table t; --";
    let mut w1c = member("w1c", "unused", "replica");
    w1c.as_object_mut().unwrap().remove("conn_url");
    w1c["conn_kwargs"] = json!({"host": hostile, "port": 5433});
    let g1 = group(
        "w1a",
        vec![
            member("w1a", "10.0.1.1", "primary"),
            member("w1b", "10.0.1.2", "replica"),
            w1c,
        ],
    );
    env.write_dcs(&cluster("coord1", g1, g2_led_by_w2a()));
    eventually("the hostile member is registered", || async {
        env.db
            .query_opt(
                "SELECT 1 FROM pg_dist_node WHERE nodename = $1 AND nodeport = 5433 AND groupid = 1 AND noderole = 'secondary'",
                &[&hostile],
            )
            .await
            .unwrap()
            .map(|_| ())
    })
    .await;
    let x: i32 = env
        .db
        .query_one("SELECT x FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(x, 42, "table t survived");
    assert_eq!(agent.status().await["failed_statements"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_status_metrics_and_policy_endpoints() {
    let (_env, agent) = standard().await;
    let status = agent.status().await;
    assert_eq!(status["name"], "coord1");
    assert_eq!(status["leader"], true);
    assert_eq!(status["dcs_leader"], "coord1");
    assert_eq!(status["traps"], 0);
    assert!(
        status["metrics"]["statements"].as_u64().unwrap() >= 7,
        "{status}"
    );
    let text = agent
        .http
        .get(agent.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("\ncitus_ha_leader 1\n"), "{text}");
    assert!(text.contains("citus_ha_policy_traps_total 0"), "{text}");
    assert!(
        text.contains("citus_ha_policy_deadline_rollbacks_total 0"),
        "{text}"
    );
    let policy = agent.get("/policy").await;
    let running = &policy["running"];
    assert_eq!(running["source"], "embedded", "{policy}");
    assert_eq!(running["sha256"].as_str().unwrap().len(), 64, "{policy}");
    assert!(
        running["loaded_at"].as_str().unwrap().ends_with('Z'),
        "{policy}"
    );
    // An empty reload without policy.path swaps in the embedded build again.
    let (code, answer) = agent.reload(Vec::new()).await;
    assert_eq!(
        (code, &answer["status"]),
        (200, &json!("swapped")),
        "{answer}"
    );
    assert_eq!(
        agent.get("/policy").await["previous"]["sha256"],
        running["sha256"]
    );
}

fn check_config(path: &std::path::Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_citus-ha"))
        .arg("check-config")
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn run_check_config_names_every_problem() {
    warm_embedded_policy();
    let dir = tempfile::tempdir().unwrap();
    let dcs = dir.path().join("dcs.json");
    std::fs::write(&dcs, initial_cluster().to_string()).unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        format!(
            "name: coord1\ncitus: {{group: 0, database: citus}}\npostgresql: {{connect_address: '10.0.0.1:5432'}}\ndcs: {{file: dcs.json}}\npolicy: {{cache_dir: {}}}\n",
            policy_cache().display()
        ),
    )
    .unwrap();
    let (code, out) = check_config(&good);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("OK") && out.contains("coord1"), "{out}");

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "name: coord1\ncitus: {group: -1, database: citus}\npostgresql: {connect_address: nohost}\n\
         restapi: {listen: '127.0.0.1:8008', authentication: {username: a}}\nloop_wait: 0\n\
         dcs: {file: missing.json}\npolicy: {max_memory_mb: 0}\nbootstrap: {}\n",
    )
    .unwrap();
    let (code, out) = check_config(&bad);
    assert_eq!(code, 1, "{out}");
    for path in [
        "citus.group",
        "postgresql.connect_address",
        "restapi.authentication.password",
        "loop_wait",
        "policy.max_memory_mb",
        "bootstrap",
        "dcs.file",
    ] {
        assert!(
            out.contains(&format!(": {path}: ")),
            "{path} missing from:\n{out}"
        );
    }
    assert!(out.trim_end().ends_with("7 problems"), "{out}");

    // A DCS file that does not parse is a problem of dcs.file.
    std::fs::write(&dcs, "{\"workers\": {\"0\": {}}}").unwrap();
    let (code, out) = check_config(&good);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("dcs.file"), "{out}");

    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, "name: coord1\ncitus: {group: 0\npostgresql: x\n").unwrap();
    let (code, out) = check_config(&broken);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("line") && out.contains("column"), "{out}");
}

/// Accepts exactly one certificate (the test's self-signed one): checks that the server
/// presents it, without a CA.
#[derive(Debug)]
struct Pinned {
    cert: Vec<u8>,
    provider: std::sync::Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_slice() {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "not the configured certificate".into(),
            ))
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// One HTTPS request with a blocking rustls client; None when the connection fails.
fn https_get(port: u16, path: &str, cert_der: &[u8]) -> Option<String> {
    use std::io::{Read, Write};
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(Pinned {
            cert: cert_der.to_vec(),
            provider,
        }))
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).ok()?;
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .ok()?;
    let mut out = String::new();
    let _ = tls.read_to_string(&mut out);
    (!out.is_empty()).then_some(out)
}

#[test]
fn run_https_when_certfile_and_keyfile_are_set() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("openssl is not available: cannot make a certificate, skipping the HTTPS test");
        return;
    }
    warm_embedded_policy();
    let der = {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::from_pem_file(&cert)
            .unwrap()
            .as_ref()
            .to_vec()
    };
    // Another member leads, so nothing connects to the (absent) coordinator database.
    let dcs = dir.path().join("dcs.json");
    std::fs::write(
        &dcs,
        cluster("coord2", g1_led_by_w1a(), g2_led_by_w2a()).to_string(),
    )
    .unwrap();
    let port = free_port();
    let config = dir.path().join("c.yaml");
    std::fs::write(
        &config,
        format!(
            "name: coord1\ncitus: {{group: 0, database: citus}}\npostgresql: {{connect_address: '10.0.0.1:5432'}}\n\
             restapi: {{listen: '127.0.0.1:{port}', certfile: server.crt, keyfile: server.key}}\n\
             dcs: {{file: dcs.json}}\npolicy: {{cache_dir: {}}}\ncoordinator: {{url: 'postgres://postgres@127.0.0.1:1/citus'}}\n",
            policy_cache().display()
        ),
    )
    .unwrap();
    let log = dir.path().join("c.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_citus-ha"))
        .args(["run", "--config"])
        .arg(&config)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    let answer = loop {
        if let Some(a) = https_get(port, "/status", &der) {
            break a;
        }
        if std::time::Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!(
                "no HTTPS answer:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    // Plain HTTP on the same port gets no HTTP answer.
    let plain = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let _ = s.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains(r#""leader":false"#) && answer.contains(r#""dcs_leader":"coord2""#),
        "{answer}"
    );
    assert!(!plain.contains("200 OK"), "{plain}");
}
