//! Unit tests of the simulator's rules, one group per rule of the brief / facts file.

use super::*;

const COORD: &str = "10.0.0.1";
const W1A: &str = "10.0.1.1";
const W1B: &str = "10.0.1.2";
const W1C: &str = "10.0.1.3";
const W2A: &str = "10.0.2.1";

fn row(nodeid: i32, groupid: i32, host: &str, port: i32, role: NodeRole) -> Row {
    Row {
        nodeid,
        groupid,
        nodename: host.to_owned(),
        nodeport: port,
        noderole: role,
    }
}

/// Coordinator (1), group 1 primary (2) + registered secondary (3), group 2 primary (4).
fn cluster_rows() -> Vec<Row> {
    vec![
        row(1, 0, COORD, 5432, NodeRole::Primary),
        row(2, 1, W1A, 5432, NodeRole::Primary),
        row(3, 1, W1B, 5432, NodeRole::Secondary),
        row(4, 2, W2A, 5432, NodeRole::Primary),
    ]
}

fn cluster() -> Simulator {
    let mut s = Simulator::new();
    s.replace_rows(cluster_rows());
    s
}

fn check(s: &Simulator) {
    s.table.check_invariants();
    if let Some(t) = &s.txn {
        // What another session sees: the table with the transaction's changes undone.
        let mut committed = s.table.clone();
        undo_all(&mut committed, t.undo.clone());
        committed.check_invariants();
    }
}

fn addr_of(s: &Simulator, nodeid: i32) -> Option<(String, i32)> {
    s.rows()
        .into_iter()
        .find(|r| r.nodeid == nodeid)
        .map(|r| (r.nodename, r.nodeport))
}

// ---------------------------------------------------------------------------------------------
// NodeRole and error texts

#[test]
fn node_role_labels_round_trip() {
    for role in [
        NodeRole::Primary,
        NodeRole::Secondary,
        NodeRole::Unavailable,
    ] {
        assert_eq!(role.as_str().parse::<NodeRole>(), Ok(role));
        assert_eq!(role.to_string(), role.as_str());
    }
    assert_eq!(NodeRole::Primary.as_str(), "primary");
    assert_eq!(NodeRole::Secondary.as_str(), "secondary");
    assert_eq!(NodeRole::Unavailable.as_str(), "unavailable");
}

#[test]
fn node_role_parse_is_case_sensitive_like_postgres() {
    let err = "Primary".parse::<NodeRole>().unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid input value for enum noderole: \"Primary\""
    );
    assert!("".parse::<NodeRole>().is_err());
}

#[test]
fn error_texts_are_the_citus_messages() {
    let cases = [
        (
            SimError::TransactionAborted,
            "current transaction is aborted, commands ignored until end of transaction block",
        ),
        (SimError::NodeNotFound(999), "node 999 not found"),
        (SimError::NodeNotFound(-1), "node 4294967295 not found"),
        (
            SimError::AddressInUse,
            "there is already another node with the specified hostname and port",
        ),
        (
            SimError::MetadataOutOfSync {
                host: "10.0.1.1".into(),
                port: 5432,
            },
            "10.0.1.1:5432 is a metadata node, but is out of sync",
        ),
        (
            SimError::GroupHasPrimary(1),
            "group 1 already has a primary node",
        ),
        (
            SimError::NodeDoesNotExist {
                host: "h".into(),
                port: 5432,
            },
            "node at \"h:5432\" does not exist",
        ),
        (
            SimError::InvalidPort(0),
            "invalid nodeport 0: must be between 1 and 65535",
        ),
        (
            SimError::EmptyHostname,
            "invalid nodename \"\": must not be empty",
        ),
    ];
    for (err, text) in cases {
        assert_eq!(err.to_string(), text);
    }
}

// ---------------------------------------------------------------------------------------------
// Construction, sequence, replace_rows

#[test]
fn new_is_empty_and_sequence_starts_at_one() {
    let mut s = Simulator::new();
    assert!(s.rows().is_empty());
    assert!(!s.in_transaction());
    assert_eq!(s.load(), Ok(vec![]));
    assert_eq!(s.add_node(COORD, 5432, 0, NodeRole::Primary), Ok(1));
    assert_eq!(s.add_node(W1A, 5432, 1, NodeRole::Primary), Ok(2));
    check(&s);
}

#[test]
fn default_matches_new() {
    let mut s = Simulator::default();
    assert_eq!(s.add_node(COORD, 5432, 0, NodeRole::Primary), Ok(1));
}

#[test]
fn replace_rows_sequence_continues_from_max_of_sequence_and_rows() {
    // Rows above the sequence: continue after the highest row.
    let mut s = Simulator::new();
    s.replace_rows(vec![row(7, 1, W1A, 5432, NodeRole::Primary)]);
    assert_eq!(s.add_node(W1B, 5432, 1, NodeRole::Secondary), Ok(8));

    // Rows below the sequence: the sequence never goes back.
    s.replace_rows(vec![row(2, 1, W1A, 5432, NodeRole::Primary)]);
    assert_eq!(s.add_node(W1B, 5432, 1, NodeRole::Secondary), Ok(9));

    // Empty rows keep the sequence too.
    s.replace_rows(vec![]);
    assert!(s.rows().is_empty());
    assert_eq!(s.add_node(W1B, 5432, 1, NodeRole::Primary), Ok(10));
    check(&s);
}

