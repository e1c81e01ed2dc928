//! An in-memory model of the Citus coordinator's `pg_dist_node` as ONE database session sees it.
//!
//! The HA policy must never send the coordinator something real Citus would refuse, and it
//! must cope with everything real Citus does refuse. Replay, property tests and benchmarks
//! therefore run the policy against this simulator, which enforces the behaviour recorded in
//! `docs/citus-behaviour.md`: transactional visibility, aborted transactions, the unique
//! (nodename, nodeport) constraint, one primary per group, the non-transactional nodeid
//! sequence, and the "metadata node out of sync" refusal of add/remove after an update.
//!
//! It is deterministic (a simulated clock, no background activity, no iteration over hash
//! maps in any output) and every statement is O(log n) or O(1) apart from the rows a load
//! returns: a transaction changes the table in place and keeps an undo log, so BEGIN, COMMIT
//! and ROLLBACK cost what the transaction changed, not the size of the table. No statement
//! panics on any input.

#![warn(missing_docs)]

mod table;

use std::fmt;
use std::str::FromStr;

use table::Table;

/// The `noderole` enum of `pg_dist_node`.
///
/// Only primaries take part in the "one primary per group" rule and in the
/// metadata-out-of-sync refusal, so the role is a real type rather than a string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeRole {
    /// A node that serves the group's reads and writes.
    Primary,
    /// A standby registered for read-only use by follower clusters.
    Secondary,
    /// A node Citus must not route to.
    Unavailable,
}

impl NodeRole {
    /// The PostgreSQL enum label, as used in SQL and in scenario files.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Primary => "primary",
            NodeRole::Secondary => "secondary",
            NodeRole::Unavailable => "unavailable",
        }
    }
}

impl fmt::Display for NodeRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NodeRole {
    type Err = SimError;

    /// Parses the exact (case-sensitive) enum label, like PostgreSQL's enum input does, so
    /// that a scenario with `"Primary"` is refused the way the real database would refuse it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "primary" => Ok(NodeRole::Primary),
            "secondary" => Ok(NodeRole::Secondary),
            "unavailable" => Ok(NodeRole::Unavailable),
            other => Err(SimError::InvalidNodeRole(other.to_owned())),
        }
    }
}

/// One row of `pg_dist_node`, reduced to the columns the policy reads and writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// Primary key, drawn from a sequence that never goes back (not even on ROLLBACK).
    pub nodeid: i32,
    /// The group (0 = coordinator); a group has at most one primary row.
    pub groupid: i32,
    /// Host name; together with `nodeport` unique over the whole table.
    pub nodename: String,
    /// Port; together with `nodename` unique over the whole table.
    pub nodeport: i32,
    /// Primary, secondary or unavailable.
    pub noderole: NodeRole,
}

/// Knobs for behaviour that replay deliberately leaves out but the policy must survive.
#[derive(Clone, Debug, Default)]
pub struct SimOptions {
    /// Real Citus refuses add/remove for about a second after a committed update, until the
    /// maintenance daemon has re-synced the workers' metadata. `Some(ms)` models that window
    /// on the simulated clock; `None` refuses only inside the updating transaction (the replay
    /// default, so that outputs do not depend on timing).
    pub refuse_after_commit_ms: Option<u64>,
}

/// A statement's failure. `Display` is exactly the message text Citus/PostgreSQL reports, so
/// replay output from the simulator and from a real database can be compared line by line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// A statement after an error inside the same transaction block.
    #[error("current transaction is aborted, commands ignored until end of transaction block")]
    TransactionAborted,
    /// `citus_update_node` with an id no row has. Citus formats the id with `%u`, so a
    /// negative id prints as its unsigned 32-bit value.
    #[error("node {} not found", *.0 as u32)]
    NodeNotFound(i32),
    /// `citus_update_node` to an address another row already holds.
    #[error("there is already another node with the specified hostname and port")]
    AddressInUse,
    /// `citus_add_node`/`citus_remove_node` while workers' metadata is not synced (after an
    /// address change); names the first worker primary.
    #[error("{host}:{port} is a metadata node, but is out of sync")]
    MetadataOutOfSync {
        /// Host of the lowest-nodeid worker primary.
        host: String,
        /// Port of the lowest-nodeid worker primary.
        port: i32,
    },
    /// `citus_add_node` of a primary into a group that already has one.
    #[error("group {0} already has a primary node")]
    GroupHasPrimary(i32),
    /// `citus_remove_node` of an address no row has. Citus formats the port with `%u`.
    #[error("node at \"{host}:{}\" does not exist", *.port as u32)]
    NodeDoesNotExist {
        /// The requested host.
        host: String,
        /// The requested port.
        port: i32,
    },
    /// A port outside 1..=65535 (the simulator refuses what could never be connected to).
    #[error("invalid nodeport {0}: must be between 1 and 65535")]
    InvalidPort(i32),
    /// An empty host name.
    #[error("invalid nodename \"\": must not be empty")]
    EmptyHostname,
    /// A role label that is not one of the enum's values.
    #[error("invalid input value for enum noderole: \"{0}\"")]
    InvalidNodeRole(String),
    /// The nodeid sequence is exhausted.
    #[error("nextval: reached maximum value of sequence \"pg_dist_node_nodeid_seq\" (2147483647)")]
    SequenceExhausted,
    /// A new row's nodeid is already in use (only possible if the sequence was overtaken).
    #[error("duplicate key value violates unique constraint \"pg_dist_node_pkey\"")]
    DuplicateNodeId,
}

