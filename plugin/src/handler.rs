//! The coordinator's metadata state machine (sans-IO).
//!
//! Inputs: heartbeats (DCS views), worker events, statement results, demote and reload
//! requests, and the time with each. Outputs: the next statement (`poll_statement`), when to
//! wake up (`poll_timeout`), and which event tickets are done (`poll_completed`). A *turn* is
//! one pass of the reference's worker loop: it starts at the first `poll_statement` after the
//! previous one returned `None`, may roll back an expired or invalidated transaction, reloads
//! the cache if asked, then processes tasks until none can proceed.

use crate::config::CitusConfig;
use crate::conninfo::parse_conn_url;
use crate::dcs::{ClusterView, GroupView, Member};
use crate::error::InvalidInput;
use crate::event::{parse_event, EventKind, DEFAULT_COOLDOWN_MS};
use crate::group::{Group, Node};
use crate::node::{Address, GroupId, PgDistRow, Role, COORDINATOR_GROUP};
use crate::statement::{Statement, StatementError, StatementResult};
use crate::task_queue::{Task, TaskQueue, Ticket};
use crate::transition::{transition, Change};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Milliseconds on the host's clock.
pub type Instant = u64;

/// How long Citus needs to sync metadata after a committed update before it accepts add/remove.
pub const METADATA_SYNC_WAIT_MS: u64 = 1_000;
/// How soon to try again after the metadata could not be loaded.
pub const RELOAD_RETRY_MS: u64 = 1_000;

/// Export format of [`Handler::export_state`]; bump when the shape changes incompatibly.
pub const STATE_FORMAT: u32 = 1;

/// What the policy did with a worker event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventOutcome {
    Queued(Ticket),
    Unchanged,
    Discarded(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub level: Level,
    pub message: String,
}

/// Counters for operators; exported with the state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metrics {
    pub deadline_rollbacks: u64,
    pub statements: u64,
    pub failed_statements: u64,
    pub sync_retries: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
enum Phase {
    /// Between turns: the next poll starts one.
    #[default]
    Idle,
    /// Processing tasks.
    Processing,
    /// The turn is over (a load or the loop's rollback failed); the next poll returns None.
    Ending,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Step {
    Begin,
    Change(Change),
    Commit,
}

/// The task being processed and what is left of its statements.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Work {
    task: Task,
    steps: VecDeque<Step>,
}

/// The statement the host is running now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Awaiting {
    Load,
    Rollback { deadline_passed: bool },
    Step(Step),
}

/// The open transaction on the metadata session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Txn {
    open: bool,
    /// A row changed in it: Citus now refuses add/remove until it ends.
    has_update: bool,
}

/// The state machine. Everything in it is exported by [`Handler::export_state`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Handler {
    config: CitusConfig,
    name: String,
    connect_url: String,
    /// Set by the first heartbeat: events before it are discarded.
    ready: bool,
    /// pg_dist_node as last loaded or written, by group.
    cache: BTreeMap<GroupId, Task>,
    queue: TaskQueue,
    /// The task whose transaction is open (holding the pause), with its deadline.
    in_flight: Option<Task>,
    schedule_load: bool,
    reload_not_before: Option<Instant>,
    txn: Txn,
    phase: Phase,
    work: Option<Work>,
    awaiting: Option<Awaiting>,
    next_task_id: u64,
    next_ticket: Ticket,
    completed: Vec<Ticket>,
    metrics: Metrics,
    #[serde(skip)]
    logs: Vec<LogLine>,
    #[serde(skip)]
    reported: BTreeSet<String>,
}

#[derive(Serialize, Deserialize)]
struct Exported {
    format: u32,
    handler: Handler,
}

impl Handler {
    pub fn new(config: CitusConfig, name: impl Into<String>, connect_url: impl Into<String>) -> Self {
        Handler {
            config,
            name: name.into(),
            connect_url: connect_url.into(),
            ready: false,
            cache: BTreeMap::new(),
            queue: TaskQueue::default(),
            in_flight: None,
            schedule_load: true,
            reload_not_before: None,
            txn: Txn::default(),
            phase: Phase::Idle,
            work: None,
            awaiting: None,
            next_task_id: 1,
            next_ticket: 1,
            completed: Vec::new(),
            metrics: Metrics::default(),
            logs: Vec::new(),
            reported: BTreeSet::new(),
        }
    }

