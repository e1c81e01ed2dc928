//! DCS snapshots: where the host learns the cluster view it hands the policy.
//!
//! Freshness is the source's promise, leadership the owner's rule: `snapshot` succeeds only
//! while the source can vouch that the view is the DCS as it is now (a file that reads, a
//! watch that is connected and confirmed), and the run service stops acting as leader once
//! it has had no successful snapshot for longer than `ttl`, exactly as on losing leadership.

pub mod configured;
pub mod etcd;
pub mod file;
pub mod fixed;
pub mod shape;

use citus_ha_policy::dcs::ClusterView;
use serde::Serialize;

/// What `/status` reports about a source.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SourceInfo {
    /// `file`, `etcd3`, `static`.
    pub kind: &'static str,
    /// Where it reads from (a path, an endpoint list); no credentials.
    pub location: String,
    /// The DCS revision the current view reflects, where the source has one (etcd).
    pub revision: Option<i64>,
}

/// A source of DCS views. A file source polls; watch-based sources (etcd) push changes through
/// the same `changed` future.
#[allow(async_fn_in_trait)]
pub trait DcsSource: Send {
    /// The latest view (errors name what is wrong with the DCS data). Must fail, rather than
    /// answer an old view, when the source cannot confirm the view is current.
    async fn snapshot(&mut self) -> anyhow::Result<ClusterView>;
    /// Resolves when the view may have changed.
    async fn changed(&mut self);
    /// What this source is, for `/status`.
    fn describe(&self) -> SourceInfo;
}
