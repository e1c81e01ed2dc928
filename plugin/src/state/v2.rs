//! Format 2: the handler as plain values in postcard's positional encoding. Every field is
//! written, in declaration order, and enums by variant index: reordering a field or a variant
//! here is a format change, renaming one is not (but format 1 writes these same values as
//! JSON, where names are the format: see [`super::v1`]).
//!
//! Two families of types describe the one shape. The `...Ref` types *write* it: they borrow
//! the handler and map its values as the serialiser walks them, so an export copies nothing
//! but the bytes. The owned types *read* it and are converted into the handler afterwards;
//! their `#[serde(default)]` fields are the ones format 1's JSON may leave out (a positional
//! format never does, so the attribute changes nothing for format 2).

use crate::config::CitusConfig;
use crate::event;
use crate::group;
use crate::node;
use crate::task_queue::{self, Ticket};
use crate::time::{Duration, Instant};
use crate::transition;
use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, SerializeStruct};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::marker::PhantomData;

// ----- leaves: plain values, the same written and read -----------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Primary,
    Secondary,
    Demoted,
    Unavailable,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeRole {
    Primary,
    Secondary,
    Unavailable,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    BeforeDemote,
    BeforePromote,
    AfterPromote,
}

/// The open transaction: whether one is, and whether a row changed in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Txn {
    pub open: bool,
    pub has_update: bool,
}

/// Where the turn is: between turns, processing tasks, or ending (the next poll says so).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    Idle,
    Processing,
    Ending,
}

/// The counters a swap carries over (an instance's own counters, such as expired events,
/// start again from zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metrics {
    pub deadline_rollbacks: u64,
    pub statements: u64,
    pub failed_statements: u64,
    pub sync_retries: u64,
}

// ----- writing: the handler's values, borrowed ------------------------------------

/// The whole state as format 2 writes it (format 1 writes the same values; see [`super::v1`]).
#[derive(Serialize)]
pub struct HandlerRef<'a> {
    pub config: ConfigRef<'a>,
    pub name: &'a str,
    pub connect_url: &'a str,
    pub ready: bool,
    pub cache: CacheRef<'a>,
    pub queue: QueueRef<'a>,
    pub in_flight: Option<TaskRef<'a>>,
    pub schedule_load: bool,
    pub reload_not_before: Option<u64>,
    pub txn: Txn,
    pub phase: Phase,
    pub work: Option<WorkRef<'a>>,
    pub awaiting: Option<AwaitingRef<'a>>,
    pub next_task_id: u64,
    pub next_ticket: Ticket,
    pub completed: &'a [Ticket],
    pub metrics: Metrics,
    pub batch_ahead: usize,
}

#[derive(Clone, Copy, Serialize)]
pub struct ConfigRef<'a> {
    pub group: i32,
    pub database: &'a str,
}

impl<'a> From<&'a CitusConfig> for ConfigRef<'a> {
    fn from(c: &'a CitusConfig) -> Self {
        ConfigRef {
            group: c.group,
            database: &c.database,
        }
    }
}

/// pg_dist_node as cached, by group: each group's committed topology, written as the task
/// a load of the metadata stands for (the shape the cache had when it held tasks).
#[derive(Clone, Copy)]
pub struct CacheRef<'a>(pub &'a BTreeMap<node::GroupId, group::Group>);

impl<'a> CacheRef<'a> {
    pub fn entries(self) -> impl ExactSizeIterator<Item = (node::GroupId, TaskRef<'a>)> {
        self.0
            .iter()
            .map(|(&g, group)| (g, TaskRef::committed(group)))
    }
}

impl Serialize for CacheRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.entries())
    }
}

/// The queue as {group: (arrival number, task)}, {arrival number: group} of the tasks in line,
/// and the next arrival number.
#[derive(Clone, Copy)]
pub struct QueueRef<'a>(pub &'a task_queue::TaskQueue);

impl<'a> QueueRef<'a> {
    pub fn by_group(self) -> impl ExactSizeIterator<Item = (node::GroupId, (u64, TaskRef<'a>))> {
        self.0
            .arrivals()
            .map(|(g, seq, t)| (g, (seq, TaskRef::from(t))))
    }
    pub fn order(self) -> impl Iterator<Item = (u64, node::GroupId)> + 'a {
        self.0.line()
    }
}

impl Serialize for QueueRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("TaskQueue", 3)?;
        st.serialize_field("by_group", &ByGroupRef(*self))?;
        st.serialize_field("order", &OrderRef(*self))?;
        st.serialize_field("next_seq", &self.0.next_arrival())?;
        st.end()
    }
}

