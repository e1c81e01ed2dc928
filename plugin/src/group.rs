//! A group's topology: the set of rows (current) or members (desired) that serve one Citus group.

use crate::node::{Address, GroupId, PgDistRow, Role, DEMOTED_SUFFIX};
use serde::{Deserialize, Serialize};

/// One node of a group: its address, role and, once known, its pg_dist_node row id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub addr: Address,
    pub role: Role,
    pub nodeid: Option<i32>,
}

impl Node {
    pub fn new(addr: Address, role: Role) -> Self {
        Self {
            addr,
            role,
            nodeid: None,
        }
    }
}

/// The nodes of one group, unique by address and kept sorted by address so that comparing two
/// groups is a slice comparison and iteration order never depends on hashing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub groupid: GroupId,
    nodes: Vec<Node>,
    /// The primary row changed in the transaction this group describes; Citus then refuses
    /// add/remove until its metadata is synced, so those wait for a later turn.
    pub failover: bool,
}

impl Group {
    pub fn new(groupid: GroupId) -> Self {
        Self {
            groupid,
            nodes: Vec::new(),
            failover: false,
        }
    }

    /// Builds the cached view of a group from its pg_dist_node rows. A primary row whose name
    /// ends in `-demoted` is the paused form of the host without the suffix (a switchover that
    /// crashed after committing the rename): reading it so lets one update repair it.
    pub fn from_rows<'a>(groupid: GroupId, rows: impl IntoIterator<Item = &'a PgDistRow>) -> Self {
        let mut g = Group::new(groupid);
        for r in rows {
            let mut role = Role::from_node_role(r.noderole);
            let mut host = r.nodename.as_str();
            if role == Role::Primary {
                if let Some(stripped) = host.strip_suffix(DEMOTED_SUFFIX) {
                    if !stripped.is_empty() {
                        host = stripped;
                        role = Role::Demoted;
                    }
                }
            }
            let mut node = Node::new(Address::new(host, r.nodeport), role);
            node.nodeid = Some(r.nodeid);
            g.insert(node);
        }
        g
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }
    pub fn len(&self) -> usize {
        self.nodes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn position(&self, addr: &Address) -> Result<usize, usize> {
        self.nodes.binary_search_by(|n| n.addr.cmp(addr))
    }

    /// Adds a node unless one with the same address is present (set semantics: the first wins).
    pub fn insert(&mut self, node: Node) -> bool {
        match self.position(&node.addr) {
            Ok(_) => false,
            Err(i) => {
                self.nodes.insert(i, node);
                true
            }
        }
    }

    pub fn remove(&mut self, addr: &Address) -> Option<Node> {
        self.position(addr).ok().map(|i| self.nodes.remove(i))
    }

    pub fn get(&self, addr: &Address) -> Option<&Node> {
        self.position(addr).ok().map(|i| &self.nodes[i])
    }

    pub fn get_mut(&mut self, addr: &Address) -> Option<&mut Node> {
        match self.position(addr) {
            Ok(i) => Some(&mut self.nodes[i]),
            Err(_) => None,
        }
    }

    /// The primary row (possibly paused); the first by address if the data holds several.
    pub fn primary(&self) -> Option<&Node> {
        self.nodes.iter().find(|n| n.role.is_primary())
    }

    pub fn primary_addr(&self) -> Option<Address> {
        self.primary().map(|n| n.addr.clone())
    }

    /// Same group, same addresses with the same roles (row ids are not compared: a desired
    /// topology does not know them).
    pub fn same_topology(&self, other: &Group) -> bool {
        self.groupid == other.groupid
            && self.nodes.len() == other.nodes.len()
            && self
                .nodes
                .iter()
                .zip(&other.nodes)
                .all(|(a, b)| a.addr == b.addr && a.role == b.role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::NodeRole;

    fn row(id: i32, g: i32, host: &str, role: NodeRole) -> PgDistRow {
        PgDistRow {
            nodeid: id,
            groupid: g,
            nodename: host.into(),
            nodeport: 5432,
            noderole: role,
        }
    }

    #[test]
    fn leftover_demoted_primary_is_read_as_paused_host() {
        let rows = [
            row(4, 1, "10.0.1.1-demoted", NodeRole::Primary),
            row(5, 1, "10.0.1.2-demoted", NodeRole::Secondary),
        ];
        let g = Group::from_rows(1, rows.iter());
        let p = g.primary().unwrap();
        assert_eq!(p.addr.host, "10.0.1.1");
        assert_eq!(p.role, Role::Demoted);
        // Only primary rows are ever renamed; a secondary keeps its name.
        assert!(g.get(&Address::new("10.0.1.2-demoted", 5432)).is_some());
    }

    #[test]
    fn set_semantics_and_order() {
        let mut g = Group::new(1);
        assert!(g.insert(Node::new(Address::new("b", 1), Role::Secondary)));
        assert!(g.insert(Node::new(Address::new("a", 1), Role::Primary)));
        assert!(!g.insert(Node::new(Address::new("a", 1), Role::Secondary)));
        assert_eq!(g.nodes()[0].addr.host, "a");
        assert_eq!(g.primary().unwrap().role, Role::Primary);
    }
}
