//! Loading and sandboxing policy components: compile once (cached precompiled artifact),
//! instantiate from an InstancePre into one Store per instance, bound every call with an epoch
//! deadline and the Store's memory with a limit, and never let a trap escape as a panic.

use super::adapter::{ContractApi, ContractPre, SUPPORTED};
use super::{Policy, PolicyError, PolicyResult};
use citus_ha_policy::bootstrap::{BootstrapStep, SuperuserAuth};
use citus_ha_policy::dcs::ClusterView;
use citus_ha_policy::handler::{Level, Metrics};
use citus_ha_policy::slots::ReplicationSlot;
use citus_ha_policy::{CitusConfig, EventOutcome, InvalidInput, Statement, StatementResult};
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use wasmtime::component::{Component, Linker, ResourceAny};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder};

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

/// Per-Store data: the memory limiter and the label log lines carry.
pub struct HostState {
    limits: StoreLimits,
    label: Arc<str>,
    /// The largest linear memory the guest has grown to (bytes; memory never shrinks).
    peak_memory: usize,
}

/// The Store's limits, plus a note of how large the guest's memory has grown.
impl wasmtime::ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allow = self.limits.memory_growing(current, desired, maximum)?;
        if allow {
            self.peak_memory = self.peak_memory.max(desired);
        }
        Ok(allow)
    }
    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.memory_grow_failed(error)
    }
    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }
    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }
    fn instances(&self) -> usize {
        self.limits.instances()
    }
    fn tables(&self) -> usize {
        self.limits.tables()
    }
    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

impl HostState {
    pub(crate) fn log(&mut self, level: Level, message: &str) {
        forward_log(level, message, &self.label);
    }
}

/// The policy's log lines go to the host's tracing output, tagged with the build.
pub fn forward_log(level: Level, message: &str, policy: &str) {
    match level {
        Level::Debug => tracing::debug!(policy, "{message}"),
        Level::Info => tracing::info!(policy, "{message}"),
        Level::Warn => tracing::warn!(policy, "{message}"),
        Level::Error => tracing::error!(policy, "{message}"),
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

    fn instantiate(&self) -> PolicyResult<(Store<HostState>, Box<dyn ContractApi>)> {
        let state = HostState {
            limits: StoreLimitsBuilder::new()
                .memory_size(self.limits.max_memory_bytes)
                .instances(8)
                .tables(8)
                .memories(2)
                .trap_on_grow_failure(true)
                .build(),
            label: self.label().into(),
            peak_memory: 0,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| s);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(self.ticks());
        let api = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| PolicyError::Host(format!("instantiate: {e:#}")))?;
        Ok((store, api))
    }

    fn ticks(&self) -> u64 {
        (self.limits.call_timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
    }

    /// A fresh handler for this node.
    pub fn new_handler(&self, c: &CitusConfig, name: &str, url: &str) -> PolicyResult<WasmPolicy> {
        let (store, api) = self.instantiate()?;
        let mut p = WasmPolicy {
            store,
            api,
            handler: None,
            meta: self.clone(),
        };
        let h = p.call(|api, s| api.new_handler(s, c, name, url))?;
        p.handler = Some(h);
        Ok(p)
    }

    /// A handler continuing from exported state; `Ok(Err)` when the build refuses the state.
    pub fn import_handler(&self, state: &[u8]) -> PolicyResult<Result<WasmPolicy, String>> {
        let (store, api) = self.instantiate()?;
        let mut p = WasmPolicy {
            store,
            api,
            handler: None,
            meta: self.clone(),
        };
        match p.call(|api, s| api.import_state(s, state))? {
            Ok(h) => {
                p.handler = Some(h);
                Ok(Ok(p))
            }
            Err(e) => Ok(Err(e)),
        }
    }

    /// An instance for the pure functions only.
    pub fn functions(&self) -> PolicyResult<WasmPolicy> {
        let (store, api) = self.instantiate()?;
        Ok(WasmPolicy {
            store,
            api,
            handler: None,
            meta: self.clone(),
        })
    }
}

/// One instance of a policy component in its own Store.
pub struct WasmPolicy {
    store: Store<HostState>,
    api: Box<dyn ContractApi>,
    handler: Option<ResourceAny>,
    meta: LoadedPolicy,
}

impl WasmPolicy {
    pub fn meta(&self) -> &LoadedPolicy {
        &self.meta
    }

    /// The guest's linear memory in bytes: its peak, as Wasm memory never shrinks.
    pub fn memory_bytes(&self) -> usize {
        self.store.data().peak_memory
    }

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

    fn handle(&self) -> PolicyResult<ResourceAny> {
        self.handler
            .ok_or_else(|| PolicyError::Host("no handler in this instance".into()))
    }
}

impl Policy for WasmPolicy {
    fn version(&mut self) -> PolicyResult<String> {
        self.call(|a, s| a.version(s))
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
        self.call(|a, s| a.keep_slot(s, c, primary, slot))
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
    fn heartbeat(&mut self, now: u64, v: &ClusterView) -> PolicyResult<()> {
        let h = self.handle()?;
        self.call(|a, s| a.heartbeat(s, h, now, v))
    }
    fn event(
        &mut self,
        now: u64,
        v: &ClusterView,
        body: &str,
    ) -> PolicyResult<Result<EventOutcome, InvalidInput>> {
        let h = self.handle()?;
        self.call(|a, s| a.event(s, h, now, v, body))
    }
    fn schedule_reload(&mut self) -> PolicyResult<()> {
        let h = self.handle()?;
        self.call(|a, s| a.schedule_reload(s, h))
    }
    fn demote(&mut self) -> PolicyResult<()> {
        let h = self.handle()?;
        self.call(|a, s| a.demote(s, h))
    }
    fn poll_statements(&mut self, now: u64) -> PolicyResult<Vec<Statement>> {
        let h = self.handle()?;
        self.call(|a, s| a.poll_statements(s, h, now))
    }
    fn handle_results(&mut self, now: u64, results: Vec<StatementResult>) -> PolicyResult<()> {
        let h = self.handle()?;
        self.call(|a, s| a.handle_results(s, h, now, results))
    }
    fn poll_timeout(&mut self) -> PolicyResult<Option<u64>> {
        let h = self.handle()?;
        self.call(|a, s| a.poll_timeout(s, h))
    }
    fn poll_completed(&mut self) -> PolicyResult<Vec<u64>> {
        let h = self.handle()?;
        self.call(|a, s| a.poll_completed(s, h))
    }
    fn export_state(&mut self) -> PolicyResult<Vec<u8>> {
        let h = self.handle()?;
        self.call(|a, s| a.export_state(s, h))
    }
    fn export_state_json(&mut self) -> PolicyResult<Option<Vec<u8>>> {
        let h = self.handle()?;
        self.call(|a, s| a.export_state_json(s, h))
    }
    fn metrics(&mut self) -> PolicyResult<Option<Metrics>> {
        let h = self.handle()?;
        self.call(|a, s| a.metrics(s, h))
    }
}
