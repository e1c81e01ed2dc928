//! The inputs every benchmark shares, shaped like the reference's (bench/reference): a
//! coordinator `coord-0` at 10.0.0.1 with two replicas, and worker groups 1..N, each a primary
//! (10.x.y.1) and two running replicas (10.x.y.2, 10.x.y.3).

use crate::policy::{Handler, PolicyResult};
use crate::session::sim::SimSession;
use citus_ha_policy::dcs::{ClusterView, GroupView, Member};
use citus_ha_policy::slots::ReplicationSlot;
use citus_ha_policy::CitusConfig;
use citus_sim::{Row, Simulator};

pub const NAME: &str = "coord-0";
pub const CONNECT_URL: &str = "postgres://10.0.0.1:5432/postgres";
pub const CONFIG_JSON: &str = r#"{"database": "citus", "group": 0}"#;

pub fn config() -> CitusConfig {
    CitusConfig {
        group: 0,
        database: "citus".into(),
    }
}

/// 10.0.g.m for g < 256, 10.<g/256>.<g%256>.m beyond (valid IPv4 literals), as the reference.
pub fn host_of(g: i32, m: i32) -> String {
    format!("10.{}.{}.{}", g >> 8, g & 255, m)
}

pub fn member(name: String, host: &str, role: &str) -> Member {
    Member {
        name,
        conn_url: Some(format!("postgres://{host}:5432/postgres")),
        conn_kwargs: None,
        role: Some(role.into()),
        state: Some("running".into()),
        noloadbalance: false,
    }
}

pub fn coordinator_group() -> GroupView {
    GroupView {
        leader: Some(NAME.into()),
        members: vec![
            member(NAME.into(), "10.0.0.1", "primary"),
            member("coord-1".into(), "10.0.0.2", "replica"),
            member("coord-2".into(), "10.0.0.3", "replica"),
        ],
    }
}

pub fn worker_group(g: i32) -> GroupView {
    GroupView {
        leader: Some(format!("g{g}-m1")),
        members: (1..=3)
            .map(|m| {
                let role = if m == 1 { "primary" } else { "replica" };
                member(format!("g{g}-m{m}"), &host_of(g, m), role)
            })
            .collect(),
    }
}

/// The DCS view of the coordinator group and `n` worker groups.
pub fn view(n: i32) -> ClusterView {
    ClusterView {
        coordinator: coordinator_group(),
        workers: (1..=n).map(|g| (g, worker_group(g))).collect(),
    }
}

/// The coordinator group's rows as a finished heartbeat leaves them.
pub fn coordinator_rows() -> Vec<Row> {
    (1..=3)
        .map(|m| Row {
            nodeid: m,
            groupid: 0,
            nodename: host_of(0, m),
            nodeport: 5432,
            noderole: if m == 1 {
                citus_sim::NodeRole::Primary
            } else {
                citus_sim::NodeRole::Secondary
            },
        })
        .collect()
}

pub fn sim_with(rows: Vec<Row>) -> SimSession {
    let mut sim = Simulator::new();
    sim.replace_rows(rows);
    SimSession::new(sim)
}

/// One turn of the metadata loop against the simulator (the loop `Agent::run_turn` runs, without
/// its state snapshot); returns how many statements ran.
pub fn turn(p: &mut dyn Handler, session: &mut SimSession, now: u64) -> PolicyResult<usize> {
    let mut n = 0;
    loop {
        let batch = p.poll_statements(now)?;
        if batch.is_empty() {
            return Ok(n);
        }
        let mut results = Vec::with_capacity(batch.len());
        for stmt in &batch {
            let result = session.run(stmt);
            let ends = result.ends_batch();
            results.push(result);
            n += 1;
            if ends {
                break;
            }
        }
        p.handle_results(now, results)?;
    }
}

/// Makes a handler's cache hold just the coordinator group: forget everything (demote) and
/// reload from a table that has only the coordinator's rows.
pub fn reset_to_coordinator(p: &mut dyn Handler, coord_only: &mut SimSession) -> PolicyResult<()> {
    // A heartbeat first, so that a fresh handler is ready to act.
    p.handle_heartbeat(0, &view(0))?;
    p.handle_demote()?;
    let n = turn(p, coord_only, 0)?;
    assert_eq!(n, 1, "a reset is one load");
    Ok(())
}

