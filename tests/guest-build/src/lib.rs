//! Building policy components, kept out of the `citus-ha` library because only its build
//! script, the tests and the benchmarks' helpers run cargo: `build` compiles the policy crate
//! (and the simulator) for wasm32 and wraps it into a component without WASI imports;
//! `variants` gives the tests the older-contract and misbehaving builds, and stand-in
//! components for contracts the host does not know.

mod build;
mod variants;

pub use build::{build_policy, build_sim, componentize};
pub use variants::{dummy_component, policy_variant, workspace_dir};
