//! The adapters of contracts 0.1.0-0.3.0, generated from one template: each version gets its
//! own `bindgen!` module (its types are distinct Rust types) and the same mapping to the
//! native types the rest of the host uses. They differ in their hot paths, which the template
//! takes as a parameter: `records` (0.1.0, 0.2.0: the view as records, one statement at a
//! time) or `packed` (0.3.0: the view packed into bytes, statements in batches of records).

use super::{ContractApi, ContractPre, R};
use crate::policy::store::HostState;
use citus_ha_policy::bootstrap::{BootstrapStep, SuperuserAuth};
use citus_ha_policy::dcs::ClusterView;
use citus_ha_policy::handler::Metrics;
use citus_ha_policy::packed_view::Packer;
use citus_ha_policy::slots::ReplicationSlot;
use citus_ha_policy::{CitusConfig, EventOutcome, InvalidInput, Statement, StatementResult};
use wasmtime::component::{Component, InstancePre, Linker, ResourceAny};
use wasmtime::Store;

/// The DCS view as the contract's `cluster-view` record, borrowing the host's strings: lowered
/// straight from the native `ClusterView` into the guest's memory, with no copy of any string
/// on the host side (the bindgen types would need every string cloned before each call). The
/// record shape is the same in every contract version; `typed` checks it at instantiation.
mod view_abi {
    use citus_ha_policy::dcs::{ClusterView, Member};
    use wasmtime::component::{ComponentType, Lower};

    #[derive(ComponentType, Lower)]
    #[component(record)]
    pub(super) struct ConnKwargsRef<'a> {
        host: Option<&'a str>,
        port: Option<&'a str>,
    }

    #[derive(ComponentType, Lower)]
    #[component(record)]
    pub(super) struct MemberRef<'a> {
        name: &'a str,
        #[component(name = "conn-url")]
        conn_url: Option<&'a str>,
        #[component(name = "conn-kwargs")]
        conn_kwargs: Option<ConnKwargsRef<'a>>,
        role: Option<&'a str>,
        state: Option<&'a str>,
        noloadbalance: bool,
    }

    #[derive(ComponentType, Lower)]
    #[component(record)]
    pub(super) struct GroupViewRef<'a> {
        leader: Option<&'a str>,
        members: &'a [MemberRef<'a>],
    }

    /// The contract's `packed-view`, with the bytes lowered straight from the host's buffer.
    #[derive(ComponentType, Lower)]
    #[component(record)]
    pub(super) struct PackedViewRef<'a> {
        pub(super) seq: u64,
        pub(super) base: Option<u64>,
        pub(super) bytes: &'a [u8],
    }

    #[derive(ComponentType, Lower)]
    #[component(record)]
    pub(super) struct ClusterViewRef<'a> {
        coordinator: GroupViewRef<'a>,
        workers: &'a [(i32, GroupViewRef<'a>)],
    }

    fn member(m: &Member) -> MemberRef<'_> {
        MemberRef {
            name: &m.name,
            conn_url: m.conn_url.as_deref(),
            conn_kwargs: m.conn_kwargs.as_ref().map(|k| ConnKwargsRef {
                host: k.host.as_deref(),
                port: k.port.as_deref(),
            }),
            role: m.role.as_deref(),
            state: m.state.as_deref(),
            noloadbalance: m.noloadbalance,
        }
    }

    /// Calls `f` with the view as the contract's record: two host allocations per call (all
    /// members in one list, the groups in another), whatever the view's size.
    pub(super) fn with_view<T>(v: &ClusterView, f: impl FnOnce(&ClusterViewRef<'_>) -> T) -> T {
        let count = v.coordinator.members.len()
            + v.workers
                .iter()
                .map(|(_, g)| g.members.len())
                .sum::<usize>();
        let mut all: Vec<MemberRef<'_>> = Vec::with_capacity(count);
        all.extend(v.coordinator.members.iter().map(member));
        for (_, g) in &v.workers {
            all.extend(g.members.iter().map(member));
        }
        let mut at = v.coordinator.members.len();
        let workers: Vec<(i32, GroupViewRef<'_>)> = v
            .workers
            .iter()
            .map(|(id, g)| {
                let from = at;
                at += g.members.len();
                let members = &all[from..at];
                (
                    *id,
                    GroupViewRef {
                        leader: g.leader.as_deref(),
                        members,
                    },
                )
            })
            .collect();
        let view = ClusterViewRef {
            coordinator: GroupViewRef {
                leader: v.coordinator.leader.as_deref(),
                members: &all[..v.coordinator.members.len()],
            },
            workers: &workers,
        };
        f(&view)
    }
}

use view_abi::{with_view, ClusterViewRef, PackedViewRef};
use wasmtime::component::{ComponentExportIndex, Func, TypedFunc};

type HeartbeatParams<'a> = (ResourceAny, u64, &'a ClusterViewRef<'a>);
type EventParams<'a> = (ResourceAny, u64, &'a ClusterViewRef<'a>, &'a str);
type PackedHeartbeatParams<'a> = (ResourceAny, u64, &'a PackedViewRef<'a>);
type PackedEventParams<'a> = (ResourceAny, u64, &'a PackedViewRef<'a>, &'a str);

