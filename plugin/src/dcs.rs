//! The DCS view the HA manager hands the policy: this coordinator's group and the worker groups.

use crate::conninfo::{parse_conn_kwargs, parse_conn_url, ConnError};
use crate::node::{Address, GroupId};
use serde::{Deserialize, Serialize};

/// One member as the HA manager publishes it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    pub conn_url: Option<String>,
    pub conn_kwargs: Option<ConnKwargs>,
    pub role: Option<String>,
    pub state: Option<String>,
    pub noloadbalance: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnKwargs {
    pub host: Option<String>,
    pub port: Option<String>,
}

impl Member {
    /// The member as borrowed fields, the form every decision reads.
    pub fn as_ref(&self) -> MemberRef<'_> {
        MemberRef {
            name: &self.name,
            conn_url: self.conn_url.as_deref(),
            conn_kwargs: self
                .conn_kwargs
                .as_ref()
                .map(|k| (k.host.as_deref(), k.port.as_deref())),
            role: self.role.as_deref(),
            state: self.state.as_deref(),
            noloadbalance: self.noloadbalance,
        }
    }
    /// A member can be registered only if it says how to reach it.
    pub fn has_conn(&self) -> bool {
        self.as_ref().has_conn()
    }
    pub fn is_running(&self) -> bool {
        self.as_ref().is_running()
    }
    pub fn is_primary_role(&self) -> bool {
        self.as_ref().is_primary_role()
    }
    pub fn is_eligible_secondary(&self, leader_name: &str) -> bool {
        self.as_ref().is_eligible_secondary(leader_name)
    }
    pub fn address(&self) -> Result<Address, ConnError> {
        self.as_ref().address()
    }
}

/// One member borrowed from wherever the view lives (an owned [`Member`] or a packed view's
/// bytes), so the heartbeat reads a packed view in place without building owned strings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemberRef<'a> {
    pub name: &'a str,
    pub conn_url: Option<&'a str>,
    /// `conn_kwargs` as (host, port), when the member publishes them instead of a URL.
    pub conn_kwargs: Option<(Option<&'a str>, Option<&'a str>)>,
    pub role: Option<&'a str>,
    pub state: Option<&'a str>,
    pub noloadbalance: bool,
}

impl MemberRef<'_> {
    /// A member can be registered only if it says how to reach it.
    pub fn has_conn(&self) -> bool {
        self.conn_url.is_some() || self.conn_kwargs.is_some()
    }
    pub fn is_running(&self) -> bool {
        self.state == Some("running")
    }
    /// The DCS says `primary` (or the older `master`) for a group's writable node.
    pub fn is_primary_role(&self) -> bool {
        matches!(self.role, Some("primary") | Some("master"))
    }
    /// A read replica Citus should know about: running, reachable, not the group's leader and
    /// not tagged noloadbalance.
    pub fn is_eligible_secondary(&self, leader_name: &str) -> bool {
        self.name != leader_name && !self.noloadbalance && self.is_running() && self.has_conn()
    }
    pub fn address(&self) -> Result<Address, ConnError> {
        match (self.conn_url, self.conn_kwargs) {
            (Some(url), _) => parse_conn_url(url),
            (None, Some((host, port))) => parse_conn_kwargs(host, port),
            (None, None) => Err(ConnError::NoHost(format!("member {}", self.name))),
        }
    }
}

/// The leader of a group given as borrowed members: the member the leader key names, if any.
pub fn leader_of<'m, 'a>(
    leader: Option<&str>,
    members: &'m [MemberRef<'a>],
) -> Option<&'m MemberRef<'a>> {
    let name = leader?;
    members.iter().find(|m| m.name == name)
}

/// One group of the DCS: its leader's name and its members.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupView {
    pub leader: Option<String>,
    pub members: Vec<Member>,
}

impl GroupView {
    /// The leader's member entry, if the leader key names a member that exists.
    pub fn leader_member(&self) -> Option<&Member> {
        let name = self.leader.as_deref()?;
        self.members.iter().find(|m| m.name == name)
    }
}

/// The whole view: the coordinator's own group and the worker groups by id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    pub coordinator: GroupView,
    pub workers: Vec<(GroupId, GroupView)>,
}

impl ClusterView {
    pub fn worker(&self, group: GroupId) -> Option<&GroupView> {
        self.workers
            .iter()
            .find(|(g, _)| *g == group)
            .map(|(_, v)| v)
    }
}
