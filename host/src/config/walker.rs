//! The walk over a config document: every value checked where it is, every problem collected
//! with its field path, and the files it names noted for [`Files::check`].

use super::{
    Config, Files, Parsed, PolicySettings, Postgresql, Problem, RestApi, Superuser, DEFAULT_LISTEN,
    SSLMODES,
};
use crate::policy::PolicyEngine;
use citus_ha_policy::conninfo::parse_conn_url;
use serde_yaml::{Mapping, Value};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Every problem of `doc`, and what of it could be read; relative paths resolve against `base`.
pub(super) fn walk(doc: &Value, base: &Path) -> Parsed {
    let mut w = Walker {
        problems: Vec::new(),
        base: base.to_path_buf(),
        files: Files::default(),
        citus: None,
        policy: None,
    };
    let config = w.config(doc);
    Parsed {
        config: config.filter(|_| w.problems.is_empty()),
        problems: w.problems,
        files: w.files,
        citus: w.citus,
        policy: w.policy,
    }
}

/// serde_yaml appends "at line L column C" itself; we report the location once.
pub(super) fn strip_location(msg: &str) -> &str {
    match msg.find(" at line ") {
        Some(i) => &msg[..i],
        None => msg,
    }
}

pub(super) fn kind(v: &Value) -> &'static str {
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
pub(super) struct Walker {
    problems: Vec<Problem>,
    base: PathBuf,
    /// Files named so far, checked even when the document has problems.
    pub(super) files: Files,
    citus: Option<serde_json::Value>,
    policy: Option<PolicySettings>,
}

impl Walker {
    pub(super) fn problem(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.to_string(),
            message: message.into(),
        });
    }

    /// A mapping whose keys must all be in `known`; every unknown key is a problem.
    pub(super) fn mapping<'a>(
        &mut self,
        v: &'a Value,
        path: &str,
        known: &[&str],
    ) -> Option<&'a Mapping> {
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

    pub(super) fn get<'a>(m: &'a Mapping, key: &str) -> Option<&'a Value> {
        m.get(key).filter(|v| !v.is_null())
    }

    pub(super) fn string(&mut self, m: &Mapping, path: &str, key: &str) -> Option<String> {
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

    pub(super) fn path(&mut self, m: &Mapping, path: &str, key: &str) -> Option<PathBuf> {
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
pub(super) fn parse_host_port(s: &str) -> Result<(String, u16), String> {
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
}
