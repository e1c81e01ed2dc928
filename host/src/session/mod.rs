//! The coordinator's metadata session: where the policy's statements run. One dedicated
//! session holds the metadata transaction; a failed statement never leaves it half-open.

pub mod conninfo;
pub mod faults;
pub mod pg;
pub mod sim;

use citus_ha_policy::node::PgDistRow;
use citus_ha_policy::{Statement, StatementResult};

/// Runs statements for the policy. After any failure the implementation has already discarded
/// the open transaction (rolled it back, or the connection is gone), as the policy expects.
#[allow(async_fn_in_trait)]
pub trait MetadataSession {
    async fn execute(&mut self, stmt: &Statement) -> StatementResult;
    /// pg_dist_node as this session sees it (uncommitted changes included).
    async fn rows(&mut self) -> anyhow::Result<Vec<PgDistRow>>;
    /// Drop the session: an open transaction is rolled back by the server.
    async fn lose(&mut self);
}

/// The kind of a statement, as scenario `fail` steps name it.
pub fn statement_kind(s: &Statement) -> &'static str {
    match s {
        Statement::LoadMetadata => "pg_dist_node",
        Statement::Begin => "BEGIN",
        Statement::Commit => "COMMIT",
        Statement::Rollback => "ROLLBACK",
        Statement::AddNode { .. } => "citus_add_node",
        Statement::UpdateNode { .. } => "citus_update_node",
        Statement::RemoveNode { .. } => "citus_remove_node",
    }
}
