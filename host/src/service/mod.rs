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

pub mod http;
pub mod listener;

use crate::agent::{Agent, Identity};
use crate::config::Config;
use crate::dcs::configured::ConfiguredSource;
use crate::dcs::file::parse_cluster_text;
use crate::dcs::{DcsSource, SourceInfo};
use crate::policy::{LoadedPolicy, Policy, PolicyEngine, PolicyLimits};
use crate::replay::statement_line;
use crate::session::pg::{PgSession, SessionLimits};
use crate::session::sim::SimSession;
use crate::session::MetadataSession;
use citus_ha_policy::dcs::ClusterView;
use citus_ha_policy::handler::Metrics;
use citus_ha_policy::{CitusConfig, EventOutcome, InvalidInput, StatementResult};
use serde::Serialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};

/// The longest one DCS read may take: a source that hangs counts as failing.
const DCS_READ_BOUND: Duration = Duration::from_secs(2);

/// The example DCS view `citus-ha run` uses without a config: a coordinator `coord1` (group 0)
/// and two worker groups, each with a primary and a replica.
pub const EXAMPLE_DCS: &str = include_str!("../../examples/dcs.yaml");

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

/// A message to the owner task.
pub(crate) enum Input {
    /// A worker event body (already known to be JSON). With `caller_deadline` (a
    /// `before_demote`) the answer waits for its task, and the caller waits until then: the
    /// policy is told the time the caller has left when the owner takes the event up, so a
    /// pause never starts for a caller who has gone.
    Event {
        body: String,
        caller_deadline: Option<tokio::time::Instant>,
        reply: oneshot::Sender<EventAnswer>,
    },
    /// Put this (already compiled) candidate in place of the running policy.
    Swap {
        candidate: Box<LoadedPolicy>,
        origin: String,
        reply: oneshot::Sender<Result<SwapReport, String>>,
    },
}

/// The immediate answer to an event.
pub(crate) enum EventAnswer {
    /// The policy (or, when not leading, the policy crate's validator) refused the body.
    Invalid(InvalidInput),
    /// Valid, but this node is not the coordinator leader.
    Ignored(String),
    Discarded(String),
    Unchanged,
    Queued(u64),
    /// Queued; the receiver resolves when its task is done.
    Waiting(u64, oneshot::Receiver<Completion>),
    /// The policy call did not return (trap) or the service is stopping.
    Error(String),
}

/// How a waited-for event ended.
#[derive(Clone, Debug)]
pub(crate) enum Completion {
    /// Its statements ran: for `before_demote`, the pause is in place (transaction open).
    Paused,
    /// A statement of the turn that completed it failed; the transaction is gone.
    Failed(String),
    /// The task was dropped before it ran.
    Discarded(String),
}

/// A policy build as `GET /policy` reports it.
#[derive(Clone, Debug, Serialize)]
pub struct PolicyInfo {
    /// What the build says it is (`policy-version`); None if it could not be asked.
    pub version: Option<String>,
    /// The WIT contract version it was built against.
    pub contract: String,
    /// Identifies the exact bytes running, whatever their file name.
    pub sha256: String,
    /// Where it came from: a path, `embedded`, or the reload request.
    pub source: String,
    /// When this host loaded it (UTC, RFC 3339) and the same in ms since the epoch.
    pub loaded_at: String,
    pub loaded_at_unix_ms: u64,
}

/// `GET /policy`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PolicyReport {
    pub running: Option<PolicyInfo>,
    /// The build the last swap (or trap fallback) replaced: what a rollback would go back to.
    pub previous: Option<PolicyInfo>,
    /// Successful swaps and refused candidates since start.
    pub swaps: u64,
    pub refused_swaps: u64,
}

/// The answer to a successful swap.
#[derive(Clone, Debug, Serialize)]
pub struct SwapReport {
    /// The build that ran before and the one that runs now.
    pub from: Option<PolicyInfo>,
    pub to: Option<PolicyInfo>,
}

