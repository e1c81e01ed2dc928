//! Throw-away PostgreSQL 15 servers with the Citus emulation, for integration tests.
//!
//! Citus cannot be installed in CI, so the coordinator is a plain PostgreSQL 15 server in which
//! [`CITUS_EMULATION_SQL`] (`tests/sql/citus_emulation.sql`) defines `pg_dist_node`,
//! `citus_add_node`, `citus_update_node`, ... with the behaviour recorded in
//! `docs/citus-behaviour.md`.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let pg = citus_ha_pg_harness::PgServer::start()?;
//! pg.create_citus_database("citus").await?;
//! let client = pg.connect("citus").await?;
//! let id: i32 = client
//!     .query_one("SELECT citus_add_node('w1', 5432)", &[])
//!     .await?
//!     .get(0);
//! # let _ = id; Ok(()) }
//! ```
//!
//! Every [`PgServer`] is independent (own temporary directory, own port), so tests may run in
//! parallel.  The server is stopped (immediate shutdown) when the `PgServer` is dropped, and
//! also when the test process exits without dropping it (e.g. a `PgServer` kept in a `static`):
//! the server's supervisor shell watches a pipe from this process and shuts the server down
//! when the pipe closes.
//!
//! The binaries are taken from `$PG_BIN`, else from `/usr/lib/postgresql/15/bin`.  When the
//! process runs as root (initdb and postgres refuse to), they run as the `postgres` user.
//!
//! # The emulation
//!
//! Besides the Citus objects, the script creates a schema `citus_emulation` with:
//! - `shard_<groupid>` tables (`key bigint, value text`), one per node group, created when a
//!   primary is added (or by `citus_emulation.shard_table(groupid)`).  They stand for the
//!   group's shards: `citus_update_node` (and `citus_pause_node_within_txn`) on a primary row
//!   locks the group's table `IN EXCLUSIVE MODE` until the transaction ends, so writes to it
//!   block (they are not cancelled) while reads go on.
//! - `config.metadata_sync_delay_ms` (default 1000): how long after the COMMIT of an effective
//!   `citus_update_node` the worker primaries count as out of sync; inside that transaction they
//!   always do.  `pending_metadata_sync` records those transactions; a deferred trigger stamps
//!   the commit time.  `citus_emulation.wait_until_metadata_sync()` waits for the sync.
//!
//! Differences from real Citus worth knowing:
//! - Nothing connects to workers.  `metadatasynced` is set back to true lazily, by the next
//!   `citus_add_node`/`citus_remove_node`/`citus_set_coordinator_host` or by
//!   `citus_emulation.sync_metadata()`/`wait_until_metadata_sync()`, not by a daemon.
//! - `force => true` does not terminate conflicting sessions after `lock_cooldown`: the update
//!   waits for them like `force => false`.
//! - A new group is `max(groupid) + 1`, not the next value of a group-id sequence, so the id of
//!   a removed group can come back.
//! - A refused `citus_add_node` always consumes a node id: the id is taken before every check.
//!   (Citus 13's source takes it after the "already has a primary" check and before the
//!   out-of-sync check.)
//! - Errors carry a PL/pgSQL CONTEXT line; messages, hints and SQLSTATEs are Citus'.
//! - `PREPARE TRANSACTION` after `citus_add_node` is not refused (Citus: "cannot use 2PC in
//!   transactions involving multiple servers"), and the sync delay after a prepared
//!   transaction is measured from the PREPARE.
//! - On a hot standby the functions fail with Citus' message
//!   "cannot assign TransactionIds during recovery".

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

/// The SQL that installs the Citus emulation (run as superuser inside the target database).
pub const CITUS_EMULATION_SQL: &str = include_str!("../../sql/citus_emulation.sql");

/// Where the server binaries are looked for when `PG_BIN` is not set.
pub const DEFAULT_PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// The superuser created by initdb; connections use it (trust authentication).
pub const SUPERUSER: &str = "postgres";

/// How long [`PgServer::start`] waits for the server to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`Drop`] waits for the immediate shutdown before killing the server.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Attempts with a fresh port when the chosen one was taken meanwhile.
const PORT_ATTEMPTS: usize = 5;
/// How much of the server log goes into error messages.
const LOG_TAIL_BYTES: u64 = 4000;

