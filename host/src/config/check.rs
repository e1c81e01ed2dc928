//! `check-config`: the files a config names, the `citus` section as the policy component
//! itself validates it, and the one report of everything found.

use super::{dcs, Config, ConfigErrors, Problem};
use crate::dcs::etcd::EtcdSettings;
use crate::dcs::file::parse_cluster_text;
use crate::policy::{Functions, LoadedPolicy, PolicyEngine};
use citus_ha_policy::CitusConfig;
use std::path::{Path, PathBuf};

/// The files a config names, as far as their fields could be read: they are checked even
/// when other fields have problems, so that one run of check-config shows everything.
#[derive(Clone, Debug, Default)]
pub struct Files {
    /// Each field is the resolved path from the field of the same name in [`Config`].
    pub dcs_file: Option<PathBuf>,
    pub policy_path: Option<PathBuf>,
    pub cache_dir: Option<PathBuf>,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub sslcert: Option<PathBuf>,
    pub sslkey: Option<PathBuf>,
    /// The etcd3 section, whose TLS files must read.
    pub etcd3: Option<EtcdSettings>,
}

impl Files {
    /// Every file that cannot be used: the DCS file must parse, the others must be readable
    /// (and the TLS pair must make a server configuration).
    pub fn check(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut problem = |path: &str, message: String| {
            problems.push(Problem {
                path: path.into(),
                message,
            })
        };
        if let Some(f) = &self.dcs_file {
            match std::fs::read_to_string(f) {
                Err(e) => problem("dcs.file", format!("cannot read {}: {e}", f.display())),
                Ok(text) => {
                    if let Err(e) = parse_cluster_text(&text, &f.display().to_string()) {
                        problem("dcs.file", format!("{e:#}"));
                    }
                }
            }
        }
        if let Some(p) = &self.policy_path {
            if let Err(e) = std::fs::metadata(p) {
                problem("policy.path", format!("cannot read {}: {e}", p.display()));
            }
        }
        if let Some(dir) = &self.cache_dir {
            if dir.exists() && !dir.is_dir() {
                problem(
                    "policy.cache_dir",
                    format!("{} is not a directory", dir.display()),
                );
            }
        }
        if let Some((cert, key)) = &self.tls {
            if let Err((path, e)) = crate::service::http::tls_config(cert, key) {
                problem(path, e);
            }
        }
        for (path, file) in [
            ("postgresql.authentication.superuser.sslcert", &self.sslcert),
            ("postgresql.authentication.superuser.sslkey", &self.sslkey),
        ] {
            if let Some(f) = file {
                if let Err(e) = std::fs::metadata(f) {
                    problem(path, format!("cannot read {}: {e}", f.display()));
                }
            }
        }
        if let Some(e) = &self.etcd3 {
            problems.extend(dcs::check_etcd_files(e));
        }
        problems
    }
}

/// Loads the policy at `path` (or the embedded build) and has it validate a `citus` section.
/// Problems are reported under `policy.path` or under the field the policy names.
pub fn validate_citus(
    engine: &PolicyEngine,
    path: Option<&Path>,
    citus: &serde_json::Value,
) -> Result<(LoadedPolicy, CitusConfig), Vec<Problem>> {
    let loaded = match path {
        None => engine.load(crate::EMBEDDED_POLICY, "embedded"),
        Some(p) => match std::fs::read(p) {
            Ok(bytes) => engine.load(&bytes, &p.display().to_string()),
            Err(e) => Err(format!("cannot read {}: {e}", p.display())),
        },
    }
    .map_err(|message| {
        vec![Problem {
            path: "policy.path".into(),
            message,
        }]
    })?;
    let validated = loaded
        .functions()
        .and_then(|mut f| f.validate_config(&citus.to_string()))
        .map_err(|e| {
            vec![Problem {
                path: "policy.path".into(),
                message: format!("the policy cannot validate the citus section: {e}"),
            }]
        })?;
    match validated {
        Ok(c) => Ok((loaded, c)),
        Err(first) => Err(every_citus_problem(&loaded, citus, first)),
    }
}

