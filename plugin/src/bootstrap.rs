//! What a freshly initialised node needs before Citus can use it.

use crate::config::CitusConfig;
use crate::conninfo::parse_conn_url;
use crate::error::InvalidInput;
use crate::node::Address;

/// Credentials of the superuser that Citus nodes use to reach each other.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SuperuserAuth {
    pub password: Option<String>,
    pub sslcert: Option<String>,
    pub sslkey: Option<String>,
}

/// One step; the host runs it with bound parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootstrapStep {
    /// Create the database unless it exists ("already exists" is success).
    CreateDatabase(String),
    CreateExtension,
    /// The libpq key=value string for pg_dist_authinfo (nodeid 0: every node).
    InsertAuthinfo(String),
    /// The coordinator registers its own address.
    SetCoordinatorHost(Address),
}

/// The bootstrap steps in order. The database is created only when it differs from the one the
/// manager connects to by default.
pub fn bootstrap_plan(
    config: &CitusConfig,
    default_database: &str,
    auth: &SuperuserAuth,
    connect_url: Option<&str>,
) -> Result<Vec<BootstrapStep>, InvalidInput> {
    let mut steps = Vec::new();
    if config.database != default_database {
        steps.push(BootstrapStep::CreateDatabase(config.database.clone()));
    }
    steps.push(BootstrapStep::CreateExtension);
    let pairs: Vec<(&str, &str)> = [
        ("password", auth.password.as_deref()),
        ("sslcert", auth.sslcert.as_deref()),
        ("sslkey", auth.sslkey.as_deref()),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k, v)))
    .collect();
    if !pairs.is_empty() {
        steps.push(BootstrapStep::InsertAuthinfo(format_dsn(&pairs)));
    }
    if config.is_coordinator() {
        let url = connect_url.ok_or_else(|| {
            InvalidInput::new(
                "postgresql.connect_address",
                "is required on the coordinator",
            )
        })?;
        let addr = parse_conn_url(url)
            .map_err(|e| InvalidInput::new("postgresql.connect_address", e.to_string()))?;
        steps.push(BootstrapStep::SetCoordinatorHost(addr));
    }
    Ok(steps)
}

/// libpq `key=value` pairs; a value that is empty or holds spaces, quotes or backslashes is
/// single-quoted with `\` escaping `'` and `\`.
pub fn format_dsn(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", quote_value(v)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn quote_value(v: &str) -> String {
    let needs = v.is_empty()
        || v.chars()
            .any(|c| c.is_whitespace() || c == '\'' || c == '\\');
    if !needs {
        return v.to_string();
    }
    let mut s = String::with_capacity(v.len() + 2);
    s.push('\'');
    for c in v.chars() {
        if c == '\'' || c == '\\' {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('\'');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinator_plan() {
        let c = CitusConfig {
            group: 0,
            database: "citus".into(),
        };
        let auth = SuperuserAuth {
            password: Some("it's a \\secret".into()),
            sslcert: None,
            sslkey: Some("/k".into()),
        };
        let steps = bootstrap_plan(&c, "postgres", &auth, Some("postgres://Coord:6000/x")).unwrap();
        assert_eq!(
            steps,
            vec![
                BootstrapStep::CreateDatabase("citus".into()),
                BootstrapStep::CreateExtension,
                BootstrapStep::InsertAuthinfo(r"password='it\'s a \\secret' sslkey=/k".into()),
                BootstrapStep::SetCoordinatorHost(Address::new("coord", 6000)),
            ]
        );
    }

    #[test]
    fn worker_in_default_database_without_auth() {
        let c = CitusConfig {
            group: 2,
            database: "postgres".into(),
        };
        let steps = bootstrap_plan(&c, "postgres", &SuperuserAuth::default(), None).unwrap();
        assert_eq!(steps, vec![BootstrapStep::CreateExtension]);
        assert_eq!(format_dsn(&[("password", "")]), "password=''");
    }

    #[test]
    fn coordinator_needs_an_address() {
        let c = CitusConfig {
            group: 0,
            database: "c".into(),
        };
        let e = bootstrap_plan(&c, "c", &SuperuserAuth::default(), Some("/tmp")).unwrap_err();
        assert_eq!(e.field, "postgresql.connect_address");
    }
}
