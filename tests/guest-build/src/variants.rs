//! Policy builds for tests and benchmarks: the previous-contract build, misbehaving builds,
//! and stand-in components for contracts the host does not know.

use crate::build::{build_policy, componentize};
use std::path::{Path, PathBuf};

/// The workspace this crate lives in (it sits at tests/guest-build).
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("tests/guest-build is two levels below the workspace")
        .to_path_buf()
}

/// Builds (once per feature set, cached under target/guest-variants) a variant of the policy
/// for tests and benchmarks: `wit-v0_1` for the previous contract, `fault-*` for misbehaving
/// builds. Returns the component's path.
pub fn policy_variant(features: &str) -> Result<PathBuf, String> {
    // One target dir for all variants (dependencies compile once); builds take turns so that
    // one variant's output is read before the next overwrites it.
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = BUILD.lock().unwrap_or_else(|p| p.into_inner());
    let ws = workspace_dir();
    let name = if features.is_empty() {
        "current"
    } else {
        features
    };
    let dir = ws.join("target").join("guest-variants");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let stem = name.replace([',', ' '], "+");
    let out = dir.join(format!("{stem}.wasm"));
    let target_dir = dir.join("build");
    let bytes = build_policy(&ws, &target_dir, features)?;
    // Written beside and renamed over: a test's `citus-ha --policy` child may still be reading
    // the file another test of the same binary asked for (it once read a half-written one).
    let part = dir.join(format!("{stem}.{}.part", std::process::id()));
    std::fs::write(&part, bytes).map_err(|e| e.to_string())?;
    std::fs::rename(&part, &out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// A component that implements a world from WIT text with bodies that trap: enough to test how
/// the host treats contracts it does not know.
pub fn dummy_component(wit: &str, world: &str) -> Result<Vec<u8>, String> {
    let mut resolve = wit_parser::Resolve::default();
    let pkg = resolve
        .push_str("dummy.wit", wit)
        .map_err(|e| format!("{e:#}"))?;
    let world = resolve
        .select_world(&[pkg], Some(world))
        .map_err(|e| format!("{e:#}"))?;
    let mut module =
        wit_component::dummy_module(&resolve, world, wit_parser::ManglingAndAbi::Standard32);
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
        false,
    )
    .map_err(|e| format!("{e:#}"))?;
    componentize(&module)
}
