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

/// The metadata connection. Reconnects (with backoff) on the next statement after a loss.
pub struct PgSession {
    config: Config,
    tls: bool,
    client: Option<Client>,
    in_txn: bool,
    backoff: Duration,
}

impl PgSession {
    /// `url` is a libpq URL or key=value string for the coordinator's Citus database.
    pub fn new(url: &str, tls: bool) -> anyhow::Result<Self> {
        let mut config: Config = url
            .parse()
            .map_err(|e| anyhow::anyhow!("coordinator connection string: {e}"))?;
        // The pause may legitimately last as long as a switchover; the server must not cut it.
        config.options("-c statement_timeout=0 -c idle_in_transaction_session_timeout=0");
        config.application_name("citus-ha");
        config.connect_timeout(Duration::from_secs(5));
        Ok(Self {
            config,
            tls,
            client: None,
            in_txn: false,
            backoff: Duration::ZERO,
        })
    }

    async fn client(&mut self) -> Result<&Client, StatementError> {
        if self.client.as_ref().is_some_and(|c| c.is_closed()) {
            self.client = None;
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
            let connected = if self.tls {
                let tls =
                    tokio_postgres_rustls::MakeRustlsConnect::new(tls_config().map_err(lost)?);
                self.config.connect(tls).await.map(|(c, conn)| {
                    tokio::spawn(conn);
                    c
                })
            } else {
                self.config.connect(NoTls).await.map(|(c, conn)| {
                    tokio::spawn(conn);
                    c
                })
            };
            match connected {
                Ok(c) => {
                    self.backoff = Duration::ZERO;
                    self.client = Some(c);
                }
                Err(e) => {
                    self.backoff = (self.backoff * 2)
                        .clamp(Duration::from_millis(100), Duration::from_secs(5));
                    return Err(lost(format!("cannot connect to the coordinator: {e}")));
                }
            }
        }
        Ok(self.client.as_ref().expect("connected"))
    }

    async fn run(&mut self, stmt: &Statement) -> Result<StatementResult, StatementError> {
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
                message: e
                    .as_db_error()
                    .map(|d| d.message().to_string())
                    .unwrap_or_else(|| e.to_string()),
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
                    self.client = None;
                } else if self.in_txn || matches!(stmt, Statement::Commit) {
                    // The transaction is aborted; end it so the session is usable again.
                    if let Some(c) = &self.client {
                        if c.batch_execute("ROLLBACK").await.is_err() {
                            self.client = None;
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
        // Dropping the client closes the connection; the server rolls back what was open.
        self.client = None;
        self.in_txn = false;
    }
}