#[test]
fn replace_rows_sorts_by_nodeid_and_drops_impossible_duplicates() {
    let mut s = Simulator::new();
    s.replace_rows(vec![
        row(4, 2, W2A, 5432, NodeRole::Primary),
        row(1, 0, COORD, 5432, NodeRole::Primary),
        row(4, 2, "dup-id", 5432, NodeRole::Primary),
        row(5, 2, COORD, 5432, NodeRole::Secondary),
    ]);
    let ids: Vec<i32> = s.rows().iter().map(|r| r.nodeid).collect();
    assert_eq!(ids, vec![1, 4]);
    // Only kept rows move the sequence: the dropped row 5 does not, so 5 is handed out.
    assert_eq!(s.add_node(W1A, 5432, 1, NodeRole::Primary), Ok(5));
    check(&s);
}

#[test]
fn replace_rows_discards_open_transaction() {
    let mut s = cluster();
    s.begin().unwrap();
    s.update_node(2, "elsewhere", 5432, false, 0).unwrap();
    s.replace_rows(cluster_rows());
    assert!(!s.in_transaction());
    assert_eq!(s.rows(), cluster_rows());
    // The discarded transaction's update does not keep refusing add/remove.
    assert_eq!(s.add_node(W1C, 5432, 1, NodeRole::Secondary), Ok(5));
}

#[test]
fn replace_rows_accepts_odd_values_without_panicking() {
    let mut s = Simulator::new();
    s.replace_rows(vec![
        row(-5, -1, "", -3, NodeRole::Unavailable),
        row(0, 0, "x", 0, NodeRole::Primary),
    ]);
    assert_eq!(s.rows().len(), 2);
    // Sequence is max(0, 0) = 0: the next id is 1.
    assert_eq!(s.add_node(W1A, 5432, 1, NodeRole::Primary), Ok(1));
    check(&s);
}

#[test]
fn exhausted_sequence_is_an_error_not_a_panic() {
    let mut s = Simulator::new();
    s.replace_rows(vec![row(i32::MAX, 1, W1A, 5432, NodeRole::Primary)]);
    let err = s.add_node(W1B, 5432, 1, NodeRole::Secondary).unwrap_err();
    assert_eq!(err, SimError::SequenceExhausted);
    assert_eq!(
        err.to_string(),
        "nextval: reached maximum value of sequence \"pg_dist_node_nodeid_seq\" (2147483647)"
    );
    // An existing address is still answered.
    assert_eq!(s.add_node(W1A, 5432, 1, NodeRole::Primary), Ok(i32::MAX));
}

// ---------------------------------------------------------------------------------------------
// Rule 1: autocommit, transactions, aborted transactions

#[test]
fn autocommit_statements_apply_immediately() {
    let mut s = cluster();
    assert_eq!(s.add_node(W1C, 5432, 1, NodeRole::Secondary), Ok(5));
    assert_eq!(s.committed_rows().len(), 5);
    s.remove_node(W1C, 5432).unwrap();
    assert_eq!(s.committed_rows(), cluster_rows());
    s.update_node(3, W1C, 5433, false, 10000).unwrap();
    assert_eq!(
        s.committed_rows()[2],
        row(3, 1, W1C, 5433, NodeRole::Secondary)
    );
    assert!(!s.in_transaction());
    check(&s);
}

#[test]
fn failed_autocommit_statement_changes_nothing_and_opens_nothing() {
    let mut s = cluster();
    assert_eq!(
        s.update_node(2, W1B, 5432, false, 0),
        Err(SimError::AddressInUse)
    );
    assert_eq!(s.committed_rows(), cluster_rows());
    assert!(!s.in_transaction());
    // The next statement is not refused as "aborted".
    assert_eq!(s.load(), Ok(cluster_rows()));
}

#[test]
fn uncommitted_changes_are_visible_to_the_session_only() {
    let mut s = cluster();
    s.begin().unwrap();
    assert!(s.in_transaction());
    s.remove_node(W1B, 5432).unwrap();
    assert_eq!(s.add_node(W1C, 5432, 1, NodeRole::Secondary), Ok(5));
    let seen = s.load().unwrap();
    assert_eq!(seen, s.rows());
    assert_eq!(seen.len(), 4);
    assert!(seen.iter().any(|r| r.nodename == W1C));
    assert_eq!(s.committed_rows(), cluster_rows());
    assert_eq!(s.commit(), Ok(CommitOutcome::Committed));
    assert!(!s.in_transaction());
    assert_eq!(s.committed_rows(), seen);
    check(&s);
}

#[test]
fn rollback_restores_every_row_and_the_address_index() {
    let mut s = cluster();
    s.begin().unwrap();
    s.remove_node(W1B, 5432).unwrap();
    s.add_node(W1C, 5432, 1, NodeRole::Secondary).unwrap();
    s.update_node(2, "10.0.1.1-demoted", 5432, true, 10000)
        .unwrap();
    s.update_node(4, W1B, 5432, true, 10000).unwrap();
    s.rollback();
    assert!(!s.in_transaction());
    assert_eq!(s.rows(), cluster_rows());
    assert_eq!(s.committed_rows(), cluster_rows());
    check(&s);
    // The unique index is the committed one again: the old addresses are taken...
    assert_eq!(
        s.update_node(4, W1B, 5432, false, 0),
        Err(SimError::AddressInUse)
    );
    // ...and the addresses used inside the rolled-back transaction are free.
    s.update_node(4, "10.0.1.1-demoted", 5432, false, 0)
        .unwrap();
    check(&s);
}