/// `GET /status` (and `/metrics` in Prometheus text).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Status {
    pub name: String,
    /// Whether this node acts on pg_dist_node now.
    pub leader: bool,
    /// The coordinator group's leader according to the last DCS view.
    pub dcs_leader: Option<String>,
    /// Why the last DCS read failed (the last good view is kept meanwhile).
    pub dcs_error: Option<String>,
    /// Which DCS source this is, and the revision its view reflects.
    pub dcs_source: SourceInfo,
    /// How long ago the source last confirmed the view (None: never).
    pub dcs_view_age_ms: Option<u64>,
    /// True while the view is older than `ttl`: this node does not act as leader then.
    pub dcs_stale: bool,
    /// Successful reads of the DCS view (leader or not).
    pub dcs_reads: u64,
    /// Heartbeats handed to the policy (only while leading).
    pub heartbeats: u64,
    /// Metadata turns run, statements sent to the coordinator and how many failed.
    pub turns: u64,
    pub statements: u64,
    pub failed_statements: u64,
    /// Policy calls that trapped (each replaced the instance).
    pub traps: u64,
    /// before_demote requests still waiting for their pause.
    pub waiting_events: usize,
    /// The service clock (the `now` every policy call gets).
    pub uptime_ms: u64,
    /// How long the metadata turn in progress has been running (None between turns): a
    /// coordinator that does not answer shows here, bounded by the statement timeouts.
    pub turn_running_ms: Option<u64>,
    pub policy: Option<PolicyInfo>,
    /// The policy's own counters (None for contract 0.1.0, which has none).
    pub metrics: Option<Metrics>,
}

/// The service clock: milliseconds since start, monotonic.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: tokio::time::Instant,
}

impl Clock {
    /// A clock whose zero is now.
    pub fn start() -> Self {
        Self {
            start: tokio::time::Instant::now(),
        }
    }
    /// Milliseconds since the start: the `now` of every policy call.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
    /// The instant of a policy time (its deadlines), to sleep until.
    pub fn instant(&self, ms: u64) -> tokio::time::Instant {
        self.start + Duration::from_millis(ms)
    }
}

/// A fixed DCS view (the bundled example): never changes.
pub struct StaticSource(pub ClusterView);

impl DcsSource for StaticSource {
    async fn snapshot(&mut self) -> anyhow::Result<ClusterView> {
        Ok(self.0.clone())
    }
    async fn changed(&mut self) {
        std::future::pending::<()>().await
    }
    fn describe(&self) -> SourceInfo {
        SourceInfo {
            kind: "static",
            location: "the bundled example DCS".into(),
            revision: None,
        }
    }
}

/// `citus-ha run --config FILE`: the real coordinator through PgSession, the DCS file.
pub async fn run_with_config(config: Config) -> anyhow::Result<()> {
    for p in config.check_environment() {
        // The DCS file may legitimately appear later (the HA manager writes it); the rest is fatal.
        if p.path == "dcs.file" {
            tracing::warn!("{p}; waiting for it");
        } else {
            anyhow::bail!("{p}");
        }
    }
    let engine = Arc::new(PolicyEngine::new(
        config.policy.limits(),
        config.policy.cache_dir.clone(),
    )?);
    let (loaded, citus) = config.load_policy(&engine).map_err(|problems| {
        anyhow::anyhow!(problems
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("; "))
    })?;
    let conninfo = config.coordinator_conninfo(&citus.database);
    let session = PgSession::new(
        &conninfo,
        Config::coordinator_tls(&conninfo),
        SessionLimits {
            connect: config.retry_timeout,
            statement: config.retry_timeout,
        },
    )?;
    let identity = Identity {
        config: citus,
        name: config.name.clone(),
        connect_url: config.member_url(),
    };
    let settings = Settings {
        name: config.name.clone(),
        loop_wait: config.loop_wait,
        ttl: config.ttl,
        max_pause: config.max_pause,
        listen: config.restapi.listen,
        auth: config.restapi.auth.clone(),
        tls: config.restapi.tls.clone(),
        http_limits: listener::Limits {
            max_connections: config.restapi.max_connections,
            header_read: config.restapi.request_timeout,
            body_read: config.restapi.request_timeout,
            handshake: config.restapi.request_timeout,
        },
        policy_path: config.policy.path.clone(),
    };
    let mut agent = new_agent(&loaded, identity, session)?;
    if config.policy.path.is_some() {
        let fallback = engine
            .load(crate::EMBEDDED_POLICY, "embedded")
            .map_err(anyhow::Error::msg)?;
        agent.set_fallback(fallback);
    }
    let dcs = ConfiguredSource::start(&config.dcs, config.ttl).map_err(anyhow::Error::msg)?;
    serve(settings, engine, agent, dcs).await
}

