//! Statements and their results as JSON Lines (contract 0.4.0's `poll-statements` and
//! `handle-results`, and the simulator component's `execute`).
//!
//! Why JSON Lines: every host language parses JSON natively and fast, one line per statement
//! keeps a batch one string, and the statement lines are exactly the lines `citus-ha replay`
//! prints, so a replay in any host prints what the policy said without re-encoding it.

use crate::error::InvalidInput;
use crate::node::{NodeRole, PgDistRow};
use crate::statement::{Statement, StatementError, StatementResult};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Role {
    Primary,
    Secondary,
    Unavailable,
}

impl From<NodeRole> for Role {
    fn from(r: NodeRole) -> Self {
        match r {
            NodeRole::Primary => Role::Primary,
            NodeRole::Secondary => Role::Secondary,
            NodeRole::Unavailable => Role::Unavailable,
        }
    }
}

impl From<Role> for NodeRole {
    fn from(r: Role) -> Self {
        match r {
            Role::Primary => NodeRole::Primary,
            Role::Secondary => NodeRole::Secondary,
            Role::Unavailable => NodeRole::Unavailable,
        }
    }
}

/// A statement line; field order is the replay's.
#[derive(Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Line<'a> {
    LoadMetadata,
    Begin,
    Commit,
    Rollback,
    AddNode {
        #[serde(borrow)]
        host: Cow<'a, str>,
        port: i32,
        groupid: i32,
        role: Role,
    },
    UpdateNode {
        nodeid: i32,
        #[serde(borrow)]
        host: Cow<'a, str>,
        port: i32,
        force: bool,
        cooldown_ms: i32,
    },
    RemoveNode {
        #[serde(borrow)]
        host: Cow<'a, str>,
        port: i32,
    },
}

fn line(s: &Statement) -> Line<'_> {
    match s {
        Statement::LoadMetadata => Line::LoadMetadata,
        Statement::Begin => Line::Begin,
        Statement::Commit => Line::Commit,
        Statement::Rollback => Line::Rollback,
        Statement::AddNode {
            host,
            port,
            groupid,
            role,
        } => Line::AddNode {
            host: Cow::Borrowed(host),
            port: *port,
            groupid: *groupid,
            role: (*role).into(),
        },
        Statement::UpdateNode {
            nodeid,
            host,
            port,
            force,
            cooldown_ms,
        } => Line::UpdateNode {
            nodeid: *nodeid,
            host: Cow::Borrowed(host),
            port: *port,
            force: *force,
            cooldown_ms: *cooldown_ms,
        },
        Statement::RemoveNode { host, port } => Line::RemoveNode {
            host: Cow::Borrowed(host),
            port: *port,
        },
    }
}

/// Appends one JSON line per statement.
pub fn write_statements(stmts: &[Statement], out: &mut String) {
    for s in stmts {
        write_statement(s, out);
        out.push('\n');
    }
}

/// One statement as its JSON object, without the newline.
pub fn write_statement(s: &Statement, out: &mut String) {
    out.push_str(&serde_json::to_string(&line(s)).expect("statements serialise"));
}

fn each_line<'a, T>(
    text: &'a str,
    field: &str,
    mut f: impl FnMut(&'a str) -> serde_json::Result<T>,
) -> Result<Vec<T>, InvalidInput> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| f(l).map_err(|e| InvalidInput::new(field, format!("line {}: {e}", i + 1))))
        .collect()
}

/// A statement line read flat: serde's internally tagged enums buffer every object before
/// reading it again, which made reading a batch several times slower than writing it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FlatLine<'a> {
    #[serde(borrow)]
    op: Cow<'a, str>,
    nodeid: Option<i32>,
    #[serde(borrow)]
    host: Option<Cow<'a, str>>,
    port: Option<i32>,
    groupid: Option<i32>,
    role: Option<Role>,
    force: Option<bool>,
    cooldown_ms: Option<i32>,
}

