//! The indexed row store behind one snapshot of `pg_dist_node`.
//!
//! The simulator keeps one table, the session's view; an open transaction changes it in place
//! and logs how to undo each change. Every mutator here keeps all indexes in step with the
//! rows, so undoing a change through the same mutators keeps the UNIQUE(nodename, nodeport)
//! map consistent.

use std::borrow::Borrow;
use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hash, Hasher};

use crate::{NodeRole, Row};

/// One consistent snapshot of `pg_dist_node` plus the indexes the hot paths need.
///
/// Benchmarks drain thousands of statements through the simulator, so every question a
/// statement asks is answered without scanning the rows:
/// - `rows` is sorted by nodeid (binary search by id, and already in `SELECT ... ORDER BY
///   nodeid` order for loads);
/// - `by_addr` is the UNIQUE(nodename, nodeport) index;
/// - `primaries_per_group` answers "does group N already have a primary?";
/// - `worker_primaries` answers "which worker primary has the lowest nodeid?" (the node Citus
///   names when it refuses add/remove because metadata is out of sync).
#[derive(Clone, Debug, Default)]
pub(crate) struct Table {
    rows: Vec<Row>,
    by_addr: HashMap<(String, i32), i32, FastHash>,
    primaries_per_group: HashMap<i32, u32, FastHash>,
    worker_primaries: BTreeSet<i32>,
}

impl Table {
    /// Builds a table from arbitrary rows (an outside change). Rows are ordered by nodeid;
    /// a row whose nodeid or address is already taken by an earlier (lower-nodeid, or equal
    /// nodeid listed earlier) row is dropped, because the real table's primary key and
    /// UNIQUE(nodename, nodeport) constraint could never hold both.
    pub(crate) fn from_rows(mut rows: Vec<Row>) -> Self {
        rows.sort_by_key(|r| r.nodeid);
        let mut table = Table::default();
        table.rows.reserve(rows.len());
        for row in rows {
            // Duplicates are silently dropped, see the doc comment.
            let _ = table.insert(row);
        }
        table
    }

    /// All rows, sorted by nodeid.
    pub(crate) fn rows(&self) -> &[Row] {
        &self.rows
    }

    /// The nodeid of the row at this address, if any.
    pub(crate) fn id_at(&self, host: &str, port: i32) -> Option<i32> {
        self.by_addr.get(&(host, port) as &dyn AddrKey).copied()
    }

    fn index_of(&self, nodeid: i32) -> Result<usize, usize> {
        self.rows.binary_search_by_key(&nodeid, |r| r.nodeid)
    }

    /// The row with this nodeid, if any.
    pub(crate) fn get(&self, nodeid: i32) -> Option<&Row> {
        self.index_of(nodeid).ok().and_then(|i| self.rows.get(i))
    }

    /// Whether some row of this group has role primary.
    pub(crate) fn has_primary(&self, groupid: i32) -> bool {
        self.primaries_per_group
            .get(&groupid)
            .is_some_and(|&n| n > 0)
    }

    /// The primary row of a worker group (groupid != 0) with the lowest nodeid.
    pub(crate) fn first_worker_primary(&self) -> Option<&Row> {
        self.worker_primaries.first().and_then(|&id| self.get(id))
    }

    /// The highest nodeid in the table.
    pub(crate) fn max_nodeid(&self) -> Option<i32> {
        self.rows.last().map(|r| r.nodeid)
    }

    fn index_row(&mut self, row: &Row) {
        self.by_addr
            .insert((row.nodename.clone(), row.nodeport), row.nodeid);
        if row.noderole == NodeRole::Primary {
            *self.primaries_per_group.entry(row.groupid).or_insert(0) += 1;
            if row.groupid != 0 {
                self.worker_primaries.insert(row.nodeid);
            }
        }
    }

    fn unindex_row(&mut self, row: &Row) {
        self.by_addr
            .remove(&(row.nodename.as_str(), row.nodeport) as &dyn AddrKey);
        if row.noderole == NodeRole::Primary {
            if let Some(n) = self.primaries_per_group.get_mut(&row.groupid) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.primaries_per_group.remove(&row.groupid);
                }
            }
            self.worker_primaries.remove(&row.nodeid);
        }
    }

    /// Inserts a row. Returns false (and changes nothing) if its nodeid or its address is
    /// already taken: the table's primary key and unique constraint.
    pub(crate) fn insert(&mut self, row: Row) -> bool {
        if self
            .by_addr
            .contains_key(&(row.nodename.as_str(), row.nodeport) as &dyn AddrKey)
        {
            return false;
        }
        match self.index_of(row.nodeid) {
            Ok(_) => false,
            Err(idx) => {
                self.index_row(&row);
                self.rows.insert(idx, row);
                true
            }
        }
    }

    /// Moves a row to a new address and returns its old one (the same when it is already
    /// there). Returns None (and changes nothing) if the nodeid is unknown or another row
    /// already holds the address.
    pub(crate) fn set_address(
        &mut self,
        nodeid: i32,
        host: &str,
        port: i32,
    ) -> Option<(String, i32)> {
        let idx = self.index_of(nodeid).ok()?;
        match self.id_at(host, port) {
            Some(holder) if holder == nodeid => Some((host.to_owned(), port)),
            Some(_) => None,
            None => {
                let row = self.rows.get_mut(idx)?;
                let old_key = (
                    std::mem::replace(&mut row.nodename, host.to_owned()),
                    row.nodeport,
                );
                row.nodeport = port;
                self.by_addr.remove(&old_key);
                self.by_addr.insert((host.to_owned(), port), nodeid);
                Some(old_key)
            }
        }
    }

    /// Deletes the row with this nodeid and returns it.
    pub(crate) fn remove(&mut self, nodeid: i32) -> Option<Row> {
        let idx = self.index_of(nodeid).ok()?;
        let row = self.rows.remove(idx);
        self.unindex_row(&row);
        Some(row)
    }

    /// Verifies that every index agrees with the rows (used by tests after every step).
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        assert!(
            self.rows.windows(2).all(|w| w[0].nodeid < w[1].nodeid),
            "rows not strictly sorted by nodeid: {:?}",
            self.rows
        );
        assert_eq!(self.by_addr.len(), self.rows.len(), "address index size");
        let mut primaries: HashMap<i32, u32, FastHash> = HashMap::default();
        let mut workers = BTreeSet::new();
        for r in &self.rows {
            assert_eq!(
                self.by_addr
                    .get(&(r.nodename.as_str(), r.nodeport) as &dyn AddrKey),
                Some(&r.nodeid),
                "address index disagrees for {r:?}"
            );
            if r.noderole == NodeRole::Primary {
                *primaries.entry(r.groupid).or_insert(0) += 1;
                if r.groupid != 0 {
                    workers.insert(r.nodeid);
                }
            }
        }
        assert_eq!(primaries, self.primaries_per_group, "primary counts");
        assert_eq!(workers, self.worker_primaries, "worker primaries");
    }
}

