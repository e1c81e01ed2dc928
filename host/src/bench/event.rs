//! `event_to_statement`: a worker's `before_demote` over HTTP on loopback to the `-demoted`
//! update arriving at a real PostgreSQL.

use super::Line;

pub(super) async fn event_to_statement(_db: &str, _quick: bool) -> anyhow::Result<Line> {
    anyhow::bail!("event_to_statement is not implemented yet")
}
