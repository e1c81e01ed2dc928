//! The thin layer between WIT and the policy modules (wasm32 only). The current contract
//! (0.4.0) is the default; `--features wit-v0_1`, `wit-v0_2` or `wit-v0_3` build the same logic
//! against a frozen earlier contract. All generate the same Rust module paths (the version is
//! not part of them), so one mapping serves, with the calls a version lacks left out:
//! the view as records and one statement at a time up to 0.3.0, metrics from 0.2.0, the
//! packed view and batches of records in 0.3.0 only, text from 0.4.0.

#[cfg(not(any(feature = "wit-v0_1", feature = "wit-v0_2", feature = "wit-v0_3")))]
wit_bindgen::generate!({ path: "../wit/since_v0.4.0", world: "policy-component" });
#[cfg(feature = "wit-v0_3")]
wit_bindgen::generate!({ path: "../wit/since_v0.3.0", world: "policy-component" });
#[cfg(all(feature = "wit-v0_2", not(feature = "wit-v0_3")))]
wit_bindgen::generate!({ path: "../wit/since_v0.2.0", world: "policy-component" });
#[cfg(all(
    feature = "wit-v0_1",
    not(any(feature = "wit-v0_2", feature = "wit-v0_3"))
))]
wit_bindgen::generate!({ path: "../wit/since_v0.1.0", world: "policy-component" });

use crate::handler::{self, Level};
use crate::{bootstrap, config, gucs, slots};
#[cfg(any(feature = "wit-v0_1", feature = "wit-v0_2", feature = "wit-v0_3"))]
use crate::{dcs, statement as st};
use citus_ha::policy::host;
use citus_ha::policy::types as t;
#[cfg(not(any(feature = "wit-v0_1", feature = "wit-v0_2", feature = "wit-v0_3")))]
use exports::citus_ha::policy::policy as p;
use exports::citus_ha::policy::policy::{Guest, GuestHandler, Handler as HandlerHandle};
use std::cell::RefCell;

struct Component;
export!(Component);

/// The exported resource: the state machine behind a RefCell (resources take `&self`).
pub struct HandlerResource(RefCell<handler::Handler>);

impl HandlerResource {
    fn with<R>(&self, f: impl FnOnce(&mut handler::Handler) -> R) -> R {
        let mut h = self.0.borrow_mut();
        let r = f(&mut h);
        for line in h.drain_logs() {
            host::log(level(line.level), &line.message);
        }
        r
    }
}

fn level(l: Level) -> t::Level {
    match l {
        Level::Debug => t::Level::Debug,
        Level::Info => t::Level::Info,
        Level::Warn => t::Level::Warn,
        Level::Error => t::Level::Error,
    }
}

fn invalid(e: crate::InvalidInput) -> t::InvalidInput {
    t::InvalidInput {
        field: e.field,
        reason: e.reason,
    }
}

fn to_config(c: t::CitusConfig) -> config::CitusConfig {
    config::CitusConfig {
        group: c.group,
        database: c.database,
    }
}

#[cfg(any(feature = "wit-v0_1", feature = "wit-v0_2", feature = "wit-v0_3"))]
fn node_role(r: t::NodeRole) -> crate::node::NodeRole {
    match r {
        t::NodeRole::Primary => crate::node::NodeRole::Primary,
        t::NodeRole::Secondary => crate::node::NodeRole::Secondary,
        t::NodeRole::Unavailable => crate::node::NodeRole::Unavailable,
    }
}

#[cfg(any(feature = "wit-v0_1", feature = "wit-v0_2", feature = "wit-v0_3"))]
fn wit_role(r: crate::node::NodeRole) -> t::NodeRole {
    match r {
        crate::node::NodeRole::Primary => t::NodeRole::Primary,
        crate::node::NodeRole::Secondary => t::NodeRole::Secondary,
        crate::node::NodeRole::Unavailable => t::NodeRole::Unavailable,
    }
}

#[cfg(any(feature = "wit-v0_1", feature = "wit-v0_2", feature = "wit-v0_3"))]
fn group_view(g: t::GroupView) -> dcs::GroupView {
    dcs::GroupView {
        leader: g.leader,
        members: g
            .members
            .into_iter()
            .map(|m| dcs::Member {
                name: m.name,
                conn_url: m.conn_url,
                conn_kwargs: m.conn_kwargs.map(|k| dcs::ConnKwargs {
                    host: k.host,
                    port: k.port,
                }),
                role: m.role,
                state: m.state,
                noloadbalance: m.noloadbalance,
            })
            .collect(),
    }
}

