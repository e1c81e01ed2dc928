//! `citus-ha demo`: a scripted worker switchover and a coordinator failover against the
//! in-memory simulator, told as a timeline a newcomer can follow. It uses the same agent,
//! embedded policy component and session code as `run`; only the clock is simulated.

use crate::agent::{Agent, Identity};
use crate::dcs::file::parse_cluster_text;
use crate::policy::{PolicyEngine, PolicyLimits};
use crate::session::sim::SimSession;
use citus_ha_policy::dcs::ClusterView;
use citus_ha_policy::{CitusConfig, EventOutcome, Statement, StatementResult};
use std::fmt::Write as _;

/// The demo's cluster: coordinator `coord`, group 1 led by `g1` (the other is its replica),
/// group 2 with w2a and w2b.
fn cluster(coord: &str, g1: &str, w1a_state: &str) -> ClusterView {
    let (c_other, c_other_ip) = if coord == "coord1" {
        ("coord2", "10.0.0.2")
    } else {
        ("coord1", "10.0.0.1")
    };
    let c_ip = if coord == "coord1" {
        "10.0.0.1"
    } else {
        "10.0.0.2"
    };
    let (g1_other, g1_ip, g1_other_ip) = if g1 == "w1a" {
        ("w1b", "10.0.1.1", "10.0.1.2")
    } else {
        ("w1a", "10.0.1.2", "10.0.1.1")
    };
    let yaml = format!(
        r#"
leader: {coord}
members:
  - {{name: {coord}, conn_url: "postgres://{c_ip}:5432/postgres", role: primary, state: running}}
  - {{name: {c_other}, conn_url: "postgres://{c_other_ip}:5432/postgres", role: replica, state: running}}
workers:
  "1":
    leader: {g1}
    members:
      - {{name: {g1}, conn_url: "postgres://{g1_ip}:5432/postgres", role: primary, state: running}}
      - {{name: {g1_other}, conn_url: "postgres://{g1_other_ip}:5432/postgres", role: replica, state: {w1a_state}}}
  "2":
    leader: w2a
    members:
      - {{name: w2a, conn_url: "postgres://10.0.2.1:5432/postgres", role: primary, state: running}}
      - {{name: w2b, conn_url: "postgres://10.0.2.2:5432/postgres", role: replica, state: running}}
"#
    );
    parse_cluster_text(&yaml, "demo cluster").expect("the demo's cluster parses")
}

/// A statement as SQL-ish text a DBA recognises.
pub fn describe(s: &Statement, r: &StatementResult) -> String {
    let mut text = match s {
        Statement::LoadMetadata => "SELECT ... FROM pg_dist_node".to_string(),
        Statement::Begin => "BEGIN".into(),
        Statement::Commit => "COMMIT".into(),
        Statement::Rollback => "ROLLBACK".into(),
        Statement::AddNode {
            host,
            port,
            groupid,
            role,
        } => {
            format!(
                "citus_add_node('{host}', {port}, {groupid}, '{}')",
                role.as_str()
            )
        }
        Statement::UpdateNode {
            nodeid,
            host,
            port,
            cooldown_ms,
            ..
        } => {
            format!("citus_update_node({nodeid}, '{host}', {port}, force => true, lock_cooldown => {cooldown_ms})")
        }
        Statement::RemoveNode { host, port } => format!("citus_remove_node('{host}', {port})"),
    };
    match r {
        StatementResult::Added(id) => {
            let _ = write!(text, " = {id}");
        }
        StatementResult::Failed(e) => {
            let _ = write!(text, "  FAILED: {}", e.message);
        }
        StatementResult::Metadata(rows) => {
            let _ = write!(text, "  ({} rows)", rows.len());
        }
        _ => {}
    }
    text
}

struct Timeline {
    out: String,
    /// A `-demoted` update is in the open transaction: writes to that group wait.
    paused: bool,
}

