//! Runs the policy's statements on the in-memory Citus simulator, the way a real host runs them
//! on PostgreSQL: one call per statement, and a failed statement's open transaction discarded
//! at once. One implementation for the host's simulator session, the handler's unit tests and
//! the property tests (native only; feature `sim`).

use crate::node::{NodeRole, PgDistRow};
use crate::statement::{Statement, StatementError, StatementResult};
use citus_sim::{CommitOutcome, Row, SimError, Simulator};

pub fn sim_role(r: NodeRole) -> citus_sim::NodeRole {
    match r {
        NodeRole::Primary => citus_sim::NodeRole::Primary,
        NodeRole::Secondary => citus_sim::NodeRole::Secondary,
        NodeRole::Unavailable => citus_sim::NodeRole::Unavailable,
    }
}

/// A simulator row as the policy reads pg_dist_node.
pub fn policy_row(r: &Row) -> PgDistRow {
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

/// A policy row as the simulator stores it.
pub fn sim_row(r: &PgDistRow) -> Row {
    Row {
        nodeid: r.nodeid,
        groupid: r.groupid,
        nodename: r.nodename.clone(),
        nodeport: r.nodeport,
        noderole: sim_role(r.noderole),
    }
}

/// Runs one statement.
pub fn execute(sim: &mut Simulator, stmt: &Statement) -> StatementResult {
    let r: Result<StatementResult, SimError> = match stmt {
        Statement::LoadMetadata => sim
            .load()
            .map(|rows| StatementResult::Metadata(rows.iter().map(policy_row).collect())),
        Statement::Begin => sim.begin().map(|_| StatementResult::Done),
        Statement::Commit => sim.commit().map(|o| match o {
            CommitOutcome::Committed => StatementResult::Done,
            CommitOutcome::RolledBack => StatementResult::RolledBack,
        }),
        Statement::Rollback => {
            sim.rollback();
            Ok(StatementResult::Done)
        }
        Statement::AddNode {
            host,
            port,
            groupid,
            role,
        } => sim
            .add_node(host, *port, *groupid, sim_role(*role))
            .map(StatementResult::Added),
        Statement::UpdateNode {
            nodeid,
            host,
            port,
            force,
            cooldown_ms,
        } => sim
            .update_node(*nodeid, host, *port, *force, *cooldown_ms)
            .map(|_| StatementResult::Done),
        Statement::RemoveNode { host, port } => {
            sim.remove_node(host, *port).map(|_| StatementResult::Done)
        }
    };
    r.unwrap_or_else(|e| {
        if sim.in_transaction() {
            sim.rollback();
        }
        StatementResult::Failed(StatementError::new(e.to_string()))
    })
}
