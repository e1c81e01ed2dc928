//! Injected statement failures (replay's `fail` step): the statement has no effect, carries
//! the given error, and the session is lost.

use super::{statement_kind, MetadataSession};
use citus_ha_policy::node::PgDistRow;
use citus_ha_policy::{Statement, StatementError, StatementResult};

/// Statement kinds a `fail` step may name.
pub const KINDS: &[&str] = &[
    "citus_update_node",
    "citus_add_node",
    "citus_remove_node",
    "pg_dist_node",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
];

pub struct FaultySession<S> {
    pub inner: S,
    armed: Vec<(String, String)>,
}

impl<S> FaultySession<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            armed: Vec::new(),
        }
    }
    /// The next statement of `kind` fails with `error`.
    pub fn arm(&mut self, kind: &str, error: &str) {
        self.armed.push((kind.to_string(), error.to_string()));
    }
}

impl<S: MetadataSession> MetadataSession for FaultySession<S> {
    async fn execute(&mut self, stmt: &Statement) -> StatementResult {
        let kind = statement_kind(stmt);
        if let Some(i) = self.armed.iter().position(|(k, _)| k == kind) {
            let (_, error) = self.armed.remove(i);
            self.inner.lose().await;
            return StatementResult::Failed(StatementError {
                message: error,
                sqlstate: None,
                connection_lost: true,
            });
        }
        self.inner.execute(stmt).await
    }
    async fn rows(&mut self) -> anyhow::Result<Vec<PgDistRow>> {
        self.inner.rows().await
    }
    async fn lose(&mut self) {
        self.inner.lose().await
    }
}
