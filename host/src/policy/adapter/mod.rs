//! One host adapter per WIT contract version. Each owns its version's calls and absorbs how
//! that version shapes the hot paths (the view as records, packed bytes or text; statements
//! one at a time, in batches of records, or as JSON Lines), so the rest of the host sees one
//! shape: [`ContractApi`]. A released version's folder under `wit/` is frozen, so its adapter
//! keeps compiling against exactly what old components were built with.
//!
//! - `legacy`: 0.1.0 and 0.2.0 (records, one statement at a time) and 0.3.0 (packed view,
//!   batches of records), generated from one template;
//! - `v0_4`: 0.4.0 (text in, text out).

// What every contract since 0.1.0 spells the same way: the host's log import, the config and
// error conversions, and the pure functions. Each adapter expands them inside its version's
// module, against that version's generated `t` (types) and `p` (exports).

/// The `host` import (the policy's log sink) and the empty `types` instance.
macro_rules! shared_host_imports {
    () => {
        impl self::citus_ha::policy::host::Host for HostState {
            fn log(&mut self, level: t::Level, message: String) {
                use citus_ha_policy::handler::Level;
                let level = match level {
                    t::Level::Debug => Level::Debug,
                    t::Level::Info => Level::Info,
                    t::Level::Warn => Level::Warn,
                    t::Level::Error => Level::Error,
                };
                HostState::log(self, level, &message);
            }
        }
        impl t::Host for HostState {}
    };
}

/// The config and error records, which every version shapes alike.
macro_rules! shared_conversions {
    () => {
        fn cfg(c: &CitusConfig) -> t::CitusConfig {
            t::CitusConfig {
                group: c.group,
                database: c.database.clone(),
            }
        }
        fn invalid(e: t::InvalidInput) -> InvalidInput {
            InvalidInput {
                field: e.field,
                reason: e.reason,
            }
        }
    };
}

/// The pure functions of [`ContractApi`], unchanged since 0.1.0.
macro_rules! shared_pure_functions {
    () => {
        fn policy_version(&self, s: &mut Store<HostState>) -> R<String> {
            self.p().call_policy_version(s)
        }
        fn validate_config(
            &self,
            s: &mut Store<HostState>,
            j: &str,
        ) -> R<Result<CitusConfig, InvalidInput>> {
            Ok(self
                .p()
                .call_validate_config(s, j)?
                .map(|c| CitusConfig {
                    group: c.group,
                    database: c.database,
                })
                .map_err(invalid))
        }
        fn adjust_gucs(
            &self,
            s: &mut Store<HostState>,
            params: &[(String, String)],
            h: Option<&str>,
        ) -> R<Result<Vec<(String, String)>, InvalidInput>> {
            Ok(self.p().call_adjust_gucs(s, params, h)?.map_err(invalid))
        }
        fn keep_replication_slot(
            &self,
            s: &mut Store<HostState>,
            c: &CitusConfig,
            primary: bool,
            slot: &ReplicationSlot,
        ) -> R<bool> {
            let slot = t::ReplicationSlot {
                name: slot.name.clone(),
                slot_type: slot.slot_type.clone(),
                database: slot.database.clone(),
                plugin: slot.plugin.clone(),
            };
            self.p()
                .call_keep_replication_slot(s, &cfg(c), primary, &slot)
        }
        fn bootstrap_plan(
            &self,
            s: &mut Store<HostState>,
            c: &CitusConfig,
            db: &str,
            auth: &SuperuserAuth,
            url: Option<&str>,
        ) -> R<Result<Vec<BootstrapStep>, InvalidInput>> {
            let auth = t::SuperuserAuth {
                password: auth.password.clone(),
                sslcert: auth.sslcert.clone(),
                sslkey: auth.sslkey.clone(),
            };
            let r = self.p().call_bootstrap_plan(s, &cfg(c), db, &auth, url)?;
            Ok(r.map_err(invalid).map(|steps| {
                steps
                    .into_iter()
                    .map(|st| match st {
                        t::BootstrapStep::CreateDatabase(d) => BootstrapStep::CreateDatabase(d),
                        t::BootstrapStep::CreateExtension => BootstrapStep::CreateExtension,
                        t::BootstrapStep::InsertAuthinfo(a) => BootstrapStep::InsertAuthinfo(a),
                        t::BootstrapStep::SetCoordinatorHost((h, port)) => {
                            BootstrapStep::SetCoordinatorHost(citus_ha_policy::node::Address::new(
                                h, port,
                            ))
                        }
                    })
                    .collect()
            }))
        }
    };
}

mod legacy;
mod v0_4;

