//! A real coordinator: one dedicated tokio-postgres connection, every value a bound parameter.

use super::MetadataSession;
use citus_ha_policy::node::{NodeRole, PgDistRow};
use citus_ha_policy::{Statement, StatementError, StatementResult};
use std::time::Duration;
use tokio_postgres::{Client, Config, NoTls};

const LOAD_SQL: &str = "SELECT nodeid, groupid, nodename, nodeport, noderole::text \
                        FROM pg_catalog.pg_dist_node ORDER BY nodeid";
const ADD_SQL: &str =
    "SELECT pg_catalog.citus_add_node($1::text, $2::int, $3::int, $4::text::noderole, 'default')";
const UPDATE_SQL: &str =
    "SELECT pg_catalog.citus_update_node($1::int, $2::text, $3::int, $4::bool, $5::int)";
const REMOVE_SQL: &str = "SELECT pg_catalog.citus_remove_node($1::text, $2::int)";

/// How long the session waits for the coordinator. The server-side `statement_timeout` stays
/// 0 (a forced `citus_update_node` legitimately waits out its `lock_cooldown`); these are the
/// client's own bounds, so a coordinator that accepts connections but never answers (or a
/// network partition) costs a bounded wait, never a frozen agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionLimits {
    /// Connecting, TLS and authentication together.
    pub connect: Duration,
    /// Any statement; a forced update gets its cooldown on top.
    pub statement: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            statement: Duration::from_secs(10),
        }
    }
}

impl SessionLimits {
    /// The client-side bound of one statement.
    pub fn for_statement(&self, stmt: &Statement) -> Duration {
        match stmt {
            Statement::UpdateNode {
                force: true,
                cooldown_ms,
                ..
            } => self.statement + Duration::from_millis((*cooldown_ms).max(0) as u64),
            _ => self.statement,
        }
    }
}

/// The metadata connection. Reconnects (with backoff) on the next statement after a loss.
pub struct PgSession {
    config: Config,
    tls: bool,
    limits: SessionLimits,
    client: Option<Client>,
    /// The task driving the connection: aborted with the client, so a connection stuck on a
    /// silent peer is closed at once instead of lingering until the kernel gives up.
    driver: Option<tokio::task::JoinHandle<()>>,
    in_txn: bool,
    backoff: Duration,
}

