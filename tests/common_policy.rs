//! Shared set-up for tests that drive the agent directly with the simulator, or the
//! `citus-ha replay` binary. Each test binary uses a part of it.
#![allow(dead_code)]

use citus_ha::agent::{Agent, Identity};
use citus_ha::dcs::file::parse_cluster_text;
use citus_ha::policy::{PolicyEngine, PolicyLimits};
use citus_ha::session::sim::SimSession;
use citus_ha_policy::dcs::ClusterView;
use citus_ha_policy::{CitusConfig, Statement};
use citus_sim::{NodeRole, Row, Simulator};
use std::time::Duration;

pub fn identity() -> Identity {
    Identity {
        config: CitusConfig {
            group: 0,
            database: "citus".into(),
        },
        name: "coord1".into(),
        connect_url: "postgres://10.0.0.1:5432/postgres".into(),
    }
}

pub fn engine(call_timeout_ms: u64) -> PolicyEngine {
    PolicyEngine::new(
        PolicyLimits {
            call_timeout: Duration::from_millis(call_timeout_ms),
            max_memory_bytes: 64 << 20,
        },
        // Compiling a component in a debug build takes seconds; the artifact cache is keyed by
        // the component's hash and the engine's settings, so sharing it is safe.
        Some(citus_ha_guest_build::workspace_dir().join("target/wasm-cache")),
    )
    .unwrap()
}

/// A test build of the policy (`citus_ha_guest_build::policy_variant`) loaded into `engine`.
pub fn load_variant(engine: &PolicyEngine, features: &str) -> citus_ha::policy::LoadedPolicy {
    let path = citus_ha_guest_build::policy_variant(features).unwrap();
    engine
        .load(&std::fs::read(path).unwrap(), features)
        .unwrap()
}

/// coord1 with groups 1 and 2, each a primary and a running replica.
pub fn view(group1_leader: &str) -> ClusterView {
    let (p1, r1, p1ip, r1ip) = if group1_leader == "w1a" {
        ("w1a", "w1b", "10.0.1.1", "10.0.1.2")
    } else {
        ("w1b", "w1a", "10.0.1.2", "10.0.1.1")
    };
    parse_cluster_text(
        &format!(
            r#"{{"leader":"coord1","members":[{{"name":"coord1","conn_url":"postgres://10.0.0.1:5432/postgres","role":"primary","state":"running"}}],
            "workers":{{"1":{{"leader":"{p1}","members":[
                {{"name":"{p1}","conn_url":"postgres://{p1ip}:5432/postgres","role":"primary","state":"running"}},
                {{"name":"{r1}","conn_url":"postgres://{r1ip}:5432/postgres","role":"replica","state":"running"}}]}},
              "2":{{"leader":"w2a","members":[
                {{"name":"w2a","conn_url":"postgres://10.0.2.1:5432/postgres","role":"primary","state":"running"}},
                {{"name":"w2b","conn_url":"postgres://10.0.2.2:5432/postgres","role":"replica","state":"running"}}]}}}}}}"#
        ),
        "test view",
    )
    .unwrap()
}

pub fn steady_sim() -> Simulator {
    let mut sim = Simulator::new();
    let row = |nodeid, groupid, host: &str, role| Row {
        nodeid,
        groupid,
        nodename: host.into(),
        nodeport: 5432,
        noderole: role,
    };
    sim.replace_rows(vec![
        row(1, 0, "10.0.0.1", NodeRole::Primary),
        row(2, 1, "10.0.1.1", NodeRole::Primary),
        row(3, 1, "10.0.1.2", NodeRole::Secondary),
        row(4, 2, "10.0.2.1", NodeRole::Primary),
        row(5, 2, "10.0.2.2", NodeRole::Secondary),
    ]);
    sim
}

pub async fn turn(agent: &mut Agent<SimSession>, now: u64) -> Vec<Statement> {
    let mut seen = Vec::new();
    agent
        .run_turn(now, |s, _| seen.push(s.clone()))
        .await
        .expect("turn");
    seen
}

pub fn event(kind: &str, leader: &str) -> String {
    format!(r#"{{"type":"{kind}","group":1,"leader":"{leader}","timeout":30,"cooldown":10}}"#)
}

/// `citus-ha ARGS...`: its stdout, after asserting it succeeded (stderr in the message).
pub fn citus_ha<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_citus-ha"))
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `citus-ha replay FILE EXTRA...`: its stdout, after asserting it succeeded.
pub fn replay(file: &std::path::Path, extra: &[&str]) -> String {
    let mut args = vec![std::ffi::OsStr::new("replay"), file.as_os_str()];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    citus_ha(&args)
}