struct ByGroupRef<'a>(QueueRef<'a>);

impl Serialize for ByGroupRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.by_group())
    }
}

/// The queue's line as a map; its length is counted first (postcard writes it up front).
pub(super) struct OrderRef<'a>(pub QueueRef<'a>);

impl Serialize for OrderRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.order().count()))?;
        for (seq, g) in self.0.order() {
            m.serialize_entry(&seq, &g)?;
        }
        m.end()
    }
}

#[derive(Clone, Copy, Serialize)]
pub struct TaskRef<'a> {
    pub id: u64,
    pub group: GroupRef<'a>,
    pub event: EventKind,
    pub timeout_ms: Option<u64>,
    pub cooldown_ms: i32,
    pub deadline: u64,
    pub ticket: Option<Ticket>,
    pub not_before: Option<u64>,
}

impl<'a> TaskRef<'a> {
    /// A cached group: id 0, `after_promote`, nothing waiting and no deadline (0).
    pub fn committed(group: &'a group::Group) -> Self {
        TaskRef {
            id: 0,
            group: group.into(),
            event: EventKind::AfterPromote,
            timeout_ms: None,
            cooldown_ms: event::DEFAULT_COOLDOWN_MS,
            deadline: 0,
            ticket: None,
            not_before: None,
        }
    }
}

/// A task from an event has a timeout and a ticket; a deadline not known yet is 0.
impl<'a> From<&'a task_queue::Task> for TaskRef<'a> {
    fn from(t: &'a task_queue::Task) -> Self {
        let caller = t.caller();
        TaskRef {
            id: t.id,
            group: (&t.group).into(),
            event: t.event.into(),
            timeout_ms: caller.map(|c| c.timeout.as_millis()),
            cooldown_ms: t.cooldown_ms,
            deadline: caller
                .and_then(|c| c.deadline)
                .map_or(0, Instant::as_millis),
            ticket: caller.and_then(|c| c.ticket),
            not_before: t.not_before.map(Instant::as_millis),
        }
    }
}

#[derive(Clone, Copy, Serialize)]
pub struct GroupRef<'a> {
    pub groupid: i32,
    pub nodes: NodesRef<'a>,
    pub failover: bool,
    pub stale: NodesRef<'a>,
}

impl<'a> From<&'a group::Group> for GroupRef<'a> {
    fn from(g: &'a group::Group) -> Self {
        GroupRef {
            groupid: g.groupid,
            nodes: NodesRef(g.nodes()),
            failover: g.failover,
            stale: NodesRef(&g.stale),
        }
    }
}

#[derive(Clone, Copy)]
pub struct NodesRef<'a>(pub &'a [group::Node]);

impl NodesRef<'_> {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for NodesRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for n in self.0 {
            seq.serialize_element(&NodeRef {
                addr: (&n.addr).into(),
                role: n.role.into(),
                nodeid: n.nodeid,
            })?;
        }
        seq.end()
    }
}

#[derive(Serialize)]
struct NodeRef<'a> {
    addr: AddressRef<'a>,
    role: Role,
    nodeid: Option<i32>,
}

#[derive(Clone, Copy, Serialize)]
pub struct AddressRef<'a> {
    pub host: &'a str,
    pub port: i32,
}

impl<'a> From<&'a node::Address> for AddressRef<'a> {
    fn from(a: &'a node::Address) -> Self {
        AddressRef {
            host: &a.host,
            port: a.port,
        }
    }
}

/// The task being processed and the statements left of its plan.
#[derive(Serialize)]
pub struct WorkRef<'a> {
    pub task: TaskRef<'a>,
    pub steps: Vec<StepRef<'a>>,
}

#[derive(Clone, Copy, Serialize)]
pub enum StepRef<'a> {
    Begin,
    Change(ChangeRef<'a>),
    Commit,
}

#[derive(Clone, Copy, Serialize)]
pub enum ChangeRef<'a> {
    Add {
        addr: AddressRef<'a>,
        role: NodeRole,
    },
    Update {
        nodeid: i32,
        addr: AddressRef<'a>,
        demoted: bool,
    },
    Remove {
        addr: AddressRef<'a>,
    },
}

impl<'a> From<&'a transition::Change> for ChangeRef<'a> {
    fn from(c: &'a transition::Change) -> Self {
        match c {
            transition::Change::Add { addr, role } => ChangeRef::Add {
                addr: addr.into(),
                role: (*role).into(),
            },
            transition::Change::Update {
                nodeid,
                addr,
                demoted,
            } => ChangeRef::Update {
                nodeid: *nodeid,
                addr: addr.into(),
                demoted: *demoted,
            },
            transition::Change::Remove { addr } => ChangeRef::Remove { addr: addr.into() },
        }
    }
}