/// Supervisor for the postmaster.  Arguments: $1 postgres binary, $2 data directory, $3 file
/// to create when a stop was requested, then the postgres options.  It starts postgres in the
/// background, and a watcher that reads its (inherited) stdin: when that reaches EOF -- the
/// harness dropped its end, or the test process died -- the watcher sends SIGQUIT (immediate
/// shutdown).  It exits with postgres' status; after a requested stop it also removes the data
/// directory, so that a server that is never dropped leaves little behind.
const SUPERVISOR_SH: &str = r#"
pg="$1"; data="$2"; stopped="$3"; shift 3
exec 3<&0 </dev/null
"$pg" -D "$data" "$@" 3<&- &
pid=$!
( read -r _ <&3; : >"$stopped"; kill -QUIT "$pid" 2>/dev/null ) &
watcher=$!
exec 3<&-
wait "$pid"
rc=$?
kill "$watcher" 2>/dev/null
if [ -e "$stopped" ]; then rm -rf "$data"; fi
exit "$rc"
"#;

/// A throw-away PostgreSQL server listening on 127.0.0.1 (and a Unix socket in its temporary
/// directory), with trust authentication for the `postgres` superuser.
pub struct PgServer {
    /// The supervisor shell (see [`SUPERVISOR_SH`]).
    child: Option<Child>,
    /// Our end of the supervisor's stdin: closing it stops the server.
    stop_pipe: Option<ChildStdin>,
    port: u16,
    bin_dir: PathBuf,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    log_path: PathBuf,
    /// Declared last: removed after the server has stopped.
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for PgServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgServer")
            .field("port", &self.port)
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

/// The identity the server binaries run under when we are root.
#[derive(Clone, Copy, Debug)]
struct RunAs {
    uid: u32,
    gid: u32,
}

impl PgServer {
    /// Creates a cluster with initdb in a new temporary directory, starts it on a free port of
    /// 127.0.0.1 and waits (at most 30 s) until it accepts connections.
    ///
    /// Synchronous and blocking: call it from a plain `#[test]` or at the start of an async test.
    pub fn start() -> Result<PgServer> {
        Self::start_with_bin_dir(bin_dir_from_env())
    }

    /// Like [`PgServer::start`], with the directory holding `initdb` and `postgres` given
    /// explicitly instead of taken from `PG_BIN`.
    pub fn start_with_bin_dir(bin_dir: impl AsRef<Path>) -> Result<PgServer> {
        let bin_dir = bin_dir.as_ref().to_path_buf();
        for tool in ["initdb", "postgres"] {
            let path = bin_dir.join(tool);
            if !path.is_file() {
                bail!(
                    "PostgreSQL server binary {} does not exist. Set PG_BIN to the directory \
                     holding initdb and postgres (default {DEFAULT_PG_BIN}, from the Debian \
                     package postgresql-15)",
                    path.display()
                );
            }
        }
        let run_as = run_as()?;

        let dir = tempfile::Builder::new()
            .prefix("citus-ha-pg.")
            .tempdir()
            .context("cannot create a temporary directory for the PostgreSQL server")?;
        let data_dir = dir.path().join("data");
        let socket_dir = dir.path().join("socket");
        let log_path = dir.path().join("server.log");
        fs::create_dir(&socket_dir)
            .with_context(|| format!("cannot create {}", socket_dir.display()))?;
        if let Some(user) = run_as {
            for path in [dir.path(), socket_dir.as_path()] {
                std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).with_context(
                    || format!("cannot hand {} to the postgres user", path.display()),
                )?;
            }
        }