/// `citus-ha run` without a config: the in-memory simulator and the bundled example DCS on
/// 127.0.0.1:8008, so anyone can POST a worker event with curl and watch the statements.
pub async fn run_embedded() -> anyhow::Result<()> {
    let view = parse_cluster_text(EXAMPLE_DCS, "the bundled example DCS")?;
    let name = view
        .coordinator
        .leader
        .clone()
        .ok_or_else(|| anyhow::anyhow!("the example DCS has no coordinator leader"))?;
    let member_url = view
        .coordinator
        .leader_member()
        .and_then(|m| m.conn_url.clone())
        .ok_or_else(|| anyhow::anyhow!("the example DCS leader has no conn_url"))?;
    let engine = Arc::new(PolicyEngine::new(
        PolicyLimits::default(),
        PolicyEngine::default_cache_dir(),
    )?);
    let loaded = engine
        .load(crate::EMBEDDED_POLICY, "embedded")
        .map_err(anyhow::Error::msg)?;
    let identity = Identity {
        config: CitusConfig {
            group: 0,
            database: "citus".into(),
        },
        name: name.clone(),
        connect_url: member_url,
    };
    let settings = Settings {
        name,
        loop_wait: Duration::from_secs(10),
        ttl: Duration::from_secs(30),
        max_pause: Duration::from_secs(60),
        listen: crate::config::DEFAULT_LISTEN
            .parse()
            .expect("valid default"),
        auth: None,
        tls: None,
        http_limits: listener::Limits::default(),
        policy_path: None,
    };
    tracing::info!(
        "no --config: serving the bundled example cluster against the in-memory simulator; try\n  \
         curl -XPOST localhost:8008/citus -d '{{\"type\":\"before_demote\",\"group\":1,\"leader\":\"w1a\",\"timeout\":30,\"cooldown\":10}}'"
    );
    let agent = new_agent(&loaded, identity, SimSession::default())?;
    serve(settings, engine, agent, StaticSource(view)).await
}

/// `citus-ha run [--config FILE]`: exit status 1 with the reason when it cannot start.
pub async fn run_command(config: Option<PathBuf>) -> std::process::ExitCode {
    let r = match config {
        None => run_embedded().await,
        Some(path) => match Config::read(&path) {
            Err(errors) => {
                for p in &errors.0 {
                    eprintln!("citus-ha run: {}: {p}", path.display());
                }
                return std::process::ExitCode::from(1);
            }
            Ok(c) => run_with_config(c).await,
        },
    };
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("citus-ha run: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

fn new_agent<S: MetadataSession>(
    loaded: &LoadedPolicy,
    identity: Identity,
    session: S,
) -> anyhow::Result<Agent<S>> {
    if !identity.config.is_coordinator() {
        tracing::warn!(
            group = identity.config.group,
            "citus.group is not 0: this node is a worker, and only the coordinator keeps pg_dist_node; the agent will do nothing"
        );
    }
    let policy = loaded.new_handler(&identity.config, &identity.name, &identity.connect_url)?;
    Ok(Agent::new(policy, identity, session))
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
    if let Some(l) = owner.agent.loaded() {
        owner.versions.insert(l.hash.clone(), version_of(l));
    }
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
    if owner.leader {
        tracing::info!(
            "stopping; the metadata session closes (an open transaction is rolled back)"
        );
    }
    owner.agent.session.lose().await;
    server.abort();
    Ok(())
}

/// SIGHUP reloads the policy; SIGTERM or SIGINT resolve the returned receiver.
fn spawn_signal_handlers(
    reloader: Arc<Reloader>,
) -> anyhow::Result<oneshot::Receiver<&'static str>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the policy");
            let _ = reloader.reload(None, "SIGHUP").await;
        }
    });
    let (stop, stopped) = oneshot::channel();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        let _ = stop.send(name);
    });
    Ok(stopped)
}