#[test]
fn rollback_does_not_return_consumed_nodeids() {
    let mut s = cluster();
    s.begin().unwrap();
    assert_eq!(s.add_node(W1C, 5432, 1, NodeRole::Secondary), Ok(5));
    s.rollback();
    assert_eq!(s.add_node(W1C, 5432, 1, NodeRole::Secondary), Ok(6));
}

#[test]
fn error_aborts_the_transaction_until_commit_or_rollback() {
    let mut s = cluster();
    s.begin().unwrap();
    s.update_node(3, W1C, 5432, false, 0).unwrap();
    assert_eq!(
        s.update_node(999, W1A, 5433, false, 0),
        Err(SimError::NodeNotFound(999))
    );
    assert!(s.in_transaction());
    let aborted = SimError::TransactionAborted;
    assert_eq!(s.load(), Err(aborted.clone()));
    assert_eq!(
        s.add_node("x", 1, 5, NodeRole::Primary),
        Err(aborted.clone())
    );
    assert_eq!(s.update_node(3, "y", 1, false, 0), Err(aborted.clone()));
    assert_eq!(s.remove_node(W1A, 5432), Err(aborted.clone()));
    assert_eq!(s.begin(), Err(aborted));
    // rows() still answers with the session's (doomed) view.
    assert!(s.rows().iter().any(|r| r.nodename == W1C));
    assert_eq!(s.commit(), Ok(CommitOutcome::RolledBack));
    assert!(!s.in_transaction());
    assert_eq!(s.committed_rows(), cluster_rows());
    // The session works again.
    assert_eq!(s.load(), Ok(cluster_rows()));
}

#[test]
fn statements_refused_while_aborted_consume_no_nodeid() {
    let mut s = cluster();
    s.begin().unwrap();
    assert!(s.remove_node("nope", 1).is_err());
    assert!(s.add_node(W1C, 5432, 1, NodeRole::Secondary).is_err());
    s.rollback();
    assert_eq!(s.add_node(W1C, 5432, 1, NodeRole::Secondary), Ok(5));
}

#[test]
fn rollback_of_aborted_transaction_restores() {
    let mut s = cluster();
    s.begin().unwrap();
    s.remove_node(W1B, 5432).unwrap();
    assert!(s.remove_node(W1B, 5432).is_err());
    s.rollback();
    assert_eq!(s.rows(), cluster_rows());
    check(&s);
}

#[test]
fn begin_inside_a_transaction_keeps_it() {
    let mut s = cluster();
    s.begin().unwrap();
    s.remove_node(W1B, 5432).unwrap();
    assert_eq!(s.begin(), Ok(()));
    assert!(s.in_transaction());
    assert_eq!(s.rows().len(), 3);
    assert_eq!(s.committed_rows().len(), 4);
    assert_eq!(s.commit(), Ok(CommitOutcome::Committed));
    assert_eq!(s.committed_rows().len(), 3);
}

#[test]
fn commit_and_rollback_outside_a_transaction_only_warn() {
    let mut s = cluster();
    assert_eq!(s.commit(), Ok(CommitOutcome::Committed));
    s.rollback();
    assert!(!s.in_transaction());
    assert_eq!(s.rows(), cluster_rows());
}

#[test]
fn lose_session_discards_open_and_aborted_transactions() {
    let mut s = cluster();
    s.begin().unwrap();
    s.remove_node(W1B, 5432).unwrap();
    s.lose_session();
    assert!(!s.in_transaction());
    assert_eq!(s.rows(), cluster_rows());

    s.begin().unwrap();
    assert!(s.update_node(42, "z", 1, false, 0).is_err());
    s.lose_session();
    assert!(!s.in_transaction());
    assert_eq!(s.load(), Ok(cluster_rows()));
}

// ---------------------------------------------------------------------------------------------
// Rule 2: update_node

#[test]
fn switchover_with_registered_secondary_needs_three_updates() {
    let mut s = cluster();
    s.begin().unwrap();
    s.update_node(2, "10.0.1.1-demoted", 5432, true, 10000)
        .unwrap();
    s.update_node(3, W1A, 5432, true, 10000).unwrap();
    s.update_node(2, W1B, 5432, true, 10000).unwrap();
    check(&s);
    assert_eq!(s.commit(), Ok(CommitOutcome::Committed));
    let rows = s.committed_rows();
    assert_eq!(rows[1], row(2, 1, W1B, 5432, NodeRole::Primary));
    assert_eq!(rows[2], row(3, 1, W1A, 5432, NodeRole::Secondary));
    check(&s);
}

#[test]
fn switchover_without_demoted_step_violates_unique_address() {
    let mut s = cluster();
    s.begin().unwrap();
    let err = s.update_node(2, W1B, 5432, true, 10000).unwrap_err();
    assert_eq!(
        err.to_string(),
        "there is already another node with the specified hostname and port"
    );
    assert_eq!(
        s.update_node(3, W1A, 5432, true, 10000),
        Err(SimError::TransactionAborted)
    );
    assert_eq!(s.commit(), Ok(CommitOutcome::RolledBack));
    assert_eq!(s.committed_rows(), cluster_rows());
}

#[test]
fn update_unknown_id_is_not_found() {
    let mut s = cluster();
    let err = s.update_node(999, "new", 5432, false, 0).unwrap_err();
    assert_eq!(err.to_string(), "node 999 not found");
    let err = s.update_node(-1, "new", 5432, false, 0).unwrap_err();
    assert_eq!(err, SimError::NodeNotFound(-1));
    assert_eq!(err.to_string(), "node 4294967295 not found");
    assert_eq!(s.rows(), cluster_rows());
}

