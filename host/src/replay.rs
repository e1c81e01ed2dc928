//! `citus-ha replay`: drives the policy through a scenario with a simulated clock, through the
//! same agent, policy and session code that `run` uses, and prints every statement.

use crate::agent::{Agent, Identity};
use crate::policy::{Functions, PolicyEngine, WasmHandler};
use crate::scenario::{ScenarioError, Step};
use crate::session::faults::FaultySession;
use crate::session::pg::{PgSession, SessionLimits};
use crate::session::sim::{from_row, SimSession};
use crate::session::MetadataSession;
use citus_ha_policy::dcs::ClusterView;
use citus_ha_policy::node::PgDistRow;
use citus_ha_policy::{EventOutcome, Statement, StatementResult};
use serde_json::json;
use std::io::Write;

/// Why a replay could not run (exit status 2 for a malformed scenario).
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{0}")]
    Scenario(#[from] ScenarioError),
    #[error("{0}")]
    Other(#[from] anyhow::Error),
}

fn q(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialise")
}

/// The documented output line for a statement and its result.
pub fn statement_line(stmt: &Statement, result: &StatementResult) -> String {
    let mut line = match stmt {
        Statement::LoadMetadata => r#"{"op":"load_metadata""#.to_string(),
        Statement::Begin => r#"{"op":"begin""#.to_string(),
        Statement::Commit => r#"{"op":"commit""#.to_string(),
        Statement::Rollback => r#"{"op":"rollback""#.to_string(),
        Statement::AddNode {
            host,
            port,
            groupid,
            role,
        } => format!(
            r#"{{"op":"add_node","host":{},"port":{port},"groupid":{groupid},"role":"{}""#,
            q(host),
            role.as_str()
        ),
        Statement::UpdateNode {
            nodeid,
            host,
            port,
            force,
            cooldown_ms,
        } => format!(
            r#"{{"op":"update_node","nodeid":{nodeid},"host":{},"port":{port},"force":{force},"cooldown_ms":{cooldown_ms}"#,
            q(host)
        ),
        Statement::RemoveNode { host, port } => {
            format!(r#"{{"op":"remove_node","host":{},"port":{port}"#, q(host))
        }
    };
    match result {
        StatementResult::Failed(e) => line.push_str(&format!(r#","error":{}}}"#, q(&e.message))),
        StatementResult::RolledBack => line.push_str(r#","error":"COMMIT answered ROLLBACK"}"#),
        _ => line.push('}'),
    }
    line
}

/// The `final` line: rows sorted by nodeid.
pub fn final_line(rows: &[PgDistRow]) -> String {
    let mut rows = rows.to_vec();
    rows.sort_by_key(|r| r.nodeid);
    let rows: Vec<_> = rows
        .iter()
        .map(|r| {
            json!([
                r.nodeid,
                r.groupid,
                r.nodename,
                r.nodeport,
                r.noderole.as_str()
            ])
        })
        .collect();
    format!(
        r#"{{"final":{}}}"#,
        serde_json::to_string(&rows).expect("rows serialise")
    )
}

fn note(out: &mut dyn Write, text: &str) -> std::io::Result<()> {
    writeln!(out, r#"{{"note":{}}}"#, q(text))
}

/// Runs a parsed scenario. With `db`, against that server (no `metadata` steps allowed).
pub async fn replay(
    steps: &[(usize, Step)],
    engine: &PolicyEngine,
    policy_bytes: &[u8],
    db: Option<(&str, SessionLimits)>,
    out: &mut dyn Write,
) -> Result<(), ReplayError> {
    if db.is_some() {
        if let Some((line, _)) = steps.iter().find(|(_, s)| matches!(s, Step::Metadata(_))) {
            return Err(ScenarioError {
                line: *line,
                message: "a `metadata` step only works with the simulator, not with --db".into(),
            }
            .into());
        }
    }
    let loaded = engine
        .load(policy_bytes, "policy")
        .map_err(anyhow::Error::msg)?;
    let (
        line,
        Step::Config {
            citus,
            name,
            conn_url,
        },
    ) = &steps[0]
    else {
        unreachable!("parse_scenario guarantees a leading config");
    };
    let mut functions = loaded.functions().map_err(anyhow::Error::from)?;
    let config = functions
        .validate_config(&citus.to_string())
        .map_err(anyhow::Error::from)?
        .map_err(|e| ScenarioError {
            line: *line,
            message: format!("invalid config: {e}"),
        })?;
    let identity = Identity {
        config: config.clone(),
        name: name.clone(),
        connect_url: conn_url.clone(),
    };
    let policy: WasmHandler = loaded
        .new_handler(&config, name, conn_url)
        .map_err(anyhow::Error::from)?;
    match db {
        None => {
            let session = FaultySession::new(SimSession::default());
            let mut agent = Agent::new(policy, identity, session);
            drive(&mut agent, steps, engine, out, |s, rows| {
                s.inner
                    .sim
                    .replace_rows(rows.iter().map(from_row).collect())
            })
            .await
        }
        Some((url, limits)) => {
            let session = FaultySession::new(PgSession::new(url, false, limits)?);
            let mut agent = Agent::new(policy, identity, session);
            drive(&mut agent, steps, engine, out, |_, _| {
                unreachable!("metadata steps are refused with --db")
            })
            .await
        }
    }
}

async fn drive<S: MetadataSession>(
    agent: &mut Agent<FaultySession<S>>,
    steps: &[(usize, Step)],
    engine: &PolicyEngine,
    out: &mut dyn Write,
    mut set_rows: impl FnMut(&mut FaultySession<S>, &[PgDistRow]),
) -> Result<(), ReplayError> {
    let mut now: u64 = 0;
    // What a swap's warm-up hands the candidate: the view of the last sync or event.
    let mut last_view: Option<&ClusterView> = None;
    let io = |e: std::io::Error| ReplayError::Other(e.into());
    for (line, step) in &steps[1..] {
        if let Step::Event { cluster, .. } = step {
            last_view = Some(cluster);
        }
        let trapped = match step {
            Step::Config { .. } => unreachable!("only first"),
            Step::Metadata(rows) => {
                set_rows(&mut agent.session, rows);
                Ok(())
            }
            Step::Sync(view) => {
                last_view = Some(view);
                agent.heartbeat(now, view).await
            }
            Step::Event { cluster, event } => match agent.event(now, cluster, event).await {
                Ok(Err(invalid)) => {
                    note(out, &format!("line {line}: event refused: {invalid}")).map_err(io)?;
                    Ok(())
                }
                Ok(Ok(EventOutcome::Discarded(why))) => {
                    eprintln!("line {line}: event discarded: {why}");
                    Ok(())
                }
                Ok(Ok(_)) => Ok(()),
                Err(e) => Err(e),
            },
            Step::Run => {
                let mut lines = Vec::new();
                let r = agent
                    .run_turn(now, |s, r| lines.push(statement_line(s, r)))
                    .await;
                for l in lines {
                    writeln!(out, "{l}").map_err(io)?;
                }
                r
            }
            Step::Advance { ms } => {
                now += ms;
                Ok(())
            }
            Step::Fail { kind, error } => {
                agent.session.arm(kind, error);
                Ok(())
            }
            Step::Demote => agent.demote().await,
            Step::Rebuild => agent.schedule_reload().await,
            Step::Swap { path } => {
                let swapped = match std::fs::read(path) {
                    Err(e) => Err(format!("cannot read {}: {e}", path.display())),
                    Ok(bytes) => match engine.load(&bytes, &path.display().to_string()) {
                        Err(e) => Err(e),
                        Ok(candidate) => agent
                            .swap(candidate, last_view.map(|v| (now, v)))
                            .await
                            .map_err(|e| e.to_string()),
                    },
                };
                if let Err(e) = swapped {
                    note(out, &format!("line {line}: swap refused: {e}")).map_err(io)?;
                }
                Ok(())
            }
        };
        if let Err(e) = trapped {
            note(out, &format!("line {line}: {e}")).map_err(io)?;
        }
    }
    let rows = agent.session.rows().await?;
    writeln!(out, "{}", final_line(&rows)).map_err(io)?;
    Ok(())
}