/// PostgreSQL parameters as in the reference's `TYPICAL_PARAMS`.
pub fn typical_params() -> Vec<(String, String)> {
    [
        ("max_connections", "200"),
        ("max_prepared_transactions", "0"),
        ("max_wal_senders", "10"),
        ("max_replication_slots", "10"),
        ("max_worker_processes", "8"),
        ("wal_level", "replica"),
        ("hot_standby", "on"),
        ("wal_log_hints", "on"),
        ("track_commit_timestamp", "off"),
        ("shared_buffers", "4GB"),
        ("work_mem", "16MB"),
        ("maintenance_work_mem", "512MB"),
        ("listen_addresses", "0.0.0.0"),
        ("port", "5432"),
        ("cluster_name", "demo"),
        (
            "shared_preload_libraries",
            "pg_stat_statements, citus ,auto_explain",
        ),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

pub const SOCKET_DIR: &str = "/var/run/postgresql";

pub fn slot_match() -> ReplicationSlot {
    ReplicationSlot {
        name: "citus_shard_move_slot_1_2_3".into(),
        slot_type: "logical".into(),
        database: Some("citus".into()),
        plugin: Some("pgoutput".into()),
    }
}

pub fn slot_nomatch() -> ReplicationSlot {
    ReplicationSlot {
        name: "my_logical_slot".into(),
        slot_type: "logical".into(),
        database: Some("citus".into()),
        plugin: Some("pgoutput".into()),
    }
}

fn row(nodeid: i32, groupid: i32, host: String, role: citus_sim::NodeRole) -> Row {
    Row {
        nodeid,
        groupid,
        nodename: host,
        nodeport: 5432,
        noderole: role,
    }
}

/// A transition case: the rows holding the old group (plus the coordinator's), and the view
/// whose heartbeat asks for the new group.
pub struct TransitionCase {
    pub rows: Vec<Row>,
    pub view: ClusterView,
    /// Statements the turn must run (BEGIN ... COMMIT).
    pub statements: usize,
}

/// Patroni's test_switchover vector: 10.0.1.1 primary + 10.0.1.2 secondary become
/// 10.0.1.2 primary + 10.0.1.1 secondary.
pub fn switchover_1_secondary() -> TransitionCase {
    use citus_sim::NodeRole as R;
    let mut rows = coordinator_rows();
    rows.push(row(11, 1, "10.0.1.1".into(), R::Primary));
    rows.push(row(12, 1, "10.0.1.2".into(), R::Secondary));
    let group = GroupView {
        leader: Some("g1-m2".into()),
        members: vec![
            member("g1-m1".into(), "10.0.1.1", "replica"),
            member("g1-m2".into(), "10.0.1.2", "primary"),
        ],
    };
    TransitionCase {
        rows,
        view: ClusterView {
            coordinator: coordinator_group(),
            workers: vec![(1, group)],
        },
        // BEGIN, demote old primary, old primary's address into the secondary's row, new
        // primary into the primary row, COMMIT.
        statements: 5,
    }
}

/// One primary and 50 secondaries, of which 10 are replaced by 10 new hosts: every new
/// secondary takes a gone secondary's row.
pub fn replace_10_of_50_secondaries() -> TransitionCase {
    use citus_sim::NodeRole as R;
    let mut rows = coordinator_rows();
    rows.push(row(11, 1, "10.0.1.1".into(), R::Primary));
    for i in 0..50 {
        rows.push(row(12 + i, 1, format!("10.0.1.{}", i + 2), R::Secondary));
    }
    let mut members = vec![member("g1-p".into(), "10.0.1.1", "primary")];
    for i in 0..40 {
        members.push(member(
            format!("g1-s{i}"),
            &format!("10.0.1.{}", i + 2),
            "replica",
        ));
    }
    for i in 0..10 {
        members.push(member(
            format!("g1-n{i}"),
            &format!("10.0.2.{}", i + 1),
            "replica",
        ));
    }
    TransitionCase {
        rows,
        view: ClusterView {
            coordinator: coordinator_group(),
            workers: vec![(
                1,
                GroupView {
                    leader: Some("g1-p".into()),
                    members,
                },
            )],
        },
        // BEGIN, 10 updates, COMMIT.
        statements: 12,
    }
}
