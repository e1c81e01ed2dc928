//! Patroni's key layout for Citus in etcd, and the CLUSTER view built from it.
//!
//! Patroni (`dcs/__init__.py`) keeps each Citus group as its own cluster under
//! `/<namespace>/<scope>/<group>/` (slashes collapsed): `leader` holds the leader's name,
//! `members/<name>` a JSON object (`conn_url`, `api_url`, `role`, `state`, `tags`, ...), and
//! `config`, `status`, `history`, `failover`, `sync`, ... hold what this host does not need.
//! Group 0 is the coordinator. A key is parsed once, when it arrives, so that rebuilding the
//! view after a change costs a walk over parsed entries rather than a JSON parse per member.

use super::client::Fingerprint;
use crate::dcs::shape::parse_member;
use citus_ha_policy::dcs::{ClusterView, GroupView, Member};
use std::collections::BTreeMap;

/// `/<namespace>/<scope>/` with runs of slashes collapsed, as Patroni builds `_base_path`.
pub fn scope_prefix(namespace: &str, scope: &str) -> String {
    let joined = format!("/{namespace}/{scope}/");
    let mut out = String::with_capacity(joined.len());
    for c in joined.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    out
}

/// What one key under the prefix means to the view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// `<group>/leader`: the leader's name (None when the value is not UTF-8 text).
    Leader(i32, Option<String>),
    /// `<group>/members/<name>`.
    Member(i32, Member),
    /// A member key whose value cannot be used: skipped, and why.
    Malformed(String),
    /// Every other key (`config`, `status`, `history`, a non-Citus cluster's keys, ...).
    Ignored,
}

/// Parses the key (relative to the scope prefix) and its value.
pub fn parse_entry(relative: &str, value: &[u8]) -> Entry {
    let mut parts = relative.splitn(3, '/');
    let (Some(group), Some(kind)) = (parts.next(), parts.next()) else {
        return Entry::Ignored;
    };
    let Some(group) = group
        .parse::<i32>()
        .ok()
        .filter(|g| *g >= 0 && group == g.to_string())
    else {
        return Entry::Ignored;
    };
    match (kind, parts.next()) {
        ("leader", None) => Entry::Leader(group, String::from_utf8(value.to_vec()).ok()),
        ("members", Some(name)) if !name.is_empty() && !name.contains('/') => {
            match member(name, value) {
                Ok(m) => Entry::Member(group, m),
                Err(why) => Entry::Malformed(why),
            }
        }
        _ => Entry::Ignored,
    }
}

/// A member value: a JSON object; its name is the key's last part, as Patroni's
/// `Member.from_node` takes it.
fn member(name: &str, value: &[u8]) -> Result<Member, String> {
    let mut v: serde_json::Value =
        serde_json::from_slice(value).map_err(|e| format!("not JSON: {e}"))?;
    let obj = v
        .as_object_mut()
        .ok_or_else(|| "must be a JSON object".to_string())?;
    obj.insert("name".into(), serde_json::Value::String(name.into()));
    // The path names the field inside the value; the caller prefixes the key.
    parse_member(&v, "value").map_err(|e| e.to_string())
}

/// The keys under one scope prefix, parsed, and the view they make.
#[derive(Clone, Debug, Default)]
pub struct Keyspace {
    /// Full key -> (mod_revision, entry).
    entries: BTreeMap<String, (i64, Entry)>,
}

impl Keyspace {
    /// Sets a key (a range result or a PUT event). Returns the problem when the key is a
    /// malformed member, worded with the key.
    pub fn put(
        &mut self,
        prefix: &str,
        key: String,
        mod_revision: i64,
        value: &[u8],
    ) -> Option<String> {
        let relative = key.strip_prefix(prefix)?;
        let entry = parse_entry(relative, value);
        let problem = match &entry {
            Entry::Malformed(why) => Some(format!("{key}: {why}; this member is skipped")),
            _ => None,
        };
        self.entries.insert(key, (mod_revision, entry));
        problem
    }

    pub fn delete(&mut self, key: &str) {
        self.entries.remove(key);
    }

