//! A DCS snapshot kept in a JSON or YAML file (CLUSTER shape), re-read when it changes.

use super::shape::parse_cluster;
use super::{DcsSource, SourceInfo};
use citus_ha_policy::dcs::ClusterView;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

pub struct FileSource {
    path: PathBuf,
    seen: Option<(SystemTime, u64)>,
    poll: Duration,
    /// When `changed` looks next. Kept here, not in the future, so that a caller who drops
    /// and re-creates the future (a `select!` loop with busier branches) still gets a look
    /// every `poll` instead of a timer that restarts forever.
    next_look: Option<tokio::time::Instant>,
}

impl FileSource {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            seen: None,
            poll: Duration::from_millis(250),
            next_look: None,
        }
    }

    fn stamp(&self) -> Option<(SystemTime, u64)> {
        let m = std::fs::metadata(&self.path).ok()?;
        Some((m.modified().ok()?, m.len()))
    }
}

/// Parses a CLUSTER document given as JSON or YAML text.
pub fn parse_cluster_text(text: &str, origin: &str) -> anyhow::Result<ClusterView> {
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => serde_yaml::from_str(text)
            .map_err(|e| anyhow::anyhow!("{origin}: neither JSON nor YAML: {e}"))?,
    };
    parse_cluster(&value).map_err(|e| anyhow::anyhow!("{origin}: {e}"))
}

impl DcsSource for FileSource {
    async fn snapshot(&mut self) -> anyhow::Result<ClusterView> {
        self.seen = self.stamp();
        let text = tokio::fs::read_to_string(&self.path)
            .await
            .map_err(|e| anyhow::anyhow!("DCS file {}: {e}", self.path.display()))?;
        parse_cluster_text(&text, &self.path.display().to_string())
    }

    async fn changed(&mut self) {
        loop {
            let at = *self
                .next_look
                .get_or_insert_with(|| tokio::time::Instant::now() + self.poll);
            tokio::time::sleep_until(at).await;
            self.next_look = Some(tokio::time::Instant::now() + self.poll);
            if self.stamp() != self.seen {
                return;
            }
        }
    }

    fn describe(&self) -> SourceInfo {
        SourceInfo {
            kind: "file",
            location: self.path.display().to_string(),
            revision: None,
        }
    }
}
