//! From a group's current rows to its desired topology: the statements Citus accepts, in order.
//!
//! The rules Citus imposes (docs/citus-behaviour.md):
//! - the primary row keeps its nodeid; a new primary's address is written into it;
//! - (nodename, nodeport) is unique, so moving an address between rows needs a free name first:
//!   the old primary's row becomes `<host>-demoted`, which also pauses writes to the group;
//! - after an update that changed a row, add/remove fail until metadata is synced, so they are
//!   never sent after one in the same transaction.
//!
//! The algorithm follows the reference (Patroni's `PgDistGroup.transition`) step by step, with
//! two differences: every choice among several candidates takes them in address order (the
//! reference pops from a hash set), and add/remove are put before updates or left for the next
//! turn, never after an update.

use crate::compat::REFERENCE_PORT;
use crate::group::{Group, Node};
use crate::node::{Address, NodeRole, Role};

/// One change to pg_dist_node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// `citus_add_node(host, port, group, role)`; the returned nodeid belongs to `addr`.
    Add { addr: Address, role: NodeRole },
    /// `citus_update_node(nodeid, host[-demoted], port)`.
    Update {
        nodeid: i32,
        addr: Address,
        demoted: bool,
    },
    /// `citus_remove_node(host, port)`.
    Remove { addr: Address },
}

impl Change {
    pub fn is_membership(&self) -> bool {
        matches!(self, Change::Add { .. } | Change::Remove { .. })
    }
}

/// A planned transition: the changes and how many steps the reference would count (a paused
/// primary that has no row yet is a step without a statement, and the count decides whether a
/// standalone transition needs BEGIN/COMMIT).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub changes: Vec<Change>,
    pub steps: usize,
}