/// The policy names one problem per call; an operator wants them all. Each setting of the
/// section is checked again on its own, beside valid stand-ins for the others, by the same
/// build (its rules, not a copy of them).
fn every_citus_problem(
    loaded: &LoadedPolicy,
    citus: &serde_json::Value,
    first: citus_ha_policy::InvalidInput,
) -> Vec<Problem> {
    let mut problems = vec![Problem {
        path: first.field,
        message: first.reason,
    }];
    let (Some(section), Ok(mut f)) = (citus.as_object(), loaded.functions()) else {
        return problems;
    };
    for (key, value) in section {
        let mut probe = serde_json::json!({"group": 0, "database": "citus"});
        probe[key.as_str()] = value.clone();
        if let Ok(Err(invalid)) = f.validate_config(&probe.to_string()) {
            if !problems.iter().any(|p| p.path == invalid.field) {
                problems.push(Problem {
                    path: invalid.field,
                    message: invalid.reason,
                });
            }
        }
    }
    problems
}

/// Everything `check-config` verifies, every problem at once: the document, the files it
/// names, and the `citus` section as the policy component (configured or embedded) sees it.
/// Returns the config when there is no problem.
pub fn check_file(path: &Path) -> (Option<Config>, Vec<Problem>) {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            return (
                None,
                vec![Problem {
                    path: String::new(),
                    message: format!("cannot read {}: {e}", path.display()),
                }],
            )
        }
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let parsed = match Config::parse_partial(&text, base) {
        Ok(p) => p,
        Err(ConfigErrors(problems)) => return (None, problems),
    };
    let mut problems = parsed.problems;
    problems.extend(parsed.files.check());
    if let Some(citus) = &parsed.citus {
        let settings = parsed.policy.unwrap_or_default();
        match PolicyEngine::new(settings.limits(), settings.cache_dir.clone()) {
            Err(e) => problems.push(Problem {
                path: "policy".into(),
                message: format!("cannot start the policy engine: {e}"),
            }),
            Ok(engine) => {
                // An unusable policy.path is reported already; the embedded build still
                // checks the citus section then.
                let path = settings
                    .path
                    .filter(|_| !problems.iter().any(|p| p.path == "policy.path"));
                if let Err(found) = validate_citus(&engine, path.as_deref(), citus) {
                    problems.extend(found);
                }
            }
        }
    }
    match parsed.config {
        Some(c) if problems.is_empty() => (Some(c), problems),
        _ => (None, problems),
    }
}

/// `citus-ha check-config FILE`: every problem on its own line (exit 1), or a one-line summary
/// of what would run (exit 0).
pub fn check_config_command(path: &Path) -> std::process::ExitCode {
    let (config, problems) = check_file(path);
    match config {
        Some(c) if problems.is_empty() => {
            let policy = c
                .policy
                .path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "embedded".into());
            println!(
                "{}: OK: member {} ({}:{}), citus group {} database {}, REST API on {}{}, {}, policy {}, heartbeat every {:?}",
                path.display(),
                c.name,
                c.postgresql.host,
                c.postgresql.port,
                c.citus["group"],
                c.citus["database"].as_str().unwrap_or("?"),
                if c.restapi.tls.is_some() { "https://" } else { "http://" },
                c.restapi.listen,
                c.dcs.describe(),
                policy,
                c.loop_wait,
            );
            std::process::ExitCode::SUCCESS
        }
        _ => {
            for p in &problems {
                println!("{}: {p}", path.display());
            }
            println!(
                "{}: {} problem{}",
                path.display(),
                problems.len(),
                if problems.len() == 1 { "" } else { "s" }
            );
            std::process::ExitCode::from(1)
        }
    }
}