fn need<T>(v: Option<T>, op: &str, field: &str) -> serde_json::Result<T> {
    v.ok_or_else(|| serde::de::Error::custom(format!("{op}: missing field `{field}`")))
}

fn flat_statement(l: FlatLine<'_>) -> serde_json::Result<Statement> {
    let op = l.op.as_ref();
    let host = |h: Option<Cow<'_, str>>| need(h, op, "host").map(Cow::into_owned);
    Ok(match op {
        "load_metadata" => Statement::LoadMetadata,
        "begin" => Statement::Begin,
        "commit" => Statement::Commit,
        "rollback" => Statement::Rollback,
        "add_node" => Statement::AddNode {
            host: host(l.host)?,
            port: need(l.port, op, "port")?,
            groupid: need(l.groupid, op, "groupid")?,
            role: need(l.role, op, "role")?.into(),
        },
        "update_node" => Statement::UpdateNode {
            nodeid: need(l.nodeid, op, "nodeid")?,
            host: host(l.host)?,
            port: need(l.port, op, "port")?,
            force: need(l.force, op, "force")?,
            cooldown_ms: need(l.cooldown_ms, op, "cooldown_ms")?,
        },
        "remove_node" => Statement::RemoveNode {
            host: host(l.host)?,
            port: need(l.port, op, "port")?,
        },
        other => return Err(serde::de::Error::custom(format!("unknown op {other:?}"))),
    })
}

/// Statements from JSON Lines (blank lines ignored).
pub fn read_statements(text: &str) -> Result<Vec<Statement>, InvalidInput> {
    each_line(text, "statements", |l| {
        serde_json::from_str::<FlatLine<'_>>(l).and_then(flat_statement)
    })
}

#[derive(Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
enum Outcome<'a> {
    Done,
    RolledBack,
    Added {
        nodeid: i32,
    },
    Metadata {
        rows: Vec<(i32, i32, Cow<'a, str>, i32, Role)>,
    },
    Failed {
        #[serde(borrow)]
        message: Cow<'a, str>,
        #[serde(default)]
        sqlstate: Option<Cow<'a, str>>,
        #[serde(default)]
        connection_lost: bool,
    },
}

/// Appends one JSON line per result.
pub fn write_results(results: &[StatementResult], out: &mut String) {
    for r in results {
        let o = match r {
            StatementResult::Done => Outcome::Done,
            StatementResult::RolledBack => Outcome::RolledBack,
            StatementResult::Added(id) => Outcome::Added { nodeid: *id },
            StatementResult::Metadata(rows) => Outcome::Metadata {
                rows: rows
                    .iter()
                    .map(|r| {
                        (
                            r.nodeid,
                            r.groupid,
                            Cow::Borrowed(r.nodename.as_str()),
                            r.nodeport,
                            r.noderole.into(),
                        )
                    })
                    .collect(),
            },
            StatementResult::Failed(e) => Outcome::Failed {
                message: Cow::Borrowed(&e.message),
                sqlstate: e.sqlstate.as_deref().map(Cow::Borrowed),
                connection_lost: e.connection_lost,
            },
        };
        out.push_str(&serde_json::to_string(&o).expect("results serialise"));
        out.push('\n');
    }
}

/// A pg_dist_node row as a result line carries it: nodeid, groupid, nodename, nodeport, role.
type RowLine<'a> = (i32, i32, Cow<'a, str>, i32, Role);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FlatOutcome<'a> {
    #[serde(borrow)]
    result: Cow<'a, str>,
    nodeid: Option<i32>,
    #[serde(borrow)]
    rows: Option<Vec<RowLine<'a>>>,
    #[serde(borrow)]
    message: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    sqlstate: Option<Cow<'a, str>>,
    #[serde(default)]
    connection_lost: bool,
}

