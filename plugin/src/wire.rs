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

/// A statement line; field order is the replay's. [`write_statement`] writes its bytes
/// directly; this is the oracle its test compares with.
#[cfg(test)]
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

#[cfg(test)]
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

/// One statement as its JSON object, without the newline: the bytes serde_json writes for
/// [`Line`] (a test holds the two together), written directly because this is the hot path of
/// every batch (serde's tagged-enum machinery cost more than the policy's decisions).
pub fn write_statement(s: &Statement, out: &mut String) {
    match s {
        Statement::LoadMetadata => out.push_str(r#"{"op":"load_metadata"}"#),
        Statement::Begin => out.push_str(r#"{"op":"begin"}"#),
        Statement::Commit => out.push_str(r#"{"op":"commit"}"#),
        Statement::Rollback => out.push_str(r#"{"op":"rollback"}"#),
        Statement::AddNode {
            host,
            port,
            groupid,
            role,
        } => {
            out.push_str(r#"{"op":"add_node","host":"#);
            push_json_str(out, host);
            push_int(out, r#","port":"#, *port);
            push_int(out, r#","groupid":"#, *groupid);
            out.push_str(r#","role":""#);
            out.push_str(role_name(*role));
            out.push_str("\"}");
        }
        Statement::UpdateNode {
            nodeid,
            host,
            port,
            force,
            cooldown_ms,
        } => {
            push_int(out, r#"{"op":"update_node","nodeid":"#, *nodeid);
            out.push_str(r#","host":"#);
            push_json_str(out, host);
            push_int(out, r#","port":"#, *port);
            out.push_str(if *force {
                r#","force":true"#
            } else {
                r#","force":false"#
            });
            push_int(out, r#","cooldown_ms":"#, *cooldown_ms);
            out.push('}');
        }
        Statement::RemoveNode { host, port } => {
            out.push_str(r#"{"op":"remove_node","host":"#);
            push_json_str(out, host);
            push_int(out, r#","port":"#, *port);
            out.push('}');
        }
    }
}

/// The statement as serde_json writes it: what [`write_statement`] must equal.
#[cfg(test)]
fn serde_statement(s: &Statement) -> String {
    serde_json::to_string(&line(s)).expect("statements serialise")
}

fn role_name(r: NodeRole) -> &'static str {
    match r {
        NodeRole::Primary => "primary",
        NodeRole::Secondary => "secondary",
        NodeRole::Unavailable => "unavailable",
    }
}

fn push_int(out: &mut String, key: &str, n: i32) {
    out.push_str(key);
    out.push_str(itoa::Buffer::new().format(n));
}

/// `s` as a JSON string, escaped exactly as serde_json escapes it: `"`, `\\` and the control
/// characters, the usual five by their short escapes and the rest as `\u00xx`.
fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    // Most strings (host names) need no escape: found with one loop the compiler vectorises
    // (it does not stop at the first match), then copied whole.
    let plain = !s.bytes().fold(false, |any, b| {
        any | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if plain {
        out.push_str(s);
        out.push('"');
        return;
    }
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let short = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        // `b` is ASCII, so `i` is a char boundary.
        out.push_str(&s[start..i]);
        if short.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xf)] as char);
        } else {
            out.push_str(short);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

fn each_line<'a, T>(
    text: &'a str,
    field: &str,
    mut f: impl FnMut(&'a str) -> serde_json::Result<T>,
) -> Result<Vec<T>, InvalidInput> {
    // What `str::lines` yields, found with an inlined byte loop: its searcher's set-up cost
    // more than a statement line's few dozen bytes do to scan, in the guest's profile of a
    // drain. A line that starts with `{` is not blank, so `trim` runs only for the others.
    let mut out = Vec::with_capacity(text.len() / 24);
    let mut rest = text;
    let mut number = 0;
    while !rest.is_empty() {
        number += 1;
        let (line, ended) = match rest.bytes().position(|b| b == b'\n') {
            Some(end) => (&rest[..end], true),
            None => (rest, false),
        };
        rest = &rest[(line.len() + 1).min(rest.len())..];
        // `lines` takes a `\r` before the `\n` with it, and only then.
        let line = match ended {
            true => line.strip_suffix('\r').unwrap_or(line),
            false => line,
        };
        if !line.starts_with('{') && line.trim().is_empty() {
            continue;
        }
        out.push(f(line).map_err(|e| InvalidInput::new(field, format!("line {number}: {e}")))?);
    }
    Ok(out)
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

/// Statements from JSON Lines (blank lines ignored). Lines exactly as [`write_statement`]
/// writes them (a host with nothing to escape) are read without a JSON parser; any other
/// line goes to serde_json, which reads any valid JSON for a statement and names what is
/// wrong with the rest.
pub fn read_statements(text: &str) -> Result<Vec<Statement>, InvalidInput> {
    each_line(text, "statements", |l| match canonical_statement(l) {
        Some(s) => Ok(s),
        None => serde_json::from_str::<FlatLine<'_>>(l).and_then(flat_statement),
    })
}

/// A statement line in the exact form this module writes, or None (read it with serde).
fn canonical_statement(l: &str) -> Option<Statement> {
    let (op, rest) = l.strip_prefix(r#"{"op":""#)?.split_once('"')?;
    Some(match op {
        "load_metadata" | "begin" | "commit" | "rollback" if rest == "}" => match op {
            "load_metadata" => Statement::LoadMetadata,
            "begin" => Statement::Begin,
            "commit" => Statement::Commit,
            _ => Statement::Rollback,
        },
        "add_node" => {
            let (host, port, rest) = address(rest)?;
            let (groupid, rest) = json_int(rest.strip_prefix(r#","groupid":"#)?)?;
            let role = match rest {
                r#","role":"primary"}"# => NodeRole::Primary,
                r#","role":"secondary"}"# => NodeRole::Secondary,
                r#","role":"unavailable"}"# => NodeRole::Unavailable,
                _ => return None,
            };
            Statement::AddNode {
                host: host.to_owned(),
                port,
                groupid,
                role,
            }
        }
        "update_node" => {
            let (nodeid, rest) = json_int(rest.strip_prefix(r#","nodeid":"#)?)?;
            let (host, port, rest) = address(rest)?;
            let (force, rest) = if let Some(r) = rest.strip_prefix(r#","force":true"#) {
                (true, r)
            } else {
                (false, rest.strip_prefix(r#","force":false"#)?)
            };
            let (cooldown_ms, rest) = json_int(rest.strip_prefix(r#","cooldown_ms":"#)?)?;
            if rest != "}" {
                return None;
            }
            Statement::UpdateNode {
                nodeid,
                host: host.to_owned(),
                port,
                force,
                cooldown_ms,
            }
        }
        "remove_node" => {
            let (host, port, rest) = address(rest)?;
            if rest != "}" {
                return None;
            }
            Statement::RemoveNode {
                host: host.to_owned(),
                port,
            }
        }
        _ => return None,
    })
}

/// `,"host":H,"port":P`, the address every node statement carries, and the rest.
fn address(s: &str) -> Option<(&str, i32, &str)> {
    let (host, rest) = plain_str(s.strip_prefix(r#","host":"#)?)?;
    let (port, rest) = json_int(rest.strip_prefix(r#","port":"#)?)?;
    Some((host, port, rest))
}

/// A JSON string with nothing escaped (no backslash, no control character) and the rest.
fn plain_str(s: &str) -> Option<(&str, &str)> {
    let body = s.strip_prefix('"')?;
    let end = body.find(|c: char| c == '"' || c == '\\' || c < ' ')?;
    (body.as_bytes()[end] == b'"').then(|| (&body[..end], &body[end + 1..]))
}

/// A JSON integer (no `+`, no leading zero) that fits an i32, and the rest.
fn json_int(s: &str) -> Option<(i32, &str)> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let len = digits.bytes().take_while(u8::is_ascii_digit).count();
    if len == 0 || (len > 1 && digits.starts_with('0')) {
        return None;
    }
    let end = s.len() - digits.len() + len;
    Some((s[..end].parse().ok()?, &s[end..]))
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
        match r {
            // What a drain is made of, written directly: the bytes serde_json writes.
            StatementResult::Done => out.push_str(r#"{"result":"done"}"#),
            StatementResult::RolledBack => out.push_str(r#"{"result":"rolled_back"}"#),
            StatementResult::Added(id) => {
                push_int(out, r#"{"result":"added","nodeid":"#, *id);
                out.push('}');
            }
            StatementResult::Metadata(_) | StatementResult::Failed(_) => {
                out.push_str(&serde_json::to_string(&outcome(r)).expect("results serialise"))
            }
        }
        out.push('\n');
    }
}

/// The result as serde writes it.
fn outcome(r: &StatementResult) -> Outcome<'_> {
    match r {
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
        if let Some((id, "}")) = l
            .strip_prefix(r#"{"result":"added","nodeid":"#)
            .and_then(json_int)
        {
            return Ok(StatementResult::Added(id));
        }
        serde_json::from_str::<FlatOutcome<'_>>(l).and_then(flat_result)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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

    fn any_host() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9.-]{1,20}",
            any::<String>(),
            prop::collection::vec(prop::char::range('\u{0}', '\u{7f}'), 0..12)
                .prop_map(|v| v.into_iter().collect()),
        ]
    }

    fn any_statement() -> impl Strategy<Value = Statement> {
        let role = prop_oneof![
            Just(NodeRole::Primary),
            Just(NodeRole::Secondary),
            Just(NodeRole::Unavailable)
        ];
        prop_oneof![
            Just(Statement::LoadMetadata),
            Just(Statement::Begin),
            Just(Statement::Commit),
            Just(Statement::Rollback),
            (any_host(), any::<i32>(), any::<i32>(), role).prop_map(
                |(host, port, groupid, role)| {
                    Statement::AddNode {
                        host,
                        port,
                        groupid,
                        role,
                    }
                }
            ),
            (
                any::<i32>(),
                any_host(),
                any::<i32>(),
                any::<bool>(),
                any::<i32>()
            )
                .prop_map(|(nodeid, host, port, force, cooldown_ms)| {
                    Statement::UpdateNode {
                        nodeid,
                        host,
                        port,
                        force,
                        cooldown_ms,
                    }
                }),
            (any_host(), any::<i32>())
                .prop_map(|(host, port)| Statement::RemoveNode { host, port }),
        ]
    }

    proptest! {
        /// The hand-written codec is serde's, byte for byte, and reads back what it wrote.
        #[test]
        fn statements_are_written_as_serde_writes_them(s in any_statement()) {
            let mut text = String::new();
            write_statement(&s, &mut text);
            prop_assert_eq!(&text, &serde_statement(&s));
            prop_assert_eq!(read_statements(&text).unwrap(), vec![s]);
        }

        #[test]
        fn lines_are_what_str_lines_finds(text in "[{a \\r\\n\\u{a0}]{0,30}") {
            let mut seen = Vec::new();
            each_line(&text, "t", |l| {
                seen.push(l.to_string());
                Ok(())
            })
            .unwrap();
            let expected: Vec<String> = text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(String::from)
                .collect();
            prop_assert_eq!(seen, expected);
        }

        #[test]
        fn drain_results_are_written_as_serde_writes_them(id in any::<i32>(), which in 0..3u8) {
            let r = match which {
                0 => StatementResult::Done,
                1 => StatementResult::RolledBack,
                _ => StatementResult::Added(id),
            };
            let mut text = String::new();
            write_results(std::slice::from_ref(&r), &mut text);
            let serde = serde_json::to_string(&outcome(&r)).unwrap() + "\n";
            prop_assert_eq!(&text, &serde);
            prop_assert_eq!(read_results(&text).unwrap(), vec![r]);
        }
    }

    /// Lines the fast path does not take are read by serde, and what is wrong is still named.
    #[test]
    fn other_json_for_a_statement_is_read_and_bad_lines_are_refused() {
        let spaced = r#"{ "op": "add_node", "role": "primary", "host": "h\u0041", "port": 1, "groupid": 2 }"#;
        assert_eq!(
            read_statements(spaced).unwrap(),
            [Statement::AddNode {
                host: "hA".into(),
                port: 1,
                groupid: 2,
                role: NodeRole::Primary
            }]
        );
        for (bad, why) in [
            (
                r#"{"op":"add_node","host":"h","port":01,"groupid":2,"role":"primary"}"#,
                "line 1",
            ),
            (
                r#"{"op":"add_node","host":"h","port":+1,"groupid":2,"role":"primary"}"#,
                "line 1",
            ),
            (
                r#"{"op":"add_node","host":"h","port":1,"groupid":2}"#,
                "missing field `role`",
            ),
            (
                r#"{"op":"remove_node","host":"h","port":99999999999}"#,
                "line 1",
            ),
            (r#"{"op":"begin"}x"#, "trailing"),
            (r#"{"op":"launch"}"#, "unknown op"),
        ] {
            let e = read_statements(bad).unwrap_err();
            assert_eq!(e.field, "statements");
            assert!(e.reason.contains(why), "{bad}: {}", e.reason);
        }
        assert!(read_results(r#"{"result":"added","nodeid":+7}"#).is_err());
        assert!(read_results(r#"{"result":"added","nodeid":07}"#).is_err());
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
