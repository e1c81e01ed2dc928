//! A real etcd (Debian's `etcd-server`) per test: its own temp data dir, free loopback ports,
//! killed at the end; and writers of Patroni's key layout (`/service/<scope>/<group>/leader`,
//! `.../members/<name>`) so tests change the DCS the way Patroni does.
#![allow(dead_code)]

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The formation's scope in every test (keys under `/service/citus/`).
pub const SCOPE: &str = "citus";
pub const PREFIX: &str = "/service/citus/";

fn etcd_binary() -> String {
    std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".into())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Etcd {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub client_port: u16,
    peer_port: u16,
    http: reqwest::Client,
    /// `Authorization` token once auth is enabled by [`Etcd::enable_auth`].
    token: Option<String>,
    /// Set when etcd serves TLS and demands client certificates ([`Etcd::start_tls`]).
    pub tls: Option<Pki>,
}

/// A throw-away CA, a server certificate for 127.0.0.1 and a client certificate, made with
/// the `openssl` command (./dev installs it).
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Pki {
    pub fn make(dir: &std::path::Path) -> Pki {
        let f = |n: &str| dir.join(n);
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("openssl (./dev installs it)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=citus-ha test CA",
        ]);
        std::fs::write(
            f("server.ext"),
            // etcd's JSON gateway dials etcd itself with the server certificate: clientAuth too.
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .unwrap();
        std::fs::write(f("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        for (who, cn) in [("server", "127.0.0.1"), ("client", "root")] {
            run(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{who}.key"),
                "-out",
                &format!("{who}.csr"),
                "-subj",
                &format!("/CN={cn}"),
            ]);
            run(&[
                "x509",
                "-req",
                "-in",
                &format!("{who}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{who}.crt"),
                "-days",
                "2",
                "-extfile",
                &format!("{who}.ext"),
            ]);
        }
        Pki {
            ca: f("ca.crt"),
            server_cert: f("server.crt"),
            server_key: f("server.key"),
            client_cert: f("client.crt"),
            client_key: f("client.key"),
        }
    }

    /// This test's own client configuration (the source under test builds its own).
    fn client_config(&self) -> rustls::ClientConfig {
        let settings = citus_ha::dcs::etcd::EtcdSettings {
            hosts: vec![],
            https: true,
            auth: None,
            cacert: Some(self.ca.clone()),
            client_cert: Some((self.client_cert.clone(), self.client_key.clone())),
            namespace: String::new(),
            scope: String::new(),
        };
        citus_ha::dcs::etcd::tls::client_config(&settings).unwrap()
    }
}

impl Etcd {
    /// Starts etcd on two free ports; retries with new ports if another process took them.
    pub async fn start() -> Etcd {
        Self::start_with(false).await
    }

    /// Starts etcd serving TLS to clients with certificates of its own CA only.
    pub async fn start_tls() -> Etcd {
        Self::start_with(true).await
    }

    async fn start_with(with_tls: bool) -> Etcd {
        let dir = tempfile::tempdir().expect("tempdir");
        let tls = with_tls.then(|| Pki::make(dir.path()));
        let mut http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .no_proxy();
        if let Some(pki) = &tls {
            http = http.use_preconfigured_tls(pki.client_config());
        }
        let mut etcd = Etcd {
            child: None,
            dir,
            client_port: 0,
            peer_port: 0,
            http: http.build().unwrap(),
            token: None,
            tls,
        };
        for _ in 0..3 {
            etcd.client_port = free_port();
            etcd.peer_port = free_port();
            if etcd.spawn().await {
                return etcd;
            }
        }
        panic!("etcd did not start:\n{}", etcd.log_text());
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Runs etcd on the current ports and data dir; true once it answers (as itself: the
    /// process must still be alive, so a port someone else holds is not mistaken for ours).
    async fn spawn(&mut self) -> bool {
        let client = format!("{}://127.0.0.1:{}", self.scheme(), self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let mut cmd = Command::new(etcd_binary());
        if let Some(pki) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&pki.server_cert)
                .arg("--key-file")
                .arg(&pki.server_key)
                .arg("--trusted-ca-file")
                .arg(&pki.ca)
                .arg("--client-cert-auth");
        }
        let child = cmd
            .arg("--name")
            .arg("test")
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .arg("--listen-client-urls")
            .arg(&client)
            .arg("--advertise-client-urls")
            .arg(&client)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("test={peer}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start etcd (apt-get install etcd-server; ./dev does it)");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::time::Instant::now() < deadline {
            if let Some(_status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return false;
            }
            let ok = self
                .http
                .get(format!("{client}/health"))
                .send()
                .await
                .ok()
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            if ok {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Kills etcd (connections reset, as when its host dies).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts etcd again on the same ports and data.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "etcd is still running");
        assert!(
            self.spawn().await,
            "etcd did not restart:\n{}",
            self.log_text()
        );
    }

    /// Starts etcd again on the same ports with an empty data dir: a new cluster whose
    /// revisions start over (as after restoring an old backup).
    pub async fn restart_empty(&mut self) {
        self.kill();
        std::fs::remove_dir_all(self.dir.path().join("data")).unwrap();
        self.restart().await;
    }

    /// SIGSTOP / SIGCONT: etcd keeps its connections but answers nothing.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("etcd runs").id();
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} etcd failed");
    }

