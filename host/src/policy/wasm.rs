//! Loading and sandboxing policy components: compile once (cached precompiled artifact),
//! instantiate from an InstancePre into one Store per instance, bound every call with an epoch
//! deadline and the Store's memory with a limit, and never let a trap escape as a panic.

use super::adapter::{ContractApi, ContractPre, SUPPORTED};
use super::store::HostState;
use super::{Functions, Handler, PolicyError, PolicyResult};
use citus_ha_policy::bootstrap::{BootstrapStep, SuperuserAuth};
use citus_ha_policy::dcs::ClusterView;
use citus_ha_policy::handler::Metrics;
use citus_ha_policy::slots::ReplicationSlot;
use citus_ha_policy::{CitusConfig, EventOutcome, InvalidInput, Statement, StatementResult};
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use wasmtime::component::{Component, Linker, ResourceAny};
use wasmtime::{Config, Engine, Store};

/// How often the engine's epoch advances; call budgets are whole ticks of this.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Bounds on one policy instance.
#[derive(Clone, Debug)]
pub struct PolicyLimits {
    /// Longest a single call may run before it is stopped.
    pub call_timeout: Duration,
    /// Most linear memory the guest may grow to.
    pub max_memory_bytes: usize,
}

impl Default for PolicyLimits {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(2),
            max_memory_bytes: 256 << 20,
        }
    }
}

/// One wasmtime Engine with its epoch ticker and the precompiled-artifact cache.
pub struct PolicyEngine {
    engine: Engine,
    cache_dir: Option<PathBuf>,
    limits: PolicyLimits,
    stop: Arc<AtomicBool>,
}

