//! The loop that connects a policy to a metadata session: the one code path that `run`,
//! `replay`, `demo` and the benchmarks share. It also keeps the policy alive: after a trap it
//! restores the last exported state into a fresh instance (or falls back to the known-good
//! build), and it performs policy swaps between two calls.

use crate::policy::{Functions, Handler, LoadedPolicy, PolicyError, PolicyResult, WasmHandler};
use crate::session::MetadataSession;
use citus_ha_policy::dcs::ClusterView;
use citus_ha_policy::{CitusConfig, EventOutcome, InvalidInput, Statement, StatementResult};

/// Who this node is, so a fresh policy instance can be built at any time.
#[derive(Clone, Debug)]
pub struct Identity {
    pub config: CitusConfig,
    pub name: String,
    pub connect_url: String,
}

/// Why a candidate policy was refused; the running one stays.
#[derive(Debug, thiserror::Error)]
pub enum SwapRefused {
    #[error("not loadable: {0}")]
    Load(String),
    #[error("state import failed: {0}")]
    Import(String),
    #[error("warm-up failed: {0}")]
    Warmup(String),
    #[error("the running policy could not export its state: {0}")]
    Export(String),
}

/// What kind of input a policy call handled. Traps are counted per kind, so a build that
/// traps on every heartbeat is replaced even though the turns between its heartbeats succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CallKind {
    Heartbeat,
    Event,
    Turn,
    Other,
}

impl CallKind {
    const ALL: usize = 4;
    fn index(self) -> usize {
        self as usize
    }
}

/// Traps of one kind in a row (with no success of that kind between) that make the agent
/// give up on a build and fall back to the known-good one.
const TRAPS_BEFORE_FALLBACK: u32 = 2;

pub struct Agent<S> {
    policy: Box<dyn Handler>,
    loaded: Option<LoadedPolicy>,
    previous: Option<LoadedPolicy>,
    /// The build to fall back to when the running one keeps trapping.
    fallback: Option<LoadedPolicy>,
    pub session: S,
    identity: Identity,
    snapshot: Option<Vec<u8>>,
    /// Traps in a row, per [`CallKind`].
    traps_in_a_row: [u32; CallKind::ALL],
    pub traps: u64,
}

impl<S: MetadataSession> Agent<S> {
    pub fn new(policy: WasmHandler, identity: Identity, session: S) -> Self {
        let loaded = policy.meta().clone();
        let mut agent = Self::with_policy(Box::new(policy), identity, session);
        agent.loaded = Some(loaded);
        agent
    }

    /// An agent around any policy (the native baseline in benchmarks).
    pub fn with_policy(policy: Box<dyn Handler>, identity: Identity, session: S) -> Self {
        Self {
            policy,
            loaded: None,
            previous: None,
            fallback: None,
            session,
            identity,
            snapshot: None,
            traps_in_a_row: [0; CallKind::ALL],
            traps: 0,
        }
    }

    pub fn set_fallback(&mut self, fallback: LoadedPolicy) {
        self.fallback = Some(fallback);
    }
    pub fn loaded(&self) -> Option<&LoadedPolicy> {
        self.loaded.as_ref()
    }
    pub fn previous(&self) -> Option<&LoadedPolicy> {
        self.previous.as_ref()
    }
    pub fn policy(&mut self) -> &mut dyn Handler {
        self.policy.as_mut()
    }

    /// A heartbeat with the latest DCS view.
    pub async fn heartbeat(&mut self, now: u64, view: &ClusterView) -> PolicyResult<()> {
        let r = self.policy.handle_heartbeat(now, view);
        self.guard(CallKind::Heartbeat, r).await
    }

    /// A worker event body as received.
    pub async fn event(
        &mut self,
        now: u64,
        view: &ClusterView,
        body: &str,
    ) -> PolicyResult<Result<EventOutcome, InvalidInput>> {
        let r = self.policy.handle_event(now, view, body);
        self.guard(CallKind::Event, r).await
    }

    pub async fn schedule_reload(&mut self) -> PolicyResult<()> {
        let r = self.policy.schedule_reload();
        self.guard(CallKind::Other, r).await
    }

    /// This coordinator was demoted: its session (and open transaction) is gone.
    pub async fn demote(&mut self) -> PolicyResult<()> {
        self.session.lose().await;
        let r = self.policy.handle_demote();
        self.guard(CallKind::Other, r).await
    }

    pub async fn poll_timeout(&mut self) -> PolicyResult<Option<u64>> {
        let r = self.policy.poll_timeout();
        self.guard(CallKind::Other, r).await
    }

    pub async fn poll_completed(&mut self) -> PolicyResult<Vec<u64>> {
        let r = self.policy.poll_completed();
        self.guard(CallKind::Other, r).await
    }

    /// One turn of the metadata loop: statements until the policy has none. Each executed
    /// statement and its result go to `seen` (replay prints them, `run` logs them).
    pub async fn run_turn(
        &mut self,
        now: u64,
        mut seen: impl FnMut(&Statement, &StatementResult),
    ) -> PolicyResult<()> {
        loop {
            let next = self.policy.poll_statements(now);
            let batch = self.guard(CallKind::Turn, next).await?;
            if batch.is_empty() {
                break;
            }
            let mut results = Vec::with_capacity(batch.len());
            for stmt in &batch {
                let result = self.session.execute(stmt).await;
                seen(stmt, &result);
                let ends = result.ends_batch();
                results.push(result);
                if ends {
                    break;
                }
            }
            let r = self.policy.handle_results(now, results);
            self.guard(CallKind::Turn, r).await?;
        }
        self.take_snapshot().await;
        Ok(())
    }

