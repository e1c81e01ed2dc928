//! The policy crate linked directly: the baseline the Wasm build is measured against.

use super::store::forward_log;
use super::{Functions, Handler, PolicyResult};
use citus_ha_policy::bootstrap::{bootstrap_plan, BootstrapStep, SuperuserAuth};
use citus_ha_policy::dcs::ClusterView;
use citus_ha_policy::handler::{Handler as Machine, Metrics};
use citus_ha_policy::slots::{keep_replication_slot, ReplicationSlot};
use citus_ha_policy::view_text::{self, ViewWriter};
use citus_ha_policy::{config, gucs};
use citus_ha_policy::{CitusConfig, EventOutcome, InvalidInput, Statement, StatementResult};

/// The pure functions, called directly.
pub struct NativeFunctions;

/// The handler state machine, called directly.
pub struct NativeHandler {
    handler: Machine,
    /// The view goes in as text, as it does into a 0.4.0 component, so the baseline does the
    /// same work on the same input.
    writer: ViewWriter,
    /// The pure functions, as a Wasm handler's instance answers them.
    functions: NativeFunctions,
}

impl NativeHandler {
    pub fn new(config: CitusConfig, name: &str, connect_url: &str) -> Self {
        Self {
            handler: Machine::new(config, name, connect_url),
            writer: ViewWriter::new(),
            functions: NativeFunctions,
        }
    }
    pub fn import(state: &[u8]) -> Result<Self, String> {
        Machine::import_state(state).map(|handler| Self {
            handler,
            writer: ViewWriter::new(),
            functions: NativeFunctions,
        })
    }
    fn drain(&mut self) {
        for l in self.handler.drain_logs() {
            forward_log(l.level, &l.message, "native");
        }
    }
}

impl Functions for NativeFunctions {
    fn policy_version(&mut self) -> PolicyResult<String> {
        Ok(citus_ha_policy::POLICY_VERSION.to_string())
    }
    fn validate_config(&mut self, s: &str) -> PolicyResult<Result<CitusConfig, InvalidInput>> {
        Ok(config::validate_config_json(s))
    }
    fn adjust_gucs(
        &mut self,
        params: &[(String, String)],
        local_host: Option<&str>,
    ) -> PolicyResult<Result<Vec<(String, String)>, InvalidInput>> {
        Ok(gucs::adjust_gucs(params, local_host))
    }
    fn keep_replication_slot(
        &mut self,
        c: &CitusConfig,
        is_primary: bool,
        slot: &ReplicationSlot,
    ) -> PolicyResult<bool> {
        Ok(keep_replication_slot(c, is_primary, slot))
    }
    fn bootstrap_plan(
        &mut self,
        c: &CitusConfig,
        db: &str,
        auth: &SuperuserAuth,
        url: Option<&str>,
    ) -> PolicyResult<Result<Vec<BootstrapStep>, InvalidInput>> {
        Ok(bootstrap_plan(c, db, auth, url))
    }
}

forward_functions!(NativeHandler, functions);

impl Handler for NativeHandler {
    fn handle_heartbeat(&mut self, now: u64, view: &ClusterView) -> PolicyResult<()> {
        let text = self.writer.write(view);
        if let Err(e) = self.handler.handle_heartbeat_text(now, text) {
            tracing::error!("the policy refused the view ({e}); sending it without marks");
            self.writer.reset();
            let text = self.writer.write(view);
            if let Err(e) = self.handler.handle_heartbeat_text(now, text) {
                tracing::error!("the policy refused the view again: {e}");
            }
        }
        self.drain();
        Ok(())
    }
    fn handle_event(
        &mut self,
        now: u64,
        view: &ClusterView,
        body: &str,
    ) -> PolicyResult<Result<EventOutcome, InvalidInput>> {
        let text = view_text::write_once(view);
        let r = self.handler.handle_event_text(now, &text, body);
        self.drain();
        Ok(r)
    }
    fn schedule_reload(&mut self) -> PolicyResult<()> {
        self.handler.schedule_reload();
        Ok(())
    }
    fn handle_demote(&mut self) -> PolicyResult<()> {
        self.handler.handle_demote();
        Ok(())
    }
    fn poll_statements(&mut self, now: u64) -> PolicyResult<Vec<Statement>> {
        let s = self.handler.poll_statements(now);
        self.drain();
        Ok(s)
    }
    fn handle_results(&mut self, now: u64, results: Vec<StatementResult>) -> PolicyResult<()> {
        self.handler.handle_results(now, results);
        self.drain();
        Ok(())
    }
    fn poll_timeout(&mut self) -> PolicyResult<Option<u64>> {
        Ok(self.handler.poll_timeout())
    }
    fn poll_completed(&mut self) -> PolicyResult<Vec<u64>> {
        Ok(self.handler.poll_completed())
    }
    fn export_state(&mut self) -> PolicyResult<Vec<u8>> {
        Ok(self.handler.export_state())
    }
    fn export_state_json(&mut self) -> PolicyResult<Option<Vec<u8>>> {
        Ok(Some(self.handler.export_state_json()))
    }
    fn metrics(&mut self) -> PolicyResult<Option<Metrics>> {
        Ok(Some(self.handler.metrics()))
    }
}
