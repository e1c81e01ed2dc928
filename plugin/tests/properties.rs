//! Property tests: the policy driven through random topologies and random sequences of DCS
//! changes, worker events, clock advances, injected connection losses, reload requests,
//! demotes and loop turns, against the Citus simulator (`citus-sim`).
//!
//! Properties, checked on every case:
//! - (a) every statement the policy sends is accepted by the simulator, except the injected
//!   failures (and, when the simulator models Citus's ~1 s post-commit metadata sync, the
//!   "out of sync" refusal outside a transaction that updated a row); structurally, no
//!   add/remove ever follows an update in the same transaction;
//! - (b) after every loop turn, an open transaction is one the policy knows about, and its
//!   deadline has not passed (so none outlives its deadline by more than one turn);
//! - (c) once changes and failures stop, two heartbeat+turn cycles (the clock advanced past
//!   every deadline and past the 1 s metadata-sync wait) leave pg_dist_node equal to the DCS
//!   truth: for every group whose leader is a running primary, exactly one primary row with
//!   the leader's address and secondary rows exactly for its running, reachable,
//!   non-noloadbalance members other than the leader;
//! - (d) every event ticket the policy handed out has been reported completed by then.
//!
//! Only the public API is used, as a host would.

use citus_ha_policy::dcs::{ClusterView, ConnKwargs, GroupView, Member};
use citus_ha_policy::handler::METADATA_SYNC_WAIT;

const METADATA_SYNC_WAIT_MS: u64 = METADATA_SYNC_WAIT.as_millis();
use citus_ha_policy::node::GroupId;
use citus_ha_policy::packed_view::{pack_once, PackedView, Packer};
use citus_ha_policy::sim_host::{Delivery, SimHost, StatementKind};
use citus_ha_policy::{CitusConfig, EventOutcome, Handler, StatementResult};
use citus_sim::{Row, SimOptions, Simulator};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

const COORD_NAME: &str = "coord";
const COORD_HOST: &str = "coord.example";
const OUT_OF_SYNC: &str = "is a metadata node, but is out of sync";

// ----- the DCS model ---------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Mem {
    name: String,
    host: String,
    port: i32,
    primary_role: bool,
    running: bool,
    nolb: bool,
    /// Published as `conn_kwargs` rather than a URL.
    kwargs: bool,
    /// The URL/kwargs spell the host in upper case (the policy must lower-case it).
    upper: bool,
    /// Published with a Unix socket directory as host: never registrable.
    unix: bool,
}

impl Mem {
    fn view(&self) -> Member {
        let host = if self.upper {
            self.host.to_uppercase()
        } else {
            self.host.clone()
        };
        let (conn_url, conn_kwargs) = if self.unix {
            (
                None,
                Some(ConnKwargs {
                    host: Some("/var/run/postgresql".into()),
                    port: Some(self.port.to_string()),
                }),
            )
        } else if self.kwargs {
            (
                None,
                Some(ConnKwargs {
                    host: Some(host),
                    port: Some(self.port.to_string()),
                }),
            )
        } else {
            (
                Some(format!("postgres://{host}:{}/postgres", self.port)),
                None,
            )
        };
        Member {
            name: self.name.clone(),
            conn_url,
            conn_kwargs,
            role: Some(
                if self.primary_role {
                    "primary"
                } else {
                    "replica"
                }
                .into(),
            ),
            state: Some(if self.running { "running" } else { "stopped" }.into()),
            noloadbalance: self.nolb,
        }
    }
    fn addr(&self) -> (String, i32) {
        (self.host.clone(), self.port)
    }
    fn eligible_secondary(&self, leader: Option<&str>) -> bool {
        self.running && !self.nolb && !self.unix && Some(self.name.as_str()) != leader
    }
}

#[derive(Clone, Debug, Default)]
struct Grp {
    leader: Option<String>,
    members: Vec<Mem>,
}

impl Grp {
    fn leader_member(&self) -> Option<&Mem> {
        let l = self.leader.as_deref()?;
        self.members.iter().find(|m| m.name == l)
    }
    fn leader_idx(&self) -> Option<usize> {
        let l = self.leader.as_deref()?;
        self.members.iter().position(|m| m.name == l)
    }
    fn view(&self) -> GroupView {
        GroupView {
            leader: self.leader.clone(),
            members: self.members.iter().map(Mem::view).collect(),
        }
    }
}

