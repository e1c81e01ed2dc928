//! The scenario format (docs/scenario-format.md): JSON Lines of steps, strictly validated so
//! that a malformed file is refused with its line number before anything runs.

use crate::dcs::shape::parse_cluster;
use crate::session::faults::KINDS;
use citus_ha_policy::dcs::ClusterView;
use citus_ha_policy::node::{NodeRole, PgDistRow};
use serde_json::{Map, Value};
use std::path::PathBuf;

/// One step of a scenario.
#[derive(Clone, Debug)]
pub enum Step {
    Config {
        citus: Value,
        name: String,
        conn_url: String,
    },
    Metadata(Vec<PgDistRow>),
    Sync(ClusterView),
    /// The event body exactly as the worker would POST it (validated by the policy, not here).
    Event {
        cluster: ClusterView,
        event: String,
    },
    Run,
    Advance {
        ms: u64,
    },
    Fail {
        kind: String,
        error: String,
    },
    Demote,
    Rebuild,
    /// citus-ha extension: replace the policy with this component.
    Swap {
        path: PathBuf,
    },
}

/// A malformed scenario: which line and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ScenarioError {
    pub line: usize,
    pub message: String,
}

/// Parses a whole scenario; the first step must be `config`.
pub fn parse_scenario(text: &str) -> Result<Vec<(usize, Step)>, ScenarioError> {
    let mut steps = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let err = |message: String| ScenarioError { line, message };
        let v: Value =
            serde_json::from_str(trimmed).map_err(|e| err(format!("not valid JSON: {e}")))?;
        let step = parse_step(&v).map_err(err)?;
        if steps.is_empty() && !matches!(step, Step::Config { .. }) {
            return Err(ScenarioError {
                line,
                message: "the first step must be {\"op\":\"config\",...}".into(),
            });
        }
        if !steps.is_empty() && matches!(step, Step::Config { .. }) {
            return Err(ScenarioError {
                line,
                message: "`config` may appear only once, as the first step".into(),
            });
        }
        steps.push((line, step));
    }
    if steps.is_empty() {
        return Err(ScenarioError {
            line: 0,
            message: "the scenario has no steps (it must start with a `config` step)".into(),
        });
    }
    Ok(steps)
}

fn field<'a>(o: &'a Map<String, Value>, op: &str, name: &str) -> Result<&'a Value, String> {
    o.get(name)
        .ok_or_else(|| format!("`{op}` needs the field `{name}`"))
}

fn string(o: &Map<String, Value>, op: &str, name: &str) -> Result<String, String> {
    match field(o, op, name)? {
        Value::String(s) => Ok(s.clone()),
        _ => Err(format!("`{op}`: `{name}` must be a string")),
    }
}

fn parse_step(v: &Value) -> Result<Step, String> {
    let o = v.as_object().ok_or("a step must be a JSON object")?;
    let op = match o.get("op") {
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err("`op` must be a string".into()),
        None => return Err("the step has no `op`".into()),
    };
    Ok(match op {
        "config" => {
            let citus = field(o, op, "citus")?.clone();
            if !citus.is_object() {
                return Err("`config`: `citus` must be an object".into());
            }
            let conn_url = string(o, op, "conn_url")?;
            // The policy registers the coordinator's own row from it: refuse it here, with
            // the line, rather than as a member skipped later.
            citus_ha_policy::conninfo::parse_conn_url(&conn_url)
                .map_err(|e| format!("`config`: `conn_url`: {e}"))?;
            Step::Config {
                citus,
                name: string(o, op, "name")?,
                conn_url,
            }
        }
        "metadata" => {
            let rows = field(o, op, "rows")?
                .as_array()
                .ok_or("`metadata`: `rows` must be a list")?;
            let rows: Vec<PgDistRow> = rows
                .iter()
                .enumerate()
                .map(|(i, r)| parse_row(r).map_err(|e| format!("`metadata`: rows[{i}]: {e}")))
                .collect::<Result<_, _>>()?;
            // pg_dist_node has both as unique keys: such a table cannot exist, and loading
            // it would silently drop a row.
            for (i, r) in rows.iter().enumerate() {
                if let Some(j) = rows[..i].iter().position(|o| o.nodeid == r.nodeid) {
                    return Err(format!(
                        "`metadata`: rows[{i}] repeats nodeid {} of rows[{j}]",
                        r.nodeid
                    ));
                }
                if let Some(j) = rows[..i]
                    .iter()
                    .position(|o| o.nodename == r.nodename && o.nodeport == r.nodeport)
                {
                    return Err(format!(
                        "`metadata`: rows[{i}] repeats the address {}:{} of rows[{j}]",
                        r.nodename, r.nodeport
                    ));
                }
            }
            Step::Metadata(rows)
        }
        "sync" => {
            Step::Sync(parse_cluster(field(o, op, "cluster")?).map_err(|e| format!("`sync`: {e}"))?)
        }
        "event" => {
            let cluster =
                parse_cluster(field(o, op, "cluster")?).map_err(|e| format!("`event`: {e}"))?;
            let event = field(o, op, "event")?.to_string();
            Step::Event { cluster, event }
        }
        "run" => Step::Run,
        "advance" => {
            let s = field(o, op, "seconds")?
                .as_f64()
                .ok_or("`advance`: `seconds` must be a number")?;
            if !(0.0..=1e9).contains(&s) {
                return Err(format!("`advance`: `seconds` must be 0 or more, got {s}"));
            }
            Step::Advance {
                ms: (s * 1000.0).round() as u64,
            }
        }
        "fail" => {
            let kind = string(o, op, "match")?;
            if !KINDS.contains(&kind.as_str()) {
                return Err(format!(
                    "`fail`: `match` must be one of {}, got {kind:?}",
                    KINDS.join(", ")
                ));
            }
            Step::Fail {
                kind,
                error: string(o, op, "error")?,
            }
        }
        "demote" => Step::Demote,
        "rebuild" => Step::Rebuild,
        "swap" => Step::Swap {
            path: PathBuf::from(string(o, op, "path")?),
        },
        other => return Err(format!("unknown op {other:?}")),
    })
}

