//! The command line: one binary, a subcommand per job.

use crate::policy::{PolicyEngine, PolicyLimits};
use crate::replay::{replay, ReplayError};
use crate::scenario::parse_scenario;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "citus-ha", version, about = "Keeps Citus's pg_dist_node in step with the HA manager's view, through a sandboxed policy component")]
pub struct Cli {
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true)]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Replay a scenario (JSON Lines, see shared/scenario-format.md) and print every statement
    /// the coordinator would receive, then the final pg_dist_node.
    ///
    /// Steps: config (first), metadata, sync, event, run, advance, fail, demote, rebuild, and
    /// the citus-ha extension {"op":"swap","path":"component.wasm"}. Example:
    ///
    ///   {"op":"config","citus":{"group":0,"database":"citus"},"name":"c1","conn_url":"postgres://10.0.0.1:5432/postgres"}
    ///   {"op":"sync","cluster":{"leader":"c1","members":[...],"workers":{"1":{"leader":"w1a","members":[...]}}}}
    ///   {"op":"run"}
    ///
    /// Output: one JSON line per statement ({"op":"add_node",...}), then {"final":[[nodeid,groupid,"host",port,"role"],...]}.
    /// Exit status 2 names the line of a malformed scenario.
    Replay {
        /// The scenario file.
        file: PathBuf,
        /// Run against this PostgreSQL (with Citus or the CI emulation) instead of the simulator.
        #[arg(long)]
        db: Option<String>,
        /// Use this policy component instead of the embedded one.
        #[arg(long)]
        policy: Option<PathBuf>,
    },
}

pub fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        let _ = builder.json().try_init();
    } else {
        let _ = builder.try_init();
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_json);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        match cli.command {
            Command::Replay { file, db, policy } => run_replay(file, db, policy).await,
        }
    })
}

fn policy_bytes(path: Option<&PathBuf>) -> Result<Vec<u8>, String> {
    match path {
        None => Ok(crate::EMBEDDED_POLICY.to_vec()),
        Some(p) => std::fs::read(p).map_err(|e| format!("cannot read policy {}: {e}", p.display())),
    }
}

async fn run_replay(file: PathBuf, db: Option<String>, policy: Option<PathBuf>) -> ExitCode {
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("citus-ha replay: cannot read {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let steps = match parse_scenario(&text) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("citus-ha replay: {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let bytes = match policy_bytes(policy.as_ref()) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("citus-ha replay: {e}");
            return ExitCode::from(1);
        }
    };
    let engine = match PolicyEngine::new(PolicyLimits::default(), PolicyEngine::default_cache_dir()) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("citus-ha replay: {e}");
            return ExitCode::from(1);
        }
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match replay(&steps, &engine, &bytes, db.as_deref(), &mut out).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(ReplayError::Scenario(e)) => {
            eprintln!("citus-ha replay: {}: {e}", file.display());
            ExitCode::from(2)
        }
        Err(ReplayError::Other(e)) => {
            eprintln!("citus-ha replay: {e:#}");
            ExitCode::from(1)
        }
    }
}
