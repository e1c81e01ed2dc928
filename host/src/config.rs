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

mod check;
mod dcs;
mod walker;

pub use check::{check_config_command, check_file, validate_citus, Files};
pub use dcs::{DcsSettings, DEFAULT_NAMESPACE};

use crate::policy::{LoadedPolicy, PolicyEngine, PolicyLimits};
use citus_ha_policy::CitusConfig;
use serde_yaml::Value;
use std::fmt;
use std::net::SocketAddr;
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
                    walker::strip_location(&e.to_string())
                ),
                None => format!("not valid YAML: {e}"),
            };
            ConfigErrors(vec![Problem {
                path: String::new(),
                message,
            }])
        })?;
        Ok(walker::walk(&doc, base))
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
}

fn url_host(h: &str) -> String {
    if h.contains(':') {
        format!("[{h}]")
    } else {
        h.to_string()
    }
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
            crate::session::conninfo::coordinator_conninfo(&c, "citus"),
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
