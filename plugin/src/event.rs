//! Worker events: what a worker primary POSTs to the coordinator around a switchover.

use crate::config::kind_of;
use crate::error::InvalidInput;
use crate::node::GroupId;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Why a task exists: a worker event, or (`AfterPromote`) the heartbeat's "make it match".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    /// The worker's primary is about to stop: pause writes (rename the row) in a transaction.
    BeforeDemote,
    /// A new primary is about to be promoted: point the row at it, still in the transaction.
    BeforePromote,
    /// Promotion is done: finish and commit.
    AfterPromote,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::BeforeDemote => "before_demote",
            EventKind::BeforePromote => "before_promote",
            EventKind::AfterPromote => "after_promote",
        }
    }
    /// Events before promotion open (or extend) a transaction that holds the pause.
    pub fn opens_transaction(self) -> bool {
        !matches!(self, EventKind::AfterPromote)
    }
}

/// Cooldown Citus waits before terminating conflicting sessions when none is given.
pub const DEFAULT_COOLDOWN_MS: i32 = 10_000;

/// A validated worker event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerEvent {
    pub kind: EventKind,
    pub group: GroupId,
    pub leader: String,
    /// How long the transaction it opens may stay open, in ms (the worker's DCS ttl).
    pub timeout_ms: u64,
    /// `lock_cooldown` for citus_update_node, in ms.
    pub cooldown_ms: i32,
}

/// Parses and validates the JSON body exactly as a worker sends it. Unknown `type`s are refused
/// (the reference would treat them as `before_promote` and open a transaction); `cooldown: 0`
/// means 0 ms, only a missing cooldown takes the default.
pub fn parse_event(text: &str) -> Result<WorkerEvent, InvalidInput> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| InvalidInput::new("event", format!("not valid JSON: {e}")))?;
    validate_event(&v)
}

pub fn validate_event(v: &Value) -> Result<WorkerEvent, InvalidInput> {
    let obj = v.as_object().ok_or_else(|| {
        InvalidInput::new("event", format!("must be an object, got {}", kind_of(v)))
    })?;
    let kind = match obj.get("type") {
        Some(Value::String(s)) => match s.as_str() {
            "before_demote" => EventKind::BeforeDemote,
            "before_promote" => EventKind::BeforePromote,
            "after_promote" => EventKind::AfterPromote,
            _ if crate::compat::REFERENCE_PORT => EventKind::BeforePromote,
            other => {
                return Err(InvalidInput::new(
                    "type",
                    format!(
                        "unknown event type {} (expected before_demote, before_promote or after_promote)",
                        shown(other)
                    ),
                ))
            }
        },
        Some(other) => {
            return Err(InvalidInput::new(
                "type",
                format!("must be a string, got {}", kind_of(other)),
            ))
        }
        None => return Err(InvalidInput::new("type", "is required")),
    };
    let group = match obj.get("group") {
        Some(Value::Number(n)) => match n.as_i64() {
            Some(g) if g >= 1 && g <= i64::from(GroupId::MAX) => g as GroupId,
            Some(g) if g < 1 => {
                return Err(InvalidInput::new(
                    "group",
                    format!("must be a worker group (1 or more), got {g}"),
                ))
            }
            _ => return Err(InvalidInput::new("group", format!("{n} is not a group id"))),
        },
        Some(other) => {
            return Err(InvalidInput::new(
                "group",
                format!("must be an integer, got {}", kind_of(other)),
            ))
        }
        None => return Err(InvalidInput::new("group", "is required")),
    };
    let leader = match obj.get("leader") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::String(_)) => return Err(InvalidInput::new("leader", "must not be empty")),
        Some(other) => {
            return Err(InvalidInput::new(
                "leader",
                format!("must be a string, got {}", kind_of(other)),
            ))
        }
        None => return Err(InvalidInput::new("leader", "is required")),
    };
    let timeout_ms = match seconds(obj.get("timeout"), "timeout")? {
        None => return Err(InvalidInput::new("timeout", "is required")),
        Some(t) if t <= 0.0 => {
            return Err(InvalidInput::new(
                "timeout",
                format!("must be more than 0 seconds, got {t}"),
            ))
        }
        Some(t) if t > 86_400.0 * 365.0 => {
            return Err(InvalidInput::new(
                "timeout",
                format!("{t} seconds is too long"),
            ))
        }
        Some(t) => (t * 1000.0).round().max(1.0) as u64,
    };
    let cooldown_ms = match seconds(obj.get("cooldown"), "cooldown")? {
        None => DEFAULT_COOLDOWN_MS,
        Some(c) if c < 0.0 => {
            return Err(InvalidInput::new(
                "cooldown",
                format!("must not be negative, got {c}"),
            ))
        }
        Some(c) if c * 1000.0 > f64::from(i32::MAX) => {
            return Err(InvalidInput::new(
                "cooldown",
                format!("{c} seconds is too long"),
            ))
        }
        Some(c) if c == 0.0 && crate::compat::REFERENCE_PORT => DEFAULT_COOLDOWN_MS,
        Some(c) => (c * 1000.0).round() as i32,
    };
    Ok(WorkerEvent {
        kind,
        group,
        leader,
        timeout_ms,
        cooldown_ms,
    })
}

