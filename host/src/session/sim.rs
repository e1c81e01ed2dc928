//! The in-memory simulator as a session (replay's default coordinator, benchmarks, demo).

use super::MetadataSession;
use citus_ha_policy::node::{NodeRole, PgDistRow};
use citus_ha_policy::{Statement, StatementError, StatementResult};
use citus_sim::{CommitOutcome, Row, SimError, Simulator};

#[derive(Default)]
pub struct SimSession {
    pub sim: Simulator,
}

fn sim_role(r: NodeRole) -> citus_sim::NodeRole {
    match r {
        NodeRole::Primary => citus_sim::NodeRole::Primary,
        NodeRole::Secondary => citus_sim::NodeRole::Secondary,
        NodeRole::Unavailable => citus_sim::NodeRole::Unavailable,
    }
}

pub fn to_row(r: &Row) -> PgDistRow {
    PgDistRow {
        nodeid: r.nodeid,
        groupid: r.groupid,
        nodename: r.nodename.clone(),
        nodeport: r.nodeport,
        noderole: match r.noderole {
            citus_sim::NodeRole::Primary => NodeRole::Primary,
            citus_sim::NodeRole::Secondary => NodeRole::Secondary,
            citus_sim::NodeRole::Unavailable => NodeRole::Unavailable,
        },
    }
}

pub fn from_row(r: &PgDistRow) -> Row {
    Row {
        nodeid: r.nodeid,
        groupid: r.groupid,
        nodename: r.nodename.clone(),
        nodeport: r.nodeport,
        noderole: sim_role(r.noderole),
    }
}

impl SimSession {
    pub fn new(sim: Simulator) -> Self {
        Self { sim }
    }

    /// Runs a statement; the synchronous core shared by the async trait and benchmarks.
    pub fn run(&mut self, stmt: &Statement) -> StatementResult {
        let r: Result<StatementResult, SimError> = match stmt {
            Statement::LoadMetadata => self
                .sim
                .load()
                .map(|rows| StatementResult::Metadata(rows.iter().map(to_row).collect())),
            Statement::Begin => self.sim.begin().map(|_| StatementResult::Done),
            Statement::Commit => self.sim.commit().map(|o| match o {
                CommitOutcome::Committed => StatementResult::Done,
                CommitOutcome::RolledBack => StatementResult::RolledBack,
            }),
            Statement::Rollback => {
                self.sim.rollback();
                Ok(StatementResult::Done)
            }
            Statement::AddNode {
                host,
                port,
                groupid,
                role,
            } => self
                .sim
                .add_node(host, *port, *groupid, sim_role(*role))
                .map(StatementResult::Added),
            Statement::UpdateNode {
                nodeid,
                host,
                port,
                force,
                cooldown_ms,
            } => self
                .sim
                .update_node(*nodeid, host, *port, *force, *cooldown_ms)
                .map(|_| StatementResult::Done),
            Statement::RemoveNode { host, port } => self
                .sim
                .remove_node(host, *port)
                .map(|_| StatementResult::Done),
        };
        match r {
            Ok(r) => r,
            Err(e) => {
                // Like the real host: a failed statement's transaction is discarded at once.
                if self.sim.in_transaction() {
                    self.sim.rollback();
                }
                StatementResult::Failed(StatementError::new(e.to_string()))
            }
        }
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
