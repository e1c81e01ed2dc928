//! The `citus` config section: which group this node serves and which database holds Citus.

use crate::error::InvalidInput;
use crate::node::{GroupId, COORDINATOR_GROUP};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A validated `citus` section. Only the validator builds one, so the rest of the policy can
/// trust `group >= 0` and a non-empty database name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CitusConfig {
    pub group: GroupId,
    pub database: String,
}

impl CitusConfig {
    /// The coordinator always lives in group 0; only it maintains pg_dist_node.
    pub fn coordinator_group(&self) -> GroupId {
        COORDINATOR_GROUP
    }
    pub fn is_coordinator(&self) -> bool {
        self.group == COORDINATOR_GROUP
    }
    pub fn is_worker(&self) -> bool {
        !self.is_coordinator()
    }
}

/// Validates the section as the operator wrote it (JSON text of the YAML/JSON value).
pub fn validate_config_json(text: &str) -> Result<CitusConfig, InvalidInput> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| InvalidInput::new("citus", format!("not valid JSON: {e}")))?;
    validate_config(&value)
}

/// Validates the section. `group` may be a number or a decimal string ("0", "12"), never
/// signed, fractional or zero-padded; `database` must be a non-empty string.
pub fn validate_config(value: &Value) -> Result<CitusConfig, InvalidInput> {
    let obj = value.as_object().ok_or_else(|| {
        InvalidInput::new("citus", "must be a mapping with `group` and `database`")
    })?;
    if let Some(unknown) = obj.keys().find(|k| *k != "group" && *k != "database") {
        return Err(InvalidInput::new(
            format!("citus.{unknown}"),
            "unknown setting (expected only `group` and `database`)",
        ));
    }
    let group = match obj.get("group") {
        None | Some(Value::Null) => return Err(InvalidInput::new("citus.group", "is required")),
        Some(v) => parse_group(v).map_err(|reason| InvalidInput::new("citus.group", reason))?,
    };
    let database = match obj.get("database") {
        None | Some(Value::Null) => return Err(InvalidInput::new("citus.database", "is required")),
        Some(Value::String(s)) if s.is_empty() => {
            return Err(InvalidInput::new("citus.database", "must not be empty"))
        }
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(InvalidInput::new(
                "citus.database",
                format!("must be a string, got {}", kind_of(other)),
            ))
        }
    };
    Ok(CitusConfig { group, database })
}

fn parse_group(v: &Value) -> Result<GroupId, String> {
    match v {
        Value::Number(n) => {
            let i = n
                .as_i64()
                .ok_or_else(|| format!("must be a whole number, got {n}"))?;
            if i < 0 {
                return Err(format!("must not be negative, got {i}"));
            }
            GroupId::try_from(i).map_err(|_| format!("{i} is too large for a Citus group id"))
        }
        Value::String(s) => {
            let digits_only = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            if !digits_only {
                return Err(format!("{s:?} is not a non-negative decimal number"));
            }
            if s.len() > 1 && s.starts_with('0') {
                return Err(format!("{s:?} has a leading zero"));
            }
            s.parse::<GroupId>()
                .map_err(|_| format!("{s:?} is too large for a Citus group id"))
        }
        other => Err(format!(
            "must be a number or a decimal string, got {}",
            kind_of(other)
        )),
    }
}

pub(crate) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(v: Value) -> CitusConfig {
        validate_config(&v).unwrap()
    }
    fn err(v: Value) -> InvalidInput {
        validate_config(&v).unwrap_err()
    }

    #[test]
    fn group_as_number_or_decimal_string() {
        assert_eq!(ok(json!({"group": 0, "database": "citus"})).group, 0);
        assert_eq!(ok(json!({"group": "0", "database": "citus"})).group, 0);
        assert_eq!(ok(json!({"group": "12", "database": "citus"})).group, 12);
        let c = ok(json!({"group": 3, "database": "db"}));
        assert!(c.is_worker() && !c.is_coordinator());
        assert_eq!(c.coordinator_group(), 0);
        assert!(ok(json!({"group": 0, "database": "db"})).is_coordinator());
    }

    #[test]
    fn bad_groups_name_the_field_and_reason() {
        for (v, needle) in [
            (json!("01"), "leading zero"),
            (json!("-1"), "non-negative"),
            (json!("+1"), "non-negative"),
            (json!(""), "non-negative"),
            (json!(" 1"), "non-negative"),
            (json!(-1), "negative"),
            (json!(1.5), "whole number"),
            (json!(true), "boolean"),
            (json!(99999999999i64), "too large"),
            (json!("99999999999"), "too large"),
        ] {
            let e = err(json!({"group": v, "database": "citus"}));
            assert_eq!(e.field, "citus.group", "{v}");
            assert!(e.reason.contains(needle), "{v}: {}", e.reason);
        }
        assert_eq!(err(json!({"database": "citus"})).reason, "is required");
    }

    #[test]
    fn bad_database_and_shape() {
        assert_eq!(err(json!({"group": 1})).field, "citus.database");
        assert!(err(json!({"group": 1, "database": ""}))
            .reason
            .contains("empty"));
        assert!(err(json!({"group": 1, "database": 5}))
            .reason
            .contains("string"));
        assert_eq!(err(json!([1])).field, "citus");
        assert_eq!(
            err(json!({"group": 1, "database": "d", "grup": 2})).field,
            "citus.grup"
        );
        assert_eq!(validate_config_json("{").unwrap_err().field, "citus");
    }
}
