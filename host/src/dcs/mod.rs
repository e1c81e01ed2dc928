//! DCS snapshots: where the host learns the cluster view it hands the policy.

pub mod file;
pub mod shape;

use citus_ha_policy::dcs::ClusterView;

/// A source of DCS views. A file source polls; watch-based sources (etcd) push changes through
/// the same `changed` future.
#[allow(async_fn_in_trait)]
pub trait DcsSource: Send {
    /// The latest view (errors name what is wrong with the DCS data).
    async fn snapshot(&mut self) -> anyhow::Result<ClusterView>;
    /// Resolves when the view may have changed.
    async fn changed(&mut self);
}
