//! The vocabulary of pg_dist_node: groups, addresses, roles and rows.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A Citus group id (`groupid` in pg_dist_node).
pub type GroupId = i32;

/// The coordinator's group id; workers are 1 and up.
pub const COORDINATOR_GROUP: GroupId = 0;

/// The `noderole` column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum NodeRole {
    Primary,
    Secondary,
    Unavailable,
}

impl NodeRole {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Primary => "primary",
            NodeRole::Secondary => "secondary",
            NodeRole::Unavailable => "unavailable",
        }
    }
}

/// The role a node plays in a group's topology. `Demoted` is the primary row while client
/// writes are paused: its nodename carries a `-demoted` suffix, its noderole stays primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    Primary,
    Secondary,
    Demoted,
    Unavailable,
}

impl Role {
    /// A demoted row is still the group's primary row.
    pub fn is_primary(self) -> bool {
        matches!(self, Role::Primary | Role::Demoted)
    }
    pub fn from_node_role(r: NodeRole) -> Self {
        match r {
            NodeRole::Primary => Role::Primary,
            NodeRole::Secondary => Role::Secondary,
            NodeRole::Unavailable => Role::Unavailable,
        }
    }
}

/// Suffix that pauses a primary row (see [`Role::Demoted`]).
pub const DEMOTED_SUFFIX: &str = "-demoted";

/// A node's network address: pg_dist_node is UNIQUE on it, so it is a node's identity.
/// Ordered by host then port, which makes every choice the policy makes deterministic.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Address {
    pub host: String,
    pub port: i32,
}

impl Address {
    pub fn new(host: impl Into<String>, port: i32) -> Self {
        Self {
            host: host.into(),
            port,
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A row of pg_dist_node as the host reads it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgDistRow {
    pub nodeid: i32,
    pub groupid: GroupId,
    pub nodename: String,
    pub nodeport: i32,
    pub noderole: NodeRole,
}
