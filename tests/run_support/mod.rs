//! Shared by the `run_*` integration tests: a real PostgreSQL 15 with the Citus emulation, a
//! DCS file the test rewrites, and `citus-ha run` started as a separate process and driven
//! over HTTP. Every wait polls with a deadline; nothing sleeps for a fixed long time.
#![allow(dead_code)]

use citus_ha_pg_harness::PgServer;
use serde_json::{json, Value};
use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio_postgres::Client;

/// Compiled policy artifacts, shared by the tests (compiling in a debug build is slow).
pub fn policy_cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("run-policy-cache")
}

/// Compiles `bytes` into [`policy_cache`] unless it is there already, so that the agents
/// (and their swaps) load it from the cache instead of each compiling it, slowly, in a debug
/// build and all at once. Returns how long it took.
pub fn warm_policy_cache_blocking(bytes: &[u8]) -> Duration {
    let started = std::time::Instant::now();
    let engine = citus_ha::policy::PolicyEngine::new(
        citus_ha::policy::PolicyLimits::default(),
        Some(policy_cache()),
    )
    .expect("policy engine");
    engine.load(bytes, "warm-up").expect("the policy loads");
    started.elapsed()
}

/// [`warm_policy_cache_blocking`] off the async workers.
pub async fn warm_policy_cache(bytes: Vec<u8>) -> Duration {
    tokio::task::spawn_blocking(move || warm_policy_cache_blocking(&bytes))
        .await
        .unwrap()
}

/// The embedded build, compiled once per test process (the other tests wait for it).
pub fn warm_embedded_policy() {
    static WARM: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    WARM.get_or_init(|| {
        warm_policy_cache_blocking(citus_ha::EMBEDDED_POLICY);
    });
}

/// How long any single wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(30);

/// Standard cluster: coordinator coord1 (10.0.0.1) with replica coord2 (10.0.0.2); worker
/// group 1 w1a (10.0.1.1) + w1b (10.0.1.2); group 2 w2a (10.0.2.1) + w2b (10.0.2.2).
pub fn member(name: &str, host: &str, role: &str) -> Value {
    json!({"name": name, "conn_url": format!("postgres://{host}:5432/postgres"),
           "role": role, "state": "running"})
}

pub fn group(leader: &str, members: Vec<Value>) -> Value {
    json!({"leader": leader, "members": members})
}

pub fn cluster(coord_leader: &str, g1: Value, g2: Value) -> Value {
    let role = |n: &str| {
        if n == coord_leader {
            "primary"
        } else {
            "replica"
        }
    };
    json!({"leader": coord_leader,
           "members": [member("coord1", "10.0.0.1", role("coord1")),
                       member("coord2", "10.0.0.2", role("coord2"))],
           "workers": {"1": g1, "2": g2}})
}

pub fn g1_led_by_w1a() -> Value {
    group(
        "w1a",
        vec![
            member("w1a", "10.0.1.1", "primary"),
            member("w1b", "10.0.1.2", "replica"),
        ],
    )
}

pub fn g1_led_by_w1b() -> Value {
    group(
        "w1b",
        vec![
            member("w1a", "10.0.1.1", "replica"),
            member("w1b", "10.0.1.2", "primary"),
        ],
    )
}

pub fn g2_led_by_w2a() -> Value {
    group(
        "w2a",
        vec![
            member("w2a", "10.0.2.1", "primary"),
            member("w2b", "10.0.2.2", "replica"),
        ],
    )
}

pub fn initial_cluster() -> Value {
    cluster("coord1", g1_led_by_w1a(), g2_led_by_w2a())
}

pub fn before_demote(group: i32, leader: &str, timeout: u64) -> Value {
    json!({"type": "before_demote", "group": group, "leader": leader, "timeout": timeout, "cooldown": 10})
}

pub fn after_promote(group: i32, leader: &str) -> Value {
    json!({"type": "after_promote", "group": group, "leader": leader, "timeout": 30, "cooldown": 10})
}