/// What COMMIT did: an aborted transaction cannot commit, PostgreSQL reports ROLLBACK instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitOutcome {
    /// The transaction's changes are now visible to everyone.
    Committed,
    /// The transaction had been aborted by an error; nothing was applied.
    RolledBack,
}

/// How to take back one change of an open transaction.
#[derive(Clone, Debug)]
enum Undo {
    /// A row was inserted: remove it.
    Inserted(i32),
    /// A row was removed: put it back.
    Removed(Row),
    /// A row moved to a new address: move it back.
    Moved {
        nodeid: i32,
        nodename: String,
        nodeport: i32,
    },
}

/// An open transaction block of the session.
#[derive(Clone, Debug, Default)]
struct Txn {
    /// The changes made in it, oldest first; ROLLBACK undoes them newest first.
    undo: Vec<Undo>,
    /// An error happened: only COMMIT/ROLLBACK are accepted from now on.
    aborted: bool,
    /// An address-changing update happened: workers' metadata is out of sync.
    updated: bool,
}

/// The coordinator's `pg_dist_node` as one session sees it.
///
/// The table is the session's view: a transaction changes it in place and records how to undo
/// each change, so COMMIT drops the log and ROLLBACK replays it backwards (what another
/// session sees is the table with the log undone). The nodeid sequence lives outside the
/// table because PostgreSQL sequences are not transactional.
#[derive(Clone, Debug)]
pub struct Simulator {
    opts: SimOptions,
    table: Table,
    txn: Option<Txn>,
    /// The last value the nodeid sequence handed out (0: none yet, so the first is 1).
    last_nodeid: i32,
    now_ms: u64,
    /// Clock at the last commit of an address change (for `refuse_after_commit_ms`).
    last_update_commit_ms: Option<u64>,
}

impl Default for Simulator {
    fn default() -> Self {
        Self::new()
    }
}

impl Simulator {
    /// An empty table whose nodeid sequence starts at 1, with the replay defaults.
    pub fn new() -> Self {
        Self::with_options(SimOptions::default())
    }

    /// An empty table with the given options.
    pub fn with_options(opts: SimOptions) -> Self {
        Simulator {
            opts,
            table: Table::default(),
            txn: None,
            last_nodeid: 0,
            now_ms: 0,
            last_update_commit_ms: None,
        }
    }

    /// An outside change (scenario `metadata` op): the committed rows are replaced and any
    /// open transaction is discarded, since the session's snapshot no longer means anything.
    ///
    /// Rows are ordered by nodeid; a row repeating an earlier row's nodeid or address is
    /// dropped, because the real table could not hold it. The sequence continues from
    /// max(current sequence, max nodeid in rows) so that new ids never collide. Group and role
    /// values are taken as given.
    pub fn replace_rows(&mut self, rows: Vec<Row>) {
        self.txn = None;
        self.table = Table::from_rows(rows);
        if let Some(max) = self.table.max_nodeid() {
            self.last_nodeid = self.last_nodeid.max(max);
        }
    }

    /// Sets the simulated clock; it only matters for `refuse_after_commit_ms`.
    pub fn set_time_ms(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
    }

    /// `SELECT ... FROM pg_dist_node`: the rows sorted by nodeid as this session sees them,
    /// uncommitted changes included. Inside an aborted transaction it fails like any
    /// statement.
    pub fn load(&mut self) -> Result<Vec<Row>, SimError> {
        self.statement(|s| Ok(s.view().rows().to_vec()))
    }