/// The statement the host is running.
#[derive(Clone, Copy, Serialize)]
pub enum AwaitingRef<'a> {
    Load,
    Rollback { deadline_passed: bool },
    Step(StepRef<'a>),
}

// ----- reading: owned values, converted into the handler --------------------------

/// The whole state as format 2 (and, with its defaults, format 1) reads it.
#[derive(Debug, Deserialize)]
pub struct Handler {
    pub config: Config,
    pub name: String,
    pub connect_url: String,
    pub ready: bool,
    pub cache: MapInto<node::GroupId, Task, group::Group>,
    pub queue: TaskQueue,
    pub in_flight: Option<Task>,
    pub schedule_load: bool,
    pub reload_not_before: Option<u64>,
    pub txn: Txn,
    pub phase: Phase,
    pub work: Option<Work>,
    pub awaiting: Option<Awaiting>,
    pub next_task_id: u64,
    pub next_ticket: Ticket,
    pub completed: Vec<Ticket>,
    pub metrics: Metrics,
    #[serde(default)]
    pub batch_ahead: usize,
}

#[derive(Debug, Deserialize)]
pub struct Config {
    pub group: i32,
    pub database: String,
}

impl From<Config> for CitusConfig {
    fn from(c: Config) -> Self {
        CitusConfig {
            group: c.group,
            database: c.database,
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct Task {
    pub id: u64,
    pub group: Group,
    pub event: EventKind,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    pub cooldown_ms: i32,
    pub deadline: u64,
    #[serde(default)]
    pub ticket: Option<Ticket>,
    #[serde(default)]
    pub not_before: Option<u64>,
}

/// A task with a timeout came from an event; a deadline of 0 is one not known yet.
impl From<Task> for task_queue::Task {
    fn from(t: Task) -> Self {
        let origin = match t.timeout_ms {
            Some(timeout) => task_queue::Origin::Event(task_queue::Caller {
                ticket: t.ticket,
                timeout: Duration::from_millis(timeout),
                deadline: (t.deadline != 0).then_some(Instant::from_millis(t.deadline)),
            }),
            None => task_queue::Origin::Heartbeat,
        };
        task_queue::Task {
            id: t.id,
            group: t.group.into(),
            event: t.event.into(),
            origin,
            cooldown_ms: t.cooldown_ms,
            not_before: t.not_before.map(Instant::from_millis),
        }
    }
}

/// A cache entry: the group is what it holds (every build wrote the rest as a load would,
/// or from the `after_promote` task that committed it, which nothing reads).
impl From<Task> for group::Group {
    fn from(t: Task) -> Self {
        t.group.into()
    }
}

#[derive(Debug, Deserialize)]
pub struct Group {
    pub groupid: i32,
    pub nodes: VecInto<Node, group::Node>,
    pub failover: bool,
    #[serde(default)]
    pub stale: VecInto<Node, group::Node>,
}

impl From<Group> for group::Group {
    fn from(g: Group) -> Self {
        group::Group::from_parts(g.groupid, g.nodes.0, g.failover, g.stale.0)
    }
}

#[derive(Debug, Deserialize)]
pub struct Node {
    pub addr: Address,
    pub role: Role,
    pub nodeid: Option<i32>,
}

impl From<Node> for group::Node {
    fn from(n: Node) -> Self {
        group::Node {
            addr: n.addr.into(),
            role: n.role.into(),
            nodeid: n.nodeid,
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct Address {
    pub host: String,
    pub port: i32,
}

impl From<Address> for node::Address {
    fn from(a: Address) -> Self {
        node::Address {
            host: a.host,
            port: a.port,
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct TaskQueue {
    pub by_group: MapInto<node::GroupId, Queued, (u64, task_queue::Task)>,
    pub order: BTreeMap<u64, node::GroupId>,
    pub next_seq: u64,
}

/// A queued task with its arrival number.
#[derive(Debug, Deserialize)]
pub struct Queued(pub u64, pub Task);

impl From<Queued> for (u64, task_queue::Task) {
    fn from(Queued(seq, t): Queued) -> Self {
        (seq, t.into())
    }
}

impl From<TaskQueue> for task_queue::TaskQueue {
    fn from(q: TaskQueue) -> Self {
        task_queue::TaskQueue::from_parts(q.by_group.0, q.order.into_iter().collect(), q.next_seq)
    }
}

#[derive(Debug, Deserialize)]
pub struct Work {
    pub task: Task,
    pub steps: VecDeque<Step>,
}

#[derive(Debug, Deserialize)]
pub enum Step {
    Begin,
    Change(Change),
    Commit,
}

#[derive(Debug, Deserialize)]
pub enum Change {
    Add {
        addr: Address,
        role: NodeRole,
    },
    Update {
        nodeid: i32,
        addr: Address,
        demoted: bool,
    },
    Remove {
        addr: Address,
    },
}

impl From<Change> for transition::Change {
    fn from(c: Change) -> Self {
        match c {
            Change::Add { addr, role } => transition::Change::Add {
                addr: addr.into(),
                role: role.into(),
            },
            Change::Update {
                nodeid,
                addr,
                demoted,
            } => transition::Change::Update {
                nodeid,
                addr: addr.into(),
                demoted,
            },
            Change::Remove { addr } => transition::Change::Remove { addr: addr.into() },
        }
    }
}

#[derive(Debug, Deserialize)]
pub enum Awaiting {
    Load,
    Rollback { deadline_passed: bool },
    Step(Step),
}

/// A map of format values read straight into a map of the handler's values, converting each
/// as it is read (a second map would cost an import as much again).
pub struct MapInto<K, V, T>(pub BTreeMap<K, T>, PhantomData<V>);

impl<'de, K, V, T> Deserialize<'de> for MapInto<K, V, T>
where
    K: Deserialize<'de> + Ord,
    V: Deserialize<'de> + Into<T>,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries<K, V, T>(PhantomData<(K, V, T)>);
        impl<'de, K, V, T> Visitor<'de> for Entries<K, V, T>
        where
            K: Deserialize<'de> + Ord,
            V: Deserialize<'de> + Into<T>,
        {
            type Value = BTreeMap<K, T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((k, v)) = m.next_entry::<K, V>()? {
                    out.insert(k, v.into());
                }
                Ok(out)
            }
        }
        d.deserialize_map(Entries::<K, V, T>(PhantomData))
            .map(|m| MapInto(m, PhantomData))
    }
}

impl<K, V, T> Default for MapInto<K, V, T> {
    fn default() -> Self {
        MapInto(BTreeMap::new(), PhantomData)
    }
}

impl<K: fmt::Debug, V, T: fmt::Debug> fmt::Debug for MapInto<K, V, T> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A list of format values read straight into a list of the handler's values.
pub struct VecInto<V, T>(pub Vec<T>, PhantomData<V>);

impl<'de, V, T> Deserialize<'de> for VecInto<V, T>
where
    V: Deserialize<'de> + Into<T>,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Elements<V, T>(PhantomData<(V, T)>);
        impl<'de, V, T> Visitor<'de> for Elements<V, T>
        where
            V: Deserialize<'de> + Into<T>,
        {
            type Value = Vec<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Self::Value, A::Error> {
                // A length from the input is a hint, not a promise: bounded before allocating.
                let mut out = Vec::with_capacity(s.size_hint().unwrap_or(0).min(1024));
                while let Some(v) = s.next_element::<V>()? {
                    out.push(v.into());
                }
                Ok(out)
            }
        }
        d.deserialize_seq(Elements::<V, T>(PhantomData))
            .map(|v| VecInto(v, PhantomData))
    }
}

impl<V, T> Default for VecInto<V, T> {
    fn default() -> Self {
        VecInto(Vec::new(), PhantomData)
    }
}

impl<V, T: fmt::Debug> fmt::Debug for VecInto<V, T> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.fmt(f)
    }
}

// ----- the leaves' conversions ----------------------------------------------------

macro_rules! same_variants {
    ($ours:ty, $theirs:ty, [$($v:ident),*]) => {
        impl From<$theirs> for $ours {
            fn from(x: $theirs) -> Self {
                match x { $(<$theirs>::$v => <$ours>::$v),* }
            }
        }
        impl From<$ours> for $theirs {
            fn from(x: $ours) -> Self {
                match x { $(<$ours>::$v => <$theirs>::$v),* }
            }
        }
    };
}

same_variants!(Role, node::Role, [Primary, Secondary, Demoted, Unavailable]);
same_variants!(NodeRole, node::NodeRole, [Primary, Secondary, Unavailable]);
same_variants!(
    EventKind,
    event::EventKind,
    [BeforeDemote, BeforePromote, AfterPromote]
);