#[test]
fn update_checks_address_before_id_like_citus() {
    let mut s = cluster();
    assert_eq!(
        s.update_node(999, W1A, 5432, false, 0),
        Err(SimError::AddressInUse)
    );
}

#[test]
fn update_to_own_address_is_a_silent_noop_not_an_update() {
    let mut s = cluster();
    s.begin().unwrap();
    assert_eq!(s.update_node(2, W1A, 5432, true, 10000), Ok(()));
    // Not an effective update: add/remove still work in this transaction.
    assert_eq!(s.add_node(W1C, 5432, 1, NodeRole::Secondary), Ok(5));
    s.remove_node(W1C, 5432).unwrap();
    assert_eq!(s.commit(), Ok(CommitOutcome::Committed));
    assert_eq!(s.committed_rows(), cluster_rows());
}

#[test]
fn update_port_only_is_an_effective_update() {
    let mut s = cluster();
    s.begin().unwrap();
    s.update_node(3, W1B, 6432, false, 0).unwrap();
    assert_eq!(addr_of(&s, 3), Some((W1B.to_owned(), 6432)));
    assert!(matches!(
        s.add_node(W1C, 5432, 1, NodeRole::Secondary),
        Err(SimError::MetadataOutOfSync { .. })
    ));
}

#[test]
fn update_of_a_row_added_in_the_same_transaction() {
    let mut s = cluster();
    s.begin().unwrap();
    let id = s.add_node(W1C, 5432, 1, NodeRole::Secondary).unwrap();
    s.update_node(id, "10.0.1.4", 5432, false, 0).unwrap();
    assert_eq!(s.commit(), Ok(CommitOutcome::Committed));
    assert_eq!(addr_of(&s, id), Some(("10.0.1.4".to_owned(), 5432)));
    check(&s);
}

#[test]
fn update_rejects_impossible_addresses() {
    let mut s = cluster();
    assert_eq!(
        s.update_node(2, "", 5432, false, 0),
        Err(SimError::EmptyHostname)
    );
    assert_eq!(
        s.update_node(2, "h", 0, false, 0),
        Err(SimError::InvalidPort(0))
    );
    assert_eq!(
        s.update_node(2, "h", 65536, false, -5),
        Err(SimError::InvalidPort(65536))
    );
    assert_eq!(s.rows(), cluster_rows());
}

// ---------------------------------------------------------------------------------------------
// Rule 3: refusal of add/remove after an update

#[test]
fn add_after_update_in_same_transaction_is_refused() {
    let mut s = cluster();
    s.begin().unwrap();
    s.update_node(2, "10.0.1.1-demoted", 5432, true, 10000)
        .unwrap();
    let err = s.add_node(W1C, 5432, 1, NodeRole::Secondary).unwrap_err();
    // Names the lowest-nodeid worker primary as this session sees it.
    assert_eq!(
        err.to_string(),
        "10.0.1.1-demoted:5432 is a metadata node, but is out of sync"
    );
    assert_eq!(s.commit(), Ok(CommitOutcome::RolledBack));
    assert_eq!(s.committed_rows(), cluster_rows());
}

#[test]
fn remove_after_update_in_same_transaction_is_refused() {
    let mut s = cluster();
    s.begin().unwrap();
    s.update_node(4, "10.0.2.9", 5432, true, 10000).unwrap();
    assert_eq!(
        s.remove_node(W1B, 5432),
        Err(SimError::MetadataOutOfSync {
            host: W1A.to_owned(),
            port: 5432
        })
    );
    assert!(s.load().is_err());
}

#[test]
fn add_and_remove_before_the_update_are_accepted() {
    let mut s = cluster();
    s.begin().unwrap();
    assert_eq!(s.add_node(W1C, 5432, 1, NodeRole::Secondary), Ok(5));
    s.remove_node(W1B, 5432).unwrap();
    s.update_node(2, "10.0.1.1-demoted", 5432, true, 10000)
        .unwrap();
    s.update_node(5, W1A, 5432, true, 10000).unwrap();
    s.update_node(2, W1C, 5432, true, 10000).unwrap();
    assert_eq!(s.commit(), Ok(CommitOutcome::Committed));
    let rows = s.committed_rows();
    assert_eq!(
        rows,
        vec![
            row(1, 0, COORD, 5432, NodeRole::Primary),
            row(2, 1, W1C, 5432, NodeRole::Primary),
            row(4, 2, W2A, 5432, NodeRole::Primary),
            row(5, 1, W1A, 5432, NodeRole::Secondary),
        ]
    );
    check(&s);
}

#[test]
fn refusal_is_only_inside_the_transaction_by_default() {
    let mut s = cluster();
    s.begin().unwrap();
    s.update_node(3, W1C, 5432, false, 0).unwrap();
    assert_eq!(s.commit(), Ok(CommitOutcome::Committed));
    // Next statement, no clock movement: accepted (replay default).
    assert_eq!(s.add_node(W1B, 5432, 1, NodeRole::Secondary), Ok(5));
    // An autocommitted update does not refuse the next statement either.
    s.update_node(5, "10.0.1.5", 5432, false, 0).unwrap();
    s.remove_node("10.0.1.5", 5432).unwrap();
}

