//! The throw-away server itself: start, connect, independence, cleanup, error reporting.

mod common;

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use citus_ha_pg_harness::{install_citus_emulation, PgServer, CITUS_EMULATION_SQL};
use common::*;

fn accepts_tcp(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        Duration::from_millis(500),
    )
    .is_ok()
}

fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn starts_with_the_requested_settings_and_connects_by_url() {
    let pg = PgServer::start().expect("start");
    assert_ne!(pg.port(), 0);
    assert_eq!(
        pg.url("postgres"),
        format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port())
    );
    assert!(pg
        .socket_dir()
        .join(format!(".s.PGSQL.{}", pg.port()))
        .exists());
    assert!(pg.socket_dir().starts_with(pg.data_dir().parent().unwrap()));

    let (client, connection) = tokio_postgres::connect(&pg.url("postgres"), tokio_postgres::NoTls)
        .await
        .expect("connect by url");
    tokio::spawn(connection);
    for (setting, value) in [
        ("max_prepared_transactions", "10"),
        ("fsync", "off"),
        ("listen_addresses", "127.0.0.1"),
        ("server_version_num", ""),
    ] {
        let got = scalar_text(&client, &format!("SELECT current_setting('{setting}')")).await;
        if setting == "server_version_num" {
            assert!(got.starts_with("15"), "PostgreSQL 15 expected, got {got}");
        } else {
            assert_eq!(got, value, "{setting}");
        }
    }
    assert_eq!(
        scalar_text(&client, "SELECT current_user::text").await,
        "postgres"
    );
    assert!(pg.log_tail().contains("ready to accept connections"));
}

#[tokio::test]
async fn servers_are_independent() {
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(PgServer::start);
        let b = s.spawn(PgServer::start);
        (
            a.join().unwrap().expect("start a"),
            b.join().unwrap().expect("start b"),
        )
    });
    assert_ne!(a.port(), b.port());
    assert_ne!(a.data_dir(), b.data_dir());

    a.create_citus_database("citus").await.expect("citus on a");
    b.create_citus_database("citus").await.expect("citus on b");
    let ca = a.connect("citus").await.unwrap();
    let cb = b.connect("citus").await.unwrap();
    exec(&ca, "SELECT citus_add_node('only-on-a', 5432)").await;
    assert_eq!(
        scalar_i64(&ca, "SELECT count(*) FROM pg_dist_node").await,
        1
    );
    assert_eq!(
        scalar_i64(&cb, "SELECT count(*) FROM pg_dist_node").await,
        0
    );

    // Dropping one leaves the other running.
    drop(ca);
    drop(a);
    assert_eq!(
        scalar_i64(&cb, "SELECT count(*) FROM pg_dist_node").await,
        0
    );
}

#[tokio::test]
async fn create_citus_database_and_install_are_idempotent() {
    let pg = PgServer::start().unwrap();
    pg.create_citus_database("citus").await.unwrap();
    let c = pg.connect("citus").await.unwrap();
    let ids = seed(&c).await;
    exec(
        &c,
        "INSERT INTO pg_dist_authinfo VALUES (0, 'postgres', 'password=secret')",
    )
    .await;
    let before = dump(&c).await;

    // Again through both entry points: rows, sequences and the session survive.
    pg.create_citus_database("citus").await.unwrap();
    install_citus_emulation(&c).await.unwrap();
    assert_eq!(dump(&c).await, before);
    assert_eq!(
        scalar_i64(&c, "SELECT count(*) FROM pg_dist_authinfo").await,
        1
    );
    let next = scalar_i32(&c, "SELECT citus_add_node('w3', 5432)").await;
    assert_eq!(next, ids.w1s + 1);
    assert!(scalar_bool(&c, "SELECT pg_current_xact_id_if_assigned() IS NULL").await);

    // A database whose name needs quoting.
    pg.create_citus_database("Citus \"two\"").await.unwrap();
    let c2 = pg.connect("Citus \"two\"").await.unwrap();
    assert!(scalar_text(&c2, "SELECT citus_version()")
        .await
        .contains("emulation"));
    assert!(CITUS_EMULATION_SQL.contains("CREATE OR REPLACE FUNCTION pg_catalog.citus_update_node"));
}

