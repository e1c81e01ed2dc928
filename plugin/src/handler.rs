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
use crate::dcs::{leader_of, ClusterView, GroupView, Member, MemberRef};
use crate::error::InvalidInput;
use crate::event::{parse_event, EventKind, WorkerEvent, DEFAULT_COOLDOWN_MS};
use crate::group::{Group, Node};
use crate::node::{Address, GroupId, PgDistRow, Role, COORDINATOR_GROUP};
use crate::packed_view::{self, PackedView};
use crate::statement::{Statement, StatementError, StatementResult};
use crate::task_queue::{Task, TaskQueue, Ticket};
use crate::transition::{transition, Change};
use crate::view_text::{self, TextError, TextView};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Milliseconds on the host's clock.
pub type Instant = u64;

/// How long Citus needs to sync metadata after a committed update before it accepts add/remove.
pub const METADATA_SYNC_WAIT_MS: u64 = 1_000;
/// How soon to try again after the metadata could not be loaded.
pub const RELOAD_RETRY_MS: u64 = 1_000;

pub use crate::state::STATE_FORMAT;

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
    /// Statements of the last `poll_statements` batch issued beyond the one awaited.
    #[serde(default, skip_serializing_if = "crate::state::zero_in_json")]
    batch_ahead: usize,
    #[serde(skip)]
    logs: Vec<LogLine>,
    #[serde(skip)]
    reported: BTreeSet<String>,
    /// What the last packed heartbeat settled; not exported, so a new build reads everything.
    #[serde(skip)]
    view_memo: ViewMemo,
}

/// A group the packed heartbeat read: its leader key and its members' range in the scratch list.
type ReadGroup<'v> = (Option<&'v str>, usize, usize);

/// The worker groups that the packed view `seq` showed exactly as cached, with nothing queued
/// or in flight: while their bytes stay the same and their cache entry does, the heartbeat has
/// nothing to decide for them.
#[derive(Clone, Debug, Default)]
struct ViewMemo {
    seq: Option<u64>,
    /// Ascending group ids.
    matched: Vec<GroupId>,
    /// The previous `matched`, kept for its allocation.
    spare: Vec<GroupId>,
    /// A packed heartbeat's groups in order, and whether it read each (kept for its allocation).
    order: Vec<(GroupId, bool)>,
}

/// One group of a view the heartbeat reads in place, whatever its encoding.
trait InPlaceGroup<'a> {
    type Error;
    fn id(&self) -> GroupId;
    fn unchanged(&self) -> bool;
    fn decode(&self, members: &mut Vec<MemberRef<'a>>) -> Result<Option<&'a str>, Self::Error>;
}

impl<'a> InPlaceGroup<'a> for packed_view::GroupEntry<'a> {
    type Error = packed_view::BadView;
    fn id(&self) -> GroupId {
        self.id
    }
    fn unchanged(&self) -> bool {
        self.unchanged
    }
    fn decode(&self, members: &mut Vec<MemberRef<'a>>) -> Result<Option<&'a str>, Self::Error> {
        packed_view::GroupEntry::decode(self, members)
    }
}

impl<'a> InPlaceGroup<'a> for view_text::TextGroup<'a> {
    type Error = TextError;
    fn id(&self) -> GroupId {
        self.id
    }
    fn unchanged(&self) -> bool {
        self.unchanged
    }
    fn decode(&self, members: &mut Vec<MemberRef<'a>>) -> Result<Option<&'a str>, Self::Error> {
        view_text::TextGroup::decode(self, members)
    }
}

impl ViewMemo {
    /// Group `g`'s cache entry changed.
    fn forget_group(&mut self, g: GroupId) {
        if let Ok(i) = self.matched.binary_search(&g) {
            self.matched.remove(i);
        }
    }
    fn forget_all(&mut self) {
        self.matched.clear();
    }
}

