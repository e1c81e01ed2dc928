//! Builds the policy crate (and the simulator component) for wasm32 and wraps the core module
//! into a component without any WASI import (wasm32-unknown-unknown + wit-component). Used by
//! host/build.rs for the embedded policy and the simulator component other hosts load, and by
//! [`crate::policy_variant`] for the older-contract and misbehaving test builds.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Wraps a core module (with wit-bindgen's component-type section) into a component.
pub fn componentize(core: &[u8]) -> Result<Vec<u8>, String> {
    wit_component::ComponentEncoder::default()
        .module(core)
        .map_err(|e| format!("not a policy core module: {e:#}"))?
        .validate(true)
        .encode()
        .map_err(|e| format!("cannot encode the component: {e:#}"))
}

/// Runs `cargo build` of the policy crate for wasm32-unknown-unknown with `features`, in its own
/// target dir (a nested build in the same dir would wait on the outer build's lock), and
/// returns the component's bytes.
pub fn build_policy(
    workspace: &Path,
    target_dir: &Path,
    features: &str,
) -> Result<Vec<u8>, String> {
    build_component(
        workspace,
        target_dir,
        "citus-ha-policy",
        "citus_ha_policy",
        features,
    )
}

/// The simulator component (`citus-ha:sim`), for hosts in other languages.
pub fn build_sim(workspace: &Path, target_dir: &Path) -> Result<Vec<u8>, String> {
    build_component(
        workspace,
        target_dir,
        "citus-sim-component",
        "citus_sim_component",
        "",
    )
}

/// Builds `package` for wasm32-unknown-unknown and wraps its core module `lib.wasm`.
fn build_component(
    workspace: &Path,
    target_dir: &Path,
    package: &str,
    lib: &str,
    features: &str,
) -> Result<Vec<u8>, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args([
            "build",
            "--quiet",
            "-p",
            package,
            "--lib",
            "--target",
            "wasm32-unknown-unknown",
            "--profile",
            "guest",
            "--target-dir",
        ])
        .arg(target_dir);
    if !features.is_empty() {
        cmd.args(["--features", features]);
    }
    // The outer cargo's settings (clippy wrapper, flags, jobserver) are not the guest's.
    for (k, _) in std::env::vars() {
        let outer = (k.starts_with("CARGO_") && k != "CARGO_HOME")
            || k.starts_with("RUSTC")
            || k == "RUSTFLAGS"
            || k == "RUSTDOCFLAGS"
            || k == "CLIPPY_ARGS"
            || k == "MAKEFLAGS";
        if outer {
            cmd.env_remove(&k);
        }
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run cargo for the policy component: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building the {package} component failed (is the wasm32-unknown-unknown target installed? \
             `rustup target add wasm32-unknown-unknown`):\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let core_path: PathBuf = target_dir.join(format!("wasm32-unknown-unknown/guest/{lib}.wasm"));
    let core = std::fs::read(&core_path)
        .map_err(|e| format!("cannot read {}: {e}", core_path.display()))?;
    componentize(&core)
}
