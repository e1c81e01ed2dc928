//! One host adapter per WIT contract version, generated from one template: each version gets
//! its own `bindgen!` module (its types are distinct Rust types) and the same mapping to the
//! native types the rest of the host uses. A released version's folder under `wit/` is frozen,
//! so its adapter keeps compiling against exactly what old components were built with.

use super::wasm::HostState;
use citus_ha_policy::bootstrap::{BootstrapStep, SuperuserAuth};
use citus_ha_policy::dcs::ClusterView;
use citus_ha_policy::handler::Metrics;
use citus_ha_policy::slots::ReplicationSlot;
use citus_ha_policy::{CitusConfig, EventOutcome, InvalidInput, Statement, StatementResult};
use wasmtime::component::{Component, InstancePre, Linker, ResourceAny};
use wasmtime::Store;

type R<T> = wasmtime::Result<T>;

/// The calls of one contract version on an instantiated component.
pub(crate) trait ContractApi: Send + Sync {
    fn version(&self, s: &mut Store<HostState>) -> R<String>;
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
    fn keep_slot(
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
    fn import_state(
        &self,
        s: &mut Store<HostState>,
        state: &[u8],
    ) -> R<Result<ResourceAny, String>>;
    fn export_state(&self, s: &mut Store<HostState>, h: ResourceAny) -> R<Vec<u8>>;
    fn heartbeat(
        &self,
        s: &mut Store<HostState>,
        h: ResourceAny,
        now: u64,
        v: &ClusterView,
    ) -> R<()>;
    fn event(
        &self,
        s: &mut Store<HostState>,
        h: ResourceAny,
        now: u64,
        v: &ClusterView,
        body: &str,
    ) -> R<Result<EventOutcome, InvalidInput>>;
    fn schedule_reload(&self, s: &mut Store<HostState>, h: ResourceAny) -> R<()>;
    fn demote(&self, s: &mut Store<HostState>, h: ResourceAny) -> R<()>;
    fn poll_statement(
        &self,
        s: &mut Store<HostState>,
        h: ResourceAny,
        now: u64,
    ) -> R<Option<Statement>>;
    fn handle_result(
        &self,
        s: &mut Store<HostState>,
        h: ResourceAny,
        now: u64,
        r: StatementResult,
    ) -> R<()>;
    fn poll_timeout(&self, s: &mut Store<HostState>, h: ResourceAny) -> R<Option<u64>>;
    fn poll_completed(&self, s: &mut Store<HostState>, h: ResourceAny) -> R<Vec<u64>>;
    fn metrics(&self, s: &mut Store<HostState>, h: ResourceAny) -> R<Option<Metrics>>;
}

/// A component linked and ready to instantiate against one contract version.
pub(crate) trait ContractPre: Send + Sync {
    fn instantiate(&self, s: &mut Store<HostState>) -> R<Box<dyn ContractApi>>;
}

macro_rules! contract {
    ($module:ident, $path:literal, $($metrics:ident)?) => {
        pub(crate) mod $module {
            use super::*;
            wasmtime::component::bindgen!({
                path: $path,
                world: "policy-component",
            });
            use citus_ha::policy::types as t;
            use exports::citus_ha::policy::policy as p;

            impl citus_ha::policy::host::Host for HostState {
                fn log(&mut self, level: t::Level, message: String) {
                    let level = match level {
                        t::Level::Debug => citus_ha_policy::handler::Level::Debug,
                        t::Level::Info => citus_ha_policy::handler::Level::Info,
                        t::Level::Warn => citus_ha_policy::handler::Level::Warn,
                        t::Level::Error => citus_ha_policy::handler::Level::Error,
                    };
                    self.log(level, &message);
                }
            }
            impl t::Host for HostState {}

            pub(crate) struct Pre(PolicyComponentPre<HostState>);

            pub(crate) fn link(
                linker: &mut Linker<HostState>,
                component: &Component,
            ) -> R<Box<dyn ContractPre>> {
                PolicyComponent::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
                    linker,
                    |s| s,
                )?;
                let pre: InstancePre<HostState> = linker.instantiate_pre(component)?;
                Ok(Box::new(Pre(PolicyComponentPre::new(pre)?)))
            }

            impl ContractPre for Pre {
                fn instantiate(&self, s: &mut Store<HostState>) -> R<Box<dyn ContractApi>> {
                    Ok(Box::new(Api(self.0.instantiate(&mut *s)?)))
                }
            }

            pub(crate) struct Api(PolicyComponent);

            impl Api {
                fn p(&self) -> &p::Guest {
                    self.0.citus_ha_policy_policy()
                }
            }

            fn cfg(c: &CitusConfig) -> t::CitusConfig {
                t::CitusConfig { group: c.group, database: c.database.clone() }
            }
            fn invalid(e: t::InvalidInput) -> InvalidInput {
                InvalidInput { field: e.field, reason: e.reason }
            }
            fn group(g: &citus_ha_policy::dcs::GroupView) -> t::GroupView {
                t::GroupView {
                    leader: g.leader.clone(),
                    members: g
                        .members
                        .iter()
                        .map(|m| t::Member {
                            name: m.name.clone(),
                            conn_url: m.conn_url.clone(),
                            conn_kwargs: m.conn_kwargs.as_ref().map(|k| t::ConnKwargs {
                                host: k.host.clone(),
                                port: k.port.clone(),
                            }),
                            role: m.role.clone(),
                            state: m.state.clone(),
                            noloadbalance: m.noloadbalance,
                        })
                        .collect(),
                }
            }
            fn view(v: &ClusterView) -> t::ClusterView {
                t::ClusterView {
                    coordinator: group(&v.coordinator),
                    workers: v.workers.iter().map(|(g, w)| (*g, group(w))).collect(),
                }
            }
            fn role(r: t::NodeRole) -> citus_ha_policy::node::NodeRole {
                use citus_ha_policy::node::NodeRole as N;
                match r {
                    t::NodeRole::Primary => N::Primary,
                    t::NodeRole::Secondary => N::Secondary,
                    t::NodeRole::Unavailable => N::Unavailable,
                }
            }
            fn wit_role(r: citus_ha_policy::node::NodeRole) -> t::NodeRole {
                use citus_ha_policy::node::NodeRole as N;
                match r {
                    N::Primary => t::NodeRole::Primary,
                    N::Secondary => t::NodeRole::Secondary,
                    N::Unavailable => t::NodeRole::Unavailable,
                }
            }
            fn statement(s: t::Statement) -> Statement {
                match s {
                    t::Statement::LoadMetadata => Statement::LoadMetadata,
                    t::Statement::Begin => Statement::Begin,
                    t::Statement::Commit => Statement::Commit,
                    t::Statement::Rollback => Statement::Rollback,
                    t::Statement::AddNode(a) => Statement::AddNode {
                        host: a.host,
                        port: a.port,
                        groupid: a.groupid,
                        role: role(a.role),
                    },
                    t::Statement::UpdateNode(u) => Statement::UpdateNode {
                        nodeid: u.nodeid,
                        host: u.host,
                        port: u.port,
                        force: u.force,
                        cooldown_ms: u.cooldown_ms,
                    },
                    t::Statement::RemoveNode(r) => Statement::RemoveNode { host: r.host, port: r.port },
                }
            }

            impl ContractApi for Api {
                fn version(&self, s: &mut Store<HostState>) -> R<String> {
                    self.p().call_policy_version(s)
                }
                fn validate_config(&self, s: &mut Store<HostState>, j: &str) -> R<Result<CitusConfig, InvalidInput>> {
                    Ok(self
                        .p()
                        .call_validate_config(s, j)?
                        .map(|c| CitusConfig { group: c.group, database: c.database })
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
                fn keep_slot(&self, s: &mut Store<HostState>, c: &CitusConfig, primary: bool, slot: &ReplicationSlot) -> R<bool> {
                    let slot = t::ReplicationSlot {
                        name: slot.name.clone(),
                        slot_type: slot.slot_type.clone(),
                        database: slot.database.clone(),
                        plugin: slot.plugin.clone(),
                    };
                    self.p().call_keep_replication_slot(s, &cfg(c), primary, &slot)
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
                                    BootstrapStep::SetCoordinatorHost(citus_ha_policy::node::Address::new(h, port))
                                }
                            })
                            .collect()
                    }))
                }
                fn new_handler(&self, s: &mut Store<HostState>, c: &CitusConfig, name: &str, url: &str) -> R<ResourceAny> {
                    self.p().handler().call_constructor(s, &cfg(c), name, url)
                }
                fn import_state(&self, s: &mut Store<HostState>, state: &[u8]) -> R<Result<ResourceAny, String>> {
                    self.p().handler().call_import_state(s, state)
                }
                fn export_state(&self, s: &mut Store<HostState>, h: ResourceAny) -> R<Vec<u8>> {
                    self.p().handler().call_export_state(s, h)
                }
                fn heartbeat(&self, s: &mut Store<HostState>, h: ResourceAny, now: u64, v: &ClusterView) -> R<()> {
                    self.p().handler().call_handle_heartbeat(s, h, now, &view(v))
                }
                fn event(
                    &self,
                    s: &mut Store<HostState>,
                    h: ResourceAny,
                    now: u64,
                    v: &ClusterView,
                    body: &str,
                ) -> R<Result<EventOutcome, InvalidInput>> {
                    let r = self.p().handler().call_handle_event(s, h, now, &view(v), body)?;
                    Ok(r.map_err(invalid).map(|o| match o {
                        t::EventOutcome::Queued(tk) => EventOutcome::Queued(tk),
                        t::EventOutcome::Unchanged => EventOutcome::Unchanged,
                        t::EventOutcome::Discarded(why) => EventOutcome::Discarded(why),
                    }))
                }
                fn schedule_reload(&self, s: &mut Store<HostState>, h: ResourceAny) -> R<()> {
                    self.p().handler().call_schedule_reload(s, h)
                }
                fn demote(&self, s: &mut Store<HostState>, h: ResourceAny) -> R<()> {
                    self.p().handler().call_handle_demote(s, h)
                }
                fn poll_statement(&self, s: &mut Store<HostState>, h: ResourceAny, now: u64) -> R<Option<Statement>> {
                    Ok(self.p().handler().call_poll_statement(s, h, now)?.map(statement))
                }
                fn handle_result(&self, s: &mut Store<HostState>, h: ResourceAny, now: u64, r: StatementResult) -> R<()> {
                    let r = match r {
                        StatementResult::Done => t::StatementResult::Done,
                        StatementResult::RolledBack => t::StatementResult::RolledBack,
                        StatementResult::Added(id) => t::StatementResult::Added(id),
                        StatementResult::Metadata(m) => t::StatementResult::Metadata(
                            m.into_iter()
                                .map(|r| t::PgDistNode {
                                    nodeid: r.nodeid,
                                    groupid: r.groupid,
                                    nodename: r.nodename,
                                    nodeport: r.nodeport,
                                    noderole: wit_role(r.noderole),
                                })
                                .collect(),
                        ),
                        StatementResult::Failed(e) => t::StatementResult::Failed(t::StatementError {
                            message: e.message,
                            sqlstate: e.sqlstate,
                            connection_lost: e.connection_lost,
                        }),
                    };
                    self.p().handler().call_handle_result(s, h, now, &r)
                }
                fn poll_timeout(&self, s: &mut Store<HostState>, h: ResourceAny) -> R<Option<u64>> {
                    self.p().handler().call_poll_timeout(s, h)
                }
                fn poll_completed(&self, s: &mut Store<HostState>, h: ResourceAny) -> R<Vec<u64>> {
                    self.p().handler().call_poll_completed(s, h)
                }
                fn metrics(&self, _s: &mut Store<HostState>, _h: ResourceAny) -> R<Option<Metrics>> {
                    contract!(@metrics self, _s, _h, $($metrics)?)
                }
            }
        }
    };
    (@metrics $self:ident, $s:ident, $h:ident, metrics) => {{
        let m = $self.p().handler().call_metrics($s, $h)?;
        Ok(Some(Metrics {
            deadline_rollbacks: m.deadline_rollbacks,
            statements: m.statements,
            failed_statements: m.failed_statements,
            sync_retries: m.sync_retries,
        }))
    }};
    (@metrics $self:ident, $s:ident, $h:ident, ) => {{
        Ok(None)
    }};
}

contract!(since_v0_1_0, "../wit/since_v0.1.0",);
contract!(since_v0_2_0, "../wit/since_v0.2.0", metrics);

/// Contract versions this host runs, newest first: (export name, linker).
pub(crate) type LinkFn = fn(&mut Linker<HostState>, &Component) -> R<Box<dyn ContractPre>>;
pub(crate) const SUPPORTED: &[(&str, LinkFn)] = &[
    ("citus-ha:policy/policy@0.2.0", since_v0_2_0::link),
    ("citus-ha:policy/policy@0.1.0", since_v0_1_0::link),
];
