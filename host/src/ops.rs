//! One-shot operator commands that ask the policy component a question: `gucs` (PostgreSQL
//! parameters for Citus) and `bootstrap` (prepare a new node's database for Citus).

use crate::config::Config;
use crate::policy::{Functions, PolicyEngine, PolicyLimits};
use crate::session::conninfo::coordinator_conninfo;
use citus_ha_policy::bootstrap::{BootstrapStep, SuperuserAuth};
use std::io::Read;
use std::path::Path;
use tokio_postgres::NoTls;

fn engine() -> anyhow::Result<PolicyEngine> {
    PolicyEngine::new(PolicyLimits::default(), PolicyEngine::default_cache_dir())
}

/// A scalar parameter value as PostgreSQL would print it.
fn scalar(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(if *b { "on" } else { "off" }.to_string()),
        _ => None,
    }
}

/// Reads a parameter mapping (JSON or YAML) and returns it adjusted for Citus, as JSON.
pub fn gucs(input: &str, local_host: Option<&str>) -> anyhow::Result<String> {
    let value: serde_json::Value = match serde_json::from_str(input) {
        Ok(v) => v,
        Err(_) => serde_yaml::from_str(input)
            .map_err(|e| anyhow::anyhow!("parameters are neither JSON nor YAML: {e}"))?,
    };
    let map = value
        .as_object()
        .ok_or_else(|| anyhow::anyhow!("parameters must be a mapping of name to value"))?;
    let mut params = Vec::with_capacity(map.len());
    for (k, v) in map {
        let v =
            scalar(v).ok_or_else(|| anyhow::anyhow!("{k}: must be a string, number or boolean"))?;
        params.push((k.clone(), v));
    }
    let engine = engine()?;
    let loaded = engine
        .load(crate::EMBEDDED_POLICY, "embedded")
        .map_err(anyhow::Error::msg)?;
    let mut p = loaded.functions()?;
    let adjusted = p
        .adjust_gucs(&params, local_host)?
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let body: Vec<String> = adjusted
        .iter()
        .map(|(k, v)| {
            format!(
                "  {}: {}",
                serde_json::to_string(k).unwrap(),
                serde_json::to_string(v).unwrap()
            )
        })
        .collect();
    Ok(format!("{{\n{}\n}}", body.join(",\n")))
}