impl Timeline {
    fn say(&mut self, now: u64, what: &str) {
        let _ = writeln!(self.out, "t={:>7.3}s  {what}", now as f64 / 1000.0);
    }
    fn detail(&mut self, what: &str) {
        let _ = writeln!(self.out, "            {what}");
    }
    fn scene(&mut self, title: &str) {
        let _ = writeln!(self.out, "\n== {title} ==");
    }
}

async fn turn(
    agent: &mut Agent<SimSession>,
    now: u64,
    t: &mut Timeline,
) -> anyhow::Result<Vec<Statement>> {
    let mut lines = Vec::new();
    let mut stmts = Vec::new();
    let paused = &mut t.paused;
    agent
        .run_turn(now, |s, r| {
            let mut line = describe(s, r);
            match s {
                Statement::UpdateNode { host, .. } if host.ends_with("-demoted") => {
                    *paused = true;
                    line.push_str("   <- writes to this group now wait (paused, not failed)");
                }
                Statement::Commit if *paused => {
                    *paused = false;
                    line.push_str("   <- the paused writes resume against the new address");
                }
                Statement::Rollback if *paused => {
                    *paused = false;
                    line.push_str("   <- the paused writes resume against the old address");
                }
                _ => {}
            }
            lines.push(line);
            stmts.push(s.clone());
        })
        .await?;
    for l in lines {
        t.detail(&format!("-> {l}"));
    }
    Ok(stmts)
}

/// Group 1's `leader` POSTs a `kind` event to /citus, as a Patroni worker does.
async fn event(
    agent: &mut Agent<SimSession>,
    now: u64,
    view: &ClusterView,
    kind: &str,
    leader: &str,
    t: &mut Timeline,
) -> anyhow::Result<()> {
    let body = serde_json::json!({"type": kind, "group": 1, "leader": leader, "timeout": 30, "cooldown": 10});
    let outcome = agent.event(now, view, &body.to_string()).await?;
    t.say(now, &format!("{leader} POSTs /citus {kind}"));
    match outcome {
        Ok(EventOutcome::Queued(_)) => {}
        Ok(other) => t.detail(&format!("policy: {other:?}")),
        Err(e) => t.detail(&format!("refused: {e}")),
    }
    Ok(())
}

fn table(agent: &Agent<SimSession>, t: &mut Timeline) {
    t.detail("pg_dist_node:");
    for r in agent.session.sim.rows() {
        t.detail(&format!(
            "  nodeid {:>2}  group {}  {:<12} {:<5} {}",
            r.nodeid,
            r.groupid,
            r.nodename,
            r.nodeport,
            r.noderole.as_str()
        ));
    }
}