fn seconds(v: Option<&Value>, field: &str) -> Result<Option<f64>, InvalidInput> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|f| f.is_finite())
            .map(Some)
            .ok_or_else(|| InvalidInput::new(field, format!("{n} is not a number of seconds"))),
        Some(other) => Err(InvalidInput::new(
            field,
            format!("must be a number of seconds, got {}", kind_of(other)),
        )),
    }
}

/// How a value from outside appears in reasons and logs: JSON-quoted, and cut after 64
/// characters so a 60 KB `leader` is not echoed whole into every answer and log line.
pub fn shown(value: &str) -> String {
    const MAX: usize = 64;
    match value.char_indices().nth(MAX) {
        None => serde_json::to_string(value).unwrap_or_default(),
        Some((cut, _)) => format!(
            "{}... ({} bytes)",
            serde_json::to_string(&value[..cut]).unwrap_or_default(),
            value.len()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_event_converts_seconds_to_ms() {
        let e = parse_event(
            r#"{"type":"before_demote","group":2,"leader":"w2a","timeout":30,"cooldown":5}"#,
        )
        .unwrap();
        assert_eq!(e.kind, EventKind::BeforeDemote);
        assert_eq!((e.group, e.timeout_ms, e.cooldown_ms), (2, 30_000, 5_000));
    }

    #[test]
    fn cooldown_zero_is_zero_and_missing_is_default() {
        let zero = parse_event(
            r#"{"type":"after_promote","group":1,"leader":"a","timeout":3,"cooldown":0}"#,
        )
        .unwrap();
        assert_eq!(zero.cooldown_ms, 0);
        let missing =
            parse_event(r#"{"type":"after_promote","group":1,"leader":"a","timeout":3}"#).unwrap();
        assert_eq!(missing.cooldown_ms, DEFAULT_COOLDOWN_MS);
    }

    #[test]
    fn invalid_events_name_the_field() {
        for (body, field) in [
            (
                r#"{"type":"restart","group":1,"leader":"a","timeout":3}"#,
                "type",
            ),
            (r#"{"group":1,"leader":"a","timeout":3}"#, "type"),
            (
                r#"{"type":"after_promote","group":0,"leader":"a","timeout":3}"#,
                "group",
            ),
            (
                r#"{"type":"after_promote","group":"1","leader":"a","timeout":3}"#,
                "group",
            ),
            (
                r#"{"type":"after_promote","group":1.5,"leader":"a","timeout":3}"#,
                "group",
            ),
            (
                r#"{"type":"after_promote","group":1,"leader":"","timeout":3}"#,
                "leader",
            ),
            (
                r#"{"type":"after_promote","group":1,"timeout":3}"#,
                "leader",
            ),
            (
                r#"{"type":"after_promote","group":1,"leader":"a","timeout":0}"#,
                "timeout",
            ),
            (
                r#"{"type":"after_promote","group":1,"leader":"a"}"#,
                "timeout",
            ),
            (
                r#"{"type":"after_promote","group":1,"leader":"a","timeout":3,"cooldown":-1}"#,
                "cooldown",
            ),
            (
                r#"{"type":"after_promote","group":1,"leader":"a","timeout":3,"cooldown":"x"}"#,
                "cooldown",
            ),
            ("[]", "event"),
            ("{", "event"),
        ] {
            assert_eq!(parse_event(body).unwrap_err().field, field, "{body}");
        }
    }

    #[test]
    fn reasons_quote_outside_values_and_cut_long_ones() {
        assert_eq!(shown("w2a"), "\"w2a\"");
        let long = "x".repeat(60_000);
        let s = shown(&long);
        assert!(s.len() < 100 && s.ends_with("(60000 bytes)"), "{s}");
        let e = parse_event(&format!(
            r#"{{"type":"{long}","group":1,"leader":"a","timeout":3}}"#
        ))
        .unwrap_err();
        assert!(e.reason.len() < 200, "{}", e.reason.len());
    }
}
