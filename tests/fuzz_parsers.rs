//! Every parser that takes outside input, fed mutations of valid inputs from a seeded
//! generator: worker event bodies, config files, DCS files, scenario files, packed views and
//! state imports. None may panic; every refusal must say what is wrong.
//!
//! `CITUS_HA_FUZZ_INPUTS` (default 10000 per parser) and `CITUS_HA_FUZZ_SEED` make a run
//! longer or different; a failure prints the seed and the input to reproduce it.

#[path = "common_policy.rs"]
mod common;

use citus_ha::config::Config;
use citus_ha::dcs::file::parse_cluster_text;
use citus_ha::scenario::parse_scenario;
use citus_ha::service::EXAMPLE_DCS;
use citus_ha_policy::handler::Handler;
use citus_ha_policy::packed_view::{pack_once, PackedView};
use citus_ha_policy::CitusConfig;
use rand::{Rng, RngExt, SeedableRng};
use rand_pcg::Pcg64;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

/// Fragments that make parsers work hardest: structure, numbers at and past every limit,
/// odd text.
const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "\"",
    "\\",
    "null",
    "true",
    "-1",
    "0",
    "1e309",
    "-0",
    "99999999999999999999999",
    "9223372036854775808",
    "4294967296",
    "1.5",
    "NaN",
    "\u{0}",
    "\u{feff}",
    "é",
    "\n",
    "  ",
    "- ",
    "&a",
    "*a",
    "!tag ",
    "'",
    "%",
    "\\u0000",
    "\"\":",
    "before_demote",
    "after_promote",
    "group",
    "leader",
    "timeout",
    "members",
    "workers",
    "conn_url",
    "postgres://",
    "[::1]",
    "@",
    "/",
    "?sslmode=",
    "#",
];

/// One mutation of `seed`: flips, cuts, repeats, splices of tokens; sometimes several.
fn mutate(rng: &mut Pcg64, seed: &[u8]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for _ in 0..1 + rng.random_range(0..4) {
        let at = rng.random_range(0..out.len() + 1);
        match rng.random_range(0..7) {
            0 if !out.is_empty() => {
                let i = rng.random_range(0..out.len());
                out[i] ^= 1 << rng.random_range(0..8);
            }
            1 => out.truncate(at),
            2 if at < out.len() => {
                let end = (at + 1 + rng.random_range(0..16)).min(out.len());
                out.drain(at..end);
            }
            3 => {
                let t = TOKENS[rng.random_range(0..TOKENS.len())].as_bytes();
                out.splice(at..at, t.iter().copied());
            }
            4 if at < out.len() => {
                let end = (at + 1 + rng.random_range(0..32)).min(out.len());
                let piece = out[at..end].to_vec();
                out.splice(at..at, piece);
            }
            5 => {
                let b = rng.next_u32() as u8;
                out.insert(at, b);
            }
            _ => {
                let long = "x".repeat(1 + rng.random_range(0..70_000));
                out.splice(at..at, long.into_bytes());
            }
        }
    }
    out
}

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Feeds `inputs` mutations of `seeds` to `parse`; `Err` must carry a message.
fn fuzz(name: &str, seeds: &[Vec<u8>], parse: impl Fn(&[u8]) -> Result<(), String>) {
    let inputs = setting("CITUS_HA_FUZZ_INPUTS", 10_000);
    let seed = setting("CITUS_HA_FUZZ_SEED", 0x5EED) ^ name.len() as u64;
    let mut rng = Pcg64::seed_from_u64(seed);
    let (mut refused, mut accepted) = (0u64, 0u64);
    for n in 0..inputs {
        let base = &seeds[rng.random_range(0..seeds.len())];
        let input = if n < seeds.len() as u64 {
            base.clone()
        } else {
            mutate(&mut rng, base)
        };
        match catch_unwind(AssertUnwindSafe(|| parse(&input))) {
            Ok(Ok(())) => accepted += 1,
            Ok(Err(message)) => {
                assert!(
                    !message.trim().is_empty(),
                    "{name}: a refusal without a reason (seed {seed:#x}, input {n}): {:?}",
                    String::from_utf8_lossy(&input)
                );
                refused += 1;
            }
            Err(_) => panic!(
                "{name}: panicked (seed {seed:#x}, input {n}): {:?}",
                String::from_utf8_lossy(&input[..input.len().min(2000)])
            ),
        }
    }
    println!("fuzz {name}: {inputs} inputs, {accepted} accepted, {refused} refused, 0 panics");
}

