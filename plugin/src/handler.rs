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
use crate::event::{parse_event, EventKind, WorkerEvent};
use crate::group::{Group, Node};
use crate::node::{Address, GroupId, PgDistRow, Role, COORDINATOR_GROUP};
use crate::packed_view::{self, PackedView};
use crate::statement::{Statement, StatementError, StatementResult};
use crate::task_queue::{Caller, Origin, Task, TaskQueue, Ticket, Wanted};
use crate::time::{Duration, Instant};
use crate::transition::{transition, Change};
use crate::view_text::{self, TextError, TextView};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// How long Citus needs to sync metadata after a committed update before it accepts add/remove.
pub const METADATA_SYNC_WAIT: Duration = Duration::from_millis(1_000);
/// How soon to try again after the metadata could not be loaded.
pub const RELOAD_RETRY: Duration = Duration::from_millis(1_000);
/// Statements one batch may pipeline across independent plans: enough that draining many
/// groups costs few host calls, few enough that one call's text stays small.
pub const BATCH_STATEMENTS: usize = 256;

pub use crate::state::STATE_FORMAT;

/// Why the queue holds a task while it is worked on: picking a task leaves it queued, and
/// only finishing or failing it (or a demote, which drops the work too) removes it.
const QUEUED_WHILE_WORKED: &str = "the task being worked on is still queued";

mod transfer;

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

/// Counters for operators: in the service's status report, and carried over by the exported
/// state (as [`crate::state::v2::Metrics`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metrics {
    pub deadline_rollbacks: u64,
    pub statements: u64,
    pub failed_statements: u64,
    pub sync_retries: u64,
    /// Event tasks dropped because their caller stopped waiting before they could start.
    /// Not part of the exported state (formats 1 and 2 keep their bytes), so it counts from
    /// this instance's start.
    #[serde(skip)]
    pub expired_events: u64,
}

/// Where the turn is. Only a turn in progress has a plan or statements out, so "a result
/// while idle" or "a step without a plan" have no state to be in.
#[derive(Clone, Debug, Default, PartialEq)]
enum Turn {
    /// Between turns: the next poll starts one.
    #[default]
    Idle,
    /// Deciding and running: `work` is the plan being run (its steps the ones not yet
    /// issued), `issued` the statements handed to the host and not yet answered, oldest first.
    /// One statement and a batch are the same queue; between two calls it is empty unless a
    /// poll's statements await their results.
    Processing {
        work: Option<Work>,
        issued: VecDeque<Issued>,
    },
    /// The turn is over (a load or the loop's rollback failed); the next poll returns None.
    Ending,
}