impl Handler {
    pub fn new(
        config: CitusConfig,
        name: impl Into<String>,
        connect_url: impl Into<String>,
    ) -> Self {
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
            batch_ahead: 0,
            logs: Vec::new(),
            reported: BTreeSet::new(),
            view_memo: ViewMemo::default(),
        }
    }

    pub fn config(&self) -> &CitusConfig {
        &self.config
    }

    // ----- state hand-off -------------------------------------------------------------

    /// The whole state as versioned bytes, so that a new build continues where this one stopped
    /// (the compact binary format; see [`crate::state`]).
    pub fn export_state(&self) -> Vec<u8> {
        crate::state::export(self)
    }

    /// The state in the JSON format (1) every earlier build reads, for a swap to one of them.
    pub fn export_state_json(&self) -> Vec<u8> {
        crate::state::export_json(self)
    }

    /// Continue from a state this or an earlier build exported, in either format.
    pub fn import_state(bytes: &[u8]) -> Result<Handler, String> {
        crate::state::import(bytes)
    }

    // ----- inputs ---------------------------------------------------------------------

    /// The heartbeat: queue a task for the coordinator group and for every worker group whose
    /// leader is a running primary, so pg_dist_node follows the DCS even without events.
    pub fn handle_heartbeat(&mut self, now: Instant, view: &ClusterView) {
        if !self.config.is_coordinator() {
            return;
        }
        self.ready = true;
        // A view given as records breaks the chain of packed views the memo refers to.
        self.view_memo.seq = None;
        let mut members: Vec<MemberRef<'_>> = view
            .coordinator
            .members
            .iter()
            .map(Member::as_ref)
            .collect();
        self.heartbeat_coordinator(now, &members);
        let mut workers: Vec<&(GroupId, GroupView)> = view.workers.iter().collect();
        if !workers.windows(2).all(|w| w[0].0 < w[1].0) {
            workers.sort_by_key(|(g, _)| *g);
        }
        for (groupid, worker) in workers {
            members.clear();
            members.extend(worker.members.iter().map(Member::as_ref));
            self.heartbeat_worker(now, *groupid, worker.leader.as_deref(), &members);
        }
    }

    /// The heartbeat with the view packed (contract 0.3.0): the same decisions as
    /// [`Handler::handle_heartbeat`], but a worker group marked unchanged since the last
    /// packed view, which then matched the cache with nothing queued or in flight for it, is
    /// not read again: nothing about its decision can have changed. A malformed view is
    /// refused before anything changes.
    pub fn handle_heartbeat_packed(
        &mut self,
        now: Instant,
        view: PackedView<'_>,
    ) -> Result<(), InvalidInput> {
        if !self.config.is_coordinator() {
            packed_view::Groups::new(view.bytes)?.try_for_each(|e| e.map(|_| ()))?;
            return Ok(());
        }
        let groups = packed_view::Groups::new(view.bytes)?;
        self.heartbeat_in_place(now, view.seq, view.base, view.bytes.len(), groups)
            .map_err(InvalidInput::from)
    }

    /// The heartbeat with the view as text (contract 0.4.0), with the same skipping as
    /// [`Handler::handle_heartbeat_packed`]. A view with an escaped value (a tab, newline or
    /// backslash inside a name or URL) cannot be read in place and is read in full instead.
    pub fn handle_heartbeat_text(&mut self, now: Instant, text: &str) -> Result<(), InvalidInput> {
        let view = TextView::parse(text)?;
        if !self.config.is_coordinator() {
            view.groups().try_for_each(|e| e.map(|_| ()))?;
            return Ok(());
        }
        match self.heartbeat_in_place(now, view.seq, view.base, text.len(), view.groups()) {
            Ok(()) => Ok(()),
            Err(TextError::Escaped) => {
                let owned = view_text::owned_view(text)?;
                self.handle_heartbeat(now, &owned);
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Reads a view in place (packed or text): a worker group marked unchanged since the last
    /// such view, which then matched the cache with nothing queued or in flight for it, is not
    /// read again: nothing about its decision can have changed. Pass 1 reads everything that
    /// must be read, so a malformed view changes nothing.
    fn heartbeat_in_place<'a, G: InPlaceGroup<'a>>(
        &mut self,
        now: Instant,
        seq: u64,
        base: Option<u64>,
        size: usize,
        groups: impl Iterator<Item = Result<G, G::Error>>,
    ) -> Result<(), G::Error> {
        let trusted = base.is_some() && base == self.view_memo.seq;
        let settled = &self.view_memo.matched;
        let mut at_settled = 0;
        let mut members: Vec<MemberRef<'a>> = Vec::new();
        // Only what is read is kept (a steady view reads nothing); the list of groups in
        // order, read or not, reuses its allocation from call to call.
        let mut order = std::mem::take(&mut self.view_memo.order);
        order.clear();
        let mut reads: Vec<ReadGroup<'a>> = Vec::new();
        for (i, e) in groups.enumerate() {
            let e = match e {
                Ok(e) => e,
                Err(bad) => {
                    self.view_memo.order = order;
                    return Err(bad);
                }
            };
            let id = e.id();
            let skip = i > 0 && trusted && e.unchanged() && {
                while at_settled < settled.len() && settled[at_settled] < id {
                    at_settled += 1;
                }
                settled.get(at_settled) == Some(&id)
                    && !self.schedule_load
                    && self.in_flight.as_ref().is_none_or(|f| f.groupid() != id)
                    && (self.queue.is_empty() || self.queue.get(id).is_none())
            };
            if !skip {
                if members.capacity() == 0 {
                    // Room for every member at once (a member takes at least ~60 bytes of a
                    // view): one allocation instead of a dozen doublings when all groups are new.
                    members.reserve(size / 64);
                    reads.reserve(size / 256);
                }
                let from = members.len();
                let leader = match e.decode(&mut members) {
                    Ok(l) => l,
                    Err(bad) => {
                        self.view_memo.order = order;
                        return Err(bad);
                    }
                };
                reads.push((leader, from, members.len()));
            }
            order.push((id, !skip));
        }
        // Pass 2: act, exactly as the plain heartbeat would.
        self.ready = true;
        let mut matched = std::mem::take(&mut self.view_memo.spare);
        matched.clear();
        let mut reads = reads.into_iter();
        for (i, &(g, read)) in order.iter().enumerate() {
            match (read, i) {
                (false, _) => {
                    // What the plain heartbeat leaves behind for a group matching its cache.
                    self.next_task_id += 1;
                    matched.push(g);
                }
                (true, 0) => {
                    let (_, from, to) = reads.next().expect("read in pass 1");
                    self.heartbeat_coordinator(now, &members[from..to]);
                }
                (true, _) => {
                    let (leader, from, to) = reads.next().expect("read in pass 1");
                    if self.heartbeat_worker(now, g, leader, &members[from..to]) {
                        matched.push(g);
                    }
                }
            }
        }
        self.view_memo.order = order;
        self.view_memo.spare = std::mem::replace(&mut self.view_memo.matched, matched);
        self.view_memo.seq = Some(seq);
        Ok(())
    }

    fn heartbeat_coordinator(&mut self, now: Instant, members: &[MemberRef<'_>]) {
        let url = self.connect_url.clone();
        let name = self.name.clone();
        match self.primary_from_url(&url, EventKind::AfterPromote) {
            Some(primary) => {
                let task = self.build_task(
                    COORDINATOR_GROUP,
                    primary,
                    members,
                    &name,
                    EventKind::AfterPromote,
                    None,
                    None,
                );
                self.add_task(task, now);
            }
            None => self.report(format!("coordinator {name}: no usable address in {url:?}")),
        }
    }

    /// One worker group of a heartbeat; true when it already matches the cache with nothing
    /// queued or in flight for it (what the packed heartbeat remembers).
    fn heartbeat_worker(
        &mut self,
        now: Instant,
        groupid: GroupId,
        leader: Option<&str>,
        members: &[MemberRef<'_>],
    ) -> bool {
        let Some(leader) = leader_of(leader, members) else {
            return false;
        };
        if !(leader.has_conn() && leader.is_primary_role() && leader.is_running()) {
            return false;
        }
        if self.heartbeat_matches_cache(groupid, members, leader) {
            // What building the task and dropping it in `add_task` would have left behind.
            self.next_task_id += 1;
            return true;
        }
        let Some(primary) = self.primary_from_member(groupid, leader, EventKind::AfterPromote)
        else {
            return false;
        };
        let task = self.build_task(
            groupid,
            primary,
            members,
            leader.name,
            EventKind::AfterPromote,
            None,
            None,
        );
        self.add_task(task, now);
        false
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
        let members: Vec<MemberRef<'_>>;
        let group = match view.worker(ev.group) {
            Some(w) => {
                members = w.members.iter().map(Member::as_ref).collect();
                Some((w.leader.as_deref(), &members[..]))
            }
            None => None,
        };
        Ok(self.act_on_event(now, ev, group))
    }

    /// [`Handler::handle_event`] with the view packed; only the event's group is read.
    pub fn handle_event_packed(
        &mut self,
        now: Instant,
        view: PackedView<'_>,
        body: &str,
    ) -> Result<EventOutcome, InvalidInput> {
        let ev = parse_event(body)?;
        let entries = packed_view::groups(view.bytes)?;
        let mut members: Vec<MemberRef<'_>> = Vec::new();
        let group = match entries.binary_search_by_key(&ev.group, |e| e.id) {
            Ok(i) if ev.group != COORDINATOR_GROUP => Some(entries[i].decode(&mut members)?),
            _ => None,
        };
        Ok(self.act_on_event(now, ev, group.map(|leader| (leader, &members[..]))))
    }

    /// [`Handler::handle_event`] with the view as text; only the event's group is read.
    pub fn handle_event_text(
        &mut self,
        now: Instant,
        text: &str,
        body: &str,
    ) -> Result<EventOutcome, InvalidInput> {
        let ev = parse_event(body)?;
        let view = TextView::parse(text)?;
        let mut found = None;
        for g in view.groups() {
            let g = g?;
            if g.id == ev.group && g.id != COORDINATOR_GROUP {
                found = Some(g);
            }
        }
        let mut members: Vec<MemberRef<'_>> = Vec::new();
        let group = match found.map(|g| g.decode(&mut members)) {
            None => None,
            Some(Ok(leader)) => Some(leader),
            Some(Err(TextError::Escaped)) => {
                let owned = view_text::owned_view(text)?;
                return self.handle_event(now, &owned, body);
            }
            Some(Err(e)) => return Err(e.into()),
        };
        Ok(self.act_on_event(now, ev, group.map(|leader| (leader, &members[..]))))
    }

    /// This node's connection URL changed: the next heartbeat registers the coordinator
    /// under it. A URL with no usable host is refused and changes nothing.
    pub fn set_connect_url(&mut self, url: &str) -> Result<(), InvalidInput> {
        parse_conn_url(url).map_err(|e| InvalidInput::new("connect-url", e.to_string()))?;
        self.connect_url = url.to_string();
        Ok(())
    }

    fn act_on_event(
        &mut self,
        now: Instant,
        ev: WorkerEvent,
        worker: Option<(Option<&str>, &[MemberRef<'_>])>,
    ) -> EventOutcome {
        if !self.config.is_coordinator() {
            return EventOutcome::Discarded("this node is not the coordinator".into());
        }
        if !self.ready {
            return self.discard(format!(
                "{} for group {}: not ready, no heartbeat yet",
                ev.kind.as_str(),
                ev.group
            ));
        }
        let Some((leader_name, members)) = worker else {
            return self.discard(format!("group {} is not in the DCS view", ev.group));
        };
        let leader = match leader_of(leader_name, members) {
            Some(l) if l.name == ev.leader && l.has_conn() => l,
            _ => {
                return self.discard(format!(
                    "{} for group {} from {:?}: the DCS leader is {:?}",
                    ev.kind.as_str(),
                    ev.group,
                    ev.leader,
                    leader_name
                ))
            }
        };
        let Some(primary) = self.primary_from_member(ev.group, leader, ev.kind) else {
            return self.discard(format!("group {}: leader has no usable address", ev.group));
        };
        let mut task = self.build_task(
            ev.group,
            primary,
            members,
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
                format!(
                    "{} for group {} from {} queued",
                    ev.kind.as_str(),
                    ev.group,
                    ev.leader
                ),
            );
            EventOutcome::Queued(ticket)
        } else {
            EventOutcome::Unchanged
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
        self.view_memo.forget_all();
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
        if !crate::compat::REFERENCE_PORT {
            self.schedule_reload();
        }
    }

    // ----- outputs --------------------------------------------------------------------

    /// The next statement to run, or None when this turn is over.
    pub fn poll_statement(&mut self, now: Instant) -> Option<Statement> {
        if self.awaiting.is_some() {
            self.log(
                Level::Error,
                "poll_statement while a statement is still running".into(),
            );
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
                        let expired = now >= f.deadline
                            && (!crate::compat::REFERENCE_PORT || !self.queue.is_empty());
                        if self.schedule_load || expired {
                            let why = if expired {
                                "its deadline passed"
                            } else {
                                "a metadata reload was requested"
                            };
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

    /// The statements to run next, in order: the one `poll_statement` gives, and when that is
    /// a step of a planned change, the rest of its plan, since no result of a plan's statement
    /// changes what its next statement is. Empty when the turn is over.
    pub fn poll_statements(&mut self, now: Instant) -> Vec<Statement> {
        let Some(first) = self.poll_statement(now) else {
            return Vec::new();
        };
        let mut out = vec![first];
        if let (Some(Awaiting::Step(_)), Some(work)) = (&self.awaiting, &self.work) {
            out.extend(work.steps.iter().map(|s| step_statement(s, &work.task)));
        }
        self.batch_ahead = out.len() - 1;
        self.metrics.statements += self.batch_ahead as u64;
        out
    }

    /// The results of the statements `poll_statements` returned, in order: all of them, or
    /// those up to and including the first that failed. Statements of the batch without a
    /// result are issued again by the next poll.
    pub fn handle_results(&mut self, now: Instant, results: Vec<StatementResult>) {
        let ahead = std::mem::take(&mut self.batch_ahead);
        let mut results = results.into_iter();
        let Some(first) = results.next() else {
            self.log(Level::Error, "handle_results without a result".into());
            return;
        };
        self.handle_result(now, first);
        for (i, result) in results.enumerate() {
            let step = match self.work.as_mut() {
                Some(w) if i < ahead => w.steps.pop_front(),
                _ => None,
            };
            let Some(step) = step else {
                self.log(
                    Level::Error,
                    "handle_results got more results than statements were issued".into(),
                );
                return;
            };
            self.awaiting = Some(Awaiting::Step(step));
            self.handle_result(now, result);
        }
    }

    /// When the host must run a turn even without new input: an open transaction's deadline,
    /// a retry Citus asked for, or a reload that failed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let deadline = self.in_flight.as_ref().map(|t| t.deadline);
        let retry = self.queue.tasks().filter_map(|t| t.not_before).min();
        let reload = if self.schedule_load {
            self.reload_not_before
        } else {
            None
        };
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
    /// When the open transaction (if any) is rolled back at the latest.
    pub fn in_flight_deadline(&self) -> Option<Instant> {
        self.in_flight.as_ref().map(|t| t.deadline)
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

    fn primary_from_member(
        &mut self,
        group: GroupId,
        m: &MemberRef<'_>,
        kind: EventKind,
    ) -> Option<Node> {
        match m.address() {
            Ok(a) => Some(Node::new(a, Self::role_for(kind))),
            Err(e) => {
                self.report(format!("group {group}: leader {} skipped: {e}", m.name));
                None
            }
        }
    }

    /// The steady state of the heartbeat, decided without building the task: true only when
    /// the group's desired topology is exactly its cached one and nothing is queued or in flight
    /// for it, i.e. when `build_task` + `add_task` would queue nothing. Any member whose address
    /// is not in the plain form (or does not parse) sends the group down the full path, which
    /// also reports it. Allocates nothing: this runs for every group on every heartbeat.
    fn heartbeat_matches_cache<'v>(
        &self,
        g: GroupId,
        members: &[MemberRef<'v>],
        leader: &MemberRef<'v>,
    ) -> bool {
        use crate::conninfo::plain_address;
        if self.schedule_load {
            return false;
        }
        let Some(cached) = self.cache.get(&g) else {
            return false;
        };
        if self.queue.get(g).is_some() || self.in_flight.as_ref().is_some_and(|f| f.groupid() == g)
        {
            return false;
        }
        if cached.event != EventKind::AfterPromote {
            return false;
        }
        let nodes = cached.group.nodes();
        let (Some(url), None) = (leader.conn_url, leader.conn_kwargs) else {
            return false;
        };
        let Some(primary) = plain_address(url) else {
            return false;
        };
        // Desired nodes, checked one by one against the cached set (addresses are unique in
        // it); a repeated address would be merged by the task's set semantics: full path.
        let mut seen: [(&'v str, i32); 8] = [("", 0); 8];
        let mut count = 0;
        let mut wanted = |host: &'v str, port: i32, role: Role| -> bool {
            if count == seen.len() || seen[..count].iter().any(|&(h, p)| h == host && p == port) {
                return false;
            }
            let found = nodes
                .iter()
                .any(|n| n.addr.port == port && n.role == role && n.addr.host == host);
            if found {
                seen[count] = (host, port);
                count += 1;
            }
            found
        };
        if !wanted(primary.0, primary.1, Role::Primary) {
            return false;
        }
        for m in members {
            if !m.is_eligible_secondary(leader.name) {
                continue;
            }
            let (Some(url), None) = (m.conn_url, m.conn_kwargs) else {
                return false;
            };
            let Some((host, port)) = plain_address(url) else {
                return false;
            };
            if !wanted(host, port, Role::Secondary) {
                return false;
            }
        }
        count == nodes.len()
    }

    /// The desired topology: the primary plus every running, reachable member that is not the
    /// leader and not tagged noloadbalance.
    #[allow(clippy::too_many_arguments)]
    fn build_task(
        &mut self,
        groupid: GroupId,
        primary: Node,
        members: &[MemberRef<'_>],
        leader_name: &str,
        event: EventKind,
        timeout_ms: Option<u64>,
        cooldown_ms: Option<i32>,
    ) -> Task {
        let mut group = Group::new(groupid);
        group.insert(primary);
        for m in members {
            if !m.is_eligible_secondary(leader_name) {
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
        let queued = self.queue.get(g);
        if !task.from_event() {
            // A heartbeat never overrides a task from a worker event ...
            if queued.is_some_and(Task::from_event) {
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
        if let Some(queued) = queued {
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
        // `transition` adjusts the old topology as it plans; it works on a copy so that the
        // cache still says what is committed if this transaction is rolled back later.
        let mut old: Group = match (&self.in_flight, self.cache.get(&g)) {
            (Some(f), _) => f.group.clone(),
            (None, Some(c)) => c.group.clone(),
            (None, None) => Group::new(g),
        };
        let txn_has_update = self.txn.open && self.txn.has_update;
        let plan = transition(&mut task.group, &mut old, txn_has_update);
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
        if membership && e.is_metadata_out_of_sync() && !crate::compat::REFERENCE_PORT {
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
                format!(
                    "group {g}: Citus is syncing metadata; retrying in {METADATA_SYNC_WAIT_MS} ms"
                ),
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
                self.view_memo.forget_group(g);
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
        self.view_memo.forget_all();
        let mut by_group: BTreeMap<GroupId, Vec<&PgDistRow>> = BTreeMap::new();
        let mut taken: BTreeSet<(&str, i32)> = BTreeSet::new();
        for r in rows {
            by_group.entry(r.groupid).or_default().push(r);
            taken.insert((r.nodename.as_str(), r.nodeport));
        }
        self.cache = by_group
            .into_iter()
            .map(|(g, rows)| {
                let task = Task {
                    id: 0,
                    group: Group::from_rows_with(g, rows, |h, p| taken.contains(&(h, p))),
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

/// The numbered decisions of the handler (issue 2 items 4, 5, 7, 8, 9, 12), the reference's
/// tricky cases and the deliberate departures from it (issue 7), each driven through the
/// public Handler API against the Citus simulator, as a host would.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::dcs::ConnKwargs;
    use crate::node::NodeRole;
    use citus_sim::{Row, SimOptions, Simulator};
    use Statement::{Begin, Commit, LoadMetadata, Rollback};

    const COORD_URL: &str = "postgres://10.0.0.1:5432/postgres";
    const T0: Instant = 100_000;

    // ----- the host: statements executed against the simulator --------------------------

    struct Host {
        h: Handler,
        sim: Simulator,
        now: Instant,
        /// Statement kinds whose next occurrence fails as a lost connection.
        armed: Vec<&'static str>,
        /// Results of the last turn, in order.
        results: Vec<StatementResult>,
    }

    fn kind(s: &Statement) -> &'static str {
        match s {
            Statement::LoadMetadata => "load",
            Statement::Begin => "begin",
            Statement::Commit => "commit",
            Statement::Rollback => "rollback",
            Statement::AddNode { .. } => "add",
            Statement::UpdateNode { .. } => "update",
            Statement::RemoveNode { .. } => "remove",
        }
    }

    fn role_of(s: &str) -> citus_sim::NodeRole {
        s.parse().expect("role label")
    }

    fn config(group: GroupId) -> CitusConfig {
        CitusConfig {
            group,
            database: "citus".into(),
        }
    }

    impl Host {
        fn new(opts: SimOptions, rows: &[(i32, GroupId, &str, &str)]) -> Self {
            let mut sim = Simulator::with_options(opts);
            sim.replace_rows(rows_of(rows));
            Host {
                h: Handler::new(config(0), "coord1", COORD_URL),
                sim,
                now: T0,
                armed: Vec::new(),
                results: Vec::new(),
            }
        }

        fn with_rows(rows: &[(i32, GroupId, &str, &str)]) -> Self {
            Self::new(SimOptions::default(), rows)
        }

        /// What the real host does with one statement: run it; on any error the open
        /// transaction is rolled back. An armed kind fails as a lost connection instead.
        fn exec(&mut self, stmt: &Statement) -> StatementResult {
            if let Some(i) = self.armed.iter().position(|k| *k == kind(stmt)) {
                self.armed.remove(i);
                self.sim.lose_session();
                return StatementResult::Failed(StatementError {
                    message: "server closed the connection unexpectedly".into(),
                    sqlstate: None,
                    connection_lost: true,
                });
            }
            crate::sim_exec::execute(&mut self.sim, stmt)
        }

        /// One loop turn at `now`: the statements sent, in order.
        fn turn(&mut self) -> Vec<Statement> {
            self.sim.set_time_ms(self.now);
            self.results.clear();
            let mut sent = Vec::new();
            while let Some(stmt) = self.h.poll_statement(self.now) {
                assert!(sent.len() < 100, "the turn does not end: {sent:?}");
                let result = self.exec(&stmt);
                self.results.push(result.clone());
                sent.push(stmt);
                self.h.handle_result(self.now, result);
            }
            assert!(!self.h.is_busy());
            sent
        }

        /// A turn whose statements must all succeed.
        fn clean_turn(&mut self) -> Vec<Statement> {
            let sent = self.turn();
            for (s, r) in sent.iter().zip(&self.results) {
                assert!(
                    !matches!(r, StatementResult::Failed(_) | StatementResult::RolledBack),
                    "{s:?} -> {r:?}"
                );
            }
            sent
        }

        fn heartbeat(&mut self, view: &ClusterView) {
            self.h.handle_heartbeat(self.now, view);
        }

        fn event(&mut self, view: &ClusterView, body: &str) -> EventOutcome {
            self.h
                .handle_event(self.now, view, body)
                .expect("a valid event")
        }

        fn queued(&mut self, view: &ClusterView, body: &str) -> Ticket {
            match self.event(view, body) {
                EventOutcome::Queued(t) => t,
                other => panic!("{body} was not queued: {other:?}"),
            }
        }

        fn demote(&mut self) {
            self.sim.lose_session();
            self.h.handle_demote();
        }

        /// `leader` reports `after_promote` for group 1 in view `v`: the open transaction
        /// commits, and the next heartbeat removes the row the old primary was parked in
        /// (`parked`), leaving `primary` (nodeid 2) alone in the group.
        fn promote_and_settle(
            &mut self,
            v: &ClusterView,
            leader: &str,
            parked: &str,
            primary: &str,
        ) {
            self.event(v, &ev("after_promote", 1, leader));
            assert_eq!(self.clean_turn(), vec![Commit]);
            self.heartbeat(v);
            assert_eq!(self.clean_turn(), vec![rm(parked)]);
            assert_eq!(self.group_rows(1), vec![(2, primary.into(), "primary")]);
        }

        /// Committed pg_dist_node: (nodeid, group, name, role).
        fn rows(&self) -> Rows {
            self.sim
                .committed_rows()
                .iter()
                .map(|r| (r.nodeid, r.groupid, r.nodename.clone(), r.noderole.as_str()))
                .collect()
        }

        fn group_rows(&self, g: GroupId) -> Vec<(i32, String, &'static str)> {
            self.rows()
                .into_iter()
                .filter(|r| r.1 == g)
                .map(|(id, _, n, role)| (id, n, role))
                .collect()
        }

        fn warnings(&mut self) -> Vec<String> {
            self.h
                .drain_logs()
                .into_iter()
                .filter(|l| l.level == Level::Warn)
                .map(|l| l.message)
                .collect()
        }
    }

    // ----- statements, members, views, events -------------------------------------------

    fn upd(nodeid: i32, host: &str) -> Statement {
        upd_cd(nodeid, host, 10_000)
    }
    fn upd_cd(nodeid: i32, host: &str, cooldown_ms: i32) -> Statement {
        Statement::UpdateNode {
            nodeid,
            host: host.into(),
            port: 5432,
            force: true,
            cooldown_ms,
        }
    }
    fn add(host: &str, groupid: GroupId, role: NodeRole) -> Statement {
        Statement::AddNode {
            host: host.into(),
            port: 5432,
            groupid,
            role,
        }
    }
    fn add_s(host: &str, groupid: GroupId) -> Statement {
        add(host, groupid, NodeRole::Secondary)
    }
    fn add_p(host: &str, groupid: GroupId) -> Statement {
        add(host, groupid, NodeRole::Primary)
    }
    fn rm(host: &str) -> Statement {
        Statement::RemoveNode {
            host: host.into(),
            port: 5432,
        }
    }

    /// A running replica reachable at `host`.
    fn m(name: &str, host: &str) -> Member {
        Member {
            name: name.into(),
            conn_url: Some(format!("postgres://{host}:5432/postgres")),
            conn_kwargs: None,
            role: Some("replica".into()),
            state: Some("running".into()),
            noloadbalance: false,
        }
    }
    fn primary(mut m: Member) -> Member {
        m.role = Some("primary".into());
        m
    }
    fn stopped(mut m: Member) -> Member {
        m.state = Some("stopped".into());
        m
    }
    fn nolb(mut m: Member) -> Member {
        m.noloadbalance = true;
        m
    }
    fn grp(leader: Option<&str>, members: Vec<Member>) -> GroupView {
        GroupView {
            leader: leader.map(str::to_string),
            members,
        }
    }
    fn coord_group(standbys: Vec<Member>) -> GroupView {
        let mut members = vec![primary(m("coord1", "10.0.0.1"))];
        members.extend(standbys);
        grp(Some("coord1"), members)
    }
    fn view(workers: Vec<(GroupId, GroupView)>) -> ClusterView {
        ClusterView {
            coordinator: coord_group(vec![]),
            workers,
        }
    }
    fn g2() -> (GroupId, GroupView) {
        (2, grp(Some("w2a"), vec![primary(m("w2a", "10.0.2.1"))]))
    }
    /// Group 1 with leader w1a and replica w1b; group 2 with leader w2a.
    fn base() -> ClusterView {
        view(vec![
            (
                1,
                grp(
                    Some("w1a"),
                    vec![primary(m("w1a", "10.0.1.1")), m("w1b", "10.0.1.2")],
                ),
            ),
            g2(),
        ])
    }
    /// Group 1 as given, group 2 as in `base`.
    fn with_g1(leader: Option<&str>, members: Vec<Member>) -> ClusterView {
        view(vec![(1, grp(leader, members)), g2()])
    }

    const BASE_ROWS: &[(i32, GroupId, &str, &str)] = &[
        (1, 0, "10.0.0.1", "primary"),
        (2, 1, "10.0.1.1", "primary"),
        (3, 1, "10.0.1.2", "secondary"),
        (4, 2, "10.0.2.1", "primary"),
    ];

    /// pg_dist_node matching `base()`, loaded by the first heartbeat's turn.
    fn settled() -> Host {
        let mut h = Host::with_rows(BASE_ROWS);
        h.heartbeat(&base());
        assert_eq!(h.clean_turn(), vec![LoadMetadata]);
        h
    }

    fn ev(kind: &str, group: GroupId, leader: &str) -> String {
        format!(
            r#"{{"type":"{kind}","group":{group},"leader":"{leader}","timeout":30,"cooldown":10}}"#
        )
    }

    // ----- 4. the metadata cache --------------------------------------------------------

    #[test]
    fn cache_is_loaded_at_start_before_anything_else() {
        let mut h = Host::with_rows(BASE_ROWS);
        // Before the first heartbeat the loop has nothing to do, not even the load.
        assert_eq!(h.turn(), vec![]);
        h.heartbeat(&base());
        // The heartbeat's tasks were queued because a load was due; they match the loaded
        // rows, so the load is all that happens.
        assert_eq!(h.h.queued_tasks(), 3);
        assert_eq!(h.clean_turn(), vec![LoadMetadata]);
        assert_eq!(h.h.queued_tasks(), 0);
        let cached: Vec<(GroupId, Option<i32>, String)> =
            h.h.cached_rows()
                .into_iter()
                .map(|(g, n)| (g, n.nodeid, n.addr.host))
                .collect();
        assert_eq!(
            cached,
            vec![
                (0, Some(1), "10.0.0.1".into()),
                (1, Some(2), "10.0.1.1".into()),
                (1, Some(3), "10.0.1.2".into()),
                (2, Some(4), "10.0.2.1".into()),
            ]
        );
        h.heartbeat(&base());
        assert_eq!(h.h.queued_tasks(), 0);
        assert_eq!(h.turn(), vec![]);
    }

    #[test]
    fn cache_is_reloaded_after_a_failed_statement_and_the_heartbeat_retries() {
        let mut h = settled();
        let replaced = with_g1(
            Some("w1a"),
            vec![primary(m("w1a", "10.0.1.1")), m("w1c", "10.0.1.3")],
        );
        h.heartbeat(&replaced);
        h.armed.push("update");
        // The task is dropped and the loop goes on with a reload.
        assert_eq!(h.turn(), vec![upd(3, "10.0.1.3"), LoadMetadata]);
        assert!(matches!(h.results[0], StatementResult::Failed(_)));
        assert!(matches!(h.results[1], StatementResult::Metadata(_)));
        assert_eq!(h.h.metrics().failed_statements, 1);
        assert_eq!(h.h.queued_tasks(), 0);
        assert_eq!(h.turn(), vec![]);
        // The next heartbeat retries it.
        h.heartbeat(&replaced);
        assert_eq!(h.clean_turn(), vec![upd(3, "10.0.1.3")]);
        assert_eq!(
            h.group_rows(1),
            vec![
                (2, "10.0.1.1".into(), "primary"),
                (3, "10.0.1.3".into(), "secondary")
            ]
        );
    }

    #[test]
    fn cache_is_reloaded_on_request() {
        let mut h = settled();
        h.h.schedule_reload();
        assert_eq!(h.clean_turn(), vec![LoadMetadata]);
        assert_eq!(h.turn(), vec![]);
        // An outside change is only seen after a reload.
        h.sim.replace_rows(vec![]);
        h.h.schedule_reload();
        h.heartbeat(&base());
        assert_eq!(
            h.clean_turn(),
            vec![
                LoadMetadata,
                add_p("10.0.0.1", 0),
                Begin,
                add_p("10.0.1.1", 1),
                add_s("10.0.1.2", 1),
                Commit,
                add_p("10.0.2.1", 2),
            ]
        );
    }

    #[test]
    fn failed_load_is_retried_after_a_pause() {
        let mut h = Host::with_rows(BASE_ROWS);
        h.heartbeat(&base());
        h.armed.push("load");
        assert_eq!(h.turn(), vec![LoadMetadata]);
        assert_eq!(h.h.poll_timeout(), Some(T0 + RELOAD_RETRY_MS));
        h.now += RELOAD_RETRY_MS - 1;
        assert_eq!(h.turn(), vec![]);
        h.now += 1;
        assert_eq!(h.clean_turn(), vec![LoadMetadata]);
        assert_eq!(h.h.poll_timeout(), None);
    }

    #[test]
    fn demote_then_promotion_reloads_before_acting() {
        // Issue 7 item 7: the reference empties its cache on demote without scheduling a
        // reload, so after a later promotion it acts on an empty view.
        let mut h = settled();
        h.event(&base(), &ev("before_demote", 1, "w1a"));
        assert_eq!(h.clean_turn(), vec![Begin, upd(2, "10.0.1.1-demoted")]);
        h.demote();
        assert!(h.h.cached_rows().is_empty());
        // Meanwhile another coordinator handled a switchover of group 1.
        let switched = with_g1(
            Some("w1b"),
            vec![m("w1a", "10.0.1.1"), primary(m("w1b", "10.0.1.2"))],
        );
        h.sim.replace_rows(vec![
            Row {
                nodeid: 1,
                groupid: 0,
                nodename: "10.0.0.1".into(),
                nodeport: 5432,
                noderole: citus_sim::NodeRole::Primary,
            },
            Row {
                nodeid: 2,
                groupid: 1,
                nodename: "10.0.1.2".into(),
                nodeport: 5432,
                noderole: citus_sim::NodeRole::Primary,
            },
            Row {
                nodeid: 3,
                groupid: 1,
                nodename: "10.0.1.1".into(),
                nodeport: 5432,
                noderole: citus_sim::NodeRole::Secondary,
            },
            Row {
                nodeid: 4,
                groupid: 2,
                nodename: "10.0.2.1".into(),
                nodeport: 5432,
                noderole: citus_sim::NodeRole::Primary,
            },
        ]);
        // Promoted again: the first thing is a reload, after which nothing needs doing.
        h.heartbeat(&switched);
        assert_eq!(h.clean_turn(), vec![LoadMetadata]);
        h.heartbeat(&switched);
        assert_eq!(h.turn(), vec![]);
    }

    // ----- 5. the task queue ------------------------------------------------------------

    #[test]
    fn newer_task_replaces_the_queued_one_keeping_its_place() {
        let mut h = settled();
        let v1 = view(vec![
            (
                1,
                grp(
                    Some("w1a"),
                    vec![primary(m("w1a", "10.0.1.1")), m("w1c", "10.0.1.3")],
                ),
            ),
            (
                2,
                grp(
                    Some("w2a"),
                    vec![primary(m("w2a", "10.0.2.1")), m("w2b", "10.0.2.2")],
                ),
            ),
        ]);
        h.heartbeat(&v1);
        assert_eq!(h.h.queue.groups_in_order().collect::<Vec<_>>(), vec![1, 2]);
        // Group 1 changes again: its task is replaced where it stands.
        let mut v2 = v1.clone();
        v2.workers[0].1.members[1] = m("w1d", "10.0.1.4");
        h.heartbeat(&v2);
        assert_eq!(h.h.queue.groups_in_order().collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(h.h.queued_tasks(), 2);
        assert_eq!(
            h.clean_turn(),
            vec![upd(3, "10.0.1.4"), add_s("10.0.2.2", 2)]
        );

        // An event task is replaced by a newer event; the replaced ticket is done at once.
        let t1 = h.queued(&v2, &ev("before_demote", 1, "w1a"));
        let t2 = h.queued(&v2, &ev("after_promote", 1, "w1a").replace("30", "31"));
        let _ = t2;
        assert_eq!(h.h.poll_completed(), vec![t1]);
        assert_eq!(h.h.queued_tasks(), 1);
    }

    #[test]
    fn heartbeat_never_replaces_an_event_task() {
        let mut h = settled();
        let w1b_down = with_g1(
            Some("w1a"),
            vec![primary(m("w1a", "10.0.1.1")), stopped(m("w1b", "10.0.1.2"))],
        );
        let t = h.queued(&w1b_down, &ev("after_promote", 1, "w1a"));
        // The heartbeat still sees w1b running: its task would undo the event's.
        h.heartbeat(&base());
        assert_eq!(h.h.queued_tasks(), 1);
        assert_eq!(h.clean_turn(), vec![rm("10.0.1.2")]);
        assert_eq!(h.h.poll_completed(), vec![t]);
        // Once the event's task is done, heartbeats are queued again.
        h.heartbeat(&base());
        assert_eq!(h.clean_turn(), vec![add_s("10.0.1.2", 1)]);
    }

    #[test]
    fn heartbeat_for_the_in_flight_group_is_refused_until_its_deadline() {
        let mut h = settled();
        h.event(&base(), &ev("before_demote", 1, "w1a"));
        assert_eq!(h.clean_turn(), vec![Begin, upd(2, "10.0.1.1-demoted")]);
        let deadline = h.h.in_flight_deadline().unwrap();
        assert_eq!(deadline, T0 + 30_000);
        // The DCS may not show the new roles yet: whatever it says, group 1 waits.
        let changed = with_g1(
            Some("w1a"),
            vec![
                primary(m("w1a", "10.0.1.1")),
                m("w1b", "10.0.1.2"),
                m("w1c", "10.0.1.3"),
            ],
        );
        for v in [base(), changed.clone()] {
            h.heartbeat(&v);
            assert_eq!(h.h.queued_tasks(), 0);
        }
        h.now = deadline - 1;
        h.heartbeat(&changed);
        assert_eq!(h.h.queued_tasks(), 0);
        h.now = deadline;
        h.heartbeat(&changed);
        assert_eq!(h.h.queued_tasks(), 1);
        assert_eq!(h.clean_turn(), vec![Rollback, add_s("10.0.1.3", 1)]);
    }

    #[test]
    fn task_equal_to_the_cache_is_not_queued() {
        let mut h = settled();
        h.heartbeat(&base());
        assert_eq!(h.h.queued_tasks(), 0);
        assert_eq!(
            h.event(&base(), &ev("after_promote", 1, "w1a")),
            EventOutcome::Unchanged
        );
        assert_eq!(h.h.queued_tasks(), 0);
        assert_eq!(h.turn(), vec![]);
    }

    #[test]
    fn task_equal_to_the_cache_is_dropped_when_picked() {
        let mut h = settled();
        h.h.schedule_reload();
        // While a load is due every task is queued, even one that will turn out equal.
        let t = h.queued(&base(), &ev("after_promote", 1, "w1a"));
        assert_eq!(h.clean_turn(), vec![LoadMetadata]);
        assert_eq!(h.h.queued_tasks(), 0);
        assert_eq!(h.h.poll_completed(), vec![t]);
    }

    #[test]
    fn picking_order_is_in_flight_group_then_coordinator_then_oldest() {
        let mut h = settled();
        h.event(&base(), &ev("before_demote", 2, "w2a"));
        assert_eq!(h.clean_turn(), vec![Begin, upd(4, "10.0.2.1-demoted")]);
        // Queued in this order: group 1, the coordinator group, group 2.
        let mut v = with_g1(
            Some("w1a"),
            vec![
                primary(m("w1a", "10.0.1.1")),
                m("w1b", "10.0.1.2"),
                m("w1c", "10.0.1.3"),
            ],
        );
        h.heartbeat(&v);
        v.coordinator = coord_group(vec![m("coord2", "10.0.0.2")]);
        h.heartbeat(&v);
        h.event(&v, &ev("after_promote", 2, "w2a"));
        assert_eq!(
            h.h.queue.groups_in_order().collect::<Vec<_>>(),
            vec![1, 0, 2]
        );
        assert_eq!(
            h.clean_turn(),
            vec![
                upd(4, "10.0.2.1"),
                Commit,
                add_s("10.0.0.2", 0),
                add_s("10.0.1.3", 1),
            ]
        );
    }

    // ----- 7. transactions --------------------------------------------------------------

    #[test]
    fn before_demote_opens_a_transaction_with_its_deadline() {
        let mut h = settled();
        h.event(&base(), &ev("before_demote", 1, "w1a"));
        assert_eq!(h.clean_turn(), vec![Begin, upd(2, "10.0.1.1-demoted")]);
        assert!(h.sim.in_transaction());
        assert_eq!(h.h.in_flight_group(), Some(1));
        assert_eq!(h.h.in_flight_deadline(), Some(T0 + 30_000));
        assert_eq!(h.h.poll_timeout(), Some(T0 + 30_000));
        // Other sessions still see the committed rows; ours sees the pause.
        assert_eq!(h.rows()[1].2, "10.0.1.1");
        assert_eq!(h.sim.rows()[1].nodename, "10.0.1.1-demoted");
    }

    #[test]
    fn before_promote_opens_a_transaction_when_none_is_open() {
        // A failover announced by the new primary only (no before_demote).
        let mut h = settled();
        let promoting = with_g1(
            Some("w1b"),
            vec![stopped(m("w1a", "10.0.1.1")), m("w1b", "10.0.1.2")],
        );
        h.event(&promoting, &ev("before_promote", 1, "w1b"));
        assert_eq!(
            h.clean_turn(),
            vec![
                Begin,
                upd(2, "10.0.1.1-demoted"),
                upd(3, "10.0.1.1"),
                upd(2, "10.0.1.2"),
            ]
        );
        assert_eq!(h.h.in_flight_deadline(), Some(T0 + 30_000));
        let promoted = with_g1(
            Some("w1b"),
            vec![stopped(m("w1a", "10.0.1.1")), primary(m("w1b", "10.0.1.2"))],
        );
        // The gone old primary is parked in a row that add/remove may only touch later.
        h.promote_and_settle(&promoted, "w1b", "10.0.1.1", "10.0.1.2");
    }

    #[test]
    fn after_promote_commits_the_transaction() {
        // The primary only restarted: before_demote, then after_promote from the same node.
        let mut h = settled();
        h.event(&base(), &ev("before_demote", 1, "w1a"));
        assert_eq!(h.clean_turn(), vec![Begin, upd(2, "10.0.1.1-demoted")]);
        h.event(&base(), &ev("after_promote", 1, "w1a"));
        assert_eq!(h.clean_turn(), vec![upd(2, "10.0.1.1"), Commit]);
        assert!(!h.sim.in_transaction());
        assert_eq!(h.h.in_flight_group(), None);
        assert_eq!(h.h.poll_timeout(), None);
        // An after_promote with nothing left to change sends only COMMIT.
        let promoting = with_g1(
            Some("w1b"),
            vec![stopped(m("w1a", "10.0.1.1")), m("w1b", "10.0.1.2")],
        );
        h.event(&promoting, &ev("before_promote", 1, "w1b"));
        assert_eq!(h.clean_turn().len(), 4);
        let promoted = with_g1(
            Some("w1b"),
            vec![m("w1a", "10.0.1.1"), primary(m("w1b", "10.0.1.2"))],
        );
        h.event(&promoted, &ev("after_promote", 1, "w1b"));
        assert_eq!(h.clean_turn(), vec![Commit]);
        assert_eq!(
            h.group_rows(1),
            vec![
                (2, "10.0.1.2".into(), "primary"),
                (3, "10.0.1.1".into(), "secondary")
            ]
        );
    }

    #[test]
    fn deadline_rolls_back_even_when_no_other_task_waits() {
        // Issue 7 item 2: the reference rolls back only when another task waits, so a
        // vanished leader keeps the group's writes paused.
        let mut h = settled();
        h.event(
            &base(),
            r#"{"type":"before_demote","group":1,"leader":"w1a","timeout":5,"cooldown":10}"#,
        );
        assert_eq!(h.clean_turn(), vec![Begin, upd(2, "10.0.1.1-demoted")]);
        h.heartbeat(&with_g1(None, vec![stopped(m("w1a", "10.0.1.1"))]));
        h.now = T0 + 4_999;
        assert_eq!(h.turn(), vec![]);
        assert!(h.sim.in_transaction());
        h.now = T0 + 5_000;
        assert_eq!(h.clean_turn(), vec![Rollback]);
        assert!(!h.sim.in_transaction());
        assert_eq!(h.h.metrics().deadline_rollbacks, 1);
        assert!(h
            .warnings()
            .iter()
            .any(|w| w.contains("group 1") && w.contains("deadline")));
        assert_eq!(h.rows(), Host::with_rows(BASE_ROWS).rows());
        assert_eq!(h.h.poll_timeout(), None);
    }

    #[test]
    fn deadline_rolls_back_while_other_tasks_wait() {
        let mut h = settled();
        h.event(&base(), &ev("before_demote", 1, "w1a"));
        assert_eq!(h.clean_turn(), vec![Begin, upd(2, "10.0.1.1-demoted")]);
        let g2_standby = view(vec![
            base().workers[0].clone(),
            (
                2,
                grp(
                    Some("w2a"),
                    vec![primary(m("w2a", "10.0.2.1")), m("w2b", "10.0.2.2")],
                ),
            ),
        ]);
        h.heartbeat(&g2_standby);
        // Other groups wait while a transaction is in flight ...
        assert_eq!(h.turn(), vec![]);
        // ... until its deadline.
        h.now = T0 + 30_000;
        assert_eq!(h.clean_turn(), vec![Rollback, add_s("10.0.2.2", 2)]);
        assert_eq!(h.h.metrics().deadline_rollbacks, 1);
    }

    #[test]
    fn reload_request_rolls_back_the_transaction() {
        let mut h = settled();
        h.event(&base(), &ev("before_demote", 1, "w1a"));
        assert_eq!(h.clean_turn(), vec![Begin, upd(2, "10.0.1.1-demoted")]);
        h.h.schedule_reload();
        assert_eq!(h.clean_turn(), vec![Rollback, LoadMetadata]);
        assert_eq!(h.h.metrics().deadline_rollbacks, 0);
        assert_eq!(h.h.in_flight_group(), None);
        assert!(!h.sim.in_transaction());
    }

    #[test]
    fn failed_statement_ends_the_transaction_reloads_and_the_heartbeat_retries() {
        let mut h = settled();
        let t = h.queued(&base(), &ev("before_demote", 1, "w1a"));
        h.armed.push("update");
        // The transaction is gone; the loop goes on with a reload.
        assert_eq!(
            h.turn(),
            vec![Begin, upd(2, "10.0.1.1-demoted"), LoadMetadata]
        );
        assert_eq!(h.h.in_flight_group(), None);
        assert!(!h.sim.in_transaction());
        // The waiting worker is released and the task is gone.
        assert_eq!(h.h.poll_completed(), vec![t]);
        assert_eq!(h.h.queued_tasks(), 0);
        assert_eq!(h.turn(), vec![]);

        // A failover seen by the heartbeat whose COMMIT fails is retried by the next one.
        let failed_over = with_g1(
            Some("w1b"),
            vec![stopped(m("w1a", "10.0.1.1")), primary(m("w1b", "10.0.1.2"))],
        );
        h.heartbeat(&failed_over);
        h.armed.push("commit");
        let switch = vec![
            Begin,
            upd(2, "10.0.1.1-demoted"),
            upd(3, "10.0.1.1"),
            upd(2, "10.0.1.2"),
            Commit,
        ];
        let mut then_load = switch.clone();
        then_load.push(LoadMetadata);
        assert_eq!(h.turn(), then_load);
        assert_eq!(h.rows(), Host::with_rows(BASE_ROWS).rows());
        assert_eq!(h.turn(), vec![]);
        h.heartbeat(&failed_over);
        assert_eq!(h.clean_turn(), switch);
        assert_eq!(h.group_rows(1)[0], (2, "10.0.1.2".into(), "primary"));
    }

    #[test]
    fn demote_clears_everything() {
        let mut h = settled();
        let t1 = h.queued(&base(), &ev("before_demote", 1, "w1a"));
        assert_eq!(h.clean_turn(), vec![Begin, upd(2, "10.0.1.1-demoted")]);
        assert_eq!(h.h.poll_completed(), vec![t1]);
        let v = view(vec![
            base().workers[0].clone(),
            (
                2,
                grp(
                    Some("w2a"),
                    vec![primary(m("w2a", "10.0.2.1")), m("w2b", "10.0.2.2")],
                ),
            ),
        ]);
        let t = h.queued(&v, &ev("after_promote", 2, "w2a"));
        h.demote();
        assert_eq!(h.h.queued_tasks(), 0);
        assert_eq!(h.h.in_flight_group(), None);
        assert!(h.h.cached_rows().is_empty());
        assert_eq!(h.h.poll_completed(), vec![t]);
        assert_eq!(h.h.poll_timeout(), None);
        assert_eq!(h.rows(), Host::with_rows(BASE_ROWS).rows());
        // Whatever happens next starts from a fresh load.
        assert_eq!(h.clean_turn(), vec![LoadMetadata]);
    }

    // ----- 8. worker events -------------------------------------------------------------

    #[test]
    fn invalid_events_are_refused_with_the_field_and_change_nothing() {
        let mut h = settled();
        for (body, field) in [
            // Issue 7 item 3: the reference would open a transaction for any unknown type.
            (
                r#"{"type":"restart","group":1,"leader":"w1a","timeout":30}"#,
                "type",
            ),
            (r#"{"group":1,"leader":"w1a","timeout":30}"#, "type"),
            (
                r#"{"type":"before_demote","group":0,"leader":"w1a","timeout":30}"#,
                "group",
            ),
            (
                r#"{"type":"before_demote","group":-1,"leader":"w1a","timeout":30}"#,
                "group",
            ),
            (
                r#"{"type":"before_demote","group":1,"timeout":30}"#,
                "leader",
            ),
            (
                r#"{"type":"before_demote","group":1,"leader":"w1a","timeout":0}"#,
                "timeout",
            ),
            (
                r#"{"type":"before_demote","group":1,"leader":"w1a"}"#,
                "timeout",
            ),
            (
                r#"{"type":"before_demote","group":1,"leader":"w1a","timeout":30,"cooldown":-1}"#,
                "cooldown",
            ),
            ("not json", "event"),
        ] {
            let err = h.h.handle_event(h.now, &base(), body).unwrap_err();
            assert_eq!(err.field, field, "{body}");
        }
        assert_eq!(h.h.queued_tasks(), 0);
        assert_eq!(h.turn(), vec![]);
    }

    #[test]
    fn events_before_the_first_heartbeat_are_discarded() {
        let mut h = Host::with_rows(BASE_ROWS);
        let out = h.event(&base(), &ev("before_demote", 1, "w1a"));
        assert!(matches!(out, EventOutcome::Discarded(ref why) if why.contains("no heartbeat")));
        assert_eq!(h.h.queued_tasks(), 0);
        h.heartbeat(&base());
        assert_eq!(h.clean_turn(), vec![LoadMetadata]);
        assert!(!h.sim.in_transaction());
    }

    #[test]
    fn event_is_discarded_unless_the_dcs_names_its_sender_leader() {
        let mut h = settled();
        let mut no_conn = base();
        no_conn.workers[0].1.members[0].conn_url = None;
        for (v, body) in [
            (base(), ev("before_demote", 1, "w1b")),
            (base(), ev("before_demote", 3, "w3a")),
            (
                with_g1(None, vec![m("w1a", "10.0.1.1")]),
                ev("before_demote", 1, "w1a"),
            ),
            (
                with_g1(Some("w1x"), vec![m("w1a", "10.0.1.1")]),
                ev("before_demote", 1, "w1a"),
            ),
            (no_conn, ev("before_demote", 1, "w1a")),
        ] {
            let out = h.event(&v, &body);
            assert!(matches!(out, EventOutcome::Discarded(_)), "{body}: {out:?}");
        }
        assert_eq!(h.h.queued_tasks(), 0);
        assert_eq!(h.turn(), vec![]);
    }

    #[test]
    fn ticket_is_completed_when_its_task_is_processed() {
        let mut h = settled();
        let t = h.queued(&base(), &ev("before_demote", 1, "w1a"));
        assert!(h.h.poll_completed().is_empty());
        h.clean_turn();
        // The transaction is open and the pause in place: the worker may stop now.
        assert_eq!(h.h.poll_completed(), vec![t]);
        assert!(h.h.poll_completed().is_empty());
        let t2 = h.queued(&base(), &ev("after_promote", 1, "w1a"));
        h.clean_turn();
        assert_eq!(h.h.poll_completed(), vec![t2]);
        assert_ne!(t, t2);
    }

    #[test]
    fn cooldown_goes_to_citus_in_ms_and_zero_stays_zero() {
        // Issue 7 item 4: the reference sends 10000 ms for `cooldown: 0`.
        for (cooldown, ms) in [
            (r#","cooldown":0"#, 0),
            ("", 10_000),
            (r#","cooldown":2.5"#, 2_500),
        ] {
            let mut h = settled();
            let body = format!(
                r#"{{"type":"before_demote","group":1,"leader":"w1a","timeout":30{cooldown}}}"#
            );
            h.event(&base(), &body);
            assert_eq!(
                h.clean_turn(),
                vec![Begin, upd_cd(2, "10.0.1.1-demoted", ms)],
                "{body}"
            );
        }
    }

    // ----- 9. the heartbeat -------------------------------------------------------------

    #[test]
    fn only_the_coordinator_maintains_pg_dist_node() {
        let mut h = Handler::new(config(1), "w1a", "postgres://10.0.1.1:5432/postgres");
        h.handle_heartbeat(T0, &base());
        assert_eq!(h.queued_tasks(), 0);
        assert_eq!(h.poll_statement(T0), None);
        let out = h.handle_event(T0, &base(), &ev("before_demote", 1, "w1a"));
        assert!(matches!(out, Ok(EventOutcome::Discarded(_))));
        assert_eq!(h.poll_statement(T0), None);
    }

    #[test]
    fn coordinator_group_is_this_node_plus_its_eligible_standbys() {
        let mut h = Host::with_rows(&[]);
        let mut me_elsewhere = m("coord1", "10.0.0.99");
        me_elsewhere.role = Some("primary".into());
        let mut unix = m("coord6", "x");
        unix.conn_url = None;
        unix.conn_kwargs = Some(ConnKwargs {
            host: Some("/var/run/postgresql".into()),
            port: None,
        });
        let v = ClusterView {
            coordinator: grp(
                Some("coord1"),
                vec![
                    // The DCS entry of this node: its own connection URL wins.
                    me_elsewhere,
                    m("coord2", "10.0.0.2"),
                    stopped(m("coord3", "10.0.0.3")),
                    nolb(m("coord4", "10.0.0.4")),
                    Member {
                        conn_url: None,
                        ..m("coord5", "10.0.0.5")
                    },
                    unix,
                ],
            ),
            workers: vec![],
        };
        h.heartbeat(&v);
        assert_eq!(
            h.clean_turn(),
            vec![
                LoadMetadata,
                Begin,
                add_p("10.0.0.1", 0),
                add_s("10.0.0.2", 0),
                Commit,
            ]
        );
        assert!(h.warnings().iter().any(|w| w.contains("coord6")));
    }

    #[test]
    fn worker_group_needs_a_running_primary_leader() {
        let mut h = Host::with_rows(&[(1, 0, "10.0.0.1", "primary")]);
        let mut no_conn = primary(m("w6a", "10.0.6.1"));
        no_conn.conn_url = None;
        let mut master = m("w2a", "10.0.2.1");
        master.role = Some("master".into());
        let v = view(vec![
            (1, grp(Some("w1a"), vec![m("w1a", "10.0.1.1")])),
            (2, grp(Some("w2a"), vec![master])),
            (
                3,
                grp(Some("w3a"), vec![stopped(primary(m("w3a", "10.0.3.1")))]),
            ),
            (4, grp(Some("w4x"), vec![primary(m("w4a", "10.0.4.1"))])),
            (5, grp(None, vec![primary(m("w5a", "10.0.5.1"))])),
            (6, grp(Some("w6a"), vec![no_conn])),
            (7, grp(Some("w7a"), vec![primary(m("w7a", "10.0.7.1"))])),
        ]);
        h.heartbeat(&v);
        assert_eq!(
            h.clean_turn(),
            vec![LoadMetadata, add_p("10.0.2.1", 2), add_p("10.0.7.1", 7)]
        );
    }

    // ----- the reference's tricky cases -------------------------------------------------

    #[test]
    fn switchover_with_a_registered_secondary() {
        let mut h = settled();
        h.event(&base(), &ev("before_demote", 1, "w1a"));
        assert_eq!(h.clean_turn(), vec![Begin, upd(2, "10.0.1.1-demoted")]);
        let promoting = with_g1(
            Some("w1b"),
            vec![stopped(m("w1a", "10.0.1.1")), m("w1b", "10.0.1.2")],
        );
        h.event(&promoting, &ev("before_promote", 1, "w1b"));
        assert_eq!(h.clean_turn(), vec![upd(3, "10.0.1.1"), upd(2, "10.0.1.2")]);
        let promoted = with_g1(
            Some("w1b"),
            vec![m("w1a", "10.0.1.1"), primary(m("w1b", "10.0.1.2"))],
        );
        h.event(&promoted, &ev("after_promote", 1, "w1b"));
        assert_eq!(h.clean_turn(), vec![Commit]);
        assert_eq!(
            h.group_rows(1),
            vec![
                (2, "10.0.1.2".into(), "primary"),
                (3, "10.0.1.1".into(), "secondary")
            ]
        );
        h.heartbeat(&promoted);
        assert_eq!(h.turn(), vec![]);
    }

    #[test]
    fn switchover_without_a_registered_secondary() {
        let mut h = Host::with_rows(&[
            (1, 0, "10.0.0.1", "primary"),
            (2, 1, "10.0.1.1", "primary"),
            (4, 2, "10.0.2.1", "primary"),
        ]);
        let v = with_g1(
            Some("w1a"),
            vec![primary(m("w1a", "10.0.1.1")), nolb(m("w1b", "10.0.1.2"))],
        );
        h.heartbeat(&v);
        assert_eq!(h.clean_turn(), vec![LoadMetadata]);
        h.event(&v, &ev("before_demote", 1, "w1a"));
        assert_eq!(h.clean_turn(), vec![Begin, upd(2, "10.0.1.1-demoted")]);
        let promoting = with_g1(
            Some("w1b"),
            vec![stopped(m("w1a", "10.0.1.1")), nolb(m("w1b", "10.0.1.2"))],
        );
        h.event(&promoting, &ev("before_promote", 1, "w1b"));
        assert_eq!(h.clean_turn(), vec![upd(2, "10.0.1.2")]);
        let promoted = with_g1(
            Some("w1b"),
            vec![m("w1a", "10.0.1.1"), nolb(primary(m("w1b", "10.0.1.2")))],
        );
        h.event(&promoted, &ev("after_promote", 1, "w1b"));
        // The old primary's add must wait: the primary row changed in this transaction.
        assert_eq!(h.clean_turn(), vec![Commit]);
        h.heartbeat(&promoted);
        assert_eq!(h.clean_turn(), vec![add_s("10.0.1.1", 1)]);
        h.heartbeat(&promoted);
        assert_eq!(h.turn(), vec![]);
    }

    #[test]
    fn failover_to_an_unregistered_node() {
        let mut h = settled();
        let v = with_g1(
            Some("w1c"),
            vec![m("w1b", "10.0.1.2"), primary(m("w1c", "10.0.1.3"))],
        );
        h.heartbeat(&v);
        assert_eq!(h.clean_turn(), vec![upd(2, "10.0.1.3")]);
        assert_eq!(
            h.group_rows(1),
            vec![
                (2, "10.0.1.3".into(), "primary"),
                (3, "10.0.1.2".into(), "secondary")
            ]
        );
        h.heartbeat(&v);
        assert_eq!(h.turn(), vec![]);
    }

    #[test]
    fn secondary_replaced() {
        let mut h = settled();
        let v = with_g1(
            Some("w1a"),
            vec![primary(m("w1a", "10.0.1.1")), m("w1c", "10.0.1.3")],
        );
        h.heartbeat(&v);
        assert_eq!(h.clean_turn(), vec![upd(3, "10.0.1.3")]);
        h.heartbeat(&v);
        assert_eq!(h.turn(), vec![]);
    }

    #[test]
    fn secondary_removed() {
        let mut h = Host::with_rows(&[
            (1, 0, "10.0.0.1", "primary"),
            (2, 1, "10.0.1.1", "primary"),
            (3, 1, "10.0.1.2", "secondary"),
            (5, 1, "10.0.1.3", "secondary"),
        ]);
        let v = view(vec![(
            1,
            grp(
                Some("w1a"),
                vec![
                    primary(m("w1a", "10.0.1.1")),
                    stopped(m("w1b", "10.0.1.2")),
                    m("w1c", "10.0.1.3"),
                ],
            ),
        )]);
        h.heartbeat(&v);
        assert_eq!(h.clean_turn(), vec![LoadMetadata, rm("10.0.1.2")]);
        assert_eq!(
            h.group_rows(1),
            vec![
                (2, "10.0.1.1".into(), "primary"),
                (5, "10.0.1.3".into(), "secondary")
            ]
        );
    }

    #[test]
    fn secondary_added_during_a_switchover() {
        // With events: the newcomer takes the promoted secondary's row.
        let mut h = settled();
        let with_w1c = |leader: &str, w1a: Member, w1b: Member| {
            with_g1(Some(leader), vec![w1a, w1b, m("w1c", "10.0.1.3")])
        };
        let v = with_w1c("w1a", primary(m("w1a", "10.0.1.1")), m("w1b", "10.0.1.2"));
        h.event(&v, &ev("before_demote", 1, "w1a"));
        // No add after the pause's update: w1c waits.
        assert_eq!(h.clean_turn(), vec![Begin, upd(2, "10.0.1.1-demoted")]);
        let v = with_w1c("w1b", stopped(m("w1a", "10.0.1.1")), m("w1b", "10.0.1.2"));
        h.event(&v, &ev("before_promote", 1, "w1b"));
        assert_eq!(h.clean_turn(), vec![upd(3, "10.0.1.3"), upd(2, "10.0.1.2")]);
        let v = with_w1c("w1b", m("w1a", "10.0.1.1"), primary(m("w1b", "10.0.1.2")));
        h.event(&v, &ev("after_promote", 1, "w1b"));
        assert_eq!(h.clean_turn(), vec![Commit]);
        h.heartbeat(&v);
        assert_eq!(h.clean_turn(), vec![add_s("10.0.1.1", 1)]);
        assert_eq!(
            h.group_rows(1),
            vec![
                (2, "10.0.1.2".into(), "primary"),
                (3, "10.0.1.3".into(), "secondary"),
                (5, "10.0.1.1".into(), "secondary"),
            ]
        );

        // Seen by the heartbeat only: the three-update switchover, then the add.
        let mut h = settled();
        let v = with_w1c("w1b", m("w1a", "10.0.1.1"), primary(m("w1b", "10.0.1.2")));
        h.heartbeat(&v);
        assert_eq!(
            h.clean_turn(),
            vec![
                Begin,
                upd(2, "10.0.1.1-demoted"),
                upd(3, "10.0.1.1"),
                upd(2, "10.0.1.2"),
                Commit,
            ]
        );
        h.heartbeat(&v);
        assert_eq!(h.clean_turn(), vec![add_s("10.0.1.3", 1)]);
    }

    #[test]
    fn paused_connections_then_failover_to_an_unregistered_node() {
        let mut h = settled();
        h.event(&base(), &ev("before_demote", 1, "w1a"));
        assert_eq!(h.clean_turn(), vec![Begin, upd(2, "10.0.1.1-demoted")]);
        // w1a vanished, w1b is down too; w1c, never registered, is promoted.
        let v = with_g1(
            Some("w1c"),
            vec![stopped(m("w1b", "10.0.1.2")), m("w1c", "10.0.1.3")],
        );
        h.event(&v, &ev("before_promote", 1, "w1c"));
        // The paused old primary is parked in the gone secondary's row.
        assert_eq!(h.clean_turn(), vec![upd(2, "10.0.1.3"), upd(3, "10.0.1.1")]);
        let v = with_g1(
            Some("w1c"),
            vec![stopped(m("w1b", "10.0.1.2")), primary(m("w1c", "10.0.1.3"))],
        );
        h.promote_and_settle(&v, "w1c", "10.0.1.1", "10.0.1.3");
    }

    // ----- issue 7: deliberate departures from the reference ----------------------------

    #[test]
    fn secondary_churn_converges_within_two_heartbeats() {
        // Issue 7 item 1, with Citus's refusal of add/remove for a second after a committed
        // update modelled: the reference sends add/remove after an update in the same
        // transaction and retries that refused transaction forever.
        let mut h = Host::new(
            SimOptions {
                refuse_after_commit_ms: Some(METADATA_SYNC_WAIT_MS),
            },
            &[
                (1, 0, "10.0.0.1", "primary"),
                (2, 1, "10.0.1.1", "primary"),
                (3, 1, "10.0.1.2", "secondary"),
                (4, 2, "10.0.2.1", "primary"),
                (5, 2, "10.0.2.2", "secondary"),
            ],
        );
        let churn = |g: GroupId| {
            let n = |i: u8| format!("10.0.{g}.{i}");
            (
                g,
                grp(
                    Some(&format!("w{g}a")),
                    vec![
                        primary(m(&format!("w{g}a"), &n(1))),
                        m(&format!("w{g}c"), &n(3)),
                        m(&format!("w{g}d"), &n(4)),
                    ],
                ),
            )
        };
        let v = view(vec![churn(1), churn(2)]);
        h.heartbeat(&v);
        let sent = h.turn();
        assert_eq!(
            sent,
            vec![
                LoadMetadata,
                Begin,
                add_s("10.0.1.4", 1),
                upd(3, "10.0.1.3"),
                Commit,
                Begin,
                add_s("10.0.2.4", 2),
            ]
        );
        // Group 1's commit started Citus's sync: group 2's add is refused ...
        let StatementResult::Failed(e) = h.results.last().unwrap() else {
            panic!("{:?}", h.results)
        };
        assert!(e.is_metadata_out_of_sync(), "{e:?}");
        // ... and retried once Citus had time, without a reload.
        assert_eq!(h.h.metrics().sync_retries, 1);
        assert_eq!(h.h.poll_timeout(), Some(T0 + METADATA_SYNC_WAIT_MS));
        h.now = T0 + 500;
        assert_eq!(h.turn(), vec![]);
        h.now = T0 + METADATA_SYNC_WAIT_MS;
        h.heartbeat(&v);
        assert_eq!(
            h.clean_turn(),
            vec![Begin, add_s("10.0.2.4", 2), upd(5, "10.0.2.3"), Commit]
        );
        for g in [1, 2] {
            let rows: Vec<String> = h.group_rows(g).into_iter().map(|r| r.1).collect();
            let n = |i: u8| format!("10.0.{g}.{i}");
            assert_eq!(rows, vec![n(1), n(3), n(4)]);
        }
        h.now += METADATA_SYNC_WAIT_MS;
        h.heartbeat(&v);
        assert_eq!(h.turn(), vec![]);
    }

    #[test]
    fn leftover_demoted_row_is_repaired_in_one_update() {
        // Issue 7 item 5: the reference renames it to `-demoted-demoted` and adds a bogus
        // secondary.
        let mut h = Host::with_rows(&[
            (1, 0, "10.0.0.1", "primary"),
            (2, 1, "10.0.1.1-demoted", "primary"),
            (3, 1, "10.0.1.2", "secondary"),
            (4, 2, "10.0.2.1", "primary"),
        ]);
        h.heartbeat(&base());
        assert_eq!(h.clean_turn(), vec![LoadMetadata, upd(2, "10.0.1.1")]);
        assert_eq!(h.rows(), Host::with_rows(BASE_ROWS).rows());
        h.heartbeat(&base());
        assert_eq!(h.turn(), vec![]);
    }

    #[test]
    fn group_with_only_secondary_rows_ends_with_exactly_one_primary() {
        // Issue 7 item 6: the reference "adds" the primary onto the secondary's row (Citus
        // answers with that row's id) and ends without a primary row.
        let mut h = Host::with_rows(&[
            (1, 0, "10.0.0.1", "primary"),
            (7, 1, "10.0.1.1", "secondary"),
            (8, 1, "10.0.1.2", "secondary"),
            (4, 2, "10.0.2.1", "primary"),
        ]);
        h.heartbeat(&base());
        assert_eq!(
            h.clean_turn(),
            vec![
                LoadMetadata,
                Begin,
                rm("10.0.1.1"),
                add_p("10.0.1.1", 1),
                Commit,
            ]
        );
        assert_eq!(
            h.group_rows(1),
            vec![
                (8, "10.0.1.2".into(), "secondary"),
                (9, "10.0.1.1".into(), "primary")
            ]
        );
        h.heartbeat(&base());
        assert_eq!(h.turn(), vec![]);
    }

    #[test]
    fn unusable_hosts_are_skipped_and_reported_and_names_lower_cased() {
        // Issue 7 item 8.
        let mut h = Host::with_rows(&[(1, 0, "10.0.0.1", "primary")]);
        let kw = |name: &str, host: &str, port: Option<&str>| Member {
            conn_url: None,
            conn_kwargs: Some(ConnKwargs {
                host: Some(host.into()),
                port: port.map(str::to_string),
            }),
            ..m(name, "unused")
        };
        let mut leader = primary(m("W1A", "x"));
        leader.conn_url = Some("postgres://Worker-1A.Example:5432/db".into());
        let mut empty_url = m("w1c", "x");
        empty_url.conn_url = Some("postgres:///db".into());
        let mut socket_leader = primary(kw("w2a", "/tmp", None));
        socket_leader.role = Some("primary".into());
        let v = view(vec![
            (
                1,
                grp(
                    Some("W1A"),
                    vec![
                        leader,
                        kw("w1b", "/var/run/postgresql", Some("5432")),
                        empty_url,
                        kw("w1d", "", Some("5432")),
                        kw("w1e", "REPLICA.Example", None),
                        kw("w1f", "10.0.1.6", Some("6432")),
                    ],
                ),
            ),
            (2, grp(Some("w2a"), vec![socket_leader])),
        ]);
        h.heartbeat(&v);
        assert_eq!(
            h.clean_turn(),
            vec![
                LoadMetadata,
                Begin,
                add_p("worker-1a.example", 1),
                Statement::AddNode {
                    host: "10.0.1.6".into(),
                    port: 6432,
                    groupid: 1,
                    role: NodeRole::Secondary,
                },
                add_s("replica.example", 1),
                Commit,
            ]
        );
        let warnings = h.warnings();
        for who in ["w1b", "w1c", "w1d", "leader w2a"] {
            assert!(
                warnings.iter().any(|w| w.contains(who)),
                "{who} not reported: {warnings:?}"
            );
        }
        // Reported once, not on every heartbeat; and the lower-cased rows are recognised.
        h.heartbeat(&v);
        assert_eq!(h.turn(), vec![]);
        assert!(h.warnings().is_empty());
    }

    // ----- 12. state hand-off -----------------------------------------------------------

    type Rows = Vec<(i32, GroupId, String, &'static str)>;

    /// A switchover of group 1; with `handoff`, the state moves to a new Handler right after
    /// the pause (the transaction open, its deadline running).
    fn switchover_run(handoff: bool) -> (Vec<Vec<Statement>>, Rows) {
        let mut h = settled();
        let mut turns = Vec::new();
        h.event(&base(), &ev("before_demote", 1, "w1a"));
        turns.push(h.clean_turn());
        if handoff {
            let before = (
                h.h.in_flight_group(),
                h.h.in_flight_deadline(),
                h.h.poll_timeout(),
            );
            let bytes = h.h.export_state();
            h.h = Handler::import_state(&bytes).expect("own export imports");
            let after = (
                h.h.in_flight_group(),
                h.h.in_flight_deadline(),
                h.h.poll_timeout(),
            );
            assert_eq!(before, after);
            assert_eq!(h.h.export_state(), bytes);
        }
        h.now += 2_000;
        let promoting = with_g1(
            Some("w1b"),
            vec![stopped(m("w1a", "10.0.1.1")), m("w1b", "10.0.1.2")],
        );
        h.heartbeat(&promoting);
        h.event(&promoting, &ev("before_promote", 1, "w1b"));
        turns.push(h.clean_turn());
        let promoted = with_g1(
            Some("w1b"),
            vec![m("w1a", "10.0.1.1"), primary(m("w1b", "10.0.1.2"))],
        );
        h.event(&promoted, &ev("after_promote", 1, "w1b"));
        turns.push(h.clean_turn());
        h.now += 40_000;
        h.heartbeat(&promoted);
        turns.push(h.turn());
        (turns, h.rows())
    }

    #[test]
    fn handoff_mid_switchover_continues_exactly() {
        let plain = switchover_run(false);
        let handed = switchover_run(true);
        assert_eq!(plain, handed);
        assert_eq!(
            plain.0,
            vec![
                vec![Begin, upd(2, "10.0.1.1-demoted")],
                vec![upd(3, "10.0.1.1"), upd(2, "10.0.1.2")],
                vec![Commit],
                vec![],
            ]
        );

        // The imported instance also keeps the deadline.
        let mut h = settled();
        h.event(&base(), &ev("before_demote", 1, "w1a"));
        h.clean_turn();
        h.h = Handler::import_state(&h.h.export_state()).unwrap();
        h.now = T0 + 30_000;
        assert_eq!(h.clean_turn(), vec![Rollback]);
    }

    #[test]
    fn import_refuses_foreign_or_newer_state() {
        assert!(Handler::import_state(b"garbage").is_err());
        let h = settled();
        let mut v: serde_json::Value = serde_json::from_slice(&h.h.export_state_json()).unwrap();
        v["format"] = serde_json::json!(STATE_FORMAT + 1);
        let err = Handler::import_state(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(err.contains("newer"), "{err}");
        let mut bin = h.h.export_state();
        bin[4] += 1;
        let err = Handler::import_state(&bin).unwrap_err();
        assert!(err.contains("newer"), "{err}");
        let mut cut = h.h.export_state();
        cut.truncate(cut.len() / 2);
        let err = Handler::import_state(&cut).unwrap_err();
        assert!(err.contains("does not parse"), "{err}");
    }

    #[test]
    fn both_state_formats_carry_the_whole_state() {
        let mut h = settled();
        h.event(&base(), &ev("before_demote", 1, "w1a"));
        h.clean_turn();
        h.heartbeat(&with_g1(
            Some("w1a"),
            vec![primary(m("w1a", "10.0.1.1")), m("w1c", "10.0.1.3")],
        ));
        let bin = h.h.export_state();
        let json = h.h.export_state_json();
        assert!(
            bin.len() * 3 < json.len(),
            "{} vs {}",
            bin.len(),
            json.len()
        );
        let from_bin = Handler::import_state(&bin).unwrap();
        let from_json = Handler::import_state(&json).unwrap();
        assert_eq!(from_bin.export_state_json(), json);
        assert_eq!(from_json.export_state(), bin);
    }

    // ----- minimal cases found by the property tests (tests/properties.rs) -------------

    #[test]
    fn switchover_to_an_unregistered_node_registers_the_old_primary_next() {
        // The primary row went to w1c; w1a stays on as a replica but has no row any more.
        // The reference (and this policy before the fix) kept it in the cache as registered
        // and never added it.
        let mut h = settled();
        let v = with_g1(
            Some("w1c"),
            vec![
                m("w1a", "10.0.1.1"),
                m("w1b", "10.0.1.2"),
                primary(m("w1c", "10.0.1.3")),
            ],
        );
        h.heartbeat(&v);
        assert_eq!(h.clean_turn(), vec![upd(2, "10.0.1.3")]);
        h.heartbeat(&v);
        assert_eq!(h.clean_turn(), vec![add_s("10.0.1.1", 1)]);
        assert_eq!(h.group_rows(1).len(), 3);
    }

    #[test]
    fn rolled_back_transaction_leaves_the_cache_true() {
        // The plan of a transaction that was later rolled back used to edit the cache in
        // place (here: dropping the secondary row it removed), so the repair after the
        // rollback "added" the primary onto that secondary row and ended without a primary.
        let mut h = Host::with_rows(&[
            (1, 0, "10.0.0.1", "primary"),
            (2, 1, "10.0.1.1", "secondary"),
        ]);
        let v = view(vec![(
            1,
            grp(Some("w1a"), vec![primary(m("w1a", "10.0.1.1"))]),
        )]);
        h.heartbeat(&view(vec![(1, grp(None, vec![m("w1a", "10.0.1.1")]))]));
        assert_eq!(h.clean_turn(), vec![LoadMetadata]);
        h.event(&v, &ev("before_demote", 1, "w1a"));
        assert_eq!(h.clean_turn(), vec![Begin, rm("10.0.1.1")]);
        h.now += 30_000;
        h.heartbeat(&v);
        assert_eq!(
            h.clean_turn(),
            vec![
                Rollback,
                Begin,
                rm("10.0.1.1"),
                add_p("10.0.1.1", 1),
                Commit
            ]
        );
        assert_eq!(h.group_rows(1), vec![(3, "10.0.1.1".into(), "primary")]);
    }

    #[test]
    fn paused_primary_row_next_to_a_row_of_the_same_host() {
        // `<host>-demoted` read as the paused <host> used to hide <host>'s own row.
        let rows = &[
            (1, 0, "10.0.0.1", "primary"),
            (4, 1, "10.0.1.1-demoted", "primary"),
            (5, 1, "10.0.1.1", "secondary"),
            (6, 1, "10.0.1.2", "secondary"),
            (7, 2, "10.0.2.1", "primary"),
        ];
        let mut h = Host::with_rows(rows);
        h.heartbeat(&base());
        assert_eq!(
            h.clean_turn(),
            vec![
                LoadMetadata,
                Begin,
                rm("10.0.1.1"),
                upd(4, "10.0.1.1"),
                Commit
            ]
        );
        assert_eq!(
            h.group_rows(1),
            vec![
                (4, "10.0.1.1".into(), "primary"),
                (6, "10.0.1.2".into(), "secondary")
            ]
        );

        // A pause requested then: the row is already paused, only the extra row goes.
        let mut h = Host::with_rows(rows);
        h.heartbeat(&with_g1(None, vec![]));
        assert_eq!(h.clean_turn(), vec![LoadMetadata]);
        h.event(&base(), &ev("before_demote", 1, "w1a"));
        assert_eq!(h.clean_turn(), vec![Begin, rm("10.0.1.1")]);
    }

    #[test]
    fn promotion_after_pausing_a_group_without_a_primary_row() {
        // The paused primary had no row; the promoted node had a secondary row. Planned as a
        // switchover, the primary's add was moved before the update freeing its address,
        // so Citus just returned the secondary's id and the group had no primary row.
        let mut h = Host::with_rows(&[(1, 0, "10.0.0.1", "primary")]);
        let g1 = |leader: Option<&str>, members| view(vec![(1, grp(leader, members))]);
        h.heartbeat(&g1(None, vec![]));
        assert_eq!(h.clean_turn(), vec![LoadMetadata]);
        let v = g1(
            Some("w1a"),
            vec![stopped(primary(m("w1a", "10.0.1.1"))), m("w1b", "10.0.1.2")],
        );
        h.event(&v, &ev("before_demote", 1, "w1a"));
        assert_eq!(h.clean_turn(), vec![Begin, add_s("10.0.1.2", 1)]);
        let v = g1(
            Some("w1b"),
            vec![stopped(m("w1a", "10.0.1.1")), m("w1b", "10.0.1.2")],
        );
        h.event(&v, &ev("before_promote", 1, "w1b"));
        assert_eq!(h.clean_turn(), vec![rm("10.0.1.2"), add_p("10.0.1.2", 1)]);
        let v = g1(
            Some("w1b"),
            vec![stopped(m("w1a", "10.0.1.1")), primary(m("w1b", "10.0.1.2"))],
        );
        h.event(&v, &ev("after_promote", 1, "w1b"));
        assert_eq!(h.clean_turn(), vec![Commit]);
        assert_eq!(h.group_rows(1), vec![(3, "10.0.1.2".into(), "primary")]);
        h.heartbeat(&v);
        assert_eq!(h.turn(), vec![]);
    }

    // ----- contract 0.3.0: packed views and statement batches ---------------------------

    fn packed(h: &mut Host, p: &mut crate::packed_view::Packer, v: &ClusterView) {
        h.h.handle_heartbeat_packed(h.now, p.pack(v))
            .expect("a packed view is accepted");
    }

    fn rows_of(rows: &[(i32, GroupId, &str, &str)]) -> Vec<Row> {
        rows.iter()
            .map(|(id, g, host, role)| Row {
                nodeid: *id,
                groupid: *g,
                nodename: host.to_string(),
                nodeport: 5432,
                noderole: role_of(role),
            })
            .collect()
    }

    #[test]
    fn a_steady_packed_heartbeat_still_sees_a_cache_changed_by_a_reload() {
        let mut h = settled();
        let mut p = crate::packed_view::Packer::new();
        packed(&mut h, &mut p, &base());
        assert_eq!(h.turn(), vec![]);
        packed(&mut h, &mut p, &base());
        assert_eq!(h.turn(), vec![]);
        // Someone removed group 2's row; a reload shows it, while the DCS stays the same.
        h.sim.replace_rows(rows_of(&BASE_ROWS[..3]));
        h.h.schedule_reload();
        assert_eq!(h.clean_turn(), vec![LoadMetadata]);
        packed(&mut h, &mut p, &base());
        assert_eq!(h.clean_turn(), vec![add_p("10.0.2.1", 2)]);
    }

    #[test]
    fn a_steady_packed_heartbeat_still_sees_a_cache_changed_by_an_event() {
        // The event's view (read when the event came) has a third member in group 1; the
        // heartbeat's view, unchanged since, does not: the heartbeat puts it back, as the
        // plain heartbeat does.
        let wider = with_g1(
            Some("w1a"),
            vec![
                primary(m("w1a", "10.0.1.1")),
                m("w1b", "10.0.1.2"),
                m("w1c", "10.0.1.3"),
            ],
        );
        let run = |use_packed: bool| {
            let mut h = settled();
            let mut p = crate::packed_view::Packer::new();
            let mut beat = |h: &mut Host| {
                if use_packed {
                    packed(h, &mut p, &base())
                } else {
                    h.heartbeat(&base())
                }
            };
            beat(&mut h);
            assert_eq!(h.turn(), vec![]);
            h.queued(&wider, &ev("after_promote", 1, "w1a"));
            assert_eq!(h.clean_turn(), vec![add_s("10.0.1.3", 1)]);
            beat(&mut h);
            h.clean_turn()
        };
        let plain = run(false);
        assert_eq!(plain, vec![rm("10.0.1.3")]);
        assert_eq!(run(true), plain);
    }

    #[test]
    fn a_malformed_packed_view_is_refused_and_changes_nothing() {
        let mut h = Host::with_rows(BASE_ROWS);
        let mut bytes = crate::packed_view::pack_once(&base());
        bytes.truncate(bytes.len() - 3);
        let view = PackedView {
            seq: 1,
            base: None,
            bytes: &bytes,
        };
        let e = h.h.handle_heartbeat_packed(h.now, view).unwrap_err();
        assert_eq!(e.field, "view");
        assert!(e.reason.contains("runs past the end"), "{e}");
        // Not even "ready": the refused heartbeat did not count.
        assert!(matches!(
            h.event(&base(), &ev("after_promote", 1, "w1a")),
            EventOutcome::Discarded(_)
        ));
        assert_eq!(h.h.queued_tasks(), 0);
    }

    #[test]
    fn a_plan_comes_in_one_batch_and_a_failure_cuts_it_short() {
        let mut h = Host::with_rows(&[]);
        h.heartbeat(&base());
        let mut batches = Vec::new();
        loop {
            let batch = h.h.poll_statements(h.now);
            if batch.is_empty() {
                break;
            }
            let results = batch.iter().map(|s| h.exec(s)).collect();
            h.h.handle_results(h.now, results);
            batches.push(batch);
        }
        assert_eq!(
            batches,
            vec![
                vec![LoadMetadata],
                vec![add_p("10.0.0.1", 0)],
                vec![Begin, add_p("10.0.1.1", 1), add_s("10.0.1.2", 1), Commit],
                vec![add_p("10.0.2.1", 2)],
            ]
        );
        assert_eq!(h.h.metrics().statements, 7);

        // Group 1 gets two replicas more; the plan's second statement fails: the host stops.
        let v = with_g1(
            Some("w1a"),
            vec![
                primary(m("w1a", "10.0.1.1")),
                m("w1b", "10.0.1.2"),
                m("w1c", "10.0.1.3"),
                m("w1d", "10.0.1.4"),
            ],
        );
        h.heartbeat(&v);
        let batch = h.h.poll_statements(h.now);
        assert_eq!(batch.len(), 4, "{batch:?}");
        assert_eq!(batch[0], Begin);
        let ok = h.exec(&batch[0]);
        h.sim.lose_session();
        let lost = StatementResult::Failed(StatementError {
            message: "server closed the connection unexpectedly".into(),
            sqlstate: None,
            connection_lost: true,
        });
        h.h.handle_results(h.now, vec![ok, lost]);
        assert!(!h.h.is_busy());
        // The failed plan is dropped; the cache is reloaded and the next heartbeat retries.
        assert_eq!(h.h.poll_statements(h.now), vec![LoadMetadata]);
        assert_eq!(h.h.metrics().failed_statements, 1);
    }
}
