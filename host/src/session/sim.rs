//! The in-memory simulator as a session (replay's default coordinator, benchmarks, demo).

use super::MetadataSession;
use citus_ha_policy::node::PgDistRow;
use citus_ha_policy::sim_exec;
use citus_ha_policy::{Statement, StatementResult};
use citus_sim::{Row, Simulator};

#[derive(Default)]
pub struct SimSession {
    pub sim: Simulator,
}

pub fn to_row(r: &Row) -> PgDistRow {
    sim_exec::policy_row(r)
}

pub fn from_row(r: &PgDistRow) -> Row {
    sim_exec::sim_row(r)
}

impl SimSession {
    pub fn new(sim: Simulator) -> Self {
        Self { sim }
    }

    /// Runs a statement; the synchronous core shared by the async trait and benchmarks.
    pub fn run(&mut self, stmt: &Statement) -> StatementResult {
        sim_exec::execute(&mut self.sim, stmt)
    }
}

impl MetadataSession for SimSession {
    async fn execute(&mut self, stmt: &Statement) -> StatementResult {
        self.run(stmt)
    }
    async fn rows(&mut self) -> anyhow::Result<Vec<PgDistRow>> {
        Ok(self.sim.rows().iter().map(to_row).collect())
    }
    async fn lose(&mut self) {
        self.sim.lose_session();
    }
}