        let mut server = PgServer {
            child: None,
            stop_pipe: None,
            port: 0,
            bin_dir,
            data_dir,
            socket_dir,
            log_path,
            dir,
        };
        server.initdb(run_as)?;

        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            match server.launch(run_as)? {
                Launch::Ready => return Ok(server),
                Launch::PortTaken(err) => last_error = Some(err),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow!("PostgreSQL did not start")))
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connection URL for database `db`, e.g. `postgres://postgres@127.0.0.1:PORT/db`.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://{SUPERUSER}@127.0.0.1:{}/{}",
            self.port,
            percent_encode(db)
        )
    }

    /// A tokio-postgres configuration for database `db` (TCP, user postgres).
    pub fn config(&self, db: &str) -> Config {
        let mut config = Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user(SUPERUSER)
            .dbname(db)
            .application_name("citus-ha-pg-harness")
            .connect_timeout(Duration::from_secs(10));
        config
    }

    /// Connects to database `db`; the connection task is spawned on the current tokio runtime.
    pub async fn connect(&self, db: &str) -> Result<Client> {
        let (client, connection) =
            self.config(db).connect(NoTls).await.map_err(|e| {
                anyhow!("cannot connect to {}: {}", self.url(db), pg_error_text(&e))
            })?;
        tokio::spawn(async move {
            // Errors here mean the server went away; the client reports them on its next use.
            let _ = connection.await;
        });
        Ok(client)
    }

    /// Creates database `db` unless it exists, then installs the Citus emulation into it.
    pub async fn create_citus_database(&self, db: &str) -> Result<()> {
        let admin = self.connect("postgres").await?;
        let exists = admin
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&db])
            .await
            .map_err(|e| anyhow!("cannot look up database {db:?}: {}", pg_error_text(&e)))?
            .is_some();
        if !exists {
            let sql = format!("CREATE DATABASE {}", quote_ident(db));
            if let Err(e) = admin.batch_execute(&sql).await {
                if e.code() != Some(&SqlState::DUPLICATE_DATABASE) {
                    bail!("cannot create database {db:?}: {}", pg_error_text(&e));
                }
            }
        }
        drop(admin);
        let client = self.connect(db).await?;
        install_citus_emulation(&client)
            .await
            .with_context(|| format!("in database {db:?}"))
    }

    /// Directory of the server's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The directory the binaries were taken from.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The server log (postgres' stdout and stderr).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last few kilobytes of the server log.
    pub fn log_tail(&self) -> String {
        read_tail(&self.log_path, LOG_TAIL_BYTES)
    }

    /// A command for one of the server binaries, run as the postgres user if we are root.
    fn command(&self, tool: &str, run_as: Option<RunAs>) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(tool));
        cmd.current_dir(self.dir.path());
        for var in [
            "PGDATA",
            "PGPORT",
            "PGHOST",
            "PGUSER",
            "PGDATABASE",
            "PGOPTIONS",
        ] {
            cmd.env_remove(var);
        }
        if let Some(user) = run_as {
            cmd.uid(user.uid).gid(user.gid);
        }
        cmd
    }

    fn initdb(&self, run_as: Option<RunAs>) -> Result<()> {
        let output = self
            .command("initdb", run_as)
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-A", "trust", "-U", SUPERUSER, "--no-sync"])
            .args(["-E", "UTF8", "--locale=C"])
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", self.bin_dir.join("initdb").display()))?;
        if !output.status.success() {
            let hint = match run_as {
                Some(_) => format!(
                    "\n(initdb ran as the `{SUPERUSER}` user, which needs to reach {}; if the \
                     temporary directory is private to root, point TMPDIR elsewhere)",
                    self.dir.path().display()
                ),
                None => String::new(),
            };
            bail!(
                "initdb -D {} failed ({}):\n{}{}{hint}",
                self.data_dir.display(),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    /// Starts postgres on a fresh port and waits until it is ready.
    /// Stops the server at once, as a crash would (immediate shutdown: open transactions are
    /// lost, clients see their connections close), and starts it again on the same port with
    /// the same data.
    pub fn restart(&mut self) -> Result<()> {
        let run_as = run_as()?;
        let port = self.port;
        // SIGQUIT to the postmaster itself: the supervisor sees it exit without a stop
        // request, so it keeps the data directory (a stop through the pipe removes it).
        let pid = self
            .postmaster_pid()
            .ok_or_else(|| anyhow!("no postmaster.pid: the server is not running"))?;
        Command::new("kill")
            .args(["-QUIT", &pid.to_string()])
            .status()
            .context("cannot run kill")?;
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + STOP_TIMEOUT;
            while child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    bail!("postgres did not stop within {}s", STOP_TIMEOUT.as_secs());
                }
                thread::sleep(Duration::from_millis(10));
            }
        }
        self.stop_pipe = None;
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            match self.launch_on(run_as, Some(port))? {
                Launch::Ready => return Ok(()),
                Launch::PortTaken(err) => {
                    last_error = Some(err);
                    thread::sleep(Duration::from_millis(200));
                }
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow!("PostgreSQL did not start again")))
    }

    /// The postmaster's process id (to freeze the server with SIGSTOP, say).
    pub fn postmaster_pid(&self) -> Option<u32> {
        fs::read_to_string(self.data_dir.join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()))
    }

    fn launch(&mut self, run_as: Option<RunAs>) -> Result<Launch> {
        self.launch_on(run_as, None)
    }

    fn launch_on(&mut self, run_as: Option<RunAs>, fixed_port: Option<u16>) -> Result<Launch> {
        let port = match fixed_port {
            Some(p) => p,
            None => free_port()?,
        };
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("cannot open {}", self.log_path.display()))?;
        let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let stop_marker = self.dir.path().join("stop-requested");

        let mut cmd = Command::new("/bin/sh");
        cmd.current_dir(self.dir.path())
            .arg("-c")
            .arg(SUPERVISOR_SH)
            .arg("citus-ha-pg-supervisor")
            .arg(self.bin_dir.join("postgres"))
            .arg(&self.data_dir)
            .arg(&stop_marker)
            .arg("-p")
            .arg(port.to_string())
            .arg("-k")
            .arg(&self.socket_dir)
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "fsync=off"])
            .args(["-c", "max_prepared_transactions=10"])
            .stdin(Stdio::piped())
            .stdout(log.try_clone()?)
            .stderr(log);
        for var in ["PGDATA", "PGPORT", "PGHOST", "PGOPTIONS"] {
            cmd.env_remove(var);
        }
        if let Some(user) = run_as {
            cmd.uid(user.uid).gid(user.gid);
        }
        let mut child = cmd
            .spawn()
            .context("cannot start /bin/sh to supervise postgres")?;
        self.stop_pipe = child.stdin.take();
        self.child = Some(child);
        self.port = port;

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child_status()? {
                self.child = None;
                self.stop_pipe = None;
                let log = read_from(&self.log_path, log_start);
                let err = anyhow!(
                    "postgres exited during startup ({status}) on port {port}; server log {}:\n{}",
                    self.log_path.display(),
                    tail_of(&log, LOG_TAIL_BYTES as usize)
                );
                if log.contains("Address already in use")
                    || log.contains("could not create any TCP/IP sockets")
                {
                    return Ok(Launch::PortTaken(err));
                }
                return Err(err);
            }
            if self.is_ready() {
                return Ok(Launch::Ready);
            }
            if Instant::now() > deadline {
                self.stop();
                bail!(
                    "postgres did not accept connections on 127.0.0.1:{port} within {}s; \
                     server log {}:\n{}",
                    START_TIMEOUT.as_secs(),
                    self.log_path.display(),
                    tail_of(
                        &read_from(&self.log_path, log_start),
                        LOG_TAIL_BYTES as usize
                    )
                );
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    fn child_status(&mut self) -> Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(child) => child
                .try_wait()
                .context("cannot poll the postgres supervisor"),
            None => Ok(None),
        }
    }

    /// Ready when postmaster.pid reports "ready" for our port and the port accepts TCP.
    fn is_ready(&self) -> bool {
        let Ok(pid_file) = fs::read_to_string(self.data_dir.join("postmaster.pid")) else {
            return false;
        };
        let lines: Vec<&str> = pid_file.lines().collect();
        let port_ok = lines.get(3).map(|l| l.trim()) == Some(self.port.to_string().as_str());
        let status_ok = lines.get(7).map(|l| l.trim()) == Some("ready");
        port_ok
            && status_ok
            && TcpStream::connect_timeout(
                &SocketAddr::from((Ipv4Addr::LOCALHOST, self.port)),
                Duration::from_secs(1),
            )
            .is_ok()
    }

    /// Immediate shutdown: close the supervisor's pipe, wait, and kill as a last resort.
    fn stop(&mut self) {
        drop(self.stop_pipe.take());
        let Some(mut child) = self.child.take() else {
            return;
        };
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                _ => break,
            }
        }
        // The postmaster ignored SIGQUIT: kill it and the supervisor.
        if let Some(pid) = fs::read_to_string(self.data_dir.join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<u32>().ok()))
        {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

enum Launch {
    Ready,
    PortTaken(anyhow::Error),
}

/// Installs the Citus emulation into the database `client` is connected to.  Idempotent.
pub async fn install_citus_emulation(client: &Client) -> Result<()> {
    if let Err(e) = client.batch_execute(CITUS_EMULATION_SQL).await {
        // The script runs in its own transaction; leave the session usable.
        let _ = client.batch_execute("ROLLBACK").await;
        bail!(
            "installing the Citus emulation failed: {}",
            pg_error_text(&e)
        );
    }
    Ok(())
}

/// A readable text for a tokio-postgres error, with the server's message, detail and hint.
pub fn pg_error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut text = format!("{db} (SQLSTATE {})", db.code().code());
            if let Some(where_) = db.where_() {
                let _ = write!(text, "\nCONTEXT: {where_}");
            }
            text
        }
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                let _ = write!(text, ": {s}");
                source = s.source();
            }
            text
        }
    }
}

