//! `citus-ha bench --quick --json` runs without a database and prints one JSON object per
//! line for every benchmark (BENCHMARKS.md) except `event_to_statement` (which needs --db).

#[path = "common_policy.rs"]
mod common;

use std::collections::BTreeMap;

#[test]
fn quick_bench_prints_every_line() {
    let out = common::citus_ha(&["bench", "--quick", "--json"]);
    let mut lines: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for l in out.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"));
        lines.insert(v["bench"].as_str().expect("bench name").to_string(), v);
    }
    let mut expected = vec![
        "call_overhead",
        "validate_config",
        "adjust_gucs",
        "slot_filter_match",
        "slot_filter_nomatch",
        "transition_switchover_1_secondary",
        "transition_50_secondaries_10_replaced",
        "drain_1000",
        "swap",
        "cold_start",
    ];
    let heartbeats: Vec<String> = [10, 100, 1000, 10000]
        .iter()
        .flat_map(|n| {
            [
                format!("heartbeat_steady_{n}"),
                format!("heartbeat_new_{n}"),
            ]
        })
        .collect();
    expected.extend(heartbeats.iter().map(String::as_str));
    for name in expected {
        let v = lines.get(name).unwrap_or_else(|| panic!("no {name} line"));
        assert!(
            v["wasm_ns"].as_f64().is_some_and(|t| t > 0.0),
            "{name}: {v}"
        );
    }
    for name in [
        "drain_1000",
        "heartbeat_steady_1000",
        "heartbeat_new_1000",
        "validate_config",
    ] {
        let v = &lines[name];
        let (w, n, r) = (
            v["wasm_ns"].as_f64().unwrap(),
            v["native_ns"].as_f64().unwrap(),
            v["ratio"].as_f64().unwrap(),
        );
        assert!(
            (r - w / n).abs() / r < 0.02,
            "{name}: ratio is wasm/native: {v}"
        );
    }
    assert!(lines["guest_memory_10000"]["bytes"]
        .as_u64()
        .is_some_and(|b| b > 0));
    assert!(lines["host_peak_rss"]["bytes"]
        .as_u64()
        .is_some_and(|b| b > 0));
    assert!(!lines.contains_key("event_to_statement"), "needs --db");
}
