//! A DCS view that never changes: the bundled example `citus-ha run` serves without a config.

use super::{DcsSource, SourceInfo};
use citus_ha_policy::dcs::ClusterView;

/// A fixed DCS view (the bundled example): never changes.
pub struct StaticSource(pub ClusterView);

impl DcsSource for StaticSource {
    async fn snapshot(&mut self) -> anyhow::Result<ClusterView> {
        Ok(self.0.clone())
    }
    async fn changed(&mut self) {
        std::future::pending::<()>().await
    }
    fn describe(&self) -> SourceInfo {
        SourceInfo {
            kind: "static",
            location: "the bundled example DCS".into(),
            revision: None,
        }
    }
}