impl Drop for PolicyEngine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl PolicyEngine {
    pub fn new(limits: PolicyLimits, cache_dir: Option<PathBuf>) -> anyhow::Result<Self> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        // For profiling the guest with `perf`: /tmp/perf-PID.map names its compiled functions.
        if std::env::var_os("CITUS_HA_PERF_MAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config)?;
        let stop = Arc::new(AtomicBool::new(false));
        let (e, s) = (engine.weak(), stop.clone());
        std::thread::Builder::new()
            .name("citus-ha-epoch".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match e.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })?;
        Ok(Self {
            engine,
            cache_dir,
            limits,
            stop,
        })
    }

    /// The default cache: `$XDG_CACHE_HOME/citus-ha` or `~/.cache/citus-ha`.
    pub fn default_cache_dir() -> Option<PathBuf> {
        std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|d| d.join("citus-ha"))
    }

    pub fn limits(&self) -> &PolicyLimits {
        &self.limits
    }

    fn engine_key(&self) -> String {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        format!("{:016x}", h.finish())
    }

    /// Validates, compiles (or loads the cached artifact) and links a component. Refuses a
    /// file that is not a component or whose contract version this host cannot run.
    pub fn load(&self, bytes: &[u8], source: &str) -> Result<LoadedPolicy, String> {
        let hash = hex::encode(Sha256::digest(bytes));
        let component = self.compile(bytes, &hash, source)?;
        let ty = component.component_type();
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        let imports: Vec<String> = ty
            .imports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        let Some((contract, link)) = SUPPORTED
            .iter()
            .find(|(name, _)| exports.iter().any(|e| e == name))
        else {
            return Err(format!(
                "{source}: exports {exports:?}, none of which this host runs (it runs {})",
                SUPPORTED
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        let mut linker = Linker::new(&self.engine);
        let pre =
            link(&mut linker, &component).map_err(|e| format!("{source}: cannot link: {e:#}"))?;
        Ok(LoadedPolicy {
            engine: self.engine.clone(),
            limits: self.limits.clone(),
            pre: Arc::from(pre),
            hash,
            contract: contract.rsplit('@').next().unwrap_or("?").to_string(),
            source: source.to_string(),
            imports,
            loaded_at: SystemTime::now(),
        })
    }

    fn compile(&self, bytes: &[u8], hash: &str, source: &str) -> Result<Component, String> {
        if !wasmparser_is_component(bytes) {
            return Err(format!("{source}: not a WebAssembly component"));
        }
        let cached = self
            .cache_dir
            .as_ref()
            .map(|d| d.join(format!("{hash}-{}.cwasm", self.engine_key())));
        if let Some(path) = &cached {
            if path.exists() {
                // SAFETY: the file was written by `Component::serialize` of this same engine
                // configuration (the key includes its compatibility hash) into our own cache.
                if let Ok(c) = unsafe { Component::deserialize_file(&self.engine, path) } {
                    return Ok(c);
                }
            }
        }
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| format!("{source}: not a valid component: {e:#}"))?;
        if let Some(path) = &cached {
            if let Ok(art) = component.serialize() {
                let _ = std::fs::create_dir_all(path.parent().unwrap());
                let tmp = path.with_extension("tmp");
                if std::fs::write(&tmp, art).is_ok() {
                    let _ = std::fs::rename(&tmp, path);
                }
            }
        }
        Ok(component)
    }
}

/// A component's preamble says whether it is a component (layer 1) or a core module.
fn wasmparser_is_component(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[0..4] == *b"\0asm" && bytes[6..8] == [1, 0]
}

/// A linked component and what the host reports about it.
#[derive(Clone)]
pub struct LoadedPolicy {
    engine: Engine,
    limits: PolicyLimits,
    pre: Arc<dyn ContractPre>,
    pub hash: String,
    /// The WIT contract version it was built against.
    pub contract: String,
    pub source: String,
    pub imports: Vec<String>,
    pub loaded_at: SystemTime,
}

impl LoadedPolicy {
    fn label(&self) -> String {
        format!("{}@{}", self.contract, &self.hash[..12])
    }

    fn instantiate(&self) -> PolicyResult<Instance> {
        let state = HostState::new(self.label().into(), self.limits.max_memory_bytes);
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| s);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(self.ticks());
        let api = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| PolicyError::Host(format!("instantiate: {e:#}")))?;
        Ok(Instance {
            store,
            api,
            meta: self.clone(),
        })
    }

    fn ticks(&self) -> u64 {
        (self.limits.call_timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
    }

    /// A fresh handler for this node.
    pub fn new_handler(&self, c: &CitusConfig, name: &str, url: &str) -> PolicyResult<WasmHandler> {
        let mut instance = self.instantiate()?;
        let handler = instance.call(|api, s| api.new_handler(s, c, name, url))?;
        Ok(WasmHandler { instance, handler })
    }

    /// A handler continuing from exported state; `Ok(Err)` when the build refuses the state.
    pub fn import_handler(&self, state: &[u8]) -> PolicyResult<Result<WasmHandler, String>> {
        let mut instance = self.instantiate()?;
        Ok(instance
            .call(|api, s| api.import_state(s, state))?
            .map(|handler| WasmHandler { instance, handler }))
    }

    /// An instance for the pure functions only.
    pub fn functions(&self) -> PolicyResult<WasmFunctions> {
        self.instantiate().map(WasmFunctions)
    }
}

/// One instance of a policy component in its own Store.
struct Instance {
    store: Store<HostState>,
    api: Box<dyn ContractApi>,
    meta: LoadedPolicy,
}

impl Instance {
    /// Every call gets a fresh epoch budget; any error from inside the guest is a trap after
    /// which this Store must not be used again.
    fn call<T>(
        &mut self,
        f: impl FnOnce(&mut dyn ContractApi, &mut Store<HostState>) -> wasmtime::Result<T>,
    ) -> PolicyResult<T> {
        let ticks = self.meta.ticks();
        self.store.set_epoch_deadline(ticks);
        f(self.api.as_mut(), &mut self.store).map_err(|e| {
            let what = match e.downcast_ref::<wasmtime::Trap>() {
                Some(wasmtime::Trap::Interrupt) => "call exceeded its time budget".to_string(),
                Some(t) => format!("{t}"),
                None => format!("{e:#}"),
            };
            tracing::error!(policy = %self.meta.label(), source = %self.meta.source, "policy trapped: {what}");
            PolicyError::Trap(what)
        })
    }
}

