//! `citus-ha bootstrap` against a real PostgreSQL with the Citus emulation: the database is
//! created (or found), the superuser's credentials reach pg_dist_authinfo with libpq quoting,
//! the coordinator registers itself, and running it again changes nothing.

use citus_ha_pg_harness::PgServer;
use std::process::Command;

fn bootstrap(config: &std::path::Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_citus-ha"))
        .args(["bootstrap", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_prepares_the_coordinator_and_is_repeatable() {
    let server = PgServer::start().unwrap();
    // The emulation stands in for CREATE EXTENSION citus, which cannot be installed here.
    server.create_citus_database("citus").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dcs.yaml"), "leader: coord1\nmembers: []\n").unwrap();
    let config = dir.path().join("citus-ha.yaml");
    std::fs::write(
        &config,
        format!(
            "name: coord1\ncitus: {{group: 0, database: citus}}\n\
             postgresql:\n  connect_address: 127.0.0.1:{}\n  database: postgres\n  \
             authentication:\n    superuser: {{username: postgres, password: \"it's secret\"}}\n\
             dcs: {{file: dcs.yaml}}\n",
            server.port()
        ),
    )
    .unwrap();
    for round in 0..2 {
        let (ok, text) = bootstrap(&config);
        assert!(ok, "round {round}: {text}");
        assert!(text.contains("database citus exists"), "{text}");
        assert!(
            text.contains(&format!(
                "coordinator registered as 127.0.0.1:{}",
                server.port()
            )),
            "{text}"
        );
    }
    let c = server.connect("citus").await.unwrap();
    let rows = c
        .query(
            "SELECT authinfo FROM pg_catalog.pg_dist_authinfo WHERE nodeid = 0",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        rows.len(),
        1,
        "a second bootstrap must not add a second row"
    );
    assert_eq!(rows[0].get::<_, String>(0), r"password='it\'s secret'");
    let coord: Vec<(String, i32)> = c
        .query(
            "SELECT nodename, nodeport FROM pg_catalog.pg_dist_node WHERE groupid = 0",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(coord, vec![("127.0.0.1".to_string(), server.port() as i32)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_creates_a_missing_database_then_the_extension_or_names_it_missing() {
    let server = PgServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dcs.yaml"), "leader: w\nmembers: []\n").unwrap();
    let config = dir.path().join("citus-ha.yaml");
    std::fs::write(
        &config,
        format!(
            "name: w1\ncitus: {{group: 1, database: \"my citus\"}}\n\
             postgresql:\n  connect_address: 127.0.0.1:{}\n\
             dcs: {{file: dcs.yaml}}\n",
            server.port()
        ),
    )
    .unwrap();
    let c = server.connect("postgres").await.unwrap();
    // `./dev test` installs tests/citus_stub (an extension named citus) for the Patroni suite
    // where real Citus is absent; before that, or on a server without either, there is none.
    let citus_available: bool = c
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'citus')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let (ok, text) = bootstrap(&config);
    // The database (a name that needs quoting) is created either way.
    assert!(text.contains("created database my citus"), "{text}");
    if citus_available {
        assert!(ok, "{text}");
        assert!(text.contains("extension citus ready"), "{text}");
    } else {
        // CREATE EXTENSION citus fails, and the error says which extension is missing.
        assert!(!ok, "{text}");
        assert!(text.to_lowercase().contains("citus"), "{text}");
    }
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname = 'my citus'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}