/// Polls the policy file's modification time and size; a change triggers a reload.
async fn watch_policy_file(path: PathBuf, reloader: Arc<Reloader>) {
    let stamp = |p: &PathBuf| {
        std::fs::metadata(p)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())))
    };
    let mut seen = stamp(&path);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = stamp(&path);
        if now != seen && now.is_some() {
            seen = now;
            tracing::info!(path = %path.display(), "the policy file changed: reloading");
            let _ = reloader.reload(None, "policy.path changed").await;
        }
    }
}

/// Loads candidates off the owner task (compiling may take a while) and hands them to it.
pub(crate) struct Reloader {
    engine: Arc<PolicyEngine>,
    path: Option<PathBuf>,
    tx: mpsc::Sender<Input>,
    /// Refused candidates, whatever refused them (loading or the swap itself).
    pub(crate) refused: Arc<AtomicU64>,
}

impl Reloader {
    /// `body`: the .wasm itself; None re-reads policy.path (or the embedded build if there is
    /// none). Refusals are logged here, so every trigger reports them the same way.
    pub(crate) async fn reload(
        &self,
        body: Option<Vec<u8>>,
        origin: &str,
    ) -> Result<SwapReport, String> {
        let r = self.try_reload(body, origin).await;
        if let Err(e) = &r {
            self.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                origin,
                "policy reload refused, the running policy stays: {e}"
            );
        }
        r
    }

    async fn try_reload(&self, body: Option<Vec<u8>>, origin: &str) -> Result<SwapReport, String> {
        let (bytes, source) = match (body, &self.path) {
            (Some(b), _) => {
                let source = format!("{origin} ({} bytes)", b.len());
                (b, source)
            }
            (None, Some(p)) => {
                let b = tokio::fs::read(p)
                    .await
                    .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
                (b, p.display().to_string())
            }
            (None, None) => (crate::EMBEDDED_POLICY.to_vec(), "embedded".to_string()),
        };
        let engine = self.engine.clone();
        let candidate = tokio::task::spawn_blocking(move || engine.load(&bytes, &source))
            .await
            .map_err(|e| format!("loading the candidate failed: {e}"))??;
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Input::Swap {
                candidate: Box::new(candidate),
                origin: origin.to_string(),
                reply,
            })
            .await
            .map_err(|_| "the service is stopping".to_string())?;
        answer
            .await
            .map_err(|_| "the service is stopping".to_string())?
    }
}

/// The version string of a build, from a throw-away instance (kept per hash by the owner).
fn version_of(l: &LoadedPolicy) -> String {
    match l.functions().and_then(|mut f| f.version()) {
        Ok(v) => v,
        Err(e) => format!("unknown ({e})"),
    }
}

fn info(l: &LoadedPolicy, versions: &HashMap<String, String>) -> PolicyInfo {
    let unix_ms = l
        .loaded_at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    PolicyInfo {
        version: versions.get(&l.hash).cloned(),
        contract: l.contract.clone(),
        sha256: l.hash.clone(),
        source: l.source.clone(),
        loaded_at: rfc3339(l.loaded_at),
        loaded_at_unix_ms: unix_ms,
    }
}

/// UTC RFC 3339 with milliseconds, without a date-time dependency.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// What the owner last published for `GET /status` and `GET /policy`, so that those answer at
/// once even while the owner waits on the coordinator; the live parts (ages, uptime, how long
/// the current turn has run) are computed when read.
pub(crate) struct Board {
    clock: Clock,
    ttl: Duration,
    inner: std::sync::Mutex<Published>,
}