#[cfg(any(feature = "wit-v0_1", feature = "wit-v0_2", feature = "wit-v0_3"))]
fn cluster_view(v: t::ClusterView) -> dcs::ClusterView {
    dcs::ClusterView {
        coordinator: group_view(v.coordinator),
        workers: v
            .workers
            .into_iter()
            .map(|(g, w)| (g, group_view(w)))
            .collect(),
    }
}

#[cfg(any(feature = "wit-v0_1", feature = "wit-v0_2", feature = "wit-v0_3"))]
fn wit_statement(s: st::Statement) -> t::Statement {
    match s {
        st::Statement::LoadMetadata => t::Statement::LoadMetadata,
        st::Statement::Begin => t::Statement::Begin,
        st::Statement::Commit => t::Statement::Commit,
        st::Statement::Rollback => t::Statement::Rollback,
        st::Statement::AddNode {
            host,
            port,
            groupid,
            role,
        } => t::Statement::AddNode(t::AddNode {
            host,
            port,
            groupid,
            role: wit_role(role),
        }),
        st::Statement::UpdateNode {
            nodeid,
            host,
            port,
            force,
            cooldown_ms,
        } => t::Statement::UpdateNode(t::UpdateNode {
            nodeid,
            host,
            port,
            force,
            cooldown_ms,
        }),
        st::Statement::RemoveNode { host, port } => {
            t::Statement::RemoveNode(t::RemoveNode { host, port })
        }
    }
}

#[cfg(any(feature = "wit-v0_1", feature = "wit-v0_2", feature = "wit-v0_3"))]
fn statement_result(r: t::StatementResult) -> st::StatementResult {
    match r {
        t::StatementResult::Done => st::StatementResult::Done,
        t::StatementResult::RolledBack => st::StatementResult::RolledBack,
        t::StatementResult::Added(id) => st::StatementResult::Added(id),
        t::StatementResult::Metadata(rows) => st::StatementResult::Metadata(
            rows.into_iter()
                .map(|r| crate::node::PgDistRow {
                    nodeid: r.nodeid,
                    groupid: r.groupid,
                    nodename: r.nodename,
                    nodeport: r.nodeport,
                    noderole: node_role(r.noderole),
                })
                .collect(),
        ),
        t::StatementResult::Failed(e) => st::StatementResult::Failed(st::StatementError {
            message: e.message,
            sqlstate: e.sqlstate,
            connection_lost: e.connection_lost,
        }),
    }
}

impl Guest for Component {
    type Handler = HandlerResource;

    fn policy_version() -> String {
        crate::POLICY_VERSION.to_string()
    }

    fn validate_config(section: String) -> Result<t::CitusConfig, t::InvalidInput> {
        config::validate_config_json(&section)
            .map(|c| t::CitusConfig {
                group: c.group,
                database: c.database,
            })
            .map_err(invalid)
    }

    fn adjust_gucs(
        params: Vec<(String, String)>,
        local_host: Option<String>,
    ) -> Result<Vec<(String, String)>, t::InvalidInput> {
        gucs::adjust_gucs(&params, local_host.as_deref()).map_err(invalid)
    }

    fn keep_replication_slot(
        c: t::CitusConfig,
        is_primary: bool,
        slot: t::ReplicationSlot,
    ) -> bool {
        slots::keep_replication_slot(
            &to_config(c),
            is_primary,
            &slots::ReplicationSlot {
                name: slot.name,
                slot_type: slot.slot_type,
                database: slot.database,
                plugin: slot.plugin,
            },
        )
    }

    fn bootstrap_plan(
        c: t::CitusConfig,
        default_database: String,
        auth: t::SuperuserAuth,
        connect_url: Option<String>,
    ) -> Result<Vec<t::BootstrapStep>, t::InvalidInput> {
        let auth = bootstrap::SuperuserAuth {
            password: auth.password,
            sslcert: auth.sslcert,
            sslkey: auth.sslkey,
        };
        let steps = bootstrap::bootstrap_plan(
            &to_config(c),
            &default_database,
            &auth,
            connect_url.as_deref(),
        )
        .map_err(invalid)?;
        Ok(steps
            .into_iter()
            .map(|s| match s {
                bootstrap::BootstrapStep::CreateDatabase(d) => t::BootstrapStep::CreateDatabase(d),
                bootstrap::BootstrapStep::CreateExtension => t::BootstrapStep::CreateExtension,
                bootstrap::BootstrapStep::InsertAuthinfo(a) => t::BootstrapStep::InsertAuthinfo(a),
                bootstrap::BootstrapStep::SetCoordinatorHost(a) => {
                    t::BootstrapStep::SetCoordinatorHost((a.host, a.port))
                }
            })
            .collect())
    }
}

