//! What each policy Store carries: the memory limiter, the label its log lines go out with,
//! and how large the guest grew. The loader (`wasm`) makes it and every contract adapter
//! reads it, so it lives apart from both.

use citus_ha_policy::handler::Level;
use std::sync::Arc;
use wasmtime::{StoreLimits, StoreLimitsBuilder};

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

/// The policy's log lines go to the host's tracing output, tagged with the build.
pub(crate) fn forward_log(level: Level, message: &str, policy: &str) {
    match level {
        Level::Debug => tracing::debug!(policy, "{message}"),
        Level::Info => tracing::info!(policy, "{message}"),
        Level::Warn => tracing::warn!(policy, "{message}"),
        Level::Error => tracing::error!(policy, "{message}"),
    }
}

impl HostState {
    /// A Store's data for a build labelled `label`, with at most `max_memory_bytes` of linear
    /// memory (a growth past it traps rather than failing quietly).
    pub(crate) fn new(label: Arc<str>, max_memory_bytes: usize) -> Self {
        Self {
            limits: StoreLimitsBuilder::new()
                .memory_size(max_memory_bytes)
                .instances(8)
                .tables(8)
                .memories(2)
                .trap_on_grow_failure(true)
                .build(),
            label,
            peak_memory: 0,
        }
    }

    /// The largest linear memory the guest has grown to.
    pub(crate) fn peak_memory(&self) -> usize {
        self.peak_memory
    }

    /// The guest's log line, tagged with this Store's build.
    pub(crate) fn log(&mut self, level: Level, message: &str) {
        forward_log(level, message, &self.label);
    }
}
