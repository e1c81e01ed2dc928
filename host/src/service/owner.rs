//! The task that owns the agent: every policy call and every statement, strictly in order.
//! See the module documentation of `service`.

use super::inbox::{Completion, EventAnswer, Input};
use super::report::{info, version_of, Board, PolicyInfo, PolicyReport, Status, SwapReport};
use super::{Clock, Settings};
use crate::agent::Agent;
use crate::dcs::DcsSource;
use crate::replay::statement_line;
use crate::session::MetadataSession;
use citus_ha_policy::dcs::ClusterView;
use citus_ha_policy::{EventOutcome, StatementResult};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The longest one DCS read may take: a source that hangs counts as failing.
const DCS_READ_BOUND: Duration = Duration::from_secs(2);

/// `body` (a JSON event) with its `timeout` lowered to `left` (to the millisecond, up) when
/// it asks for more. Anything else, an invalid timeout included, goes to the policy as sent:
/// refusing it is the policy's job.
fn with_timeout(body: &str, left: Duration) -> String {
    let Ok(mut v) = serde_json::from_str::<serde_json::Value>(body) else {
        return body.to_string();
    };
    let left_s = left.as_millis().max(1) as f64 / 1000.0;
    let asked = v
        .get("timeout")
        .and_then(serde_json::Value::as_f64)
        .filter(|t| t.is_finite() && *t > 0.0);
    match (asked, serde_json::Number::from_f64(left_s)) {
        (Some(t), Some(n)) if t > left_s => {
            v["timeout"] = serde_json::Value::Number(n);
            v.to_string()
        }
        _ => body.to_string(),
    }
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
pub(super) struct Owner<S, D> {
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
    pub(super) fn new(
        agent: Agent<S>,
        dcs: D,
        settings: &Settings,
        clock: Clock,
        board: Arc<Board>,
    ) -> Self {
        // Asking a build its version needs an instance; builds do not change, so once each.
        let versions = agent
            .loaded()
            .map(|l| (l.hash.clone(), version_of(l)))
            .into_iter()
            .collect();
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
            versions,
            stats: Stats::default(),
        }
    }

    /// Closes the metadata session (the server rolls back an open transaction).
    pub(super) async fn close(&mut self) {
        if self.leader {
            tracing::info!(
                "stopping; the metadata session closes (an open transaction is rolled back)"
            );
        }
        self.agent.session.lose().await;
    }

    pub(super) async fn run(&mut self, mut rx: mpsc::Receiver<Input>) {
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
    pub(super) fn publish_policy(&mut self) {
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
    fn the_time_left_only_ever_lowers_a_valid_timeout() {
        let body =
            |t: &str| format!(r#"{{"type":"before_demote","group":1,"leader":"a","timeout":{t}}}"#);
        let left = Duration::from_millis(1_500);
        let lowered: serde_json::Value =
            serde_json::from_str(&with_timeout(&body("30"), left)).unwrap();
        assert_eq!(lowered["timeout"], 1.5);
        for kept in ["1", "-5", "0", "\"30\"", "null"] {
            assert_eq!(with_timeout(&body(kept), left), body(kept), "{kept}");
        }
        assert_eq!(with_timeout("{not json", left), "{not json");
    }
}