    pub fn config(&self) -> &CitusConfig {
        &self.config
    }

    // ----- state hand-off -------------------------------------------------------------

    /// The whole state as versioned bytes, so that a new build continues where this one stopped.
    pub fn export_state(&self) -> Vec<u8> {
        serde_json::to_vec(&ExportedRef {
            format: STATE_FORMAT,
            handler: self,
        })
        .expect("state serialises")
    }

    pub fn import_state(bytes: &[u8]) -> Result<Handler, String> {
        #[derive(Deserialize)]
        struct Header {
            format: u32,
        }
        let header: Header = serde_json::from_slice(bytes)
            .map_err(|e| format!("state is not a citus-ha export: {e}"))?;
        if header.format > STATE_FORMAT {
            return Err(format!(
                "state format {} is newer than this build understands ({STATE_FORMAT})",
                header.format
            ));
        }
        let exported: Exported =
            serde_json::from_slice(bytes).map_err(|e| format!("state does not parse: {e}"))?;
        Ok(exported.handler)
    }

    // ----- inputs ---------------------------------------------------------------------

    /// The heartbeat: queue a task for the coordinator group and for every worker group whose
    /// leader is a running primary, so pg_dist_node follows the DCS even without events.
    pub fn handle_heartbeat(&mut self, now: Instant, view: &ClusterView) {
        if !self.config.is_coordinator() {
            return;
        }
        self.ready = true;
        let url = self.connect_url.clone();
        let name = self.name.clone();
        match self.primary_from_url(&url, EventKind::AfterPromote) {
            Some(primary) => {
                let task = self.build_task(
                    COORDINATOR_GROUP,
                    primary,
                    &view.coordinator,
                    &name,
                    EventKind::AfterPromote,
                    None,
                    None,
                );
                self.add_task(task, now);
            }
            None => self.report(format!("coordinator {name}: no usable address in {url:?}")),
        }
        let mut workers: Vec<&(GroupId, GroupView)> = view.workers.iter().collect();
        if !workers.windows(2).all(|w| w[0].0 < w[1].0) {
            workers.sort_by_key(|(g, _)| *g);
        }
        for (groupid, worker) in workers {
            let Some(leader) = worker.leader_member() else {
                continue;
            };
            if !(leader.has_conn() && leader.is_primary_role() && leader.is_running()) {
                continue;
            }
            let Some(primary) = self.primary_from_member(*groupid, leader, EventKind::AfterPromote)
            else {
                continue;
            };
            let task = self.build_task(
                *groupid,
                primary,
                worker,
                &leader.name,
                EventKind::AfterPromote,
                None,
                None,
            );
            self.add_task(task, now);
        }
    }

    /// A worker event (the JSON body as received). Invalid events are refused with the field
    /// and reason; valid ones are acted on only when this coordinator is ready and the DCS agrees
    /// the sender leads its group.
    pub fn handle_event(
        &mut self,
        now: Instant,
        view: &ClusterView,
        body: &str,
    ) -> Result<EventOutcome, InvalidInput> {
        let ev = parse_event(body)?;
        if !self.config.is_coordinator() {
            return Ok(EventOutcome::Discarded("this node is not the coordinator".into()));
        }
        if !self.ready {
            return Ok(self.discard(format!(
                "{} for group {}: not ready, no heartbeat yet",
                ev.kind.as_str(),
                ev.group
            )));
        }
        let Some(worker) = view.worker(ev.group) else {
            return Ok(self.discard(format!("group {} is not in the DCS view", ev.group)));
        };
        let leader = match worker.leader_member() {
            Some(l) if l.name == ev.leader && l.has_conn() => l,
            _ => {
                return Ok(self.discard(format!(
                    "{} for group {} from {:?}: the DCS leader is {:?}",
                    ev.kind.as_str(),
                    ev.group,
                    ev.leader,
                    worker.leader
                )))
            }
        };
        let Some(primary) = self.primary_from_member(ev.group, leader, ev.kind) else {
            return Ok(self.discard(format!("group {}: leader has no usable address", ev.group)));
        };
        let mut task = self.build_task(
            ev.group,
            primary,
            worker,
            &ev.leader,
            ev.kind,
            Some(ev.timeout_ms),
            Some(ev.cooldown_ms),
        );
        let ticket = self.next_ticket;
        task.ticket = Some(ticket);
        if self.add_task(task, now) {
            self.next_ticket += 1;
            self.log(
                Level::Info,
                format!("{} for group {} from {} queued", ev.kind.as_str(), ev.group, ev.leader),
            );
            Ok(EventOutcome::Queued(ticket))
        } else {
            Ok(EventOutcome::Unchanged)
        }
    }

