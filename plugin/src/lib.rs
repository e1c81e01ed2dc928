//! citus-ha policy: every decision a Citus HA coordinator makes, as plain Rust that knows
//! nothing of IO, threads, clocks or WIT. The same code runs natively (tests, benchmarks) and
//! inside the sandboxed Wasm component (`bindings`, built only for wasm32).

pub mod bootstrap;
#[cfg(any(target_arch = "wasm32", test))]
mod bytes;
pub mod compat;
pub mod config;
pub mod conninfo;
pub mod dcs;
pub mod error;
pub mod event;
pub mod group;
pub mod gucs;
pub mod handler;
pub mod node;
pub mod packed_view;
#[cfg(any(test, feature = "sim"))]
pub mod sim_exec;
#[cfg(any(test, feature = "sim"))]
pub mod sim_host;
pub mod slots;
pub mod state;
pub mod statement;
pub mod task_queue;
pub mod time;
pub mod transition;
pub mod view_text;
pub mod wire;

// A build with the simulator is a library for the simulator component, never the policy
// component itself: it exports no policy.
#[cfg(all(target_arch = "wasm32", not(feature = "sim")))]
mod bindings;
#[cfg_attr(any(not(target_arch = "wasm32"), feature = "sim"), allow(dead_code))]
mod faults;
#[cfg(target_arch = "wasm32")]
mod guest_alloc;

pub use config::CitusConfig;
pub use error::InvalidInput;
pub use handler::{EventOutcome, Handler};
pub use statement::{Statement, StatementError, StatementResult};

/// Name and version of this policy build.
pub const POLICY_VERSION: &str = concat!("citus-ha-policy ", env!("CARGO_PKG_VERSION"));