/// Computes the changes that turn `old` into `new`. Fills the nodeids `new` can inherit from
/// `old` and adjusts both as the reference does (a group's `failover` flag; add/remove that must
/// wait are dropped from `new` so that the cached state stays true and the next heartbeat
/// retries them). `txn_has_update` says an earlier statement of the open transaction already
/// changed a row: then no add/remove may follow at all.
pub fn transition(new: &mut Group, old: &mut Group, txn_has_update: bool) -> Plan {
    let mut out: Vec<Option<Change>> = Vec::new();
    new.failover = old.failover;

    let Some(new_primary) = new.primary().cloned() else {
        return Plan::default();
    };
    // A paused primary without a row (a `before_demote` for a group that had no primary row)
    // pauses nothing: plan as for a group without a primary row. Planning it as a switchover
    // would add the new primary before the update that frees its address.
    if let Some(p) = old.primary().cloned() {
        if p.nodeid.is_none() {
            old.remove(&p.addr);
        }
    }
    let old_primary = old.primary().cloned();

    // Rows an outside change left behind that the topology cannot hold go first (an
    // add/remove, so not after an update of the open transaction: then they stay).
    for n in std::mem::take(&mut old.stale) {
        if txn_has_update {
            new.stale.push(n);
        } else {
            out.push(Some(Change::Remove { addr: n.addr }));
        }
    }

    // gone: rows of old that new does not have, but the old primary's; added: the reverse.
    let mut gone: Vec<Node> = old
        .nodes()
        .iter()
        .filter(|n| n.nodeid.is_some() && new.get(&n.addr).is_none())
        .filter(|n| Some(&n.addr) != old_primary.as_ref().map(|p| &p.addr))
        .cloned()
        .collect();
    let mut added: Vec<Address> = new
        .nodes()
        .iter()
        .filter(|n| old.get(&n.addr).is_none() && n.addr != new_primary.addr)
        .map(|n| n.addr.clone())
        .collect();

    match old_primary {
        None => {
            // No primary row yet. If the new primary's address is already registered as a
            // secondary, adding it would only return that secondary's id (the reference ends
            // with no primary row): remove that row first, then add the primary.
            match old.remove(&new_primary.addr) {
                Some(stale) if REFERENCE_PORT => {
                    // The reference "adds" onto the secondary's row and keeps no primary.
                    old.insert(stale);
                    out.push(emit(&new_primary));
                }
                Some(stale) if txn_has_update => {
                    // Neither may follow an update of the open transaction: the row stays as
                    // it is (so the cache stays true) and the next heartbeat does both.
                    new.remove(&new_primary.addr);
                    new.insert(stale);
                }
                Some(stale) => {
                    out.push(Some(Change::Remove {
                        addr: stale.addr.clone(),
                    }));
                    out.push(emit(&new_primary));
                }
                None => out.push(emit(&new_primary)),
            }
        }
        Some(op) if op.addr == new_primary.addr => {
            let np = new.get_mut(&new_primary.addr).expect("primary present");
            np.nodeid = op.nodeid;
            let np = np.clone();
            if op.role != np.role {
                new.failover = true;
                out.push(emit(&np));
            }
        }
        Some(mut op) => {
            new.failover = true;
            let npo = old.get(&new_primary.addr).cloned();
            let mut opn = new.get(&op.addr).cloned();

            if let Some(npo) = &npo {
                let mut reused_for_new = false;
                if opn.is_none() && !added.is_empty() {
                    // The old primary is gone: the promoted secondary's row takes a new secondary.
                    let a = added.remove(0);
                    let node = new.get_mut(&a).expect("added node present");
                    node.nodeid = npo.nodeid;
                    let node = node.clone();
                    out.push(emit(&node));
                    set_role(old, &op.addr, Role::Secondary);
                    op.role = Role::Secondary;
                    reused_for_new = true;
                } else if op.role == Role::Primary {
                    // Free the old primary's address (and pause writes) before it moves.
                    set_role(old, &op.addr, Role::Demoted);
                    op.role = Role::Demoted;
                    out.push(emit(&op));
                }
                if opn.is_none() && !reused_for_new {
                    // Park the gone primary's address in the promoted secondary's row: rows
                    // cannot be removed while metadata is not synced.
                    let parked = Node::new(op.addr.clone(), npo.role);
                    new.insert(parked.clone());
                    opn = Some(parked);
                }
                if let Some(o) = &opn {
                    let node = new.get_mut(&o.addr).expect("inserted above");
                    node.nodeid = npo.nodeid;
                    let node = node.clone();
                    out.push(emit(&node));
                }
            }

            let np = new.get_mut(&new_primary.addr).expect("primary present");
            np.nodeid = op.nodeid;
            let np = np.clone();
            out.push(emit(&np));

            if npo.is_none() && !gone.is_empty() {
                // A switchover to a node that was never registered, while secondaries left:
                // put the paused old primary into one of their rows.
                if opn.is_none() && op.role == Role::Demoted && gone.len() > added.len() {
                    let parked = Node::new(op.addr.clone(), Role::Secondary);
                    new.insert(parked.clone());
                    opn = Some(parked);
                }
                if let Some(o) = &opn {
                    let g = gone.remove(0);
                    let node = new.get_mut(&o.addr).expect("present");
                    node.nodeid = g.nodeid;
                    let node = node.clone();
                    out.push(emit(&node));
                }
            }

            // The old primary stays on as a secondary but no row was found for it (the new
            // primary was never registered and no secondary left): its row now holds the new
            // primary, so it is a secondary to add like any other. The reference leaves it in
            // the new topology without a row and never registers it.
            if let Some(o) = &opn {
                if new.get(&o.addr).is_some_and(|n| n.nodeid.is_none()) {
                    if let Err(i) = added.binary_search(&o.addr) {
                        added.insert(i, o.addr.clone());
                    }
                }
            }
        }
    }

    // Secondaries present on both sides keep their row ids.
    let old_ids: Vec<(Address, Option<i32>)> = old
        .nodes()
        .iter()
        .filter(|n| !n.role.is_primary())
        .map(|n| (n.addr.clone(), n.nodeid))
        .collect();
    for (addr, id) in old_ids {
        if let Some(n) = new.get_mut(&addr) {
            if !n.role.is_primary() && n.nodeid.is_none() {
                n.nodeid = id;
            }
        }
    }

    // Rows of gone secondaries take new ones, pairing both lists in address order.
    while !gone.is_empty() && !added.is_empty() {
        let a = added.remove(0);
        let g = gone.remove(0);
        let node = new.get_mut(&a).expect("added node present");
        node.nodeid = g.nodeid;
        let node = node.clone();
        out.push(emit(&node));
    }

    let steps_before_membership = out.len();
    let mut membership: Vec<Change> = Vec::new();
    let hold_membership = new.failover || (txn_has_update && !REFERENCE_PORT);
    for g in gone {
        if hold_membership {
            new.insert(g);
        } else {
            membership.push(Change::Remove { addr: g.addr });
        }
    }
    for a in added {
        if hold_membership {
            new.remove(&a);
        } else {
            let role = role_for_add(new.get(&a).map(|n| n.role).unwrap_or(Role::Secondary));
            membership.push(Change::Add { addr: a, role });
        }
    }

    let steps = steps_before_membership + membership.len();
    let statements: Vec<Change> = out.into_iter().flatten().collect();
    Plan {
        changes: order_for_citus(statements, membership, txn_has_update, new),
        steps,
    }
}

