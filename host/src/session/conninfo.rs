//! The metadata session's connection settings, built from the member's configuration: the
//! coordinator's Citus database, as the superuser, with the member's sslmode.

use crate::config::Config;

/// The connection string of the metadata session: `coordinator.url`, or this member's
/// address with the Citus database, the superuser's credentials and sslmode.
pub fn coordinator_conninfo(config: &Config, citus_database: &str) -> String {
    if let Some(u) = &config.coordinator_url {
        return u.clone();
    }
    let pg = &config.postgresql;
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

/// Whether the metadata session must use TLS (the connection string asks for it).
pub fn wants_tls(conninfo: &str) -> bool {
    conninfo
        .parse::<tokio_postgres::Config>()
        .map(|c| c.get_ssl_mode() == tokio_postgres::config::SslMode::Require)
        .unwrap_or(false)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn conn_url_and_credentials_build_the_coordinator_conninfo() {
        let text = "name: c\ncitus: {group: 0, database: citus}\n\
                    postgresql:\n  conn_url: postgres://[::1]:6000/app\n  sslmode: verify-full\n  authentication:\n    superuser: {username: admin, password: \"it's \\\\ x\"}\n\
                    dcs: {file: /d.yaml}\n";
        let c = Config::parse(text, Path::new("/etc/citus-ha")).unwrap();
        assert_eq!(c.member_url(), "postgres://[::1]:6000/app");
        let ci = coordinator_conninfo(&c, "citus");
        assert_eq!(
            ci,
            r"host=::1 port=6000 dbname=citus user=admin password='it\'s \\ x' sslmode=require"
        );
        let parsed: tokio_postgres::Config = ci.parse().unwrap();
        assert_eq!(parsed.get_password(), Some(&b"it's \\ x"[..]));
        assert!(wants_tls(&ci));
        assert!(!wants_tls("host=a sslmode=prefer"));
    }
}
