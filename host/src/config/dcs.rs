//! Where the DCS view comes from: a file (`dcs: {file}`), or etcd v3 configured with
//! Patroni's own names at the top level (`scope`, `namespace`, `etcd3: {host | hosts,
//! protocol, username, password, cacert, cert, key}`), so a Patroni config's DCS part can be
//! pasted as it is.

use super::walker::{kind, parse_host_port, Walker};
use super::Problem;
use crate::dcs::etcd::EtcdSettings;
use serde_yaml::{Mapping, Value};
use std::path::PathBuf;

/// Patroni's default namespace.
pub const DEFAULT_NAMESPACE: &str = "/service/";

/// The configured DCS source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DcsSettings {
    /// A CLUSTER-shaped JSON/YAML file, re-read when it changes.
    File(PathBuf),
    /// etcd v3 in Patroni's key layout, watched.
    Etcd3(EtcdSettings),
}

impl DcsSettings {
    /// One line for check-config and logs (no credentials).
    pub fn describe(&self) -> String {
        match self {
            DcsSettings::File(p) => format!("DCS file {}", p.display()),
            DcsSettings::Etcd3(e) => format!("etcd3 {} under {}", e.urls().join(","), e.prefix()),
        }
    }
}

/// Every unusable file of an etcd3 section (CA, client certificate and key).
pub fn check_etcd_files(e: &EtcdSettings) -> Vec<Problem> {
    if !e.https {
        return Vec::new();
    }
    match crate::dcs::etcd::tls::client_config(e) {
        Ok(_) => Vec::new(),
        Err((path, message)) => vec![Problem {
            path: path.into(),
            message,
        }],
    }
}

impl Walker {
    /// `dcs` or `etcd3` (exactly one), with `scope` and `namespace` for etcd3.
    pub(super) fn dcs_settings(&mut self, root: &Mapping) -> Option<DcsSettings> {
        match (Self::get(root, "dcs"), Self::get(root, "etcd3")) {
            (Some(_), Some(_)) => {
                self.problem(
                    "etcd3",
                    "cannot be used together with dcs: give either dcs.file or etcd3",
                );
                None
            }
            (None, None) => {
                self.problem(
                    "dcs",
                    "is required ({file: PATH} of the DCS snapshot), unless etcd3 (with scope) is set",
                );
                None
            }
            (Some(v), None) => self.mapping(v, "dcs", &["file"]).and_then(|m| {
                let f = self.path(m, "dcs", "file");
                if f.is_none() && Self::get(m, "file").is_none() {
                    self.problem("dcs.file", "is required");
                }
                self.files.dcs_file = f.clone();
                f.map(DcsSettings::File)
            }),
            (None, Some(v)) => self.etcd3(root, v).map(DcsSettings::Etcd3),
        }
    }

    fn etcd3(&mut self, root: &Mapping, v: &Value) -> Option<EtcdSettings> {
        let p = "etcd3";
        let m = self.mapping(
            v,
            p,
            &[
                "host", "hosts", "protocol", "username", "password", "cacert", "cert", "key",
            ],
        )?;
        let scope = self.string(root, "", "scope");
        if scope.is_none() && Self::get(root, "scope").is_none() {
            self.problem(
                "scope",
                "is required with etcd3 (the Citus formation's name, as in Patroni's config)",
            );
        }
        if scope.as_deref().is_some_and(|s| s.contains('/')) {
            self.problem("scope", "must not contain '/'");
        }
        let namespace = self
            .string(root, "", "namespace")
            .unwrap_or_else(|| DEFAULT_NAMESPACE.into());
        let hosts = self.etcd_hosts(m);
        let https = match self.string(m, p, "protocol").as_deref() {
            None | Some("http") => false,
            Some("https") => true,
            Some(other) => {
                self.problem("etcd3.protocol", format!("{other:?} is not http or https"));
                false
            }
        };
        let username = self.string(m, p, "username");
        let password = self.string(m, p, "password");
        let auth = match (username, password) {
            (Some(u), Some(pw)) => Some((u, pw)),
            (None, None) => None,
            (Some(_), None) => {
                self.problem("etcd3.password", "is required when username is set");
                None
            }
            (None, Some(_)) => {
                self.problem("etcd3.username", "is required when password is set");
                None
            }
        };
        let cacert = self.path(m, p, "cacert");
        let cert = self.path(m, p, "cert");
        let key = self.path(m, p, "key");
        // As in Patroni, the key may be in the certificate's file.
        let client_cert = match (cert, key) {
            (Some(c), Some(k)) => Some((c, k)),
            (Some(c), None) => Some((c.clone(), c)),
            (None, Some(_)) => {
                self.problem("etcd3.cert", "is required when key is set");
                None
            }
            (None, None) => None,
        };
        if !https {
            for (field, set) in [
                ("etcd3.cacert", cacert.is_some()),
                ("etcd3.cert", client_cert.is_some()),
            ] {
                if set {
                    self.problem(field, "is only used with protocol: https");
                }
            }
        }
        let settings = EtcdSettings {
            hosts: hosts.unwrap_or_default(),
            https,
            auth,
            cacert,
            client_cert,
            namespace,
            scope: scope.unwrap_or_default(),
        };
        // The TLS files are checked even when other settings have problems.
        self.files.etcd3 = Some(settings.clone());
        (!settings.hosts.is_empty() && !settings.scope.is_empty()).then_some(settings)
    }

