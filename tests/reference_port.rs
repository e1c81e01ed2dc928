//! Each deliberate departure from the reference is proven by a scenario that a port copying
//! the reference's behaviour gets wrong: the `reference-port` build of the same policy (one
//! switch, plugin/src/compat.rs) must not reproduce any `differs_*` scenario's expected output,
//! while the shipped build reproduces them all.

#[path = "common_policy.rs"]
mod common;

use citus_ha_guest_build::policy_variant;
use common::replay;
use std::path::PathBuf;

#[test]
fn every_departure_fails_against_a_reference_port() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/scenarios");
    let port = policy_variant("reference-port").unwrap();
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !(name.starts_with("differs_") && name.ends_with(".jsonl")) {
            continue;
        }
        let expected = std::fs::read_to_string(path.with_extension("expected")).unwrap();
        let got = replay(&path, &["--policy", port.to_str().unwrap()]);
        assert_ne!(
            got, expected,
            "{name}: the reference port gets it right, so it proves nothing"
        );
        checked += 1;
    }
    assert_eq!(checked, 9, "one scenario per departure");
}

#[test]
fn the_reference_port_still_reproduces_the_reference_examples() {
    // The port is faithful where citus-ha agrees with the reference.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/scenarios/reference");
    let port = policy_variant("reference-port").unwrap();
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "jsonl") {
            let expected = std::fs::read_to_string(path.with_extension("expected")).unwrap();
            assert_eq!(
                replay(&path, &["--policy", port.to_str().unwrap()]),
                expected,
                "{}",
                path.display()
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 5, "the reference examples");
}