impl GuestHandler for HandlerResource {
    fn new(c: t::CitusConfig, name: String, connect_url: String) -> Self {
        HandlerResource(RefCell::new(handler::Handler::new(
            to_config(c),
            name,
            connect_url,
        )))
    }

    #[cfg(any(feature = "wit-v0_1", feature = "wit-v0_2", feature = "wit-v0_3"))]
    fn import_state(state: Vec<u8>) -> Result<HandlerHandle, String> {
        if cfg!(feature = "fault-import") {
            return Err("this build refuses every state (fault-import test build)".into());
        }
        let h = handler::Handler::import_state(&state)?;
        Ok(HandlerHandle::new(HandlerResource(RefCell::new(h))))
    }

    #[cfg(any(feature = "wit-v0_1", feature = "wit-v0_2", feature = "wit-v0_3"))]
    fn export_state(&self) -> Vec<u8> {
        self.0.borrow().export_state()
    }

    #[cfg(any(feature = "wit-v0_1", feature = "wit-v0_2", feature = "wit-v0_3"))]
    fn handle_heartbeat(&self, now: t::Instant, view: t::ClusterView) {
        crate::faults::on_heartbeat();
        let view = cluster_view(view);
        self.with(|h| h.handle_heartbeat(now, &view))
    }

    #[cfg(any(feature = "wit-v0_1", feature = "wit-v0_2", feature = "wit-v0_3"))]
    fn handle_event(
        &self,
        now: t::Instant,
        view: t::ClusterView,
        event: String,
    ) -> Result<t::EventOutcome, t::InvalidInput> {
        let view = cluster_view(view);
        self.with(|h| h.handle_event(now, &view, &event))
            .map(event_outcome)
            .map_err(invalid)
    }

    fn schedule_reload(&self) {
        self.with(|h| h.schedule_reload())
    }

    fn handle_demote(&self) {
        self.with(|h| h.handle_demote())
    }

    #[cfg(any(feature = "wit-v0_1", feature = "wit-v0_2", feature = "wit-v0_3"))]
    fn poll_statement(&self, now: t::Instant) -> Option<t::Statement> {
        self.with(|h| h.poll_statement(now)).map(wit_statement)
    }

    #[cfg(any(feature = "wit-v0_1", feature = "wit-v0_2", feature = "wit-v0_3"))]
    fn handle_result(&self, now: t::Instant, result: t::StatementResult) {
        let result = statement_result(result);
        self.with(|h| h.handle_result(now, result))
    }

    fn poll_timeout(&self) -> Option<t::Instant> {
        crate::faults::on_warmup();
        self.0.borrow().poll_timeout()
    }

    fn poll_completed(&self) -> Vec<t::Ticket> {
        self.0.borrow_mut().poll_completed()
    }

    #[cfg(not(feature = "wit-v0_1"))]
    fn metrics(&self) -> t::HandlerMetrics {
        let h = self.0.borrow();
        let m = h.metrics();
        t::HandlerMetrics {
            deadline_rollbacks: m.deadline_rollbacks,
            statements: m.statements,
            failed_statements: m.failed_statements,
            sync_retries: m.sync_retries,
            #[cfg(not(any(feature = "wit-v0_1", feature = "wit-v0_2", feature = "wit-v0_3")))]
            expired_events: m.expired_events,
            queued_tasks: h.queued_tasks() as u32,
            in_flight: h.in_flight_group().is_some(),
        }
    }

    #[cfg(feature = "wit-v0_3")]
    fn export_state_json(&self) -> Vec<u8> {
        self.0.borrow().export_state_json()
    }

    #[cfg(feature = "wit-v0_3")]
    fn handle_heartbeat_packed(
        &self,
        now: t::Instant,
        view: t::PackedView,
    ) -> Result<(), t::InvalidInput> {
        crate::faults::on_heartbeat();
        if cfg!(feature = "fault-packed") {
            return Err(t::InvalidInput {
                field: "view".into(),
                reason: "this build refuses every packed view (fault-packed test build)".into(),
            });
        }
        let view = crate::packed_view::PackedView {
            seq: view.seq,
            base: view.base,
            bytes: &view.bytes,
        };
        self.with(|h| h.handle_heartbeat_packed(now, view))
            .map_err(invalid)
    }

    #[cfg(feature = "wit-v0_3")]
    fn handle_event_packed(
        &self,
        now: t::Instant,
        view: t::PackedView,
        event: String,
    ) -> Result<t::EventOutcome, t::InvalidInput> {
        let view = crate::packed_view::PackedView {
            seq: view.seq,
            base: view.base,
            bytes: &view.bytes,
        };
        self.with(|h| h.handle_event_packed(now, view, &event))
            .map(event_outcome)
            .map_err(invalid)
    }