#[derive(Clone, Debug)]
struct World {
    workers: BTreeMap<GroupId, Grp>,
    /// The coordinator's standbys (the coordinator itself is `COORD_NAME`).
    standbys: Vec<Mem>,
    serial: u32,
}

impl World {
    fn fresh(&mut self, g: GroupId, flags: MemFlags) -> Mem {
        self.serial += 1;
        Mem {
            name: format!("g{g}m{}", self.serial),
            host: format!("h{}.g{g}.example", self.serial),
            port: if self.serial.is_multiple_of(3) {
                6432
            } else {
                5432
            },
            primary_role: false,
            running: flags.running,
            nolb: flags.nolb,
            kwargs: flags.kwargs,
            upper: flags.upper,
            unix: flags.unix,
        }
    }

    fn view(&self) -> ClusterView {
        let mut coordinator = vec![Member {
            name: COORD_NAME.into(),
            conn_url: Some(coord_url()),
            conn_kwargs: None,
            role: Some("primary".into()),
            state: Some("running".into()),
            noloadbalance: false,
        }];
        coordinator.extend(self.standbys.iter().map(Mem::view));
        ClusterView {
            coordinator: GroupView {
                leader: Some(COORD_NAME.into()),
                members: coordinator,
            },
            workers: self.workers.iter().map(|(g, w)| (*g, w.view())).collect(),
        }
    }

    /// What pg_dist_node must say for the groups whose leader is a running primary.
    fn truth(&self) -> BTreeMap<GroupId, Want> {
        let mut out = BTreeMap::new();
        out.insert(
            0,
            Want {
                primary: (COORD_HOST.into(), 5432),
                secondaries: self
                    .standbys
                    .iter()
                    .filter(|m| m.eligible_secondary(Some(COORD_NAME)))
                    .map(Mem::addr)
                    .collect(),
            },
        );
        for (g, w) in &self.workers {
            let Some(l) = w.leader_member() else { continue };
            if !(l.primary_role && l.running) || l.unix {
                continue;
            }
            out.insert(
                *g,
                Want {
                    primary: l.addr(),
                    secondaries: w
                        .members
                        .iter()
                        .filter(|m| m.eligible_secondary(w.leader.as_deref()))
                        .map(Mem::addr)
                        .collect(),
                },
            );
        }
        out
    }

