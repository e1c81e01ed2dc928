//! The source a config file names: `dcs: {file}` or `etcd3`.

use super::etcd::EtcdSource;
use super::file::FileSource;
use super::{DcsSource, SourceInfo};
use crate::config::DcsSettings;
use citus_ha_policy::dcs::ClusterView;
use std::time::Duration;

pub enum ConfiguredSource {
    File(FileSource),
    Etcd(EtcdSource),
}

impl ConfiguredSource {
    /// Opens the configured source (etcd's follower task starts here; it needs a runtime).
    /// `ttl` bounds how long the source may vouch for a view without hearing from the DCS.
    pub fn start(settings: &DcsSettings, ttl: Duration) -> Result<ConfiguredSource, String> {
        Ok(match settings {
            DcsSettings::File(path) => ConfiguredSource::File(FileSource::new(path)),
            DcsSettings::Etcd3(e) => ConfiguredSource::Etcd(EtcdSource::start(e, ttl)?),
        })
    }
}

impl DcsSource for ConfiguredSource {
    async fn snapshot(&mut self) -> anyhow::Result<ClusterView> {
        match self {
            ConfiguredSource::File(s) => s.snapshot().await,
            ConfiguredSource::Etcd(s) => s.snapshot().await,
        }
    }

    async fn changed(&mut self) {
        match self {
            ConfiguredSource::File(s) => s.changed().await,
            ConfiguredSource::Etcd(s) => s.changed().await,
        }
    }

    fn describe(&self) -> SourceInfo {
        match self {
            ConfiguredSource::File(s) => s.describe(),
            ConfiguredSource::Etcd(s) => s.describe(),
        }
    }
}