fn flat_result(o: FlatOutcome<'_>) -> serde_json::Result<StatementResult> {
    let tag = o.result.as_ref();
    Ok(match tag {
        "done" => StatementResult::Done,
        "rolled_back" => StatementResult::RolledBack,
        "added" => StatementResult::Added(need(o.nodeid, tag, "nodeid")?),
        "metadata" => StatementResult::Metadata(
            need(o.rows, tag, "rows")?
                .into_iter()
                .map(|(nodeid, groupid, name, nodeport, role)| PgDistRow {
                    nodeid,
                    groupid,
                    nodename: name.into_owned(),
                    nodeport,
                    noderole: role.into(),
                })
                .collect(),
        ),
        "failed" => StatementResult::Failed(StatementError {
            message: need(o.message, tag, "message")?.into_owned(),
            sqlstate: o.sqlstate.map(Cow::into_owned),
            connection_lost: o.connection_lost,
        }),
        other => {
            return Err(serde::de::Error::custom(format!(
                "unknown result {other:?}"
            )))
        }
    })
}

/// Results from JSON Lines (blank lines ignored), read flat as statements are; the two
/// lines a drain is made of (`done`, `added`) exactly as this module writes them are read
/// without a JSON parser.
pub fn read_results(text: &str) -> Result<Vec<StatementResult>, InvalidInput> {
    each_line(text, "results", |l| {
        if l == r#"{"result":"done"}"# {
            return Ok(StatementResult::Done);
        }
        if let Some(id) = l
            .strip_prefix(r#"{"result":"added","nodeid":"#)
            .and_then(|r| r.strip_suffix('}'))
            .and_then(|n| n.parse::<i32>().ok())
        {
            return Ok(StatementResult::Added(id));
        }
        serde_json::from_str::<FlatOutcome<'_>>(l).and_then(flat_result)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_lines_are_the_replay_lines() {
        let stmts = vec![
            Statement::LoadMetadata,
            Statement::Begin,
            Statement::AddNode {
                host: "10.0.1.\"2".into(),
                port: 5432,
                groupid: 1,
                role: NodeRole::Secondary,
            },
            Statement::UpdateNode {
                nodeid: 2,
                host: "10.0.1.2".into(),
                port: 5432,
                force: true,
                cooldown_ms: 10000,
            },
            Statement::RemoveNode {
                host: "h".into(),
                port: 1,
            },
            Statement::Commit,
            Statement::Rollback,
        ];
        let mut text = String::new();
        write_statements(&stmts, &mut text);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], r#"{"op":"load_metadata"}"#);
        assert_eq!(
            lines[2],
            r#"{"op":"add_node","host":"10.0.1.\"2","port":5432,"groupid":1,"role":"secondary"}"#
        );
        assert_eq!(
            lines[3],
            r#"{"op":"update_node","nodeid":2,"host":"10.0.1.2","port":5432,"force":true,"cooldown_ms":10000}"#
        );
        assert_eq!(lines[4], r#"{"op":"remove_node","host":"h","port":1}"#);
        assert_eq!(read_statements(&text).unwrap(), stmts);
    }

    #[test]
    fn results_round_trip_and_bad_lines_are_named() {
        let results = vec![
            StatementResult::Done,
            StatementResult::RolledBack,
            StatementResult::Added(7),
            StatementResult::Metadata(vec![PgDistRow {
                nodeid: 1,
                groupid: 0,
                nodename: "c".into(),
                nodeport: 5432,
                noderole: NodeRole::Primary,
            }]),
            StatementResult::Failed(StatementError {
                message: "boom".into(),
                sqlstate: Some("XX000".into()),
                connection_lost: true,
            }),
        ];
        let mut text = String::new();
        write_results(&results, &mut text);
        assert!(text.contains(r#"{"result":"metadata","rows":[[1,0,"c",5432,"primary"]]}"#));
        assert_eq!(read_results(&text).unwrap(), results);
        let short = read_results("{\"result\":\"failed\",\"message\":\"x\"}").unwrap();
        assert_eq!(short, [StatementResult::Failed(StatementError::new("x"))]);
        let e = read_results("{\"result\":\"done\"}\n{\"result\":\"nope\"}\n").unwrap_err();
        assert_eq!(e.field, "results");
        assert!(e.reason.starts_with("line 2:"), "{}", e.reason);
    }
}