    /// The cache must be reloaded before the next decision (an open transaction is rolled back
    /// first, as its view may be stale).
    pub fn schedule_reload(&mut self) {
        self.schedule_load = true;
        self.reload_not_before = None;
    }

    /// This coordinator is demoted: its session is gone with its transaction. Forget
    /// everything, and reload before acting after a later promotion.
    pub fn handle_demote(&mut self) {
        self.cache.clear();
        for t in self.queue.clear() {
            self.complete(t.ticket);
        }
        if let Some(w) = self.work.take() {
            self.complete(w.task.ticket);
        }
        self.in_flight = None;
        self.awaiting = None;
        self.txn = Txn::default();
        self.phase = Phase::Idle;
        self.schedule_reload();
    }

    // ----- outputs --------------------------------------------------------------------

    /// The next statement to run, or None when this turn is over.
    pub fn poll_statement(&mut self, now: Instant) -> Option<Statement> {
        if self.awaiting.is_some() {
            self.log(Level::Error, "poll_statement while a statement is still running".into());
            return None;
        }
        loop {
            if let Some(work) = &mut self.work {
                match work.steps.pop_front() {
                    Some(step) => {
                        let stmt = step_statement(&step, &work.task);
                        self.awaiting = Some(Awaiting::Step(step));
                        return Some(self.issue(stmt));
                    }
                    None => {
                        self.finish_work();
                        continue;
                    }
                }
            }
            match self.phase {
                Phase::Ending => {
                    self.phase = Phase::Idle;
                    return None;
                }
                Phase::Idle => {
                    if !self.ready {
                        return None;
                    }
                    self.phase = Phase::Processing;
                    if let Some(f) = &self.in_flight {
                        let expired = now >= f.deadline;
                        if self.schedule_load || expired {
                            let why = if expired { "its deadline passed" } else { "a metadata reload was requested" };
                            let msg = format!(
                                "rolling back the transaction of group {} ({} event): {why}",
                                f.groupid(),
                                f.event.as_str()
                            );
                            self.log(Level::Warn, msg);
                            self.awaiting = Some(Awaiting::Rollback {
                                deadline_passed: expired && !self.schedule_load,
                            });
                            return Some(self.issue(Statement::Rollback));
                        }
                    }
                }
                Phase::Processing => {
                    if self.in_flight.is_none() && self.schedule_load {
                        if self.reload_not_before.is_some_and(|t| now < t) {
                            self.phase = Phase::Idle;
                            return None;
                        }
                        self.awaiting = Some(Awaiting::Load);
                        return Some(self.issue(Statement::LoadMetadata));
                    }
                    match self.pick_task(now) {
                        Some(task) => self.start_work(task, now),
                        None => {
                            self.phase = Phase::Idle;
                            return None;
                        }
                    }
                }
            }
        }
    }

    /// The result of the statement returned by the last `poll_statement`.
    pub fn handle_result(&mut self, now: Instant, result: StatementResult) {
        let Some(awaiting) = self.awaiting.take() else {
            // A result for a statement that demote already abandoned.
            return;
        };
        if let StatementResult::Failed(e) = &result {
            self.metrics.failed_statements += 1;
            self.log(Level::Error, format!("statement failed: {}", e.message));
        }
        match awaiting {
            Awaiting::Load => match result {
                StatementResult::Metadata(rows) => {
                    self.load_cache(&rows);
                    self.schedule_load = false;
                    self.reload_not_before = None;
                }
                _ => {
                    self.lose_session();
                    self.reload_not_before = Some(now + RELOAD_RETRY_MS);
                    self.phase = Phase::Ending;
                }
            },
            Awaiting::Rollback { deadline_passed } => {
                self.in_flight = None;
                self.txn = Txn::default();
                match result {
                    StatementResult::Failed(_) => {
                        self.lose_session();
                        self.phase = Phase::Ending;
                    }
                    _ => {
                        if deadline_passed {
                            self.metrics.deadline_rollbacks += 1;
                        }
                    }
                }
            }
            Awaiting::Step(step) => self.step_result(now, step, result),
        }
    }