fn text(bytes: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))
}

#[test]
fn worker_event_bodies() {
    let seeds: Vec<Vec<u8>> = [
        r#"{"type":"before_demote","group":1,"leader":"w1a","timeout":30,"cooldown":10}"#,
        r#"{"type":"after_promote","group":12,"leader":"w12b","timeout":30.5,"cooldown":0}"#,
        r#"{"type":"before_promote","group":"3","leader":"x","timeout":1}"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    fuzz("event", &seeds, |b| {
        citus_ha_policy::event::parse_event(text(b)?)
            .map(drop)
            .map_err(|e| e.to_string())
    });
}

#[test]
fn config_files() {
    let seeds = vec![
        include_bytes!("../host/examples/citus-ha.yaml").to_vec(),
        b"name: c\ncitus: {group: 0, database: citus}\npostgresql: {connect_address: '10.0.0.1:5432', conn_url: 'postgres://10.0.0.1:5432/postgres'}\nrestapi: {listen: '127.0.0.1:8008', authentication: {username: u, password: p}, request_timeout: 5}\nloop_wait: 10\nttl: 30\nmax_pause: 60\ndcs: {file: d.yaml}\npolicy: {call_timeout_ms: 2000}\n".to_vec(),
    ];
    fuzz("config", &seeds, |b| {
        Config::parse(text(b)?, Path::new("/etc/citus-ha"))
            .map(drop)
            .map_err(|e| e.to_string())
    });
}

#[test]
fn dcs_files() {
    let json =
        serde_json::to_string(&serde_yaml::from_str::<serde_json::Value>(EXAMPLE_DCS).unwrap())
            .unwrap();
    let seeds = vec![EXAMPLE_DCS.as_bytes().to_vec(), json.into_bytes()];
    fuzz("dcs", &seeds, |b| {
        parse_cluster_text(text(b)?, "dcs.yaml")
            .map(drop)
            .map_err(|e| format!("{e:#}"))
    });
}

#[test]
fn scenario_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/scenarios");
    let mut seeds = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "jsonl") {
            seeds.push(std::fs::read(path).unwrap());
        }
    }
    assert!(seeds.len() >= 10);
    fuzz("scenario", &seeds, |b| {
        parse_scenario(text(b)?)
            .map(drop)
            .map_err(|e| e.to_string())
    });
}

fn coordinator() -> Handler {
    let config = CitusConfig {
        group: 0,
        database: "citus".into(),
    };
    Handler::new(config, "coord1", "postgres://10.0.0.1:5432/postgres")
}

#[test]
fn packed_views() {
    let view = parse_cluster_text(EXAMPLE_DCS, "example").unwrap();
    let seeds = vec![pack_once(&view)];
    fuzz("packed-view", &seeds, |b| {
        let mut h = coordinator();
        h.handle_heartbeat_packed(
            0,
            PackedView {
                seq: 1,
                base: None,
                bytes: b,
            },
        )
        .map_err(|e| e.to_string())
    });
}

#[test]
fn state_imports() {
    let view = parse_cluster_text(EXAMPLE_DCS, "example").unwrap();
    let mut h = coordinator();
    h.handle_heartbeat(0, &view);
    let _ = h.handle_event(
        1,
        &view,
        r#"{"type":"before_demote","group":1,"leader":"w1a","timeout":30,"cooldown":10}"#,
    );
    let seeds = vec![h.export_state(), h.export_state_json()];
    fuzz("state-import", &seeds, |b| {
        Handler::import_state(b).map(drop)
    });
}

#[test]
fn text_views() {
    let view = parse_cluster_text(EXAMPLE_DCS, "example").unwrap();
    let seeds = vec![citus_ha_policy::view_text::write_once(&view).into_bytes()];
    fuzz("text-view", &seeds, |b| {
        coordinator()
            .handle_heartbeat_text(0, text(b)?)
            .map_err(|e| e.to_string())
    });
}

/// A value made of what the view's text reader must find, split or leave alone: tabs and
/// backslashes (escaped by the writer), `\N` and `N`, multi-byte characters, and runs long
/// enough that bodies cross the reader's 16-byte chunks at every offset.
fn tricky(rng: &mut Pcg64) -> String {
    const PARTS: &[&str] = &["a", "N", "\\", "\\N", "\t", "\n", "é", "10.0.0.", "-m", "x"];
    let long = rng.random_range(0..4) == 0;
    let n = rng.random_range(0..if long { 60 } else { 12 });
    (0..n)
        .map(|_| PARTS[rng.random_range(0..PARTS.len())])
        .collect()
}

