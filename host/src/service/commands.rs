//! The `citus-ha run` entry points: with a config file (a real coordinator) or without one
//! (the simulator and the bundled example cluster).

use super::{listener, serve, Settings};
use crate::agent::{Agent, Identity};
use crate::config::Config;
use crate::dcs::configured::ConfiguredSource;
use crate::dcs::file::parse_cluster_text;
use crate::dcs::fixed::StaticSource;
use crate::policy::{LoadedPolicy, PolicyEngine, PolicyLimits};
use crate::session::conninfo::{coordinator_conninfo, wants_tls};
use crate::session::pg::{PgSession, SessionLimits};
use crate::session::sim::SimSession;
use crate::session::MetadataSession;
use citus_ha_policy::CitusConfig;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The example DCS view `citus-ha run` uses without a config: a coordinator `coord1` (group 0)
/// and two worker groups, each with a primary and a replica.
pub const EXAMPLE_DCS: &str = include_str!("../../examples/dcs.yaml");

/// `citus-ha run --config FILE`: the real coordinator through PgSession, the DCS file.
pub async fn run_with_config(config: Config) -> anyhow::Result<()> {
    for p in config.check_environment() {
        // The DCS file may legitimately appear later (the HA manager writes it); the rest is fatal.
        if p.path == "dcs.file" {
            tracing::warn!("{p}; waiting for it");
        } else {
            anyhow::bail!("{p}");
        }
    }
    let engine = Arc::new(PolicyEngine::new(
        config.policy.limits(),
        config.policy.cache_dir.clone(),
    )?);
    let (loaded, citus) = config.load_policy(&engine).map_err(|problems| {
        anyhow::anyhow!(problems
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("; "))
    })?;
    let conninfo = coordinator_conninfo(&config, &citus.database);
    let session = PgSession::new(
        &conninfo,
        wants_tls(&conninfo),
        SessionLimits {
            connect: config.retry_timeout,
            statement: config.retry_timeout,
        },
    )?;
    let identity = Identity {
        config: citus,
        name: config.name.clone(),
        connect_url: config.member_url(),
    };
    let settings = Settings {
        name: config.name.clone(),
        loop_wait: config.loop_wait,
        ttl: config.ttl,
        max_pause: config.max_pause,
        listen: config.restapi.listen,
        auth: config.restapi.auth.clone(),
        tls: config.restapi.tls.clone(),
        http_limits: listener::Limits {
            max_connections: config.restapi.max_connections,
            header_read: config.restapi.request_timeout,
            body_read: config.restapi.request_timeout,
            handshake: config.restapi.request_timeout,
        },
        policy_path: config.policy.path.clone(),
    };
    let mut agent = new_agent(&loaded, identity, session)?;
    if config.policy.path.is_some() {
        let fallback = engine
            .load(crate::EMBEDDED_POLICY, "embedded")
            .map_err(anyhow::Error::msg)?;
        agent.set_fallback(fallback);
    }
    let dcs = ConfiguredSource::start(&config.dcs, config.ttl).map_err(anyhow::Error::msg)?;
    serve(settings, engine, agent, dcs).await
}

/// `citus-ha run` without a config: the in-memory simulator and the bundled example DCS on
/// 127.0.0.1:8008, so anyone can POST a worker event with curl and watch the statements.
pub async fn run_embedded() -> anyhow::Result<()> {
    let view = parse_cluster_text(EXAMPLE_DCS, "the bundled example DCS")?;
    let name = view
        .coordinator
        .leader
        .clone()
        .ok_or_else(|| anyhow::anyhow!("the example DCS has no coordinator leader"))?;
    let member_url = view
        .coordinator
        .leader_member()
        .and_then(|m| m.conn_url.clone())
        .ok_or_else(|| anyhow::anyhow!("the example DCS leader has no conn_url"))?;
    let engine = Arc::new(PolicyEngine::new(
        PolicyLimits::default(),
        PolicyEngine::default_cache_dir(),
    )?);
    let loaded = engine
        .load(crate::EMBEDDED_POLICY, "embedded")
        .map_err(anyhow::Error::msg)?;
    let identity = Identity {
        config: CitusConfig {
            group: 0,
            database: "citus".into(),
        },
        name: name.clone(),
        connect_url: member_url,
    };
    let settings = Settings {
        name,
        loop_wait: Duration::from_secs(10),
        ttl: Duration::from_secs(30),
        max_pause: Duration::from_secs(60),
        listen: crate::config::DEFAULT_LISTEN
            .parse()
            .expect("valid default"),
        auth: None,
        tls: None,
        http_limits: listener::Limits::default(),
        policy_path: None,
    };
    tracing::info!(
        "no --config: serving the bundled example cluster against the in-memory simulator; try\n  \
         curl -XPOST localhost:8008/citus -d '{{\"type\":\"before_demote\",\"group\":1,\"leader\":\"w1a\",\"timeout\":30,\"cooldown\":10}}'"
    );
    let agent = new_agent(&loaded, identity, SimSession::default())?;
    serve(settings, engine, agent, StaticSource(view)).await
}

/// `citus-ha run [--config FILE]`: exit status 1 with the reason when it cannot start.
pub async fn run_command(config: Option<PathBuf>) -> std::process::ExitCode {
    let r = match config {
        None => run_embedded().await,
        Some(path) => match Config::read(&path) {
            Err(errors) => {
                for p in &errors.0 {
                    eprintln!("citus-ha run: {}: {p}", path.display());
                }
                return std::process::ExitCode::from(1);
            }
            Ok(c) => run_with_config(c).await,
        },
    };
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("citus-ha run: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

fn new_agent<S: MetadataSession>(
    loaded: &LoadedPolicy,
    identity: Identity,
    session: S,
) -> anyhow::Result<Agent<S>> {
    if !identity.config.is_coordinator() {
        tracing::warn!(
            group = identity.config.group,
            "citus.group is not 0: this node is a worker, and only the coordinator keeps pg_dist_node; the agent will do nothing"
        );
    }
    let policy = loaded.new_handler(&identity.config, &identity.name, &identity.connect_url)?;
    Ok(Agent::new(policy, identity, session))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_dcs_parses() {
        let v = parse_cluster_text(EXAMPLE_DCS, "example").unwrap();
        assert_eq!(v.coordinator.leader.as_deref(), Some("coord1"));
        assert_eq!(v.workers.len(), 2);
        for (_, g) in &v.workers {
            assert_eq!(g.members.len(), 2);
            assert!(g.leader_member().is_some());
        }
    }
}
