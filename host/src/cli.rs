//! The command line: one binary, a subcommand per job.

use crate::policy::{PolicyEngine, PolicyLimits};
use crate::replay::{replay, ReplayError};
use crate::scenario::parse_scenario;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "citus-ha",
    version,
    about = "Keeps Citus's pg_dist_node in step with the HA manager's view, through a sandboxed policy component"
)]
pub struct Cli {
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true)]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Play a scripted worker switchover and coordinator failover against the in-memory
    /// simulator and print the timeline: who paused, which statements ran, how long writes
    /// waited. Needs no server.
    Demo,
    /// Print a PostgreSQL parameter set (JSON or YAML mapping, from FILE or stdin) adjusted for
    /// Citus by the policy: citus first in shared_preload_libraries, prepared transactions,
    /// wal_level=logical, citus.local_hostname.
    Gucs {
        /// The parameters; `-` or nothing reads stdin.
        file: Option<PathBuf>,
        /// The host Citus uses to reach the local server (default localhost).
        #[arg(long)]
        local_host: Option<String>,
    },
    /// Prepare this node's database for Citus (idempotent): create the Citus database, CREATE
    /// EXTENSION citus, the pg_dist_authinfo row for the superuser and, on the coordinator,
    /// citus_set_coordinator_host. Uses the `run` config file.
    Bootstrap {
        /// The YAML config file of `run`.
        #[arg(long)]
        config: PathBuf,
    },
    /// Replay a scenario (JSON Lines, see docs/scenario-format.md) and print every statement
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
        /// With --db: seconds to wait for a connection or for any statement's answer (a
        /// forced update gets its cooldown on top) before counting the session as lost.
        #[arg(long, default_value_t = 10.0, value_parser = positive_seconds)]
        db_timeout: f64,
    },
    /// Run the coordinator-side agent: keep pg_dist_node in step with the DCS and serve the
    /// worker events of the REST API.
    ///
    /// Acts only while the DCS coordinator group's leader is this node's `name`. Endpoints:
    /// POST /citus and /mpp (worker events, as Patroni workers send them), GET /policy,
    /// POST /policy/reload (empty body: re-read policy.path; or the .wasm as body), GET /status,
    /// GET /metrics. SIGHUP and a change of policy.path also swap the policy in place.
    ///
    /// Without --config: the in-memory simulator and a bundled example cluster (coordinator
    /// coord1, worker groups 1 and 2 with leaders w1a and w2a) on 127.0.0.1:8008. Try:
    ///
    ///   curl -XPOST localhost:8008/citus -d '{"type":"before_demote","group":1,"leader":"w1a","timeout":30,"cooldown":10}'
    Run {
        /// The YAML config file (see `check-config --help` for its fields).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Check a `run` config file and print every problem with its field path (exit 1), or a
    /// one-line summary (exit 0).
    ///
    /// Fields (Patroni's names): name; citus {group, database}; postgresql {connect_address
    /// "host:port" or conn_url, database, authentication.superuser {username, password, sslcert,
    /// sslkey}, sslmode}; restapi {listen (127.0.0.1:8008), authentication {username, password},
    /// certfile, keyfile, request_timeout (10), max_connections (128)}; loop_wait (10), ttl (30,
    /// at least loop_wait), retry_timeout (10: the bound of every coordinator connect and
    /// statement), max_pause (2 x ttl: the longest pause an event gets); dcs {file}, or
    /// scope, namespace (/service/) and etcd3 {host | hosts, protocol, username, password,
    /// cacert, cert, key};
    /// policy {path (embedded), call_timeout_ms (2000), max_memory_mb (256), cache_dir};
    /// coordinator {url} (default: built from postgresql.* with the citus database).
    CheckConfig {
        /// The YAML config file.
        file: PathBuf,
    },
    /// Measure every policy operation through the Wasm component and natively, in one run.
    ///
    /// Prints each operation's median time both ways and the ratio (warm-up first, then the
    /// median of many samples), plus the policy swap, the cold start, the guest's peak memory at
    /// 10000 worker groups and this process's peak RSS. See BENCHMARKS.md.
    Bench {
        /// A smoke run: fewer samples (under a minute, no database needed).
        #[arg(long)]
        quick: bool,
        /// One JSON object per line: {"bench", "wasm_ns", "native_ns", "ratio"}.
        #[arg(long)]
        json: bool,
        /// PostgreSQL (with Citus or the CI emulation) for event_to_statement.
        #[arg(long)]
        db: Option<String>,
        /// Only the operations whose name contains this (for profiling one of them).
        #[arg(long, hide = true)]
        only: Option<String>,
        /// The Wasm side runs this component instead of the embedded one (to compare builds
        /// or contracts in one sitting; the native side is always this binary's).
        #[arg(long, hide = true)]
        policy: Option<PathBuf>,
        /// Internal: the child process that `cold_start` times.
        #[arg(long, hide = true)]
        cold_start_child: bool,
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
    let code = rt.block_on(async move {
        match cli.command {
            Command::Replay {
                file,
                db,
                policy,
                db_timeout,
            } => {
                let limits = crate::session::pg::SessionLimits {
                    connect: std::time::Duration::from_secs_f64(db_timeout),
                    statement: std::time::Duration::from_secs_f64(db_timeout),
                };
                run_replay(file, db.map(|url| (url, limits)), policy).await
            }
            Command::Demo => match crate::demo::play().await {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("citus-ha demo: {e:#}");
                    ExitCode::from(1)
                }
            },
            Command::Gucs { file, local_host } => {
                crate::ops::gucs_command(file.as_deref(), local_host.as_deref())
            }
            Command::Bootstrap { config } => crate::ops::bootstrap_command(&config).await,
            Command::Run { config } => crate::service::run_command(config).await,
            Command::CheckConfig { file } => crate::config::check_config_command(&file),
            Command::Bench {
                cold_start_child: true,
                ..
            } => crate::bench::cold_start_child(),
            Command::Bench {
                quick,
                json,
                db,
                only,
                policy,
                ..
            } => {
                let args = crate::bench::BenchArgs {
                    quick,
                    json,
                    db,
                    only,
                    policy,
                };
                crate::bench::run(args).await
            }
        }
    });
    // A blocking task (a compile, a stuck read) must not hold the exit.
    rt.shutdown_timeout(std::time::Duration::from_millis(500));
    code
}

fn policy_bytes(path: Option<&PathBuf>) -> Result<Vec<u8>, String> {
    match path {
        None => Ok(crate::EMBEDDED_POLICY.to_vec()),
        Some(p) => std::fs::read(p).map_err(|e| format!("cannot read policy {}: {e}", p.display())),
    }
}

fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 86_400.0 => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds from 0 to 86400")),
    }
}

async fn run_replay(
    file: PathBuf,
    db: Option<(String, crate::session::pg::SessionLimits)>,
    policy: Option<PathBuf>,
) -> ExitCode {
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
    let engine = match PolicyEngine::new(PolicyLimits::default(), PolicyEngine::default_cache_dir())
    {
        Ok(e) => e,
        Err(e) => {
            eprintln!("citus-ha replay: {e}");
            return ExitCode::from(1);
        }
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let db = db.as_ref().map(|(url, limits)| (url.as_str(), *limits));
    match replay(&steps, &engine, &bytes, db, &mut out).await {
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
