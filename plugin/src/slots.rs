//! Replication slots Citus creates for shard moves and splits: the HA manager must not drop them.

use crate::config::CitusConfig;

/// A replication slot as PostgreSQL lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicationSlot {
    pub name: String,
    pub slot_type: String,
    pub database: Option<String>,
    pub plugin: Option<String>,
}

/// True when the slot is Citus's own (on the primary, logical, in the Citus database, named
/// `citus_shard_{move,split}_slot` plus two or three `_N` parts, with the matching plugin).
pub fn keep_replication_slot(
    config: &CitusConfig,
    is_primary: bool,
    slot: &ReplicationSlot,
) -> bool {
    if !is_primary
        || slot.slot_type != "logical"
        || slot.database.as_deref() != Some(config.database.as_str())
    {
        return false;
    }
    let expected_plugin = if let Some(rest) = slot.name.strip_prefix("citus_shard_move_slot") {
        numbered_parts(rest).then_some("pgoutput")
    } else if let Some(rest) = slot.name.strip_prefix("citus_shard_split_slot") {
        numbered_parts(rest).then_some("citus")
    } else {
        None
    };
    expected_plugin.is_some() && expected_plugin == slot.plugin.as_deref()
}

/// `_N_N` or `_N_N_N` with each N a positive integer without a leading zero.
fn numbered_parts(rest: &str) -> bool {
    let Some(rest) = rest.strip_prefix('_') else {
        return false;
    };
    let parts: Vec<&str> = rest.split('_').collect();
    (2..=3).contains(&parts.len())
        && parts
            .iter()
            .all(|p| !p.is_empty() && !p.starts_with('0') && p.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(name: &str, ty: &str, db: &str, plugin: &str) -> ReplicationSlot {
        ReplicationSlot {
            name: name.into(),
            slot_type: ty.into(),
            database: Some(db.into()),
            plugin: Some(plugin.into()),
        }
    }
    fn cfg() -> CitusConfig {
        CitusConfig {
            group: 1,
            database: "citus".into(),
        }
    }

    #[test]
    fn keeps_only_citus_slots_on_primary() {
        let c = cfg();
        assert!(keep_replication_slot(
            &c,
            true,
            &slot("citus_shard_move_slot_1_2", "logical", "citus", "pgoutput")
        ));
        assert!(keep_replication_slot(
            &c,
            true,
            &slot(
                "citus_shard_move_slot_1_2_33",
                "logical",
                "citus",
                "pgoutput"
            )
        ));
        assert!(keep_replication_slot(
            &c,
            true,
            &slot("citus_shard_split_slot_10_2", "logical", "citus", "citus")
        ));
        for (s, primary) in [
            (
                slot("citus_shard_move_slot_1_2", "logical", "citus", "pgoutput"),
                false,
            ),
            (
                slot("citus_shard_move_slot_1_2", "physical", "citus", "pgoutput"),
                true,
            ),
            (
                slot("citus_shard_move_slot_1_2", "logical", "other", "pgoutput"),
                true,
            ),
            (
                slot("citus_shard_move_slot_1_2", "logical", "citus", "citus"),
                true,
            ),
            (
                slot("citus_shard_split_slot_1_2", "logical", "citus", "pgoutput"),
                true,
            ),
            (
                slot("citus_shard_move_slot_1", "logical", "citus", "pgoutput"),
                true,
            ),
            (
                slot(
                    "citus_shard_move_slot_1_2_3_4",
                    "logical",
                    "citus",
                    "pgoutput",
                ),
                true,
            ),
            (
                slot("citus_shard_move_slot_01_2", "logical", "citus", "pgoutput"),
                true,
            ),
            (
                slot("citus_shard_move_slot_0_2", "logical", "citus", "pgoutput"),
                true,
            ),
            (
                slot("citus_shard_move_slot_1__2", "logical", "citus", "pgoutput"),
                true,
            ),
            (
                slot("citus_shard_move_slot_1_2x", "logical", "citus", "pgoutput"),
                true,
            ),
            (
                slot("xcitus_shard_move_slot_1_2", "logical", "citus", "pgoutput"),
                true,
            ),
        ] {
            assert!(!keep_replication_slot(&c, primary, &s), "{s:?}");
        }
    }
}
