//! The `citus-ha run` configuration: one YAML file whose names follow Patroni's, so an operator
//! who knows Patroni's configuration knows this one.
//!
//! ```yaml
//! name: coord1                       # this member's name in the DCS
//! citus: {group: 0, database: citus} # validated by the policy component itself
//! postgresql:
//!   connect_address: 10.0.0.1:5432   # or conn_url: postgres://10.0.0.1:5432/postgres
//!   database: postgres               # the member's default database (default postgres)
//!   authentication:
//!     superuser: {username: postgres, password: secret, sslcert: ..., sslkey: ...}
//!   sslmode: prefer
//! restapi:
//!   listen: 127.0.0.1:8008           # default
//!   authentication: {username: admin, password: secret}   # basic auth for every POST
//!   certfile: server.crt             # TLS when both are set
//!   keyfile: server.key
//! loop_wait: 10                      # seconds between heartbeats (default 10)
//! ttl: 30                            # default 30
//! retry_timeout: 10                  # default 10
//! dcs: {file: dcs.yaml}              # the DCS snapshot (CLUSTER shape), or etcd as Patroni:
//! # scope: demo                      #   the formation: keys under /<namespace>/<scope>/<group>/
//! # namespace: /service/             #   default
//! # etcd3: {hosts: ['10.0.0.9:2379'], protocol: https, username: u, password: p,
//! #         cacert: ca.pem, cert: client.pem, key: client.key}
//! policy:
//!   path: policy.wasm                # default: the build embedded in this binary
//!   call_timeout_ms: 2000
//!   max_memory_mb: 256
//!   cache_dir: /var/cache/citus-ha   # default: $XDG_CACHE_HOME/citus-ha or ~/.cache/citus-ha
//! coordinator:
//!   url: postgres://postgres@127.0.0.1:5432/citus   # default: built from postgresql.*
//! ```
//!
//! Validation never stops at the first problem: [`Config::parse`] walks the whole document and
//! reports every problem with its field path, because an operator fixing a config file one
//! error per run is a slow operator. Unknown keys are problems too (serde's
//! `deny_unknown_fields`, but all of them at once). Relative paths are resolved against the
//! directory of the config file, so a config and its DCS file can move together.

mod dcs;

pub use dcs::{DcsSettings, DEFAULT_NAMESPACE};

use crate::dcs::etcd::EtcdSettings;
use crate::dcs::file::parse_cluster_text;
use crate::policy::{Functions, LoadedPolicy, PolicyEngine, PolicyLimits};
use citus_ha_policy::conninfo::parse_conn_url;
use citus_ha_policy::CitusConfig;
use serde_yaml::{Mapping, Value};
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default REST API address, as Patroni's.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8008";
/// libpq's sslmode values.
pub const SSLMODES: &[&str] = &[
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];

/// One thing wrong with a config: where (a dotted field path) and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Dotted field path (`restapi.authentication.password`); empty for the whole file.
    pub path: String,
    /// What is wrong, in words an operator can act on.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// A parsed, checked configuration. Only [`Config::parse`] builds one, so every field holds a
/// usable value; the `citus` section is still as written, for the policy to validate.
#[derive(Clone, Debug)]
pub struct Config {
    /// This member's name in the DCS: the agent acts only while the coordinator group's
    /// leader key says this name.
    pub name: String,
    /// The `citus` section as JSON, exactly as written: the policy component owns its meaning.
    pub citus: serde_json::Value,
    pub postgresql: Postgresql,
    pub restapi: RestApi,
    /// Time between heartbeats (Patroni's `loop_wait`).
    pub loop_wait: Duration,
    /// Patroni's `ttl` and `retry_timeout`: workers send them with their events (as `timeout`
    /// and `cooldown`); kept here so a Patroni config section can be reused, and for tools.
    pub ttl: Duration,
    pub retry_timeout: Duration,
    /// The longest a `before_demote` may pause a group (and so hold back other groups'
    /// changes): longer asked timeouts are clamped to it. Default 2 x ttl.
    pub max_pause: Duration,
    /// Where the DCS view comes from: a file (CLUSTER shape of docs/scenario-format.md) or
    /// etcd v3 in Patroni's layout.
    pub dcs: DcsSettings,
    pub policy: PolicySettings,
    /// Explicit connection string to the coordinator's Citus database, if given.
    pub coordinator_url: Option<String>,
}

/// Where this member's PostgreSQL is and how to log in to it.
#[derive(Clone, Debug)]
pub struct Postgresql {
    /// Host and port other nodes reach this member at.
    pub host: String,
    pub port: u16,
    /// `conn_url` when the operator gave one (published as the member's URL as it is).
    pub conn_url: Option<String>,
    /// The member's default database (part of its published URL; bootstrap connects to it).
    pub database: String,
    pub superuser: Superuser,
    /// libpq's sslmode for connections to this member (see [`SSLMODES`]).
    pub sslmode: Option<String>,
}

/// `postgresql.authentication.superuser`: who the metadata session logs in as (default user
/// `postgres`), and the credentials bootstrap stores in pg_dist_authinfo.
#[derive(Clone, Debug, Default)]
pub struct Superuser {
    pub username: Option<String>,
    pub password: Option<String>,
    /// Client certificate and key (bootstrap hands them to Citus; the metadata session's own
    /// connection does not present them).
    pub sslcert: Option<PathBuf>,
    pub sslkey: Option<PathBuf>,
}