#[test]
fn without_worker_primary_nothing_is_out_of_sync() {
    let mut s = Simulator::new();
    s.replace_rows(vec![
        row(1, 0, COORD, 5432, NodeRole::Primary),
        row(2, 0, "10.0.0.2", 5432, NodeRole::Secondary),
        row(3, 1, W1B, 5432, NodeRole::Secondary),
    ]);
    s.begin().unwrap();
    s.update_node(1, "10.0.0.9", 5432, false, 0).unwrap();
    assert_eq!(s.add_node(W1C, 5432, 1, NodeRole::Secondary), Ok(4));
    s.remove_node(W1B, 5432).unwrap();
    assert_eq!(s.commit(), Ok(CommitOutcome::Committed));
}

#[test]
fn out_of_sync_names_lowest_nodeid_worker_primary() {
    let mut s = Simulator::new();
    s.replace_rows(vec![
        row(1, 0, COORD, 5432, NodeRole::Primary),
        row(2, 2, "w2-secondary", 5432, NodeRole::Secondary),
        row(5, 3, "w3", 5432, NodeRole::Primary),
        row(7, 1, "w1", 5432, NodeRole::Primary),
    ]);
    s.begin().unwrap();
    s.update_node(1, "10.0.0.9", 5432, false, 0).unwrap();
    assert_eq!(
        s.remove_node("w1", 5432).unwrap_err().to_string(),
        "w3:5432 is a metadata node, but is out of sync"
    );
}

#[test]
fn refused_add_and_remove_abort_and_consume_nodeid() {
    let mut s = cluster();
    s.begin().unwrap();
    s.update_node(3, W1C, 5432, false, 0).unwrap();
    assert!(s
        .add_node("10.0.1.9", 5432, 1, NodeRole::Secondary)
        .is_err());
    s.rollback();
    assert_eq!(s.add_node("10.0.1.9", 5432, 1, NodeRole::Secondary), Ok(6));
}

#[test]
fn add_of_existing_address_is_answered_even_when_out_of_sync() {
    let mut s = cluster();
    s.begin().unwrap();
    s.update_node(3, W1C, 5432, false, 0).unwrap();
    assert_eq!(s.add_node(W1A, 5432, 1, NodeRole::Primary), Ok(2));
    assert!(!s.txn.as_ref().is_some_and(|t| t.aborted));
}

#[test]
fn post_commit_window_follows_the_clock() {
    let mut s = Simulator::with_options(SimOptions {
        refuse_after_commit_ms: Some(1000),
    });
    s.replace_rows(cluster_rows());
    s.set_time_ms(5000);
    s.begin().unwrap();
    s.update_node(3, W1C, 5432, false, 0).unwrap();
    s.set_time_ms(5200); // commit time is the clock at COMMIT
    assert_eq!(s.commit(), Ok(CommitOutcome::Committed));

    s.set_time_ms(6199);
    let err = s.add_node(W1B, 5432, 1, NodeRole::Secondary).unwrap_err();
    assert_eq!(
        err,
        SimError::MetadataOutOfSync {
            host: W1A.to_owned(),
            port: 5432
        }
    );
    assert!(!s.in_transaction());
    // Also inside a new transaction before any update of its own.
    s.begin().unwrap();
    assert!(s.remove_node(W2A, 5432).is_err());
    assert_eq!(s.commit(), Ok(CommitOutcome::RolledBack));

    s.set_time_ms(6200);
    // The refused autocommit add consumed id 5.
    assert_eq!(s.add_node(W1B, 5432, 1, NodeRole::Secondary), Ok(6));
    s.remove_node(W1B, 5432).unwrap();
    check(&s);
}

#[test]
fn post_commit_window_after_autocommitted_update() {
    let mut s = Simulator::with_options(SimOptions {
        refuse_after_commit_ms: Some(1000),
    });
    s.replace_rows(cluster_rows());
    s.set_time_ms(100);
    s.update_node(3, W1C, 5432, false, 0).unwrap();
    s.set_time_ms(1099);
    assert!(s.remove_node(W1C, 5432).is_err());
    s.set_time_ms(1100);
    assert_eq!(s.remove_node(W1C, 5432), Ok(()));
}

#[test]
fn post_commit_window_not_started_by_noop_rollback_or_abort() {
    let mut s = Simulator::with_options(SimOptions {
        refuse_after_commit_ms: Some(1000),
    });
    s.replace_rows(cluster_rows());
    s.set_time_ms(10);
    // Same-address update: no-op.
    s.update_node(2, W1A, 5432, false, 0).unwrap();
    // Rolled back update.
    s.begin().unwrap();
    s.update_node(3, W1C, 5432, false, 0).unwrap();
    s.rollback();
    // Aborted transaction with an update.
    s.begin().unwrap();
    s.update_node(3, W1C, 5432, false, 0).unwrap();
    assert!(s.update_node(77, "q", 1, false, 0).is_err());
    assert_eq!(s.commit(), Ok(CommitOutcome::RolledBack));
    // Lost session with an update.
    s.begin().unwrap();
    s.update_node(3, W1C, 5432, false, 0).unwrap();
    s.lose_session();
    assert_eq!(s.add_node(W1C, 5432, 1, NodeRole::Secondary), Ok(5));
}