    /// When the host must run a turn even without new input: an open transaction's deadline,
    /// a retry Citus asked for, or a reload that failed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let deadline = self.in_flight.as_ref().map(|t| t.deadline);
        let retry = self.queue.tasks().filter_map(|t| t.not_before).min();
        let reload = if self.schedule_load { self.reload_not_before } else { None };
        [deadline, retry, reload].into_iter().flatten().min()
    }

    /// Tickets whose tasks were processed (or dropped) since the last call.
    pub fn poll_completed(&mut self) -> Vec<Ticket> {
        std::mem::take(&mut self.completed)
    }

    /// Log lines since the last call, for the host's sink.
    pub fn drain_logs(&mut self) -> Vec<LogLine> {
        std::mem::take(&mut self.logs)
    }

    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }
    pub fn queued_tasks(&self) -> usize {
        self.queue.len()
    }
    pub fn in_flight_group(&self) -> Option<GroupId> {
        self.in_flight.as_ref().map(Task::groupid)
    }
    /// Whether a statement result is awaited (the host must not swap policies then).
    pub fn is_busy(&self) -> bool {
        self.awaiting.is_some() || self.work.is_some()
    }
    /// The cached rows (nodeid order), for tests and diagnostics.
    pub fn cached_rows(&self) -> Vec<(GroupId, Node)> {
        let mut v: Vec<(GroupId, Node)> = self
            .cache
            .iter()
            .flat_map(|(g, t)| t.group.nodes().iter().map(move |n| (*g, n.clone())))
            .collect();
        v.sort_by_key(|(_, n)| n.nodeid);
        v
    }

    // ----- internals ------------------------------------------------------------------

    fn issue(&mut self, stmt: Statement) -> Statement {
        self.metrics.statements += 1;
        stmt
    }

    fn log(&mut self, level: Level, message: String) {
        self.logs.push(LogLine { level, message });
    }

    /// Reports a problem with DCS data once, not on every heartbeat.
    fn report(&mut self, message: String) {
        if self.reported.len() < 10_000 && self.reported.insert(message.clone()) {
            self.log(Level::Warn, message);
        }
    }

    fn discard(&mut self, why: String) -> EventOutcome {
        self.log(Level::Info, format!("discarding event: {why}"));
        EventOutcome::Discarded(why)
    }

    fn complete(&mut self, ticket: Option<Ticket>) {
        if let Some(t) = ticket {
            self.completed.push(t);
        }
    }

    fn role_for(kind: EventKind) -> Role {
        if kind == EventKind::BeforeDemote {
            Role::Demoted
        } else {
            Role::Primary
        }
    }

    fn primary_from_url(&mut self, url: &str, kind: EventKind) -> Option<Node> {
        parse_conn_url(url)
            .ok()
            .map(|a| Node::new(a, Self::role_for(kind)))
    }

    fn primary_from_member(&mut self, group: GroupId, m: &Member, kind: EventKind) -> Option<Node> {
        match m.address() {
            Ok(a) => Some(Node::new(a, Self::role_for(kind))),
            Err(e) => {
                self.report(format!("group {group}: leader {} skipped: {e}", m.name));
                None
            }
        }
    }

    /// The desired topology: the primary plus every running, reachable member that is not the
    /// leader and not tagged noloadbalance.
    #[allow(clippy::too_many_arguments)]
    fn build_task(
        &mut self,
        groupid: GroupId,
        primary: Node,
        view: &GroupView,
        leader_name: &str,
        event: EventKind,
        timeout_ms: Option<u64>,
        cooldown_ms: Option<i32>,
    ) -> Task {
        let mut group = Group::new(groupid);
        group.insert(primary);
        for m in &view.members {
            if m.name == leader_name || m.noloadbalance || !m.is_running() || !m.has_conn() {
                continue;
            }
            match m.address() {
                Ok(a) => {
                    group.insert(Node::new(a, Role::Secondary));
                }
                Err(e) => self.report(format!("group {groupid}: member {} skipped: {e}", m.name)),
            }
        }
        let id = self.next_task_id;
        self.next_task_id += 1;
        Task {
            id,
            group,
            event,
            timeout_ms,
            cooldown_ms: cooldown_ms.unwrap_or(DEFAULT_COOLDOWN_MS),
            deadline: 0,
            ticket: None,
            not_before: None,
        }
    }

    /// The reference's queueing rules; true when the task was queued.
    fn add_task(&mut self, task: Task, now: Instant) -> bool {
        let g = task.groupid();
        let in_flight_same_group = self.in_flight.as_ref().is_some_and(|f| f.groupid() == g);
        if !task.from_event() {
            // A heartbeat never overrides a task from a worker event ...
            if self.queue.get(g).is_some_and(Task::from_event) {
                return false;
            }
            // ... nor disturbs a switchover in progress before its deadline (the DCS may not
            // show the new roles yet).
            if let Some(f) = &self.in_flight {
                if f.groupid() == g && f.from_event() && f.deadline > now {
                    return false;
                }
            }
        }
        if let Some(queued) = self.queue.get(g) {
            if queued.same_as(&task) {
                return false;
            }
            if let Some(old) = self.queue.replace(task) {
                self.complete(old.ticket);
            }
            return true;
        }
        let differs = match self.cache.get(&g) {
            Some(c) => !task.same_as(c),
            None => true,
        };
        if self.schedule_load || differs || in_flight_same_group {
            self.queue.push(task);
            return true;
        }
        false
    }

    /// The in-flight group's task first; else the coordinator's; else the oldest. Tasks that
    /// match the cache are dropped on the way.
    fn pick_task(&mut self, now: Instant) -> Option<Task> {
        let eligible = |t: &Task| t.not_before.is_none_or(|nb| now >= nb);
        if let Some(f) = &self.in_flight {
            let g = f.groupid();
            return self.queue.get(g).filter(|t| eligible(t)).cloned();
        }
        loop {
            let g = match self.queue.get(COORDINATOR_GROUP).filter(|t| eligible(t)) {
                Some(_) => COORDINATOR_GROUP,
                None => self
                    .queue
                    .groups_in_order()
                    .find(|g| self.queue.get(*g).is_some_and(eligible))?,
            };
            let task = self.queue.get(g).expect("listed");
            if self.cache.get(&g).is_some_and(|c| task.same_as(c)) {
                let t = self.queue.remove(g).expect("listed");
                self.complete(t.ticket);
                continue;
            }
            return Some(task.clone());
        }
    }

    /// Plans a task: the reference's `process_task` and `update_group`.
    fn start_work(&mut self, mut task: Task, now: Instant) {
        let g = task.groupid();
        let in_txn = self.in_flight.is_some();
        let mut empty = Group::new(g);
        let old: &mut Group = match (&mut self.in_flight, self.cache.get_mut(&g)) {
            (Some(f), _) => &mut f.group,
            (None, Some(c)) => &mut c.group,
            (None, None) => &mut empty,
        };
        let txn_has_update = self.txn.open && self.txn.has_update;
        let plan = transition(&mut task.group, old, txn_has_update);
        let mut steps: VecDeque<Step> = VecDeque::new();
        let standalone_txn = !in_txn && plan.steps > 1;
        if task.event.opens_transaction() {
            if let Some(t) = task.timeout_ms {
                task.deadline = now + t;
            }
            if !in_txn {
                steps.push_back(Step::Begin);
            }
            steps.extend(plan.changes.into_iter().map(Step::Change));
        } else {
            if standalone_txn {
                steps.push_back(Step::Begin);
            }
            steps.extend(plan.changes.into_iter().map(Step::Change));
            if standalone_txn || in_txn {
                steps.push_back(Step::Commit);
            }
        }
        self.work = Some(Work { task, steps });
    }

    fn step_result(&mut self, now: Instant, step: Step, result: StatementResult) {
        match result {
            StatementResult::Failed(e) => self.work_failed(now, &step, e),
            StatementResult::RolledBack => {
                self.work_failed(now, &step, StatementError::new("COMMIT answered ROLLBACK"))
            }
            ok => {
                let Some(work) = &mut self.work else { return };
                match (&step, ok) {
                    (Step::Begin, _) => {
                        self.txn = Txn {
                            open: true,
                            has_update: false,
                        }
                    }
                    (Step::Commit, _) => self.txn = Txn::default(),
                    (Step::Change(Change::Add { addr, .. }), StatementResult::Added(id)) => {
                        if let Some(n) = work.task.group.get_mut(addr) {
                            n.nodeid = Some(id);
                        }
                    }
                    (Step::Change(Change::Update { .. }), _) if self.txn.open => {
                        self.txn.has_update = true
                    }
                    _ => {}
                }
            }
        }
    }

    /// The reference's handling of a failed statement: the transaction is gone, the cache is
    /// reloaded, the task is dropped and the next heartbeat retries it. Citus's "metadata out of
    /// sync" refusal is different: the task stays queued and is retried once Citus has synced.
    fn work_failed(&mut self, now: Instant, step: &Step, e: StatementError) {
        let Some(work) = self.work.take() else { return };
        let had_in_flight = self.in_flight.is_some();
        self.txn = Txn::default();
        self.in_flight = None;
        let g = work.task.groupid();
        let membership = matches!(step, Step::Change(c) if c.is_membership());
        if membership && e.is_metadata_out_of_sync() {
            self.metrics.sync_retries += 1;
            if let Some(t) = self.queue.get_mut(g) {
                if t.id == work.task.id {
                    t.not_before = Some(now + METADATA_SYNC_WAIT_MS);
                }
            }
            if had_in_flight {
                self.schedule_reload();
            }
            self.log(
                Level::Info,
                format!("group {g}: Citus is syncing metadata; retrying in {METADATA_SYNC_WAIT_MS} ms"),
            );
            return;
        }
        self.schedule_reload();
        if !self.queue.is_empty() && self.queue.get(g).is_some_and(|t| t.id == work.task.id) {
            self.queue.remove(g);
        }
        self.complete(work.task.ticket);
    }

    fn finish_work(&mut self) {
        let Some(work) = self.work.take() else { return };
        let mut task = work.task;
        let g = task.groupid();
        let commits = !task.event.opens_transaction();
        if commits {
            task.group.failover = false;
            task.not_before = None;
        }
        if !self.queue.is_empty() {
            let ticket = task.ticket;
            let id = task.id;
            if commits {
                self.cache.insert(g, task);
                self.in_flight = None;
            } else {
                self.in_flight = Some(task);
            }
            if self.queue.get(g).is_some_and(|t| t.id == id) {
                self.queue.remove(g);
            }
            self.complete(ticket);
        } else {
            self.complete(task.ticket);
        }
    }

    fn lose_session(&mut self) {
        self.in_flight = None;
        self.txn = Txn::default();
        self.schedule_load = true;
    }

    fn load_cache(&mut self, rows: &[PgDistRow]) {
        let mut by_group: BTreeMap<GroupId, Vec<&PgDistRow>> = BTreeMap::new();
        for r in rows {
            by_group.entry(r.groupid).or_default().push(r);
        }
        self.cache = by_group
            .into_iter()
            .map(|(g, rows)| {
                let task = Task {
                    id: 0,
                    group: Group::from_rows(g, rows),
                    event: EventKind::AfterPromote,
                    timeout_ms: None,
                    cooldown_ms: DEFAULT_COOLDOWN_MS,
                    deadline: 0,
                    ticket: None,
                    not_before: None,
                };
                (g, task)
            })
            .collect();
    }
}

#[derive(Serialize)]
struct ExportedRef<'a> {
    format: u32,
    handler: &'a Handler,
}

fn step_statement(step: &Step, task: &Task) -> Statement {
    match step {
        Step::Begin => Statement::Begin,
        Step::Commit => Statement::Commit,
        Step::Change(Change::Add { addr, role }) => Statement::AddNode {
            host: addr.host.clone(),
            port: addr.port,
            groupid: task.groupid(),
            role: *role,
        },
        Step::Change(Change::Update {
            nodeid,
            addr,
            demoted,
        }) => Statement::UpdateNode {
            nodeid: *nodeid,
            host: if *demoted {
                format!("{}{}", addr.host, crate::node::DEMOTED_SUFFIX)
            } else {
                addr.host.clone()
            },
            port: addr.port,
            force: true,
            cooldown_ms: task.cooldown_ms,
        },
        Step::Change(Change::Remove { addr }) => Statement::RemoveNode {
            host: addr.host.clone(),
            port: addr.port,
        },
    }
}

/// Address helper for tests and hosts.
pub fn address(host: &str, port: i32) -> Address {
    Address::new(host, port)
}