    pub async fn call(&self, path: &str, body: Value) -> Value {
        let mut req = self
            .http
            .post(format!("{}://{}{path}", self.scheme(), self.endpoint()))
            .json(&body);
        if let Some(t) = &self.token {
            req = req.header("Authorization", t);
        }
        let r = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("etcd {path}: {e}"));
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "etcd {path} {body}: {status} {v}");
        v
    }

    pub async fn put(&self, key: &str, value: &str) -> i64 {
        let v = self
            .call(
                "/v3/kv/put",
                json!({"key": B64.encode(key), "value": B64.encode(value)}),
            )
            .await;
        revision(&v)
    }

    pub async fn delete(&self, key: &str) -> i64 {
        let v = self
            .call("/v3/kv/deleterange", json!({"key": B64.encode(key)}))
            .await;
        revision(&v)
    }

    /// The store's current revision.
    pub async fn revision(&self) -> i64 {
        let v = self
            .call("/v3/kv/range", json!({"key": B64.encode("/"), "limit": 1}))
            .await;
        revision(&v)
    }

    /// Compacts the history up to `rev` (watches from before it are refused).
    pub async fn compact(&self, rev: i64) {
        self.call(
            "/v3/kv/compaction",
            json!({"revision": rev, "physical": true}),
        )
        .await;
    }

    /// Creates `root` with `password`, turns authentication on and logs this client in.
    pub async fn enable_auth(&mut self, password: &str) {
        self.call(
            "/v3/auth/user/add",
            json!({"name": "root", "password": password}),
        )
        .await;
        self.call(
            "/v3/auth/user/grant",
            json!({"user": "root", "role": "root"}),
        )
        .await;
        self.call("/v3/auth/enable", json!({})).await;
        let v = self
            .call(
                "/v3/auth/authenticate",
                json!({"name": "root", "password": password}),
            )
            .await;
        self.token = Some(v["token"].as_str().unwrap().to_string());
    }

    /// Patroni's member value: what `Ha.touch_member` writes (`conn_url`, `api_url`, `state`,
    /// `role`, `version`, `xlog_location`, `timeline`, `tags`).
    pub fn member_value(host: &str, role: &str) -> String {
        json!({"conn_url": format!("postgres://{host}:5432/postgres"),
               "api_url": format!("http://{host}:8008/patroni"),
               "state": "running", "role": role, "version": "4.1.5",
               "xlog_location": 50331648, "timeline": 1, "tags": {}})
        .to_string()
    }

    pub async fn put_member(&self, group: i32, name: &str, host: &str, role: &str) -> i64 {
        self.put(
            &format!("{PREFIX}{group}/members/{name}"),
            &Self::member_value(host, role),
        )
        .await
    }

    pub async fn put_leader(&self, group: i32, name: &str) -> i64 {
        self.put(&format!("{PREFIX}{group}/leader"), name).await
    }

    pub async fn delete_member(&self, group: i32, name: &str) -> i64 {
        self.delete(&format!("{PREFIX}{group}/members/{name}"))
            .await
    }

    /// Writes a CLUSTER value (the file tests' shape) in Patroni's layout, key by key, plus
    /// the `config` and `status` keys Patroni keeps beside them.
    pub async fn write_cluster(&self, cluster: &Value) {
        let mut groups = vec![(0, cluster)];
        if let Some(w) = cluster["workers"].as_object() {
            for (g, v) in w {
                groups.push((g.parse().unwrap(), v));
            }
        }
        for (g, v) in groups {
            self.put(
                &format!("{PREFIX}{g}/config"),
                r#"{"ttl":30,"loop_wait":10}"#,
            )
            .await;
            self.put(&format!("{PREFIX}{g}/status"), r#"{"optime":50331648}"#)
                .await;
            for m in v["members"].as_array().unwrap() {
                let host = m["conn_url"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("postgres://")
                    .split(':')
                    .next()
                    .unwrap()
                    .to_string();
                self.put_member(
                    g,
                    m["name"].as_str().unwrap(),
                    &host,
                    m["role"].as_str().unwrap(),
                )
                .await;
            }
            if let Some(l) = v["leader"].as_str() {
                self.put_leader(g, l).await;
            }
        }
    }
}

fn revision(v: &Value) -> i64 {
    v["header"]["revision"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no revision in {v}"))
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            // A stopped process does not die of SIGKILL until it is continued on some
            // kernels' accounting; continue it first.
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(c.id().to_string())
                .status();
        }
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- etcd log ----\n{}", self.log_text());
        }
    }
}