    /// BEGIN. Inside an open transaction PostgreSQL only warns, so this is Ok and the
    /// transaction (with its changes) is kept; inside an aborted one it fails like any
    /// statement other than COMMIT/ROLLBACK.
    pub fn begin(&mut self) -> Result<(), SimError> {
        match &self.txn {
            Some(t) if t.aborted => Err(SimError::TransactionAborted),
            Some(_) => Ok(()),
            None => {
                self.txn = Some(Txn::default());
                Ok(())
            }
        }
    }

    /// COMMIT. An aborted transaction reports [`CommitOutcome::RolledBack`] and applies
    /// nothing; outside a transaction PostgreSQL only warns, so it is `Committed`.
    /// Committing an address change starts the `refuse_after_commit_ms` window.
    pub fn commit(&mut self) -> Result<CommitOutcome, SimError> {
        match self.txn.take() {
            None => Ok(CommitOutcome::Committed),
            Some(t) if t.aborted => {
                undo_all(&mut self.table, t.undo);
                Ok(CommitOutcome::RolledBack)
            }
            Some(t) => {
                if t.updated {
                    self.last_update_commit_ms = Some(self.now_ms);
                }
                Ok(CommitOutcome::Committed)
            }
        }
    }

    /// ROLLBACK: every row is as it was at BEGIN (outside a transaction PostgreSQL only warns).
    /// The nodeid sequence is not rolled back, as in PostgreSQL.
    pub fn rollback(&mut self) {
        if let Some(t) = self.txn.take() {
            undo_all(&mut self.table, t.undo);
        }
    }

    /// `citus_add_node(host, port, groupid, role)`.
    ///
    /// An address that already exists returns its nodeid and changes nothing, whatever group
    /// or role was asked (Citus returns early). Otherwise a nodeid is drawn from the sequence
    /// and stays consumed even if the add is then refused: because the group already has a
    /// primary (`group N already has a primary node`) or because metadata is out of sync
    /// after an update. `groupid` is stored as given (the simulator does not emulate
    /// Citus's `-1` = "pick a new group").
    pub fn add_node(
        &mut self,
        host: &str,
        port: i32,
        groupid: i32,
        role: NodeRole,
    ) -> Result<i32, SimError> {
        self.statement(|s| {
            validate_address(host, port)?;
            if let Some(existing) = s.view().id_at(host, port) {
                return Ok(existing);
            }
            let nodeid = s.nextval()?;
            if role == NodeRole::Primary && s.view().has_primary(groupid) {
                return Err(SimError::GroupHasPrimary(groupid));
            }
            s.check_metadata_synced()?;
            let row = Row {
                nodeid,
                groupid,
                nodename: host.to_owned(),
                nodeport: port,
                noderole: role,
            };
            if s.table.insert(row) {
                s.logged(Undo::Inserted(nodeid));
                Ok(nodeid)
            } else {
                Err(SimError::DuplicateNodeId)
            }
        })
    }

    /// `citus_update_node(nodeid, host, port, force, cooldown_ms)`.
    ///
    /// Checks in Citus's order: an address held by another row fails with the unique-address
    /// error (even when the id is unknown); the row's own address is a silent no-op that does
    /// NOT count as an update; then an unknown id fails with `node N not found`. An effective
    /// update marks workers' metadata out of sync (add/remove are refused for the rest of the
    /// transaction, or from the autocommit onwards with `refuse_after_commit_ms`).
    /// `force` and `cooldown_ms` only affect locking, which the simulator does not model.
    pub fn update_node(
        &mut self,
        nodeid: i32,
        host: &str,
        port: i32,
        force: bool,
        cooldown_ms: i32,
    ) -> Result<(), SimError> {
        let _ = (force, cooldown_ms);
        self.statement(|s| {
            validate_address(host, port)?;
            if let Some(holder) = s.view().id_at(host, port) {
                return if holder == nodeid {
                    Ok(())
                } else {
                    Err(SimError::AddressInUse)
                };
            }
            let Some((nodename, nodeport)) = s.table.set_address(nodeid, host, port) else {
                return Err(SimError::NodeNotFound(nodeid));
            };
            match &mut s.txn {
                Some(t) => {
                    t.updated = true;
                    t.undo.push(Undo::Moved {
                        nodeid,
                        nodename,
                        nodeport,
                    });
                }
                None => s.last_update_commit_ms = Some(s.now_ms),
            }
            Ok(())
        })
    }

