//! Helpers shared by the integration tests of the harness.
#![allow(dead_code)]

use citus_ha_pg_harness::PgServer;
use tokio_postgres::error::{DbError, SqlState};
use tokio_postgres::Client;

/// A fresh server with database `citus` holding the emulation, and a client connected to it.
pub async fn citus() -> (PgServer, Client) {
    let pg = PgServer::start().expect("start PostgreSQL");
    pg.create_citus_database("citus")
        .await
        .expect("create the citus database");
    let client = pg.connect("citus").await.expect("connect");
    (pg, client)
}

/// Node ids of the standard test cluster.
#[derive(Debug, Clone, Copy)]
pub struct Cluster {
    /// group 0, coord:5432
    pub coord: i32,
    /// group 1 primary, w1:5432
    pub w1: i32,
    /// group 2 primary, w2:5432
    pub w2: i32,
    /// group 1 secondary, w1s:5432
    pub w1s: i32,
}

/// Registers a coordinator, two worker groups and a secondary of group 1.
pub async fn seed(c: &Client) -> Cluster {
    c.batch_execute("SELECT citus_set_coordinator_host('coord', 5432)")
        .await
        .expect("set coordinator");
    let coord = scalar_i32(c, "SELECT nodeid FROM pg_dist_node WHERE groupid = 0").await;
    let w1 = scalar_i32(c, "SELECT citus_add_node('w1', 5432)").await;
    let w2 = scalar_i32(c, "SELECT citus_add_node('w2', 5432)").await;
    let w1s = scalar_i32(c, "SELECT citus_add_node('w1s', 5432, 1, 'secondary')").await;
    Cluster { coord, w1, w2, w1s }
}

pub async fn scalar_i32(c: &Client, sql: &str) -> i32 {
    c.query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", citus_ha_pg_harness::pg_error_text(&e)))
        .get(0)
}

pub async fn scalar_i64(c: &Client, sql: &str) -> i64 {
    c.query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", citus_ha_pg_harness::pg_error_text(&e)))
        .get(0)
}

pub async fn scalar_bool(c: &Client, sql: &str) -> bool {
    c.query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", citus_ha_pg_harness::pg_error_text(&e)))
        .get(0)
}

pub async fn scalar_text(c: &Client, sql: &str) -> String {
    c.query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", citus_ha_pg_harness::pg_error_text(&e)))
        .get(0)
}

/// Runs `sql`, which must succeed.
pub async fn exec(c: &Client, sql: &str) {
    c.batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", citus_ha_pg_harness::pg_error_text(&e)));
}

/// Runs `sql`, which must fail with a server error; returns it.
pub async fn db_error(c: &Client, sql: &str) -> DbError {
    match c.batch_execute(sql).await {
        Ok(()) => panic!("{sql}: succeeded, expected an error"),
        Err(e) => e
            .as_db_error()
            .unwrap_or_else(|| panic!("{sql}: not a server error: {e:?}"))
            .clone(),
    }
}

/// Runs `sql`, which must fail with `code` and exactly `message`.
pub async fn expect_error(c: &Client, sql: &str, code: SqlState, message: &str) -> DbError {
    let err = db_error(c, sql).await;
    assert_eq!(err.message(), message, "{sql}");
    assert_eq!(err.code(), &code, "{sql}: {err}");
    err
}

/// One pg_dist_node row, the columns the tests look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub nodeid: i32,
    pub groupid: i32,
    pub nodename: String,
    pub nodeport: i32,
    pub noderole: String,
    pub hasmetadata: bool,
    pub isactive: bool,
    pub metadatasynced: Option<bool>,
    pub shouldhaveshards: bool,
}

pub async fn nodes(c: &Client) -> Vec<Node> {
    c.query(
        "SELECT nodeid, groupid, nodename, nodeport, noderole::text, hasmetadata, isactive,
                metadatasynced, shouldhaveshards
           FROM pg_dist_node ORDER BY nodeid",
        &[],
    )
    .await
    .expect("read pg_dist_node")
    .iter()
    .map(|r| Node {
        nodeid: r.get(0),
        groupid: r.get(1),
        nodename: r.get(2),
        nodeport: r.get(3),
        noderole: r.get(4),
        hasmetadata: r.get(5),
        isactive: r.get(6),
        metadatasynced: r.get(7),
        shouldhaveshards: r.get(8),
    })
    .collect()
}

pub async fn node(c: &Client, nodeid: i32) -> Node {
    nodes(c)
        .await
        .into_iter()
        .find(|n| n.nodeid == nodeid)
        .unwrap_or_else(|| panic!("node {nodeid} not in pg_dist_node"))
}

/// Every column of every row, as text, for before/after comparisons.
pub async fn dump(c: &Client) -> Vec<String> {
    c.query(
        "SELECT row_to_json(n)::text FROM pg_dist_node n ORDER BY nodeid",
        &[],
    )
    .await
    .expect("dump pg_dist_node")
    .iter()
    .map(|r| r.get(0))
    .collect()
}
