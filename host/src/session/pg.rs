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
                let mut roots = rustls::RootCertStore::empty();
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .map_err(|e| lost(e.to_string()))?
                .with_root_certificates(roots)
                .with_no_client_auth();
                let tls = tokio_postgres_rustls::MakeRustlsConnect::new(cfg);
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