    #[cfg(feature = "wit-v0_3")]
    fn poll_statements(&self, now: t::Instant) -> Vec<t::Statement> {
        self.with(|h| h.poll_statements(now))
            .into_iter()
            .map(wit_statement)
            .collect()
    }

    #[cfg(feature = "wit-v0_3")]
    fn handle_results(&self, now: t::Instant, outcomes: Vec<t::StatementResult>) {
        let results = outcomes.into_iter().map(statement_result).collect();
        self.with(|h| h.handle_results(now, results))
    }

    #[cfg(not(any(feature = "wit-v0_1", feature = "wit-v0_2", feature = "wit-v0_3")))]
    fn import_state(state: String) -> Result<HandlerHandle, String> {
        if cfg!(feature = "fault-import") {
            return Err("this build refuses every state (fault-import test build)".into());
        }
        let h = handler::Handler::import_state(&state_bytes(&state)?)?;
        Ok(HandlerHandle::new(HandlerResource(RefCell::new(h))))
    }

    #[cfg(not(any(feature = "wit-v0_1", feature = "wit-v0_2", feature = "wit-v0_3")))]
    fn export_state(&self, format: p::StateFormat) -> String {
        let h = self.0.borrow();
        match format {
            p::StateFormat::Compact => {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.encode(h.export_state())
            }
            p::StateFormat::Json => {
                String::from_utf8(h.export_state_json()).expect("the JSON state is UTF-8")
            }
        }
    }

    #[cfg(not(any(feature = "wit-v0_1", feature = "wit-v0_2", feature = "wit-v0_3")))]
    fn set_connect_url(&self, url: String) -> Result<(), t::InvalidInput> {
        self.with(|h| h.set_connect_url(&url)).map_err(invalid)
    }

    #[cfg(not(any(feature = "wit-v0_1", feature = "wit-v0_2", feature = "wit-v0_3")))]
    fn handle_heartbeat(&self, now: t::Instant, view: String) -> Result<(), t::InvalidInput> {
        crate::faults::on_heartbeat();
        self.with(|h| h.handle_heartbeat_text(now, &view))
            .map_err(invalid)
    }

    #[cfg(not(any(feature = "wit-v0_1", feature = "wit-v0_2", feature = "wit-v0_3")))]
    fn handle_event(
        &self,
        now: t::Instant,
        view: String,
        event: String,
    ) -> Result<t::EventOutcome, t::InvalidInput> {
        self.with(|h| h.handle_event_text(now, &view, &event))
            .map(event_outcome)
            .map_err(invalid)
    }

    #[cfg(not(any(feature = "wit-v0_1", feature = "wit-v0_2", feature = "wit-v0_3")))]
    fn poll_statements(&self, now: t::Instant) -> String {
        let stmts = self.with(|h| h.poll_statements(now));
        let mut out = String::with_capacity(stmts.len() * 96);
        crate::wire::write_statements(&stmts, &mut out);
        out
    }

    #[cfg(not(any(feature = "wit-v0_1", feature = "wit-v0_2", feature = "wit-v0_3")))]
    fn handle_results(&self, now: t::Instant, results: String) -> Result<String, t::InvalidInput> {
        let results = crate::wire::read_results(&results).map_err(invalid)?;
        let next = self.with(|h| {
            h.handle_results(now, results);
            h.poll_statements(now)
        });
        let mut out = String::with_capacity(next.len() * 96);
        crate::wire::write_statements(&next, &mut out);
        Ok(out)
    }
}

fn event_outcome(o: handler::EventOutcome) -> t::EventOutcome {
    match o {
        handler::EventOutcome::Queued(ticket) => t::EventOutcome::Queued(ticket),
        handler::EventOutcome::Unchanged => t::EventOutcome::Unchanged,
        handler::EventOutcome::Discarded(why) => t::EventOutcome::Discarded(why),
    }
}

/// An imported state as the handler reads it: JSON (format 1) as is, the compact format from
/// its base64.
#[cfg(not(any(feature = "wit-v0_1", feature = "wit-v0_2", feature = "wit-v0_3")))]
fn state_bytes(state: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    if state.trim_start().starts_with('{') {
        return Ok(state.as_bytes().to_vec());
    }
    base64::engine::general_purpose::STANDARD
        .decode(state.trim())
        .map_err(|e| format!("state is neither JSON nor base64 of the compact format: {e}"))
}
