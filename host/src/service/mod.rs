//! `citus-ha run`: the long-running agent next to a Citus coordinator.
//!
//! One task (the *owner*) holds the [`Agent`] and its metadata session; the HTTP server, the
//! signal handlers and the policy-file watcher only send it [`Input`]s through a channel. That
//! makes every policy call and every statement strictly sequential, which the policy's
//! state machine requires, and it makes a policy swap land *between* two calls by
//! construction. The owner wakes on input, on the heartbeat (`loop_wait`), on a DCS change and
//! at the policy's own `poll_timeout`; after every wake it runs one metadata turn.
//!
//! Time is one monotonic clock, milliseconds since the service started, passed as `now` to
//! every policy call (the policy's deadlines are on this clock too).
//!
//! Leadership: the agent acts only while the DCS coordinator group's `leader` is this node's
//! `name`. Losing it demotes the policy (its session and open transaction are dropped), so a
//! node that is no longer the leader never writes pg_dist_node.

mod clock;
mod commands;
pub mod http;
mod inbox;
pub mod listener;
mod owner;
mod reload;
mod report;

pub use clock::Clock;
pub use commands::{run_command, run_embedded, run_with_config, EXAMPLE_DCS};
pub use report::{rfc3339, PolicyInfo, PolicyReport, Status, SwapReport};

use crate::agent::Agent;
use crate::dcs::DcsSource;
use crate::policy::PolicyEngine;
use crate::session::MetadataSession;
use inbox::Input;
use owner::Owner;
use reload::{spawn_signal_handlers, watch_policy_file, Reloader};
use report::Board;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// What the owner needs besides the agent, whether it came from a config file or the
/// built-in defaults.
#[derive(Clone, Debug)]
pub struct Settings {
    /// This member's DCS name (leadership is decided by it).
    pub name: String,
    /// Heartbeat period.
    pub loop_wait: Duration,
    /// How long the DCS view may go unconfirmed before this node stops acting as leader.
    pub ttl: Duration,
    /// The longest pause a `before_demote` gets (longer timeouts are clamped).
    pub max_pause: Duration,
    /// REST API address, basic-auth credentials for POSTs, and TLS certificate/key files.
    pub listen: SocketAddr,
    pub auth: Option<(String, String)>,
    pub tls: Option<(PathBuf, PathBuf)>,
    /// What one REST client may hold: time to send a request, connections at once.
    pub http_limits: listener::Limits,
    /// The configured policy file: re-read on SIGHUP, empty-bodied reloads and file changes.
    pub policy_path: Option<PathBuf>,
}

/// Runs the service until SIGTERM/SIGINT: HTTP server, signal handlers, policy watcher, owner.
/// The owner runs in this task (not spawned), so the session type need not be `Send`-provable.
pub async fn serve<S: MetadataSession, D: DcsSource>(
    settings: Settings,
    engine: Arc<PolicyEngine>,
    agent: Agent<S>,
    dcs: D,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel::<Input>(256);
    let reloader = Arc::new(Reloader {
        engine,
        path: settings.policy_path.clone(),
        tx: tx.clone(),
        refused: Arc::new(AtomicU64::new(0)),
    });
    let clock = Clock::start();
    let board = Arc::new(Board::new(clock, settings.ttl));
    let server = http::start(&settings, tx.clone(), reloader.clone(), board.clone())?;
    let stop = spawn_signal_handlers(reloader.clone())?;
    if let Some(path) = settings.policy_path.clone() {
        tokio::spawn(watch_policy_file(path, reloader.clone()));
    }
    let mut owner = Owner::new(agent, dcs, &settings, clock, board);
    owner.publish_policy();
    // The owner may be inside a statement the coordinator never answers: stopping does not
    // wait for it. The future is dropped where it stands and the session closed, so the
    // server rolls back an open transaction (a pause ends with the process, as it must).
    tokio::select! {
        _ = owner.run(rx) => {}
        signal = stop => tracing::info!(
            "{}: stopping (a statement in progress is abandoned)",
            signal.unwrap_or("signal")
        ),
    }
    owner.close().await;
    server.abort();
    Ok(())
}