    fn group_ids(&self) -> Vec<GroupId> {
        self.workers.keys().copied().collect()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Want {
    primary: (String, i32),
    secondaries: BTreeSet<(String, i32)>,
}

fn coord_url() -> String {
    format!("postgres://{COORD_HOST}:5432/postgres")
}

// ----- the host: the policy wired to the simulator ----------------------------------------

use StatementKind as Kind;

/// The shared simulator host, plus what the properties track across turns.
struct Host {
    base: SimHost,
    window: bool,
    /// An UpdateNode was sent in the session's open transaction.
    txn_updated: bool,
    tickets: BTreeSet<u64>,
    completed: BTreeSet<u64>,
    /// Something happened that justifies loading pg_dist_node (start, a lost session, a
    /// reload request, a demote); the "out of sync" refusal alone never does.
    reload_due: bool,
    trace: Vec<String>,
    /// Contract 0.3.0's way in: views packed (with unchanged marks), statements in batches.
    packer: Option<Packer>,
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

impl Host {
    fn new(window: bool, rows: Vec<Row>) -> Self {
        let opts = SimOptions {
            refuse_after_commit_ms: window.then_some(METADATA_SYNC_WAIT_MS),
        };
        let mut sim = Simulator::with_options(opts);
        sim.replace_rows(rows);
        let config = CitusConfig {
            group: 0,
            database: "citus".into(),
        };
        Host {
            base: SimHost::new(
                Handler::new(config, COORD_NAME, coord_url()),
                sim,
                1_000_000,
            ),
            window,
            txn_updated: false,
            tickets: BTreeSet::new(),
            completed: BTreeSet::new(),
            reload_due: true,
            trace: Vec::new(),
            packer: None,
        }
    }

    /// One loop turn: statements until the policy has none, checking (a) and (b).
    fn turn(&mut self) -> Result<(), TestCaseError> {
        let delivery = if self.packer.is_some() {
            Delivery::Batches
        } else {
            Delivery::OneByOne
        };
        let now = self.base.now;
        let window = self.window;
        let (trace, txn_updated, reload_due) =
            (&mut self.trace, &mut self.txn_updated, &mut self.reload_due);
        let mut n = 0;
        self.base.turn(delivery, |step| {
            let stmt = step.statement;
            let result = step.result;
            n += 1;
            prop_assert!(n < 500, "the turn does not end: {:?}", trace);
            if !step.in_transaction {
                *txn_updated = false;
            }
            let k = Kind::of(stmt);
            let in_txn = step.in_transaction;
            prop_assert!(
                !(in_txn && *txn_updated && matches!(k, Kind::Add | Kind::Remove)),
                "(a) {stmt:?} after an update in the same transaction; trace: {:#?}",
                trace
            );
            if k == Kind::Load {
                prop_assert!(*reload_due, "reload without a reason; trace: {:#?}", trace);
            }
            match result {
                StatementResult::Metadata(_) => *reload_due = false,
                // A lost transaction that an earlier turn opened may be reloaded.
                StatementResult::Failed(e)
                    if step.injected || step.in_flight || !e.message.contains(OUT_OF_SYNC) =>
                {
                    *reload_due = true
                }
                _ => {}
            }
            trace.push(format!("t={now} {stmt:?} -> {result:?}"));
            if k == Kind::Update && in_txn {
                *txn_updated = true;
            }
            if let StatementResult::Failed(e) = result {
                let allowed = step.injected
                    || (window
                        && matches!(k, Kind::Add | Kind::Remove)
                        && e.message.contains(OUT_OF_SYNC));
                prop_assert!(
                    allowed,
                    "(a) refused: {stmt:?}: {}; trace: {:#?}",
                    e.message,
                    trace
                );
            }
            prop_assert!(
                *result != StatementResult::RolledBack,
                "(a) COMMIT answered ROLLBACK; trace: {:#?}",
                trace
            );
            Ok(())
        })?;
        prop_assert!(!self.base.handler.is_busy());
        self.completed.extend(self.base.handler.poll_completed());
        // (b) an open transaction is the policy's in-flight one, and within its deadline.
        prop_assert_eq!(
            self.base.sim.in_transaction(),
            self.base.handler.in_flight_group().is_some(),
            "(b) session transaction vs policy; trace: {:#?}",
            self.trace
        );
        if let Some(d) = self.base.handler.in_flight_deadline() {
            prop_assert!(
                d > self.base.now,
                "(b) transaction open at {} past its deadline {d}; trace: {:#?}",
                self.base.now,
                self.trace
            );
        }
        Ok(())
    }

    fn heartbeat(&mut self, w: &World) {
        match &mut self.packer {
            Some(p) => self
                .base
                .handler
                .handle_heartbeat_packed(self.base.now, p.pack(&w.view()))
                .expect("a packed view is accepted"),
            None => self.base.handler.handle_heartbeat(self.base.now, &w.view()),
        }
        self.completed.extend(self.base.handler.poll_completed());
    }

    fn event(
        &mut self,
        w: &World,
        kind: &str,
        g: GroupId,
        leader: &str,
        timeout: u32,
        cooldown: Option<u32>,
    ) {
        let cooldown = cooldown
            .map(|c| format!(r#","cooldown":{c}"#))
            .unwrap_or_default();
        let body = format!(
            r#"{{"type":"{kind}","group":{g},"leader":"{leader}","timeout":{timeout}{cooldown}}}"#
        );
        let outcome = if self.packer.is_some() {
            let bytes = pack_once(&w.view());
            let view = PackedView {
                seq: 0,
                base: None,
                bytes: &bytes,
            };
            self.base
                .handler
                .handle_event_packed(self.base.now, view, &body)
        } else {
            self.base
                .handler
                .handle_event(self.base.now, &w.view(), &body)
        };
        match outcome {
            Ok(EventOutcome::Queued(t)) => {
                assert!(self.tickets.insert(t), "ticket {t} handed out twice");
            }
            Ok(_) => {}
            Err(e) => assert!(kind == "restart", "valid event refused: {e}"),
        }
        self.completed.extend(self.base.handler.poll_completed());
    }

    fn demote(&mut self) {
        self.reload_due = true;
        self.base.sim.lose_session();
        self.base.handler.handle_demote();
        self.completed.extend(self.base.handler.poll_completed());
    }

    /// Moves the clock past the open transaction's deadline and Citus's metadata sync wait.
    fn past_deadlines(&mut self) {
        let deadline = self.base.handler.in_flight_deadline().unwrap_or(0);
        self.base.now = self.base.now.max(deadline) + METADATA_SYNC_WAIT_MS + 1;
    }

    /// (c) and (d): changes and failures stop; two heartbeat+turn cycles converge (with the
    /// post-commit window, a few more: see `converges_with_the_post_commit_sync_window`).
    fn converge(&mut self, w: &World) -> Result<(), TestCaseError> {
        self.disarm();
        // Changes that already reached the policy (queued worker events, an open
        // transaction) play out first: turns, each past every deadline and retry time.
        self.trace.push("---- settle".into());
        let mut settled = false;
        for _ in 0..2 * (w.workers.len() + 3) {
            if self.base.handler.queued_tasks() == 0
                && self.base.handler.in_flight_group().is_none()
            {
                settled = true;
                break;
            }
            self.past_deadlines();
            self.turn()?;
        }
        prop_assert!(
            settled,
            "the queue does not drain; trace: {:#?}",
            self.trace
        );
        let max_cycles = if self.window { w.workers.len() + 3 } else { 2 };
        let mut verdict = Err(String::new());
        for cycle in 1..=max_cycles {
            self.trace.push(format!("---- converge {cycle}"));
            self.past_deadlines();
            self.heartbeat(w);
            self.turn()?;
            verdict = self.matches_truth(w);
            if verdict.is_ok() && cycle >= 2 {
                break;
            }
        }
        prop_assert!(
            !self.base.sim.in_transaction(),
            "transaction still open after convergence"
        );
        if let Err(e) = verdict {
            prop_assert!(
                false,
                "(c) after {max_cycles} cycles: {e}; trace: {:#?}",
                self.trace
            );
        }
        // Once converged, a heartbeat and a turn send nothing at all.
        let before = self.trace.len();
        self.trace.push("---- idle".into());
        self.past_deadlines();
        self.heartbeat(w);
        self.turn()?;
        prop_assert_eq!(
            self.trace.len(),
            before + 1,
            "(c) statements after convergence; trace: {:#?}",
            self.trace
        );
        let pending: Vec<&u64> = self.tickets.difference(&self.completed).collect();
        prop_assert!(
            pending.is_empty(),
            "(d) tickets never completed: {pending:?}"
        );
        Ok(())
    }

    fn matches_truth(&self, w: &World) -> Result<(), String> {
        let rows = self.base.sim.committed_rows();
        for (g, want) in w.truth() {
            let group: Vec<&Row> = rows.iter().filter(|r| r.groupid == g).collect();
            let primaries: Vec<(String, i32)> = group
                .iter()
                .filter(|r| r.noderole == citus_sim::NodeRole::Primary)
                .map(|r| (r.nodename.clone(), r.nodeport))
                .collect();
            let secondaries: BTreeSet<(String, i32)> = group
                .iter()
                .filter(|r| r.noderole != citus_sim::NodeRole::Primary)
                .map(|r| (r.nodename.clone(), r.nodeport))
                .collect();
            if primaries != vec![want.primary.clone()] {
                return Err(format!(
                    "group {g}: primary rows {primaries:?}, want {:?}; rows {rows:?}",
                    want.primary
                ));
            }
            if secondaries != want.secondaries {
                return Err(format!(
                    "group {g}: secondary rows {secondaries:?}, want {:?}; rows {rows:?}",
                    want.secondaries
                ));
            }
        }
        Ok(())
    }
}

// ----- random inputs ----------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
struct MemFlags {
    running: bool,
    nolb: bool,
    kwargs: bool,
    upper: bool,
    unix: bool,
}

fn mem_flags() -> impl Strategy<Value = MemFlags> {
    (
        prop::bool::weighted(0.8),
        prop::bool::weighted(0.15),
        any::<bool>(),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.05),
    )
        .prop_map(|(running, nolb, kwargs, upper, unix)| MemFlags {
            running,
            nolb,
            kwargs,
            upper,
            unix,
        })
}

#[derive(Clone, Debug)]
struct Topology {
    /// Per worker group: its members' flags and how its leader looks.
    groups: Vec<(Vec<MemFlags>, u8)>,
    standbys: Vec<MemFlags>,
    /// 0: empty pg_dist_node; 1: matching the DCS; 2: stale (seeded perturbation).
    initial: u8,
    seed: u64,
}

fn topology() -> impl Strategy<Value = Topology> {
    (
        prop::collection::vec((prop::collection::vec(mem_flags(), 1..=4), 0u8..8), 1..=6),
        prop::collection::vec(mem_flags(), 0..=2),
        0u8..3,
        any::<u64>(),
    )
        .prop_map(|(groups, standbys, initial, seed)| Topology {
            groups,
            standbys,
            initial,
            seed,
        })
}

#[derive(Clone, Debug)]
enum Op {
    Heartbeat,
    Turn,
    Advance(u32),
    /// The leader fails; `pick` chooses the new one (possibly a never-registered member).
    Failover {
        g: usize,
        pick: usize,
        old_running: bool,
    },
    /// A planned switchover through the worker events, cut off after `stages` stages.
    Switchover {
        g: usize,
        pick: usize,
        stages: u8,
        turns: bool,
        timeout: u8,
        cooldown: Option<u8>,
    },
    /// A single event (possibly from a member that is not the leader, possibly invalid).
    Event {
        kind: u8,
        g: usize,
        pick: Option<usize>,
        timeout: u8,
    },
    AddMember {
        g: usize,
        flags: MemFlags,
    },
    RemoveMember {
        g: usize,
        pick: usize,
    },
    ReplaceMember {
        g: usize,
        pick: usize,
        flags: MemFlags,
    },
    ToggleRunning {
        g: usize,
        pick: usize,
    },
    ToggleNolb {
        g: usize,
        pick: usize,
    },
    VanishLeader {
        g: usize,
    },
    NullLeader {
        g: usize,
    },
    RestoreLeader {
        g: usize,
        pick: usize,
    },
    StandbyAdd {
        flags: MemFlags,
    },
    StandbyRemove {
        pick: usize,
    },
    Fail {
        kind: usize,
    },
    Reload,
    Demote,
}

fn op() -> impl Strategy<Value = Op> {
    let g = 0usize..6;
    let pick = 0usize..5;
    prop_oneof![
        6 => Just(Op::Heartbeat),
        8 => Just(Op::Turn),
        4 => prop_oneof![0u32..2_000, 0u32..70_000].prop_map(Op::Advance),
        2 => (g.clone(), pick.clone(), any::<bool>())
            .prop_map(|(g, pick, old_running)| Op::Failover { g, pick, old_running }),
        3 => (g.clone(), pick.clone(), 1u8..=4, any::<bool>(), 1u8..60, prop::option::of(0u8..12))
            .prop_map(|(g, pick, stages, turns, timeout, cooldown)| Op::Switchover {
                g, pick, stages, turns, timeout, cooldown
            }),
        2 => (0u8..4, g.clone(), prop::option::of(pick.clone()), 1u8..60)
            .prop_map(|(kind, g, pick, timeout)| Op::Event { kind, g, pick, timeout }),
        2 => (g.clone(), mem_flags()).prop_map(|(g, flags)| Op::AddMember { g, flags }),
        2 => (g.clone(), pick.clone()).prop_map(|(g, pick)| Op::RemoveMember { g, pick }),
        2 => (g.clone(), pick.clone(), mem_flags())
            .prop_map(|(g, pick, flags)| Op::ReplaceMember { g, pick, flags }),
        2 => (g.clone(), pick.clone()).prop_map(|(g, pick)| Op::ToggleRunning { g, pick }),
        1 => (g.clone(), pick.clone()).prop_map(|(g, pick)| Op::ToggleNolb { g, pick }),
        1 => g.clone().prop_map(|g| Op::VanishLeader { g }),
        1 => g.clone().prop_map(|g| Op::NullLeader { g }),
        2 => (g.clone(), pick.clone()).prop_map(|(g, pick)| Op::RestoreLeader { g, pick }),
        1 => mem_flags().prop_map(|flags| Op::StandbyAdd { flags }),
        1 => pick.clone().prop_map(|pick| Op::StandbyRemove { pick }),
        2 => (0usize..Kind::ALL.len()).prop_map(|kind| Op::Fail { kind }),
        1 => Just(Op::Reload),
        1 => Just(Op::Demote),
    ]
}

/// A tiny deterministic generator for the seeded stale pg_dist_node.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

fn build(t: &Topology) -> (World, Vec<Row>) {
    let mut w = World {
        workers: BTreeMap::new(),
        standbys: Vec::new(),
        serial: 0,
    };
    for (i, (flags, leader_mode)) in t.groups.iter().enumerate() {
        let g = i as GroupId + 1;
        let members: Vec<Mem> = flags.iter().map(|f| w.fresh(g, *f)).collect();
        let mut grp = Grp {
            leader: None,
            members,
        };
        match leader_mode {
            // No leader key, or one naming a member that is gone.
            0 => {}
            1 => grp.leader = Some(format!("gone{g}")),
            // The leader is not (yet) a running primary.
            2 => {
                grp.members[0].running = false;
                grp.leader = Some(grp.members[0].name.clone());
            }
            _ => {
                let m = &mut grp.members[0];
                m.primary_role = true;
                m.running = true;
                grp.leader = Some(m.name.clone());
            }
        }
        w.workers.insert(g, grp);
    }
    for f in &t.standbys {
        let m = w.fresh(0, *f);
        w.standbys.push(m);
    }

    let mut rows = Vec::new();
    let mut id = 0;
    let mut push = |g: GroupId, host: String, port: i32, role: citus_sim::NodeRole| {
        id += 1;
        rows.push(Row {
            nodeid: id,
            groupid: g,
            nodename: host,
            nodeport: port,
            noderole: role,
        });
    };
    let mut rng = Rng(t.seed | 1);
    match t.initial {
        0 => {}
        1 => {
            for (g, want) in w.truth() {
                push(
                    g,
                    want.primary.0,
                    want.primary.1,
                    citus_sim::NodeRole::Primary,
                );
                for (h, p) in want.secondaries {
                    push(g, h, p, citus_sim::NodeRole::Secondary);
                }
            }
        }
        _ => {
            if rng.chance(80) {
                push(0, COORD_HOST.into(), 5432, citus_sim::NodeRole::Primary);
            }
            for (g, grp) in &w.workers {
                let g = *g;
                // The primary row: the leader's, a leftover `-demoted` one, another member's,
                // a ghost's, or none (a group with only secondary rows).
                let primary = match rng.next() % 6 {
                    0 => None,
                    1 => Some(format!("ghost{g}.example")),
                    2 => grp.leader_member().map(|m| format!("{}-demoted", m.host)),
                    3 => grp.members.last().map(|m| m.host.clone()),
                    _ => grp.leader_member().map(|m| m.host.clone()),
                };
                let mut used = BTreeSet::new();
                if let Some(h) = primary {
                    let port = grp
                        .members
                        .iter()
                        .find(|m| h.starts_with(&m.host))
                        .map_or(5432, |m| m.port);
                    used.insert(h.clone());
                    push(g, h, port, citus_sim::NodeRole::Primary);
                }
                for m in &grp.members {
                    if !used.contains(&m.host) && rng.chance(60) {
                        push(g, m.host.clone(), m.port, citus_sim::NodeRole::Secondary);
                    }
                }
                if rng.chance(25) {
                    push(
                        g,
                        format!("stale{g}.example"),
                        5432,
                        citus_sim::NodeRole::Secondary,
                    );
                }
            }
        }
    }
    (w, rows)
}

/// Applies one step to the world and the host.
fn apply(w: &mut World, host: &mut Host, op: &Op) -> Result<(), TestCaseError> {
    let groups = w.group_ids();
    let gid = |g: &usize| groups[*g % groups.len()];
    match op {
        Op::Heartbeat => host.heartbeat(w),
        Op::Turn => host.turn()?,
        Op::Advance(ms) => host.now += u64::from(*ms),
        Op::Failover {
            g,
            pick,
            old_running,
        } => {
            let g = gid(g);
            let new = choose_new_leader(w, g, *pick);
            let grp = w.workers.get_mut(&g).unwrap();
            if let Some(i) = grp.leader_idx() {
                grp.members[i].primary_role = false;
                grp.members[i].running = *old_running;
            }
            let m = &mut grp.members[new];
            m.primary_role = true;
            m.running = true;
            m.unix = false;
            grp.leader = Some(m.name.clone());
        }
        Op::Switchover {
            g,
            pick,
            stages,
            turns,
            timeout,
            cooldown,
        } => {
            let g = gid(g);
            let timeout = u32::from(*timeout);
            let cooldown = cooldown.map(u32::from);
            let Some(old) = w.workers[&g].leader_member().map(|m| m.name.clone()) else {
                return Ok(());
            };
            host.event(w, "before_demote", g, &old, timeout, cooldown);
            if *turns {
                host.turn()?;
            }
            if *stages >= 2 {
                // The old primary stops; nobody holds the leader key for a moment.
                let grp = w.workers.get_mut(&g).unwrap();
                if let Some(i) = grp.leader_idx() {
                    grp.members[i].running = false;
                    grp.members[i].primary_role = false;
                }
                grp.leader = None;
                if *turns {
                    host.heartbeat(w);
                    host.turn()?;
                }
            }
            if *stages >= 3 {
                let new = choose_new_leader(w, g, *pick);
                let grp = w.workers.get_mut(&g).unwrap();
                let m = &mut grp.members[new];
                m.running = true;
                m.unix = false;
                let name = m.name.clone();
                grp.leader = Some(name.clone());
                host.event(w, "before_promote", g, &name, timeout, cooldown);
                if *turns {
                    host.turn()?;
                }
                if *stages >= 4 {
                    let grp = w.workers.get_mut(&g).unwrap();
                    if let Some(i) = grp.leader_idx() {
                        grp.members[i].primary_role = true;
                    }
                    if let Some(o) = grp.members.iter_mut().find(|m| m.name == old) {
                        o.running = true;
                    }
                    host.event(w, "after_promote", g, &name, timeout, cooldown);
                    if *turns {
                        host.turn()?;
                    }
                }
            }
        }
        Op::Event {
            kind,
            g,
            pick,
            timeout,
        } => {
            let g = gid(g);
            let grp = &w.workers[&g];
            let leader = match pick {
                Some(p) if !grp.members.is_empty() => {
                    grp.members[p % grp.members.len()].name.clone()
                }
                _ => grp.leader.clone().unwrap_or_else(|| "nobody".into()),
            };
            let kind = [
                "before_demote",
                "before_promote",
                "after_promote",
                "restart",
            ][*kind as usize];
            host.event(w, kind, g, &leader, u32::from(*timeout), Some(1));
        }
        Op::AddMember { g, flags } => {
            let g = gid(g);
            let m = w.fresh(g, *flags);
            w.workers.get_mut(&g).unwrap().members.push(m);
        }
        Op::RemoveMember { g, pick } => {
            let grp = w.workers.get_mut(&gid(g)).unwrap();
            if !grp.members.is_empty() {
                let i = pick % grp.members.len();
                grp.members.remove(i);
            }
        }
        Op::ReplaceMember { g, pick, flags } => {
            let g = gid(g);
            let m = w.fresh(g, *flags);
            let grp = w.workers.get_mut(&g).unwrap();
            if grp.members.is_empty() {
                grp.members.push(m);
            } else {
                let i = pick % grp.members.len();
                let was_leader = grp.leader.as_deref() == Some(grp.members[i].name.as_str());
                if !was_leader {
                    grp.members[i] = m;
                }
            }
        }
        Op::ToggleRunning { g, pick } => {
            let grp = w.workers.get_mut(&gid(g)).unwrap();
            if !grp.members.is_empty() {
                let n = grp.members.len();
                let m = &mut grp.members[pick % n];
                m.running = !m.running;
            }
        }
        Op::ToggleNolb { g, pick } => {
            let grp = w.workers.get_mut(&gid(g)).unwrap();
            if !grp.members.is_empty() {
                let n = grp.members.len();
                let m = &mut grp.members[pick % n];
                m.nolb = !m.nolb;
            }
        }
        Op::VanishLeader { g } => {
            let g = gid(g);
            w.workers.get_mut(&g).unwrap().leader = Some(format!("gone{g}"));
        }
        Op::NullLeader { g } => w.workers.get_mut(&gid(g)).unwrap().leader = None,
        Op::RestoreLeader { g, pick } => {
            let grp = w.workers.get_mut(&gid(g)).unwrap();
            if !grp.members.is_empty() {
                for m in &mut grp.members {
                    m.primary_role = false;
                }
                let n = grp.members.len();
                let m = &mut grp.members[pick % n];
                m.primary_role = true;
                m.running = true;
                grp.leader = Some(m.name.clone());
            }
        }
        Op::StandbyAdd { flags } => {
            let m = w.fresh(0, *flags);
            w.standbys.push(m);
        }
        Op::StandbyRemove { pick } => {
            if !w.standbys.is_empty() {
                let i = pick % w.standbys.len();
                w.standbys.remove(i);
            }
        }
        Op::Fail { kind } => host.arm(Kind::ALL[*kind]),
        Op::Reload => {
            host.reload_due = true;
            host.handler.schedule_reload()
        }
        Op::Demote => host.demote(),
    }
    Ok(())
}

/// Index of the member that becomes leader: another existing member, or a new one that was
/// never registered when `pick` points past the end (or no other member exists).
fn choose_new_leader(w: &mut World, g: GroupId, pick: usize) -> usize {
    let grp = &w.workers[&g];
    let current = grp.leader_idx();
    let n = grp.members.len();
    let p = pick % (n + 1);
    if p < n && Some(p) != current {
        return p;
    }
    let m = w.fresh(
        g,
        MemFlags {
            running: true,
            nolb: false,
            kwargs: pick.is_multiple_of(2),
            upper: false,
            unix: false,
        },
    );
    let grp = w.workers.get_mut(&g).unwrap();
    grp.members.push(m);
    grp.members.len() - 1
}

fn run_case(window: bool, t: &Topology, ops: &[Op]) -> Result<(), TestCaseError> {
    run(window, t, ops, false, false).map(|_| ())
}

/// Runs a case; with `handoff`, the policy's state moves to a fresh instance (export,
/// import) before every op, as a host does when it swaps policy builds. Returns the trace.
fn run(
    window: bool,
    t: &Topology,
    ops: &[Op],
    handoff: bool,
    packed: bool,
) -> Result<Vec<String>, TestCaseError> {
    let (mut w, rows) = build(t);
    let mut host = Host::new(window, rows);
    if packed {
        host.packer = Some(Packer::new());
    }
    for op in ops {
        if handoff {
            let state = host.handler.export_state();
            host.handler = Handler::import_state(&state).map_err(TestCaseError::fail)?;
        }
        host.trace.push(format!("---- {op:?}"));
        apply(&mut w, &mut host, op)?;
    }
    host.converge(&w)?;
    Ok(host.trace)
}

proptest! {
    #![proptest_config(ProptestConfig {
        // Modest by default so that the suite stays fast; PROPTEST_CASES=N for a long hunt.
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(160),
        max_shrink_iters: 4096,
        ..ProptestConfig::default()
    })]

    /// (a)-(d) with the replay simulator: add/remove refused only inside the updating
    /// transaction.
    #[test]
    fn policy_is_accepted_bounded_and_converges(
        t in topology(),
        ops in prop::collection::vec(op(), 0..40),
    ) {
        run_case(false, &t, &ops)?;
    }

    /// The same with Citus's post-commit metadata sync window (1 s) modelled: the refusal
    /// outside a transaction is retried later, and convergence still takes two heartbeats.
    #[test]
    fn converges_with_the_post_commit_sync_window(
        t in topology(),
        ops in prop::collection::vec(op(), 0..40),
    ) {
        run_case(true, &t, &ops)?;
    }

    /// State hand-off between any two steps is invisible: the statements are exactly those
    /// of an uninterrupted run.
    #[test]
    fn handoff_between_steps_changes_nothing(
        t in topology(),
        ops in prop::collection::vec(op(), 0..30),
    ) {
        let plain = run(false, &t, &ops, false, false)?;
        let handed = run(false, &t, &ops, true, false)?;
        prop_assert_eq!(plain, handed);
    }

    /// Contract 0.3.0's packed views (a steady heartbeat skipping the groups it settled) and
    /// statement batches decide exactly what the record views and single statements do, with
    /// or without a state hand-off between steps, with or without the sync window.
    #[test]
    fn packed_views_and_batches_change_nothing(
        t in topology(),
        ops in prop::collection::vec(op(), 0..40),
        window in any::<bool>(),
        handoff in any::<bool>(),
    ) {
        let plain = run(window, &t, &ops, false, false)?;
        let packed = run(window, &t, &ops, handoff, true)?;
        prop_assert_eq!(plain, packed);
    }
}
