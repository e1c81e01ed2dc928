//! What the policy asks the host to run, and what comes back.

use crate::node::{GroupId, NodeRole, PgDistRow};
use serde::{Deserialize, Serialize};

/// A statement for the dedicated metadata connection. The host binds every value as a
/// parameter; nothing here is ever pasted into SQL text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Statement {
    LoadMetadata,
    Begin,
    Commit,
    Rollback,
    AddNode {
        host: String,
        port: i32,
        groupid: GroupId,
        role: NodeRole,
    },
    UpdateNode {
        nodeid: i32,
        host: String,
        port: i32,
        force: bool,
        cooldown_ms: i32,
    },
    RemoveNode {
        host: String,
        port: i32,
    },
}

/// How a statement ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StatementResult {
    Done,
    /// COMMIT answered with ROLLBACK: the transaction had already failed.
    RolledBack,
    Added(i32),
    Metadata(Vec<PgDistRow>),
    Failed(StatementError),
}

impl StatementResult {
    /// The statement did not do its work: a host running a batch stops here, because the
    /// statements after it depended on it.
    pub fn ends_batch(&self) -> bool {
        matches!(
            self,
            StatementResult::Failed(_) | StatementResult::RolledBack
        )
    }
}

/// A failed statement. The host has already discarded the session's open transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementError {
    pub message: String,
    pub sqlstate: Option<String>,
    pub connection_lost: bool,
}

impl StatementError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            sqlstate: None,
            connection_lost: false,
        }
    }

    /// Citus refuses add/remove while worker metadata is being synced (in the transaction that
    /// changed a row, and for about a second after it commits). Waiting is the cure.
    pub fn is_metadata_out_of_sync(&self) -> bool {
        self.message
            .contains("is a metadata node, but is out of sync")
    }
}