/// The 0.3.0 calls, looked up by name: an older component simply lacks them.
struct BatchExports {
    heartbeat: ComponentExportIndex,
    event: ComponentExportIndex,
    poll: ComponentExportIndex,
    results: ComponentExportIndex,
}

fn optional_export(component: &Component, iface: &str, name: &str) -> Option<ComponentExportIndex> {
    let (_, i) = component.get_export(None, iface)?;
    component.get_export(Some(&i), name).map(|(_, idx)| idx)
}

fn batch_exports(component: &Component, iface: &str) -> Option<BatchExports> {
    let (_, i) = component.get_export(None, iface)?;
    let find = |name: &str| component.get_export(Some(&i), name).map(|(_, idx)| idx);
    Some(BatchExports {
        heartbeat: find("[method]handler.handle-heartbeat-packed")?,
        event: find("[method]handler.handle-event-packed")?,
        poll: find("[method]handler.poll-statements")?,
        results: find("[method]handler.handle-results")?,
    })
}

/// Where the two calls that take a view are among a component's exports.
fn view_exports(
    component: &Component,
    iface: &str,
) -> R<(ComponentExportIndex, ComponentExportIndex)> {
    let missing = |what: &str| wasmtime::format_err!("the component does not export {what}");
    let (_, i) = component
        .get_export(None, iface)
        .ok_or_else(|| missing(iface))?;
    let find = |name: &str| {
        component
            .get_export(Some(&i), name)
            .map(|(_, idx)| idx)
            .ok_or_else(|| missing(name))
    };
    Ok((
        find("[method]handler.handle-heartbeat")?,
        find("[method]handler.handle-event")?,
    ))
}