/// `restapi`: where worker events arrive.
#[derive(Clone, Debug)]
pub struct RestApi {
    /// Address the REST API binds (Patroni's default 127.0.0.1:8008).
    pub listen: SocketAddr,
    /// Basic-auth credentials every POST must carry.
    pub auth: Option<(String, String)>,
    /// Certificate chain and key (PEM) for HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// How long a client may take to send a request's head (and, separately, its body).
    pub request_timeout: Duration,
    /// Connections served at once; more are answered 503.
    pub max_connections: usize,
}

/// `policy`: which component runs and its sandbox limits.
#[derive(Clone, Debug)]
pub struct PolicySettings {
    /// None: the build embedded in this binary.
    pub path: Option<PathBuf>,
    /// Longest a single policy call may run before it is stopped (a trap).
    pub call_timeout: Duration,
    /// Most linear memory the policy may grow to.
    pub max_memory_bytes: usize,
    /// Where compiled components are cached, so restarts and swaps skip compiling.
    pub cache_dir: Option<PathBuf>,
}

impl Default for PolicySettings {
    fn default() -> Self {
        Self {
            path: None,
            call_timeout: Duration::from_millis(2000),
            max_memory_bytes: 256 << 20,
            cache_dir: PolicyEngine::default_cache_dir(),
        }
    }
}

/// The files a config names, as far as their fields could be read: they are checked even
/// when other fields have problems, so that one run of check-config shows everything.
#[derive(Clone, Debug, Default)]
pub struct Files {
    /// Each field is the resolved path from the field of the same name in [`Config`].
    pub dcs_file: Option<PathBuf>,
    pub policy_path: Option<PathBuf>,
    pub cache_dir: Option<PathBuf>,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub sslcert: Option<PathBuf>,
    pub sslkey: Option<PathBuf>,
    /// The etcd3 section, whose TLS files must read.
    pub etcd3: Option<EtcdSettings>,
}

impl Files {
    /// Every file that cannot be used: the DCS file must parse, the others must be readable
    /// (and the TLS pair must make a server configuration).
    pub fn check(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut problem = |path: &str, message: String| {
            problems.push(Problem {
                path: path.into(),
                message,
            })
        };
        if let Some(f) = &self.dcs_file {
            match std::fs::read_to_string(f) {
                Err(e) => problem("dcs.file", format!("cannot read {}: {e}", f.display())),
                Ok(text) => {
                    if let Err(e) = parse_cluster_text(&text, &f.display().to_string()) {
                        problem("dcs.file", format!("{e:#}"));
                    }
                }
            }
        }
        if let Some(p) = &self.policy_path {
            if let Err(e) = std::fs::metadata(p) {
                problem("policy.path", format!("cannot read {}: {e}", p.display()));
            }
        }
        if let Some(dir) = &self.cache_dir {
            if dir.exists() && !dir.is_dir() {
                problem(
                    "policy.cache_dir",
                    format!("{} is not a directory", dir.display()),
                );
            }
        }
        if let Some((cert, key)) = &self.tls {
            if let Err((path, e)) = crate::service::http::tls_config(cert, key) {
                problem(path, e);
            }
        }
        for (path, file) in [
            ("postgresql.authentication.superuser.sslcert", &self.sslcert),
            ("postgresql.authentication.superuser.sslkey", &self.sslkey),
        ] {
            if let Some(f) = file {
                if let Err(e) = std::fs::metadata(f) {
                    problem(path, format!("cannot read {}: {e}", f.display()));
                }
            }
        }
        if let Some(e) = &self.etcd3 {
            problems.extend(dcs::check_etcd_files(e));
        }
        problems
    }
}

/// What a walk over a config document found, usable or not.
#[derive(Debug)]
pub struct Parsed {
    /// Set when the document itself has no problem.
    pub config: Option<Config>,
    /// Every problem of the document itself.
    pub problems: Vec<Problem>,
    pub files: Files,
    /// The `citus` section, if present, for the policy to validate.
    pub citus: Option<serde_json::Value>,
    /// The policy settings, if they could be read (for the engine that validates `citus`).
    pub policy: Option<PolicySettings>,
}

/// Loads the policy at `path` (or the embedded build) and has it validate a `citus` section.
/// Problems are reported under `policy.path` or under the field the policy names.
pub fn validate_citus(
    engine: &PolicyEngine,
    path: Option<&Path>,
    citus: &serde_json::Value,
) -> Result<(LoadedPolicy, CitusConfig), Vec<Problem>> {
    let loaded = match path {
        None => engine.load(crate::EMBEDDED_POLICY, "embedded"),
        Some(p) => match std::fs::read(p) {
            Ok(bytes) => engine.load(&bytes, &p.display().to_string()),
            Err(e) => Err(format!("cannot read {}: {e}", p.display())),
        },
    }
    .map_err(|message| {
        vec![Problem {
            path: "policy.path".into(),
            message,
        }]
    })?;
    let validated = loaded
        .functions()
        .and_then(|mut f| f.validate_config(&citus.to_string()))
        .map_err(|e| {
            vec![Problem {
                path: "policy.path".into(),
                message: format!("the policy cannot validate the citus section: {e}"),
            }]
        })?;
    match validated {
        Ok(c) => Ok((loaded, c)),
        Err(first) => Err(every_citus_problem(&loaded, citus, first)),
    }
}