/// A PostgreSQL server with the `citus` database, statement logging on (so tests can count
/// what citus-ha sent), a client of the test's own, and a directory for configs.
pub struct Env {
    pub pg: PgServer,
    pub db: Client,
    pub dir: tempfile::TempDir,
    pub dcs: PathBuf,
}

impl Env {
    pub async fn start() -> Env {
        tokio::task::spawn_blocking(warm_embedded_policy)
            .await
            .unwrap();
        let pg = PgServer::start().expect("start PostgreSQL");
        pg.create_citus_database("citus")
            .await
            .expect("citus database");
        let admin = pg.connect("postgres").await.expect("connect");
        // One statement per call: ALTER SYSTEM refuses to run in a multi-statement batch.
        for sql in [
            "ALTER SYSTEM SET log_statement = 'all'",
            "ALTER SYSTEM SET log_line_prefix = '%m [%p] %a '",
            "SELECT pg_reload_conf()",
        ] {
            admin.batch_execute(sql).await.expect("statement logging");
        }
        let db = pg.connect("citus").await.expect("connect citus");
        let dir = tempfile::tempdir().expect("tempdir");
        let dcs = dir.path().join("dcs.json");
        let env = Env { pg, db, dir, dcs };
        env.write_dcs(&initial_cluster());
        env
    }