#[test]
fn post_commit_window_with_huge_values_does_not_overflow() {
    let mut s = Simulator::with_options(SimOptions {
        refuse_after_commit_ms: Some(u64::MAX),
    });
    s.replace_rows(cluster_rows());
    s.set_time_ms(u64::MAX - 1);
    s.update_node(3, W1C, 5432, false, 0).unwrap();
    // The window end saturates at u64::MAX instead of wrapping round to "already over".
    assert!(s.add_node("n", 1, 1, NodeRole::Secondary).is_err());
    s.set_time_ms(u64::MAX);
    assert!(s.add_node("n", 1, 1, NodeRole::Secondary).is_ok());
}

// ---------------------------------------------------------------------------------------------
// Rule 4: add_node

#[test]
fn add_existing_address_returns_its_id_and_changes_nothing() {
    let mut s = cluster();
    assert_eq!(s.add_node(W1B, 5432, 7, NodeRole::Primary), Ok(3));
    assert_eq!(s.add_node(COORD, 5432, 0, NodeRole::Unavailable), Ok(1));
    assert_eq!(s.rows(), cluster_rows());
    // No nodeid consumed.
    assert_eq!(s.add_node(W1C, 5432, 1, NodeRole::Secondary), Ok(5));
}

#[test]
fn add_primary_to_group_with_primary_is_refused_and_consumes_nodeid() {
    let mut s = cluster();
    let err = s.add_node(W1C, 5432, 1, NodeRole::Primary).unwrap_err();
    assert_eq!(err.to_string(), "group 1 already has a primary node");
    let err = s.add_node(W1C, 5432, 0, NodeRole::Primary).unwrap_err();
    assert_eq!(err.to_string(), "group 0 already has a primary node");
    assert_eq!(s.rows(), cluster_rows());
    // Ids 5 and 6 were consumed by the refusals.
    assert_eq!(s.add_node(W1C, 5432, 1, NodeRole::Secondary), Ok(7));
}

#[test]
fn add_secondary_or_unavailable_to_group_with_primary_is_fine() {
    let mut s = cluster();
    assert_eq!(s.add_node(W1C, 5432, 1, NodeRole::Secondary), Ok(5));
    assert_eq!(
        s.add_node("10.0.1.4", 5432, 1, NodeRole::Unavailable),
        Ok(6)
    );
    check(&s);
}

#[test]
fn add_primary_after_removing_the_groups_primary() {
    let mut s = cluster();
    s.begin().unwrap();
    s.remove_node(W1A, 5432).unwrap();
    assert_eq!(s.add_node(W1C, 5432, 1, NodeRole::Primary), Ok(5));
    assert_eq!(s.commit(), Ok(CommitOutcome::Committed));
    check(&s);
}

#[test]
fn add_primary_to_group_whose_primary_was_demoted_by_replace() {
    let mut s = cluster();
    let mut rows = cluster_rows();
    rows[1].noderole = NodeRole::Secondary;
    s.replace_rows(rows);
    assert_eq!(s.add_node(W1C, 5432, 1, NodeRole::Primary), Ok(5));
}

#[test]
fn add_rejects_bad_host_and_port_without_consuming_nodeid() {
    let mut s = cluster();
    assert_eq!(
        s.add_node("", 5432, 1, NodeRole::Secondary),
        Err(SimError::EmptyHostname)
    );
    for port in [0, -1, 65536, i32::MAX, i32::MIN] {
        let err = s.add_node("h", port, 1, NodeRole::Secondary).unwrap_err();
        assert_eq!(err, SimError::InvalidPort(port));
        assert!(err.to_string().contains(&port.to_string()));
    }
    assert_eq!(s.add_node("h", 1, 1, NodeRole::Secondary), Ok(5));
    assert_eq!(s.add_node("h", 65535, 1, NodeRole::Secondary), Ok(6));
}

#[test]
fn add_bad_port_inside_transaction_aborts_it() {
    let mut s = cluster();
    s.begin().unwrap();
    assert!(s.add_node("h", 0, 1, NodeRole::Secondary).is_err());
    assert_eq!(s.load(), Err(SimError::TransactionAborted));
}

#[test]
fn add_accepts_any_group_number() {
    let mut s = Simulator::new();
    assert_eq!(s.add_node("a", 1, -1, NodeRole::Primary), Ok(1));
    assert_eq!(s.add_node("b", 1, i32::MAX, NodeRole::Primary), Ok(2));
    assert_eq!(
        s.add_node("c", 1, -1, NodeRole::Primary),
        Err(SimError::GroupHasPrimary(-1))
    );
    check(&s);
}

// ---------------------------------------------------------------------------------------------
// Rule 5: remove_node

#[test]
fn remove_unknown_address_does_not_exist() {
    let mut s = cluster();
    let err = s.remove_node("10.9.9.9", 5432).unwrap_err();
    assert_eq!(err.to_string(), "node at \"10.9.9.9:5432\" does not exist");
    // Same host, other port.
    assert!(s.remove_node(W1A, 5433).is_err());
    // Odd inputs are just "not there".
    assert!(s.remove_node("", -1).is_err());
    assert_eq!(s.rows(), cluster_rows());
}

#[test]
fn remove_only_primary_of_group_is_allowed() {
    let mut s = cluster();
    s.remove_node(W2A, 5432).unwrap();
    assert!(!s.rows().iter().any(|r| r.groupid == 2));
    check(&s);
}

#[test]
fn removed_address_can_be_added_again_with_a_new_id() {
    let mut s = cluster();
    s.begin().unwrap();
    s.remove_node(W1B, 5432).unwrap();
    assert_eq!(s.add_node(W1B, 5432, 1, NodeRole::Secondary), Ok(5));
    assert_eq!(s.commit(), Ok(CommitOutcome::Committed));
    assert_eq!(addr_of(&s, 5), Some((W1B.to_owned(), 5432)));
    assert_eq!(addr_of(&s, 3), None);
    check(&s);
}

