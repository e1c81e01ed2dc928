//! The adapter of contract 0.4.0: the view goes in as text (flagged against the previous view
//! by this adapter's writer), statements come out and results go in as JSON Lines, the state
//! crosses as a string (the compact format in base64).

use super::{ContractApi, ContractPre, R};
use crate::policy::store::HostState;
use base64::Engine as _;
use citus_ha_policy::bootstrap::{BootstrapStep, SuperuserAuth};
use citus_ha_policy::dcs::ClusterView;
use citus_ha_policy::handler::Metrics;
use citus_ha_policy::slots::ReplicationSlot;
use citus_ha_policy::view_text::{self, ViewWriter};
use citus_ha_policy::{wire, CitusConfig, EventOutcome, InvalidInput, Statement, StatementResult};
use wasmtime::component::{Component, Linker, ResourceAny};
use wasmtime::Store;

wasmtime::component::bindgen!({
    path: "../wit/since_v0.4.0",
    world: "policy-component",
});

use self::citus_ha::policy::types as t;
use self::exports::citus_ha::policy::policy as p;

shared_host_imports!();

struct Pre(PolicyComponentPre<HostState>);

pub(crate) fn link(
    linker: &mut Linker<HostState>,
    component: &Component,
) -> R<Box<dyn ContractPre>> {
    PolicyComponent::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
        linker,
        |s| s,
    )?;
    Ok(Box::new(Pre(PolicyComponentPre::new(
        linker.instantiate_pre(component)?,
    )?)))
}

impl ContractPre for Pre {
    fn instantiate(&self, s: &mut Store<HostState>) -> R<Box<dyn ContractApi>> {
        Ok(Box::new(Api {
            bindings: self.0.instantiate(s)?,
            writer: ViewWriter::new(),
            next: None,
        }))
    }
}

struct Api {
    bindings: PolicyComponent,
    /// Heartbeat views (their flags refer to the previous heartbeat's view).
    writer: ViewWriter,
    /// The batch `handle-results` answered with: the policy issued it, so the next
    /// `poll_statements` hands it out.
    next: Option<Vec<Statement>>,
}

impl Api {
    fn p(&self) -> &p::Guest {
        self.bindings.citus_ha_policy_policy()
    }
}

shared_conversions!();

/// Text the guest wrote that the host cannot read is the guest's fault: a failed call.
fn guest_text<T>(r: Result<T, InvalidInput>) -> R<T> {
    r.map_err(|e| wasmtime::format_err!("the policy wrote {e}"))
}

impl ContractApi for Api {
    shared_pure_functions!();
    fn new_handler(
        &self,
        s: &mut Store<HostState>,
        c: &CitusConfig,
        name: &str,
        url: &str,
    ) -> R<ResourceAny> {
        self.p().handler().call_constructor(s, &cfg(c), name, url)
    }
    fn import_state(
        &self,
        s: &mut Store<HostState>,
        state: &[u8],
    ) -> R<Result<ResourceAny, String>> {
        // JSON crosses as it is; the compact format as its base64.
        let text = match std::str::from_utf8(state) {
            Ok(json) if json.trim_start().starts_with('{') => json.to_string(),
            _ => base64::engine::general_purpose::STANDARD.encode(state),
        };
        self.p().handler().call_import_state(s, &text)
    }
    fn export_state(&self, s: &mut Store<HostState>, h: ResourceAny) -> R<Vec<u8>> {
        let text = self
            .p()
            .handler()
            .call_export_state(s, h, p::StateFormat::Compact)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| wasmtime::format_err!("the policy's compact state is not base64: {e}"))
    }
    fn export_state_json(&self, s: &mut Store<HostState>, h: ResourceAny) -> R<Option<Vec<u8>>> {
        let text = self
            .p()
            .handler()
            .call_export_state(s, h, p::StateFormat::Json)?;
        Ok(Some(text.into_bytes()))
    }
    fn handle_heartbeat(
        &mut self,
        s: &mut Store<HostState>,
        h: ResourceAny,
        now: u64,
        v: &ClusterView,
    ) -> R<()> {
        let handler = self.bindings.citus_ha_policy_policy().handler();
        let mut refused = None;
        // Flags that the policy cannot trust are a host bug; once more with none, then give up.
        for _ in 0..2 {
            let text = self.writer.write(v);
            match handler.call_handle_heartbeat(&mut *s, h, now, text) {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => {
                    tracing::error!(
                        "the policy refused the view ({}); sending it again without marks",
                        invalid(e.clone())
                    );
                    refused = Some(invalid(e));
                    self.writer.reset();
                }
                Err(e) => {
                    self.writer.reset();
                    return Err(e);
                }
            }
        }
        Err(wasmtime::format_err!(
            "the policy refused the view: {}",
            refused.expect("refused twice")
        ))
    }
    fn handle_event(
        &self,
        s: &mut Store<HostState>,
        h: ResourceAny,
        now: u64,
        v: &ClusterView,
        body: &str,
    ) -> R<Result<EventOutcome, InvalidInput>> {
        let text = view_text::write_once(v);
        let r = self
            .p()
            .handler()
            .call_handle_event(s, h, now, &text, body)?;
        Ok(r.map_err(invalid).map(|o| match o {
            t::EventOutcome::Queued(tk) => EventOutcome::Queued(tk),
            t::EventOutcome::Unchanged => EventOutcome::Unchanged,
            t::EventOutcome::Discarded(why) => EventOutcome::Discarded(why),
        }))
    }
    fn schedule_reload(&self, s: &mut Store<HostState>, h: ResourceAny) -> R<()> {
        self.p().handler().call_schedule_reload(s, h)
    }
    fn handle_demote(&self, s: &mut Store<HostState>, h: ResourceAny) -> R<()> {
        self.p().handler().call_handle_demote(s, h)
    }
    fn poll_statements(
        &mut self,
        s: &mut Store<HostState>,
        h: ResourceAny,
        now: u64,
    ) -> R<Vec<Statement>> {
        if let Some(next) = self.next.take() {
            return Ok(next);
        }
        let text = self.p().handler().call_poll_statements(s, h, now)?;
        guest_text(wire::read_statements(&text))
    }
    fn handle_results(
        &mut self,
        s: &mut Store<HostState>,
        h: ResourceAny,
        now: u64,
        r: Vec<StatementResult>,
    ) -> R<()> {
        let mut text = String::with_capacity(64 * r.len());
        wire::write_results(&r, &mut text);
        let next = self
            .p()
            .handler()
            .call_handle_results(s, h, now, &text)?
            .map_err(|e| wasmtime::format_err!("the policy refused the results: {}", invalid(e)))?;
        self.next = Some(guest_text(wire::read_statements(&next))?);
        Ok(())
    }
    fn poll_timeout(&self, s: &mut Store<HostState>, h: ResourceAny) -> R<Option<u64>> {
        self.p().handler().call_poll_timeout(s, h)
    }
    fn poll_completed(&self, s: &mut Store<HostState>, h: ResourceAny) -> R<Vec<u64>> {
        self.p().handler().call_poll_completed(s, h)
    }
    fn metrics(&self, s: &mut Store<HostState>, h: ResourceAny) -> R<Option<Metrics>> {
        let m = self.p().handler().call_metrics(s, h)?;
        Ok(Some(Metrics {
            deadline_rollbacks: m.deadline_rollbacks,
            statements: m.statements,
            failed_statements: m.failed_statements,
            sync_retries: m.sync_retries,
            expired_events: m.expired_events,
        }))
    }
}