impl PgSession {
    /// `url` is a libpq URL or key=value string for the coordinator's Citus database.
    pub fn new(url: &str, tls: bool, limits: SessionLimits) -> anyhow::Result<Self> {
        let mut config: Config = url
            .parse()
            .map_err(|e| anyhow::anyhow!("coordinator connection string: {e}"))?;
        // The pause may legitimately last as long as a switchover; the server must not cut it.
        config.options("-c statement_timeout=0 -c idle_in_transaction_session_timeout=0");
        config.application_name("citus-ha");
        config.connect_timeout(limits.connect);
        // A peer that vanishes (partition, frozen host) is noticed by the kernel within about
        // idle + interval x retries, and unacknowledged writes fail after tcp_user_timeout.
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(5));
        config.keepalives_interval(Duration::from_secs(2));
        config.keepalives_retries(3);
        config.tcp_user_timeout(limits.connect);
        Ok(Self {
            config,
            tls,
            limits,
            client: None,
            driver: None,
            in_txn: false,
            backoff: Duration::ZERO,
        })
    }

    async fn client(&mut self) -> Result<&Client, StatementError> {
        if self.client.as_ref().is_some_and(|c| c.is_closed()) {
            self.drop_connection();
            // The transaction died with the connection (e.g. pg_terminate_backend). Running
            // this statement on a fresh connection would run it outside that transaction,
            // unpaused and autocommitted: report the loss instead, as the policy expects.
            if std::mem::take(&mut self.in_txn) {
                return Err(lost(
                    "the connection to the coordinator was lost; its open transaction is gone"
                        .into(),
                ));
            }
        }
        if self.client.is_none() {
            if !self.backoff.is_zero() {
                tokio::time::sleep(self.backoff).await;
            }
            // tokio-postgres bounds only the TCP connect; the startup, TLS and authentication
            // exchange is bounded here, as a whole.
            let connecting = async {
                if self.tls {
                    let tls =
                        tokio_postgres_rustls::MakeRustlsConnect::new(tls_config().map_err(lost)?);
                    self.config
                        .connect(tls)
                        .await
                        .map(|(c, conn)| (c, tokio::spawn(async move { drop(conn.await) })))
                        .map_err(|e| {
                            lost(format!("cannot connect to the coordinator: {}", cause(&e)))
                        })
                } else {
                    self.config
                        .connect(NoTls)
                        .await
                        .map(|(c, conn)| (c, tokio::spawn(async move { drop(conn.await) })))
                        .map_err(|e| {
                            lost(format!("cannot connect to the coordinator: {}", cause(&e)))
                        })
                }
            };
            let connected = tokio::time::timeout(self.limits.connect, connecting)
                .await
                .unwrap_or_else(|_| {
                    Err(lost(format!(
                        "cannot connect to the coordinator: no answer within {} s",
                        self.limits.connect.as_secs_f64()
                    )))
                });
            match connected {
                Ok((c, driver)) => {
                    self.backoff = Duration::ZERO;
                    self.client = Some(c);
                    self.driver = Some(driver);
                }
                Err(e) => {
                    // The wait happens on the owner, before the next statement: short, as
                    // the turns themselves already pace the retries.
                    self.backoff = (self.backoff * 2)
                        .clamp(Duration::from_millis(100), Duration::from_secs(1));
                    return Err(e);
                }
            }
        }
        Ok(self.client.as_ref().expect("connected"))
    }

    /// Closes the connection now: the server rolls back whatever was open on it.
    fn drop_connection(&mut self) {
        self.client = None;
        if let Some(d) = self.driver.take() {
            d.abort();
        }
    }

    /// [`Self::run_unbounded`] within the statement's client-side bound. On expiry the
    /// connection is dropped (an open transaction dies with it, which is what a pause needs)
    /// and the loss is reported, so the policy reacts as to any lost session.
    async fn run(&mut self, stmt: &Statement) -> Result<StatementResult, StatementError> {
        let bound = self.limits.for_statement(stmt);
        match tokio::time::timeout(bound, self.run_unbounded(stmt)).await {
            Ok(r) => r,
            Err(_) => {
                self.drop_connection();
                Err(lost(format!(
                    "the coordinator did not answer within {} s; the connection was dropped (an open transaction is rolled back by the server)",
                    bound.as_secs_f64()
                )))
            }
        }
    }

    async fn run_unbounded(&mut self, stmt: &Statement) -> Result<StatementResult, StatementError> {
        let client = self.client().await?;
        let r = match stmt {
            Statement::LoadMetadata => client.query(LOAD_SQL, &[]).await.map(|rows| {
                StatementResult::Metadata(
                    rows.iter()
                        .map(|r| PgDistRow {
                            nodeid: r.get(0),
                            groupid: r.get(1),
                            nodename: r.get(2),
                            nodeport: r.get(3),
                            noderole: match r.get::<_, &str>(4) {
                                "primary" => NodeRole::Primary,
                                "secondary" => NodeRole::Secondary,
                                _ => NodeRole::Unavailable,
                            },
                        })
                        .collect(),
                )
            }),
            Statement::Begin => client
                .batch_execute("BEGIN")
                .await
                .map(|_| StatementResult::Done),
            Statement::Commit => client
                .batch_execute("COMMIT")
                .await
                .map(|_| StatementResult::Done),
            Statement::Rollback => client
                .batch_execute("ROLLBACK")
                .await
                .map(|_| StatementResult::Done),
            Statement::AddNode {
                host,
                port,
                groupid,
                role,
            } => client
                .query_one(ADD_SQL, &[host, port, groupid, &role.as_str()])
                .await
                .map(|r| StatementResult::Added(r.get(0))),
            Statement::UpdateNode {
                nodeid,
                host,
                port,
                force,
                cooldown_ms,
            } => client
                .execute(UPDATE_SQL, &[nodeid, host, port, force, cooldown_ms])
                .await
                .map(|_| StatementResult::Done),
            Statement::RemoveNode { host, port } => client
                .execute(REMOVE_SQL, &[host, port])
                .await
                .map(|_| StatementResult::Done),
        };
        r.map_err(|e| {
            let closed = e.is_closed() || self.client.as_ref().is_none_or(|c| c.is_closed());
            StatementError {
                message: cause(&e),
                sqlstate: e.code().map(|c| c.code().to_string()),
                connection_lost: closed,
            }
        })
    }
}