fn parse_row(v: &Value) -> Result<PgDistRow, String> {
    let a = v
        .as_array()
        .filter(|a| a.len() == 5)
        .ok_or("must be [nodeid, groupid, \"nodename\", nodeport, \"noderole\"]")?;
    let int = |i: usize, what: &str| -> Result<i32, String> {
        a[i].as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .ok_or_else(|| format!("{what} must be an integer"))
    };
    let noderole = match a[4].as_str() {
        Some("primary") => NodeRole::Primary,
        Some("secondary") => NodeRole::Secondary,
        Some("unavailable") => NodeRole::Unavailable,
        _ => return Err("noderole must be \"primary\", \"secondary\" or \"unavailable\"".into()),
    };
    Ok(PgDistRow {
        nodeid: int(0, "nodeid")?,
        groupid: int(1, "groupid")?,
        nodename: a[2]
            .as_str()
            .ok_or("nodename must be a string")?
            .to_string(),
        nodeport: int(3, "nodeport")?,
        noderole,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"{"op":"config","citus":{"group":0,"database":"citus"},"name":"c","conn_url":"postgres://h/db"}"#;

    fn err(text: &str) -> ScenarioError {
        parse_scenario(text).unwrap_err()
    }

    #[test]
    fn malformed_scenarios_name_line_and_problem() {
        assert_eq!(err(r#"{"op":"run"}"#).line, 1);
        let e = err(&format!("{CONFIG}\n# c\n\n{{\"op\":\"jump\"}}"));
        assert_eq!(e.line, 4);
        assert!(e.message.contains("unknown op"));
        assert!(err(&format!("{CONFIG}\n{{")).message.contains("JSON"));
        assert!(err(&format!("{CONFIG}\n{{\"op\":\"advance\"}}"))
            .message
            .contains("seconds"));
        assert!(err(&format!(
            "{CONFIG}\n{{\"op\":\"advance\",\"seconds\":\"1\"}}"
        ))
        .message
        .contains("number"));
        assert!(err(&format!(
            "{CONFIG}\n{{\"op\":\"fail\",\"match\":\"x\",\"error\":\"e\"}}"
        ))
        .message
        .contains("match"));
        assert!(err(&format!(
            "{CONFIG}\n{{\"op\":\"metadata\",\"rows\":[[1,0,\"h\",5432]]}}"
        ))
        .message
        .contains("rows[0]"));
        assert!(err(&format!(
            "{CONFIG}\n{{\"op\":\"sync\",\"cluster\":{{\"members\":5}}}}"
        ))
        .message
        .contains("members"));
        assert!(err("").message.contains("no steps"));
    }

    #[test]
    fn impossible_tables_and_bad_urls_are_refused_with_their_line() {
        let dup_id = err(&format!(
            "{CONFIG}\n{{\"op\":\"metadata\",\"rows\":[[1,0,\"a\",5432,\"primary\"],[1,1,\"b\",5432,\"primary\"]]}}"
        ));
        assert_eq!(dup_id.line, 2);
        assert!(dup_id.message.contains("repeats nodeid 1"), "{dup_id}");
        let dup_addr = err(&format!(
            "{CONFIG}\n{{\"op\":\"metadata\",\"rows\":[[1,0,\"a\",5432,\"primary\"],[2,1,\"a\",5432,\"secondary\"]]}}"
        ));
        assert!(
            dup_addr.message.contains("repeats the address a:5432"),
            "{dup_addr}"
        );
        let bad_url = err(
            r#"{"op":"config","citus":{"group":0,"database":"citus"},"name":"c","conn_url":"postgres://h:notaport/db"}"#,
        );
        assert_eq!(bad_url.line, 1);
        assert!(bad_url.message.contains("conn_url"), "{bad_url}");
    }

    #[test]
    fn events_are_kept_verbatim() {
        let s = parse_scenario(&format!(
            "{CONFIG}\n{{\"op\":\"event\",\"cluster\":{{}},\"event\":{{\"type\":\"bogus\"}}}}"
        ))
        .unwrap();
        assert!(matches!(&s[1].1, Step::Event { event, .. } if event.contains("bogus")));
    }
}
