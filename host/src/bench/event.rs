//! `event_to_statement`: a worker's `before_demote` over HTTP on loopback to the `-demoted`
//! update arriving at a real PostgreSQL.
//!
//! Runs this binary's `citus-ha run` (the real service: REST API, owner loop, Wasm policy,
//! tokio-postgres metadata session) against `--db`, with a DCS file of one worker group, and
//! times `POST /citus` `before_demote` from the first byte sent to the last byte of the answer.
//! The service answers a `before_demote` only once the pause is in place (the task's BEGIN and
//! `citus_update_node(..., '<host>-demoted', ...)` have run and PostgreSQL has answered), so the
//! figure bounds the arrival of the update from above by the answer's way back (a loopback
//! write). Each sample is undone by an `after_promote` from the same leader (untimed), which
//! renames the row back and commits.

use super::Line;
use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LEADER: &str = "w1a";

fn member(name: &str, host: &str, role: &str) -> Value {
    json!({"name": name, "conn_url": format!("postgres://{host}:5432/postgres"),
           "role": role, "state": "running"})
}

fn dcs() -> Value {
    json!({
        "leader": "coord1",
        "members": [member("coord1", "10.0.0.1", "primary"), member("coord2", "10.0.0.2", "replica")],
        "workers": {"1": {"leader": LEADER, "members": [
            member(LEADER, "10.0.1.1", "primary"), member("w1b", "10.0.1.2", "replica")]}}
    })
}

/// The service child; stopped (by its own pid) when the measurement ends, however it ends.
struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn write_config(dir: &Path, db: &str, port: u16, cache: &Path) -> anyhow::Result<PathBuf> {
    let dcs_path = dir.join("dcs.json");
    std::fs::write(&dcs_path, serde_json::to_vec_pretty(&dcs())?)?;
    let path = dir.join("citus-ha.yaml");
    let q = |s: &str| serde_json::to_string(s).expect("a string");
    let text = format!(
        "name: coord1\n\
         citus: {{group: 0, database: citus}}\n\
         postgresql: {{connect_address: '10.0.0.1:5432'}}\n\
         ttl: 30\n\
         loop_wait: 1\n\
         dcs: {{file: {}}}\n\
         coordinator: {{url: {}}}\n\
         restapi: {{listen: '127.0.0.1:{port}'}}\n\
         policy: {{cache_dir: {}}}\n",
        q(&dcs_path.display().to_string()),
        q(db),
        q(&cache.display().to_string()),
    );
    std::fs::write(&path, text)?;
    Ok(path)
}

/// One HTTP/1.1 POST on a kept-alive connection: (status, body).
async fn post(stream: &mut TcpStream, path: &str, body: &str) -> anyhow::Result<(u16, String)> {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).await?;
    let mut buf: Vec<u8> = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("the service closed the connection");
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())
                .flatten()
        })
        .context("no content-length in the answer")?;
    while buf.len() < head_end + len {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("the service closed the connection");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok((
        status,
        String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string(),
    ))
}

fn event(kind: &str) -> String {
    json!({"type": kind, "group": 1, "leader": LEADER, "timeout": 30, "cooldown": 10}).to_string()
}

/// The committed name of group 1's primary row, if the service registered it yet.
async fn primary_of_group_1(db: &str) -> anyhow::Result<Option<String>> {
    let (client, conn) = tokio_postgres::connect(db, tokio_postgres::NoTls).await?;
    let task = tokio::spawn(conn);
    let row = client
        .query_opt(
            "SELECT nodename FROM pg_catalog.pg_dist_node WHERE groupid = 1 AND noderole = 'primary'",
            &[],
        )
        .await?;
    drop(client);
    let _ = task.await;
    Ok(row.map(|r| r.get(0)))
}

pub(super) async fn event_to_statement(
    db: &str,
    quick: bool,
    cache: &Path,
) -> anyhow::Result<Line> {
    let dir = TempDir(std::env::temp_dir().join(format!("citus-ha-e2s-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0)?;
    let port = free_port()?;
    let config = write_config(&dir.0, db, port, cache)?;
    let log = std::fs::File::create(dir.0.join("service.log"))?;
    let _service = Service(
        Command::new(std::env::current_exe()?)
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot start `citus-ha run`")?,
    );
    let service_log = || std::fs::read_to_string(dir.0.join("service.log")).unwrap_or_default();
    // Up: the REST API answers and the heartbeat has registered group 1.
    let t0 = Instant::now();
    let mut stream = loop {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port)).await {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(20) {
            bail!("`citus-ha run` did not start listening:\n{}", service_log());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    stream.set_nodelay(true)?;
    loop {
        if primary_of_group_1(db).await?.as_deref() == Some("10.0.1.1") {
            break;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            bail!("group 1 never appeared in pg_dist_node:\n{}", service_log());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (demote, promote) = (event("before_demote"), event("after_promote"));
    let cycle = async |stream: &mut TcpStream| -> anyhow::Result<Duration> {
        let t = Instant::now();
        let (code, answer) = post(stream, "/citus", &demote).await?;
        let d = t.elapsed();
        let status = serde_json::from_str::<Value>(&answer)
            .ok()
            .and_then(|v| v["status"].as_str().map(str::to_string));
        if code != 200 || status.as_deref() != Some("paused") {
            bail!("before_demote answered {code} {answer}");
        }
        let (code, answer) = post(stream, "/citus", &promote).await?;
        if code != 200 {
            bail!("after_promote answered {code} {answer}");
        }
        Ok(d)
    };
    // Warm-up, and proof that the pause really is applied and undone.
    for _ in 0..5 {
        cycle(&mut stream).await?;
    }
    let n = if quick { 50 } else { 500 };
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        samples.push(cycle(&mut stream).await?.as_nanos() as f64);
    }
    // Every pause was undone (after_promote commits the original name back).
    tokio::time::sleep(Duration::from_millis(50)).await;
    let name = primary_of_group_1(db).await?;
    if name.as_deref() != Some("10.0.1.1") {
        bail!("group 1's primary row ended as {name:?}");
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    let p = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    let mut line = Line::new("event_to_statement");
    line.wasm = Some(super::harness::stats(samples.clone()));
    Ok(line
        .with("p50_ns", super::round1(p(0.5)))
        .with("p99_ns", super::round1(p(0.99)))
        .with("clock", "wall, HTTP round trip"))
}