/// An address as a lookup key, owned (`(String, i32)`, stored in the index) or borrowed
/// (`(&str, i32)`, what a statement brings), so a lookup allocates nothing. Both hash and
/// compare exactly like `(String, i32)` does.
trait AddrKey {
    fn host(&self) -> &str;
    fn port(&self) -> i32;
}

impl AddrKey for (String, i32) {
    fn host(&self) -> &str {
        &self.0
    }
    fn port(&self) -> i32 {
        self.1
    }
}

impl AddrKey for (&str, i32) {
    fn host(&self) -> &str {
        self.0
    }
    fn port(&self) -> i32 {
        self.1
    }
}

impl<'a> Borrow<dyn AddrKey + 'a> for (String, i32) {
    fn borrow(&self) -> &(dyn AddrKey + 'a) {
        self
    }
}

impl Hash for dyn AddrKey + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // What `(String, i32)`'s derived Hash feeds the hasher.
        self.host().hash(state);
        self.port().hash(state);
    }
}

impl PartialEq for dyn AddrKey + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.port() == other.port() && self.host() == other.host()
    }
}

impl Eq for dyn AddrKey + '_ {}

/// FxHash (rustc's hasher): the indexes hold the simulator's own keys, so there is nothing to
/// defend against and SipHash's cost is wasted on every statement.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

type FastHash = BuildHasherDefault<FxHasher>;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(buf));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_i32(&mut self, i: i32) {
        self.add(u64::from(i as u32));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(nodeid: i32, groupid: i32, host: &str, port: i32, role: NodeRole) -> Row {
        Row {
            nodeid,
            groupid,
            nodename: host.to_owned(),
            nodeport: port,
            noderole: role,
        }
    }

    #[test]
    fn from_rows_sorts_and_drops_duplicates() {
        let t = Table::from_rows(vec![
            row(3, 1, "b", 5432, NodeRole::Primary),
            row(1, 0, "a", 5432, NodeRole::Primary),
            row(3, 2, "c", 5432, NodeRole::Primary), // duplicate nodeid
            row(4, 2, "a", 5432, NodeRole::Primary), // duplicate address
            row(2, 1, "a", 5433, NodeRole::Secondary),
        ]);
        t.check_invariants();
        let ids: Vec<i32> = t.rows().iter().map(|r| r.nodeid).collect();
        assert_eq!(ids, vec![1, 2, 3]);
        assert_eq!(t.get(3).map(|r| r.nodename.as_str()), Some("b"));
        assert_eq!(t.max_nodeid(), Some(3));
    }

    #[test]
    fn indexes_follow_insert_update_remove() {
        let mut t = Table::default();
        assert!(t.insert(row(1, 0, "c", 5432, NodeRole::Primary)));
        assert!(t.insert(row(5, 2, "w2", 5432, NodeRole::Primary)));
        assert!(t.insert(row(3, 1, "w1", 5432, NodeRole::Primary)));
        assert!(t.insert(row(4, 1, "w1s", 5432, NodeRole::Secondary)));
        assert!(!t.insert(row(9, 1, "w1", 5432, NodeRole::Secondary)));
        assert!(!t.insert(row(3, 1, "x", 1, NodeRole::Secondary)));
        t.check_invariants();
        assert!(t.has_primary(0) && t.has_primary(1) && t.has_primary(2));
        assert!(!t.has_primary(3));
        assert_eq!(t.first_worker_primary().map(|r| r.nodeid), Some(3));

        assert_eq!(
            t.set_address(3, "w1-demoted", 5432),
            Some(("w1".into(), 5432))
        );
        assert_eq!(t.set_address(4, "w2", 5432), None);
        assert_eq!(t.set_address(4, "w1s", 5432), Some(("w1s".into(), 5432))); // no-op
        assert_eq!(t.set_address(42, "zz", 1), None);
        t.check_invariants();
        assert_eq!(t.id_at("w1", 5432), None);
        assert_eq!(t.id_at("w1-demoted", 5432), Some(3));

        assert_eq!(t.remove(3).map(|r| r.nodeid), Some(3));
        assert_eq!(t.remove(3), None);
        t.check_invariants();
        assert!(!t.has_primary(1));
        assert_eq!(t.first_worker_primary().map(|r| r.nodeid), Some(5));
    }
}