/// The pure functions, on any instance.
impl Functions for Instance {
    fn policy_version(&mut self) -> PolicyResult<String> {
        self.call(|a, s| a.policy_version(s))
    }
    fn validate_config(&mut self, j: &str) -> PolicyResult<Result<CitusConfig, InvalidInput>> {
        self.call(|a, s| a.validate_config(s, j))
    }
    fn adjust_gucs(
        &mut self,
        p: &[(String, String)],
        h: Option<&str>,
    ) -> PolicyResult<Result<Vec<(String, String)>, InvalidInput>> {
        self.call(|a, s| a.adjust_gucs(s, p, h))
    }
    fn keep_replication_slot(
        &mut self,
        c: &CitusConfig,
        primary: bool,
        slot: &ReplicationSlot,
    ) -> PolicyResult<bool> {
        self.call(|a, s| a.keep_replication_slot(s, c, primary, slot))
    }
    fn bootstrap_plan(
        &mut self,
        c: &CitusConfig,
        db: &str,
        auth: &SuperuserAuth,
        url: Option<&str>,
    ) -> PolicyResult<Result<Vec<BootstrapStep>, InvalidInput>> {
        self.call(|a, s| a.bootstrap_plan(s, c, db, auth, url))
    }
}

/// An instance of a policy component for the pure functions: it has no handler, and its type
/// offers none.
pub struct WasmFunctions(Instance);

forward_functions!(WasmFunctions, 0);

/// An instance of a policy component with its handler resource.
pub struct WasmHandler {
    instance: Instance,
    handler: ResourceAny,
}

forward_functions!(WasmHandler, instance);

impl WasmHandler {
    pub fn meta(&self) -> &LoadedPolicy {
        &self.instance.meta
    }

    /// The guest's linear memory in bytes: its peak, as Wasm memory never shrinks.
    pub fn memory_bytes(&self) -> usize {
        self.instance.store.data().peak_memory()
    }

    /// A call on this instance's handler resource.
    fn call<T>(
        &mut self,
        f: impl FnOnce(&mut dyn ContractApi, &mut Store<HostState>, ResourceAny) -> wasmtime::Result<T>,
    ) -> PolicyResult<T> {
        let h = self.handler;
        self.instance.call(|a, s| f(a, s, h))
    }
}

impl Handler for WasmHandler {
    fn handle_heartbeat(&mut self, now: u64, v: &ClusterView) -> PolicyResult<()> {
        self.call(|a, s, h| a.handle_heartbeat(s, h, now, v))
    }
    fn handle_event(
        &mut self,
        now: u64,
        v: &ClusterView,
        body: &str,
    ) -> PolicyResult<Result<EventOutcome, InvalidInput>> {
        self.call(|a, s, h| a.handle_event(s, h, now, v, body))
    }
    fn schedule_reload(&mut self) -> PolicyResult<()> {
        self.call(|a, s, h| a.schedule_reload(s, h))
    }
    fn handle_demote(&mut self) -> PolicyResult<()> {
        self.call(|a, s, h| a.handle_demote(s, h))
    }
    fn poll_statements(&mut self, now: u64) -> PolicyResult<Vec<Statement>> {
        self.call(|a, s, h| a.poll_statements(s, h, now))
    }
    fn handle_results(&mut self, now: u64, results: Vec<StatementResult>) -> PolicyResult<()> {
        self.call(|a, s, h| a.handle_results(s, h, now, results))
    }
    fn poll_timeout(&mut self) -> PolicyResult<Option<u64>> {
        self.call(|a, s, h| a.poll_timeout(s, h))
    }
    fn poll_completed(&mut self) -> PolicyResult<Vec<u64>> {
        self.call(|a, s, h| a.poll_completed(s, h))
    }
    fn export_state(&mut self) -> PolicyResult<Vec<u8>> {
        self.call(|a, s, h| a.export_state(s, h))
    }
    fn export_state_json(&mut self) -> PolicyResult<Option<Vec<u8>>> {
        self.call(|a, s, h| a.export_state_json(s, h))
    }
    fn metrics(&mut self) -> PolicyResult<Option<Metrics>> {
        self.call(|a, s, h| a.metrics(s, h))
    }
}