/// The policy names one problem per call; an operator wants them all. Each setting of the
/// section is checked again on its own, beside valid stand-ins for the others, by the same
/// build (its rules, not a copy of them).
fn every_citus_problem(
    loaded: &LoadedPolicy,
    citus: &serde_json::Value,
    first: citus_ha_policy::InvalidInput,
) -> Vec<Problem> {
    let mut problems = vec![Problem {
        path: first.field,
        message: first.reason,
    }];
    let (Some(section), Ok(mut f)) = (citus.as_object(), loaded.functions()) else {
        return problems;
    };
    for (key, value) in section {
        let mut probe = serde_json::json!({"group": 0, "database": "citus"});
        probe[key.as_str()] = value.clone();
        if let Ok(Err(invalid)) = f.validate_config(&probe.to_string()) {
            if !problems.iter().any(|p| p.path == invalid.field) {
                problems.push(Problem {
                    path: invalid.field,
                    message: invalid.reason,
                });
            }
        }
    }
    problems
}

impl PolicySettings {
    /// The sandbox bounds the policy engine enforces on every instance.
    pub fn limits(&self) -> PolicyLimits {
        PolicyLimits {
            call_timeout: self.call_timeout,
            max_memory_bytes: self.max_memory_bytes,
        }
    }
}

/// The reading of a config file failed: every problem found, or a YAML syntax error.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<Problem>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Reads and checks a config file (syntax and values; see [`Config::check_environment`] for
    /// the files it names and [`Config::load_policy`] for the `citus` section).
    pub fn read(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![Problem {
                path: String::new(),
                message: format!("cannot read {}: {e}", path.display()),
            }])
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, base)
    }

    /// Parses YAML text; relative paths are resolved against `base`. Returns every problem of
    /// the document (not of the files it names: see [`Config::check_environment`]).
    pub fn parse(text: &str, base: &Path) -> Result<Config, ConfigErrors> {
        let parsed = Config::parse_partial(text, base)?;
        match parsed.config {
            Some(c) if parsed.problems.is_empty() => Ok(c),
            _ => Err(ConfigErrors(parsed.problems)),
        }
    }

    /// Like [`Config::parse`], but keeps what could be read next to the problems. Only a YAML
    /// syntax error (with its line and column) is an `Err`.
    pub fn parse_partial(text: &str, base: &Path) -> Result<Parsed, ConfigErrors> {
        let doc: Value = crate::loose_yaml::from_str(text).map_err(|e| {
            let message = match e.location() {
                Some(l) => format!(
                    "not valid YAML at line {} column {}: {}",
                    l.line(),
                    l.column(),
                    strip_location(&e.to_string())
                ),
                None => format!("not valid YAML: {e}"),
            };
            ConfigErrors(vec![Problem {
                path: String::new(),
                message,
            }])
        })?;
        let mut w = Walker {
            problems: Vec::new(),
            base: base.to_path_buf(),
            files: Files::default(),
            citus: None,
            policy: None,
        };
        let config = w.config(&doc);
        Ok(Parsed {
            config: config.filter(|_| w.problems.is_empty()),
            problems: w.problems,
            files: w.files,
            citus: w.citus,
            policy: w.policy,
        })
    }

    /// The member's URL as published in the DCS and handed to the policy (it registers the
    /// coordinator's own row from it): `conn_url`, or `postgres://connect_address/database`.
    pub fn member_url(&self) -> String {
        match &self.postgresql.conn_url {
            Some(u) => u.clone(),
            None => format!(
                "postgres://{}:{}/{}",
                url_host(&self.postgresql.host),
                self.postgresql.port,
                self.postgresql.database
            ),
        }
    }

    /// The connection string of the metadata session: `coordinator.url`, or this member's
    /// address with the Citus database, the superuser's credentials and sslmode.
    pub fn coordinator_conninfo(&self, citus_database: &str) -> String {
        if let Some(u) = &self.coordinator_url {
            return u.clone();
        }
        let pg = &self.postgresql;
        let mut pairs: Vec<(&str, String)> = vec![
            ("host", pg.host.clone()),
            ("port", pg.port.to_string()),
            ("dbname", citus_database.to_string()),
            (
                "user",
                pg.superuser
                    .username
                    .clone()
                    .unwrap_or_else(|| "postgres".into()),
            ),
        ];
        if let Some(p) = &pg.superuser.password {
            pairs.push(("password", p.clone()));
        }
        if let Some(m) = &pg.sslmode {
            pairs.push(("sslmode", tokio_postgres_sslmode(m).to_string()));
        }
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        citus_ha_policy::bootstrap::format_dsn(&pairs)
    }

    /// Checks what the config points at: the DCS file parses, the policy and TLS files read.
    /// `run` tolerates a DCS file that does not exist yet; `check-config` does not.
    pub fn check_environment(&self) -> Vec<Problem> {
        let (dcs_file, etcd3) = match &self.dcs {
            DcsSettings::File(f) => (Some(f.clone()), None),
            DcsSettings::Etcd3(e) => (None, Some(e.clone())),
        };
        Files {
            dcs_file,
            etcd3,
            policy_path: self.policy.path.clone(),
            cache_dir: self.policy.cache_dir.clone(),
            tls: self.restapi.tls.clone(),
            sslcert: self.postgresql.superuser.sslcert.clone(),
            sslkey: self.postgresql.superuser.sslkey.clone(),
        }
        .check()
    }

    /// Loads the configured policy (or the embedded build) and has it validate the `citus`
    /// section.
    pub fn load_policy(
        &self,
        engine: &PolicyEngine,
    ) -> Result<(LoadedPolicy, CitusConfig), Vec<Problem>> {
        validate_citus(engine, self.policy.path.as_deref(), &self.citus)
    }

    /// Whether the metadata session must use TLS (the connection string asks for it).
    pub fn coordinator_tls(conninfo: &str) -> bool {
        conninfo
            .parse::<tokio_postgres::Config>()
            .map(|c| c.get_ssl_mode() == tokio_postgres::config::SslMode::Require)
            .unwrap_or(false)
    }
}