    /// `citus_remove_node(host, port)`. An unknown address fails with
    /// `node at "host:port" does not exist`; after an update it is refused like an add.
    /// Removing the only (primary) row of a group is allowed: the simulator has no shard
    /// placements that could forbid it. The out-of-sync check looks at the view before the
    /// removal, so removing the first worker primary itself is refused naming that node.
    pub fn remove_node(&mut self, host: &str, port: i32) -> Result<(), SimError> {
        self.statement(|s| {
            let Some(nodeid) = s.view().id_at(host, port) else {
                return Err(SimError::NodeDoesNotExist {
                    host: host.to_owned(),
                    port,
                });
            };
            s.check_metadata_synced()?;
            if let Some(row) = s.table.remove(nodeid) {
                s.logged(Undo::Removed(row));
            }
            Ok(())
        })
    }

    /// The connection dropped: an open transaction, aborted or not, is discarded (the server
    /// rolls it back). The sequence and the post-commit window are server state and stay.
    pub fn lose_session(&mut self) {
        self.rollback();
    }

    /// Whether a transaction block is open (aborted or not).
    pub fn in_transaction(&self) -> bool {
        self.txn.is_some()
    }

    /// The session's view sorted by nodeid, uncommitted changes included; never fails, even
    /// in an aborted transaction (it is what replay prints as `final`).
    pub fn rows(&self) -> Vec<Row> {
        self.view().rows().to_vec()
    }

    /// The committed rows sorted by nodeid: what another session would see.
    pub fn committed_rows(&self) -> Vec<Row> {
        match &self.txn {
            Some(t) if !t.undo.is_empty() => {
                let mut committed = self.table.clone();
                undo_all(&mut committed, t.undo.clone());
                committed.rows().to_vec()
            }
            _ => self.table.rows().to_vec(),
        }
    }

    /// Runs one statement with PostgreSQL's transaction rules: refused inside an aborted
    /// transaction, and an error inside a transaction aborts it. Outside a transaction a
    /// failed statement changes nothing because every statement checks before it mutates.
    fn statement<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, SimError>,
    ) -> Result<T, SimError> {
        if self.txn.as_ref().is_some_and(|t| t.aborted) {
            return Err(SimError::TransactionAborted);
        }
        let result = f(self);
        if result.is_err() {
            if let Some(t) = &mut self.txn {
                t.aborted = true;
            }
        }
        result
    }

    /// The table as this session sees it (uncommitted changes included).
    fn view(&self) -> &Table {
        &self.table
    }

    /// Records how to undo a change just made, if a transaction is open (outside one, a
    /// change is committed at once).
    fn logged(&mut self, undo: Undo) {
        if let Some(t) = &mut self.txn {
            t.undo.push(undo);
        }
    }

    /// `nextval('pg_dist_node_nodeid_seq')`: not transactional, never reused.
    fn nextval(&mut self) -> Result<i32, SimError> {
        let next = self
            .last_nodeid
            .checked_add(1)
            .ok_or(SimError::SequenceExhausted)?;
        self.last_nodeid = next;
        Ok(next)
    }

    /// Whether workers' metadata is out of sync: after an address change in this transaction,
    /// or within `refuse_after_commit_ms` of a committed one.
    fn metadata_out_of_sync(&self) -> bool {
        if self.txn.as_ref().is_some_and(|t| t.updated) {
            return true;
        }
        match (self.opts.refuse_after_commit_ms, self.last_update_commit_ms) {
            (Some(window), Some(at)) => self.now_ms < at.saturating_add(window),
            _ => false,
        }
    }

    /// Citus refuses add/remove while a metadata worker is out of sync, naming the first
    /// worker primary; with no worker primary there is nothing to be out of sync.
    fn check_metadata_synced(&self) -> Result<(), SimError> {
        if !self.metadata_out_of_sync() {
            return Ok(());
        }
        match self.view().first_worker_primary() {
            Some(r) => Err(SimError::MetadataOutOfSync {
                host: r.nodename.clone(),
                port: r.nodeport,
            }),
            None => Ok(()),
        }
    }
}

/// Takes back a transaction's changes, newest first. Each change was valid when made and
/// everything after it is undone first, so every step restores a state the table had.
fn undo_all(table: &mut Table, undo: Vec<Undo>) {
    for u in undo.into_iter().rev() {
        match u {
            Undo::Inserted(nodeid) => {
                table.remove(nodeid);
            }
            Undo::Removed(row) => {
                table.insert(row);
            }
            Undo::Moved {
                nodeid,
                nodename,
                nodeport,
            } => {
                table.set_address(nodeid, &nodename, nodeport);
            }
        }
    }
}

/// Refuses addresses no server could have, so the table only ever holds connectable ones.
fn validate_address(host: &str, port: i32) -> Result<(), SimError> {
    if host.is_empty() {
        return Err(SimError::EmptyHostname);
    }
    if !(1..=65535).contains(&port) {
        return Err(SimError::InvalidPort(port));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