/// Puts every add/remove before the first update. Adds and removes never touch an address an
/// update of the same plan uses (they concern secondaries that are only on one side), so moving
/// them first keeps the plan's meaning and makes Citus accept it in one transaction.
fn order_for_citus(
    statements: Vec<Change>,
    membership: Vec<Change>,
    txn_has_update: bool,
    new: &mut Group,
) -> Vec<Change> {
    if REFERENCE_PORT {
        // The reference's order: updates as they come, then removes and adds.
        return statements.into_iter().chain(membership).collect();
    }
    let (early, updates): (Vec<Change>, Vec<Change>) =
        statements.into_iter().partition(Change::is_membership);
    let mut changes = Vec::with_capacity(early.len() + updates.len() + membership.len());
    if txn_has_update {
        // Not even the primary's own add may follow an update; leave it to the next turn.
        for c in early.into_iter().chain(membership) {
            if let Change::Add { addr, .. } = &c {
                new.remove(addr);
            }
        }
    } else {
        changes.extend(early);
        changes.extend(membership);
    }
    changes.extend(updates);
    changes
}

fn set_role(g: &mut Group, addr: &Address, role: Role) {
    if let Some(n) = g.get_mut(addr) {
        n.role = role;
    }
}

fn role_for_add(role: Role) -> NodeRole {
    match role {
        Role::Primary | Role::Demoted => NodeRole::Primary,
        Role::Secondary => NodeRole::Secondary,
        Role::Unavailable => NodeRole::Unavailable,
    }
}