/// Quotes an SQL identifier.
pub fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

fn bin_dir_from_env() -> PathBuf {
    match std::env::var_os("PG_BIN") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(DEFAULT_PG_BIN),
    }
}

/// `Some(postgres user)` when we run as root, since initdb and postgres refuse to.
fn run_as() -> Result<Option<RunAs>> {
    if effective_uid()? != 0 {
        return Ok(None);
    }
    let id = |flag: &str| -> Result<u32> {
        let out = Command::new("id")
            .args([flag, SUPERUSER])
            .output()
            .context("cannot run `id` to look up the postgres user")?;
        if !out.status.success() {
            bail!(
                "running as root, but initdb and postgres refuse to run as root and there is \
                 no `{SUPERUSER}` system user to run them as: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .context("unexpected output of `id`")
    };
    Ok(Some(RunAs {
        uid: id("-u")?,
        gid: id("-g")?,
    }))
}

fn effective_uid() -> Result<u32> {
    if let Ok(status) = fs::read_to_string("/proc/self/status") {
        if let Some(euid) = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
        {
            return Ok(euid);
        }
    }
    let out = Command::new("id")
        .arg("-u")
        .output()
        .context("cannot determine the effective user id")?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("unexpected output of `id -u`")
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .context("cannot find a free TCP port on 127.0.0.1")?;
    Ok(listener.local_addr()?.port())
}

fn read_from(path: &Path, offset: u64) -> String {
    let mut text = Vec::new();
    if let Ok(mut file) = File::open(path) {
        let _ = file.seek(SeekFrom::Start(offset));
        let _ = file.read_to_end(&mut text);
    }
    String::from_utf8_lossy(&text).into_owned()
}

fn read_tail(path: &Path, bytes: u64) -> String {
    let len = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    read_from(path, len.saturating_sub(bytes))
}

fn tail_of(text: &str, bytes: usize) -> &str {
    if text.len() <= bytes {
        return text;
    }
    let mut start = text.len() - bytes;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_and_encoding() {
        assert_eq!(quote_ident(r#"a"b"#), r#""a""b""#);
        assert_eq!(percent_encode("citus db/1"), "citus%20db%2F1");
        assert_eq!(tail_of("héllo", 3), "llo");
        assert_eq!(tail_of("héllo", 4), "llo");
    }

    #[test]
    fn emulation_sql_is_embedded() {
        assert!(CITUS_EMULATION_SQL.contains("citus_update_node"));
        assert!(CITUS_EMULATION_SQL.trim_end().ends_with("COMMIT;"));
    }
}