use super::store::HostState;
use citus_ha_policy::bootstrap::{BootstrapStep, SuperuserAuth};
use citus_ha_policy::dcs::ClusterView;
use citus_ha_policy::handler::Metrics;
use citus_ha_policy::slots::ReplicationSlot;
use citus_ha_policy::{CitusConfig, EventOutcome, InvalidInput, Statement, StatementResult};
use wasmtime::component::{Component, Linker, ResourceAny};
use wasmtime::Store;

type R<T> = wasmtime::Result<T>;

/// The calls of one contract version on an instantiated component, in the host's types.
pub(crate) trait ContractApi: Send + Sync {
    fn policy_version(&self, s: &mut Store<HostState>) -> R<String>;
    fn validate_config(
        &self,
        s: &mut Store<HostState>,
        j: &str,
    ) -> R<Result<CitusConfig, InvalidInput>>;
    fn adjust_gucs(
        &self,
        s: &mut Store<HostState>,
        p: &[(String, String)],
        h: Option<&str>,
    ) -> R<Result<Vec<(String, String)>, InvalidInput>>;
    fn keep_replication_slot(
        &self,
        s: &mut Store<HostState>,
        c: &CitusConfig,
        primary: bool,
        slot: &ReplicationSlot,
    ) -> R<bool>;
    fn bootstrap_plan(
        &self,
        s: &mut Store<HostState>,
        c: &CitusConfig,
        db: &str,
        auth: &SuperuserAuth,
        url: Option<&str>,
    ) -> R<Result<Vec<BootstrapStep>, InvalidInput>>;
    fn new_handler(
        &self,
        s: &mut Store<HostState>,
        c: &CitusConfig,
        name: &str,
        url: &str,
    ) -> R<ResourceAny>;
    /// Continue from a state in either format (compact binary or JSON).
    fn import_state(
        &self,
        s: &mut Store<HostState>,
        state: &[u8],
    ) -> R<Result<ResourceAny, String>>;
    /// The state in the build's own format (compact binary from 0.3.0 on, JSON before).
    fn export_state(&self, s: &mut Store<HostState>, h: ResourceAny) -> R<Vec<u8>>;
    /// The JSON state, when `export_state` gives another format (None: it already is JSON).
    fn export_state_json(&self, s: &mut Store<HostState>, h: ResourceAny) -> R<Option<Vec<u8>>>;
    /// The heartbeat. An adapter may remember what it sent (to mark what did not change next
    /// time); after a failed call it starts over.
    fn handle_heartbeat(
        &mut self,
        s: &mut Store<HostState>,
        h: ResourceAny,
        now: u64,
        v: &ClusterView,
    ) -> R<()>;
    fn handle_event(
        &self,
        s: &mut Store<HostState>,
        h: ResourceAny,
        now: u64,
        v: &ClusterView,
        body: &str,
    ) -> R<Result<EventOutcome, InvalidInput>>;
    fn schedule_reload(&self, s: &mut Store<HostState>, h: ResourceAny) -> R<()>;
    fn handle_demote(&self, s: &mut Store<HostState>, h: ResourceAny) -> R<()>;
    /// The next statements in order (empty: the turn is over); a version without batches
    /// gives one at a time.
    fn poll_statements(
        &mut self,
        s: &mut Store<HostState>,
        h: ResourceAny,
        now: u64,
    ) -> R<Vec<Statement>>;
    /// The results of the last batch, in order, up to the first that ended it.
    fn handle_results(
        &mut self,
        s: &mut Store<HostState>,
        h: ResourceAny,
        now: u64,
        r: Vec<StatementResult>,
    ) -> R<()>;
    fn poll_timeout(&self, s: &mut Store<HostState>, h: ResourceAny) -> R<Option<u64>>;
    fn poll_completed(&self, s: &mut Store<HostState>, h: ResourceAny) -> R<Vec<u64>>;
    /// None when the contract has no metrics (0.1.0).
    fn metrics(&self, s: &mut Store<HostState>, h: ResourceAny) -> R<Option<Metrics>>;
}

/// A component linked and ready to instantiate against one contract version.
pub(crate) trait ContractPre: Send + Sync {
    fn instantiate(&self, s: &mut Store<HostState>) -> R<Box<dyn ContractApi>>;
}

/// Contract versions this host runs, newest first: (export name, linker).
pub(crate) type LinkFn = fn(&mut Linker<HostState>, &Component) -> R<Box<dyn ContractPre>>;
pub(crate) const SUPPORTED: &[(&str, LinkFn)] = &[
    ("citus-ha:policy/policy@0.4.0", v0_4::link),
    ("citus-ha:policy/policy@0.3.0", legacy::since_v0_3_0::link),
    ("citus-ha:policy/policy@0.2.0", legacy::since_v0_2_0::link),
    ("citus-ha:policy/policy@0.1.0", legacy::since_v0_1_0::link),
];
