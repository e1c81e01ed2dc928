//! `citus-ha run` through random fault schedules against a real PostgreSQL 15 (Citus
//! emulation): connections killed mid-transaction, the server restarted or frozen, the DCS
//! file corrupted or gone past `ttl`, a trapping build offered, swaps mid-switchover, floods
//! of events with random timeouts, while the topology changes. After every schedule, and
//! all through it, the invariants hold:
//!
//! - no transaction of citus-ha stays open longer than its deadline plus one loop turn;
//! - no change is lost: pg_dist_node follows the DCS within two heartbeats (plus Citus's
//!   one-second sync window) after the faults stop;
//! - the process never exits on its own and answers `/status` within 1 s;
//! - SIGTERM ends it within 2 s, whatever it is doing.
//!
//! `CITUS_HA_FAULT_SCHEDULES` (default 50) and `CITUS_HA_FAULT_SEED` choose the run; a
//! failure names the seed and the schedule.

#[path = "run_support/mod.rs"]
mod support;

use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

const GROUPS: i32 = 3;
/// loop_wait 1 s, ttl 2 s, max_pause 2 s, retry_timeout 1 s: every bound is short.
const LOOP: Duration = Duration::from_secs(1);
const MAX_PAUSE: Duration = Duration::from_secs(2);
const TTL: Duration = Duration::from_secs(2);

/// A pause of `lo..=hi` milliseconds.
fn millis(rng: &mut Pcg64, lo: u64, hi: u64) -> Duration {
    Duration::from_millis(rng.random_range(lo..=hi))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    KillBackend,
    RestartServer,
    FreezeServer,
    CorruptDcs,
    SilentDcs,
    TrappingBuild,
    SwapMidSwitchover,
    EventFlood,
    SwitchoverWithEvents,
    FailoverFromDcs,
}

const FAULTS: &[Fault] = &[
    Fault::KillBackend,
    Fault::RestartServer,
    Fault::FreezeServer,
    Fault::CorruptDcs,
    Fault::SilentDcs,
    Fault::TrappingBuild,
    Fault::SwapMidSwitchover,
    Fault::EventFlood,
];

/// Which member leads each worker group ('a' or 'b'); both always run.
#[derive(Clone)]
struct Topology(BTreeMap<i32, char>);

impl Topology {
    fn host(g: i32, m: char) -> String {
        format!("10.0.{g}.{}", if m == 'a' { 1 } else { 2 })
    }
    fn other(m: char) -> char {
        if m == 'a' {
            'b'
        } else {
            'a'
        }
    }
    fn dcs(&self) -> Value {
        let mut workers = serde_json::Map::new();
        for (g, lead) in &self.0 {
            let members = ['a', 'b']
                .iter()
                .map(|m| {
                    let role = if m == lead { "primary" } else { "replica" };
                    member(&format!("w{g}{m}"), &Self::host(*g, *m), role)
                })
                .collect();
            workers.insert(g.to_string(), group(&format!("w{g}{lead}"), members));
        }
        json!({"leader": "coord1", "members": [member("coord1", "10.0.0.1", "primary")],
               "workers": workers})
    }
    /// pg_dist_node once converged: (groupid, host, role), sorted.
    fn rows(&self) -> Vec<(i32, String, String)> {
        let mut rows = vec![(0, "10.0.0.1".to_string(), "primary".to_string())];
        for (g, lead) in &self.0 {
            rows.push((*g, Self::host(*g, *lead), "primary".into()));
            rows.push((*g, Self::host(*g, Self::other(*lead)), "secondary".into()));
        }
        rows.sort();
        rows
    }
}

/// What the monitor saw while a schedule ran.
#[derive(Default)]
struct Seen {
    violations: Vec<String>,
    slowest_status: Duration,
    longest_transaction: Duration,
}