macro_rules! contract {
    ($module:ident, $path:literal, $iface:literal, hot: $hot:ident, $($metrics:ident)?) => {
        pub(crate) mod $module {
            use super::*;
            wasmtime::component::bindgen!({
                path: $path,
                world: "policy-component",
            });
            use self::citus_ha::policy::types as t;
            use self::exports::citus_ha::policy::policy as p;

            shared_host_imports!();

            pub(crate) struct Pre {
                pre: PolicyComponentPre<HostState>,
                heartbeat: ComponentExportIndex,
                event: ComponentExportIndex,
                batches: Option<BatchExports>,
                export_json: Option<ComponentExportIndex>,
            }

            pub(crate) fn link(
                linker: &mut Linker<HostState>,
                component: &Component,
            ) -> R<Box<dyn ContractPre>> {
                PolicyComponent::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
                    linker,
                    |s| s,
                )?;
                let pre: InstancePre<HostState> = linker.instantiate_pre(component)?;
                let (heartbeat, event) = view_exports(component, $iface)?;
                Ok(Box::new(Pre {
                    pre: PolicyComponentPre::new(pre)?,
                    heartbeat,
                    event,
                    batches: batch_exports(component, $iface),
                    export_json: optional_export(component, $iface, "[method]handler.export-state-json"),
                }))
            }

            impl ContractPre for Pre {
                fn instantiate(&self, s: &mut Store<HostState>) -> R<Box<dyn ContractApi>> {
                    let instance = self.pre.instance_pre().instantiate(&mut *s)?;
                    let bindings = PolicyComponent::new(&mut *s, &instance)?;
                    let missing = || wasmtime::format_err!("the instance lacks a view export");
                    let heartbeat = instance.get_func(&mut *s, self.heartbeat).ok_or_else(missing)?;
                    let event = instance.get_func(&mut *s, self.event).ok_or_else(missing)?;
                    // The borrowed view must have the contract's exact shape.
                    heartbeat.typed::<HeartbeatParams<'static>, ()>(&*s)?;
                    event.typed::<EventParams<'static>, (Result<t::EventOutcome, t::InvalidInput>,)>(&*s)?;
                    let batches = match &self.batches {
                        None => None,
                        Some(b) => {
                            let mut get = |i| instance.get_func(&mut *s, i).ok_or_else(missing);
                            let (hb, ev, poll, results) = (get(b.heartbeat)?, get(b.event)?, get(b.poll)?, get(b.results)?);
                            hb.typed::<PackedHeartbeatParams<'static>, PackedHeartbeatResults>(&*s)?;
                            ev.typed::<PackedEventParams<'static>, EventResults>(&*s)?;
                            Some(Batches {
                                heartbeat: hb,
                                event: ev,
                                poll: poll.typed(&*s)?,
                                results: results.typed(&*s)?,
                            })
                        }
                    };
                    let export_json = match self.export_json {
                        Some(i) => Some(instance.get_func(&mut *s, i).ok_or_else(missing)?.typed(&*s)?),
                        None => None,
                    };
                    Ok(Box::new(Api { bindings, heartbeat, event, batches, export_json, packer: Packer::default() }))
                }
            }

            pub(crate) struct Api {
                bindings: PolicyComponent,
                /// `handle-heartbeat` and `handle-event`, called with the borrowed view.
                heartbeat: Func,
                event: Func,
                batches: Option<Batches>,
                export_json: Option<TypedFunc<(ResourceAny,), (Vec<u8>,)>>,
                /// Heartbeat views for the packed call (its marks refer to the previous view).
                packer: Packer,
            }

            type PackedHeartbeatResults = (Result<(), t::InvalidInput>,);
            type EventResults = (Result<t::EventOutcome, t::InvalidInput>,);

            /// The packed-view and batch calls of contract 0.3.0 and later.
            struct Batches {
                heartbeat: Func,
                event: Func,
                poll: TypedFunc<(ResourceAny, u64), (Vec<t::Statement>,)>,
                results: TypedFunc<(ResourceAny, u64, Vec<t::StatementResult>), ()>,
            }

            fn outcome(o: t::EventOutcome) -> EventOutcome {
                match o {
                    t::EventOutcome::Queued(tk) => EventOutcome::Queued(tk),
                    t::EventOutcome::Unchanged => EventOutcome::Unchanged,
                    t::EventOutcome::Discarded(why) => EventOutcome::Discarded(why),
                }
            }

            fn wit_result(r: StatementResult) -> t::StatementResult {
                match r {
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
                }
            }

            impl Api {
                fn p(&self) -> &p::Guest {
                    self.bindings.citus_ha_policy_policy()
                }
            }

            shared_conversions!();
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
                shared_pure_functions!();
                fn new_handler(&self, s: &mut Store<HostState>, c: &CitusConfig, name: &str, url: &str) -> R<ResourceAny> {
                    self.p().handler().call_constructor(s, &cfg(c), name, url)
                }
                fn import_state(&self, s: &mut Store<HostState>, state: &[u8]) -> R<Result<ResourceAny, String>> {
                    self.p().handler().call_import_state(s, state)
                }
                fn export_state(&self, s: &mut Store<HostState>, h: ResourceAny) -> R<Vec<u8>> {
                    self.p().handler().call_export_state(s, h)
                }
                fn export_state_json(&self, s: &mut Store<HostState>, h: ResourceAny) -> R<Option<Vec<u8>>> {
                    let Some(f) = &self.export_json else { return Ok(None) };
                    Ok(Some(f.call(&mut *s, (h,))?.0))
                }
                fn handle_heartbeat(&mut self, s: &mut Store<HostState>, h: ResourceAny, now: u64, v: &ClusterView) -> R<()> {
                    contract!(@heartbeat $hot self, s, h, now, v)
                }
                fn handle_event(
                    &self,
                    s: &mut Store<HostState>,
                    h: ResourceAny,
                    now: u64,
                    v: &ClusterView,
                    body: &str,
                ) -> R<Result<EventOutcome, InvalidInput>> {
                    contract!(@event $hot self, s, h, now, v, body)
                }
                fn schedule_reload(&self, s: &mut Store<HostState>, h: ResourceAny) -> R<()> {
                    self.p().handler().call_schedule_reload(s, h)
                }
                fn handle_demote(&self, s: &mut Store<HostState>, h: ResourceAny) -> R<()> {
                    self.p().handler().call_handle_demote(s, h)
                }
                fn poll_statements(&mut self, s: &mut Store<HostState>, h: ResourceAny, now: u64) -> R<Vec<Statement>> {
                    contract!(@poll $hot self, s, h, now)
                }
                fn handle_results(
                    &mut self,
                    s: &mut Store<HostState>,
                    h: ResourceAny,
                    now: u64,
                    r: Vec<StatementResult>,
                ) -> R<()> {
                    contract!(@results $hot self, s, h, now, r)
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

            /// The hot paths as this version shapes them; the template picks one per version.
            #[allow(dead_code)]
            impl Api {
                /// The view as records, lowered from the host's strings in place.
                fn records_heartbeat(&self, s: &mut Store<HostState>, h: ResourceAny, now: u64, v: &ClusterView) -> R<()> {
                    // SAFETY: the function's type was checked with these parameter types (up to
                    // lifetimes) when the instance was created.
                    let f = unsafe { TypedFunc::<HeartbeatParams<'_>, ()>::new_unchecked(self.heartbeat) };
                    with_view(v, |view| f.call(&mut *s, (h, now, view)))
                }
                fn records_event(
                    &self,
                    s: &mut Store<HostState>,
                    h: ResourceAny,
                    now: u64,
                    v: &ClusterView,
                    body: &str,
                ) -> R<Result<EventOutcome, InvalidInput>> {
                    // SAFETY: as for the heartbeat, the type was checked at instantiation.
                    let f = unsafe {
                        TypedFunc::<EventParams<'_>, (Result<t::EventOutcome, t::InvalidInput>,)>::new_unchecked(self.event)
                    };
                    let (r,) = with_view(v, |view| f.call(&mut *s, (h, now, view, body)))?;
                    Ok(r.map_err(invalid).map(outcome))
                }
                fn one_statement(&self, s: &mut Store<HostState>, h: ResourceAny, now: u64) -> R<Vec<Statement>> {
                    Ok(self.p().handler().call_poll_statement(s, h, now)?.map(statement).into_iter().collect())
                }
                fn one_result_at_a_time(&self, s: &mut Store<HostState>, h: ResourceAny, now: u64, r: Vec<StatementResult>) -> R<()> {
                    for r in r {
                        self.p().handler().call_handle_result(&mut *s, h, now, &wit_result(r))?;
                    }
                    Ok(())
                }
                fn batches(&self) -> R<&Batches> {
                    self.batches.as_ref().ok_or_else(|| wasmtime::format_err!("the component lacks the packed-view and batch calls of its contract"))
                }
                /// The view packed, with unchanged marks relative to the last one; a build that
                /// refuses the packing gets the view as records, which every version takes.
                fn packed_heartbeat(&mut self, s: &mut Store<HostState>, h: ResourceAny, now: u64, v: &ClusterView) -> R<()> {
                    let hb = self.batches()?.heartbeat;
                    // SAFETY: the type was checked at instantiation (up to lifetimes).
                    let f = unsafe { TypedFunc::<PackedHeartbeatParams<'_>, PackedHeartbeatResults>::new_unchecked(hb) };
                    let packed = self.packer.pack(v);
                    let view = PackedViewRef { seq: packed.seq, base: packed.base, bytes: packed.bytes };
                    match f.call(&mut *s, (h, now, &view)) {
                        Ok((Ok(()),)) => Ok(()),
                        Ok((Err(e),)) => {
                            tracing::error!("packed view refused ({}); sending it as records", invalid(e));
                            self.packer.reset();
                            self.records_heartbeat(s, h, now, v)
                        }
                        Err(e) => {
                            self.packer.reset();
                            Err(e)
                        }
                    }
                }
                fn packed_event(
                    &self,
                    s: &mut Store<HostState>,
                    h: ResourceAny,
                    now: u64,
                    v: &ClusterView,
                    body: &str,
                ) -> R<Result<EventOutcome, InvalidInput>> {
                    let ev = self.batches()?.event;
                    // SAFETY: the type was checked at instantiation (up to lifetimes).
                    let f = unsafe { TypedFunc::<PackedEventParams<'_>, EventResults>::new_unchecked(ev) };
                    let bytes = citus_ha_policy::packed_view::pack_once(v);
                    let view = PackedViewRef { seq: 0, base: None, bytes: &bytes };
                    let (r,) = f.call(&mut *s, (h, now, &view, body))?;
                    Ok(r.map_err(invalid).map(outcome))
                }
                fn batch_poll(&self, s: &mut Store<HostState>, h: ResourceAny, now: u64) -> R<Vec<Statement>> {
                    let (list,) = self.batches()?.poll.call(&mut *s, (h, now))?;
                    Ok(list.into_iter().map(statement).collect())
                }
                fn batch_results(&self, s: &mut Store<HostState>, h: ResourceAny, now: u64, r: Vec<StatementResult>) -> R<()> {
                    let r: Vec<t::StatementResult> = r.into_iter().map(wit_result).collect();
                    self.batches()?.results.call(&mut *s, (h, now, r))?;
                    Ok(())
                }
            }
        }
    };
    (@heartbeat records $a:ident, $s:ident, $h:ident, $now:ident, $v:ident) => { $a.records_heartbeat($s, $h, $now, $v) };
    (@heartbeat packed $a:ident, $s:ident, $h:ident, $now:ident, $v:ident) => { $a.packed_heartbeat($s, $h, $now, $v) };
    (@event records $a:ident, $s:ident, $h:ident, $now:ident, $v:ident, $b:ident) => { $a.records_event($s, $h, $now, $v, $b) };
    (@event packed $a:ident, $s:ident, $h:ident, $now:ident, $v:ident, $b:ident) => { $a.packed_event($s, $h, $now, $v, $b) };
    (@poll records $a:ident, $s:ident, $h:ident, $now:ident) => { $a.one_statement($s, $h, $now) };
    (@poll packed $a:ident, $s:ident, $h:ident, $now:ident) => { $a.batch_poll($s, $h, $now) };
    (@results records $a:ident, $s:ident, $h:ident, $now:ident, $r:ident) => { $a.one_result_at_a_time($s, $h, $now, $r) };
    (@results packed $a:ident, $s:ident, $h:ident, $now:ident, $r:ident) => { $a.batch_results($s, $h, $now, $r) };
    (@metrics $self:ident, $s:ident, $h:ident, metrics) => {{
        let m = $self.p().handler().call_metrics($s, $h)?;
        Ok(Some(Metrics {
            deadline_rollbacks: m.deadline_rollbacks,
            statements: m.statements,
            failed_statements: m.failed_statements,
            sync_retries: m.sync_retries,
            // Contracts up to 0.3.0 do not carry it.
            expired_events: 0,
        }))
    }};
    (@metrics $self:ident, $s:ident, $h:ident, ) => {{
        Ok(None)
    }};
}

contract!(
    since_v0_1_0,
    "../wit/since_v0.1.0",
    "citus-ha:policy/policy@0.1.0",
    hot: records,
);
contract!(
    since_v0_2_0,
    "../wit/since_v0.2.0",
    "citus-ha:policy/policy@0.2.0",
    hot: records,
    metrics
);
contract!(
    since_v0_3_0,
    "../wit/since_v0.3.0",
    "citus-ha:policy/policy@0.3.0",
    hot: packed,
    metrics
);