/// Everything `check-config` verifies, every problem at once: the document, the files it
/// names, and the `citus` section as the policy component (configured or embedded) sees it.
/// Returns the config when there is no problem.
pub fn check_file(path: &Path) -> (Option<Config>, Vec<Problem>) {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            return (
                None,
                vec![Problem {
                    path: String::new(),
                    message: format!("cannot read {}: {e}", path.display()),
                }],
            )
        }
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let parsed = match Config::parse_partial(&text, base) {
        Ok(p) => p,
        Err(ConfigErrors(problems)) => return (None, problems),
    };
    let mut problems = parsed.problems;
    problems.extend(parsed.files.check());
    if let Some(citus) = &parsed.citus {
        let settings = parsed.policy.unwrap_or_default();
        match PolicyEngine::new(settings.limits(), settings.cache_dir.clone()) {
            Err(e) => problems.push(Problem {
                path: "policy".into(),
                message: format!("cannot start the policy engine: {e}"),
            }),
            Ok(engine) => {
                // An unusable policy.path is reported already; the embedded build still
                // checks the citus section then.
                let path = settings
                    .path
                    .filter(|_| !problems.iter().any(|p| p.path == "policy.path"));
                if let Err(found) = validate_citus(&engine, path.as_deref(), citus) {
                    problems.extend(found);
                }
            }
        }
    }
    match parsed.config {
        Some(c) if problems.is_empty() => (Some(c), problems),
        _ => (None, problems),
    }
}

/// `citus-ha check-config FILE`: every problem on its own line (exit 1), or a one-line summary
/// of what would run (exit 0).
pub fn check_config_command(path: &Path) -> std::process::ExitCode {
    let (config, problems) = check_file(path);
    match config {
        Some(c) if problems.is_empty() => {
            let policy = c
                .policy
                .path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "embedded".into());
            println!(
                "{}: OK: member {} ({}:{}), citus group {} database {}, REST API on {}{}, {}, policy {}, heartbeat every {:?}",
                path.display(),
                c.name,
                c.postgresql.host,
                c.postgresql.port,
                c.citus["group"],
                c.citus["database"].as_str().unwrap_or("?"),
                if c.restapi.tls.is_some() { "https://" } else { "http://" },
                c.restapi.listen,
                c.dcs.describe(),
                policy,
                c.loop_wait,
            );
            std::process::ExitCode::SUCCESS
        }
        _ => {
            for p in &problems {
                println!("{}: {p}", path.display());
            }
            println!(
                "{}: {} problem{}",
                path.display(),
                problems.len(),
                if problems.len() == 1 { "" } else { "s" }
            );
            std::process::ExitCode::from(1)
        }
    }
}

/// tokio-postgres knows disable, prefer and require; libpq's others map to the nearest one.
/// verify-ca/verify-full become require: the metadata session then verifies the server only
/// when PGSSLROOTCERT names a CA file (see session/pg.rs).
fn tokio_postgres_sslmode(m: &str) -> &'static str {
    match m {
        "disable" => "disable",
        "allow" | "prefer" => "prefer",
        _ => "require",
    }
}

fn url_host(h: &str) -> String {
    if h.contains(':') {
        format!("[{h}]")
    } else {
        h.to_string()
    }
}