/// Views with values of every shape, read by the component (Wasm, its SIMD reader) and by
/// the native handler (the word-at-a-time reader): the same statements from both, for the
/// first heartbeat and for a repeat of it (groups flagged unchanged).
#[test]
fn text_views_read_alike_in_the_component_and_natively() {
    use citus_ha::policy::native::NativeHandler;
    use citus_ha::session::sim::SimSession;
    use citus_ha_policy::dcs::{ClusterView, ConnKwargs, GroupView, Member};
    use citus_sim::Simulator;

    let engine = common::engine(10_000);
    let policy = engine.load(citus_ha::EMBEDDED_POLICY, "embedded").unwrap();
    let config = CitusConfig {
        group: 0,
        database: "citus".into(),
    };
    let url = "postgres://10.0.0.1:5432/postgres";
    let mut rng = Pcg64::seed_from_u64(setting("CITUS_HA_FUZZ_SEED", 0x5EED));
    let views = setting("CITUS_HA_FUZZ_VIEWS", 200);
    for n in 0..views {
        let member = |rng: &mut Pcg64, name: String| {
            let some = |rng: &mut Pcg64| rng.random_range(0..5) != 0;
            let url = format!("postgres://{}:5432/{}", tricky(rng), tricky(rng));
            let conn_url = some(rng).then_some(url);
            let conn_kwargs = (rng.random_range(0..3) == 0).then(|| {
                let host = tricky(rng);
                ConnKwargs {
                    host: some(rng).then_some(host),
                    port: some(rng).then(|| "5432".into()),
                }
            });
            let role = ["primary", "replica", "standby_leader", "x\ty"][rng.random_range(0..4)];
            let state = ["running", "streaming", "stopped"][rng.random_range(0..3)];
            Member {
                conn_url,
                conn_kwargs,
                role: some(rng).then(|| role.into()),
                state: some(rng).then(|| state.into()),
                noloadbalance: rng.random_range(0..4) == 0,
                name,
            }
        };
        let group = |rng: &mut Pcg64, g: i32| {
            let mut members: Vec<Member> = Vec::new();
            for m in 0..rng.random_range(0..4) {
                let name = format!("g{g}m{m}{}", tricky(rng));
                members.push(member(rng, name));
            }
            let leader = match members.first() {
                Some(m) if rng.random_range(0..4) != 0 => Some(m.name.clone()),
                _ => (rng.random_range(0..2) == 0).then(|| tricky(rng)),
            };
            GroupView { leader, members }
        };
        let mut coordinator = group(&mut rng, 0);
        coordinator.leader = Some("coord1".into());
        coordinator.members.insert(
            0,
            Member {
                name: "coord1".into(),
                conn_url: Some(url.into()),
                conn_kwargs: None,
                role: Some("primary".into()),
                state: Some("running".into()),
                noloadbalance: false,
            },
        );
        let view = ClusterView {
            coordinator,
            workers: (1..=rng.random_range(0..6))
                .map(|g| (g, group(&mut rng, g)))
                .collect(),
        };
        let mut wasm = policy.new_handler(&config, "coord1", url).unwrap();
        let mut native = NativeHandler::new(config.clone(), "coord1", url);
        let run = |h: &mut dyn citus_ha::policy::Handler| {
            let mut session = SimSession::new(Simulator::new());
            let mut ran = Vec::new();
            for now in [0, 1] {
                h.handle_heartbeat(now, &view).unwrap();
                // Bounded: a turn of a few groups is a few dozen statements.
                for _ in 0..100 {
                    let batch = h.poll_statements(now).unwrap();
                    if batch.is_empty() {
                        break;
                    }
                    let mut results = Vec::new();
                    for stmt in &batch {
                        let result = session.run(stmt);
                        let ends = result.ends_batch();
                        ran.push(format!("{stmt:?} -> {result:?}"));
                        results.push(result);
                        if ends {
                            break;
                        }
                    }
                    h.handle_results(now, results).unwrap();
                }
            }
            ran
        };
        let (w, h) = (run(&mut wasm), run(&mut native));
        assert!(!w.is_empty(), "view {n}: at least the load ran");
        assert_eq!(w, h, "view {n}: {view:?}");
    }
}