/// Plays the demo and returns the timeline.
pub async fn play() -> anyhow::Result<String> {
    let engine = PolicyEngine::new(PolicyLimits::default(), PolicyEngine::default_cache_dir())?;
    let loaded = engine
        .load(crate::EMBEDDED_POLICY, "embedded")
        .map_err(anyhow::Error::msg)?;
    let config = CitusConfig {
        group: 0,
        database: "citus".into(),
    };
    let mut t = Timeline {
        out: String::new(),
        paused: false,
    };
    let mut functions = loaded.functions()?;
    let _ = writeln!(
        t.out,
        "citus-ha demo: {} (WIT contract {}, sha256 {}…) against the in-memory Citus simulator",
        crate::policy::Functions::policy_version(&mut functions)?,
        loaded.contract,
        &loaded.hash[..12]
    );
    let coord1 = Identity {
        config: config.clone(),
        name: "coord1".into(),
        connect_url: "postgres://10.0.0.1:5432/postgres".into(),
    };
    let policy = loaded.new_handler(&coord1.config, &coord1.name, &coord1.connect_url)?;
    let mut a1 = Agent::new(policy, coord1, SimSession::default());
    let mut now = 0;

    t.scene("A new cluster: the coordinator registers every node on its first heartbeat");
    t.say(
        now,
        "heartbeat (coord1 leads; groups 1 and 2 each have a primary and a replica)",
    );
    a1.heartbeat(now, &cluster("coord1", "w1a", "running"))
        .await?;
    turn(&mut a1, now, &mut t).await?;
    table(&a1, &mut t);

    t.scene("Planned switchover of worker group 1: w1a -> w1b, client writes paused, not failed");
    now += 10_000;
    let before = cluster("coord1", "w1a", "running");
    event(&mut a1, now, &before, "before_demote", "w1a", &mut t).await?;
    let paused_at = now;
    turn(&mut a1, now, &mut t).await?;
    if !a1.poll_completed().await?.is_empty() {
        t.detail("before_demote answered: the pause is in place, w1a may shut down");
    }
    now += 2_500;
    let during = cluster("coord1", "w1b", "stopped");
    event(&mut a1, now, &during, "before_promote", "w1b", &mut t).await?;
    turn(&mut a1, now, &mut t).await?;
    now += 500;
    t.say(
        now,
        "heartbeat during the switchover: held back until the workers report",
    );
    a1.heartbeat(now, &during).await?;
    turn(&mut a1, now, &mut t).await?;
    now += 700;
    let after = cluster("coord1", "w1b", "running");
    event(&mut a1, now, &after, "after_promote", "w1b", &mut t).await?;
    turn(&mut a1, now, &mut t).await?;
    t.detail(&format!(
        "writes to group 1 were paused for {:.3} s (simulated); none failed",
        (now - paused_at) as f64 / 1000.0
    ));
    table(&a1, &mut t);

    t.scene("Coordinator failover: coord1 fails, coord2 is promoted and takes over pg_dist_node");
    now += 20_000;
    t.say(
        now,
        "coord1 is demoted: its metadata session and any open transaction are gone",
    );
    a1.demote().await?;
    let data = std::mem::take(&mut a1.session.sim);
    let coord2 = Identity {
        config,
        name: "coord2".into(),
        connect_url: "postgres://10.0.0.2:5432/postgres".into(),
    };
    let policy = loaded.new_handler(&coord2.config, &coord2.name, &coord2.connect_url)?;
    let mut a2 = Agent::new(policy, coord2, SimSession::new(data));
    now += 5_000;
    t.say(
        now,
        "coord2's first heartbeat as leader (coord1 now a stopped replica)",
    );
    let mut v = cluster("coord2", "w1b", "running");
    for m in &mut v.coordinator.members {
        if m.name == "coord1" {
            m.state = Some("stopped".into());
        }
    }
    a2.heartbeat(now, &v).await?;
    turn(&mut a2, now, &mut t).await?;
    now += 10_000;
    t.say(
        now,
        "coord1 comes back as a replica: it becomes the coordinator's read replica",
    );
    a2.heartbeat(now, &cluster("coord2", "w1b", "running"))
        .await?;
    turn(&mut a2, now, &mut t).await?;
    table(&a2, &mut t);
    let _ = writeln!(
        t.out,
        "\nTry it live: `citus-ha run` serves this cluster on 127.0.0.1:8008 (see README)."
    );
    Ok(t.out)
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn demo_tells_the_switchover_and_the_failover() {
        let text = super::play().await.unwrap();
        assert!(text.contains("'10.0.1.1-demoted'"), "{text}");
        assert!(text.contains("paused for 3.700 s"), "{text}");
        assert_eq!(text.matches("-> BEGIN").count(), 5, "{text}");
        assert_eq!(text.matches("paused writes resume").count(), 2, "{text}");
        // After the coordinator failover the group-0 primary row is coord2's.
        let last_table = text.rsplit("pg_dist_node:").next().unwrap();
        assert!(
            last_table.contains("group 0  10.0.0.2     5432  primary"),
            "{text}"
        );
        assert!(
            last_table.contains("group 0  10.0.0.1     5432  secondary"),
            "{text}"
        );
    }
}