/// serde_yaml appends "at line L column C" itself; we report the location once.
fn strip_location(msg: &str) -> &str {
    match msg.find(" at line ") {
        Some(i) => &msg[..i],
        None => msg,
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Walks the document and collects problems; returns None where a value is unusable.
struct Walker {
    problems: Vec<Problem>,
    base: PathBuf,
    /// Files named so far, checked even when the document has problems.
    files: Files,
    citus: Option<serde_json::Value>,
    policy: Option<PolicySettings>,
}

impl Walker {
    fn problem(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.to_string(),
            message: message.into(),
        });
    }

    /// A mapping whose keys must all be in `known`; every unknown key is a problem.
    fn mapping<'a>(&mut self, v: &'a Value, path: &str, known: &[&str]) -> Option<&'a Mapping> {
        let Value::Mapping(m) = v else {
            self.problem(path, format!("must be a mapping, got {}", kind(v)));
            return None;
        };
        for k in m.keys() {
            match k.as_str() {
                Some(k) if known.contains(&k) => {}
                Some(k) => self.problem(
                    &join(path, k),
                    format!("unknown setting (expected one of: {})", known.join(", ")),
                ),
                None => self.problem(path, format!("keys must be strings, got {}", kind(k))),
            }
        }
        Some(m)
    }

    fn get<'a>(m: &'a Mapping, key: &str) -> Option<&'a Value> {
        m.get(key).filter(|v| !v.is_null())
    }

    fn string(&mut self, m: &Mapping, path: &str, key: &str) -> Option<String> {
        let p = join(path, key);
        match Self::get(m, key)? {
            Value::String(s) if s.is_empty() => {
                self.problem(&p, "must not be empty");
                None
            }
            Value::String(s) => Some(s.clone()),
            // Patroni's configs often have unquoted numbers as passwords.
            Value::Number(n) if key == "password" => Some(n.to_string()),
            other => {
                self.problem(&p, format!("must be a string, got {}", kind(other)));
                None
            }
        }
    }

    fn path(&mut self, m: &Mapping, path: &str, key: &str) -> Option<PathBuf> {
        self.string(m, path, key).map(|s| {
            let p = PathBuf::from(s);
            if p.is_absolute() {
                p
            } else {
                self.base.join(p)
            }
        })
    }

    /// Seconds as a positive number (Patroni's are integers; fractions are allowed here).
    fn seconds(&mut self, m: &Mapping, key: &str, default: u64) -> Duration {
        match Self::get(m, key) {
            None => Duration::from_secs(default),
            Some(Value::Number(n)) => match n.as_f64() {
                Some(s) if s > 0.0 && s <= 86_400.0 => Duration::from_secs_f64(s),
                _ => {
                    self.problem(
                        key,
                        format!("must be more than 0 and at most 86400 seconds, got {n}"),
                    );
                    Duration::from_secs(default)
                }
            },
            Some(other) => {
                self.problem(
                    key,
                    format!("must be a number of seconds, got {}", kind(other)),
                );
                Duration::from_secs(default)
            }
        }
    }

    fn integer(&mut self, m: &Mapping, path: &str, key: &str, range: (u64, u64)) -> Option<u64> {
        let p = join(path, key);
        match Self::get(m, key)? {
            Value::Number(n) => match n.as_u64() {
                Some(i) if i >= range.0 && i <= range.1 => Some(i),
                _ => {
                    self.problem(
                        &p,
                        format!(
                            "must be a whole number from {} to {}, got {n}",
                            range.0, range.1
                        ),
                    );
                    None
                }
            },
            other => {
                self.problem(&p, format!("must be a whole number, got {}", kind(other)));
                None
            }
        }
    }

    fn config(&mut self, doc: &Value) -> Option<Config> {
        if doc.is_null() {
            self.problem(
                "",
                "the file is empty; it must be a mapping (name, citus, postgresql, dcs, ...)",
            );
            return None;
        }
        let root = self.mapping(
            doc,
            "",
            &[
                "name",
                "citus",
                "postgresql",
                "restapi",
                "loop_wait",
                "ttl",
                "retry_timeout",
                "max_pause",
                "dcs",
                "scope",
                "namespace",
                "etcd3",
                "policy",
                "coordinator",
            ],
        )?;
        let name = self.string(root, "", "name");
        if name.is_none() && Self::get(root, "name").is_none() {
            self.problem("name", "is required (this member's name in the DCS)");
        }
        let citus = match Self::get(root, "citus") {
            None => {
                self.problem(
                    "citus",
                    "is required ({group: 0, database: citus} on the coordinator)",
                );
                None
            }
            Some(v) => match serde_json::to_value(v) {
                Ok(j) => {
                    self.citus = Some(j.clone());
                    Some(j)
                }
                Err(e) => {
                    self.problem("citus", format!("cannot be read as JSON: {e}"));
                    None
                }
            },
        };
        let postgresql = match Self::get(root, "postgresql") {
            None => {
                self.problem(
                    "postgresql",
                    "is required (at least connect_address or conn_url)",
                );
                None
            }
            Some(v) => self.postgresql(v),
        };
        let restapi = match Self::get(root, "restapi") {
            None => Some(RestApi {
                listen: DEFAULT_LISTEN.parse().expect("valid default"),
                auth: None,
                tls: None,
                request_timeout: Duration::from_secs(10),
                max_connections: 128,
            }),
            Some(v) => self.restapi(v),
        };
        let loop_wait = self.seconds(root, "loop_wait", 10);
        let ttl = self.seconds(root, "ttl", 30);
        let retry_timeout = self.seconds(root, "retry_timeout", 10);
        if ttl < loop_wait {
            self.problem(
                "ttl",
                format!(
                    "must be at least loop_wait ({} s), got {} s: the view would count as stale between two heartbeats",
                    loop_wait.as_secs_f64(),
                    ttl.as_secs_f64()
                ),
            );
        }
        let max_pause = match Self::get(root, "max_pause") {
            None => ttl * 2,
            Some(_) => self.seconds(root, "max_pause", 60),
        };
        let dcs = self.dcs_settings(root);
        let policy = match Self::get(root, "policy") {
            None => Some(PolicySettings::default()),
            Some(v) => self.policy(v),
        };
        self.policy = policy.clone();
        if let Some(p) = &policy {
            self.files.policy_path = p.path.clone();
            self.files.cache_dir = p.cache_dir.clone();
        }
        let coordinator_url = match Self::get(root, "coordinator") {
            None => None,
            Some(v) => self.mapping(v, "coordinator", &["url"]).and_then(|m| {
                let url = self.string(m, "coordinator", "url")?;
                match url.parse::<tokio_postgres::Config>() {
                    Ok(_) => Some(url),
                    Err(e) => {
                        self.problem("coordinator.url", format!("not a connection string: {e}"));
                        None
                    }
                }
            }),
        };
        Some(Config {
            name: name?,
            citus: citus?,
            postgresql: postgresql?,
            restapi: restapi?,
            loop_wait,
            ttl,
            retry_timeout,
            max_pause,
            dcs: dcs?,
            policy: policy?,
            coordinator_url,
        })
    }

    fn postgresql(&mut self, v: &Value) -> Option<Postgresql> {
        let p = "postgresql";
        let m = self.mapping(
            v,
            p,
            &[
                "connect_address",
                "conn_url",
                "database",
                "authentication",
                "sslmode",
            ],
        )?;
        let connect_address = self.string(m, p, "connect_address");
        let conn_url = self.string(m, p, "conn_url");
        let database = self
            .string(m, p, "database")
            .unwrap_or_else(|| "postgres".into());
        let address = match (&connect_address, &conn_url) {
            (Some(a), _) => match parse_host_port(a) {
                Ok(hp) => Some(hp),
                Err(e) => {
                    self.problem("postgresql.connect_address", e);
                    None
                }
            },
            (None, Some(u)) => match parse_conn_url(u) {
                Ok(a) => u16::try_from(a.port).ok().map(|port| (a.host, port)),
                Err(e) => {
                    self.problem("postgresql.conn_url", e.to_string());
                    None
                }
            },
            (None, None) => {
                if Self::get(m, "connect_address").is_none() && Self::get(m, "conn_url").is_none() {
                    self.problem(
                        "postgresql.connect_address",
                        "is required (\"host:port\" other nodes reach this member at), unless conn_url is given",
                    );
                }
                None
            }
        };
        if let (Some(_), Some(u)) = (&connect_address, &conn_url) {
            match parse_conn_url(u) {
                Err(e) => self.problem("postgresql.conn_url", e.to_string()),
                Ok(url) => {
                    // Both say where other nodes reach this member; if they differ, the
                    // coordinator's own row and the DCS would name different servers.
                    if let Some((host, port)) = &address {
                        let same =
                            url.host.eq_ignore_ascii_case(host) && url.port == i32::from(*port);
                        if !same {
                            self.problem(
                                "postgresql.conn_url",
                                format!(
                                    "names {}:{} but connect_address is {host}:{port}; they must agree",
                                    url.host, url.port
                                ),
                            );
                        }
                    }
                }
            }
        }
        let sslmode = self.string(m, p, "sslmode");
        if let Some(s) = &sslmode {
            if !SSLMODES.contains(&s.as_str()) {
                self.problem(
                    "postgresql.sslmode",
                    format!("{s:?} is not one of {}", SSLMODES.join(", ")),
                );
            }
        }
        let superuser = match Self::get(m, "authentication") {
            None => Superuser::default(),
            Some(a) => {
                let ap = "postgresql.authentication";
                // Patroni also has `replication` and `rewind` users; the coordinator never uses them.
                match self.mapping(a, ap, &["superuser", "replication", "rewind"]) {
                    None => Superuser::default(),
                    Some(am) => match Self::get(am, "superuser") {
                        None => Superuser::default(),
                        Some(su) => {
                            let sp = "postgresql.authentication.superuser";
                            match self.mapping(
                                su,
                                sp,
                                &["username", "password", "sslcert", "sslkey", "sslrootcert"],
                            ) {
                                None => Superuser::default(),
                                Some(sm) => {
                                    let su = Superuser {
                                        username: self.string(sm, sp, "username"),
                                        password: self.string(sm, sp, "password"),
                                        sslcert: self.path(sm, sp, "sslcert"),
                                        sslkey: self.path(sm, sp, "sslkey"),
                                    };
                                    self.files.sslcert = su.sslcert.clone();
                                    self.files.sslkey = su.sslkey.clone();
                                    su
                                }
                            }
                        }
                    },
                }
            }
        };
        let (host, port) = address?;
        Some(Postgresql {
            host,
            port,
            conn_url,
            database,
            superuser,
            sslmode,
        })
    }

    fn restapi(&mut self, v: &Value) -> Option<RestApi> {
        let p = "restapi";
        let m = self.mapping(
            v,
            p,
            &[
                "listen",
                "connect_address",
                "authentication",
                "certfile",
                "keyfile",
                "request_timeout",
                "max_connections",
            ],
        )?;
        let request_timeout = self
            .integer(m, p, "request_timeout", (1, 3600))
            .map_or(Duration::from_secs(10), Duration::from_secs);
        let max_connections = self
            .integer(m, p, "max_connections", (1, 65_536))
            .map_or(128, |n| n as usize);
        let listen = match self.string(m, p, "listen") {
            None => Some(DEFAULT_LISTEN.parse().expect("valid default")),
            Some(l) => match resolve_listen(&l) {
                Ok(a) => Some(a),
                Err(e) => {
                    self.problem("restapi.listen", e);
                    None
                }
            },
        };
        let auth = match Self::get(m, "authentication") {
            None => None,
            Some(a) => {
                let ap = "restapi.authentication";
                self.mapping(a, ap, &["username", "password"])
                    .and_then(|am| {
                        let u = self.string(am, ap, "username");
                        let pw = self.string(am, ap, "password");
                        if u.is_none() && Self::get(am, "username").is_none() {
                            self.problem(
                                "restapi.authentication.username",
                                "is required when authentication is set",
                            );
                        }
                        if pw.is_none() && Self::get(am, "password").is_none() {
                            self.problem(
                                "restapi.authentication.password",
                                "is required when authentication is set",
                            );
                        }
                        Some((u?, pw?))
                    })
            }
        };
        let cert = self.path(m, p, "certfile");
        let key = self.path(m, p, "keyfile");
        let tls = match (cert, key) {
            (Some(c), Some(k)) => Some((c, k)),
            (Some(_), None) => {
                self.problem("restapi.keyfile", "is required when certfile is set");
                None
            }
            (None, Some(_)) => {
                self.problem("restapi.certfile", "is required when keyfile is set");
                None
            }
            (None, None) => None,
        };
        self.files.tls = tls.clone();
        Some(RestApi {
            listen: listen?,
            auth,
            tls,
            request_timeout,
            max_connections,
        })
    }

    fn policy(&mut self, v: &Value) -> Option<PolicySettings> {
        let p = "policy";
        let m = self.mapping(
            v,
            p,
            &["path", "call_timeout_ms", "max_memory_mb", "cache_dir"],
        )?;
        let path = self.path(m, p, "path");
        let call_timeout_ms = self
            .integer(m, p, "call_timeout_ms", (1, 600_000))
            .unwrap_or(2000);
        let max_memory_mb = self
            .integer(m, p, "max_memory_mb", (1, 65_536))
            .unwrap_or(256);
        let cache_dir = match Self::get(m, "cache_dir") {
            None => PolicyEngine::default_cache_dir(),
            Some(_) => self.path(m, p, "cache_dir"),
        };
        Some(PolicySettings {
            path,
            call_timeout: Duration::from_millis(call_timeout_ms),
            max_memory_bytes: (max_memory_mb as usize) << 20,
            cache_dir,
        })
    }
}