    /// What etcd's fingerprint of the prefix must equal while this view is current.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint {
            count: self.entries.len() as i64,
            max_mod_revision: self.entries.values().map(|(r, _)| *r).max().unwrap_or(0),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The CLUSTER view: group 0 as the coordinator, every other group a worker; members in
    /// name order, malformed ones left out.
    pub fn view(&self) -> ClusterView {
        let mut groups: BTreeMap<i32, GroupView> = BTreeMap::new();
        for (_, entry) in self.entries.values() {
            match entry {
                Entry::Leader(g, name) => groups.entry(*g).or_default().leader = name.clone(),
                Entry::Member(g, m) => groups.entry(*g).or_default().members.push(m.clone()),
                Entry::Malformed(_) | Entry::Ignored => {}
            }
        }
        let coordinator = groups.remove(&0).unwrap_or_default();
        ClusterView {
            coordinator,
            workers: groups.into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/service/citus/";

    fn member_json(host: &str, role: &str) -> Vec<u8> {
        format!(
            r#"{{"conn_url":"postgres://{host}:5432/postgres","api_url":"http://{host}:8008/patroni","state":"running","role":"{role}","version":"4.1.5","xlog_location":123,"timeline":1,"tags":{{"noloadbalance":false}}}}"#
        )
        .into_bytes()
    }

    #[test]
    fn prefix_collapses_slashes_as_patroni() {
        assert_eq!(scope_prefix("/service/", "citus"), "/service/citus/");
        assert_eq!(scope_prefix("service", "citus"), "/service/citus/");
        assert_eq!(scope_prefix("//a//b/", "c"), "/a/b/c/");
    }

    #[test]
    fn builds_the_view_the_file_source_builds() {
        let mut ks = Keyspace::default();
        let put = |ks: &mut Keyspace, k: &str, v: &[u8]| ks.put(P, format!("{P}{k}"), 1, v);
        assert_eq!(put(&mut ks, "0/leader", b"coord1"), None);
        put(
            &mut ks,
            "0/members/coord1",
            &member_json("10.0.0.1", "primary"),
        );
        put(&mut ks, "0/config", br#"{"ttl":30}"#);
        put(&mut ks, "0/status", br#"{"optime":1}"#);
        put(&mut ks, "1/leader", b"w1b");
        put(
            &mut ks,
            "1/members/w1b",
            &member_json("10.0.1.2", "primary"),
        );
        put(
            &mut ks,
            "1/members/w1a",
            &member_json("10.0.1.1", "replica"),
        );
        put(&mut ks, "10/leader", b"w10");
        put(&mut ks, "leader", b"not-citus");
        put(&mut ks, "01/leader", b"not-a-group");
        let v = ks.view();
        let file = crate::dcs::file::parse_cluster_text(
            r#"{"leader":"coord1","members":[{"name":"coord1","conn_url":"postgres://10.0.0.1:5432/postgres","role":"primary","state":"running"}],
                "workers":{"1":{"leader":"w1b","members":[
                    {"name":"w1a","conn_url":"postgres://10.0.1.1:5432/postgres","role":"replica","state":"running"},
                    {"name":"w1b","conn_url":"postgres://10.0.1.2:5432/postgres","role":"primary","state":"running"}]},
                 "10":{"leader":"w10"}}}"#,
            "test",
        )
        .unwrap();
        assert_eq!(v, file);
    }

    #[test]
    fn fingerprint_counts_keys_and_the_newest_change() {
        let mut ks = Keyspace::default();
        let fp = |count, max_mod_revision| Fingerprint {
            count,
            max_mod_revision,
        };
        assert_eq!(ks.fingerprint(), fp(0, 0));
        ks.put(P, format!("{P}1/leader"), 4, b"a");
        ks.put(P, format!("{P}0/leader"), 7, b"b");
        ks.put(P, "/elsewhere/1/leader".into(), 9, b"c");
        assert_eq!(ks.fingerprint(), fp(2, 7));
        ks.delete(&format!("{P}0/leader"));
        assert_eq!(ks.fingerprint(), fp(1, 4));
    }

    #[test]
    fn malformed_members_are_named_and_skipped() {
        let mut ks = Keyspace::default();
        ks.put(
            P,
            format!("{P}1/members/ok"),
            1,
            &member_json("10.0.1.1", "primary"),
        );
        let p = ks
            .put(P, format!("{P}1/members/bad"), 2, b"{not json")
            .unwrap();
        assert!(
            p.starts_with("/service/citus/1/members/bad: not JSON"),
            "{p}"
        );
        let p = ks.put(P, format!("{P}1/members/arr"), 3, b"[1]").unwrap();
        assert!(p.contains("must be a JSON object"), "{p}");
        let p = ks
            .put(P, format!("{P}1/members/typed"), 4, br#"{"conn_url":5}"#)
            .unwrap();
        assert!(
            p.contains("/1/members/typed: value.conn_url: must be a string"),
            "{p}"
        );
        let v = ks.view();
        assert_eq!(v.workers.len(), 1);
        let names: Vec<_> = v.workers[0]
            .1
            .members
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(names, ["ok"]);
        // Fixing the key brings the member back.
        assert_eq!(
            ks.put(
                P,
                format!("{P}1/members/bad"),
                5,
                &member_json("10.0.1.2", "replica")
            ),
            None
        );
        assert_eq!(ks.view().workers[0].1.members.len(), 2);
        ks.delete(&format!("{P}1/members/bad"));
        assert_eq!(ks.view().workers[0].1.members.len(), 1);
    }
}
