//! citus-ha: runs the policy component next to a Citus coordinator and supplies everything the
//! sandboxed policy may not do itself (database, clock, DCS, HTTP, policy swaps).

// The runtime core, which every front end shares: the policy component in its sandbox, the
// agent that drives it, the metadata session its statements run on, and the DCS it reads.
pub mod agent;
pub mod dcs;
pub mod policy;
pub mod session;

// The front ends: `run` (the service, with its configuration), `replay` of scenarios, the
// scripted `demo`, `bench`, the one-shot operator commands, and the command line over them.
pub mod bench;
pub mod cli;
pub mod config;
pub mod demo;
pub mod ops;
pub mod replay;
pub mod scenario;
pub mod service;

// Parsing support.
pub mod loose_yaml;

/// The policy component built from this workspace (see build.rs).
pub const EMBEDDED_POLICY: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/citus_ha_policy.wasm"));