impl Turn {
    fn processing() -> Turn {
        Turn::processing_with(VecDeque::new())
    }
    /// A turn starting with no plan, its queue in `issued`'s allocation.
    fn processing_with(issued: VecDeque<Issued>) -> Turn {
        debug_assert!(issued.is_empty(), "a turn starts with nothing issued");
        Turn::Processing { work: None, issued }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Step {
    Begin,
    Change(Change),
    Commit,
}

/// The task being processed and what is left of its statements.
#[derive(Clone, Debug, PartialEq)]
struct Work {
    task: Task,
    steps: VecDeque<Step>,
}

/// A statement handed to the host and not yet answered: what its result is applied to.
#[derive(Clone, Debug, PartialEq)]
enum Issued {
    Load,
    Rollback {
        deadline_passed: bool,
    },
    /// A step of the plan being run.
    Step(Step),
    /// The first step of the next plan in a batch: its result means every statement before
    /// it succeeded, so the plan before has ended and this one is being run.
    NextPlan {
        task: Box<Task>,
        step: Step,
    },
    /// A statement of a batch pipelined by the build that exported this state: the plans a
    /// batch pipelines are not exported, so its result cannot be applied and the cache is
    /// read again (as that build would have done after such an import).
    Forgotten,
}

/// The metadata session's transaction, and the pause it may hold. A pause only exists inside
/// an open transaction, so the task holding it lives here.
#[derive(Clone, Debug, Default, PartialEq)]
enum Txn {
    /// None open: statements autocommit.
    #[default]
    Closed,
    /// BEGIN has run for the plan being worked on. `has_update`: a row changed in it, so
    /// Citus refuses add/remove until it ends.
    Open { has_update: bool },
    /// A worker event's task left the transaction open: writes to its group are paused until
    /// a later task commits, or the deadline passes and it is rolled back.
    Paused { task: Task, has_update: bool },
}

impl Txn {
    /// The task holding the pause.
    fn paused(&self) -> Option<&Task> {
        match self {
            Txn::Paused { task, .. } => Some(task),
            _ => None,
        }
    }
    fn paused_group(&self) -> Option<GroupId> {
        self.paused().map(Task::groupid)
    }
    fn has_update(&self) -> bool {
        match self {
            Txn::Closed => false,
            Txn::Open { has_update } | Txn::Paused { has_update, .. } => *has_update,
        }
    }
    /// An update ran: inside a transaction, add/remove must now wait for its end.
    fn mark_update(&mut self) {
        if let Txn::Open { has_update } | Txn::Paused { has_update, .. } = self {
            *has_update = true;
        }
    }
    /// `task`'s plan ran and leaves the transaction open: it holds the pause now (replacing
    /// the task that held it, whose group it is).
    fn hold(&mut self, task: Task) {
        let has_update = self.has_update();
        *self = Txn::Paused { task, has_update };
    }
    /// The pausing task's group committed.
    fn release(&mut self) {
        if let Txn::Paused { has_update, .. } = *self {
            *self = Txn::Open { has_update };
        }
    }
}

/// Whether the cache must be read again before the next decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reload {
    /// The cache is what pg_dist_node holds, as far as this session knows.
    Current,
    /// Requested, or the session was lost; after a failed load, not before `not_before`.
    Due { not_before: Option<Instant> },
}

impl Reload {
    fn is_due(self) -> bool {
        matches!(self, Reload::Due { .. })
    }
}

/// The state machine. Everything in it but the caches of this instance (logs, reports, the
/// heartbeat memo, the plans a batch pipelined) is exported by [`Handler::export_state`],
/// through the format types of [`crate::state`] (`transfer`).
#[derive(Clone, Debug)]
pub struct Handler {
    config: CitusConfig,
    name: String,
    connect_url: String,
    /// Set by the first heartbeat: events before it are discarded.
    ready: bool,
    /// pg_dist_node as last loaded or committed: each group's topology.
    cache: BTreeMap<GroupId, Group>,
    queue: TaskQueue,
    reload: Reload,
    txn: Txn,
    turn: Turn,
    /// The last turn's queue, emptied, kept for its allocation (not exported).
    spare_issued: VecDeque<Issued>,
    next_task_id: u64,
    next_ticket: Ticket,
    completed: Vec<Ticket>,
    metrics: Metrics,
    logs: Vec<LogLine>,
    reported: BTreeSet<String>,
    /// What the last packed heartbeat settled; not exported, so a new build reads everything.
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
            reload: Reload::Due { not_before: None },
            txn: Txn::Closed,
            turn: Turn::Idle,
            spare_issued: VecDeque::new(),
            next_task_id: 1,
            next_ticket: 1,
            completed: Vec::new(),
            metrics: Metrics::default(),
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
    pub fn handle_heartbeat(&mut self, now: u64, view: &ClusterView) {
        let now = Instant::from_millis(now);
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
        now: u64,
        view: PackedView<'_>,
    ) -> Result<(), InvalidInput> {
        let now = Instant::from_millis(now);
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
    pub fn handle_heartbeat_text(&mut self, now: u64, text: &str) -> Result<(), InvalidInput> {
        let view = TextView::parse(text)?;
        if !self.config.is_coordinator() {
            view.groups().try_for_each(|e| e.map(|_| ()))?;
            return Ok(());
        }
        let at = Instant::from_millis(now);
        match self.heartbeat_in_place(at, view.seq, view.base, text.len(), view.groups()) {
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
                    && !self.reload.is_due()
                    && self.txn.paused_group() != Some(id)
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
                (false, _) => matched.push(g),
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
                let group = self.desired_group(COORDINATOR_GROUP, primary, members, &name);
                self.add_task(Wanted::from_heartbeat(group), now);
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
            return true;
        }
        let Some(primary) = self.primary_from_member(groupid, leader, EventKind::AfterPromote)
        else {
            return false;
        };
        let group = self.desired_group(groupid, primary, members, leader.name);
        self.add_task(Wanted::from_heartbeat(group), now);
        false
    }

    /// A worker event (the JSON body as received). Invalid events are refused with the field
    /// and reason; valid ones are acted on only when this coordinator is ready and the DCS agrees
    /// the sender leads its group.
    pub fn handle_event(
        &mut self,
        now: u64,
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
        Ok(self.act_on_event(Instant::from_millis(now), ev, group))
    }

    /// [`Handler::handle_event`] with the view packed; only the event's group is read.
    pub fn handle_event_packed(
        &mut self,
        now: u64,
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
        let now = Instant::from_millis(now);
        Ok(self.act_on_event(now, ev, group.map(|leader| (leader, &members[..]))))
    }

    /// [`Handler::handle_event`] with the view as text; only the event's group is read.
    pub fn handle_event_text(
        &mut self,
        now: u64,
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
        let now = Instant::from_millis(now);
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
                    "{} for group {} from {}: the DCS leader is {}",
                    ev.kind.as_str(),
                    ev.group,
                    crate::event::shown(&ev.leader),
                    leader_name.map_or_else(|| "nobody".to_string(), crate::event::shown)
                ))
            }
        };
        let Some(primary) = self.primary_from_member(ev.group, leader, ev.kind) else {
            return self.discard(format!("group {}: leader has no usable address", ev.group));
        };
        let group = self.desired_group(ev.group, primary, members, &ev.leader);
        let ticket = self.next_ticket;
        let timeout = Duration::from_millis(ev.timeout_ms);
        let wanted = Wanted {
            group,
            event: ev.kind,
            origin: Origin::Event(Caller {
                ticket: Some(ticket),
                timeout,
                // The pause is for the caller, who waits `timeout` from now and then goes on.
                deadline: (!crate::compat::REFERENCE_PORT).then(|| now + timeout),
            }),
            cooldown_ms: ev.cooldown_ms,
        };
        if self.add_task(wanted, now) {
            self.next_ticket += 1;
            self.log(
                Level::Info,
                format!(
                    "{} for group {} from {} queued",
                    ev.kind.as_str(),
                    ev.group,
                    crate::event::shown(&ev.leader)
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
        self.reload = Reload::Due { not_before: None };
    }

    /// This coordinator is demoted: its session is gone with its transaction. Forget
    /// everything, and reload before acting after a later promotion.
    pub fn handle_demote(&mut self) {
        self.cache.clear();
        self.view_memo.forget_all();
        for t in self.queue.clear() {
            self.complete(t.ticket());
        }
        if let Some(w) = self.take_work() {
            self.complete(w.task.ticket());
        }
        self.end_turn(Turn::Idle);
        self.txn = Txn::Closed;
        if !crate::compat::REFERENCE_PORT {
            self.schedule_reload();
        }
    }

    // ----- outputs --------------------------------------------------------------------

    /// The next statement to run, or None when this turn is over.
    pub fn poll_statement(&mut self, now: u64) -> Option<Statement> {
        let now = Instant::from_millis(now);
        if self.is_awaiting() {
            self.log(
                Level::Error,
                "poll_statement while a statement is still running".into(),
            );
            return None;
        }
        loop {
            match &mut self.turn {
                Turn::Ending => {
                    self.turn = Turn::Idle;
                    return None;
                }
                Turn::Idle => {
                    if !self.ready {
                        return None;
                    }
                    self.turn = Turn::processing_with(std::mem::take(&mut self.spare_issued));
                    if let Some(deadline_passed) = self.rollback_due(now) {
                        let rollback = Issued::Rollback { deadline_passed };
                        return Some(self.issue(rollback, Statement::Rollback));
                    }
                }
                Turn::Processing {
                    work: Some(work), ..
                } => match work.steps.pop_front() {
                    Some(step) => {
                        let stmt = step_statement(&step, &work.task);
                        return Some(self.issue(Issued::Step(step), stmt));
                    }
                    None => self.finish_work(),
                },
                Turn::Processing { work: None, .. } => {
                    if self.txn.paused().is_none() && self.reload.is_due() {
                        if matches!(self.reload, Reload::Due { not_before: Some(t) } if now < t) {
                            self.end_turn(Turn::Idle);
                            return None;
                        }
                        return Some(self.issue(Issued::Load, Statement::LoadMetadata));
                    }
                    match self.pick_task(now) {
                        Some(task) => self.start_work(task, now),
                        None => {
                            self.end_turn(Turn::Idle);
                            return None;
                        }
                    }
                }
            }
        }
    }

    /// At a turn's start: whether the paused transaction must be rolled back (its deadline
    /// passed, or the cache is to be read again and its view may be stale), and if so whether
    /// for its deadline.
    fn rollback_due(&mut self, now: Instant) -> Option<bool> {
        let f = self.txn.paused()?;
        let expired = f.deadline().is_none_or(|d| now >= d)
            && (!crate::compat::REFERENCE_PORT || !self.queue.is_empty());
        let reload = self.reload.is_due();
        if !(reload || expired) {
            return None;
        }
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
        Some(expired && !reload)
    }

    /// The result of the statement returned by the last `poll_statement`.
    pub fn handle_result(&mut self, now: u64, result: StatementResult) {
        let now = Instant::from_millis(now);
        // None: a result for a statement that demote already abandoned.
        if let Some(issued) = self.take_issued() {
            self.answer(now, issued, result);
        }
        self.settle_batch();
    }

    /// The statements to run next, in order: the one `poll_statement` gives, and when that is
    /// a step of a planned change, the rest of its plan, since no result of a plan's statement
    /// changes what its next statement is. The batch goes on past a change that leaves no
    /// transaction open into the next tasks' plans, as long as they are what the next poll
    /// would plan if every statement before them succeeds (so a failure, which stops the host,
    /// leaves exactly what a batch ending there would have): independent groups' transactions
    /// in one batch, at most [`BATCH_STATEMENTS`] statements unless one plan alone is longer.
    /// Empty when the turn is over.
    pub fn poll_statements(&mut self, now: u64) -> Vec<Statement> {
        let Some(first) = self.poll_statement(now) else {
            return Vec::new();
        };
        let now = Instant::from_millis(now);
        let mut out = vec![first];
        let Turn::Processing {
            work: Some(work),
            issued,
        } = &mut self.turn
        else {
            return out;
        };
        if !matches!(issued.front(), Some(Issued::Step(_))) {
            return out;
        }
        out.reserve(work.steps.len());
        issued.reserve(work.steps.len());
        for step in work.steps.drain(..) {
            out.push(step_statement(&step, &work.task));
            issued.push_back(Issued::Step(step));
        }
        let mut ahead: Vec<Work> = Vec::new();
        let mut resume = 0;
        loop {
            let last = ahead.last().or(self.work()).expect("a plan is being run");
            let Some(next) = self.plan_ahead(now, &last.task, &ahead, &mut resume) else {
                break;
            };
            if out.len() + next.steps.len() > BATCH_STATEMENTS {
                break;
            }
            out.extend(next.steps.iter().map(|s| step_statement(s, &next.task)));
            ahead.push(next);
        }
        self.metrics.statements += out.len() as u64 - 1;
        if let Turn::Processing { issued, .. } = &mut self.turn {
            for Work { task, mut steps } in ahead {
                let step = steps.pop_front().expect("a plan ahead has steps");
                let task = Box::new(task);
                issued.push_back(Issued::NextPlan { task, step });
                issued.extend(steps.into_iter().map(Issued::Step));
            }
        }
        out
    }

    /// The plan the next poll would start once `last` (the batch's latest plan's task) and
    /// everything before it succeeded, or None where that depends on more than success: `last`
    /// leaves a transaction open, a reload is due, or the next task would be dropped or has
    /// nothing to run. `ahead` are the plans already pipelined after the one being run;
    /// `resume` is where the previous call's scan of the queue stopped: every group before it
    /// was in the batch or not yet due, and still is, so a batch scans the queue once, not once
    /// per plan, and no group the scan finds can be in the batch already.
    fn plan_ahead(
        &self,
        now: Instant,
        last: &Task,
        ahead: &[Work],
        resume: &mut usize,
    ) -> Option<Work> {
        if last.event.opens_transaction() || self.reload.is_due() {
            return None;
        }
        let current = self.work().map(|w| w.task.groupid());
        let eligible = |t: &Task| t.not_before.is_none_or(|nb| now >= nb);
        // The coordinator goes first whenever it is due, so it is the one group the scan
        // below cannot rule out by position.
        let coordinator_free = Some(COORDINATOR_GROUP) != current
            && !ahead.iter().any(|w| w.task.groupid() == COORDINATOR_GROUP);
        let g = match self.queue.get(COORDINATOR_GROUP).filter(|t| eligible(t)) {
            Some(_) if coordinator_free => COORDINATOR_GROUP,
            _ => {
                let (at, g) = self.queue.groups_in_order_from(*resume).find(|&(_, g)| {
                    g != COORDINATOR_GROUP
                        && Some(g) != current
                        && self.queue.get(g).is_some_and(eligible)
                })?;
                *resume = at + 1;
                g
            }
        };
        let task = self.queue.get(g).expect("listed");
        let dropped = task.expires_at().is_some_and(|at| now >= at)
            || self.cache.get(&g).is_some_and(|c| task.is_committed(c));
        if dropped {
            return None;
        }
        // After a committed (or autocommitted) change: no transaction, nothing in flight.
        let work = self.plan_work(task.clone(), now, &Txn::Closed);
        (!work.steps.is_empty()).then_some(work)
    }

    /// The results of the statements `poll_statements` returned, in order: all of them, or
    /// those up to and including the first that failed. Statements of the batch without a
    /// result are issued again by the next poll (a pipelined plan without a result is planned
    /// again).
    pub fn handle_results(&mut self, now: u64, results: Vec<StatementResult>) {
        let now = Instant::from_millis(now);
        let mut results = results.into_iter();
        let Some(first) = results.next() else {
            self.log(Level::Error, "handle_results without a result".into());
            return;
        };
        // None: a result for a statement that demote already abandoned.
        if let Some(issued) = self.take_issued() {
            self.answer(now, issued, first);
        }
        for result in results {
            // Only a batch's statements follow its first, and a plan's steps only while it
            // has not failed.
            let answers = match self.issued().and_then(VecDeque::front) {
                Some(Issued::Step(_) | Issued::NextPlan { .. }) => self.work().is_some(),
                Some(Issued::Forgotten) => true,
                _ => false,
            };
            let Some(issued) = answers.then(|| self.take_issued()).flatten() else {
                self.log(
                    Level::Error,
                    "handle_results got more results than statements were issued; reloading".into(),
                );
                // Whatever ran is in the database, not in the cache.
                self.schedule_reload();
                break;
            };
            let forgotten = issued == Issued::Forgotten;
            self.answer(now, issued, result);
            if forgotten {
                // The cache is read again: the rest of the batch is not applied either.
                break;
            }
        }
        self.settle_batch();
    }
    /// When the host must run a turn even without new input: an open transaction's deadline,
    /// a retry Citus asked for, or a reload that failed.
    pub fn poll_timeout(&self) -> Option<u64> {
        let deadline = self.txn.paused().and_then(Task::deadline);
        let retry = self.queue.tasks().filter_map(|t| t.not_before).min();
        let reload = match self.reload {
            Reload::Due { not_before } => not_before,
            Reload::Current => None,
        };
        [deadline, retry, reload]
            .into_iter()
            .flatten()
            .min()
            .map(Instant::as_millis)
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
        self.txn.paused_group()
    }
    /// When the open transaction (if any) is rolled back at the latest.
    pub fn in_flight_deadline(&self) -> Option<u64> {
        self.txn
            .paused()
            .and_then(Task::deadline)
            .map(Instant::as_millis)
    }
    /// Whether a statement result is awaited or a plan is half run (the host must not swap
    /// policies then).
    pub fn is_busy(&self) -> bool {
        self.is_awaiting() || self.work().is_some()
    }
    /// The cached rows (nodeid order), for tests and diagnostics.
    pub fn cached_rows(&self) -> Vec<(GroupId, Node)> {
        let mut v: Vec<(GroupId, Node)> = self
            .cache
            .iter()
            .flat_map(|(g, group)| group.nodes().iter().map(move |n| (*g, n.clone())))
            .collect();
        v.sort_by_key(|(_, n)| n.nodeid);
        v
    }

    // ----- internals ------------------------------------------------------------------

    /// Hands `stmt` to the host: its result is awaited as `what`.
    fn issue(&mut self, what: Issued, stmt: Statement) -> Statement {
        if let Turn::Processing { issued, .. } = &mut self.turn {
            issued.push_back(what);
        }
        self.metrics.statements += 1;
        stmt
    }

    /// Leaves the turn in progress (if it is) for `next`, keeping its queue's allocation.
    fn end_turn(&mut self, next: Turn) {
        if let Turn::Processing { mut issued, .. } = std::mem::replace(&mut self.turn, next) {
            issued.clear();
            self.spare_issued = issued;
        }
    }

    fn work(&self) -> Option<&Work> {
        match &self.turn {
            Turn::Processing { work, .. } => work.as_ref(),
            _ => None,
        }
    }

    fn take_work(&mut self) -> Option<Work> {
        match &mut self.turn {
            Turn::Processing { work, .. } => work.take(),
            _ => None,
        }
    }

    fn issued(&self) -> Option<&VecDeque<Issued>> {
        match &self.turn {
            Turn::Processing { issued, .. } => Some(issued),
            _ => None,
        }
    }

    fn is_awaiting(&self) -> bool {
        self.issued().is_some_and(|i| !i.is_empty())
    }

    /// The oldest statement issued and not yet answered.
    fn take_issued(&mut self) -> Option<Issued> {
        match &mut self.turn {
            Turn::Processing { issued, .. } => issued.pop_front(),
            _ => None,
        }
    }

    /// Applies the result of `issued`.
    fn answer(&mut self, now: Instant, issued: Issued, result: StatementResult) {
        if let StatementResult::Failed(e) = &result {
            self.metrics.failed_statements += 1;
            self.log(Level::Error, format!("statement failed: {}", e.message));
        }
        match issued {
            Issued::Load => match result {
                StatementResult::Metadata(rows) => {
                    self.load_cache(&rows);
                    self.reload = Reload::Current;
                }
                _ => {
                    self.lose_session();
                    self.reload = Reload::Due {
                        not_before: Some(now + RELOAD_RETRY),
                    };
                    self.end_turn(Turn::Ending);
                }
            },
            Issued::Rollback { deadline_passed } => {
                self.txn = Txn::Closed;
                match result {
                    StatementResult::Failed(_) => {
                        self.lose_session();
                        self.end_turn(Turn::Ending);
                    }
                    _ => {
                        if deadline_passed {
                            self.metrics.deadline_rollbacks += 1;
                        }
                    }
                }
            }
            Issued::Step(step) => self.step_result(now, step, result),
            Issued::NextPlan { task, step } => {
                // Every statement before succeeded: the plan before ran to its end.
                self.finish_work();
                if let Turn::Processing { work, .. } = &mut self.turn {
                    *work = Some(Work {
                        task: *task,
                        steps: VecDeque::new(),
                    });
                }
                self.step_result(now, step, result);
            }
            Issued::Forgotten => {
                self.log(
                    Level::Error,
                    "a result for a statement issued before the state was imported; reloading"
                        .into(),
                );
                self.schedule_reload();
            }
        }
    }

    /// After the results came: statements still unanswered are issued again by the next
    /// poll. The plan being run gets its steps back; plans pipelined after it are planned
    /// again and counted when they run.
    fn settle_batch(&mut self) {
        let Turn::Processing { work, issued } = &mut self.turn else {
            return;
        };
        if issued.is_empty() {
            return;
        }
        let current = issued
            .iter()
            .take_while(|i| matches!(i, Issued::Step(_)))
            .count();
        let unrun = issued
            .iter()
            .skip(current)
            .filter(|i| matches!(i, Issued::Step(_) | Issued::NextPlan { .. }))
            .count();
        self.metrics.statements -= unrun as u64;
        issued.truncate(current);
        if let Some(work) = work {
            while let Some(Issued::Step(step)) = issued.pop_back() {
                work.steps.push_front(step);
            }
        }
        issued.clear();
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
        if self.reload.is_due() {
            return false;
        }
        let Some(cached) = self.cache.get(&g) else {
            return false;
        };
        if self.queue.get(g).is_some() || self.txn.paused_group() == Some(g) {
            return false;
        }
        let nodes = cached.nodes();
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
    fn desired_group(
        &mut self,
        groupid: GroupId,
        primary: Node,
        members: &[MemberRef<'_>],
        leader_name: &str,
    ) -> Group {
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
        group
    }

    /// The reference's queueing rules; true when the task was queued (under a new id).
    fn add_task(&mut self, wanted: Wanted, now: Instant) -> bool {
        let g = wanted.group.groupid;
        let in_flight_same_group = self.txn.paused_group() == Some(g);
        let queued = self.queue.get(g);
        if wanted.origin == Origin::Heartbeat {
            // A heartbeat never overrides a task from a worker event ...
            if queued.is_some_and(Task::from_event) {
                return false;
            }
            // ... nor disturbs a switchover in progress before its deadline (the DCS may not
            // show the new roles yet).
            if let Some(f) = self.txn.paused() {
                if f.groupid() == g && f.deadline().is_some_and(|d| d > now) {
                    return false;
                }
            }
        }
        if let Some(queued) = queued {
            if wanted.same_as(queued) {
                return false;
            }
            let task = wanted.queued(self.task_id());
            if let Some(old) = self.queue.replace(task) {
                self.complete(old.ticket());
            }
            return true;
        }
        let differs = self.cache.get(&g).is_none_or(|c| !wanted.is_committed(c));
        if self.reload.is_due() || differs || in_flight_same_group {
            let task = wanted.queued(self.task_id());
            self.queue.push(task);
            return true;
        }
        false
    }

    fn task_id(&mut self) -> u64 {
        let id = self.next_task_id;
        self.next_task_id += 1;
        id
    }

    /// The in-flight group's task first; else the coordinator's; else the oldest. Tasks that
    /// match the cache are dropped on the way.
    fn pick_task(&mut self, now: Instant) -> Option<Task> {
        let eligible = |t: &Task| t.not_before.is_none_or(|nb| now >= nb);
        if let Some(f) = self.txn.paused() {
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
            if task.expires_at().is_some_and(|at| now >= at) {
                let t = self.queue.remove(g).expect("listed");
                self.metrics.expired_events += 1;
                let late = t
                    .expires_at()
                    .map_or(Duration::from_millis(0), |at| now.saturating_since(at));
                self.log(
                    Level::Warn,
                    format!(
                        "dropping the {} task of group {g}: its caller stopped waiting {late} ago, before it could start",
                        t.event.as_str(),
                    ),
                );
                self.complete(t.ticket());
                continue;
            }
            if self.cache.get(&g).is_some_and(|c| task.is_committed(c)) {
                let t = self.queue.remove(g).expect("listed");
                self.complete(t.ticket());
                continue;
            }
            return Some(task.clone());
        }
    }

    /// Plans a task: the reference's `process_task` and `update_group`.
    fn start_work(&mut self, task: Task, now: Instant) {
        let planned = self.plan_work(task, now, &self.txn);
        if let Turn::Processing { work, .. } = &mut self.turn {
            *work = Some(planned);
        }
    }

    /// The statements for `task` with `txn` the session's transaction (and the pause it may
    /// hold); reads nothing else but the cache.
    fn plan_work(&self, mut task: Task, now: Instant, txn: &Txn) -> Work {
        let g = task.groupid();
        let in_flight = txn.paused();
        let in_txn = in_flight.is_some();
        // `transition` adjusts the old topology as it plans; it works on a copy so that the
        // cache still says what is committed if this transaction is rolled back later.
        let mut old: Group = match (in_flight, self.cache.get(&g)) {
            (Some(f), _) => f.group.clone(),
            (None, Some(c)) => c.clone(),
            (None, None) => Group::new(g),
        };
        let txn_has_update = txn.has_update();
        let plan = transition(&mut task.group, &mut old, txn_has_update);
        let mut steps: VecDeque<Step> = VecDeque::new();
        let standalone_txn = !in_txn && plan.steps > 1;
        if task.event.opens_transaction() {
            if let Origin::Event(caller) = &mut task.origin {
                // A deadline not known on arrival (the reference's rule) starts now.
                caller.deadline.get_or_insert(now + caller.timeout);
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
        Work { task, steps }
    }

    fn step_result(&mut self, now: Instant, step: Step, result: StatementResult) {
        match result {
            StatementResult::Failed(e) => self.work_failed(now, &step, e),
            StatementResult::RolledBack => {
                self.work_failed(now, &step, StatementError::new("COMMIT answered ROLLBACK"))
            }
            ok => {
                let Turn::Processing {
                    work: Some(work), ..
                } = &mut self.turn
                else {
                    return;
                };
                match (&step, ok) {
                    (Step::Begin, _) => self.txn = Txn::Open { has_update: false },
                    (Step::Commit, _) => self.txn = Txn::Closed,
                    (Step::Change(Change::Add { addr, .. }), StatementResult::Added(id)) => {
                        if let Some(n) = work.task.group.get_mut(addr) {
                            n.nodeid = Some(id);
                        }
                    }
                    (Step::Change(Change::Update { .. }), _) => self.txn.mark_update(),
                    _ => {}
                }
            }
        }
    }

    /// The reference's handling of a failed statement: the transaction is gone, the cache is
    /// reloaded, the task is dropped and the next heartbeat retries it. Citus's "metadata out of
    /// sync" refusal is different: the task stays queued and is retried once Citus has synced.
    fn work_failed(&mut self, now: Instant, step: &Step, e: StatementError) {
        let Some(work) = self.take_work() else { return };
        let had_in_flight = self.txn.paused().is_some();
        self.txn = Txn::Closed;
        let g = work.task.groupid();
        let membership = matches!(step, Step::Change(c) if c.is_membership());
        if membership && e.is_metadata_out_of_sync() && !crate::compat::REFERENCE_PORT {
            self.metrics.sync_retries += 1;
            if let Some(t) = self.queue.get_mut(g) {
                if t.id == work.task.id {
                    t.not_before = Some(now + METADATA_SYNC_WAIT);
                }
            }
            if had_in_flight {
                self.schedule_reload();
            }
            self.log(
                Level::Info,
                format!("group {g}: Citus is syncing metadata; retrying in {METADATA_SYNC_WAIT}"),
            );
            return;
        }
        self.schedule_reload();
        // The reference guards this with "the queue is not empty", which cannot be false.
        debug_assert!(!self.queue.is_empty(), "{QUEUED_WHILE_WORKED}");
        if self.queue.get(g).is_some_and(|t| t.id == work.task.id) {
            self.queue.remove(g);
        }
        self.complete(work.task.ticket());
    }

    fn finish_work(&mut self) {
        let Some(work) = self.take_work() else { return };
        let mut task = work.task;
        let (g, id, ticket) = (task.groupid(), task.id, task.ticket());
        // The reference guards this with "the queue is not empty", which cannot be false.
        debug_assert!(!self.queue.is_empty(), "{QUEUED_WHILE_WORKED}");
        if task.event.opens_transaction() {
            self.txn.hold(task);
        } else {
            task.group.failover = false;
            self.view_memo.forget_group(g);
            self.cache.insert(g, task.group);
            self.txn.release();
        }
        if self.queue.get(g).is_some_and(|t| t.id == id) {
            self.queue.remove(g);
        }
        self.complete(ticket);
    }

    /// The session is gone, with its transaction: reload (keeping a pending retry's time).
    fn lose_session(&mut self) {
        self.txn = Txn::Closed;
        if self.reload == Reload::Current {
            self.reload = Reload::Due { not_before: None };
        }
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
                let group = Group::from_rows_with(g, rows, |h, p| taken.contains(&(h, p)));
                (g, group)
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

#[cfg(test)]
mod tests;
