//! The policy crate linked directly: the baseline the Wasm build is measured against.

use super::{Policy, PolicyResult};
use citus_ha_policy::bootstrap::{bootstrap_plan, BootstrapStep, SuperuserAuth};
use citus_ha_policy::dcs::ClusterView;
use citus_ha_policy::handler::{Handler, Metrics};
use citus_ha_policy::packed_view::{self, PackedView, Packer};
use citus_ha_policy::slots::{keep_replication_slot, ReplicationSlot};
use citus_ha_policy::{config, gucs};
use citus_ha_policy::{CitusConfig, EventOutcome, InvalidInput, Statement, StatementResult};

pub struct NativePolicy {
    handler: Handler,
    /// The view goes in packed, as it does into a 0.3.0 component, so the baseline does the
    /// same work on the same input.
    packer: Packer,
}

impl NativePolicy {
    pub fn new(config: CitusConfig, name: &str, connect_url: &str) -> Self {
        Self {
            handler: Handler::new(config, name, connect_url),
            packer: Packer::new(),
        }
    }
    pub fn import(state: &[u8]) -> Result<Self, String> {
        Handler::import_state(state).map(|handler| Self {
            handler,
            packer: Packer::new(),
        })
    }
    fn drain(&mut self) {
        for l in self.handler.drain_logs() {
            crate::policy::wasm::forward_log(l.level, &l.message, "native");
        }
    }
}

impl Policy for NativePolicy {
    fn version(&mut self) -> PolicyResult<String> {
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
    fn heartbeat(&mut self, now: u64, view: &ClusterView) -> PolicyResult<()> {
        let packed = self.packer.pack(view);
        if let Err(e) = self.handler.handle_heartbeat_packed(now, packed) {
            tracing::error!("the policy refused the packed view ({e}); sending it unpacked");
            self.packer.reset();
            self.handler.handle_heartbeat(now, view);
        }
        self.drain();
        Ok(())
    }
    fn event(
        &mut self,
        now: u64,
        view: &ClusterView,
        body: &str,
    ) -> PolicyResult<Result<EventOutcome, InvalidInput>> {
        let bytes = packed_view::pack_once(view);
        let packed = PackedView {
            seq: 0,
            base: None,
            bytes: &bytes,
        };
        let r = self.handler.handle_event_packed(now, packed, body);
        self.drain();
        Ok(r)
    }
    fn schedule_reload(&mut self) -> PolicyResult<()> {
        self.handler.schedule_reload();
        Ok(())
    }
    fn demote(&mut self) -> PolicyResult<()> {
        self.handler.handle_demote();
        Ok(())
    }
    fn poll_statement(&mut self, now: u64) -> PolicyResult<Option<Statement>> {
        let s = self.handler.poll_statement(now);
        self.drain();
        Ok(s)
    }
    fn handle_result(&mut self, now: u64, result: StatementResult) -> PolicyResult<()> {
        self.handler.handle_result(now, result);
        self.drain();
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