// ---------------------------------------------------------------------------------------------
// Rules 6 and 7: invariants under arbitrary input, against a naive reference model

/// A deliberately simple (quadratic, clone-per-statement) model of the same rules, used to
/// cross-check the indexed implementation.
#[derive(Clone, Default)]
struct Naive {
    committed: Vec<Row>,
    txn: Option<(Vec<Row>, bool, bool)>,
    last: i32,
    window: Option<u64>,
    now: u64,
    last_commit: Option<u64>,
}

impl Naive {
    fn view(&self) -> &Vec<Row> {
        self.txn.as_ref().map(|t| &t.0).unwrap_or(&self.committed)
    }

    fn out_of_sync(&self) -> Option<SimError> {
        let in_txn = self.txn.as_ref().is_some_and(|t| t.2);
        let windowed = matches!((self.window, self.last_commit), (Some(w), Some(at)) if self.now < at.saturating_add(w));
        if !(in_txn || windowed) {
            return None;
        }
        self.view()
            .iter()
            .filter(|r| r.noderole == NodeRole::Primary && r.groupid != 0)
            .min_by_key(|r| r.nodeid)
            .map(|r| SimError::MetadataOutOfSync {
                host: r.nodename.clone(),
                port: r.nodeport,
            })
    }

    fn stmt<T>(
        &mut self,
        f: impl FnOnce(&mut Self, &mut Vec<Row>) -> Result<T, SimError>,
    ) -> Result<T, SimError> {
        if self.txn.as_ref().is_some_and(|t| t.1) {
            return Err(SimError::TransactionAborted);
        }
        let mut work = self.view().clone();
        let r = f(self, &mut work);
        match (&r, self.txn.as_mut()) {
            (Ok(_), Some(t)) => t.0 = work,
            (Ok(_), None) => self.committed = work,
            (Err(_), Some(t)) => t.1 = true,
            (Err(_), None) => {}
        }
        r
    }

    fn valid(host: &str, port: i32) -> Result<(), SimError> {
        if host.is_empty() {
            Err(SimError::EmptyHostname)
        } else if !(1..=65535).contains(&port) {
            Err(SimError::InvalidPort(port))
        } else {
            Ok(())
        }
    }

    fn add(&mut self, host: &str, port: i32, g: i32, role: NodeRole) -> Result<i32, SimError> {
        self.stmt(|n, w| {
            Self::valid(host, port)?;
            if let Some(r) = w.iter().find(|r| r.nodename == host && r.nodeport == port) {
                return Ok(r.nodeid);
            }
            n.last = n.last.checked_add(1).ok_or(SimError::SequenceExhausted)?;
            let id = n.last;
            if role == NodeRole::Primary
                && w.iter()
                    .any(|r| r.groupid == g && r.noderole == NodeRole::Primary)
            {
                return Err(SimError::GroupHasPrimary(g));
            }
            if let Some(e) = n.out_of_sync() {
                return Err(e);
            }
            w.push(row(id, g, host, port, role));
            w.sort_by_key(|r| r.nodeid);
            Ok(id)
        })
    }

    fn update(&mut self, id: i32, host: &str, port: i32) -> Result<(), SimError> {
        self.stmt(|n, w| {
            Self::valid(host, port)?;
            if let Some(r) = w.iter().find(|r| r.nodename == host && r.nodeport == port) {
                return if r.nodeid == id {
                    Ok(())
                } else {
                    Err(SimError::AddressInUse)
                };
            }
            let r = w
                .iter_mut()
                .find(|r| r.nodeid == id)
                .ok_or(SimError::NodeNotFound(id))?;
            r.nodename = host.to_owned();
            r.nodeport = port;
            match n.txn.as_mut() {
                Some(t) => t.2 = true,
                None => n.last_commit = Some(n.now),
            }
            Ok(())
        })
    }

    fn remove(&mut self, host: &str, port: i32) -> Result<(), SimError> {
        self.stmt(|n, w| {
            let pos = w
                .iter()
                .position(|r| r.nodename == host && r.nodeport == port)
                .ok_or_else(|| SimError::NodeDoesNotExist {
                    host: host.to_owned(),
                    port,
                })?;
            if let Some(e) = n.out_of_sync() {
                return Err(e);
            }
            w.remove(pos);
            Ok(())
        })
    }
}

