//! The Citus emulation against a real PostgreSQL 15 server: every behaviour of
//! docs/citus-behaviour.md that the SQL reproduces.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio_postgres::error::SqlState;

const OUT_OF_SYNC_HINT: &str =
    "If the node is up, wait until metadata gets synced to it and try again.";

fn out_of_sync(address: &str) -> String {
    format!("{address} is a metadata node, but is out of sync")
}

// ---------------------------------------------------------------------------------------------
// Objects

#[tokio::test]
async fn objects_are_in_pg_catalog_with_citus_names_and_signatures() {
    let (_pg, c) = citus().await;

    assert_eq!(
        scalar_text(
            &c,
            "SELECT string_agg(enumlabel, ',' ORDER BY enumsortorder)
               FROM pg_enum WHERE enumtypid = 'pg_catalog.noderole'::regtype"
        )
        .await,
        "primary,secondary,unavailable"
    );
    for rel in [
        "pg_dist_node",
        "pg_dist_authinfo",
        "pg_dist_node_nodeid_seq",
    ] {
        assert_eq!(
            scalar_text(
                &c,
                &format!(
                    "SELECT relnamespace::regnamespace::text FROM pg_class WHERE relname = '{rel}'"
                )
            )
            .await,
            "pg_catalog",
            "{rel}"
        );
    }

    let columns = c
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod),
                    coalesce(pg_get_expr(d.adbin, d.adrelid), '')
               FROM pg_attribute a
               LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
              WHERE a.attrelid = 'pg_catalog.pg_dist_node'::regclass
                AND a.attnum > 0 AND NOT a.attisdropped
              ORDER BY a.attnum",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get::<_, String>(0),
                r.get::<_, String>(1),
                r.get::<_, String>(2),
            )
        })
        .collect::<Vec<_>>();
    let expected = [
        (
            "nodeid",
            "integer",
            "nextval('pg_dist_node_nodeid_seq'::regclass)",
        ),
        ("groupid", "integer", ""),
        ("nodename", "text", ""),
        ("nodeport", "integer", "5432"),
        ("noderack", "text", "'default'::text"),
        ("hasmetadata", "boolean", "false"),
        ("isactive", "boolean", "true"),
        ("noderole", "noderole", "'primary'::noderole"),
        ("nodecluster", "name", "'default'::name"),
        ("metadatasynced", "boolean", "false"),
        ("shouldhaveshards", "boolean", "true"),
        ("nodeisclone", "boolean", "false"),
        ("nodeprimarynodeid", "integer", "0"),
    ]
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()));
    assert_eq!(columns, expected);

    let constraints = c
        .query(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint
              WHERE conrelid = 'pg_catalog.pg_dist_node'::regclass ORDER BY contype",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>();
    assert_eq!(
        constraints,
        ["PRIMARY KEY (nodeid)", "UNIQUE (nodename, nodeport)"]
    );

    assert_eq!(
        scalar_text(
            &c,
            "SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum)
               FROM pg_attribute
              WHERE attrelid = 'pg_catalog.pg_dist_authinfo'::regclass AND attnum > 0"
        )
        .await,
        "nodeid integer, rolename name, authinfo text"
    );

    for (name, args, result) in [
        (
            "citus_add_node",
            "nodename text, nodeport integer, groupid integer DEFAULT '-1'::integer, \
             noderole noderole DEFAULT 'primary'::noderole, nodecluster name DEFAULT 'default'::name",
            "integer",
        ),
        (
            "citus_update_node",
            "node_id integer, new_node_name text, new_node_port integer, \
             force boolean DEFAULT false, lock_cooldown integer DEFAULT 10000",
            "void",
        ),
        ("citus_remove_node", "nodename text, nodeport integer", "void"),
        (
            "citus_set_coordinator_host",
            "host text, port integer DEFAULT (current_setting('port'::text))::integer, \
             node_role noderole DEFAULT 'primary'::noderole, node_cluster name DEFAULT 'default'::name",
            "void",
        ),
        (
            "citus_pause_node_within_txn",
            "node_id integer, force boolean DEFAULT false, lock_cooldown integer DEFAULT 10000",
            "void",
        ),
        ("citus_version", "", "text"),
    ] {
        let rows = c
            .query(
                "SELECT pg_get_function_arguments(oid), pg_get_function_result(oid)
                   FROM pg_proc
                  WHERE proname = $1 AND pronamespace = 'pg_catalog'::regnamespace",
                &[&name],
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), 1, "{name}: exactly one overload");
        assert_eq!(rows[0].get::<_, String>(0), args, "{name}");
        assert_eq!(rows[0].get::<_, String>(1), result, "{name}");
    }

    let version = scalar_text(&c, "SELECT citus_version()").await;
    assert!(version.contains("emulation"), "{version}");
    assert!(version.starts_with("Citus 13."), "{version}");

    // Named arguments work as with Citus.
    exec(
        &c,
        "SELECT citus_add_node(nodename => 'w1', nodeport => 5432, noderole => 'primary')",
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// citus_add_node, citus_set_coordinator_host

#[tokio::test]
async fn add_node_assigns_groups_ids_and_flags() {
    let (pg, c) = citus().await;

    // The coordinator: group 0, port defaults to the server's port.
    exec(&c, "SELECT citus_set_coordinator_host('coord')").await;
    let coord = nodes(&c).await;
    assert_eq!(coord.len(), 1);
    assert_eq!(coord[0].groupid, 0);
    assert_eq!(coord[0].nodename, "coord");
    assert_eq!(coord[0].nodeport, i32::from(pg.port()));
    assert_eq!(coord[0].noderole, "primary");
    assert!(coord[0].hasmetadata && coord[0].isactive);
    assert_eq!(coord[0].metadatasynced, Some(true));
    assert!(!coord[0].shouldhaveshards);

    // groupid -1 (the default): a new group, max(groupid) + 1.
    let w1 = scalar_i32(&c, "SELECT citus_add_node('w1', 5432)").await;
    let w2 = scalar_i32(&c, "SELECT citus_add_node('w2', 6432, -1)").await;
    let w9 = scalar_i32(&c, "SELECT citus_add_node('w9', 5432, 9)").await;
    let w10 = scalar_i32(&c, "SELECT citus_add_node('w10', 5432)").await;
    assert_eq!([w1, w2, w9, w10], [2, 3, 4, 5]);
    let all = nodes(&c).await;
    assert_eq!(
        all.iter().map(|n| n.groupid).collect::<Vec<_>>(),
        [0, 1, 2, 9, 10]
    );
    for n in &all[1..] {
        assert_eq!(n.noderole, "primary");
        assert!(n.hasmetadata && n.isactive && n.shouldhaveshards, "{n:?}");
        assert_eq!(n.metadatasynced, Some(true), "{n:?}");
    }
    assert_eq!(
        scalar_text(
            &c,
            "SELECT format('%s/%s/%s/%s', noderack, nodecluster, nodeisclone, nodeprimarynodeid)
               FROM pg_dist_node WHERE nodename = 'w1'"
        )
        .await,
        "default/default/f/0"
    );

    // A secondary joins an existing group and has no metadata.
    let w1s = scalar_i32(&c, "SELECT citus_add_node('w1s', 5432, 1, 'secondary')").await;
    let s = node(&c, w1s).await;
    assert_eq!((s.groupid, s.noderole.as_str()), (1, "secondary"));
    assert!(!s.hasmetadata && s.isactive);

    // Each primary group has its shard table.
    for g in [0, 1, 2, 9, 10] {
        assert!(
            scalar_bool(
                &c,
                &format!("SELECT to_regclass('citus_emulation.shard_{g}') IS NOT NULL")
            )
            .await,
            "shard_{g}"
        );
    }
}

#[tokio::test]
async fn add_node_of_a_known_address_returns_its_id_and_changes_nothing() {
    let (_pg, c) = citus().await;
    let ids = seed(&c).await;
    let before = dump(&c).await;
    let seq = scalar_i64(&c, "SELECT last_value FROM pg_dist_node_nodeid_seq").await;

    assert_eq!(
        scalar_i32(&c, "SELECT citus_add_node('w1', 5432)").await,
        ids.w1
    );
    // Even with other arguments: nothing is checked or changed.
    assert_eq!(
        scalar_i32(&c, "SELECT citus_add_node('w2', 5432, 1, 'secondary')").await,
        ids.w2
    );
    assert_eq!(dump(&c).await, before);
    assert_eq!(
        scalar_i64(&c, "SELECT last_value FROM pg_dist_node_nodeid_seq").await,
        seq
    );
}

#[tokio::test]
async fn second_primary_in_a_group_is_refused_and_consumes_a_nodeid() {
    let (_pg, c) = citus().await;
    let ids = seed(&c).await;
    let before = dump(&c).await;

    expect_error(
        &c,
        "SELECT citus_add_node('other', 5432, 1)",
        SqlState::INTERNAL_ERROR,
        "group 1 already has a primary node",
    )
    .await;
    expect_error(
        &c,
        "SELECT citus_add_node('other', 5432, 0, 'primary')",
        SqlState::INTERNAL_ERROR,
        "group 0 already has a primary node",
    )
    .await;
    assert_eq!(dump(&c).await, before);

    // The two refused adds consumed ids.
    let next = scalar_i32(&c, "SELECT citus_add_node('w3', 5432)").await;
    assert_eq!(next, ids.w1s + 3);
    assert_eq!(node(&c, next).await.groupid, 3);
}

#[tokio::test]
async fn set_coordinator_host_inserts_then_updates_the_group_0_row() {
    let (_pg, c) = citus().await;
    exec(&c, "SELECT citus_set_coordinator_host('coord', 5432)").await;
    let coord = nodes(&c).await[0].clone();
    exec(&c, "SELECT citus_add_node('w1', 5432)").await;

    exec(&c, "SELECT citus_set_coordinator_host('coord-2', 6000)").await;
    let rows = nodes(&c).await;
    let group0: Vec<_> = rows.iter().filter(|n| n.groupid == 0).collect();
    assert_eq!(group0.len(), 1);
    assert_eq!(group0[0].nodeid, coord.nodeid);
    assert_eq!(
        (group0[0].nodename.as_str(), group0[0].nodeport),
        ("coord-2", 6000)
    );
    // It is not a citus_update_node: the workers stay synced and adds work at once.
    assert!(rows.iter().all(|n| n.metadatasynced == Some(true)));
    exec(&c, "SELECT citus_add_node('w2', 5432)").await;

    // The same address again is fine.
    exec(&c, "SELECT citus_set_coordinator_host('coord-2', 6000)").await;
    assert_eq!(nodes(&c).await.len(), 3);
}

// ---------------------------------------------------------------------------------------------
// citus_update_node: errors, no-op, unsynced workers

#[tokio::test]
async fn update_node_errors_and_no_op() {
    let (_pg, c) = citus().await;
    let ids = seed(&c).await;
    let before = dump(&c).await;

    expect_error(
        &c,
        &format!("SELECT citus_update_node({}, 'w2', 5432)", ids.w1),
        SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
        "there is already another node with the specified hostname and port",
    )
    .await;
    expect_error(
        &c,
        "SELECT citus_update_node(999, 'nowhere', 5432)",
        SqlState::NO_DATA_FOUND,
        "node 999 not found",
    )
    .await;
    // Like Citus, the address is checked first.
    expect_error(
        &c,
        "SELECT citus_update_node(999, 'w2', 5432)",
        SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
        "there is already another node with the specified hostname and port",
    )
    .await;
    assert_eq!(dump(&c).await, before);

    // The address the row already has: a silent no-op that unsyncs nothing and pauses nothing,
    // so add/remove keep working in the same transaction.
    exec(
        &c,
        &format!(
            "BEGIN;
             SELECT citus_update_node({w1}, 'w1', 5432);
             SELECT citus_update_node({w1s}, 'w1s', 5432, true, 100);",
            w1 = ids.w1,
            w1s = ids.w1s
        ),
    )
    .await;
    assert_eq!(dump(&c).await, before);
    exec(&c, "SELECT citus_add_node('w3', 5432); COMMIT").await;
    exec(&c, "SELECT citus_remove_node('w3', 5432)").await;
    assert_eq!(dump(&c).await, before);
}

#[tokio::test]
async fn update_marks_worker_primaries_unsynced_and_refuses_add_remove_in_the_same_transaction() {
    let (_pg, c) = citus().await;
    let ids = seed(&c).await;

    // Updating group 2's primary unsyncs every worker primary; the error names the
    // lowest-nodeid one (w1), with the HINT.
    exec(
        &c,
        &format!(
            "BEGIN; SELECT citus_update_node({}, 'w2-new', 5432)",
            ids.w2
        ),
    )
    .await;
    for n in nodes(&c).await {
        let expected = if n.groupid != 0 && n.noderole == "primary" {
            Some(false)
        } else if n.groupid == 0 {
            Some(true)
        } else {
            n.metadatasynced // secondaries have no metadata and keep their flag
        };
        assert_eq!(n.metadatasynced, expected, "{n:?}");
    }
    let err = expect_error(
        &c,
        "SELECT citus_add_node('w3', 5432)",
        SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
        &out_of_sync("w1:5432"),
    )
    .await;
    assert_eq!(err.hint(), Some(OUT_OF_SYNC_HINT));
    assert!(err
        .hint()
        .unwrap()
        .contains("wait until metadata gets synced"));
    exec(&c, "ROLLBACK").await;

    // Same for remove, here of a secondary.
    exec(
        &c,
        &format!(
            "BEGIN; SELECT citus_update_node({}, 'w2-new', 5432)",
            ids.w2
        ),
    )
    .await;
    let err = expect_error(
        &c,
        "SELECT citus_remove_node('w1s', 5432)",
        SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
        &out_of_sync("w1:5432"),
    )
    .await;
    assert_eq!(err.hint(), Some(OUT_OF_SYNC_HINT));
    exec(&c, "ROLLBACK").await;

    // Removing the lowest unsynced worker itself: as in Citus the check looks at the remaining
    // metadata workers, so it names the next one.
    exec(
        &c,
        &format!(
            "BEGIN; SELECT citus_update_node({}, 'w1-new', 5432)",
            ids.w1
        ),
    )
    .await;
    expect_error(
        &c,
        "SELECT citus_remove_node('w1-new', 5432)",
        SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
        &out_of_sync("w2:5432"),
    )
    .await;
    exec(&c, "ROLLBACK").await;
    assert!(nodes(&c)
        .await
        .iter()
        .all(|n| n.metadatasynced == Some(n.noderole == "primary")));
}

#[tokio::test]
async fn add_and_remove_before_the_first_update_of_a_transaction_work() {
    let (_pg, c) = citus().await;
    let ids = seed(&c).await;
    exec(
        &c,
        &format!(
            "BEGIN;
             SELECT citus_add_node('w3', 5432);
             SELECT citus_add_node('w3s', 5432, 3, 'secondary');
             SELECT citus_remove_node('w3s', 5432);
             SELECT citus_update_node({}, 'w1-new', 5432);
             COMMIT;",
            ids.w1
        ),
    )
    .await;
    let names: Vec<String> = nodes(&c).await.into_iter().map(|n| n.nodename).collect();
    assert_eq!(names, ["coord", "w1-new", "w2", "w1s", "w3"]);
}

// ---------------------------------------------------------------------------------------------
// Switchover, rollback, aborted transactions

#[tokio::test]
async fn switchover_with_a_registered_secondary_takes_three_updates_in_one_transaction() {
    let (_pg, c) = citus().await;
    let ids = seed(&c).await;

    // A single update of the primary to the secondary's address is refused ...
    expect_error(
        &c,
        &format!("SELECT citus_update_node({}, 'w1s', 5432)", ids.w1),
        SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
        "there is already another node with the specified hostname and port",
    )
    .await;

    // ... the three-step swap works.
    exec(
        &c,
        &format!(
            "BEGIN;
             SELECT citus_update_node({w1}, 'w1-demoted', 5432);
             SELECT citus_update_node({w1s}, 'w1', 5432);
             SELECT citus_update_node({w1}, 'w1s', 5432);",
            w1 = ids.w1,
            w1s = ids.w1s
        ),
    )
    .await;
    // Inside the transaction: new addresses, unsynced workers, add refused.
    let inside = nodes(&c).await;
    let p = inside.iter().find(|n| n.nodeid == ids.w1).unwrap();
    let s = inside.iter().find(|n| n.nodeid == ids.w1s).unwrap();
    assert_eq!(
        (p.nodename.as_str(), p.noderole.as_str(), p.groupid),
        ("w1s", "primary", 1)
    );
    assert_eq!(
        (s.nodename.as_str(), s.noderole.as_str(), s.groupid),
        ("w1", "secondary", 1)
    );
    assert_eq!(p.metadatasynced, Some(false));
    exec(&c, "COMMIT").await;

    let after = nodes(&c).await;
    assert_eq!(
        after
            .iter()
            .map(|n| (n.nodeid, n.nodename.as_str(), n.noderole.as_str()))
            .collect::<Vec<_>>(),
        [
            (ids.coord, "coord", "primary"),
            (ids.w1, "w1s", "primary"),
            (ids.w2, "w2", "primary"),
            (ids.w1s, "w1", "secondary"),
        ]
    );
    // The lowest unsynced worker primary now has the new primary's address.
    expect_error(
        &c,
        "SELECT citus_add_node('w3', 5432)",
        SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
        &out_of_sync("w1s:5432"),
    )
    .await;
}

#[tokio::test]
async fn rollback_restores_every_row_and_leaves_no_pending_sync() {
    let (_pg, c) = citus().await;
    let ids = seed(&c).await;
    let before = dump(&c).await;

    exec(
        &c,
        &format!(
            "BEGIN;
             SELECT citus_update_node({w1}, 'w1-demoted', 5432);
             SELECT citus_update_node({w1s}, 'w1', 5432);
             SELECT citus_update_node({w1}, 'w1s', 5432);
             SELECT citus_update_node({w2}, 'w2-new', 6432, force => true);",
            w1 = ids.w1,
            w1s = ids.w1s,
            w2 = ids.w2
        ),
    )
    .await;
    assert_ne!(dump(&c).await, before);
    exec(&c, "ROLLBACK").await;
    assert_eq!(dump(&c).await, before);

    // Nothing is out of sync: add and remove work right away.
    exec(&c, "SELECT citus_add_node('w3', 5432)").await;
    exec(&c, "SELECT citus_remove_node('w3', 5432)").await;
    assert_eq!(dump(&c).await, before);
}

#[tokio::test]
async fn an_error_aborts_the_transaction() {
    let (_pg, c) = citus().await;
    let ids = seed(&c).await;
    let before = dump(&c).await;
    exec(
        &c,
        &format!(
            "BEGIN; SELECT citus_update_node({}, 'w1-new', 5432)",
            ids.w1
        ),
    )
    .await;
    expect_error(
        &c,
        &format!("SELECT citus_update_node({}, 'w1-new', 5432)", ids.w2),
        SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
        "there is already another node with the specified hostname and port",
    )
    .await;
    let err = db_error(&c, "SELECT 1").await;
    assert_eq!(err.code(), &SqlState::IN_FAILED_SQL_TRANSACTION);
    // COMMIT of an aborted transaction rolls back.
    exec(&c, "COMMIT").await;
    assert_eq!(dump(&c).await, before);
    exec(&c, "SELECT citus_add_node('w3', 5432)").await;
}

// ---------------------------------------------------------------------------------------------
// Metadata sync after commit

#[tokio::test]
async fn add_and_remove_are_refused_for_a_second_after_commit_then_accepted() {
    let (_pg, c) = citus().await;
    let ids = seed(&c).await;

    exec(
        &c,
        &format!(
            "BEGIN; SELECT citus_update_node({}, 'w1-new', 5432)",
            ids.w1
        ),
    )
    .await;
    let before_commit = Instant::now();
    exec(&c, "COMMIT").await;
    let after_commit = Instant::now();

    let add = c.batch_execute("SELECT citus_add_node('w3', 5432)").await;
    let remove = c
        .batch_execute("SELECT citus_remove_node('w1s', 5432)")
        .await;
    let elapsed = before_commit.elapsed();
    if elapsed < Duration::from_millis(1000) {
        for result in [add, remove] {
            let err = result.expect_err("refused within a second of the commit");
            let db = err.as_db_error().unwrap();
            assert_eq!(db.message(), out_of_sync("w1-new:5432"));
            assert_eq!(db.code(), &SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE);
            assert_eq!(db.hint(), Some(OUT_OF_SYNC_HINT));
        }
    } else {
        eprintln!("took {elapsed:?} after the commit: cannot check the refusal window");
    }
    assert_eq!(node(&c, ids.w2).await.metadatasynced, Some(false));

    tokio::time::sleep_until((after_commit + Duration::from_millis(1200)).into()).await;
    let w3 = scalar_i32(&c, "SELECT citus_add_node('w3', 5432)").await;
    exec(&c, "SELECT citus_remove_node('w1s', 5432)").await;
    // The emulated sync marked the workers synced again.
    for n in nodes(&c).await {
        assert_eq!(n.metadatasynced, Some(true), "{n:?}");
    }
    assert_eq!(node(&c, w3).await.nodename, "w3");
}

#[tokio::test]
async fn the_sync_delay_is_configurable_and_can_be_waited_for() {
    let (_pg, c) = citus().await;
    let ids = seed(&c).await;

    exec(
        &c,
        "UPDATE citus_emulation.config SET metadata_sync_delay_ms = 0",
    )
    .await;
    exec(
        &c,
        &format!(
            "BEGIN; SELECT citus_update_node({}, 'w1-new', 5432)",
            ids.w1
        ),
    )
    .await;
    // Still refused inside the transaction ...
    expect_error(
        &c,
        "SELECT citus_add_node('w3', 5432)",
        SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
        &out_of_sync("w1-new:5432"),
    )
    .await;
    exec(&c, "ROLLBACK").await;
    exec(
        &c,
        &format!(
            "BEGIN; SELECT citus_update_node({}, 'w1-new', 5432); COMMIT",
            ids.w1
        ),
    )
    .await;
    // ... but accepted right after the commit.
    exec(&c, "SELECT citus_add_node('w3', 5432)").await;

    // wait_until_metadata_sync() waits out the delay and marks the workers synced.
    exec(
        &c,
        "UPDATE citus_emulation.config SET metadata_sync_delay_ms = 300",
    )
    .await;
    exec(
        &c,
        &format!(
            "BEGIN; SELECT citus_update_node({}, 'w2-new', 5432); COMMIT",
            ids.w2
        ),
    )
    .await;
    assert!(scalar_bool(&c, "SELECT citus_emulation.metadata_sync_pending()").await);
    exec(&c, "SELECT citus_emulation.wait_until_metadata_sync()").await;
    assert!(!scalar_bool(&c, "SELECT citus_emulation.metadata_sync_pending()").await);
    // Every node with metadata is synced (the secondary has none).
    assert!(nodes(&c)
        .await
        .iter()
        .all(|n| n.metadatasynced == Some(n.hasmetadata)));
    exec(&c, "SELECT citus_remove_node('w3', 5432)").await;
}

// ---------------------------------------------------------------------------------------------
// citus_remove_node

#[tokio::test]
async fn remove_node_of_a_missing_and_of_a_known_address() {
    let (_pg, c) = citus().await;
    let ids = seed(&c).await;
    expect_error(
        &c,
        "SELECT citus_remove_node('nope', 5432)",
        SqlState::INTERNAL_ERROR,
        r#"node at "nope:5432" does not exist"#,
    )
    .await;
    expect_error(
        &c,
        "SELECT citus_remove_node('w1', 5433)",
        SqlState::INTERNAL_ERROR,
        r#"node at "w1:5433" does not exist"#,
    )
    .await;
    exec(&c, "SELECT citus_remove_node('w1s', 5432)").await;
    exec(&c, "SELECT citus_remove_node('w2', 5432)").await;
    let ids_left: Vec<i32> = nodes(&c).await.iter().map(|n| n.nodeid).collect();
    assert_eq!(ids_left, [ids.coord, ids.w1]);
    // The address can be added again (with a new id).
    let again = scalar_i32(&c, "SELECT citus_add_node('w2', 5432)").await;
    assert!(again > ids.w1s);
}

// ---------------------------------------------------------------------------------------------
// The write pause

#[tokio::test]
async fn updating_a_primary_blocks_writes_to_its_group_but_not_reads() {
    let (pg, a) = citus().await;
    let ids = seed(&a).await;
    let b = pg.connect("citus").await.unwrap();
    exec(
        &b,
        "INSERT INTO citus_emulation.shard_1 VALUES (1, 'before')",
    )
    .await;

    exec(
        &a,
        &format!(
            "BEGIN; SELECT citus_update_node({}, 'w1-new', 5432)",
            ids.w1
        ),
    )
    .await;

    exec(&b, "SET lock_timeout = '200ms'").await;
    for write in [
        "INSERT INTO citus_emulation.shard_1 VALUES (2, 'during')",
        "UPDATE citus_emulation.shard_1 SET value = 'x'",
        "DELETE FROM citus_emulation.shard_1",
    ] {
        expect_error(
            &b,
            write,
            SqlState::LOCK_NOT_AVAILABLE,
            "canceling statement due to lock timeout",
        )
        .await;
    }
    // Reads are not blocked, and see the committed state.
    assert_eq!(
        scalar_i64(&b, "SELECT count(*) FROM citus_emulation.shard_1").await,
        1
    );
    assert_eq!(node(&b, ids.w1).await.nodename, "w1");
    // Other groups are not paused.
    exec(
        &b,
        "INSERT INTO citus_emulation.shard_2 VALUES (1, 'other group')",
    )
    .await;
    exec(
        &b,
        "INSERT INTO citus_emulation.shard_0 VALUES (1, 'coordinator')",
    )
    .await;

    // A writer without a timeout waits (it is not killed) and resumes after COMMIT.
    let w = pg.connect("citus").await.unwrap();
    let writer = tokio::spawn(async move {
        w.batch_execute("INSERT INTO citus_emulation.shard_1 VALUES (3, 'after')")
            .await
            .map(|()| w)
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!writer.is_finished(), "the write should be blocked");
    exec(&a, "COMMIT").await;
    let w = tokio::time::timeout(Duration::from_secs(10), writer)
        .await
        .expect("the write resumes after COMMIT")
        .unwrap()
        .expect("the write succeeds");
    assert_eq!(
        scalar_i64(&w, "SELECT count(*) FROM citus_emulation.shard_1").await,
        2
    );
    assert_eq!(node(&w, ids.w1).await.nodename, "w1-new");
}

#[tokio::test]
async fn updating_a_secondary_does_not_pause_writes() {
    let (pg, a) = citus().await;
    let ids = seed(&a).await;
    let b = pg.connect("citus").await.unwrap();
    exec(
        &a,
        &format!(
            "BEGIN; SELECT citus_update_node({}, 'w1s-new', 5432)",
            ids.w1s
        ),
    )
    .await;
    exec(&b, "SET lock_timeout = '200ms'").await;
    exec(&b, "INSERT INTO citus_emulation.shard_1 VALUES (1, 'x')").await;
    exec(&a, "COMMIT").await;
    assert_eq!(node(&a, ids.w1s).await.nodename, "w1s-new");
}

#[tokio::test]
async fn update_waits_for_running_writers_and_force_does_not_terminate_them() {
    let (pg, a) = citus().await;
    let ids = seed(&a).await;

    // A writer in the middle of a transaction on group 1.
    let w = pg.connect("citus").await.unwrap();
    exec(
        &w,
        "BEGIN; INSERT INTO citus_emulation.shard_1 VALUES (1, 'in flight')",
    )
    .await;

    let w1 = ids.w1;
    let updater = tokio::spawn(async move {
        a.batch_execute(&format!(
            "BEGIN; SELECT citus_update_node({w1}, 'w1-new', 5432, force => true, lock_cooldown => 100)"
        ))
        .await
        .map(|()| a)
    });
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!updater.is_finished(), "the update waits for the writer");
    // Well past lock_cooldown the writer's session is still alive and usable.
    assert_eq!(scalar_i32(&w, "SELECT 1").await, 1);
    exec(&w, "COMMIT").await;

    let a = tokio::time::timeout(Duration::from_secs(10), updater)
        .await
        .expect("the update proceeds once the writer committed")
        .unwrap()
        .expect("the update succeeds");
    exec(&a, "COMMIT").await;
    assert_eq!(node(&a, ids.w1).await.nodename, "w1-new");
    assert_eq!(
        scalar_i64(&w, "SELECT count(*) FROM citus_emulation.shard_1").await,
        1
    );
}

#[tokio::test]
async fn a_prepared_transaction_keeps_the_pause_after_its_session_is_gone() {
    let (pg, a) = citus().await;
    let ids = seed(&a).await;
    exec(
        &a,
        &format!(
            "BEGIN; SELECT citus_update_node({}, 'w1-new', 5432); PREPARE TRANSACTION 'switch'",
            ids.w1
        ),
    )
    .await;
    drop(a);

    let b = pg.connect("citus").await.unwrap();
    exec(&b, "SET lock_timeout = '200ms'").await;
    expect_error(
        &b,
        "INSERT INTO citus_emulation.shard_1 VALUES (1, 'x')",
        SqlState::LOCK_NOT_AVAILABLE,
        "canceling statement due to lock timeout",
    )
    .await;
    assert_eq!(node(&b, ids.w1).await.nodename, "w1");

    exec(&b, "COMMIT PREPARED 'switch'").await;
    exec(&b, "INSERT INTO citus_emulation.shard_1 VALUES (1, 'x')").await;
    assert_eq!(node(&b, ids.w1).await.nodename, "w1-new");
}

#[tokio::test]
async fn pause_node_within_txn_pauses_writes_until_the_transaction_ends() {
    let (pg, a) = citus().await;
    let ids = seed(&a).await;
    let b = pg.connect("citus").await.unwrap();
    exec(&b, "SET lock_timeout = '200ms'").await;

    expect_error(
        &a,
        "SELECT citus_pause_node_within_txn(999)",
        SqlState::NO_DATA_FOUND,
        "node 999 not found",
    )
    .await;
    exec(
        &a,
        &format!("BEGIN; SELECT citus_pause_node_within_txn({})", ids.w2),
    )
    .await;
    expect_error(
        &b,
        "INSERT INTO citus_emulation.shard_2 VALUES (1, 'x')",
        SqlState::LOCK_NOT_AVAILABLE,
        "canceling statement due to lock timeout",
    )
    .await;
    exec(&b, "INSERT INTO citus_emulation.shard_1 VALUES (1, 'x')").await;
    assert_eq!(
        scalar_i64(&b, "SELECT count(*) FROM citus_emulation.shard_2").await,
        0
    );
    exec(&a, "ROLLBACK").await;
    exec(&b, "INSERT INTO citus_emulation.shard_2 VALUES (1, 'x')").await;
}