#[tokio::test]
async fn install_failure_is_reported_and_leaves_the_session_usable() {
    let pg = PgServer::start().unwrap();
    let c = pg.connect("postgres").await.unwrap();
    // A non-superuser cannot create objects in pg_catalog.
    exec(&c, "CREATE ROLE plain LOGIN").await;
    exec(&c, "SET ROLE plain").await;
    let err = install_citus_emulation(&c).await.unwrap_err().to_string();
    assert!(
        err.contains("installing the Citus emulation failed"),
        "{err}"
    );
    assert!(err.contains("SQLSTATE"), "{err}");
    assert_eq!(scalar_i32(&c, "SELECT 1").await, 1);
}

#[test]
fn drop_stops_the_server_and_removes_its_files() {
    let pg = PgServer::start().unwrap();
    let port = pg.port();
    let root = pg.data_dir().parent().unwrap().to_path_buf();
    assert!(accepts_tcp(port));
    drop(pg);
    assert!(!accepts_tcp(port), "port {port} still accepts connections");
    assert!(!root.exists(), "{} still exists", root.display());
}

#[test]
fn missing_binaries_are_named_in_the_error() {
    let err = PgServer::start_with_bin_dir("/nonexistent/pg/bin")
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/pg/bin/initdb"), "{err}");
    assert!(err.contains("PG_BIN"), "{err}");
}

#[test]
fn a_server_that_fails_to_start_is_reported_with_its_log() {
    use std::os::unix::fs::{symlink, PermissionsExt};

    // initdb is the real one; "postgres" writes to its log and exits.
    let real = std::path::PathBuf::from(
        std::env::var("PG_BIN").unwrap_or_else(|_| citus_ha_pg_harness::DEFAULT_PG_BIN.into()),
    );
    let bin = tempfile::tempdir().unwrap();
    std::fs::set_permissions(bin.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    symlink(real.join("initdb"), bin.path().join("initdb")).unwrap();
    let fake = bin.path().join("postgres");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'FATAL:  the fake postgres refuses to start' >&2\nexit 3\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();

    let err = PgServer::start_with_bin_dir(bin.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("postgres exited during startup"), "{err}");
    assert!(err.contains("the fake postgres refuses to start"), "{err}");
}

const HELPER_ENV: &str = "CITUS_HA_PG_HARNESS_EXIT_HELPER";

/// Run only as a child process of `server_stops_when_the_test_process_exits`.
#[test]
#[ignore = "helper process for server_stops_when_the_test_process_exits"]
fn helper_start_and_exit_without_dropping() {
    if std::env::var_os(HELPER_ENV).is_none() {
        return;
    }
    let pg = PgServer::start().unwrap();
    println!("PORT={}", pg.port());
    println!("DATA={}", pg.data_dir().display());
    std::mem::forget(pg);
    std::process::exit(0);
}

#[test]
fn server_stops_when_the_test_process_exits() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_start_and_exit_without_dropping",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_ENV, "1")
        .output()
        .expect("run the helper");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.split_once(name).map(|(_, value)| value.trim()))
            .unwrap_or_else(|| {
                panic!(
                    "helper printed no {name}:\n{stdout}\n{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })
            .to_string()
    };
    let port: u16 = field("PORT=").parse().unwrap();
    let data = std::path::PathBuf::from(field("DATA="));
    wait_until(
        "the orphaned server stopped",
        Duration::from_secs(15),
        || !accepts_tcp(port),
    );
    wait_until(
        "the orphaned server's data directory is gone",
        Duration::from_secs(15),
        || !data.exists(),
    );
    // Remove what the helper left behind (log and socket directory).
    let _ = std::fs::remove_dir_all(data.parent().unwrap());
}
