//! The handler's decisions, the reference's tricky cases and the deliberate departures from
//! it (README, "Differences from Patroni", by number), each driven through the public
//! Handler API against the Citus simulator, as a host would.

use super::*;
use crate::dcs::ConnKwargs;
use crate::node::NodeRole;
use crate::sim_host::{Delivery, SimHost, StatementKind};
use citus_sim::{Row, SimOptions, Simulator};
use Statement::{Begin, Commit, LoadMetadata, Rollback};

const COORD_URL: &str = "postgres://10.0.0.1:5432/postgres";
const T0: u64 = 100_000;
const RELOAD_RETRY_MS: u64 = RELOAD_RETRY.as_millis();
const METADATA_SYNC_WAIT_MS: u64 = METADATA_SYNC_WAIT.as_millis();

// ----- the host: statements executed against the simulator --------------------------

/// The shared simulator host, plus the results of the last turn.
struct Host {
    base: SimHost,
    /// Results of the last turn, in order.
    results: Vec<StatementResult>,
}

impl std::ops::Deref for Host {
    type Target = SimHost;
    fn deref(&self) -> &SimHost {
        &self.base
    }
}

impl std::ops::DerefMut for Host {
    fn deref_mut(&mut self) -> &mut SimHost {
        &mut self.base
    }
}

fn role_of(s: &str) -> citus_sim::NodeRole {
    s.parse().expect("role label")
}

fn config(group: GroupId) -> CitusConfig {
    CitusConfig {
        group,
        database: "citus".into(),
    }
}

impl Host {
    /// One loop turn as the host runs it: batches, each stopped at its first failure; the
    /// statements run, by batch.
    fn batched_turn(&mut self) -> Vec<Vec<Statement>> {
        let mut batches: Vec<Vec<Statement>> = Vec::new();
        let mut results = Vec::new();
        let _ = self.base.turn(Delivery::Batches, |step| {
            if step.batch == batches.len() {
                assert!(batches.len() < 100, "the turn does not end: {batches:?}");
                batches.push(Vec::new());
            }
            batches[step.batch].push(step.statement.clone());
            results.push(step.result.clone());
            Ok::<(), ()>(())
        });
        self.results = results;
        assert!(!self.handler.is_busy());
        batches
    }

    fn new(opts: SimOptions, rows: &[(i32, GroupId, &str, &str)]) -> Self {
        let mut sim = Simulator::with_options(opts);
        sim.replace_rows(rows_of(rows));
        Host {
            base: SimHost::new(Handler::new(config(0), "coord1", COORD_URL), sim, T0),
            results: Vec::new(),
        }
    }

    fn with_rows(rows: &[(i32, GroupId, &str, &str)]) -> Self {
        Self::new(SimOptions::default(), rows)
    }

    /// One loop turn at `now`, one statement at a time: the statements sent, in order.
    fn turn(&mut self) -> Vec<Statement> {
        let mut sent = Vec::new();
        let mut results = Vec::new();
        let _ = self.base.turn(Delivery::OneByOne, |step| {
            assert!(sent.len() < 100, "the turn does not end: {sent:?}");
            sent.push(step.statement.clone());
            results.push(step.result.clone());
            Ok::<(), ()>(())
        });
        self.results = results;
        assert!(!self.handler.is_busy());
        sent
    }

    /// A turn whose statements must all succeed.
    fn clean_turn(&mut self) -> Vec<Statement> {
        let sent = self.turn();
        for (s, r) in sent.iter().zip(&self.results) {
            assert!(
                !matches!(r, StatementResult::Failed(_) | StatementResult::RolledBack),
                "{s:?} -> {r:?}"
            );
        }
        sent
    }

    fn heartbeat(&mut self, view: &ClusterView) {
        let now = self.now;
        self.handler.handle_heartbeat(now, view);
    }

    fn event(&mut self, view: &ClusterView, body: &str) -> EventOutcome {
        let now = self.now;
        self.handler
            .handle_event(now, view, body)
            .expect("a valid event")
    }

    fn queued(&mut self, view: &ClusterView, body: &str) -> Ticket {
        match self.event(view, body) {
            EventOutcome::Queued(t) => t,
            other => panic!("{body} was not queued: {other:?}"),
        }
    }

    fn demote(&mut self) {
        self.sim.lose_session();
        self.handler.handle_demote();
    }

    /// `leader` reports `after_promote` for group 1 in view `v`: the open transaction
    /// commits, and the next heartbeat removes the row the old primary was parked in
    /// (`parked`), leaving `primary` (nodeid 2) alone in the group.
    fn promote_and_settle(&mut self, v: &ClusterView, leader: &str, parked: &str, primary: &str) {
        self.event(v, &ev("after_promote", 1, leader));
        assert_eq!(self.clean_turn(), vec![Commit]);
        self.heartbeat(v);
        assert_eq!(self.clean_turn(), vec![rm(parked)]);
        assert_eq!(self.group_rows(1), vec![(2, primary.into(), "primary")]);
    }

    /// Committed pg_dist_node: (nodeid, group, name, role).
    fn rows(&self) -> Rows {
        self.sim
            .committed_rows()
            .iter()
            .map(|r| (r.nodeid, r.groupid, r.nodename.clone(), r.noderole.as_str()))
            .collect()
    }

    fn group_rows(&self, g: GroupId) -> Vec<(i32, String, &'static str)> {
        self.rows()
            .into_iter()
            .filter(|r| r.1 == g)
            .map(|(id, _, n, role)| (id, n, role))
            .collect()
    }

    fn warnings(&mut self) -> Vec<String> {
        self.handler
            .drain_logs()
            .into_iter()
            .filter(|l| l.level == Level::Warn)
            .map(|l| l.message)
            .collect()
    }
}

// ----- statements, members, views, events -------------------------------------------

fn upd(nodeid: i32, host: &str) -> Statement {
    upd_cd(nodeid, host, 10_000)
}
fn upd_cd(nodeid: i32, host: &str, cooldown_ms: i32) -> Statement {
    Statement::UpdateNode {
        nodeid,
        host: host.into(),
        port: 5432,
        force: true,
        cooldown_ms,
    }
}
fn add(host: &str, groupid: GroupId, role: NodeRole) -> Statement {
    Statement::AddNode {
        host: host.into(),
        port: 5432,
        groupid,
        role,
    }
}
fn add_s(host: &str, groupid: GroupId) -> Statement {
    add(host, groupid, NodeRole::Secondary)
}
fn add_p(host: &str, groupid: GroupId) -> Statement {
    add(host, groupid, NodeRole::Primary)
}
fn rm(host: &str) -> Statement {
    Statement::RemoveNode {
        host: host.into(),
        port: 5432,
    }
}

/// A running replica reachable at `host`.
fn m(name: &str, host: &str) -> Member {
    Member {
        name: name.into(),
        conn_url: Some(format!("postgres://{host}:5432/postgres")),
        conn_kwargs: None,
        role: Some("replica".into()),
        state: Some("running".into()),
        noloadbalance: false,
    }
}
fn primary(mut m: Member) -> Member {
    m.role = Some("primary".into());
    m
}
fn stopped(mut m: Member) -> Member {
    m.state = Some("stopped".into());
    m
}
fn nolb(mut m: Member) -> Member {
    m.noloadbalance = true;
    m
}
fn grp(leader: Option<&str>, members: Vec<Member>) -> GroupView {
    GroupView {
        leader: leader.map(str::to_string),
        members,
    }
}
fn coord_group(standbys: Vec<Member>) -> GroupView {
    let mut members = vec![primary(m("coord1", "10.0.0.1"))];
    members.extend(standbys);
    grp(Some("coord1"), members)
}
fn view(workers: Vec<(GroupId, GroupView)>) -> ClusterView {
    ClusterView {
        coordinator: coord_group(vec![]),
        workers,
    }
}
fn g2() -> (GroupId, GroupView) {
    (2, grp(Some("w2a"), vec![primary(m("w2a", "10.0.2.1"))]))
}
/// Group 1 with leader w1a and replica w1b; group 2 with leader w2a.
fn base() -> ClusterView {
    view(vec![
        (
            1,
            grp(
                Some("w1a"),
                vec![primary(m("w1a", "10.0.1.1")), m("w1b", "10.0.1.2")],
            ),
        ),
        g2(),
    ])
}
/// Group 1 as given, group 2 as in `base`.
fn with_g1(leader: Option<&str>, members: Vec<Member>) -> ClusterView {
    view(vec![(1, grp(leader, members)), g2()])
}

const BASE_ROWS: &[(i32, GroupId, &str, &str)] = &[
    (1, 0, "10.0.0.1", "primary"),
    (2, 1, "10.0.1.1", "primary"),
    (3, 1, "10.0.1.2", "secondary"),
    (4, 2, "10.0.2.1", "primary"),
];

/// pg_dist_node matching `base()`, loaded by the first heartbeat's turn.
fn settled() -> Host {
    let mut h = Host::with_rows(BASE_ROWS);
    h.heartbeat(&base());
    assert_eq!(h.clean_turn(), vec![LoadMetadata]);
    h
}

