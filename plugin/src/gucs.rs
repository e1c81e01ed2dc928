//! PostgreSQL parameters Citus needs on every node.

use crate::error::InvalidInput;

/// PostgreSQL's ceiling for both max_connections and max_prepared_transactions (MAX_BACKENDS).
pub const MAX_BACKENDS: i64 = 262_143;

/// `value` as PostgreSQL would take it for an integer setting in `range`.
fn integer_setting(
    name: &str,
    value: &str,
    range: std::ops::RangeInclusive<i64>,
) -> Result<i64, InvalidInput> {
    value
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| {
            InvalidInput::new(
                name,
                format!(
                    "{value:?} is outside the valid range for parameter \"{name}\" ({} .. {})",
                    range.start(),
                    range.end()
                ),
            )
        })
}

/// Returns `params` adjusted for Citus: `citus` first in shared_preload_libraries, prepared
/// transactions enabled (Citus uses 2PC), logical WAL (shard moves use logical replication) and
/// the host Citus uses to reach the local server. Order of other parameters is kept; new ones
/// are appended.
pub fn adjust_gucs(
    params: &[(String, String)],
    local_host: Option<&str>,
) -> Result<Vec<(String, String)>, InvalidInput> {
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let libs: Vec<&str> = get("shared_preload_libraries")
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "citus")
        .collect();
    let libs = std::iter::once("citus")
        .chain(libs)
        .collect::<Vec<_>>()
        .join(",");
    let mpt = match get("max_prepared_transactions") {
        None => 0,
        Some(v) => integer_setting("max_prepared_transactions", v, 0..=MAX_BACKENDS)?,
    };
    // As in the reference, max_connections matters only when Citus must derive
    // max_prepared_transactions from it.
    let max_connections = || match get("max_connections") {
        None => Err(InvalidInput::new(
            "max_connections",
            "is required when max_prepared_transactions is not set",
        )),
        Some(v) => integer_setting("max_connections", v, 1..=MAX_BACKENDS),
    };
    let mut out: Vec<(String, String)> = params.to_vec();
    set(&mut out, "shared_preload_libraries", libs);
    if mpt == 0 {
        set(
            &mut out,
            "max_prepared_transactions",
            (max_connections()? * 2).min(MAX_BACKENDS).to_string(),
        );
    }
    set(&mut out, "wal_level", "logical".into());
    set(
        &mut out,
        "citus.local_hostname",
        local_host.unwrap_or("localhost").to_string(),
    );
    Ok(out)
}

fn set(params: &mut Vec<(String, String)>, key: &str, value: String) {
    match params.iter_mut().find(|(k, _)| k == key) {
        Some((_, v)) => *v = value,
        None => params.push((key.to_string(), value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(kv: &[(&str, &str)]) -> Vec<(String, String)> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
    fn get<'a>(ps: &'a [(String, String)], k: &str) -> &'a str {
        &ps.iter().find(|(n, _)| n == k).unwrap().1
    }

    #[test]
    fn citus_first_others_kept_trimmed_deduplicated() {
        let out = adjust_gucs(
            &p(&[
                ("max_connections", "100"),
                (
                    "shared_preload_libraries",
                    " pg_stat_statements, ,citus,auto_explain ,citus",
                ),
                ("max_prepared_transactions", "0"),
            ]),
            Some("10.0.0.5"),
        )
        .unwrap();
        assert_eq!(
            get(&out, "shared_preload_libraries"),
            "citus,pg_stat_statements,auto_explain"
        );
        assert_eq!(get(&out, "max_prepared_transactions"), "200");
        assert_eq!(get(&out, "wal_level"), "logical");
        assert_eq!(get(&out, "citus.local_hostname"), "10.0.0.5");
        assert_eq!(out[0].0, "max_connections", "existing order kept");
    }

    #[test]
    fn explicit_prepared_transactions_kept_and_defaults() {
        let out = adjust_gucs(
            &p(&[
                ("max_connections", "10"),
                ("max_prepared_transactions", "7"),
            ]),
            None,
        )
        .unwrap();
        assert_eq!(get(&out, "max_prepared_transactions"), "7");
        assert_eq!(get(&out, "shared_preload_libraries"), "citus");
        assert_eq!(get(&out, "citus.local_hostname"), "localhost");
        let out = adjust_gucs(&p(&[("max_connections", "10")]), None).unwrap();
        assert_eq!(get(&out, "max_prepared_transactions"), "20");
    }

    #[test]
    fn values_are_range_checked_as_postgresql_does() {
        // Once 9223372036854775807 gave max_prepared_transactions -2 and 4294967295 gave
        // 8589934590: PostgreSQL would refuse to start with either.
        for huge in ["9223372036854775807", "4294967295", "262144", "0", "-1"] {
            let e = adjust_gucs(&p(&[("max_connections", huge)]), None).unwrap_err();
            assert_eq!(e.field, "max_connections", "{huge}");
            assert!(e.reason.contains("262143"), "{}", e.reason);
        }
        let e = adjust_gucs(
            &p(&[
                ("max_connections", "100"),
                ("max_prepared_transactions", "262144"),
            ]),
            None,
        )
        .unwrap_err();
        assert_eq!(e.field, "max_prepared_transactions");
        let out = adjust_gucs(&p(&[("max_connections", "262143")]), None).unwrap();
        assert_eq!(get(&out, "max_prepared_transactions"), "262143", "capped");
        let out = adjust_gucs(&p(&[("max_connections", "131071")]), None).unwrap();
        assert_eq!(get(&out, "max_prepared_transactions"), "262142");
    }

    #[test]
    fn max_connections_is_not_needed_when_prepared_transactions_are_set() {
        let out = adjust_gucs(&p(&[("max_prepared_transactions", "50")]), None).unwrap();
        assert!(out.contains(&("max_prepared_transactions".into(), "50".into())));
        assert!(!out.iter().any(|(k, _)| k == "max_connections"));
        let e = adjust_gucs(&p(&[("max_prepared_transactions", "0")]), None).unwrap_err();
        assert_eq!(e.field, "max_connections");
    }

    #[test]
    fn bad_max_connections_is_an_error() {
        assert_eq!(adjust_gucs(&[], None).unwrap_err().field, "max_connections");
        let e = adjust_gucs(&p(&[("max_connections", "lots")]), None).unwrap_err();
        assert!(e.reason.contains("lots"));
        let e = adjust_gucs(
            &p(&[("max_connections", "5"), ("max_prepared_transactions", "x")]),
            None,
        )
        .unwrap_err();
        assert_eq!(e.field, "max_prepared_transactions");
    }
}
