//! The CLUSTER shape (docs/scenario-format.md): how the reference HA manager stores members.
//! Parsing is strict about types and names the path of anything wrong.

use citus_ha_policy::dcs::{ClusterView, ConnKwargs, GroupView, Member};
use serde_json::Value;

/// Parses a CLUSTER value: `{"leader", "members", "workers": {"<group>": {"leader", "members"}}}`.
pub fn parse_cluster(v: &Value) -> Result<ClusterView, String> {
    let obj = v.as_object().ok_or("cluster: must be an object")?;
    let coordinator = parse_group(v, "cluster")?;
    let mut workers = Vec::new();
    match obj.get("workers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(w)) => {
            for (k, g) in w {
                let id: i32 = k
                    .parse::<i32>()
                    .ok()
                    .filter(|id: &i32| *id >= 1 && k == &id.to_string())
                    .ok_or_else(|| {
                        format!("cluster.workers: {k:?} is not a worker group id (1 or more)")
                    })?;
                workers.push((id, parse_group(g, &format!("cluster.workers.{k}"))?));
            }
        }
        Some(_) => return Err("cluster.workers: must be an object keyed by group id".into()),
    }
    workers.sort_by_key(|(g, _)| *g);
    Ok(ClusterView {
        coordinator,
        workers,
    })
}

fn parse_group(v: &Value, path: &str) -> Result<GroupView, String> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("{path}: must be an object"))?;
    let leader = opt_str(obj.get("leader"), &format!("{path}.leader"))?;
    let members = match obj.get("members") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(ms)) => ms
            .iter()
            .enumerate()
            .map(|(i, m)| parse_member(m, &format!("{path}.members[{i}]")))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(format!("{path}.members: must be a list")),
    };
    Ok(GroupView { leader, members })
}

/// One member object (`name` included), as the file shape and etcd's `members/<name>` keys
/// hold it; errors name `path`.
pub fn parse_member(v: &Value, path: &str) -> Result<Member, String> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("{path}: must be an object"))?;
    let name = opt_str(obj.get("name"), &format!("{path}.name"))?
        .ok_or_else(|| format!("{path}.name: is required"))?;
    let conn_kwargs = match obj.get("conn_kwargs") {
        None | Some(Value::Null) => None,
        Some(Value::Object(kw)) => Some(ConnKwargs {
            host: opt_str(kw.get("host"), &format!("{path}.conn_kwargs.host"))?,
            port: match kw.get("port") {
                None | Some(Value::Null) => None,
                Some(Value::Number(n)) => Some(n.to_string()),
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => return Err(format!("{path}.conn_kwargs.port: must be a number")),
            },
        }),
        Some(_) => return Err(format!("{path}.conn_kwargs: must be an object")),
    };
    let noloadbalance = match obj.get("tags") {
        None | Some(Value::Null) => false,
        Some(Value::Object(t)) => match t.get("noloadbalance") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(format!("{path}.tags.noloadbalance: must be true or false")),
        },
        Some(_) => return Err(format!("{path}.tags: must be an object")),
    };
    Ok(Member {
        name,
        conn_url: opt_str(obj.get("conn_url"), &format!("{path}.conn_url"))?,
        conn_kwargs,
        role: opt_str(obj.get("role"), &format!("{path}.role"))?,
        state: opt_str(obj.get("state"), &format!("{path}.state"))?,
        noloadbalance,
    })
}

fn opt_str(v: Option<&Value>, path: &str) -> Result<Option<String>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("{path}: must be a string")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_the_documented_shape() {
        let v = json!({"leader": "coord1",
            "members": [{"name": "coord1", "conn_url": "postgres://10.0.0.1:5432/postgres", "role": "primary",
                         "state": "running", "tags": {"noloadbalance": false}}],
            "workers": {"10": {"leader": "w", "members": [{"name": "w", "conn_kwargs": {"host": "h", "port": 5433}}]},
                        "2": {"leader": null, "members": []}}});
        let c = parse_cluster(&v).unwrap();
        assert_eq!(c.coordinator.leader.as_deref(), Some("coord1"));
        assert_eq!(
            c.workers.iter().map(|(g, _)| *g).collect::<Vec<_>>(),
            vec![2, 10]
        );
        let kw = c.workers[1].1.members[0].conn_kwargs.as_ref().unwrap();
        assert_eq!(kw.port.as_deref(), Some("5433"));
    }

    #[test]
    fn errors_name_the_path() {
        let e = parse_cluster(&json!({"members": [{"name": 5}]})).unwrap_err();
        assert_eq!(e, "cluster.members[0].name: must be a string");
        let e = parse_cluster(&json!({"workers": {"x": {}}})).unwrap_err();
        assert!(e.contains("\"x\""));
        let e = parse_cluster(&json!({"workers": {"0": {}}})).unwrap_err();
        assert!(e.contains("worker group id"));
        let e = parse_cluster(&json!({"workers": {"1": {"members": [{"name": "a", "tags": {"noloadbalance": "yes"}}]}}}))
            .unwrap_err();
        assert!(e.contains("noloadbalance"));
    }
}
