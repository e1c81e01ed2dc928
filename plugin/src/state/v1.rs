//! Format 1: the values of format 2 as JSON, `{"format": 1, "handler": {...}}`, with names
//! where format 2 has positions. It leaves a task's absent options, a group's empty stale rows
//! and a zero batch count out (the usual case, for every cached group); earlier builds wrote
//! some of them as `null`, and format 2's owned types read both (their `#[serde(default)]`).
//! These types write it: each wraps the format 2 value it writes, leaving those fields out.

use super::v2::{self, AwaitingRef, ConfigRef, EventKind, Metrics, NodesRef, Phase, StepRef, Txn};
use crate::node::GroupId;
use crate::task_queue::Ticket;
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

#[derive(Serialize)]
pub struct Export<'a> {
    pub format: u32,
    pub handler: HandlerRef<'a>,
}

#[derive(Serialize)]
pub struct HandlerRef<'a> {
    config: ConfigRef<'a>,
    name: &'a str,
    connect_url: &'a str,
    ready: bool,
    cache: CacheRef<'a>,
    queue: QueueRef<'a>,
    in_flight: Option<TaskRef<'a>>,
    schedule_load: bool,
    reload_not_before: Option<u64>,
    txn: Txn,
    phase: Phase,
    work: Option<WorkRef<'a>>,
    awaiting: Option<AwaitingRef<'a>>,
    next_task_id: u64,
    next_ticket: Ticket,
    completed: &'a [Ticket],
    metrics: Metrics,
    #[serde(skip_serializing_if = "is_zero")]
    batch_ahead: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl<'a> From<v2::HandlerRef<'a>> for HandlerRef<'a> {
    fn from(h: v2::HandlerRef<'a>) -> Self {
        HandlerRef {
            config: h.config,
            name: h.name,
            connect_url: h.connect_url,
            ready: h.ready,
            cache: CacheRef(h.cache),
            queue: QueueRef(h.queue),
            in_flight: h.in_flight.map(TaskRef::from),
            schedule_load: h.schedule_load,
            reload_not_before: h.reload_not_before,
            txn: h.txn,
            phase: h.phase,
            work: h.work.map(|w| WorkRef {
                task: w.task.into(),
                steps: w.steps,
            }),
            awaiting: h.awaiting,
            next_task_id: h.next_task_id,
            next_ticket: h.next_ticket,
            completed: h.completed,
            metrics: h.metrics,
            batch_ahead: h.batch_ahead,
        }
    }
}

struct CacheRef<'a>(v2::CacheRef<'a>);

impl Serialize for CacheRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.entries().map(|(g, t)| (g, TaskRef::from(t))))
    }
}

struct QueueRef<'a>(v2::QueueRef<'a>);

impl Serialize for QueueRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("TaskQueue", 3)?;
        st.serialize_field("by_group", &ByGroupRef(self.0))?;
        st.serialize_field("order", &v2::OrderRef(self.0))?;
        st.serialize_field("next_seq", &self.0 .0.next_arrival())?;
        st.end()
    }
}

struct ByGroupRef<'a>(v2::QueueRef<'a>);

impl Serialize for ByGroupRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let tasks = self.0.by_group();
        s.collect_map(tasks.map(|(g, (seq, t)): (GroupId, _)| (g, (seq, TaskRef::from(t)))))
    }
}

#[derive(Serialize)]
struct WorkRef<'a> {
    task: TaskRef<'a>,
    steps: Vec<StepRef<'a>>,
}

#[derive(Serialize)]
struct TaskRef<'a> {
    id: u64,
    group: GroupRef<'a>,
    event: EventKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout_ms: Option<u64>,
    cooldown_ms: i32,
    deadline: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    ticket: Option<Ticket>,
    #[serde(skip_serializing_if = "Option::is_none")]
    not_before: Option<u64>,
}

impl<'a> From<v2::TaskRef<'a>> for TaskRef<'a> {
    fn from(t: v2::TaskRef<'a>) -> Self {
        TaskRef {
            id: t.id,
            group: GroupRef {
                groupid: t.group.groupid,
                nodes: t.group.nodes,
                failover: t.group.failover,
                stale: t.group.stale,
            },
            event: t.event,
            timeout_ms: t.timeout_ms,
            cooldown_ms: t.cooldown_ms,
            deadline: t.deadline,
            ticket: t.ticket,
            not_before: t.not_before,
        }
    }
}

#[derive(Serialize)]
struct GroupRef<'a> {
    groupid: i32,
    nodes: NodesRef<'a>,
    failover: bool,
    #[serde(skip_serializing_if = "NodesRef::is_empty")]
    stale: NodesRef<'a>,
}