    /// `host: "h:2379"`, or `hosts` as a list or a comma-separated string (Patroni takes both).
    fn etcd_hosts(&mut self, m: &Mapping) -> Option<Vec<String>> {
        let raw: Vec<(String, String)> = match (Self::get(m, "host"), Self::get(m, "hosts")) {
            (Some(_), Some(_)) => {
                self.problem("etcd3.hosts", "give host or hosts, not both");
                return None;
            }
            (None, None) => {
                self.problem(
                    "etcd3.host",
                    "is required (\"host:port\" of etcd), or hosts: a list of them",
                );
                return None;
            }
            (Some(Value::String(h)), None) => vec![("etcd3.host".into(), h.clone())],
            (Some(other), None) => {
                self.problem(
                    "etcd3.host",
                    format!("must be a \"host:port\" string, got {}", kind(other)),
                );
                return None;
            }
            (None, Some(Value::String(s))) => s
                .split(',')
                .map(|h| ("etcd3.hosts".to_string(), h.trim().to_string()))
                .collect(),
            (None, Some(Value::Sequence(list))) => {
                let mut out = Vec::new();
                for (i, h) in list.iter().enumerate() {
                    match h {
                        Value::String(s) => out.push((format!("etcd3.hosts[{i}]"), s.clone())),
                        other => self.problem(
                            &format!("etcd3.hosts[{i}]"),
                            format!("must be a \"host:port\" string, got {}", kind(other)),
                        ),
                    }
                }
                out
            }
            (None, Some(other)) => {
                self.problem(
                    "etcd3.hosts",
                    format!("must be a list of \"host:port\", got {}", kind(other)),
                );
                return None;
            }
        };
        let mut hosts = Vec::new();
        let mut ok = true;
        for (path, h) in raw {
            match parse_host_port(&h) {
                Ok((host, port)) if host.contains(':') => hosts.push(format!("[{host}]:{port}")),
                Ok((host, port)) => hosts.push(format!("{host}:{port}")),
                Err(e) => {
                    self.problem(&path, e);
                    ok = false;
                }
            }
        }
        if hosts.is_empty() && ok {
            self.problem("etcd3.hosts", "must name at least one \"host:port\"");
            return None;
        }
        ok.then_some(hosts)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;
    use std::path::Path;

    const BASE: &str = "name: coord1\ncitus: {group: 0, database: citus}\npostgresql: {connect_address: '10.0.0.1:5432'}\n";

    fn parse(extra: &str) -> Result<Config, Vec<Problem>> {
        Config::parse(&format!("{BASE}{extra}"), Path::new("/etc/citus-ha")).map_err(|e| e.0)
    }

    fn paths(problems: &[Problem]) -> Vec<&str> {
        problems.iter().map(|p| p.path.as_str()).collect()
    }

    #[test]
    fn patroni_style_etcd3() {
        let c = parse(
            "scope: demo\nnamespace: /db/\netcd3:\n  hosts: ['10.0.0.5:2379', 'Etcd2:2379']\n  protocol: https\n  \
             username: patroni\n  password: 123\n  cacert: ca.pem\n  cert: client.pem\n  key: client.key\n",
        )
        .unwrap();
        let DcsSettings::Etcd3(e) = &c.dcs else {
            panic!("{:?}", c.dcs)
        };
        assert_eq!(e.hosts, ["10.0.0.5:2379", "etcd2:2379"]);
        assert!(e.https);
        assert_eq!(e.auth, Some(("patroni".into(), "123".into())));
        assert_eq!(e.cacert, Some(PathBuf::from("/etc/citus-ha/ca.pem")));
        assert_eq!(e.prefix(), "/db/demo/");
        assert_eq!(e.urls(), ["https://10.0.0.5:2379", "https://etcd2:2379"]);
        let c = parse("scope: demo\netcd3: {hosts: '127.0.0.1:2379, [::1]:2379'}\n").unwrap();
        let DcsSettings::Etcd3(e) = &c.dcs else {
            panic!()
        };
        assert_eq!(e.hosts, ["127.0.0.1:2379", "[::1]:2379"]);
        assert_eq!(e.prefix(), "/service/demo/");
        assert!(!e.https && e.auth.is_none());
    }

    #[test]
    fn every_etcd3_problem_has_its_path() {
        let problems = parse(
            "etcd3: {hosts: ['nohost', 5], protocol: ftp, username: u, key: k.pem, cacert: c.pem, url: x}\n",
        )
        .unwrap_err();
        let p = paths(&problems);
        for expected in [
            "scope",
            "etcd3.hosts[0]",
            "etcd3.hosts[1]",
            "etcd3.protocol",
            "etcd3.password",
            "etcd3.cert",
            "etcd3.cacert",
            "etcd3.url",
        ] {
            assert!(
                p.contains(&expected),
                "{expected} missing from {problems:#?}"
            );
        }
        let p = parse("scope: s\netcd3: {}\n").unwrap_err();
        assert_eq!(paths(&p), ["etcd3.host"]);
        let p = parse("scope: s\netcd3: {host: 'a:1'}\ndcs: {file: x}\n").unwrap_err();
        assert_eq!(paths(&p), ["etcd3"]);
        let p = parse("").unwrap_err();
        assert_eq!(paths(&p), ["dcs"]);
    }

    #[test]
    fn tls_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.pem");
        std::fs::write(&bad, "not a certificate").unwrap();
        let e = EtcdSettings {
            hosts: vec!["127.0.0.1:2379".into()],
            https: true,
            auth: None,
            cacert: Some(bad.clone()),
            client_cert: None,
            namespace: DEFAULT_NAMESPACE.into(),
            scope: "s".into(),
        };
        let p = check_etcd_files(&e);
        assert_eq!(paths(&p), ["etcd3.cacert"], "{p:?}");
        assert!(p[0].message.contains("no PEM certificate"), "{p:?}");
        let missing = EtcdSettings {
            cacert: Some(dir.path().join("missing.pem")),
            ..e
        };
        assert!(check_etcd_files(&missing)[0]
            .message
            .contains("cannot read"));
    }
}
