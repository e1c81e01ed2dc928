//! The policy as the host sees it: one interface, whichever build (Wasm component of any
//! supported contract version, or the native crate for benchmarks) sits behind it.

/// Forwards [`Functions`] to the value a field holds (a Wasm instance, or the native
/// functions), so every kind of handler answers the pure functions as its instance does.
macro_rules! forward_functions {
    ($ty:ty, $($field:tt)+) => {
        impl Functions for $ty {
            fn policy_version(&mut self) -> PolicyResult<String> {
                self.$($field)+.policy_version()
            }
            fn validate_config(
                &mut self,
                j: &str,
            ) -> PolicyResult<Result<CitusConfig, InvalidInput>> {
                self.$($field)+.validate_config(j)
            }
            fn adjust_gucs(
                &mut self,
                p: &[(String, String)],
                h: Option<&str>,
            ) -> PolicyResult<Result<Vec<(String, String)>, InvalidInput>> {
                self.$($field)+.adjust_gucs(p, h)
            }
            fn keep_replication_slot(
                &mut self,
                c: &CitusConfig,
                primary: bool,
                slot: &ReplicationSlot,
            ) -> PolicyResult<bool> {
                self.$($field)+.keep_replication_slot(c, primary, slot)
            }
            fn bootstrap_plan(
                &mut self,
                c: &CitusConfig,
                db: &str,
                auth: &SuperuserAuth,
                url: Option<&str>,
            ) -> PolicyResult<Result<Vec<BootstrapStep>, InvalidInput>> {
                self.$($field)+.bootstrap_plan(c, db, auth, url)
            }
        }
    };
}

mod adapter;
pub mod native;
mod store;
pub mod wasm;

use citus_ha_policy::bootstrap::{BootstrapStep, SuperuserAuth};
use citus_ha_policy::dcs::ClusterView;
use citus_ha_policy::handler::Metrics;
use citus_ha_policy::slots::ReplicationSlot;
use citus_ha_policy::{CitusConfig, EventOutcome, InvalidInput, Statement, StatementResult};

pub use wasm::{LoadedPolicy, PolicyEngine, PolicyLimits, WasmFunctions, WasmHandler};

/// A call into the policy that did not return normally.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The guest trapped (panic, fuel/epoch deadline, memory limit). Its Store is unusable.
    #[error("policy trapped: {0}")]
    Trap(String),
    /// The host could not make the call (instantiation, linking).
    #[error("policy call failed: {0}")]
    Host(String),
}

pub type PolicyResult<T> = Result<T, PolicyError>;

/// The pure functions of the `policy` interface: decisions with no state behind them, which
/// any instance of a build answers, with or without a handler.
pub trait Functions: Send {
    fn policy_version(&mut self) -> PolicyResult<String>;
    fn validate_config(
        &mut self,
        section_json: &str,
    ) -> PolicyResult<Result<CitusConfig, InvalidInput>>;
    fn adjust_gucs(
        &mut self,
        params: &[(String, String)],
        local_host: Option<&str>,
    ) -> PolicyResult<Result<Vec<(String, String)>, InvalidInput>>;
    fn keep_replication_slot(
        &mut self,
        config: &CitusConfig,
        is_primary: bool,
        slot: &ReplicationSlot,
    ) -> PolicyResult<bool>;
    fn bootstrap_plan(
        &mut self,
        config: &CitusConfig,
        default_database: &str,
        auth: &SuperuserAuth,
        connect_url: Option<&str>,
    ) -> PolicyResult<Result<Vec<BootstrapStep>, InvalidInput>>;
}

/// The `handler` resource: one node's metadata state machine. A value of this trait always
/// has its handler, so there is no "instance without a handler" to guard against; the
/// instance it lives in answers the pure [`Functions`] too.
pub trait Handler: Functions {
    fn handle_heartbeat(&mut self, now: u64, view: &ClusterView) -> PolicyResult<()>;
    fn handle_event(
        &mut self,
        now: u64,
        view: &ClusterView,
        body: &str,
    ) -> PolicyResult<Result<EventOutcome, InvalidInput>>;
    fn schedule_reload(&mut self) -> PolicyResult<()>;
    fn handle_demote(&mut self) -> PolicyResult<()>;
    /// The next statements in order (empty: the turn is over). The caller runs them in order,
    /// stops after the first that fails, and hands back the results it has. A build whose
    /// contract has no batches gives one statement at a time.
    fn poll_statements(&mut self, now: u64) -> PolicyResult<Vec<Statement>>;
    fn handle_results(&mut self, now: u64, results: Vec<StatementResult>) -> PolicyResult<()>;
    fn poll_timeout(&mut self) -> PolicyResult<Option<u64>>;
    fn poll_completed(&mut self) -> PolicyResult<Vec<u64>>;
    fn export_state(&mut self) -> PolicyResult<Vec<u8>>;
    /// The state in the JSON format every build reads, when this build also writes another
    /// (None: `export_state` already is that format).
    fn export_state_json(&mut self) -> PolicyResult<Option<Vec<u8>>> {
        Ok(None)
    }
    /// None when the build's contract has no metrics (0.1.0).
    fn metrics(&mut self) -> PolicyResult<Option<Metrics>>;
}
