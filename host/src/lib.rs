//! citus-ha: runs the policy component next to a Citus coordinator and supplies everything the
//! sandboxed policy may not do itself (database, clock, DCS, HTTP, policy swaps).

pub mod agent;
pub mod bench;
pub mod cli;
pub mod config;
pub mod dcs;
pub mod demo;
pub mod loose_yaml;
pub mod ops;
pub mod policy;
pub mod replay;
pub mod scenario;
pub mod service;
pub mod session;

/// The policy component built from this workspace (see build.rs).
pub const EMBEDDED_POLICY: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/citus_ha_policy.wasm"));