    /// Keeps the last consistent state (between turns) for recovery after a trap.
    async fn take_snapshot(&mut self) {
        if let Ok(s) = self.policy.export_state() {
            self.snapshot = Some(s);
        }
    }

    /// Passes results through; on a trap, replaces the instance and reports the trap.
    async fn guard<T>(&mut self, kind: CallKind, r: PolicyResult<T>) -> PolicyResult<T> {
        match &r {
            Err(PolicyError::Trap(why)) => {
                self.traps += 1;
                self.traps_in_a_row[kind.index()] += 1;
                tracing::error!(trap = %why, call = ?kind, "policy call stopped; replacing the instance");
                self.recover().await;
            }
            Ok(_) => self.traps_in_a_row[kind.index()] = 0,
            Err(PolicyError::Host(_)) => {}
        }
        r
    }

    /// A new instance from the last snapshot; if that build keeps trapping, the fallback
    /// build; if no state can be restored, a fresh handler that reloads from the database
    /// (the session's open transaction is dropped first, as nobody knows about it any more).
    async fn recover(&mut self) {
        let keeps_trapping = self
            .traps_in_a_row
            .iter()
            .any(|n| *n >= TRAPS_BEFORE_FALLBACK);
        let use_fallback = keeps_trapping && self.fallback.is_some();
        let build = if use_fallback {
            let fb = self.fallback.clone();
            if let (Some(fb), Some(cur)) = (&fb, &self.loaded) {
                if fb.hash != cur.hash {
                    tracing::warn!(from = %cur.hash, to = %fb.hash, "the policy keeps trapping; falling back to the known-good build");
                    self.previous = self.loaded.clone();
                    self.traps_in_a_row = [0; CallKind::ALL];
                }
            }
            fb
        } else {
            self.loaded.clone()
        };
        let Some(build) = build else { return };
        if let Some(state) = self.snapshot.clone() {
            if let Ok(Ok(p)) = build.import_handler(&state) {
                self.policy = Box::new(p);
                self.loaded = Some(build);
                return;
            }
        }
        self.session.lose().await;
        let id = &self.identity;
        match build.new_handler(&id.config, &id.name, &id.connect_url) {
            Ok(mut p) => {
                let _ = p.schedule_reload();
                self.policy = Box::new(p);
                self.loaded = Some(build);
            }
            Err(e) => tracing::error!("cannot instantiate the policy again: {e}"),
        }
    }

    /// Replaces the running policy with `candidate` between two calls: export, import, warm
    /// up. Any failure leaves the running policy untouched. With `probe` (the time and the
    /// current DCS view) the warm-up also hands that view to a throwaway instance of the
    /// candidate, so a build that cannot take a heartbeat is refused before it takes over.
    pub async fn swap(
        &mut self,
        candidate: LoadedPolicy,
        probe: Option<(u64, &ClusterView)>,
    ) -> Result<(), SwapRefused> {
        let state = self
            .policy
            .export_state()
            .map_err(|e| SwapRefused::Export(e.to_string()))?;
        let refused = |r: PolicyResult<Result<WasmHandler, String>>| match r {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e),
            Err(e) => Some(e.to_string()),
        };
        let (mut next, accepted) = match candidate.import_handler(&state) {
            Ok(Ok(p)) => (p, state.clone()),
            first => {
                // A build older than the binary state format reads only JSON: offer that.
                let why = refused(first).unwrap_or_default();
                match self.policy.export_state_json() {
                    Ok(Some(json)) => match candidate.import_handler(&json) {
                        Ok(Ok(p)) => (p, json),
                        again => {
                            let also = refused(again).unwrap_or_default();
                            return Err(SwapRefused::Import(format!("{why}; as JSON: {also}")));
                        }
                    },
                    _ => return Err(SwapRefused::Import(why)),
                }
            }
        };
        next.poll_timeout()
            .and_then(|_| next.policy_version())
            .map_err(|e| SwapRefused::Warmup(e.to_string()))?;
        if let Some((now, view)) = probe {
            // On a copy: the heartbeat's effects (queued tasks) must not reach the real one.
            let mut scratch = match candidate.import_handler(&accepted) {
                Ok(Ok(p)) => p,
                other => {
                    let why = refused(other).unwrap_or_default();
                    return Err(SwapRefused::Warmup(format!("second import: {why}")));
                }
            };
            scratch
                .handle_heartbeat(now, view)
                .map_err(|e| SwapRefused::Warmup(format!("heartbeat on the current view: {e}")))?;
        }
        tracing::info!(hash = %candidate.hash, contract = %candidate.contract, "policy swapped");
        self.previous = self.loaded.replace(candidate);
        self.policy = Box::new(next);
        self.snapshot = Some(state);
        self.traps_in_a_row = [0; CallKind::ALL];
        Ok(())
    }
}
