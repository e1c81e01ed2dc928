//! Builds the policy component that `citus-ha` embeds as its default policy.

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest.parent().unwrap().to_path_buf();
    for p in [
        "plugin/src",
        "plugin/Cargo.toml",
        "sim/src",
        "sim/component/src",
        "sim/component/Cargo.toml",
        "wit",
        "Cargo.toml",
        "tests/guest-build/src",
    ] {
        println!("cargo:rerun-if-changed={}", workspace.join(p).display());
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let target_dir = workspace.join("target").join("guest");
    match citus_ha_guest_build::build_policy(&workspace, &target_dir, "") {
        Ok(component) => {
            std::fs::write(out.join("citus_ha_policy.wasm"), &component).unwrap();
            // For operators and other hosts that want the file itself.
            let _ = std::fs::write(
                target_dir.join("citus_ha_policy.component.wasm"),
                &component,
            );
        }
        Err(e) => panic!("{e}"),
    }
    // The simulator as a component, for the Python (and other) hosts' replay and benchmarks;
    // this host runs the crate natively.
    match citus_ha_guest_build::build_sim(&workspace, &target_dir) {
        Ok(component) => {
            let _ = std::fs::write(target_dir.join("citus_sim.component.wasm"), &component);
        }
        Err(e) => panic!("{e}"),
    }
}
