//! The test host: a handler whose statements run on the in-memory Citus simulator the way a
//! real host runs them, a clock the test moves, and connection losses injected on demand. The
//! handler's unit tests and the property tests drive the policy through this one host, so a
//! change to how a host runs a turn is made once (native only; feature `sim`).

use crate::handler::Handler;
use crate::statement::{Statement, StatementError, StatementResult};
use citus_sim::Simulator;
use std::collections::VecDeque;

/// What a statement does, without its arguments: what a test arms a failure for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatementKind {
    Load,
    Begin,
    Commit,
    Rollback,
    Add,
    Update,
    Remove,
}

impl StatementKind {
    pub const ALL: [StatementKind; 7] = [
        StatementKind::Load,
        StatementKind::Begin,
        StatementKind::Commit,
        StatementKind::Rollback,
        StatementKind::Add,
        StatementKind::Update,
        StatementKind::Remove,
    ];

    pub fn of(s: &Statement) -> Self {
        match s {
            Statement::LoadMetadata => StatementKind::Load,
            Statement::Begin => StatementKind::Begin,
            Statement::Commit => StatementKind::Commit,
            Statement::Rollback => StatementKind::Rollback,
            Statement::AddNode { .. } => StatementKind::Add,
            Statement::UpdateNode { .. } => StatementKind::Update,
            Statement::RemoveNode { .. } => StatementKind::Remove,
        }
    }
}

/// How the host takes statements from the handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// One statement and one result at a time (contracts 0.1.0 and 0.2.0).
    OneByOne,
    /// Batches, stopped at the first statement that ends one (contract 0.3.0 on).
    Batches,
}

/// One statement of a turn as the host ran it, with what was true just before it ran.
#[derive(Debug)]
pub struct Step<'a> {
    pub statement: &'a Statement,
    pub result: &'a StatementResult,
    /// The failure was injected (an armed kind), not the simulator's answer.
    pub injected: bool,
    /// The session had a transaction open when the statement was sent.
    pub in_transaction: bool,
    /// The handler had a task in flight when the statement was sent.
    pub in_flight: bool,
    /// Which of the turn's batches the statement came in (from 0; one statement each when
    /// delivered one by one).
    pub batch: usize,
}

/// A handler, the simulator it runs on, and the host's clock.
pub struct SimHost {
    pub handler: Handler,
    pub sim: Simulator,
    /// The host clock (ms) every call is made at; tests move it.
    pub now: u64,
    /// Statement kinds whose next occurrence fails as a lost connection.
    armed: Vec<StatementKind>,
}

impl SimHost {
    pub fn new(handler: Handler, sim: Simulator, now: u64) -> Self {
        Self {
            handler,
            sim,
            now,
            armed: Vec::new(),
        }
    }

    /// The next statement of `kind` fails as a lost connection (each call arms one).
    pub fn arm(&mut self, kind: StatementKind) {
        self.armed.push(kind);
    }

    /// No more injected failures.
    pub fn disarm(&mut self) {
        self.armed.clear();
    }

    /// What the real host does with one statement: run it; on any error the open transaction
    /// is gone. An armed kind fails as a lost connection instead (`true`: injected).
    pub fn exec(&mut self, stmt: &Statement) -> (StatementResult, bool) {
        let kind = StatementKind::of(stmt);
        if let Some(i) = self.armed.iter().position(|k| *k == kind) {
            self.armed.remove(i);
            self.sim.lose_session();
            let e = StatementError {
                message: "server closed the connection unexpectedly".into(),
                sqlstate: None,
                connection_lost: true,
            };
            return (StatementResult::Failed(e), true);
        }
        (crate::sim_exec::execute(&mut self.sim, stmt), false)
    }

    /// One loop turn at `now`: statements until the handler has none, each shown to `step`
    /// after it ran and before the handler has its result. An `Err` from `step` ends the turn
    /// there (the handler is left mid-turn: the test has failed).
    pub fn turn<E>(
        &mut self,
        delivery: Delivery,
        mut step: impl FnMut(&Step<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.sim.set_time_ms(self.now);
        let mut batch = VecDeque::new();
        let mut results = Vec::new();
        let mut batches = 0;
        loop {
            if batch.is_empty() {
                if !results.is_empty() {
                    self.handler
                        .handle_results(self.now, std::mem::take(&mut results));
                }
                match delivery {
                    Delivery::Batches => batch.extend(self.handler.poll_statements(self.now)),
                    Delivery::OneByOne => batch.extend(self.handler.poll_statement(self.now)),
                }
                batches += 1;
            }
            let Some(stmt) = batch.pop_front() else {
                return Ok(());
            };
            let in_transaction = self.sim.in_transaction();
            let in_flight = self.handler.in_flight_group().is_some();
            let (result, injected) = self.exec(&stmt);
            step(&Step {
                statement: &stmt,
                result: &result,
                injected,
                in_transaction,
                in_flight,
                batch: batches - 1,
            })?;
            match delivery {
                Delivery::Batches => {
                    let ends = result.ends_batch();
                    results.push(result);
                    if ends {
                        // The host stops a batch at its first failure.
                        batch.clear();
                    }
                }
                Delivery::OneByOne => self.handler.handle_result(self.now, result),
            }
        }
    }
}