/// Deterministic xorshift generator: no dependency, same sequence on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn differential_run(seed: u64, window: Option<u64>, steps: usize) {
    let hosts = ["", "a", "b", "c", "d", "e-demoted"];
    let ports = [-1, 0, 1, 5432, 5433, 65535, 65536, i32::MAX, i32::MIN];
    let ids = [-1, 0, 1, 2, 3, 4, 5, 6, 8, 13, i32::MAX, i32::MIN];
    let roles = [
        NodeRole::Primary,
        NodeRole::Secondary,
        NodeRole::Unavailable,
    ];
    let mut rng = Rng(seed);
    let mut s = Simulator::with_options(SimOptions {
        refuse_after_commit_ms: window,
    });
    let mut n = Naive {
        window,
        ..Naive::default()
    };
    let pick = |rng: &mut Rng, len: usize| rng.below(len as u64) as usize;
    for step in 0..steps {
        let host = hosts[pick(&mut rng, hosts.len())];
        // Mostly sensible ports so that rows actually accumulate.
        let port = if rng.below(4) == 0 {
            ports[pick(&mut rng, ports.len())]
        } else {
            5432 + rng.below(2) as i32
        };
        let id = ids[pick(&mut rng, ids.len())];
        let group = rng.below(4) as i32 - 1;
        let role = roles[pick(&mut rng, roles.len())];
        let op = rng.below(13);
        let ctx = format!("seed {seed} step {step} op {op}");
        match op {
            0 | 1 => assert_eq!(
                s.add_node(host, port, group, role),
                n.add(host, port, group, role),
                "{ctx}"
            ),
            2 | 3 => assert_eq!(
                s.update_node(id, host, port, rng.below(2) == 0, id),
                n.update(id, host, port),
                "{ctx}"
            ),
            4 => assert_eq!(s.remove_node(host, port), n.remove(host, port), "{ctx}"),
            5 => {
                let expected = if n.txn.as_ref().is_some_and(|t| t.1) {
                    Err(SimError::TransactionAborted)
                } else {
                    Ok(n.view().clone())
                };
                assert_eq!(s.load(), expected, "{ctx}");
            }
            6 | 7 => {
                let expected = match &n.txn {
                    Some(t) if t.1 => Err(SimError::TransactionAborted),
                    Some(_) => Ok(()),
                    None => {
                        n.txn = Some((n.committed.clone(), false, false));
                        Ok(())
                    }
                };
                assert_eq!(s.begin(), expected, "{ctx}");
            }
            8 => {
                let expected = match n.txn.take() {
                    None => CommitOutcome::Committed,
                    Some((_, true, _)) => CommitOutcome::RolledBack,
                    Some((rows, false, updated)) => {
                        n.committed = rows;
                        if updated {
                            n.last_commit = Some(n.now);
                        }
                        CommitOutcome::Committed
                    }
                };
                assert_eq!(s.commit(), Ok(expected), "{ctx}");
            }
            9 => {
                s.rollback();
                n.txn = None;
            }
            10 => {
                s.lose_session();
                n.txn = None;
            }
            11 => {
                n.now += rng.below(700);
                s.set_time_ms(n.now);
            }
            _ => {
                if rng.below(8) == 0 {
                    // An outside change: keep some committed rows, with an odd one added.
                    let mut rows = n.committed.clone();
                    rows.retain(|_| rng.below(3) != 0);
                    let extra = rng.below(20) as i32;
                    rows.push(row(extra, 1, "z", 5432, NodeRole::Primary));
                    s.replace_rows(rows.clone());
                    let t = Table::from_rows(rows);
                    n.committed = t.rows().to_vec();
                    n.txn = None;
                    n.last = n.last.max(t.max_nodeid().unwrap_or(i32::MIN));
                }
            }
        }
        check(&s);
        assert_eq!(s.rows(), *n.view(), "{ctx}");
        assert_eq!(s.committed_rows(), n.committed, "{ctx}");
        assert_eq!(s.in_transaction(), n.txn.is_some(), "{ctx}");
        let view = s.rows();
        let mut addrs: Vec<(&str, i32)> = view
            .iter()
            .map(|r| (r.nodename.as_str(), r.nodeport))
            .collect();
        addrs.sort_unstable();
        addrs.dedup();
        assert_eq!(addrs.len(), view.len(), "unique address violated at {ctx}");
    }
}

#[test]
fn differential_against_naive_model_replay_defaults() {
    for seed in 1..=40u64 {
        differential_run(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15), None, 400);
    }
}

#[test]
fn differential_against_naive_model_with_post_commit_window() {
    for seed in 1..=40u64 {
        differential_run(seed.wrapping_mul(0xD1B5_4A32_D192_ED03), Some(1000), 400);
    }
}

#[test]
fn ten_thousand_switchovers_drain_quickly() {
    // 100 worker groups with a registered secondary each; 10000 three-update switchovers,
    // each in its own transaction, plus an add/remove pair before each update.
    let mut s = Simulator::new();
    s.add_node(COORD, 5432, 0, NodeRole::Primary).unwrap();
    let mut ids = Vec::new();
    for g in 1..=100 {
        let p = s
            .add_node(&format!("w{g}a"), 5432, g, NodeRole::Primary)
            .unwrap();
        let q = s
            .add_node(&format!("w{g}b"), 5432, g, NodeRole::Secondary)
            .unwrap();
        ids.push((g, p, q));
    }
    for i in 0..10_000 {
        let (g, primary, secondary) = ids[i % ids.len()];
        let rows = s.load().unwrap();
        let addr = |id: i32| {
            rows.iter()
                .find(|r| r.nodeid == id)
                .map(|r| r.nodename.clone())
                .unwrap()
        };
        let (old, new) = (addr(primary), addr(secondary));
        s.begin().unwrap();
        s.add_node("spare", 5432, g, NodeRole::Secondary).unwrap();
        s.remove_node("spare", 5432).unwrap();
        s.update_node(primary, &format!("{old}-demoted"), 5432, true, 10000)
            .unwrap();
        s.update_node(secondary, &old, 5432, true, 10000).unwrap();
        s.update_node(primary, &new, 5432, true, 10000).unwrap();
        assert_eq!(s.commit(), Ok(CommitOutcome::Committed));
    }
    assert_eq!(s.rows().len(), 201);
    check(&s);
}
