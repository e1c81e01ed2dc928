//! The handler to and from the state formats' types: here, beside the handler's private
//! types, because the formats must not depend on them. Writing borrows (`to_v2`), reading
//! converts owned values; format 1 writes format 2's values and reads format 2's types.

use super::{Awaiting, Handler, Metrics, Phase, Reload, Step, Txn, ViewMemo, Work};
use crate::state::v2;
use crate::time::Instant;
use std::collections::{BTreeSet, VecDeque};

impl Handler {
    /// The state as format 2 writes it, borrowed from the handler.
    pub(crate) fn to_v2(&self) -> v2::HandlerRef<'_> {
        v2::HandlerRef {
            config: (&self.config).into(),
            name: &self.name,
            connect_url: &self.connect_url,
            ready: self.ready,
            cache: v2::CacheRef(&self.cache),
            queue: v2::QueueRef(&self.queue),
            in_flight: self.txn.paused().map(v2::TaskRef::from),
            schedule_load: self.reload.is_due(),
            reload_not_before: match self.reload {
                Reload::Due { not_before } => not_before.map(Instant::as_millis),
                Reload::Current => None,
            },
            txn: v2::Txn {
                open: self.txn != Txn::Closed,
                has_update: self.txn.has_update(),
            },
            phase: match self.phase {
                Phase::Idle => v2::Phase::Idle,
                Phase::Processing => v2::Phase::Processing,
                Phase::Ending => v2::Phase::Ending,
            },
            work: self.work.as_ref().map(|w| v2::WorkRef {
                task: (&w.task).into(),
                steps: w.steps.iter().map(step_ref).collect(),
            }),
            awaiting: self.awaiting.as_ref().map(|a| match a {
                Awaiting::Load => v2::AwaitingRef::Load,
                Awaiting::Rollback { deadline_passed } => v2::AwaitingRef::Rollback {
                    deadline_passed: *deadline_passed,
                },
                Awaiting::Step(s) => v2::AwaitingRef::Step(step_ref(s)),
            }),
            next_task_id: self.next_task_id,
            next_ticket: self.next_ticket,
            completed: &self.completed,
            metrics: v2::Metrics {
                deadline_rollbacks: self.metrics.deadline_rollbacks,
                statements: self.metrics.statements,
                failed_statements: self.metrics.failed_statements,
                sync_retries: self.metrics.sync_retries,
            },
            batch_ahead: self.batch_ahead,
        }
    }
}

fn step_ref(s: &Step) -> v2::StepRef<'_> {
    match s {
        Step::Begin => v2::StepRef::Begin,
        Step::Change(c) => v2::StepRef::Change(c.into()),
        Step::Commit => v2::StepRef::Commit,
    }
}

impl From<v2::Handler> for Handler {
    fn from(h: v2::Handler) -> Self {
        Handler {
            config: h.config.into(),
            name: h.name,
            connect_url: h.connect_url,
            ready: h.ready,
            cache: h.cache.0,
            queue: h.queue.into(),
            reload: match h.schedule_load {
                true => Reload::Due {
                    not_before: h.reload_not_before.map(Instant::from_millis),
                },
                false => Reload::Current,
            },
            // A paused task holds an open transaction (every build opened it first).
            txn: match (h.in_flight, h.txn.open) {
                (Some(task), _) => Txn::Paused {
                    task: task.into(),
                    has_update: h.txn.has_update,
                },
                (None, true) => Txn::Open {
                    has_update: h.txn.has_update,
                },
                (None, false) => Txn::Closed,
            },
            phase: match h.phase {
                v2::Phase::Idle => Phase::Idle,
                v2::Phase::Processing => Phase::Processing,
                v2::Phase::Ending => Phase::Ending,
            },
            work: h.work.map(|w| Work {
                task: w.task.into(),
                steps: w.steps.into_iter().map(Step::from).collect(),
            }),
            awaiting: h.awaiting.map(|a| match a {
                v2::Awaiting::Load => Awaiting::Load,
                v2::Awaiting::Rollback { deadline_passed } => {
                    Awaiting::Rollback { deadline_passed }
                }
                v2::Awaiting::Step(s) => Awaiting::Step(s.into()),
            }),
            next_task_id: h.next_task_id,
            next_ticket: h.next_ticket,
            completed: h.completed,
            metrics: Metrics {
                deadline_rollbacks: h.metrics.deadline_rollbacks,
                statements: h.metrics.statements,
                failed_statements: h.metrics.failed_statements,
                sync_retries: h.metrics.sync_retries,
                expired_events: 0,
            },
            batch_ahead: h.batch_ahead,
            pipelined: VecDeque::new(),
            logs: Vec::new(),
            reported: BTreeSet::new(),
            view_memo: ViewMemo::default(),
        }
    }
}

impl From<v2::Step> for Step {
    fn from(s: v2::Step) -> Self {
        match s {
            v2::Step::Begin => Step::Begin,
            v2::Step::Change(c) => Step::Change(c.into()),
            v2::Step::Commit => Step::Commit,
        }
    }
}