/// `host:port` or `[v6]:port`, as Patroni's `connect_address`.
fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest
            .split_once("]:")
            .ok_or_else(|| format!("{s:?} is not \"[ipv6]:port\""))?;
        (h, p)
    } else {
        s.rsplit_once(':')
            .ok_or_else(|| format!("{s:?} is not \"host:port\""))?
    };
    if host.is_empty() {
        return Err(format!("{s:?} names no host"));
    }
    if host.starts_with('/') {
        return Err(format!(
            "{s:?} is a Unix socket directory, which other nodes cannot reach"
        ));
    }
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("{port:?} in {s:?} is not a TCP port (1-65535)"))?;
    Ok((host.to_lowercase(), port))
}

/// `host:port` to listen on; names are resolved (the first address wins).
fn resolve_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let (host, port) = parse_host_port(s)?;
    (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {s:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{s:?} resolves to no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, Vec<Problem>> {
        Config::parse(text, Path::new("/etc/citus-ha")).map_err(|e| e.0)
    }

    const MINIMAL: &str = "name: coord1\ncitus: {group: 0, database: citus}\npostgresql: {connect_address: '10.0.0.1:5432'}\ndcs: {file: dcs.yaml}\n";

    #[test]
    fn defaults_follow_patroni() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.restapi.listen, "127.0.0.1:8008".parse().unwrap());
        assert_eq!(c.loop_wait, Duration::from_secs(10));
        assert_eq!(c.ttl, Duration::from_secs(30));
        assert_eq!(c.retry_timeout, Duration::from_secs(10));
        assert_eq!(c.postgresql.database, "postgres");
        assert_eq!(
            c.dcs,
            DcsSettings::File(PathBuf::from("/etc/citus-ha/dcs.yaml"))
        );
        assert_eq!(c.policy.call_timeout, Duration::from_millis(2000));
        assert_eq!(c.policy.max_memory_bytes, 256 << 20);
        assert!(c.policy.path.is_none());
        assert_eq!(c.member_url(), "postgres://10.0.0.1:5432/postgres");
        assert_eq!(
            c.coordinator_conninfo("citus"),
            "host=10.0.0.1 port=5432 dbname=citus user=postgres"
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let text = "name: 5\ncitus: {group: 0, database: citus}\npostgresql: {connect_address: 'nohost', sslmode: maybe, extra: 1}\n\
                    restapi: {listen: 'x:99999', authentication: {username: a}, certfile: c.pem}\n\
                    loop_wait: -1\nttl: ten\ndcs: {}\npolicy: {call_timeout_ms: 0, max_memory_mb: big}\nbootstrap: {}\ncoordinator: {url: 'host=a port=b'}\n";
        let problems = parse(text).unwrap_err();
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        for expected in [
            "name",
            "postgresql.connect_address",
            "postgresql.sslmode",
            "postgresql.extra",
            "restapi.listen",
            "restapi.authentication.password",
            "restapi.keyfile",
            "loop_wait",
            "ttl",
            "dcs.file",
            "policy.call_timeout_ms",
            "policy.max_memory_mb",
            "bootstrap",
            "coordinator.url",
        ] {
            assert!(
                paths.contains(&expected),
                "{expected} missing from {problems:#?}"
            );
        }
    }

    #[test]
    fn yaml_errors_name_line_and_column() {
        let e = parse("name: a\ncitus: {group: 0\n").unwrap_err();
        assert_eq!(e.len(), 1);
        assert!(
            e[0].message.contains("line 3") || e[0].message.contains("line 2"),
            "{}",
            e[0]
        );
        assert!(e[0].message.contains("column"), "{}", e[0]);
        assert!(parse("").unwrap_err()[0].message.contains("empty"));
        assert_eq!(
            parse("[1]").unwrap_err()[0].message,
            "must be a mapping, got a list"
        );
    }

    #[test]
    fn conn_url_and_credentials_build_the_coordinator_conninfo() {
        let text = "name: c\ncitus: {group: 0, database: citus}\n\
                    postgresql:\n  conn_url: postgres://[::1]:6000/app\n  sslmode: verify-full\n  authentication:\n    superuser: {username: admin, password: \"it's \\\\ x\"}\n\
                    dcs: {file: /d.yaml}\n";
        let c = parse(text).unwrap();
        assert_eq!(c.member_url(), "postgres://[::1]:6000/app");
        let ci = c.coordinator_conninfo("citus");
        assert_eq!(
            ci,
            r"host=::1 port=6000 dbname=citus user=admin password='it\'s \\ x' sslmode=require"
        );
        let parsed: tokio_postgres::Config = ci.parse().unwrap();
        assert_eq!(parsed.get_password(), Some(&b"it's \\ x"[..]));
        assert!(Config::coordinator_tls(&ci));
        assert!(!Config::coordinator_tls("host=a sslmode=prefer"));
    }

    #[test]
    fn connect_address_forms() {
        assert_eq!(parse_host_port("Db1:5433").unwrap(), ("db1".into(), 5433));
        assert_eq!(
            parse_host_port("[fe80::1]:5432").unwrap(),
            ("fe80::1".into(), 5432)
        );
        assert!(parse_host_port("db1").is_err());
        assert!(parse_host_port(":5432").is_err());
        assert!(parse_host_port("db:0").is_err());
        assert!(parse_host_port("/tmp:5432").is_err());
    }

    #[test]
    fn a_huge_number_is_one_problem_not_the_end_of_the_report() {
        let text = "name: c\ncitus: {group: 0, database: citus}\npostgresql: {connect_address: '10.0.0.1:5432'}\n\
                    loop_wait: 12345678901234567890123\nretry_timeout: -99999999999999999999\ndcs: {}\n";
        let problems = parse(text).unwrap_err();
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        for expected in ["loop_wait", "retry_timeout", "dcs.file"] {
            assert!(
                paths.contains(&expected),
                "{expected} missing from {problems:#?}"
            );
        }
    }

    #[test]
    fn ttl_shorter_than_loop_wait_and_disagreeing_addresses_are_reported() {
        let text = "name: c\ncitus: {group: 0, database: citus}\n\
                    postgresql: {connect_address: '10.0.0.1:5432', conn_url: 'postgres://10.0.0.9:5432/postgres'}\n\
                    loop_wait: 20\nttl: 10\ndcs: {file: d.yaml}\n";
        let problems = parse(text).unwrap_err();
        let find = |path: &str| problems.iter().find(|p| p.path == path);
        assert!(
            find("ttl").unwrap().message.contains("loop_wait"),
            "{problems:#?}"
        );
        assert!(
            find("postgresql.conn_url")
                .unwrap()
                .message
                .contains("10.0.0.9"),
            "{problems:#?}"
        );
        // The same address in both is fine; so is max_pause's default of 2 x ttl.
        let ok = "name: c\ncitus: {group: 0, database: citus}\n\
                  postgresql: {connect_address: 'db1:5432', conn_url: 'postgres://DB1:5432/postgres'}\n\
                  ttl: 25\ndcs: {file: d.yaml}\n";
        assert_eq!(parse(ok).unwrap().max_pause, Duration::from_secs(50));
    }

    #[test]
    fn every_problem_of_the_citus_section_is_reported() {
        let engine = PolicyEngine::new(PolicyLimits::default(), None).unwrap();
        let problems = validate_citus(
            &engine,
            None,
            &serde_json::json!({"group": "zero", "database": 5, "colour": "blue"}),
        )
        .err()
        .expect("invalid");
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        for expected in ["citus.group", "citus.database", "citus.colour"] {
            assert!(
                paths.contains(&expected),
                "{expected} missing from {problems:#?}"
            );
        }
    }
}