struct Published {
    status: Status,
    policy: PolicyReport,
    confirmed_at: Option<tokio::time::Instant>,
    turn_started: Option<tokio::time::Instant>,
}

impl Board {
    fn new(clock: Clock, ttl: Duration) -> Self {
        Self {
            clock,
            ttl,
            inner: std::sync::Mutex::new(Published {
                status: Status::default(),
                policy: PolicyReport::default(),
                confirmed_at: None,
                turn_started: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Published> {
        // A panic while publishing leaves plain data behind: still worth reading.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The status as of now.
    pub(crate) fn status(&self) -> Status {
        let p = self.lock();
        let mut s = p.status.clone();
        s.uptime_ms = self.clock.now();
        s.dcs_view_age_ms = p.confirmed_at.map(|t| t.elapsed().as_millis() as u64);
        s.dcs_stale = p.confirmed_at.is_none_or(|t| t.elapsed() > self.ttl);
        s.turn_running_ms = p.turn_started.map(|t| t.elapsed().as_millis() as u64);
        s
    }

    pub(crate) fn policy(&self) -> PolicyReport {
        self.lock().policy.clone()
    }
}

/// `body` (a JSON event) with its `timeout` replaced by `left`, to the millisecond (up).
fn with_timeout(body: &str, left: Duration) -> String {
    let Ok(mut v) = serde_json::from_str::<serde_json::Value>(body) else {
        return body.to_string();
    };
    let ms = left.as_millis().max(1) as f64;
    if let (Some(o), Some(n)) = (v.as_object_mut(), serde_json::Number::from_f64(ms / 1000.0)) {
        if o.contains_key("timeout") {
            o.insert("timeout".into(), serde_json::Value::Number(n));
        }
    }
    v.to_string()
}

/// Counters the owner keeps for /status.
#[derive(Default)]
struct Stats {
    dcs_reads: u64,
    heartbeats: u64,
    turns: u64,
    statements: u64,
    failed_statements: u64,
    swaps: u64,
    dcs_error: Option<String>,
}

/// The task that owns the agent; see the module documentation.
struct Owner<S, D> {
    agent: Agent<S>,
    dcs: D,
    name: String,
    loop_wait: Duration,
    clock: Clock,
    view: Option<ClusterView>,
    /// When the source last confirmed the view (a successful snapshot).
    confirmed_at: Option<tokio::time::Instant>,
    ttl: Duration,
    leader: bool,
    /// before_demote requests waiting for their ticket.
    waiters: HashMap<u64, oneshot::Sender<Completion>>,
    /// Version strings by build hash (asking needs an instance; builds do not change).
    versions: HashMap<String, String>,
    stats: Stats,
    board: Arc<Board>,
}

impl<S: MetadataSession, D: DcsSource> Owner<S, D> {
    fn new(agent: Agent<S>, dcs: D, settings: &Settings, clock: Clock, board: Arc<Board>) -> Self {
        Self {
            agent,
            dcs,
            name: settings.name.clone(),
            loop_wait: settings.loop_wait,
            clock,
            board,
            view: None,
            confirmed_at: None,
            ttl: settings.ttl,
            leader: false,
            waiters: HashMap::new(),
            versions: HashMap::new(),
            stats: Stats::default(),
        }
    }

    async fn run(&mut self, mut rx: mpsc::Receiver<Input>) {
        let mut heartbeat = tokio::time::interval(self.loop_wait);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.publish_status();
            let wake = self.wake_at().await;
            tokio::select! {
                input = rx.recv() => match input {
                    None => break,
                    Some(input) => self.handle(input).await,
                },
                _ = heartbeat.tick() => self.heartbeat(true).await,
                _ = self.dcs.changed() => self.heartbeat(true).await,
                _ = tokio::time::sleep_until(wake.unwrap_or_else(tokio::time::Instant::now)), if wake.is_some() => {}
            }
            self.board.lock().turn_started = Some(tokio::time::Instant::now());
            self.turn().await;
            self.board.lock().turn_started = None;
            self.waiters.retain(|_, w| !w.is_closed());
        }
    }

    /// When the policy wants a turn without new input (its deadlines and retries).
    async fn wake_at(&mut self) -> Option<tokio::time::Instant> {
        if !self.leader {
            return None;
        }
        match self.agent.poll_timeout().await {
            Ok(Some(ms)) => Some(self.clock.instant(ms.max(self.clock.now() + 5))),
            Ok(None) => None,
            Err(e) => {
                tracing::error!("poll_timeout: {e}");
                Some(tokio::time::Instant::now() + Duration::from_millis(100))
            }
        }
    }

    /// Re-reads the DCS, follows leadership, and (when leading) hands the view to the policy.
    /// `always`: heartbeat even if the view did not change (the loop_wait tick).
    async fn heartbeat(&mut self, always: bool) {
        let snapshot = tokio::time::timeout(DCS_READ_BOUND, self.dcs.snapshot())
            .await
            .unwrap_or_else(|_| {
                Err(anyhow::anyhow!(
                    "the DCS source did not answer within {} s",
                    DCS_READ_BOUND.as_secs_f64()
                ))
            });
        let changed = match snapshot {
            Ok(view) => {
                self.stats.dcs_reads += 1;
                self.stats.dcs_error = None;
                self.confirmed_at = Some(tokio::time::Instant::now());
                let changed = self.view.as_ref() != Some(&view);
                self.view = Some(view);
                changed
            }
            Err(e) => {
                let msg = format!("{e:#}");
                if self.stats.dcs_error.as_deref() != Some(msg.as_str()) {
                    tracing::warn!("cannot read the DCS view (keeping the last one): {msg}");
                }
                self.stats.dcs_error = Some(msg);
                // A stale view must end leadership even while every read fails.
                self.follow_leadership().await;
                return;
            }
        };
        self.follow_leadership().await;
        if self.leader && (always || changed) {
            let view = self.view.as_ref().expect("set above");
            self.stats.heartbeats += 1;
            // Borrowed, not cloned: the view of a large formation is big and this runs every
            // loop_wait (and before every event).
            if let Err(e) = self.agent.heartbeat(self.clock.now(), view).await {
                tracing::error!("heartbeat: {e}");
            }
        }
    }

    /// True while the source confirmed the view within `ttl`.
    fn view_is_fresh(&self) -> bool {
        self.confirmed_at.is_some_and(|t| t.elapsed() <= self.ttl)
    }

    async fn follow_leadership(&mut self) {
        let named = self.dcs_leader().as_deref() == Some(self.name.as_str());
        let fresh = self.view_is_fresh();
        let leads = named && fresh;
        if leads && !self.leader {
            tracing::info!(name = %self.name, "this node leads the coordinator group: acting on pg_dist_node");
        }
        if !leads && self.leader {
            if named {
                tracing::warn!(
                    name = %self.name,
                    ttl_s = self.ttl.as_secs_f64(),
                    dcs_error = self.stats.dcs_error.as_deref().unwrap_or(""),
                    "the DCS view has not been confirmed for longer than ttl: acting as not leading (the session and its open transaction are dropped) until a fresh view arrives"
                );
            } else {
                tracing::warn!(
                    name = %self.name,
                    dcs_leader = self.dcs_leader().as_deref().unwrap_or("nobody"),
                    "this node no longer leads the coordinator group: demoting (its session and open transaction are dropped)"
                );
            }
            if let Err(e) = self.agent.demote().await {
                tracing::error!("demote: {e}");
            }
            let _ = self.agent.poll_completed().await;
            for (_, w) in self.waiters.drain() {
                let _ = w.send(Completion::Discarded(
                    "this node stopped leading the coordinator group".into(),
                ));
            }
        }
        self.leader = leads;
    }

    fn dcs_leader(&self) -> Option<String> {
        self.view
            .as_ref()
            .and_then(|v| v.coordinator.leader.clone())
    }

    /// One metadata turn, each statement logged; then answer the events whose tasks are done.
    async fn turn(&mut self) {
        if !self.leader {
            return;
        }
        self.stats.turns += 1;
        let mut failure: Option<String> = None;
        let (mut ran, mut failed) = (0u64, 0u64);
        let r = self
            .agent
            .run_turn(self.clock.now(), |stmt, result| {
                ran += 1;
                let line = statement_line(stmt, result);
                match result {
                    StatementResult::Failed(e) => {
                        failed += 1;
                        failure.get_or_insert_with(|| e.message.clone());
                        tracing::warn!("statement {line}");
                    }
                    StatementResult::RolledBack => {
                        failed += 1;
                        failure.get_or_insert_with(|| "COMMIT answered ROLLBACK".into());
                        tracing::warn!("statement {line}");
                    }
                    _ => tracing::info!("statement {line}"),
                }
            })
            .await;
        self.stats.statements += ran;
        self.stats.failed_statements += failed;
        if let Err(e) = r {
            tracing::error!("metadata turn: {e}");
        }
        match self.agent.poll_completed().await {
            Ok(tickets) => {
                for t in tickets {
                    if let Some(w) = self.waiters.remove(&t) {
                        let c = match &failure {
                            None => Completion::Paused,
                            Some(f) => Completion::Failed(f.clone()),
                        };
                        let _ = w.send(c);
                    }
                }
            }
            Err(e) => tracing::error!("poll_completed: {e}"),
        }
    }

    async fn handle(&mut self, input: Input) {
        match input {
            Input::Event {
                body,
                caller_deadline,
                reply,
            } => {
                let answer = match caller_deadline {
                    None => self.event(&body, false).await,
                    Some(deadline) => {
                        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                        if left.is_zero() {
                            EventAnswer::Discarded(
                                "its caller's timeout passed before the agent could take it up"
                                    .into(),
                            )
                        } else {
                            self.event(&with_timeout(&body, left), true).await
                        }
                    }
                };
                let _ = reply.send(answer);
            }
            Input::Swap {
                candidate,
                origin,
                reply,
            } => {
                let from = self.running();
                let hash = candidate.hash.clone();
                let probe = self.view.as_ref().map(|v| (self.clock.now(), v));
                match self.agent.swap(*candidate, probe).await {
                    Ok(()) => {
                        self.stats.swaps += 1;
                        if let Some(l) = self.agent.loaded() {
                            let v = version_of(l);
                            self.versions.entry(hash).or_insert(v);
                        }
                        let to = self.running();
                        tracing::info!(
                            origin,
                            from = from.as_ref().map(|p| p.sha256.as_str()).unwrap_or("?"),
                            to = to.as_ref().map(|p| p.sha256.as_str()).unwrap_or("?"),
                            "policy swapped"
                        );
                        self.publish_policy();
                        let _ = reply.send(Ok(SwapReport { from, to }));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.to_string()));
                    }
                }
            }
        }
    }

    /// Publishes what `/status` shows (after every wake of the owner).
    fn publish_status(&mut self) {
        let metrics = match self.agent.policy().metrics() {
            Ok(m) => m,
            Err(e) => {
                tracing::error!("metrics: {e}");
                None
            }
        };
        let policy = self.running();
        let status = Status {
            name: self.name.clone(),
            leader: self.leader,
            dcs_leader: self.dcs_leader(),
            dcs_error: self.stats.dcs_error.clone(),
            dcs_source: self.dcs.describe(),
            dcs_view_age_ms: None,
            dcs_stale: false,
            dcs_reads: self.stats.dcs_reads,
            heartbeats: self.stats.heartbeats,
            turns: self.stats.turns,
            statements: self.stats.statements,
            failed_statements: self.stats.failed_statements,
            traps: self.agent.traps,
            waiting_events: self.waiters.len(),
            uptime_ms: 0,
            turn_running_ms: None,
            policy,
            metrics,
        };
        let hash = status.policy.as_ref().map(|p| p.sha256.clone());
        let mut board = self.board.lock();
        let policy_changed = board.status.policy.as_ref().map(|p| &p.sha256) != hash.as_ref();
        board.status = status;
        board.confirmed_at = self.confirmed_at;
        drop(board);
        if policy_changed {
            // A trap fallback replaces the build without a swap request.
            self.publish_policy();
        }
    }

    /// Publishes what `/policy` shows (at start, after swaps and fallbacks).
    fn publish_policy(&mut self) {
        let previous = self.agent.previous().cloned().map(|l| {
            if !self.versions.contains_key(&l.hash) {
                let v = version_of(&l);
                self.versions.insert(l.hash.clone(), v);
            }
            info(&l, &self.versions)
        });
        let report = PolicyReport {
            running: self.running(),
            previous,
            swaps: self.stats.swaps,
            refused_swaps: 0,
        };
        self.board.lock().policy = report;
    }

    fn running(&mut self) -> Option<PolicyInfo> {
        let l = self.agent.loaded()?.clone();
        if !self.versions.contains_key(&l.hash) {
            self.versions.insert(l.hash.clone(), version_of(&l));
        }
        Some(info(&l, &self.versions))
    }

    async fn event(&mut self, body: &str, wait: bool) -> EventAnswer {
        // The freshest view: the sender has just changed the DCS (e.g. after a promotion).
        self.heartbeat(false).await;
        if !self.leader {
            // The running policy must not see events while this node does not lead, so the
            // policy crate's own validator answers what is malformed.
            return match citus_ha_policy::event::parse_event(body) {
                Err(e) => EventAnswer::Invalid(e),
                Ok(_) if !self.view_is_fresh() => EventAnswer::Ignored(format!(
                    "this node ({}) does not act as leader: the DCS view has not been confirmed for longer than ttl ({} s)",
                    self.name,
                    self.ttl.as_secs_f64()
                )),
                Ok(_) => EventAnswer::Ignored(format!(
                    "this node ({}) does not lead the coordinator group (the DCS leader is {})",
                    self.name,
                    self.dcs_leader().unwrap_or_else(|| "nobody".into())
                )),
            };
        }
        let empty = ClusterView::default();
        let view = self.view.as_ref().unwrap_or(&empty);
        let answer = match self.agent.event(self.clock.now(), view, body).await {
            Err(e) => EventAnswer::Error(e.to_string()),
            Ok(Err(invalid)) => EventAnswer::Invalid(invalid),
            Ok(Ok(EventOutcome::Discarded(why))) => EventAnswer::Discarded(why),
            Ok(Ok(EventOutcome::Unchanged)) => EventAnswer::Unchanged,
            Ok(Ok(EventOutcome::Queued(ticket))) if wait => {
                let (tx, rx) = oneshot::channel();
                self.waiters.insert(ticket, tx);
                EventAnswer::Waiting(ticket, rx)
            }
            Ok(Ok(EventOutcome::Queued(ticket))) => EventAnswer::Queued(ticket),
        };
        // Tickets completed by the event itself were replaced by it: their tasks never ran.
        if let Ok(tickets) = self.agent.poll_completed().await {
            for t in tickets {
                if let Some(w) = self.waiters.remove(&t) {
                    let _ = w.send(Completion::Discarded(
                        "replaced by a newer event for the same group".into(),
                    ));
                }
            }
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_709_251_199_123); // 2024-02-29T23:59:59.123Z
        assert_eq!(rfc3339(t), "2024-02-29T23:59:59.123Z");
    }

    #[test]
    fn the_example_dcs_parses() {
        let v = parse_cluster_text(EXAMPLE_DCS, "example").unwrap();
        assert_eq!(v.coordinator.leader.as_deref(), Some("coord1"));
        assert_eq!(v.workers.len(), 2);
        for (_, g) in &v.workers {
            assert_eq!(g.members.len(), 2);
            assert!(g.leader_member().is_some());
        }
    }
}