/// Samples the agent and the server every 150 ms until told to stop.
fn monitor(
    port: u16,
    pid: u32,
    pg_url: String,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Seen> {
    tokio::spawn(async move {
        let mut seen = Seen::default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .build()
            .unwrap();
        let mut db: Option<tokio_postgres::Client> = None;
        let txn_bound = MAX_PAUSE + LOOP + Duration::from_millis(500);
        while !stop.load(Ordering::Relaxed) {
            let asked = Instant::now();
            match http
                .get(format!("http://127.0.0.1:{port}/status"))
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => {}
                other => seen.violations.push(format!("/status failed: {other:?}")),
            }
            let took = asked.elapsed();
            seen.slowest_status = seen.slowest_status.max(took);
            if took > Duration::from_secs(1) {
                seen.violations.push(format!("/status took {took:?}"));
            }
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if state.is_empty() || state.contains(") Z ") {
                seen.violations.push("the agent exited on its own".into());
                break;
            }
            if db.as_ref().is_none_or(|c| c.is_closed()) {
                db = match tokio_postgres::connect(&pg_url, tokio_postgres::NoTls).await {
                    Ok((c, conn)) => {
                        tokio::spawn(conn);
                        Some(c)
                    }
                    Err(_) => None, // restarting
                };
            }
            if let Some(c) = &db {
                let q = "SELECT coalesce(extract(epoch FROM now() - xact_start), 0)::float8
                         FROM pg_stat_activity WHERE application_name = 'citus-ha'
                         AND state LIKE 'idle in transaction%'";
                if let Ok(rows) = c.query(q, &[]).await {
                    for r in rows {
                        let age = Duration::from_secs_f64(r.get::<_, f64>(0).max(0.0));
                        seen.longest_transaction = seen.longest_transaction.max(age);
                        if age > txn_bound {
                            seen.violations
                                .push(format!("a transaction open for {age:?}"));
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        seen
    })
}

/// SIGCONT on drop, so a failing schedule never leaves the server frozen.
struct Frozen(Vec<u32>);
impl Frozen {
    fn new(pids: Vec<u32>) -> Self {
        for p in &pids {
            signal(*p, "STOP");
        }
        Frozen(pids)
    }
}
impl Drop for Frozen {
    fn drop(&mut self) {
        for p in &self.0 {
            signal(*p, "CONT");
        }
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

async fn agent_backends(pg_url: &str) -> Vec<u32> {
    let Ok((c, conn)) = tokio_postgres::connect(pg_url, tokio_postgres::NoTls).await else {
        return Vec::new();
    };
    tokio::spawn(conn);
    c.query(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'citus-ha'",
        &[],
    )
    .await
    .map(|rows| rows.iter().map(|r| r.get::<_, i32>(0) as u32).collect())
    .unwrap_or_default()
}

async fn rows_now(pg_url: &str) -> Option<Vec<(i32, String, String)>> {
    let (c, conn) = tokio_postgres::connect(pg_url, tokio_postgres::NoTls)
        .await
        .ok()?;
    tokio::spawn(conn);
    let mut rows: Vec<(i32, String, String)> = c
        .query(
            "SELECT groupid, nodename, noderole::text FROM pg_dist_node",
            &[],
        )
        .await
        .ok()?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    rows.sort();
    Some(rows)
}

fn config(env: &Env, port: u16) -> std::path::PathBuf {
    env.config(
        "coord1",
        "10.0.0.1:5432",
        port,
        &format!(
            "ttl: 2\nmax_pause: 2\nretry_timeout: 1\n\
             restapi: {{listen: '127.0.0.1:{port}', request_timeout: 2}}\n\
             policy: {{cache_dir: {}, call_timeout_ms: 1000}}\n",
            policy_cache().display()
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_fault_schedules_keep_every_invariant() {
    let schedules: u64 = std::env::var("CITUS_HA_FAULT_SCHEDULES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let seed: u64 = std::env::var("CITUS_HA_FAULT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let trapping = tokio::task::spawn_blocking(|| {
        citus_ha_guest_build::policy_variant("fault-trap-heartbeat").expect("test build")
    })
    .await
    .unwrap();
    let trapping = std::fs::read(trapping).unwrap();

    let mut env = Env::start().await;
    let pg_url = env.pg.url("citus");
    let mut topology = Topology((1..=GROUPS).map(|g| (g, 'a')).collect());
    env.write_dcs(&topology.dcs());
    let port = free_port();
    let cfg = config(&env, port);
    let mut agent = Agent::start(&cfg, port).await;
    agent.wait_leader(true).await;

    let mut counts: BTreeMap<Fault, u64> = BTreeMap::new();
    let (mut slowest_status, mut longest_txn, mut slowest_convergence) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut stops = 0;
    let mut max_stop = Duration::ZERO;
    for s in 0..schedules {
        let schedule_seed = seed.wrapping_mul(1_000_003).wrapping_add(s);
        let mut rng = Pcg64::seed_from_u64(schedule_seed);
        let context = format!("seed {seed}, schedule {s} (CITUS_HA_FAULT_SEED={seed})");
        // Converged before the faults start, so what follows is this schedule's doing.
        converge(&pg_url, &topology, Duration::from_secs(15), &context).await;
        let stop = Arc::new(AtomicBool::new(false));
        let watch = monitor(port, agent.pid(), pg_url.clone(), stop.clone());
        let mut faults: Vec<Fault> = (0..1 + rng.random_range(0..3))
            .map(|_| FAULTS[rng.random_range(0..FAULTS.len() as u64) as usize])
            .collect();
        faults.push(if rng.random_range(0..2) == 0 {
            Fault::SwitchoverWithEvents
        } else {
            Fault::FailoverFromDcs
        });
        let log = Arc::new(Mutex::new(Vec::<String>::new()));
        for f in &faults {
            *counts.entry(*f).or_default() += 1;
            log.lock().unwrap().push(format!("{f:?}"));
            match f {
                Fault::KillBackend => {
                    let c = env.pg.connect("citus").await.ok();
                    if let Some(c) = c {
                        let _ = c
                            .execute(
                                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'citus-ha'",
                                &[],
                            )
                            .await;
                    }
                }
                Fault::RestartServer => {
                    let pg = &mut env.pg;
                    tokio::task::block_in_place(|| pg.restart()).expect("restart");
                }
                Fault::FreezeServer => {
                    let mut pids = agent_backends(&pg_url).await;
                    pids.extend(env.pg.postmaster_pid());
                    let frozen = Frozen::new(pids);
                    tokio::time::sleep(millis(&mut rng, 200, 900)).await;
                    drop(frozen);
                }
                Fault::CorruptDcs => {
                    std::fs::write(&env.dcs, b"{\"leader\": \"coord1\", \"workers\": [").unwrap();
                    tokio::time::sleep(millis(&mut rng, 200, 1200)).await;
                    env.write_dcs(&topology.dcs());
                }
                Fault::SilentDcs => {
                    let hidden = env.dir.path().join("dcs.hidden");
                    std::fs::rename(&env.dcs, &hidden).unwrap();
                    tokio::time::sleep(TTL + millis(&mut rng, 300, 900)).await;
                    std::fs::rename(&hidden, &env.dcs).unwrap();
                }
                Fault::TrappingBuild => {
                    let (code, answer) = agent.reload(trapping.clone()).await;
                    assert_eq!(code, 422, "{context}: a trapping build was taken: {answer}");
                }
                Fault::SwapMidSwitchover => {
                    let g = 1 + rng.random_range(0..GROUPS as u64) as i32;
                    let lead = topology.0[&g];
                    let (_, _) = agent
                        .event(&before_demote(g, &format!("w{g}{lead}"), 2))
                        .await;
                    let (code, answer) = agent.reload(Vec::new()).await;
                    assert_eq!(code, 200, "{context}: {answer}");
                }
                Fault::EventFlood => {
                    let n = 5 + rng.random_range(0..20);
                    let mut bodies = Vec::new();
                    for _ in 0..n {
                        let g = 1 + rng.random_range(0..GROUPS as u64) as i32;
                        let who = if rng.random_range(0..2) == 0 {
                            'a'
                        } else {
                            'b'
                        };
                        let timeout = 0.05 + rng.random_range(0..1500) as f64 / 1000.0;
                        let kind = ["before_demote", "after_promote", "before_promote", "bogus"]
                            [rng.random_range(0..4) as usize];
                        bodies.push(
                            json!({"type": kind, "group": g, "leader": format!("w{g}{who}"),
                                           "timeout": timeout, "cooldown": 1}),
                        );
                    }
                    let agent = &agent;
                    futures::future::join_all(bodies.iter().map(|b| agent.event(b))).await;
                }
                Fault::SwitchoverWithEvents => {
                    let g = 1 + rng.random_range(0..GROUPS as u64) as i32;
                    let old = topology.0[&g];
                    let new = Topology::other(old);
                    let _ = agent
                        .event(&before_demote(g, &format!("w{g}{old}"), 2))
                        .await;
                    topology.0.insert(g, new);
                    env.write_dcs(&topology.dcs());
                    let _ = agent.event(&after_promote(g, &format!("w{g}{new}"))).await;
                }
                Fault::FailoverFromDcs => {
                    let g = 1 + rng.random_range(0..GROUPS as u64) as i32;
                    let new = Topology::other(topology.0[&g]);
                    topology.0.insert(g, new);
                    env.write_dcs(&topology.dcs());
                }
            }
        }
        let context = format!("{context}, faults {:?}", log.lock().unwrap());
        // The faults have stopped: the DCS is readable and the server up.
        env.write_dcs(&topology.dcs());
        let converged = converge(
            &pg_url,
            &topology,
            2 * LOOP + Duration::from_secs(3),
            &context,
        )
        .await;
        slowest_convergence = slowest_convergence.max(converged);
        stop.store(true, Ordering::Relaxed);
        let seen = watch.await.unwrap();
        assert!(
            seen.violations.is_empty(),
            "{context}: {:#?}",
            seen.violations
        );
        slowest_status = slowest_status.max(seen.slowest_status);
        longest_txn = longest_txn.max(seen.longest_transaction);

        // Every tenth schedule (and the last) ends with SIGTERM in the middle of a pause.
        if s % 10 == 9 || s + 1 == schedules {
            let lead = topology.0[&1];
            let body = before_demote(1, &format!("w1{lead}"), 2);
            let _ = tokio::time::timeout(Duration::from_millis(300), agent.event(&body)).await;
            agent.signal("TERM");
            let asked = Instant::now();
            let exited = tokio::task::block_in_place(|| agent.wait_exit(Duration::from_secs(2)));
            assert!(
                exited.is_some(),
                "{context}: SIGTERM did not end it within 2 s"
            );
            max_stop = max_stop.max(asked.elapsed());
            stops += 1;
            agent = Agent::start(&cfg, port).await;
            agent.wait_leader(true).await;
        }
    }
    let injected: u64 = counts.values().sum();
    println!(
        "fault suite: {schedules} schedules (seed {seed}), {injected} faults injected {counts:?}; \
         0 invariant failures; slowest convergence {slowest_convergence:?}, slowest /status \
         {slowest_status:?}, longest transaction {longest_txn:?}, {stops} SIGTERMs (slowest {max_stop:?})"
    );
}

/// Waits until pg_dist_node matches `topology` with no transaction open; how long it took.
async fn converge(pg_url: &str, topology: &Topology, limit: Duration, context: &str) -> Duration {
    let started = Instant::now();
    let want = topology.rows();
    let mut last = None;
    while started.elapsed() < limit {
        let rows = rows_now(pg_url).await;
        if rows.as_ref() == Some(&want) && agent_in_transaction(pg_url).await == Some(false) {
            return started.elapsed();
        }
        last = rows;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{context}: pg_dist_node did not follow the DCS within {limit:?}:\nwant {want:?}\ngot  {last:?}");
}

async fn agent_in_transaction(pg_url: &str) -> Option<bool> {
    let (c, conn) = tokio_postgres::connect(pg_url, tokio_postgres::NoTls)
        .await
        .ok()?;
    tokio::spawn(conn);
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'citus-ha' AND state LIKE 'idle in transaction%'",
            &[],
        )
        .await
        .ok()?
        .get(0);
    Some(n > 0)
}
