//! `citus-ha replay` against the checked-in scenario library and the reference's examples
//! (tests/scenarios/reference):
//! same output, byte for byte, every run; malformed scenarios refused with exit status 2; and
//! the same statements against a real PostgreSQL server with the Citus emulation.

use citus_ha_pg_harness::PgServer;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_citus-ha")
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn replay(args: &[&str]) -> Output {
    Command::new(bin())
        .arg("replay")
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run citus-ha")
}

fn scenarios(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    v.sort();
    v
}

fn check_against_expected(dir: &Path) -> usize {
    let files = scenarios(dir);
    for s in &files {
        let expected = std::fs::read_to_string(s.with_extension("expected"))
            .unwrap_or_else(|e| panic!("{}: no .expected: {e}", s.display()));
        let first = replay(&[s.to_str().unwrap()]);
        assert!(
            first.status.success(),
            "{}: {}",
            s.display(),
            String::from_utf8_lossy(&first.stderr)
        );
        let out = String::from_utf8(first.stdout).unwrap();
        assert_eq!(out, expected, "{} differs from its .expected", s.display());
        let second = replay(&[s.to_str().unwrap()]);
        assert_eq!(
            second.stdout,
            out.as_bytes(),
            "{}: not deterministic",
            s.display()
        );
    }
    files.len()
}

#[test]
fn scenario_library_matches_its_expected_output() {
    let n = check_against_expected(&root().join("tests/scenarios"));
    assert!(n >= 19, "the library has {n} scenarios");
}

#[test]
fn reference_examples_are_reproduced() {
    // The reference's own output for its examples (tests/scenarios/reference/README.md).
    let n = check_against_expected(&root().join("tests/scenarios/reference"));
    assert_eq!(n, 5, "the reference examples");
}

fn write_temp(text: &str) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), text).unwrap();
    f
}

const CONFIG: &str = r#"{"op":"config","citus":{"group":0,"database":"citus"},"name":"c1","conn_url":"postgres://10.0.0.1:5432/postgres"}"#;

#[test]
fn malformed_scenarios_exit_2_naming_line_and_problem() {
    let cases: &[(&str, Vec<&str>, &str)] = &[
        (
            &format!("{CONFIG}\n{{\"op\":\"run\""),
            vec![],
            "line 2: not valid JSON",
        ),
        (
            &format!("{CONFIG}\n\n{{\"op\":\"teleport\"}}"),
            vec![],
            "line 3: unknown op \"teleport\"",
        ),
        (
            &format!("{CONFIG}\n{{\"op\":\"fail\",\"match\":\"BEGIN\"}}"),
            vec![],
            "line 2: `fail` needs the field `error`",
        ),
        (
            &format!("{CONFIG}\n{{\"op\":\"advance\",\"seconds\":\"ten\"}}"),
            vec![],
            "line 2: `advance`: `seconds` must be a number",
        ),
        ("{\"op\":\"run\"}", vec![], "line 1: the first step must be"),
        (
            &format!("{CONFIG}\n{{\"op\":\"metadata\",\"rows\":[]}}"),
            vec!["--db", "postgres://127.0.0.1:1/none"],
            "line 2: a `metadata` step only works with the simulator",
        ),
        (
            r#"{"op":"config","citus":{"group":"x","database":"citus"},"name":"c","conn_url":"postgres://h/d"}"#,
            vec![],
            "line 1: invalid config: citus.group",
        ),
    ];
    for (text, extra, needle) in cases {
        let f = write_temp(text);
        let mut args = vec![f.path().to_str().unwrap()];
        args.extend(extra.iter().copied());
        let out = replay(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{text}: wanted {needle:?} in {stderr}"
        );
        assert!(
            out.stdout.is_empty(),
            "nothing on stdout for a malformed scenario"
        );
    }
}

/// Drops the lines that may legitimately differ between the simulator and a server: the text of
/// refused statements' errors (both must still carry one).
fn normalise(out: &str) -> Vec<String> {
    out.lines()
        .map(|l| match l.find(r#","error":"#) {
            Some(i) => format!("{},\"error\":…}}", &l[..i]),
            None => l.to_string(),
        })
        .collect()
}

/// Replays the library against a real PostgreSQL with the Citus emulation: the initial
/// `metadata` rows are inserted with SQL first (replay refuses that step with --db), and the
/// statements and final rows must be those of the simulator. (Citus's refusal of add/remove for
/// a second after a committed update is switched off here, as the replay contract leaves it
/// out; `run`'s tests keep it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_against_real_postgres_matches_the_simulator() {
    let server = PgServer::start().expect("start PostgreSQL");
    let mut compared = 0;
    for s in scenarios(&root().join("tests/scenarios")) {
        let text = std::fs::read_to_string(&s).unwrap();
        let steps: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .collect();
        // Only scenarios whose sole metadata step comes right after config can start from SQL.
        let metadata: Vec<usize> = steps
            .iter()
            .enumerate()
            .filter(|(_, l)| l.contains(r#""op":"metadata""#))
            .map(|(i, _)| i)
            .collect();
        if metadata.iter().any(|i| *i != 1) {
            continue;
        }
        let db = format!("s{compared}");
        server.create_citus_database(&db).await.unwrap();
        let client = server.connect(&db).await.unwrap();
        // The replay contract leaves out Citus's post-commit sync window (see scenario-format).
        client
            .execute(
                "UPDATE citus_emulation.config SET metadata_sync_delay_ms = 0",
                &[],
            )
            .await
            .unwrap();
        if let Some(&i) = metadata.first() {
            let v: serde_json::Value = serde_json::from_str(steps[i]).unwrap();
            let mut max = 0;
            for r in v["rows"].as_array().unwrap() {
                let (id, g, h, p, role) = (
                    r[0].as_i64().unwrap() as i32,
                    r[1].as_i64().unwrap() as i32,
                    r[2].as_str().unwrap(),
                    r[3].as_i64().unwrap() as i32,
                    r[4].as_str().unwrap(),
                );
                client
                    .execute(
                        "INSERT INTO pg_catalog.pg_dist_node (nodeid, groupid, nodename, nodeport, noderole, hasmetadata, metadatasynced) \
                         VALUES ($1, $2, $3, $4, $5::text::noderole, $5 = 'primary', true)",
                        &[&id, &g, &h, &p, &role],
                    )
                    .await
                    .unwrap();
                max = max.max(id);
            }
            client
                .execute(
                    "SELECT setval('pg_catalog.pg_dist_node_nodeid_seq', $1::bigint)",
                    &[&(max as i64)],
                )
                .await
                .unwrap();
        }
        // Same line numbers as the original, so `note` lines compare too.
        let without_metadata: String = text
            .lines()
            .map(|l| {
                if l.contains(r#""op":"metadata""#) {
                    "# metadata inserted with SQL\n".to_string()
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        let f = write_temp(&without_metadata);
        let out = replay(&[f.path().to_str().unwrap(), "--db", &server.url(&db)]);
        assert!(
            out.status.success(),
            "{}: {}",
            s.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let expected = std::fs::read_to_string(s.with_extension("expected")).unwrap();
        assert_eq!(
            normalise(&String::from_utf8(out.stdout).unwrap()),
            normalise(&expected),
            "{}: the real server saw other statements or ended elsewhere",
            s.display()
        );
        compared += 1;
    }
    assert!(
        compared >= 12,
        "compared {compared} scenarios against PostgreSQL"
    );
}