fn ev(kind: &str, group: GroupId, leader: &str) -> String {
    format!(r#"{{"type":"{kind}","group":{group},"leader":"{leader}","timeout":30,"cooldown":10}}"#)
}

// ----- 4. the metadata cache --------------------------------------------------------

#[test]
fn cache_is_loaded_at_start_before_anything_else() {
    let mut h = Host::with_rows(BASE_ROWS);
    // Before the first heartbeat the loop has nothing to do, not even the load.
    assert_eq!(h.turn(), vec![]);
    h.heartbeat(&base());
    // The heartbeat's tasks were queued because a load was due; they match the loaded
    // rows, so the load is all that happens.
    assert_eq!(h.handler.queued_tasks(), 3);
    assert_eq!(h.clean_turn(), vec![LoadMetadata]);
    assert_eq!(h.handler.queued_tasks(), 0);
    let cached: Vec<(GroupId, Option<i32>, String)> = h
        .handler
        .cached_rows()
        .into_iter()
        .map(|(g, n)| (g, n.nodeid, n.addr.host))
        .collect();
    assert_eq!(
        cached,
        vec![
            (0, Some(1), "10.0.0.1".into()),
            (1, Some(2), "10.0.1.1".into()),
            (1, Some(3), "10.0.1.2".into()),
            (2, Some(4), "10.0.2.1".into()),
        ]
    );
    h.heartbeat(&base());
    assert_eq!(h.handler.queued_tasks(), 0);
    assert_eq!(h.turn(), vec![]);
}

#[test]
fn cache_is_reloaded_after_a_failed_statement_and_the_heartbeat_retries() {
    let mut h = settled();
    let replaced = with_g1(
        Some("w1a"),
        vec![primary(m("w1a", "10.0.1.1")), m("w1c", "10.0.1.3")],
    );
    h.heartbeat(&replaced);
    h.arm(StatementKind::Update);
    // The task is dropped and the loop goes on with a reload.
    assert_eq!(h.turn(), vec![upd(3, "10.0.1.3"), LoadMetadata]);
    assert!(matches!(h.results[0], StatementResult::Failed(_)));
    assert!(matches!(h.results[1], StatementResult::Metadata(_)));
    assert_eq!(h.handler.metrics().failed_statements, 1);
    assert_eq!(h.handler.queued_tasks(), 0);
    assert_eq!(h.turn(), vec![]);
    // The next heartbeat retries it.
    h.heartbeat(&replaced);
    assert_eq!(h.clean_turn(), vec![upd(3, "10.0.1.3")]);
    assert_eq!(
        h.group_rows(1),
        vec![
            (2, "10.0.1.1".into(), "primary"),
            (3, "10.0.1.3".into(), "secondary")
        ]
    );
}

#[test]
fn cache_is_reloaded_on_request() {
    let mut h = settled();
    h.handler.schedule_reload();
    assert_eq!(h.clean_turn(), vec![LoadMetadata]);
    assert_eq!(h.turn(), vec![]);
    // An outside change is only seen after a reload.
    h.sim.replace_rows(vec![]);
    h.handler.schedule_reload();
    h.heartbeat(&base());
    assert_eq!(
        h.clean_turn(),
        vec![
            LoadMetadata,
            add_p("10.0.0.1", 0),
            Begin,
            add_p("10.0.1.1", 1),
            add_s("10.0.1.2", 1),
            Commit,
            add_p("10.0.2.1", 2),
        ]
    );
}

#[test]
fn failed_load_is_retried_after_a_pause() {
    let mut h = Host::with_rows(BASE_ROWS);
    h.heartbeat(&base());
    h.arm(StatementKind::Load);
    assert_eq!(h.turn(), vec![LoadMetadata]);
    assert_eq!(h.handler.poll_timeout(), Some(T0 + RELOAD_RETRY_MS));
    h.now += RELOAD_RETRY_MS - 1;
    assert_eq!(h.turn(), vec![]);
    h.now += 1;
    assert_eq!(h.clean_turn(), vec![LoadMetadata]);
    assert_eq!(h.handler.poll_timeout(), None);
}

#[test]
fn demote_then_promotion_reloads_before_acting() {
    // Departure 7: the reference empties its cache on demote without scheduling a
    // reload, so after a later promotion it acts on an empty view.
    let mut h = settled();
    h.event(&base(), &ev("before_demote", 1, "w1a"));
    assert_eq!(h.clean_turn(), vec![Begin, upd(2, "10.0.1.1-demoted")]);
    h.demote();
    assert!(h.handler.cached_rows().is_empty());
    // Meanwhile another coordinator handled a switchover of group 1.
    let switched = with_g1(
        Some("w1b"),
        vec![m("w1a", "10.0.1.1"), primary(m("w1b", "10.0.1.2"))],
    );
    h.sim.replace_rows(vec![
        Row {
            nodeid: 1,
            groupid: 0,
            nodename: "10.0.0.1".into(),
            nodeport: 5432,
            noderole: citus_sim::NodeRole::Primary,
        },
        Row {
            nodeid: 2,
            groupid: 1,
            nodename: "10.0.1.2".into(),
            nodeport: 5432,
            noderole: citus_sim::NodeRole::Primary,
        },
        Row {
            nodeid: 3,
            groupid: 1,
            nodename: "10.0.1.1".into(),
            nodeport: 5432,
            noderole: citus_sim::NodeRole::Secondary,
        },
        Row {
            nodeid: 4,
            groupid: 2,
            nodename: "10.0.2.1".into(),
            nodeport: 5432,
            noderole: citus_sim::NodeRole::Primary,
        },
    ]);
    // Promoted again: the first thing is a reload, after which nothing needs doing.
    h.heartbeat(&switched);
    assert_eq!(h.clean_turn(), vec![LoadMetadata]);
    h.heartbeat(&switched);
    assert_eq!(h.turn(), vec![]);
}

// ----- 5. the task queue ------------------------------------------------------------

#[test]
fn newer_task_replaces_the_queued_one_keeping_its_place() {
    let mut h = settled();
    let v1 = view(vec![
        (
            1,
            grp(
                Some("w1a"),
                vec![primary(m("w1a", "10.0.1.1")), m("w1c", "10.0.1.3")],
            ),
        ),
        (
            2,
            grp(
                Some("w2a"),
                vec![primary(m("w2a", "10.0.2.1")), m("w2b", "10.0.2.2")],
            ),
        ),
    ]);
    h.heartbeat(&v1);
    assert_eq!(
        h.handler.queue.groups_in_order().collect::<Vec<_>>(),
        vec![1, 2]
    );
    // Group 1 changes again: its task is replaced where it stands.
    let mut v2 = v1.clone();
    v2.workers[0].1.members[1] = m("w1d", "10.0.1.4");
    h.heartbeat(&v2);
    assert_eq!(
        h.handler.queue.groups_in_order().collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(h.handler.queued_tasks(), 2);
    assert_eq!(
        h.clean_turn(),
        vec![upd(3, "10.0.1.4"), add_s("10.0.2.2", 2)]
    );

    // An event task is replaced by a newer event; the replaced ticket is done at once.
    let t1 = h.queued(&v2, &ev("before_demote", 1, "w1a"));
    let t2 = h.queued(&v2, &ev("after_promote", 1, "w1a").replace("30", "31"));
    let _ = t2;
    assert_eq!(h.handler.poll_completed(), vec![t1]);
    assert_eq!(h.handler.queued_tasks(), 1);
}

#[test]
fn heartbeat_never_replaces_an_event_task() {
    let mut h = settled();
    let w1b_down = with_g1(
        Some("w1a"),
        vec![primary(m("w1a", "10.0.1.1")), stopped(m("w1b", "10.0.1.2"))],
    );
    let t = h.queued(&w1b_down, &ev("after_promote", 1, "w1a"));
    // The heartbeat still sees w1b running: its task would undo the event's.
    h.heartbeat(&base());
    assert_eq!(h.handler.queued_tasks(), 1);
    assert_eq!(h.clean_turn(), vec![rm("10.0.1.2")]);
    assert_eq!(h.handler.poll_completed(), vec![t]);
    // Once the event's task is done, heartbeats are queued again.
    h.heartbeat(&base());
    assert_eq!(h.clean_turn(), vec![add_s("10.0.1.2", 1)]);
}

#[test]
fn heartbeat_for_the_in_flight_group_is_refused_until_its_deadline() {
    let mut h = settled();
    h.event(&base(), &ev("before_demote", 1, "w1a"));
    assert_eq!(h.clean_turn(), vec![Begin, upd(2, "10.0.1.1-demoted")]);
    let deadline = h.handler.in_flight_deadline().unwrap();
    assert_eq!(deadline, T0 + 30_000);
    // The DCS may not show the new roles yet: whatever it says, group 1 waits.
    let changed = with_g1(
        Some("w1a"),
        vec![
            primary(m("w1a", "10.0.1.1")),
            m("w1b", "10.0.1.2"),
            m("w1c", "10.0.1.3"),
        ],
    );
    for v in [base(), changed.clone()] {
        h.heartbeat(&v);
        assert_eq!(h.handler.queued_tasks(), 0);
    }
    h.now = deadline - 1;
    h.heartbeat(&changed);
    assert_eq!(h.handler.queued_tasks(), 0);
    h.now = deadline;
    h.heartbeat(&changed);
    assert_eq!(h.handler.queued_tasks(), 1);
    assert_eq!(h.clean_turn(), vec![Rollback, add_s("10.0.1.3", 1)]);
}

#[test]
fn task_equal_to_the_cache_is_not_queued() {
    let mut h = settled();
    h.heartbeat(&base());
    assert_eq!(h.handler.queued_tasks(), 0);
    assert_eq!(
        h.event(&base(), &ev("after_promote", 1, "w1a")),
        EventOutcome::Unchanged
    );
    assert_eq!(h.handler.queued_tasks(), 0);
    assert_eq!(h.turn(), vec![]);
}

#[test]
fn task_equal_to_the_cache_is_dropped_when_picked() {
    let mut h = settled();
    h.handler.schedule_reload();
    // While a load is due every task is queued, even one that will turn out equal.
    let t = h.queued(&base(), &ev("after_promote", 1, "w1a"));
    assert_eq!(h.clean_turn(), vec![LoadMetadata]);
    assert_eq!(h.handler.queued_tasks(), 0);
    assert_eq!(h.handler.poll_completed(), vec![t]);
}

#[test]
fn picking_order_is_in_flight_group_then_coordinator_then_oldest() {
    let mut h = settled();
    h.event(&base(), &ev("before_demote", 2, "w2a"));
    assert_eq!(h.clean_turn(), vec![Begin, upd(4, "10.0.2.1-demoted")]);
    // Queued in this order: group 1, the coordinator group, group 2.
    let mut v = with_g1(
        Some("w1a"),
        vec![
            primary(m("w1a", "10.0.1.1")),
            m("w1b", "10.0.1.2"),
            m("w1c", "10.0.1.3"),
        ],
    );
    h.heartbeat(&v);
    v.coordinator = coord_group(vec![m("coord2", "10.0.0.2")]);
    h.heartbeat(&v);
    h.event(&v, &ev("after_promote", 2, "w2a"));
    assert_eq!(
        h.handler.queue.groups_in_order().collect::<Vec<_>>(),
        vec![1, 0, 2]
    );
    assert_eq!(
        h.clean_turn(),
        vec![
            upd(4, "10.0.2.1"),
            Commit,
            add_s("10.0.0.2", 0),
            add_s("10.0.1.3", 1),
        ]
    );
}

// ----- 7. transactions --------------------------------------------------------------

#[test]
fn before_demote_opens_a_transaction_with_its_deadline() {
    let mut h = settled();
    h.event(&base(), &ev("before_demote", 1, "w1a"));
    assert_eq!(h.clean_turn(), vec![Begin, upd(2, "10.0.1.1-demoted")]);
    assert!(h.sim.in_transaction());
    assert_eq!(h.handler.in_flight_group(), Some(1));
    assert_eq!(h.handler.in_flight_deadline(), Some(T0 + 30_000));
    assert_eq!(h.handler.poll_timeout(), Some(T0 + 30_000));
    // Other sessions still see the committed rows; ours sees the pause.
    assert_eq!(h.rows()[1].2, "10.0.1.1");
    assert_eq!(h.sim.rows()[1].nodename, "10.0.1.1-demoted");
}

#[test]
fn before_promote_opens_a_transaction_when_none_is_open() {
    // A failover announced by the new primary only (no before_demote).
    let mut h = settled();
    let promoting = with_g1(
        Some("w1b"),
        vec![stopped(m("w1a", "10.0.1.1")), m("w1b", "10.0.1.2")],
    );
    h.event(&promoting, &ev("before_promote", 1, "w1b"));
    assert_eq!(
        h.clean_turn(),
        vec![
            Begin,
            upd(2, "10.0.1.1-demoted"),
            upd(3, "10.0.1.1"),
            upd(2, "10.0.1.2"),
        ]
    );
    assert_eq!(h.handler.in_flight_deadline(), Some(T0 + 30_000));
    let promoted = with_g1(
        Some("w1b"),
        vec![stopped(m("w1a", "10.0.1.1")), primary(m("w1b", "10.0.1.2"))],
    );
    // The gone old primary is parked in a row that add/remove may only touch later.
    h.promote_and_settle(&promoted, "w1b", "10.0.1.1", "10.0.1.2");
}

#[test]
fn after_promote_commits_the_transaction() {
    // The primary only restarted: before_demote, then after_promote from the same node.
    let mut h = settled();
    h.event(&base(), &ev("before_demote", 1, "w1a"));
    assert_eq!(h.clean_turn(), vec![Begin, upd(2, "10.0.1.1-demoted")]);
    h.event(&base(), &ev("after_promote", 1, "w1a"));
    assert_eq!(h.clean_turn(), vec![upd(2, "10.0.1.1"), Commit]);
    assert!(!h.sim.in_transaction());
    assert_eq!(h.handler.in_flight_group(), None);
    assert_eq!(h.handler.poll_timeout(), None);
    // An after_promote with nothing left to change sends only COMMIT.
    let promoting = with_g1(
        Some("w1b"),
        vec![stopped(m("w1a", "10.0.1.1")), m("w1b", "10.0.1.2")],
    );
    h.event(&promoting, &ev("before_promote", 1, "w1b"));
    assert_eq!(h.clean_turn().len(), 4);
    let promoted = with_g1(
        Some("w1b"),
        vec![m("w1a", "10.0.1.1"), primary(m("w1b", "10.0.1.2"))],
    );
    h.event(&promoted, &ev("after_promote", 1, "w1b"));
    assert_eq!(h.clean_turn(), vec![Commit]);
    assert_eq!(
        h.group_rows(1),
        vec![
            (2, "10.0.1.2".into(), "primary"),
            (3, "10.0.1.1".into(), "secondary")
        ]
    );
}

#[test]
fn deadline_rolls_back_even_when_no_other_task_waits() {
    // Departure 2: the reference rolls back only when another task waits, so a
    // vanished leader keeps the group's writes paused.
    let mut h = settled();
    h.event(
        &base(),
        r#"{"type":"before_demote","group":1,"leader":"w1a","timeout":5,"cooldown":10}"#,
    );
    assert_eq!(h.clean_turn(), vec![Begin, upd(2, "10.0.1.1-demoted")]);
    h.heartbeat(&with_g1(None, vec![stopped(m("w1a", "10.0.1.1"))]));
    h.now = T0 + 4_999;
    assert_eq!(h.turn(), vec![]);
    assert!(h.sim.in_transaction());
    h.now = T0 + 5_000;
    assert_eq!(h.clean_turn(), vec![Rollback]);
    assert!(!h.sim.in_transaction());
    assert_eq!(h.handler.metrics().deadline_rollbacks, 1);
    assert!(h
        .warnings()
        .iter()
        .any(|w| w.contains("group 1") && w.contains("deadline")));
    assert_eq!(h.rows(), Host::with_rows(BASE_ROWS).rows());
    assert_eq!(h.handler.poll_timeout(), None);
}

#[test]
fn deadline_rolls_back_while_other_tasks_wait() {
    let mut h = settled();
    h.event(&base(), &ev("before_demote", 1, "w1a"));
    assert_eq!(h.clean_turn(), vec![Begin, upd(2, "10.0.1.1-demoted")]);
    let g2_standby = view(vec![
        base().workers[0].clone(),
        (
            2,
            grp(
                Some("w2a"),
                vec![primary(m("w2a", "10.0.2.1")), m("w2b", "10.0.2.2")],
            ),
        ),
    ]);
    h.heartbeat(&g2_standby);
    // Other groups wait while a transaction is in flight ...
    assert_eq!(h.turn(), vec![]);
    // ... until its deadline.
    h.now = T0 + 30_000;
    assert_eq!(h.clean_turn(), vec![Rollback, add_s("10.0.2.2", 2)]);
    assert_eq!(h.handler.metrics().deadline_rollbacks, 1);
}

fn ev_waiting(kind: &str, group: GroupId, leader: &str, timeout_s: u32) -> String {
    format!(
        r#"{{"type":"{kind}","group":{group},"leader":"{leader}","timeout":{timeout_s},"cooldown":10}}"#
    )
}

#[test]
fn a_pause_whose_caller_stopped_waiting_before_it_could_start_is_dropped() {
    // Departure 9: the reference starts it anyway, pausing the group
    // for a caller who already went on with its switchover.
    let mut h = settled();
    h.event(&base(), &ev("before_demote", 1, "w1a"));
    assert_eq!(h.clean_turn(), vec![Begin, upd(2, "10.0.1.1-demoted")]);
    // Group 2's worker asks too, waiting 5 s, while group 1 holds its pause.
    h.now = T0 + 1_000;
    let t = h.queued(&base(), &ev_waiting("before_demote", 2, "w2a", 5));
    assert_eq!(h.turn(), vec![]);
    // Group 1's pause ends at T0 + 30 s, long after group 2's caller gave up.
    h.now = T0 + 30_000;
    assert_eq!(h.clean_turn(), vec![Rollback]);
    assert_eq!(h.handler.metrics().expired_events, 1);
    assert!(h.handler.poll_completed().contains(&t));
    assert!(h
        .warnings()
        .iter()
        .any(|w| w.contains("group 2") && w.contains("stopped waiting")));
    assert!(!h.sim.in_transaction());
    assert_eq!(h.handler.poll_timeout(), None, "nothing left to do");
}

#[test]
fn a_pause_that_starts_late_ends_when_its_caller_stops_waiting() {
    let mut h = settled();
    h.event(&base(), &ev("before_demote", 1, "w1a"));
    assert_eq!(h.clean_turn(), vec![Begin, upd(2, "10.0.1.1-demoted")]);
    h.now = T0 + 10_000;
    h.queued(&base(), &ev_waiting("before_demote", 2, "w2a", 30));
    h.now = T0 + 30_000;
    assert_eq!(
        h.clean_turn(),
        vec![Rollback, Begin, upd(4, "10.0.2.1-demoted")]
    );
    // Its caller waits until T0 + 40 s; a pause to T0 + 60 s would hold every other
    // group back for nobody.
    assert_eq!(h.handler.in_flight_deadline(), Some(T0 + 40_000));
    assert_eq!(h.handler.metrics().expired_events, 0);
}

#[test]
fn a_late_promotion_still_applies() {
    // Only pauses expire: a worker that promoted needs its row whenever it is reached.
    let mut h = settled();
    h.event(&base(), &ev("before_demote", 2, "w2a"));
    assert_eq!(h.clean_turn(), vec![Begin, upd(4, "10.0.2.1-demoted")]);
    let promoted = with_g1(
        Some("w1b"),
        vec![m("w1a", "10.0.1.1"), primary(m("w1b", "10.0.1.2"))],
    );
    h.queued(&promoted, &ev_waiting("after_promote", 1, "w1b", 1));
    h.now = T0 + 30_000;
    let sent = h.clean_turn();
    assert_eq!(sent[0], Rollback);
    assert!(
        sent.iter()
            .any(|s| matches!(s, Statement::UpdateNode { host, .. } if host == "10.0.1.2")),
        "{sent:?}"
    );
    assert_eq!(h.handler.metrics().expired_events, 0);
}

#[test]
fn reload_request_rolls_back_the_transaction() {
    let mut h = settled();
    h.event(&base(), &ev("before_demote", 1, "w1a"));
    assert_eq!(h.clean_turn(), vec![Begin, upd(2, "10.0.1.1-demoted")]);
    h.handler.schedule_reload();
    assert_eq!(h.clean_turn(), vec![Rollback, LoadMetadata]);
    assert_eq!(h.handler.metrics().deadline_rollbacks, 0);
    assert_eq!(h.handler.in_flight_group(), None);
    assert!(!h.sim.in_transaction());
}

#[test]
fn failed_statement_ends_the_transaction_reloads_and_the_heartbeat_retries() {
    let mut h = settled();
    let t = h.queued(&base(), &ev("before_demote", 1, "w1a"));
    h.arm(StatementKind::Update);
    // The transaction is gone; the loop goes on with a reload.
    assert_eq!(
        h.turn(),
        vec![Begin, upd(2, "10.0.1.1-demoted"), LoadMetadata]
    );
    assert_eq!(h.handler.in_flight_group(), None);
    assert!(!h.sim.in_transaction());
    // The waiting worker is released and the task is gone.
    assert_eq!(h.handler.poll_completed(), vec![t]);
    assert_eq!(h.handler.queued_tasks(), 0);
    assert_eq!(h.turn(), vec![]);

    // A failover seen by the heartbeat whose COMMIT fails is retried by the next one.
    let failed_over = with_g1(
        Some("w1b"),
        vec![stopped(m("w1a", "10.0.1.1")), primary(m("w1b", "10.0.1.2"))],
    );
    h.heartbeat(&failed_over);
    h.arm(StatementKind::Commit);
    let switch = vec![
        Begin,
        upd(2, "10.0.1.1-demoted"),
        upd(3, "10.0.1.1"),
        upd(2, "10.0.1.2"),
        Commit,
    ];
    let mut then_load = switch.clone();
    then_load.push(LoadMetadata);
    assert_eq!(h.turn(), then_load);
    assert_eq!(h.rows(), Host::with_rows(BASE_ROWS).rows());
    assert_eq!(h.turn(), vec![]);
    h.heartbeat(&failed_over);
    assert_eq!(h.clean_turn(), switch);
    assert_eq!(h.group_rows(1)[0], (2, "10.0.1.2".into(), "primary"));
}

#[test]
fn demote_clears_everything() {
    let mut h = settled();
    let t1 = h.queued(&base(), &ev("before_demote", 1, "w1a"));
    assert_eq!(h.clean_turn(), vec![Begin, upd(2, "10.0.1.1-demoted")]);
    assert_eq!(h.handler.poll_completed(), vec![t1]);
    let v = view(vec![
        base().workers[0].clone(),
        (
            2,
            grp(
                Some("w2a"),
                vec![primary(m("w2a", "10.0.2.1")), m("w2b", "10.0.2.2")],
            ),
        ),
    ]);
    let t = h.queued(&v, &ev("after_promote", 2, "w2a"));
    h.demote();
    assert_eq!(h.handler.queued_tasks(), 0);
    assert_eq!(h.handler.in_flight_group(), None);
    assert!(h.handler.cached_rows().is_empty());
    assert_eq!(h.handler.poll_completed(), vec![t]);
    assert_eq!(h.handler.poll_timeout(), None);
    assert_eq!(h.rows(), Host::with_rows(BASE_ROWS).rows());
    // Whatever happens next starts from a fresh load.
    assert_eq!(h.clean_turn(), vec![LoadMetadata]);
}

// ----- 8. worker events -------------------------------------------------------------

#[test]
fn invalid_events_are_refused_with_the_field_and_change_nothing() {
    let mut h = settled();
    for (body, field) in [
        // Departure 3: the reference would open a transaction for any unknown type.
        (
            r#"{"type":"restart","group":1,"leader":"w1a","timeout":30}"#,
            "type",
        ),
        (r#"{"group":1,"leader":"w1a","timeout":30}"#, "type"),
        (
            r#"{"type":"before_demote","group":0,"leader":"w1a","timeout":30}"#,
            "group",
        ),
        (
            r#"{"type":"before_demote","group":-1,"leader":"w1a","timeout":30}"#,
            "group",
        ),
        (
            r#"{"type":"before_demote","group":1,"timeout":30}"#,
            "leader",
        ),
        (
            r#"{"type":"before_demote","group":1,"leader":"w1a","timeout":0}"#,
            "timeout",
        ),
        (
            r#"{"type":"before_demote","group":1,"leader":"w1a"}"#,
            "timeout",
        ),
        (
            r#"{"type":"before_demote","group":1,"leader":"w1a","timeout":30,"cooldown":-1}"#,
            "cooldown",
        ),
        ("not json", "event"),
    ] {
        let now = h.now;
        let err = h.handler.handle_event(now, &base(), body).unwrap_err();
        assert_eq!(err.field, field, "{body}");
    }
    assert_eq!(h.handler.queued_tasks(), 0);
    assert_eq!(h.turn(), vec![]);
}

#[test]
fn events_before_the_first_heartbeat_are_discarded() {
    let mut h = Host::with_rows(BASE_ROWS);
    let out = h.event(&base(), &ev("before_demote", 1, "w1a"));
    assert!(matches!(out, EventOutcome::Discarded(ref why) if why.contains("no heartbeat")));
    assert_eq!(h.handler.queued_tasks(), 0);
    h.heartbeat(&base());
    assert_eq!(h.clean_turn(), vec![LoadMetadata]);
    assert!(!h.sim.in_transaction());
}

#[test]
fn event_is_discarded_unless_the_dcs_names_its_sender_leader() {
    let mut h = settled();
    let mut no_conn = base();
    no_conn.workers[0].1.members[0].conn_url = None;
    for (v, body) in [
        (base(), ev("before_demote", 1, "w1b")),
        (base(), ev("before_demote", 3, "w3a")),
        (
            with_g1(None, vec![m("w1a", "10.0.1.1")]),
            ev("before_demote", 1, "w1a"),
        ),
        (
            with_g1(Some("w1x"), vec![m("w1a", "10.0.1.1")]),
            ev("before_demote", 1, "w1a"),
        ),
        (no_conn, ev("before_demote", 1, "w1a")),
    ] {
        let out = h.event(&v, &body);
        assert!(matches!(out, EventOutcome::Discarded(_)), "{body}: {out:?}");
    }
    assert_eq!(h.handler.queued_tasks(), 0);
    assert_eq!(h.turn(), vec![]);
}

#[test]
fn ticket_is_completed_when_its_task_is_processed() {
    let mut h = settled();
    let t = h.queued(&base(), &ev("before_demote", 1, "w1a"));
    assert!(h.handler.poll_completed().is_empty());
    h.clean_turn();
    // The transaction is open and the pause in place: the worker may stop now.
    assert_eq!(h.handler.poll_completed(), vec![t]);
    assert!(h.handler.poll_completed().is_empty());
    let t2 = h.queued(&base(), &ev("after_promote", 1, "w1a"));
    h.clean_turn();
    assert_eq!(h.handler.poll_completed(), vec![t2]);
    assert_ne!(t, t2);
}

#[test]
fn cooldown_goes_to_citus_in_ms_and_zero_stays_zero() {
    // Departure 4: the reference sends 10000 ms for `cooldown: 0`.
    for (cooldown, ms) in [
        (r#","cooldown":0"#, 0),
        ("", 10_000),
        (r#","cooldown":2.5"#, 2_500),
    ] {
        let mut h = settled();
        let body = format!(
            r#"{{"type":"before_demote","group":1,"leader":"w1a","timeout":30{cooldown}}}"#
        );
        h.event(&base(), &body);
        assert_eq!(
            h.clean_turn(),
            vec![Begin, upd_cd(2, "10.0.1.1-demoted", ms)],
            "{body}"
        );
    }
}

// ----- 9. the heartbeat -------------------------------------------------------------

#[test]
fn only_the_coordinator_maintains_pg_dist_node() {
    let mut h = Handler::new(config(1), "w1a", "postgres://10.0.1.1:5432/postgres");
    h.handle_heartbeat(T0, &base());
    assert_eq!(h.queued_tasks(), 0);
    assert_eq!(h.poll_statement(T0), None);
    let out = h.handle_event(T0, &base(), &ev("before_demote", 1, "w1a"));
    assert!(matches!(out, Ok(EventOutcome::Discarded(_))));
    assert_eq!(h.poll_statement(T0), None);
}

#[test]
fn coordinator_group_is_this_node_plus_its_eligible_standbys() {
    let mut h = Host::with_rows(&[]);
    let mut me_elsewhere = m("coord1", "10.0.0.99");
    me_elsewhere.role = Some("primary".into());
    let mut unix = m("coord6", "x");
    unix.conn_url = None;
    unix.conn_kwargs = Some(ConnKwargs {
        host: Some("/var/run/postgresql".into()),
        port: None,
    });
    let v = ClusterView {
        coordinator: grp(
            Some("coord1"),
            vec![
                // The DCS entry of this node: its own connection URL wins.
                me_elsewhere,
                m("coord2", "10.0.0.2"),
                stopped(m("coord3", "10.0.0.3")),
                nolb(m("coord4", "10.0.0.4")),
                Member {
                    conn_url: None,
                    ..m("coord5", "10.0.0.5")
                },
                unix,
            ],
        ),
        workers: vec![],
    };
    h.heartbeat(&v);
    assert_eq!(
        h.clean_turn(),
        vec![
            LoadMetadata,
            Begin,
            add_p("10.0.0.1", 0),
            add_s("10.0.0.2", 0),
            Commit,
        ]
    );
    assert!(h.warnings().iter().any(|w| w.contains("coord6")));
}

#[test]
fn worker_group_needs_a_running_primary_leader() {
    let mut h = Host::with_rows(&[(1, 0, "10.0.0.1", "primary")]);
    let mut no_conn = primary(m("w6a", "10.0.6.1"));
    no_conn.conn_url = None;
    let mut master = m("w2a", "10.0.2.1");
    master.role = Some("master".into());
    let v = view(vec![
        (1, grp(Some("w1a"), vec![m("w1a", "10.0.1.1")])),
        (2, grp(Some("w2a"), vec![master])),
        (
            3,
            grp(Some("w3a"), vec![stopped(primary(m("w3a", "10.0.3.1")))]),
        ),
        (4, grp(Some("w4x"), vec![primary(m("w4a", "10.0.4.1"))])),
        (5, grp(None, vec![primary(m("w5a", "10.0.5.1"))])),
        (6, grp(Some("w6a"), vec![no_conn])),
        (7, grp(Some("w7a"), vec![primary(m("w7a", "10.0.7.1"))])),
    ]);
    h.heartbeat(&v);
    assert_eq!(
        h.clean_turn(),
        vec![LoadMetadata, add_p("10.0.2.1", 2), add_p("10.0.7.1", 7)]
    );
}

// ----- the reference's tricky cases -------------------------------------------------

#[test]
fn switchover_with_a_registered_secondary() {
    let mut h = settled();
    h.event(&base(), &ev("before_demote", 1, "w1a"));
    assert_eq!(h.clean_turn(), vec![Begin, upd(2, "10.0.1.1-demoted")]);
    let promoting = with_g1(
        Some("w1b"),
        vec![stopped(m("w1a", "10.0.1.1")), m("w1b", "10.0.1.2")],
    );
    h.event(&promoting, &ev("before_promote", 1, "w1b"));
    assert_eq!(h.clean_turn(), vec![upd(3, "10.0.1.1"), upd(2, "10.0.1.2")]);
    let promoted = with_g1(
        Some("w1b"),
        vec![m("w1a", "10.0.1.1"), primary(m("w1b", "10.0.1.2"))],
    );
    h.event(&promoted, &ev("after_promote", 1, "w1b"));
    assert_eq!(h.clean_turn(), vec![Commit]);
    assert_eq!(
        h.group_rows(1),
        vec![
            (2, "10.0.1.2".into(), "primary"),
            (3, "10.0.1.1".into(), "secondary")
        ]
    );
    h.heartbeat(&promoted);
    assert_eq!(h.turn(), vec![]);
}

#[test]
fn switchover_without_a_registered_secondary() {
    let mut h = Host::with_rows(&[
        (1, 0, "10.0.0.1", "primary"),
        (2, 1, "10.0.1.1", "primary"),
        (4, 2, "10.0.2.1", "primary"),
    ]);
    let v = with_g1(
        Some("w1a"),
        vec![primary(m("w1a", "10.0.1.1")), nolb(m("w1b", "10.0.1.2"))],
    );
    h.heartbeat(&v);
    assert_eq!(h.clean_turn(), vec![LoadMetadata]);
    h.event(&v, &ev("before_demote", 1, "w1a"));
    assert_eq!(h.clean_turn(), vec![Begin, upd(2, "10.0.1.1-demoted")]);
    let promoting = with_g1(
        Some("w1b"),
        vec![stopped(m("w1a", "10.0.1.1")), nolb(m("w1b", "10.0.1.2"))],
    );
    h.event(&promoting, &ev("before_promote", 1, "w1b"));
    assert_eq!(h.clean_turn(), vec![upd(2, "10.0.1.2")]);
    let promoted = with_g1(
        Some("w1b"),
        vec![m("w1a", "10.0.1.1"), nolb(primary(m("w1b", "10.0.1.2")))],
    );
    h.event(&promoted, &ev("after_promote", 1, "w1b"));
    // The old primary's add must wait: the primary row changed in this transaction.
    assert_eq!(h.clean_turn(), vec![Commit]);
    h.heartbeat(&promoted);
    assert_eq!(h.clean_turn(), vec![add_s("10.0.1.1", 1)]);
    h.heartbeat(&promoted);
    assert_eq!(h.turn(), vec![]);
}

#[test]
fn failover_to_an_unregistered_node() {
    let mut h = settled();
    let v = with_g1(
        Some("w1c"),
        vec![m("w1b", "10.0.1.2"), primary(m("w1c", "10.0.1.3"))],
    );
    h.heartbeat(&v);
    assert_eq!(h.clean_turn(), vec![upd(2, "10.0.1.3")]);
    assert_eq!(
        h.group_rows(1),
        vec![
            (2, "10.0.1.3".into(), "primary"),
            (3, "10.0.1.2".into(), "secondary")
        ]
    );
    h.heartbeat(&v);
    assert_eq!(h.turn(), vec![]);
}

#[test]
fn secondary_replaced() {
    let mut h = settled();
    let v = with_g1(
        Some("w1a"),
        vec![primary(m("w1a", "10.0.1.1")), m("w1c", "10.0.1.3")],
    );
    h.heartbeat(&v);
    assert_eq!(h.clean_turn(), vec![upd(3, "10.0.1.3")]);
    h.heartbeat(&v);
    assert_eq!(h.turn(), vec![]);
}

#[test]
fn secondary_removed() {
    let mut h = Host::with_rows(&[
        (1, 0, "10.0.0.1", "primary"),
        (2, 1, "10.0.1.1", "primary"),
        (3, 1, "10.0.1.2", "secondary"),
        (5, 1, "10.0.1.3", "secondary"),
    ]);
    let v = view(vec![(
        1,
        grp(
            Some("w1a"),
            vec![
                primary(m("w1a", "10.0.1.1")),
                stopped(m("w1b", "10.0.1.2")),
                m("w1c", "10.0.1.3"),
            ],
        ),
    )]);
    h.heartbeat(&v);
    assert_eq!(h.clean_turn(), vec![LoadMetadata, rm("10.0.1.2")]);
    assert_eq!(
        h.group_rows(1),
        vec![
            (2, "10.0.1.1".into(), "primary"),
            (5, "10.0.1.3".into(), "secondary")
        ]
    );
}

#[test]
fn secondary_added_during_a_switchover() {
    // With events: the newcomer takes the promoted secondary's row.
    let mut h = settled();
    let with_w1c = |leader: &str, w1a: Member, w1b: Member| {
        with_g1(Some(leader), vec![w1a, w1b, m("w1c", "10.0.1.3")])
    };
    let v = with_w1c("w1a", primary(m("w1a", "10.0.1.1")), m("w1b", "10.0.1.2"));
    h.event(&v, &ev("before_demote", 1, "w1a"));
    // No add after the pause's update: w1c waits.
    assert_eq!(h.clean_turn(), vec![Begin, upd(2, "10.0.1.1-demoted")]);
    let v = with_w1c("w1b", stopped(m("w1a", "10.0.1.1")), m("w1b", "10.0.1.2"));
    h.event(&v, &ev("before_promote", 1, "w1b"));
    assert_eq!(h.clean_turn(), vec![upd(3, "10.0.1.3"), upd(2, "10.0.1.2")]);
    let v = with_w1c("w1b", m("w1a", "10.0.1.1"), primary(m("w1b", "10.0.1.2")));
    h.event(&v, &ev("after_promote", 1, "w1b"));
    assert_eq!(h.clean_turn(), vec![Commit]);
    h.heartbeat(&v);
    assert_eq!(h.clean_turn(), vec![add_s("10.0.1.1", 1)]);
    assert_eq!(
        h.group_rows(1),
        vec![
            (2, "10.0.1.2".into(), "primary"),
            (3, "10.0.1.3".into(), "secondary"),
            (5, "10.0.1.1".into(), "secondary"),
        ]
    );

    // Seen by the heartbeat only: the three-update switchover, then the add.
    let mut h = settled();
    let v = with_w1c("w1b", m("w1a", "10.0.1.1"), primary(m("w1b", "10.0.1.2")));
    h.heartbeat(&v);
    assert_eq!(
        h.clean_turn(),
        vec![
            Begin,
            upd(2, "10.0.1.1-demoted"),
            upd(3, "10.0.1.1"),
            upd(2, "10.0.1.2"),
            Commit,
        ]
    );
    h.heartbeat(&v);
    assert_eq!(h.clean_turn(), vec![add_s("10.0.1.3", 1)]);
}

#[test]
fn paused_connections_then_failover_to_an_unregistered_node() {
    let mut h = settled();
    h.event(&base(), &ev("before_demote", 1, "w1a"));
    assert_eq!(h.clean_turn(), vec![Begin, upd(2, "10.0.1.1-demoted")]);
    // w1a vanished, w1b is down too; w1c, never registered, is promoted.
    let v = with_g1(
        Some("w1c"),
        vec![stopped(m("w1b", "10.0.1.2")), m("w1c", "10.0.1.3")],
    );
    h.event(&v, &ev("before_promote", 1, "w1c"));
    // The paused old primary is parked in the gone secondary's row.
    assert_eq!(h.clean_turn(), vec![upd(2, "10.0.1.3"), upd(3, "10.0.1.1")]);
    let v = with_g1(
        Some("w1c"),
        vec![stopped(m("w1b", "10.0.1.2")), primary(m("w1c", "10.0.1.3"))],
    );
    h.promote_and_settle(&v, "w1c", "10.0.1.1", "10.0.1.3");
}

// ----- the deliberate departures from the reference (README) ----------------------------

#[test]
fn secondary_churn_converges_within_two_heartbeats() {
    // Departure 1, with Citus's refusal of add/remove for a second after a committed
    // update modelled: the reference sends add/remove after an update in the same
    // transaction and retries that refused transaction forever.
    let mut h = Host::new(
        SimOptions {
            refuse_after_commit_ms: Some(METADATA_SYNC_WAIT_MS),
        },
        &[
            (1, 0, "10.0.0.1", "primary"),
            (2, 1, "10.0.1.1", "primary"),
            (3, 1, "10.0.1.2", "secondary"),
            (4, 2, "10.0.2.1", "primary"),
            (5, 2, "10.0.2.2", "secondary"),
        ],
    );
    let churn = |g: GroupId| {
        let n = |i: u8| format!("10.0.{g}.{i}");
        (
            g,
            grp(
                Some(&format!("w{g}a")),
                vec![
                    primary(m(&format!("w{g}a"), &n(1))),
                    m(&format!("w{g}c"), &n(3)),
                    m(&format!("w{g}d"), &n(4)),
                ],
            ),
        )
    };
    let v = view(vec![churn(1), churn(2)]);
    h.heartbeat(&v);
    let sent = h.turn();
    assert_eq!(
        sent,
        vec![
            LoadMetadata,
            Begin,
            add_s("10.0.1.4", 1),
            upd(3, "10.0.1.3"),
            Commit,
            Begin,
            add_s("10.0.2.4", 2),
        ]
    );
    // Group 1's commit started Citus's sync: group 2's add is refused ...
    let StatementResult::Failed(e) = h.results.last().unwrap() else {
        panic!("{:?}", h.results)
    };
    assert!(e.is_metadata_out_of_sync(), "{e:?}");
    // ... and retried once Citus had time, without a reload.
    assert_eq!(h.handler.metrics().sync_retries, 1);
    assert_eq!(h.handler.poll_timeout(), Some(T0 + METADATA_SYNC_WAIT_MS));
    h.now = T0 + 500;
    assert_eq!(h.turn(), vec![]);
    h.now = T0 + METADATA_SYNC_WAIT_MS;
    h.heartbeat(&v);
    assert_eq!(
        h.clean_turn(),
        vec![Begin, add_s("10.0.2.4", 2), upd(5, "10.0.2.3"), Commit]
    );
    for g in [1, 2] {
        let rows: Vec<String> = h.group_rows(g).into_iter().map(|r| r.1).collect();
        let n = |i: u8| format!("10.0.{g}.{i}");
        assert_eq!(rows, vec![n(1), n(3), n(4)]);
    }
    h.now += METADATA_SYNC_WAIT_MS;
    h.heartbeat(&v);
    assert_eq!(h.turn(), vec![]);
}

#[test]
fn leftover_demoted_row_is_repaired_in_one_update() {
    // Departure 5: the reference renames it to `-demoted-demoted` and adds a bogus
    // secondary.
    let mut h = Host::with_rows(&[
        (1, 0, "10.0.0.1", "primary"),
        (2, 1, "10.0.1.1-demoted", "primary"),
        (3, 1, "10.0.1.2", "secondary"),
        (4, 2, "10.0.2.1", "primary"),
    ]);
    h.heartbeat(&base());
    assert_eq!(h.clean_turn(), vec![LoadMetadata, upd(2, "10.0.1.1")]);
    assert_eq!(h.rows(), Host::with_rows(BASE_ROWS).rows());
    h.heartbeat(&base());
    assert_eq!(h.turn(), vec![]);
}

#[test]
fn group_with_only_secondary_rows_ends_with_exactly_one_primary() {
    // Departure 6: the reference "adds" the primary onto the secondary's row (Citus
    // answers with that row's id) and ends without a primary row.
    let mut h = Host::with_rows(&[
        (1, 0, "10.0.0.1", "primary"),
        (7, 1, "10.0.1.1", "secondary"),
        (8, 1, "10.0.1.2", "secondary"),
        (4, 2, "10.0.2.1", "primary"),
    ]);
    h.heartbeat(&base());
    assert_eq!(
        h.clean_turn(),
        vec![
            LoadMetadata,
            Begin,
            rm("10.0.1.1"),
            add_p("10.0.1.1", 1),
            Commit,
        ]
    );
    assert_eq!(
        h.group_rows(1),
        vec![
            (8, "10.0.1.2".into(), "secondary"),
            (9, "10.0.1.1".into(), "primary")
        ]
    );
    h.heartbeat(&base());
    assert_eq!(h.turn(), vec![]);
}

#[test]
fn unusable_hosts_are_skipped_and_reported_and_names_lower_cased() {
    // Departure 8.
    let mut h = Host::with_rows(&[(1, 0, "10.0.0.1", "primary")]);
    let kw = |name: &str, host: &str, port: Option<&str>| Member {
        conn_url: None,
        conn_kwargs: Some(ConnKwargs {
            host: Some(host.into()),
            port: port.map(str::to_string),
        }),
        ..m(name, "unused")
    };
    let mut leader = primary(m("W1A", "x"));
    leader.conn_url = Some("postgres://Worker-1A.Example:5432/db".into());
    let mut empty_url = m("w1c", "x");
    empty_url.conn_url = Some("postgres:///db".into());
    let mut socket_leader = primary(kw("w2a", "/tmp", None));
    socket_leader.role = Some("primary".into());
    let v = view(vec![
        (
            1,
            grp(
                Some("W1A"),
                vec![
                    leader,
                    kw("w1b", "/var/run/postgresql", Some("5432")),
                    empty_url,
                    kw("w1d", "", Some("5432")),
                    kw("w1e", "REPLICA.Example", None),
                    kw("w1f", "10.0.1.6", Some("6432")),
                ],
            ),
        ),
        (2, grp(Some("w2a"), vec![socket_leader])),
    ]);
    h.heartbeat(&v);
    assert_eq!(
        h.clean_turn(),
        vec![
            LoadMetadata,
            Begin,
            add_p("worker-1a.example", 1),
            Statement::AddNode {
                host: "10.0.1.6".into(),
                port: 6432,
                groupid: 1,
                role: NodeRole::Secondary,
            },
            add_s("replica.example", 1),
            Commit,
        ]
    );
    let warnings = h.warnings();
    for who in ["w1b", "w1c", "w1d", "leader w2a"] {
        assert!(
            warnings.iter().any(|w| w.contains(who)),
            "{who} not reported: {warnings:?}"
        );
    }
    // Reported once, not on every heartbeat; and the lower-cased rows are recognised.
    h.heartbeat(&v);
    assert_eq!(h.turn(), vec![]);
    assert!(h.warnings().is_empty());
}

// ----- 12. state hand-off -----------------------------------------------------------

type Rows = Vec<(i32, GroupId, String, &'static str)>;

/// A switchover of group 1; with `handoff`, the state moves to a new Handler right after
/// the pause (the transaction open, its deadline running).
fn switchover_run(handoff: bool) -> (Vec<Vec<Statement>>, Rows) {
    let mut h = settled();
    let mut turns = Vec::new();
    h.event(&base(), &ev("before_demote", 1, "w1a"));
    turns.push(h.clean_turn());
    if handoff {
        let before = (
            h.handler.in_flight_group(),
            h.handler.in_flight_deadline(),
            h.handler.poll_timeout(),
        );
        let bytes = h.handler.export_state();
        h.handler = Handler::import_state(&bytes).expect("own export imports");
        let after = (
            h.handler.in_flight_group(),
            h.handler.in_flight_deadline(),
            h.handler.poll_timeout(),
        );
        assert_eq!(before, after);
        assert_eq!(h.handler.export_state(), bytes);
    }
    h.now += 2_000;
    let promoting = with_g1(
        Some("w1b"),
        vec![stopped(m("w1a", "10.0.1.1")), m("w1b", "10.0.1.2")],
    );
    h.heartbeat(&promoting);
    h.event(&promoting, &ev("before_promote", 1, "w1b"));
    turns.push(h.clean_turn());
    let promoted = with_g1(
        Some("w1b"),
        vec![m("w1a", "10.0.1.1"), primary(m("w1b", "10.0.1.2"))],
    );
    h.event(&promoted, &ev("after_promote", 1, "w1b"));
    turns.push(h.clean_turn());
    h.now += 40_000;
    h.heartbeat(&promoted);
    turns.push(h.turn());
    (turns, h.rows())
}

#[test]
fn handoff_mid_switchover_continues_exactly() {
    let plain = switchover_run(false);
    let handed = switchover_run(true);
    assert_eq!(plain, handed);
    assert_eq!(
        plain.0,
        vec![
            vec![Begin, upd(2, "10.0.1.1-demoted")],
            vec![upd(3, "10.0.1.1"), upd(2, "10.0.1.2")],
            vec![Commit],
            vec![],
        ]
    );

    // The imported instance also keeps the deadline.
    let mut h = settled();
    h.event(&base(), &ev("before_demote", 1, "w1a"));
    h.clean_turn();
    h.handler = Handler::import_state(&h.handler.export_state()).unwrap();
    h.now = T0 + 30_000;
    assert_eq!(h.clean_turn(), vec![Rollback]);
}

#[test]
fn import_refuses_foreign_or_newer_state() {
    assert!(Handler::import_state(b"garbage").is_err());
    let h = settled();
    let mut v: serde_json::Value = serde_json::from_slice(&h.handler.export_state_json()).unwrap();
    v["format"] = serde_json::json!(STATE_FORMAT + 1);
    let err = Handler::import_state(&serde_json::to_vec(&v).unwrap()).unwrap_err();
    assert!(err.contains("newer"), "{err}");
    let mut bin = h.handler.export_state();
    bin[4] += 1;
    let err = Handler::import_state(&bin).unwrap_err();
    assert!(err.contains("newer"), "{err}");
    let mut cut = h.handler.export_state();
    cut.truncate(cut.len() / 2);
    let err = Handler::import_state(&cut).unwrap_err();
    assert!(err.contains("does not parse"), "{err}");
}

#[test]
fn both_state_formats_carry_the_whole_state() {
    let mut h = settled();
    h.event(&base(), &ev("before_demote", 1, "w1a"));
    h.clean_turn();
    h.heartbeat(&with_g1(
        Some("w1a"),
        vec![primary(m("w1a", "10.0.1.1")), m("w1c", "10.0.1.3")],
    ));
    let bin = h.handler.export_state();
    let json = h.handler.export_state_json();
    assert!(
        bin.len() * 3 < json.len(),
        "{} vs {}",
        bin.len(),
        json.len()
    );
    let from_bin = Handler::import_state(&bin).unwrap();
    let from_json = Handler::import_state(&json).unwrap();
    assert_eq!(from_bin.export_state_json(), json);
    assert_eq!(from_json.export_state(), bin);
}

// ----- minimal cases found by the property tests (tests/properties.rs) -------------

#[test]
fn switchover_to_an_unregistered_node_registers_the_old_primary_next() {
    // The primary row went to w1c; w1a stays on as a replica but has no row any more.
    // The reference (and this policy before the fix) kept it in the cache as registered
    // and never added it.
    let mut h = settled();
    let v = with_g1(
        Some("w1c"),
        vec![
            m("w1a", "10.0.1.1"),
            m("w1b", "10.0.1.2"),
            primary(m("w1c", "10.0.1.3")),
        ],
    );
    h.heartbeat(&v);
    assert_eq!(h.clean_turn(), vec![upd(2, "10.0.1.3")]);
    h.heartbeat(&v);
    assert_eq!(h.clean_turn(), vec![add_s("10.0.1.1", 1)]);
    assert_eq!(h.group_rows(1).len(), 3);
}

#[test]
fn rolled_back_transaction_leaves_the_cache_true() {
    // The plan of a transaction that was later rolled back used to edit the cache in
    // place (here: dropping the secondary row it removed), so the repair after the
    // rollback "added" the primary onto that secondary row and ended without a primary.
    let mut h = Host::with_rows(&[
        (1, 0, "10.0.0.1", "primary"),
        (2, 1, "10.0.1.1", "secondary"),
    ]);
    let v = view(vec![(
        1,
        grp(Some("w1a"), vec![primary(m("w1a", "10.0.1.1"))]),
    )]);
    h.heartbeat(&view(vec![(1, grp(None, vec![m("w1a", "10.0.1.1")]))]));
    assert_eq!(h.clean_turn(), vec![LoadMetadata]);
    h.event(&v, &ev("before_demote", 1, "w1a"));
    assert_eq!(h.clean_turn(), vec![Begin, rm("10.0.1.1")]);
    h.now += 30_000;
    h.heartbeat(&v);
    assert_eq!(
        h.clean_turn(),
        vec![
            Rollback,
            Begin,
            rm("10.0.1.1"),
            add_p("10.0.1.1", 1),
            Commit
        ]
    );
    assert_eq!(h.group_rows(1), vec![(3, "10.0.1.1".into(), "primary")]);
}

#[test]
fn paused_primary_row_next_to_a_row_of_the_same_host() {
    // `<host>-demoted` read as the paused <host> used to hide <host>'s own row.
    let rows = &[
        (1, 0, "10.0.0.1", "primary"),
        (4, 1, "10.0.1.1-demoted", "primary"),
        (5, 1, "10.0.1.1", "secondary"),
        (6, 1, "10.0.1.2", "secondary"),
        (7, 2, "10.0.2.1", "primary"),
    ];
    let mut h = Host::with_rows(rows);
    h.heartbeat(&base());
    assert_eq!(
        h.clean_turn(),
        vec![
            LoadMetadata,
            Begin,
            rm("10.0.1.1"),
            upd(4, "10.0.1.1"),
            Commit
        ]
    );
    assert_eq!(
        h.group_rows(1),
        vec![
            (4, "10.0.1.1".into(), "primary"),
            (6, "10.0.1.2".into(), "secondary")
        ]
    );

    // A pause requested then: the row is already paused, only the extra row goes.
    let mut h = Host::with_rows(rows);
    h.heartbeat(&with_g1(None, vec![]));
    assert_eq!(h.clean_turn(), vec![LoadMetadata]);
    h.event(&base(), &ev("before_demote", 1, "w1a"));
    assert_eq!(h.clean_turn(), vec![Begin, rm("10.0.1.1")]);
}

#[test]
fn promotion_after_pausing_a_group_without_a_primary_row() {
    // The paused primary had no row; the promoted node had a secondary row. Planned as a
    // switchover, the primary's add was moved before the update freeing its address,
    // so Citus just returned the secondary's id and the group had no primary row.
    let mut h = Host::with_rows(&[(1, 0, "10.0.0.1", "primary")]);
    let g1 = |leader: Option<&str>, members| view(vec![(1, grp(leader, members))]);
    h.heartbeat(&g1(None, vec![]));
    assert_eq!(h.clean_turn(), vec![LoadMetadata]);
    let v = g1(
        Some("w1a"),
        vec![stopped(primary(m("w1a", "10.0.1.1"))), m("w1b", "10.0.1.2")],
    );
    h.event(&v, &ev("before_demote", 1, "w1a"));
    assert_eq!(h.clean_turn(), vec![Begin, add_s("10.0.1.2", 1)]);
    let v = g1(
        Some("w1b"),
        vec![stopped(m("w1a", "10.0.1.1")), m("w1b", "10.0.1.2")],
    );
    h.event(&v, &ev("before_promote", 1, "w1b"));
    assert_eq!(h.clean_turn(), vec![rm("10.0.1.2"), add_p("10.0.1.2", 1)]);
    let v = g1(
        Some("w1b"),
        vec![stopped(m("w1a", "10.0.1.1")), primary(m("w1b", "10.0.1.2"))],
    );
    h.event(&v, &ev("after_promote", 1, "w1b"));
    assert_eq!(h.clean_turn(), vec![Commit]);
    assert_eq!(h.group_rows(1), vec![(3, "10.0.1.2".into(), "primary")]);
    h.heartbeat(&v);
    assert_eq!(h.turn(), vec![]);
}

// ----- contract 0.3.0: packed views and statement batches ---------------------------

fn packed(h: &mut Host, p: &mut crate::packed_view::Packer, v: &ClusterView) {
    let now = h.now;
    h.handler
        .handle_heartbeat_packed(now, p.pack(v))
        .expect("a packed view is accepted");
}

fn rows_of(rows: &[(i32, GroupId, &str, &str)]) -> Vec<Row> {
    rows.iter()
        .map(|(id, g, host, role)| Row {
            nodeid: *id,
            groupid: *g,
            nodename: host.to_string(),
            nodeport: 5432,
            noderole: role_of(role),
        })
        .collect()
}

#[test]
fn a_steady_packed_heartbeat_still_sees_a_cache_changed_by_a_reload() {
    let mut h = settled();
    let mut p = crate::packed_view::Packer::new();
    packed(&mut h, &mut p, &base());
    assert_eq!(h.turn(), vec![]);
    packed(&mut h, &mut p, &base());
    assert_eq!(h.turn(), vec![]);
    // Someone removed group 2's row; a reload shows it, while the DCS stays the same.
    h.sim.replace_rows(rows_of(&BASE_ROWS[..3]));
    h.handler.schedule_reload();
    assert_eq!(h.clean_turn(), vec![LoadMetadata]);
    packed(&mut h, &mut p, &base());
    assert_eq!(h.clean_turn(), vec![add_p("10.0.2.1", 2)]);
}

#[test]
fn a_steady_packed_heartbeat_still_sees_a_cache_changed_by_an_event() {
    // The event's view (read when the event came) has a third member in group 1; the
    // heartbeat's view, unchanged since, does not: the heartbeat puts it back, as the
    // plain heartbeat does.
    let wider = with_g1(
        Some("w1a"),
        vec![
            primary(m("w1a", "10.0.1.1")),
            m("w1b", "10.0.1.2"),
            m("w1c", "10.0.1.3"),
        ],
    );
    let run = |use_packed: bool| {
        let mut h = settled();
        let mut p = crate::packed_view::Packer::new();
        let mut beat = |h: &mut Host| {
            if use_packed {
                packed(h, &mut p, &base())
            } else {
                h.heartbeat(&base())
            }
        };
        beat(&mut h);
        assert_eq!(h.turn(), vec![]);
        h.queued(&wider, &ev("after_promote", 1, "w1a"));
        assert_eq!(h.clean_turn(), vec![add_s("10.0.1.3", 1)]);
        beat(&mut h);
        h.clean_turn()
    };
    let plain = run(false);
    assert_eq!(plain, vec![rm("10.0.1.3")]);
    assert_eq!(run(true), plain);
}

#[test]
fn a_malformed_packed_view_is_refused_and_changes_nothing() {
    let mut h = Host::with_rows(BASE_ROWS);
    let mut bytes = crate::packed_view::pack_once(&base());
    bytes.truncate(bytes.len() - 3);
    let view = PackedView {
        seq: 1,
        base: None,
        bytes: &bytes,
    };
    let now = h.now;
    let e = h.handler.handle_heartbeat_packed(now, view).unwrap_err();
    assert_eq!(e.field, "view");
    assert!(e.reason.contains("runs past the end"), "{e}");
    // Not even "ready": the refused heartbeat did not count.
    assert!(matches!(
        h.event(&base(), &ev("after_promote", 1, "w1a")),
        EventOutcome::Discarded(_)
    ));
    assert_eq!(h.handler.queued_tasks(), 0);
}

#[test]
fn a_plan_comes_in_one_batch_and_a_failure_cuts_it_short() {
    let mut h = Host::with_rows(&[]);
    h.heartbeat(&base());
    let mut batches = Vec::new();
    loop {
        let batch = h.base.handler.poll_statements(h.base.now);
        if batch.is_empty() {
            break;
        }
        let results = batch.iter().map(|s| h.exec(s).0).collect();
        h.base.handler.handle_results(h.base.now, results);
        batches.push(batch);
    }
    // The coordinator's, group 1's and group 2's plans are independent: one batch.
    assert_eq!(
        batches,
        vec![
            vec![LoadMetadata],
            vec![
                add_p("10.0.0.1", 0),
                Begin,
                add_p("10.0.1.1", 1),
                add_s("10.0.1.2", 1),
                Commit,
                add_p("10.0.2.1", 2),
            ],
        ]
    );
    assert_eq!(h.handler.metrics().statements, 7);

    // Group 1 gets two replicas more; the plan's second statement fails: the host stops.
    let v = with_g1(
        Some("w1a"),
        vec![
            primary(m("w1a", "10.0.1.1")),
            m("w1b", "10.0.1.2"),
            m("w1c", "10.0.1.3"),
            m("w1d", "10.0.1.4"),
        ],
    );
    h.heartbeat(&v);
    let batch = h.base.handler.poll_statements(h.base.now);
    assert_eq!(batch.len(), 4, "{batch:?}");
    assert_eq!(batch[0], Begin);
    let ok = h.exec(&batch[0]).0;
    h.sim.lose_session();
    let lost = StatementResult::Failed(StatementError {
        message: "server closed the connection unexpectedly".into(),
        sqlstate: None,
        connection_lost: true,
    });
    h.base.handler.handle_results(h.base.now, vec![ok, lost]);
    assert!(!h.handler.is_busy());
    // The failed plan is dropped; the cache is reloaded and the next heartbeat retries.
    assert_eq!(
        h.base.handler.poll_statements(h.base.now),
        vec![LoadMetadata]
    );
    assert_eq!(h.handler.metrics().failed_statements, 1);
}

/// A failure inside a pipelined batch leaves what one statement at a time leaves: the plans
/// before it done, the failed one dropped, the ones after it not run, the same counters.
#[test]
fn a_failure_inside_a_pipelined_batch_leaves_what_one_statement_at_a_time_does() {
    let run = |batched: bool| {
        let mut h = Host::with_rows(&[]);
        h.heartbeat(&base());
        // Group 1's COMMIT, inside the batch that also carries the coordinator's and group 2's adds.
        h.arm(StatementKind::Commit);
        let turn = |h: &mut Host| {
            if batched {
                h.batched_turn().concat()
            } else {
                h.turn()
            }
        };
        let sent = turn(&mut h);
        let results = h.results.clone();
        let rows = h.handler.cached_rows();
        h.heartbeat(&base());
        let retry = turn(&mut h);
        (
            sent,
            results,
            rows,
            retry,
            h.handler.cached_rows(),
            h.handler.metrics(),
        )
    };
    let batched = run(true);
    assert_eq!(batched, run(false));
    let (sent, _, rows, retry, _, metrics) = batched;
    assert_eq!(
        sent,
        vec![
            LoadMetadata,
            add_p("10.0.0.1", 0),
            Begin,
            add_p("10.0.1.1", 1),
            add_s("10.0.1.2", 1),
            Commit,
            LoadMetadata,
            add_p("10.0.2.1", 2),
        ]
    );
    assert_eq!(rows.len(), 2, "the coordinator and group 2: {rows:?}");
    assert_eq!(
        retry,
        vec![Begin, add_p("10.0.1.1", 1), add_s("10.0.1.2", 1), Commit]
    );
    assert_eq!(metrics.statements, 12);
    assert_eq!(metrics.failed_statements, 1);
}

#[test]
fn a_batch_pipelines_at_most_batch_statements() {
    let mut h = Host::with_rows(&[]);
    let workers: Vec<(GroupId, GroupView)> = (1..=300)
        .map(|g| {
            let name = format!("w{g}a");
            let addr = format!("10.1.{}.{}", g / 100, g % 100);
            (g, grp(Some(&name), vec![primary(m(&name, &addr))]))
        })
        .collect();
    h.heartbeat(&view(workers));
    let sizes: Vec<usize> = h.batched_turn().iter().map(Vec::len).collect();
    // The load, then 301 single-statement adds (the coordinator's first).
    assert_eq!(sizes, vec![1, BATCH_STATEMENTS, 301 - BATCH_STATEMENTS]);
    assert_eq!(h.handler.metrics().statements, 302);
    assert_eq!(h.handler.cached_rows().len(), 301);
}

// ----- the state formats' bytes, pinned -------------------------------------------

/// Handlers in the middle of a switchover, as a swap finds them: the pause open with its
/// deadline, a heartbeat task and an event task with its ticket queued, a cooldown and a stale
/// row pending; and the same handler with a pipelined batch issued and unanswered.
fn pinned_handlers() -> Vec<(&'static str, Handler)> {
    let mut h = settled();
    h.event(&base(), &ev("before_demote", 1, "w1a"));
    h.clean_turn();
    h.heartbeat(&with_g1(
        Some("w1a"),
        vec![primary(m("w1a", "10.0.1.1")), m("w1c", "10.0.1.3")],
    ));
    h.queued(&base(), &ev("before_demote", 2, "w2a"));
    let paused = h.handler.clone();

    let mut h = settled();
    h.event(&base(), &ev("before_demote", 1, "w1a"));
    h.clean_turn();
    h.now += 2_000;
    let promoting = with_g1(
        Some("w1b"),
        vec![stopped(m("w1a", "10.0.1.1")), m("w1b", "10.0.1.2")],
    );
    h.heartbeat(&promoting);
    h.queued(&promoting, &ev("before_promote", 1, "w1b"));
    let now = h.now;
    let issued = h.handler.poll_statements(now);
    assert!(issued.len() > 1, "{issued:?}");
    vec![("paused", paused), ("issued", h.handler.clone())]
}

/// The fixtures were written by the build before the export format had its own types (from
/// the handlers of [`pinned_handlers`], under that build's task ids): every later build must
/// read them and write exactly these bytes back, in both formats, and read each format as the
/// other's bytes say.
#[test]
fn state_formats_keep_their_bytes() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/state");
    let read = |name: &str, ext: &str| {
        let path = dir.join(format!("{name}.{ext}"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"))
    };
    for (name, live) in pinned_handlers() {
        let (bin, json) = (read(name, "bin"), read(name, "json"));
        for pinned in [&bin, &json] {
            let back = Handler::import_state(pinned).unwrap();
            assert!(
                back.export_state() == bin,
                "{name}: the binary format changed"
            );
            assert!(
                back.export_state_json() == json,
                "{name}: the JSON format changed"
            );
        }
        // The handler the fixture was taken from is the one the scenario builds today, but
        // for the task ids (given only to queued tasks now, so they count fewer).
        let back = Handler::import_state(&bin).unwrap();
        assert_eq!(
            without_task_ids(&back.export_state_json()),
            without_task_ids(&live.export_state_json()),
            "{name}"
        );
    }
}

fn without_task_ids(json: &[u8]) -> serde_json::Value {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                for k in ["id", "next_task_id"] {
                    m.remove(k);
                }
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut v = serde_json::from_slice(json).unwrap();
    strip(&mut v);
    v
}

/// Format 1 leaves absent options and empty stale lists out; earlier builds wrote the options
/// as `null`, and both read back to the same state.
#[test]
fn json_state_reads_absent_and_null_options_alike() {
    for (name, h) in pinned_handlers() {
        let json = h.export_state_json();
        let text = String::from_utf8(json.clone()).unwrap();
        assert!(
            !text.contains("\"stale\"") && !text.contains("\"ticket\":null"),
            "{name}: {text}"
        );
        let mut old: serde_json::Value = serde_json::from_slice(&json).unwrap();
        fn spell_out(v: &mut serde_json::Value) {
            match v {
                serde_json::Value::Object(m) => {
                    if m.contains_key("cooldown_ms") {
                        for k in ["timeout_ms", "ticket", "not_before"] {
                            m.entry(k).or_insert(serde_json::Value::Null);
                        }
                    }
                    m.values_mut().for_each(spell_out);
                }
                serde_json::Value::Array(a) => a.iter_mut().for_each(spell_out),
                _ => {}
            }
        }
        spell_out(&mut old);
        let old = serde_json::to_vec(&old).unwrap();
        assert!(old.len() > json.len());
        let back = Handler::import_state(&old).unwrap();
        assert!(back.export_state_json() == json, "{name}");
    }
}
/// Export and import of a 1000-group handler, timed (run in release with `--ignored
/// --nocapture`): the hand-off a swap and every turn's snapshot pay for.
#[test]
#[ignore = "a timing loop, not a check"]
fn state_hand_off_timing() {
    let mut h = Host::with_rows(&[]);
    let workers: Vec<(GroupId, GroupView)> = (1..=1000)
        .map(|g| {
            let (a, b, c) = (format!("w{g}a"), format!("w{g}b"), format!("w{g}c"));
            let ip = |n: u32| format!("10.{}.{}.{n}", g / 256, g % 256);
            (
                g,
                grp(
                    Some(&a),
                    vec![primary(m(&a, &ip(1))), m(&b, &ip(2)), m(&c, &ip(3))],
                ),
            )
        })
        .collect();
    h.heartbeat(&view(workers));
    h.batched_turn();
    assert_eq!(h.handler.cached_rows().len(), 3001);
    let median = |f: &mut dyn FnMut()| {
        let mut ns: Vec<u128> = (0..201)
            .map(|_| {
                let t = std::time::Instant::now();
                f();
                t.elapsed().as_nanos()
            })
            .collect();
        ns.sort_unstable();
        ns[ns.len() / 2]
    };
    let bin = h.handler.export_state();
    let json = h.handler.export_state_json();
    let handler = &h.handler;
    let export = median(&mut || drop(std::hint::black_box(handler.export_state())));
    let export_json = median(&mut || drop(std::hint::black_box(handler.export_state_json())));
    let import = median(&mut || drop(std::hint::black_box(Handler::import_state(&bin))));
    let import_json = median(&mut || drop(std::hint::black_box(Handler::import_state(&json))));
    println!(
        "state_hand_off_1000: export {export} ns, import {import} ns ({} bytes); json export {export_json} ns, import {import_json} ns ({} bytes)",
        bin.len(),
        json.len()
    );
}

/// A swap in the middle of a pipelined batch: the new build reads the batch as the old one
/// exported it (the plans pipelined after the one being run are not in the state) and writes
/// it back the same. Their results cannot be applied, so it reads the cache again, and the
/// cache ends as the database is, as one statement at a time would have left it.
#[test]
fn a_state_exported_inside_a_pipelined_batch_keeps_the_batch_and_reloads_for_the_rest() {
    let mut h = Host::with_rows(&[]);
    h.heartbeat(&base());
    let now = h.now;
    let load = h.handler.poll_statements(now);
    assert_eq!(load, vec![LoadMetadata]);
    let (rows, _) = h.exec(&load[0]);
    h.handler.handle_results(now, vec![rows]);
    let batch = h.handler.poll_statements(now);
    // The coordinator's add, then group 1's and group 2's plans pipelined behind it.
    assert!(batch.len() > 2, "{batch:?}");
    let exported = h.handler.export_state();
    let mut imported = Handler::import_state(&exported).unwrap();
    assert!(
        imported.export_state() == exported,
        "the batch changed on import"
    );
    assert!(imported.is_busy());

    let results: Vec<StatementResult> = batch.iter().map(|s| h.exec(s).0).collect();
    imported.handle_results(now, results);
    let logs = imported.drain_logs();
    assert!(
        logs.iter()
            .any(|l| l.level == Level::Error && l.message.contains("before the state was imported")),
        "{logs:?}"
    );
    h.handler = imported;
    let after = h.clean_turn();
    assert_eq!(after.first(), Some(&LoadMetadata), "{after:?}");
    assert_eq!(
        after.len(),
        1,
        "everything the batch ran is in the database: {after:?}"
    );
    let mut cached: Vec<(GroupId, String)> = h
        .handler
        .cached_rows()
        .into_iter()
        .map(|(g, n)| (g, n.addr.host.clone()))
        .collect();
    cached.sort();
    assert_eq!(cached.len(), 4, "{cached:?}");
}