pub fn gucs_command(file: Option<&Path>, local_host: Option<&str>) -> std::process::ExitCode {
    let mut text = String::new();
    let read = match file {
        Some(p) if p != Path::new("-") => std::fs::read_to_string(p).map(|t| text = t),
        _ => std::io::stdin().read_to_string(&mut text).map(|_| ()),
    };
    if let Err(e) = read {
        eprintln!("citus-ha gucs: cannot read the parameters: {e}");
        return std::process::ExitCode::from(1);
    }
    match gucs(&text, local_host) {
        Ok(out) => {
            println!("{out}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("citus-ha gucs: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

async fn connect(conninfo: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = conninfo
        .parse::<tokio_postgres::Config>()?
        .connect(NoTls)
        .await?;
    tokio::spawn(conn);
    Ok(client)
}

/// Runs the policy's bootstrap plan for the node `config` describes. Every value is a bound
/// parameter; the database name is quoted by the server (`format('%I')`).
/// Each finished step is reported through `done` as it completes, so a failure part-way still
/// shows what was already in place.
pub async fn bootstrap(config: &Config, done: &mut dyn FnMut(String)) -> anyhow::Result<()> {
    let engine = engine()?;
    let (loaded, citus) = config.load_policy(&engine).map_err(|ps| {
        anyhow::anyhow!(
            "{}",
            ps.iter()
                .map(|p| format!("{}: {}", p.path, p.message))
                .collect::<Vec<_>>()
                .join("; ")
        )
    })?;
    let mut p = loaded.functions()?;
    let su = &config.postgresql.superuser;
    let auth = SuperuserAuth {
        password: su.password.clone(),
        sslcert: su.sslcert.as_ref().map(|p| p.display().to_string()),
        sslkey: su.sslkey.as_ref().map(|p| p.display().to_string()),
    };
    let url = config.member_url();
    let steps = p
        .bootstrap_plan(&citus, &config.postgresql.database, &auth, Some(&url))?
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let default_db = connect(&coordinator_conninfo(config, &config.postgresql.database)).await?;
    let citus_db_info = coordinator_conninfo(config, &citus.database);
    let mut citus_db: Option<tokio_postgres::Client> = None;
    for step in steps {
        match step {
            BootstrapStep::CreateDatabase(name) => {
                let sql: String = default_db
                    .query_one("SELECT format('CREATE DATABASE %I', $1::text)", &[&name])
                    .await?
                    .get(0);
                match default_db.batch_execute(&sql).await {
                    Ok(()) => done(format!("created database {name}")),
                    Err(e)
                        if e.code()
                            == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) =>
                    {
                        done(format!("database {name} exists"))
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            BootstrapStep::CreateExtension => {
                let c = match &citus_db {
                    Some(c) => c,
                    None => citus_db.insert(connect(&citus_db_info).await?),
                };
                // The CI's SQL emulation provides Citus's functions without the extension.
                let emulated: bool = c
                    .query_one(
                        "SELECT to_regprocedure('pg_catalog.citus_version()') IS NOT NULL \
                         AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'citus')",
                        &[],
                    )
                    .await?
                    .get(0);
                if emulated {
                    done("citus functions present without the extension (emulation): CREATE EXTENSION skipped".into());
                } else {
                    c.batch_execute("CREATE EXTENSION IF NOT EXISTS citus")
                        .await?;
                    done("extension citus ready".into());
                }
            }
            BootstrapStep::InsertAuthinfo(info) => {
                let c = match &citus_db {
                    Some(c) => c,
                    None => citus_db.insert(connect(&citus_db_info).await?),
                };
                // Update the row if a previous bootstrap wrote one, so running it again is safe
                // and a changed password takes effect.
                let updated = c
                    .execute(
                        "UPDATE pg_catalog.pg_dist_authinfo SET authinfo = $1::text \
                         WHERE nodeid = 0 AND rolename = pg_catalog.current_user()",
                        &[&info],
                    )
                    .await?;
                if updated == 0 {
                    c.execute("INSERT INTO pg_catalog.pg_dist_authinfo VALUES (0, pg_catalog.current_user(), $1::text)", &[&info])
                        .await?;
                }
                done("pg_dist_authinfo row for the superuser".into());
            }
            BootstrapStep::SetCoordinatorHost(addr) => {
                let c = match &citus_db {
                    Some(c) => c,
                    None => citus_db.insert(connect(&citus_db_info).await?),
                };
                c.execute("SELECT pg_catalog.citus_set_coordinator_host($1::text, $2::int, 'primary', 'default')", &[&addr.host, &addr.port])
                    .await?;
                done(format!("coordinator registered as {addr}"));
            }
        }
    }
    Ok(())
}

pub async fn bootstrap_command(path: &Path) -> std::process::ExitCode {
    let config = match Config::read(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("citus-ha bootstrap: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match bootstrap(&config, &mut |step| println!("{step}")).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("citus-ha bootstrap: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn gucs_through_the_component() {
        let out = super::gucs(
            "max_connections: 100\nshared_preload_libraries: pg_stat_statements\n",
            Some("10.0.0.9"),
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["shared_preload_libraries"], "citus,pg_stat_statements");
        assert_eq!(v["max_prepared_transactions"], "200");
        assert_eq!(v["wal_level"], "logical");
        assert_eq!(v["citus.local_hostname"], "10.0.0.9");
        let e = super::gucs("{\"max_connections\": \"many\"}", None).unwrap_err();
        assert!(e.to_string().contains("max_connections"), "{e}");
    }
}