/// What the reference's `update_node` does with a yielded node: update its row if it has one,
/// add it if not (a paused primary without a row is nothing to do).
fn emit(n: &Node) -> Option<Change> {
    match n.nodeid {
        Some(nodeid) => Some(Change::Update {
            nodeid,
            addr: n.addr.clone(),
            demoted: n.role == Role::Demoted,
        }),
        None if n.role == Role::Demoted => None,
        None => Some(Change::Add {
            addr: n.addr.clone(),
            role: role_for_add(n.role),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(h: &str) -> Address {
        Address::new(h, 5432)
    }
    fn group(nodes: &[(&str, Role, Option<i32>)]) -> Group {
        let mut g = Group::new(1);
        for (h, r, id) in nodes {
            let mut n = Node::new(a(h), *r);
            n.nodeid = *id;
            g.insert(n);
        }
        g
    }
    fn upd(id: i32, h: &str, demoted: bool) -> Change {
        Change::Update {
            nodeid: id,
            addr: a(h),
            demoted,
        }
    }
    fn add(h: &str, role: NodeRole) -> Change {
        Change::Add { addr: a(h), role }
    }
    fn rm(h: &str) -> Change {
        Change::Remove { addr: a(h) }
    }
    use Role::*;

    #[test]
    fn new_group_adds_primary_then_secondaries() {
        let mut old = Group::new(1);
        let mut new = group(&[("n1", Primary, None), ("n2", Secondary, None)]);
        let p = transition(&mut new, &mut old, false);
        assert_eq!(
            p.changes,
            vec![add("n1", NodeRole::Primary), add("n2", NodeRole::Secondary)]
        );
        assert_eq!(p.steps, 2);
    }

    #[test]
    fn switchover_with_registered_secondary_needs_three_updates() {
        // before_demote renames; before_promote/after_promote then moves addresses.
        let mut old = group(&[("n1", Primary, Some(4)), ("n2", Secondary, Some(5))]);
        let mut paused = group(&[("n1", Demoted, None), ("n2", Secondary, None)]);
        let p = transition(&mut paused, &mut old, false);
        assert_eq!(p.changes, vec![upd(4, "n1", true)]);
        assert!(paused.failover);

        let mut promoted = group(&[("n2", Primary, None), ("n1", Secondary, None)]);
        let p = transition(&mut promoted, &mut paused, true);
        assert_eq!(p.changes, vec![upd(5, "n1", false), upd(4, "n2", false)]);
        assert_eq!(promoted.get(&a("n2")).unwrap().nodeid, Some(4));
        assert_eq!(promoted.get(&a("n1")).unwrap().nodeid, Some(5));
    }

    #[test]
    fn failover_without_events_renames_then_moves() {
        let mut old = group(&[("n1", Primary, Some(2)), ("n2", Secondary, Some(3))]);
        let mut new = group(&[("n2", Primary, None)]);
        let p = transition(&mut new, &mut old, false);
        assert_eq!(
            p.changes,
            vec![upd(2, "n1", true), upd(3, "n1", false), upd(2, "n2", false)]
        );
        // The gone primary is parked in the promoted secondary's row.
        assert_eq!(new.get(&a("n1")).unwrap().role, Secondary);
    }

    #[test]
    fn failover_to_unregistered_node_updates_primary_row_only() {
        let mut old = group(&[("n1", Primary, Some(2))]);
        let mut new = group(&[("n9", Primary, None)]);
        let p = transition(&mut new, &mut old, false);
        assert_eq!(p.changes, vec![upd(2, "n9", false)]);
    }

    #[test]
    fn failover_with_new_secondary_reuses_promoted_row() {
        let mut old = group(&[("n1", Primary, Some(2)), ("n2", Secondary, Some(3))]);
        let mut new = group(&[("n2", Primary, None), ("n3", Secondary, None)]);
        let p = transition(&mut new, &mut old, false);
        assert_eq!(p.changes, vec![upd(3, "n3", false), upd(2, "n2", false)]);
    }

    #[test]
    fn secondary_replaced_reuses_the_row() {
        let mut old = group(&[("n1", Primary, Some(2)), ("n2", Secondary, Some(3))]);
        let mut new = group(&[("n1", Primary, None), ("n3", Secondary, None)]);
        let p = transition(&mut new, &mut old, false);
        assert_eq!(p.changes, vec![upd(3, "n3", false)]);
        assert!(!new.failover);
    }

    #[test]
    fn secondary_removed_and_added() {
        let mut old = group(&[("n1", Primary, Some(2)), ("n2", Secondary, Some(3))]);
        let mut new = group(&[("n1", Primary, None)]);
        assert_eq!(
            transition(&mut new, &mut old, false).changes,
            vec![rm("n2")]
        );

        let mut old = group(&[("n1", Primary, Some(2))]);
        let mut new = group(&[("n1", Primary, None), ("n4", Secondary, None)]);
        assert_eq!(
            transition(&mut new, &mut old, false).changes,
            vec![add("n4", NodeRole::Secondary)]
        );
    }

    #[test]
    fn churn_puts_membership_changes_before_the_update() {
        // One gone row reused, one more gone: the reference removes after the update.
        let mut old = group(&[
            ("n1", Primary, Some(1)),
            ("n2", Secondary, Some(2)),
            ("n3", Secondary, Some(3)),
        ]);
        let mut new = group(&[("n1", Primary, None), ("n4", Secondary, None)]);
        let p = transition(&mut new, &mut old, false);
        assert_eq!(p.changes, vec![rm("n3"), upd(2, "n4", false)]);

        // One reused, one more added.
        let mut old = group(&[("n1", Primary, Some(1)), ("n2", Secondary, Some(2))]);
        let mut new = group(&[
            ("n1", Primary, None),
            ("n4", Secondary, None),
            ("n5", Secondary, None),
        ]);
        let p = transition(&mut new, &mut old, false);
        assert_eq!(
            p.changes,
            vec![add("n5", NodeRole::Secondary), upd(2, "n4", false)]
        );
    }

    #[test]
    fn secondary_added_during_switchover_waits_for_next_turn() {
        let mut old = group(&[("n1", Primary, Some(4))]);
        let mut new = group(&[("n1", Demoted, None), ("n7", Secondary, None)]);
        let p = transition(&mut new, &mut old, false);
        assert_eq!(p.changes, vec![upd(4, "n1", true)]);
        assert!(
            new.get(&a("n7")).is_none(),
            "dropped so the cache stays true"
        );
    }

    #[test]
    fn membership_never_follows_an_update_of_the_open_transaction() {
        let mut old = group(&[("n1", Primary, Some(1))]);
        let mut new = group(&[("n1", Primary, None), ("n2", Secondary, None)]);
        let p = transition(&mut new, &mut old, true);
        assert!(p.changes.is_empty());
        assert!(new.get(&a("n2")).is_none());
    }

    #[test]
    fn group_with_only_secondaries_gets_exactly_one_primary() {
        let mut old = group(&[("n1", Secondary, Some(7)), ("n2", Secondary, Some(8))]);
        let mut new = group(&[("n1", Primary, None), ("n2", Secondary, None)]);
        let p = transition(&mut new, &mut old, false);
        assert_eq!(p.changes, vec![rm("n1"), add("n1", NodeRole::Primary)]);
        assert_eq!(new.get(&a("n2")).unwrap().nodeid, Some(8));
    }

    #[test]
    fn leftover_demoted_row_repaired_in_one_step() {
        let mut old = group(&[("n1", Demoted, Some(4)), ("n2", Secondary, Some(5))]);
        let mut new = group(&[("n1", Primary, None), ("n2", Secondary, None)]);
        let p = transition(&mut new, &mut old, false);
        assert_eq!(p.changes, vec![upd(4, "n1", false)]);
    }

    #[test]
    fn switchover_to_unregistered_node_while_old_primary_stays_as_secondary() {
        // Found by the property tests: the primary row goes to n3, so n1 has no row left; it
        // must not stay in the new topology as if registered (the reference does that and
        // never adds it). The primary changed, so its add waits for the next heartbeat.
        let mut old = group(&[("n1", Primary, Some(1)), ("n2", Secondary, Some(2))]);
        let mut new = group(&[
            ("n1", Secondary, None),
            ("n2", Secondary, None),
            ("n3", Primary, None),
        ]);
        let p = transition(&mut new, &mut old, false);
        assert_eq!(p.changes, vec![upd(1, "n3", false)]);
        assert!(new.get(&a("n1")).is_none(), "n1 has no row yet");
        assert_eq!(new.get(&a("n2")).unwrap().nodeid, Some(2));

        // The next heartbeat (cache = what was committed) adds it.
        let mut old = new;
        old.failover = false;
        let mut next = group(&[
            ("n1", Secondary, None),
            ("n2", Secondary, None),
            ("n3", Primary, None),
        ]);
        let p = transition(&mut next, &mut old, false);
        assert_eq!(p.changes, vec![add("n1", NodeRole::Secondary)]);
    }

    #[test]
    fn paused_primary_without_a_row_then_a_registered_secondary_is_promoted() {
        // Found by the property tests: before_demote for a group without a primary row left a
        // row-less paused n1 in flight; promoting the registered secondary n5 was planned as a
        // switchover, and moving the add first made it a no-op (the address was still n5's
        // secondary row): the group ended with no primary row.
        let mut old = group(&[("n1", Demoted, None), ("n5", Secondary, Some(2))]);
        let mut new = group(&[("n5", Primary, None)]);
        let p = transition(&mut new, &mut old, false);
        assert_eq!(p.changes, vec![rm("n5"), add("n5", NodeRole::Primary)]);
        assert!(new.get(&a("n1")).is_none());

        // After an update of the open transaction neither may be sent: the row stays known.
        let mut old = group(&[("n1", Demoted, None), ("n5", Secondary, Some(2))]);
        let mut new = group(&[("n5", Primary, None)]);
        let p = transition(&mut new, &mut old, true);
        assert!(p.changes.is_empty());
        let kept = new.get(&a("n5")).unwrap();
        assert_eq!((kept.role, kept.nodeid), (Secondary, Some(2)));
    }

    #[test]
    fn stale_row_of_a_paused_primary_is_removed_first() {
        let mut old = group(&[("n1", Demoted, Some(4)), ("n2", Secondary, Some(6))]);
        old.stale.push(Node {
            addr: a("n1"),
            role: Secondary,
            nodeid: Some(5),
        });
        // Still paused (before_demote): only the stale row goes.
        let mut new = group(&[("n1", Demoted, None), ("n2", Secondary, None)]);
        let p = transition(&mut new, &mut old.clone(), false);
        assert_eq!(p.changes, vec![rm("n1")]);
        assert!(new.stale.is_empty());
        // Repaired by a heartbeat: removed before the row takes the address back.
        let mut new = group(&[("n1", Primary, None), ("n2", Secondary, None)]);
        let p = transition(&mut new, &mut old.clone(), false);
        assert_eq!(p.changes, vec![rm("n1"), upd(4, "n1", false)]);
        // After an update of the open transaction it has to wait, and stays known.
        let mut new = group(&[("n1", Primary, None), ("n2", Secondary, None)]);
        let p = transition(&mut new, &mut old.clone(), true);
        assert_eq!(p.changes, vec![upd(4, "n1", false)]);
        assert_eq!(new.stale.len(), 1);
    }

    #[test]
    fn paused_connections_then_failover_parks_old_primary_in_a_gone_row() {
        // before_demote paused n1; n1 vanished; n3 (never registered) is promoted; n2 left.
        let mut old = group(&[("n1", Demoted, Some(4)), ("n2", Secondary, Some(5))]);
        old.failover = true;
        let mut new = group(&[("n3", Primary, None)]);
        let p = transition(&mut new, &mut old, true);
        assert_eq!(p.changes, vec![upd(4, "n3", false), upd(5, "n1", false)]);
    }
}