/// TLS as libpq's `sslmode=require` does it: the link is encrypted, the server's certificate
/// is not checked (Citus turns on ssl with a self-signed certificate). Set `PGSSLROOTCERT` to a
/// CA file to have the certificate verified against it instead.
fn tls_config() -> Result<rustls::ClientConfig, String> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    if let Some(path) = std::env::var_os("PGSSLROOTCERT") {
        let pem = std::fs::read(&path).map_err(|e| format!("PGSSLROOTCERT: {e}"))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
            let cert: rustls::pki_types::CertificateDer =
                cert.map_err(|e| format!("PGSSLROOTCERT: {e}"))?;
            roots.add(cert).map_err(|e| format!("PGSSLROOTCERT: {e}"))?;
        }
        return Ok(builder.with_root_certificates(roots).with_no_client_auth());
    }
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(EncryptOnly(provider)))
        .with_no_client_auth())
}

/// Accepts any server certificate but still checks the handshake signatures.
#[derive(Debug)]
struct EncryptOnly(std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// What went wrong, in the server's words where it gave any ("database \"x\" does not exist"),
/// otherwise with the underlying cause ("connection refused"), never just "db error".
pub fn cause(e: &tokio_postgres::Error) -> String {
    if let Some(d) = e.as_db_error() {
        return d.message().to_string();
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

fn lost(message: String) -> StatementError {
    StatementError {
        message,
        sqlstate: None,
        connection_lost: true,
    }
}

impl MetadataSession for PgSession {
    async fn execute(&mut self, stmt: &Statement) -> StatementResult {
        match self.run(stmt).await {
            Ok(r) => {
                match stmt {
                    Statement::Begin => self.in_txn = true,
                    Statement::Commit | Statement::Rollback => self.in_txn = false,
                    _ => {}
                }
                r
            }
            Err(e) => {
                if e.connection_lost {
                    self.drop_connection();
                } else if self.in_txn || matches!(stmt, Statement::Commit) {
                    // The transaction is aborted; end it so the session is usable again.
                    if let Some(c) = &self.client {
                        let rollback = c.batch_execute("ROLLBACK");
                        if !matches!(
                            tokio::time::timeout(self.limits.statement, rollback).await,
                            Ok(Ok(()))
                        ) {
                            self.drop_connection();
                        }
                    }
                }
                self.in_txn = false;
                StatementResult::Failed(e)
            }
        }
    }

    async fn rows(&mut self) -> anyhow::Result<Vec<PgDistRow>> {
        match self.run(&Statement::LoadMetadata).await {
            Ok(StatementResult::Metadata(rows)) => Ok(rows),
            Ok(_) => unreachable!("load returns rows"),
            Err(e) => anyhow::bail!("cannot read pg_dist_node: {}", e.message),
        }
    }

    async fn lose(&mut self) {
        // Closing the connection; the server rolls back what was open.
        self.drop_connection();
        self.in_txn = false;
    }
}

impl Drop for PgSession {
    fn drop(&mut self) {
        self.drop_connection();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forced_update_is_bounded_by_its_cooldown_plus_the_statement_bound() {
        let limits = SessionLimits {
            connect: Duration::from_secs(3),
            statement: Duration::from_secs(4),
        };
        let update = |force, cooldown_ms| Statement::UpdateNode {
            nodeid: 1,
            host: "h".into(),
            port: 5432,
            force,
            cooldown_ms,
        };
        assert_eq!(
            limits.for_statement(&update(true, 10_000)),
            Duration::from_secs(14)
        );
        assert_eq!(
            limits.for_statement(&update(false, 10_000)),
            Duration::from_secs(4)
        );
        assert_eq!(
            limits.for_statement(&update(true, -5)),
            Duration::from_secs(4)
        );
        assert_eq!(
            limits.for_statement(&Statement::Begin),
            Duration::from_secs(4)
        );
    }
}
