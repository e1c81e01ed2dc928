//! The cold-start child: `citus-ha bench --cold-start-child` loads the embedded policy the way
//! `run` does (engine, precompiled artifact from the cache), makes its first decision and exits.
//! The parent times it from spawn to exit.

use super::fixtures::{config, view, CONNECT_URL, NAME};
use crate::policy::{Handler, PolicyEngine, PolicyLimits};
use crate::session::sim::SimSession;
use crate::session::statement_kind;
use citus_ha_policy::Statement;
use std::process::ExitCode;

/// What the child prints before the first statement it decided on.
pub const FIRST_DECISION: &str = "first-decision ";

/// Load, one heartbeat, then the turn until the policy decides its first `citus_add_node`.
pub fn cold_start_child() -> ExitCode {
    match child() {
        Ok(kind) => {
            println!("{FIRST_DECISION}{kind}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("citus-ha bench --cold-start-child: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn child() -> anyhow::Result<&'static str> {
    let engine = PolicyEngine::new(PolicyLimits::default(), PolicyEngine::default_cache_dir())?;
    let loaded = engine
        .load(crate::EMBEDDED_POLICY, "embedded")
        .map_err(anyhow::Error::msg)?;
    let mut p = loaded.new_handler(&config(), NAME, CONNECT_URL)?;
    p.handle_heartbeat(0, &view(1))?;
    let mut session = SimSession::default();
    loop {
        let batch = p.poll_statements(0)?;
        if batch.is_empty() {
            break;
        }
        let mut results = Vec::with_capacity(batch.len());
        for stmt in &batch {
            if matches!(stmt, Statement::AddNode { .. }) {
                return Ok(statement_kind(stmt));
            }
            let result = session.run(stmt);
            let ends = result.ends_batch();
            results.push(result);
            if ends {
                break;
            }
        }
        p.handle_results(0, results)?;
    }
    anyhow::bail!("the policy decided nothing")
}