    /// Replaces the DCS file atomically (the agent polls it; a half-written file is never seen).
    pub fn write_dcs(&self, view: &Value) {
        let tmp = self.dir.path().join("dcs.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(view).unwrap()).unwrap();
        std::fs::rename(&tmp, &self.dcs).unwrap();
    }

    /// A config for member `name` published at `address`, whose metadata session goes to this
    /// server. `extra` YAML is appended; a `loop_wait:`, `ttl:`, `restapi:`, `policy:` or
    /// `coordinator:` in it replaces the default (loop_wait 1 s, ttl 30 s, this server).
    pub fn config(&self, name: &str, address: &str, port: u16, extra: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{name}.yaml"));
        let mut text = format!(
            "name: {name}\n\
             citus: {{group: 0, database: citus}}\n\
             postgresql: {{connect_address: '{address}'}}\n\
             dcs: {{file: {}}}\n",
            self.dcs.display(),
        );
        if !extra.contains("coordinator:") {
            text.push_str(&format!(
                "coordinator: {{url: '{}'}}\n",
                self.pg.url("citus")
            ));
        }
        if !extra.contains("ttl:") {
            text.push_str("ttl: 30\n");
        }
        if !extra.contains("loop_wait:") {
            text.push_str("loop_wait: 1\n");
        }
        if !extra.contains("restapi:") {
            text.push_str(&format!("restapi: {{listen: '127.0.0.1:{port}'}}\n"));
        }
        if !extra.contains("policy:") {
            text.push_str(&format!(
                "policy: {{cache_dir: {}}}\n",
                policy_cache().display()
            ));
        }
        text.push_str(extra);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Bytes of the server log so far: count statements after this point with [`Env::sent_since`].
    pub fn log_mark(&self) -> u64 {
        std::fs::metadata(self.pg.log_path())
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// Lines the server logged for citus-ha's sessions since `mark` (simple-protocol
    /// statements as `statement: BEGIN`, bound ones as `execute ...: SELECT ...`).
    pub fn sent_since(&self, mark: u64) -> Vec<String> {
        let text = std::fs::read(self.pg.log_path()).unwrap_or_default();
        let text = String::from_utf8_lossy(&text[(mark as usize).min(text.len())..]).into_owned();
        text.lines()
            .filter(|l| {
                l.contains(" citus-ha LOG:  statement: ") || l.contains(" citus-ha LOG:  execute ")
            })
            .map(|l| l.to_string())
            .collect()
    }

    /// citus_update_node calls citus-ha sent since `mark` outside a BEGIN..COMMIT of their own
    /// session (an update must never run autocommitted in place of the transaction that was
    /// to hold the pause).
    pub fn updates_outside_transactions(&self, mark: u64) -> Vec<String> {
        let mut open: std::collections::HashMap<String, bool> = Default::default();
        let mut outside = Vec::new();
        for l in self.sent_since(mark) {
            let pid = l
                .split_once('[')
                .and_then(|(_, r)| r.split_once(']'))
                .map(|(p, _)| p.to_string())
                .unwrap_or_default();
            if l.contains("statement: BEGIN") {
                open.insert(pid, true);
            } else if l.contains("statement: COMMIT") || l.contains("statement: ROLLBACK") {
                open.insert(pid, false);
            } else if l.contains("citus_update_node") && !open.get(&pid).copied().unwrap_or(false) {
                outside.push(l);
            }
        }
        outside
    }

    pub fn count_since(&self, mark: u64, needle: &str) -> usize {
        self.sent_since(mark)
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// pg_dist_node as committed: (nodeid, groupid, nodename, noderole) by nodeid.
    pub async fn rows(&self) -> Vec<(i32, i32, String, String)> {
        self.db
            .query(
                "SELECT nodeid, groupid, nodename, noderole::text FROM pg_dist_node ORDER BY nodeid",
                &[],
            )
            .await
            .expect("read pg_dist_node")
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect()
    }

    /// The committed nodename of `group`'s primary row.
    pub async fn primary(&self, group: i32) -> Option<(i32, String)> {
        self.db
            .query_opt(
                "SELECT nodeid, nodename FROM pg_dist_node WHERE groupid = $1 AND noderole = 'primary'",
                &[&group],
            )
            .await
            .expect("read pg_dist_node")
            .map(|r| (r.get(0), r.get(1)))
    }

    /// citus-ha's sessions on the server: (pid, state, xact_start as text).
    pub async fn agent_sessions(&self) -> Vec<(i32, String, Option<String>)> {
        self.db
            .query(
                "SELECT pid, coalesce(state, ''), xact_start::text FROM pg_stat_activity
                 WHERE application_name = 'citus-ha' ORDER BY pid",
                &[],
            )
            .await
            .expect("read pg_stat_activity")
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    }

    /// The one citus-ha session that is idle in transaction, if any.
    pub async fn open_transaction(&self) -> Option<(i32, String)> {
        self.agent_sessions()
            .await
            .into_iter()
            .find(|(_, s, _)| s == "idle in transaction")
            .map(|(pid, _, x)| (pid, x.unwrap_or_default()))
    }

    /// Tries to write to group `g`'s shard stand-in with a short lock timeout: false when the
    /// write is blocked (the group is paused).
    pub async fn can_write_group(&self, g: i32) -> bool {
        let c = self.pg.connect("citus").await.expect("connect");
        c.batch_execute("SET lock_timeout = '300ms'").await.unwrap();
        let sql = format!("INSERT INTO citus_emulation.shard_{g} VALUES (1, 'probe')");
        match c.batch_execute(&sql).await {
            Ok(()) => true,
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
                false
            }
            Err(e) => panic!("{sql}: {}", citus_ha_pg_harness::pg_error_text(&e)),
        }
    }

    /// Waits until the standard cluster is registered (6 rows, nothing demoted, no open
    /// transaction) and returns the rows.
    pub async fn wait_registered(&self) -> Vec<(i32, i32, String, String)> {
        eventually("the standard cluster is registered", || async {
            let rows = self.rows().await;
            let want = [
                (0, "10.0.0.1", "primary"),
                (0, "10.0.0.2", "secondary"),
                (1, "10.0.1.1", "primary"),
                (1, "10.0.1.2", "secondary"),
                (2, "10.0.2.1", "primary"),
                (2, "10.0.2.2", "secondary"),
            ];
            let ok = rows.len() == want.len()
                && want
                    .iter()
                    .all(|(g, h, r)| rows.iter().any(|x| x.1 == *g && x.2 == *h && x.3 == *r));
            (ok && self.open_transaction().await.is_none()).then_some(rows)
        })
        .await
    }
}

/// Polls `f` until it returns Some, for at most [`WAIT`].
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `citus-ha run` process.
pub struct Agent {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
    pub http: reqwest::Client,
    auth: Option<(String, String)>,
}

impl Agent {
    /// Starts `citus-ha run --config` and waits until its REST API answers.
    pub async fn start(config: &Path, port: u16) -> Agent {
        let log = config.with_extension("log");
        let child = Command::new(env!("CARGO_BIN_EXE_citus-ha"))
            .arg("run")
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start citus-ha");
        let mut agent = Agent {
            child,
            port,
            log,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            auth: None,
        };
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = agent.child.try_wait().unwrap() {
                panic!("citus-ha exited ({status}):\n{}", agent.log_text());
            }
            if agent.http.get(agent.url("/status")).send().await.is_ok() {
                return agent;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "citus-ha did not serve:\n{}",
                agent.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn with_auth(mut self, user: &str, password: &str) -> Self {
        self.auth = Some((user.into(), password.into()));
        self
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits at most `limit` for the process to exit on its own; its status if it did.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process's resident memory, from /proc.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .expect("VmRSS")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.post(self.url(path));
        match &self.auth {
            Some((u, p)) => r.basic_auth(u, Some(p)),
            None => r,
        }
    }

    /// POSTs a worker event as a Patroni worker does; returns the HTTP status and JSON answer.
    pub async fn event(&self, body: &Value) -> (u16, Value) {
        self.event_raw(body.to_string()).await
    }

    pub async fn event_raw(&self, body: String) -> (u16, Value) {
        let r = self
            .post("/citus")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("POST /citus");
        let code = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        (
            code,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn reload(&self, body: Vec<u8>) -> (u16, Value) {
        let r = self
            .post("/policy/reload")
            .body(body)
            .send()
            .await
            .expect("POST /policy/reload");
        let code = r.status().as_u16();
        (code, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> Value {
        self.http
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    pub async fn status(&self) -> Value {
        self.get("/status").await
    }

    /// Waits for the next heartbeat after now (so a DCS change made before was seen).
    pub async fn next_heartbeat(&self) {
        let seen = self.status().await["heartbeats"].as_u64().unwrap();
        eventually("a heartbeat", || async {
            (self.status().await["heartbeats"].as_u64().unwrap() > seen).then_some(())
        })
        .await
    }

    /// Waits until the agent has read the DCS again (leader or not), so a change made before
    /// was seen.
    pub async fn next_dcs_read(&self) {
        let seen = self.status().await["dcs_reads"].as_u64().unwrap();
        eventually("a DCS read", || async {
            (self.status().await["dcs_reads"].as_u64().unwrap() > seen).then_some(())
        })
        .await
    }

    /// Waits until the agent does (or does not) lead the coordinator group.
    pub async fn wait_leader(&self, leads: bool) {
        eventually(&format!("leader == {leads}"), || async {
            (self.status().await["leader"] == json!(leads)).then_some(())
        })
        .await
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- citus-ha log ({}) ----\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}

/// Starts the standard setup: the environment, coord1 leading, the cluster registered.
pub async fn standard() -> (Env, Agent) {
    standard_with("").await
}

/// [`standard`] with `extra` config (see [`Env::config`]).
pub async fn standard_with(extra: &str) -> (Env, Agent) {
    let env = Env::start().await;
    let port = free_port();
    let config = env.config("coord1", "10.0.0.1:5432", port, extra);
    let agent = Agent::start(&config, port).await;
    agent.wait_leader(true).await;
    env.wait_registered().await;
    (env, agent)
}
