//! What the service reports: `GET /status`, `GET /policy`, a swap's answer, and the board the
//! owner publishes them on.

use super::Clock;
use crate::dcs::SourceInfo;
use crate::policy::{Functions, LoadedPolicy};
use citus_ha_policy::handler::Metrics;
use serde::Serialize;
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A policy build as `GET /policy` reports it.
#[derive(Clone, Debug, Serialize)]
pub struct PolicyInfo {
    /// What the build says it is (`policy-version`); None if it could not be asked.
    pub version: Option<String>,
    /// The WIT contract version it was built against.
    pub contract: String,
    /// Identifies the exact bytes running, whatever their file name.
    pub sha256: String,
    /// Where it came from: a path, `embedded`, or the reload request.
    pub source: String,
    /// When this host loaded it (UTC, RFC 3339) and the same in ms since the epoch.
    pub loaded_at: String,
    pub loaded_at_unix_ms: u64,
}

/// `GET /policy`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PolicyReport {
    pub running: Option<PolicyInfo>,
    /// The build the last swap (or trap fallback) replaced: what a rollback would go back to.
    pub previous: Option<PolicyInfo>,
    /// Successful swaps and refused candidates since start.
    pub swaps: u64,
    pub refused_swaps: u64,
}

/// The answer to a successful swap.
#[derive(Clone, Debug, Serialize)]
pub struct SwapReport {
    /// The build that ran before and the one that runs now.
    pub from: Option<PolicyInfo>,
    pub to: Option<PolicyInfo>,
}

/// `GET /status` (and `/metrics` in Prometheus text).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Status {
    pub name: String,
    /// Whether this node acts on pg_dist_node now.
    pub leader: bool,
    /// The coordinator group's leader according to the last DCS view.
    pub dcs_leader: Option<String>,
    /// Why the last DCS read failed (the last good view is kept meanwhile).
    pub dcs_error: Option<String>,
    /// Which DCS source this is, and the revision its view reflects.
    pub dcs_source: SourceInfo,
    /// How long ago the source last confirmed the view (None: never).
    pub dcs_view_age_ms: Option<u64>,
    /// True while the view is older than `ttl`: this node does not act as leader then.
    pub dcs_stale: bool,
    /// Successful reads of the DCS view (leader or not).
    pub dcs_reads: u64,
    /// Heartbeats handed to the policy (only while leading).
    pub heartbeats: u64,
    /// Metadata turns run, statements sent to the coordinator and how many failed.
    pub turns: u64,
    pub statements: u64,
    pub failed_statements: u64,
    /// Policy calls that trapped (each replaced the instance).
    pub traps: u64,
    /// before_demote requests still waiting for their pause.
    pub waiting_events: usize,
    /// The service clock (the `now` every policy call gets).
    pub uptime_ms: u64,
    /// How long the metadata turn in progress has been running (None between turns): a
    /// coordinator that does not answer shows here, bounded by the statement timeouts.
    pub turn_running_ms: Option<u64>,
    pub policy: Option<PolicyInfo>,
    /// The policy's own counters (None for contract 0.1.0, which has none).
    pub metrics: Option<Metrics>,
}

/// The version string of a build, from a throw-away instance (kept per hash by the owner).
pub(super) fn version_of(l: &LoadedPolicy) -> String {
    match l.functions().and_then(|mut f| f.policy_version()) {
        Ok(v) => v,
        Err(e) => format!("unknown ({e})"),
    }
}

pub(super) fn info(l: &LoadedPolicy, versions: &HashMap<String, String>) -> PolicyInfo {
    let unix_ms = l
        .loaded_at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    PolicyInfo {
        version: versions.get(&l.hash).cloned(),
        contract: l.contract.clone(),
        sha256: l.hash.clone(),
        source: l.source.clone(),
        loaded_at: rfc3339(l.loaded_at),
        loaded_at_unix_ms: unix_ms,
    }
}

/// UTC RFC 3339 with milliseconds, without a date-time dependency.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// What the owner last published for `GET /status` and `GET /policy`, so that those answer at
/// once even while the owner waits on the coordinator; the live parts (ages, uptime, how long
/// the current turn has run) are computed when read.
pub(crate) struct Board {
    clock: Clock,
    ttl: Duration,
    inner: std::sync::Mutex<Published>,
}

pub(super) struct Published {
    pub(super) status: Status,
    pub(super) policy: PolicyReport,
    pub(super) confirmed_at: Option<tokio::time::Instant>,
    pub(super) turn_started: Option<tokio::time::Instant>,
}

impl Board {
    pub(super) fn new(clock: Clock, ttl: Duration) -> Self {
        Self {
            clock,
            ttl,
            inner: std::sync::Mutex::new(Published {
                status: Status::default(),
                policy: PolicyReport::default(),
                confirmed_at: None,
                turn_started: None,
            }),
        }
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Published> {
        // A panic while publishing leaves plain data behind: still worth reading.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The status as of now.
    pub(crate) fn status(&self) -> Status {
        let p = self.lock();
        let mut s = p.status.clone();
        s.uptime_ms = self.clock.now();
        s.dcs_view_age_ms = p.confirmed_at.map(|t| t.elapsed().as_millis() as u64);
        s.dcs_stale = p.confirmed_at.is_none_or(|t| t.elapsed() > self.ttl);
        s.turn_running_ms = p.turn_started.map(|t| t.elapsed().as_millis() as u64);
        s
    }

    pub(crate) fn policy(&self) -> PolicyReport {
        self.lock().policy.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_709_251_199_123); // 2024-02-29T23:59:59.123Z
        assert_eq!(rfc3339(t), "2024-02-29T23:59:59.123Z");
    }
}
