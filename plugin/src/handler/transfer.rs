//! The handler to and from the state formats' types: here, beside the handler's private
//! types, because the formats must not depend on them. Writing borrows (`to_v2`), reading
//! converts owned values; format 1 writes format 2's values and reads format 2's types.
//!
//! The formats describe a turn as the builds before [`Turn`] kept it: a phase, the plan being
//! run with the steps not yet answered, the one statement awaited and how many more of a batch
//! were issued after it (`batch_ahead`). The queue of issued statements maps onto that: its
//! front is the one awaited, the plan's steps issued after it come before those not yet
//! issued, and the plans a batch pipelined are not exported (their statements stay counted in
//! `batch_ahead`, and an import awaits them as [`Issued::Forgotten`]).

use super::{Handler, Issued, Metrics, Reload, Step, Turn, Txn, ViewMemo, Work};
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
            phase: match self.turn {
                Turn::Idle => v2::Phase::Idle,
                Turn::Processing { .. } => v2::Phase::Processing,
                Turn::Ending => v2::Phase::Ending,
            },
            work: self.work().map(|w| v2::WorkRef {
                task: (&w.task).into(),
                steps: self
                    .issued_after_front()
                    .map_while(|i| match i {
                        Issued::Step(s) => Some(s),
                        _ => None,
                    })
                    .chain(&w.steps)
                    .map(step_ref)
                    .collect(),
            }),
            awaiting: self
                .issued()
                .and_then(VecDeque::front)
                .and_then(|i| match i {
                    Issued::Load => Some(v2::AwaitingRef::Load),
                    Issued::Rollback { deadline_passed } => Some(v2::AwaitingRef::Rollback {
                        deadline_passed: *deadline_passed,
                    }),
                    Issued::Step(s) | Issued::NextPlan { step: s, .. } => {
                        Some(v2::AwaitingRef::Step(step_ref(s)))
                    }
                    // Never first: an import puts the statement awaited before them.
                    Issued::Forgotten => None,
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
            batch_ahead: self.issued_after_front().count(),
        }
    }

    /// The statements issued after the one awaited: the rest of a batch.
    fn issued_after_front(&self) -> impl Iterator<Item = &Issued> {
        self.issued().into_iter().flat_map(|i| i.iter().skip(1))
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
            turn: turn(h.phase, h.work, h.awaiting, h.batch_ahead),
            spare_issued: VecDeque::new(),
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
            logs: Vec::new(),
            reported: BTreeSet::new(),
            view_memo: ViewMemo::default(),
        }
    }
}

/// The turn an exported phase, plan and statements describe. Builds wrote a plan or an awaited
/// statement only while processing; a state that says otherwise is read as processing too, so
/// neither the plan's ticket nor the awaited result is lost.
fn turn(
    phase: v2::Phase,
    work: Option<v2::Work>,
    awaiting: Option<v2::Awaiting>,
    batch_ahead: usize,
) -> Turn {
    let mut work = work.map(|w| Work {
        task: w.task.into(),
        steps: w.steps.into_iter().map(Step::from).collect(),
    });
    if work.is_none() && awaiting.is_none() {
        return match phase {
            v2::Phase::Idle => Turn::Idle,
            v2::Phase::Processing => Turn::processing(),
            v2::Phase::Ending => Turn::Ending,
        };
    }
    let mut issued = VecDeque::new();
    if let Some(a) = awaiting {
        issued.push_back(match a {
            v2::Awaiting::Load => Issued::Load,
            v2::Awaiting::Rollback { deadline_passed } => Issued::Rollback { deadline_passed },
            v2::Awaiting::Step(s) => Issued::Step(s.into()),
        });
        // The batch after it: first the rest of the plan, then plans not exported.
        let plan = work.as_mut().map_or(0, |w| batch_ahead.min(w.steps.len()));
        if let Some(w) = work.as_mut() {
            issued.extend(w.steps.drain(..plan).map(Issued::Step));
        }
        issued.extend((plan..batch_ahead).map(|_| Issued::Forgotten));
    }
    Turn::Processing { work, issued }
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
