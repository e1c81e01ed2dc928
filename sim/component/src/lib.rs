//! The simulator behind the `citus-ha:sim` contract: statements in and results out as the
//! policy's JSON Lines, rows as JSON. The logic is plain Rust (tested natively); the WIT
//! bindings exist only for wasm32.

use citus_ha_policy::node::{NodeRole, PgDistRow};
use citus_ha_policy::{sim_exec, wire};
use citus_sim::Simulator;

/// One coordinator's table and its metadata session.
#[derive(Default)]
pub struct Coordinator {
    sim: Simulator,
}

type RowTuple = (i32, i32, String, i32, String);

fn role(name: &str) -> Result<NodeRole, String> {
    match name {
        "primary" => Ok(NodeRole::Primary),
        "secondary" => Ok(NodeRole::Secondary),
        "unavailable" => Ok(NodeRole::Unavailable),
        other => Err(format!("unknown noderole {other:?}")),
    }
}

impl Coordinator {
    pub fn set_rows(&mut self, json: &str) -> Result<(), String> {
        let rows: Vec<RowTuple> = serde_json::from_str(json).map_err(|e| format!("rows: {e}"))?;
        let rows = rows
            .into_iter()
            .map(|(nodeid, groupid, nodename, nodeport, r)| {
                Ok(sim_exec::sim_row(&PgDistRow {
                    nodeid,
                    groupid,
                    nodename,
                    nodeport,
                    noderole: role(&r)?,
                }))
            })
            .collect::<Result<Vec<_>, String>>()?;
        self.sim.replace_rows(rows);
        Ok(())
    }

    pub fn rows(&self) -> String {
        let mut rows: Vec<RowTuple> = self
            .sim
            .rows()
            .iter()
            .map(|r| {
                let r = sim_exec::policy_row(r);
                let role = r.noderole.as_str().to_string();
                (r.nodeid, r.groupid, r.nodename, r.nodeport, role)
            })
            .collect();
        rows.sort_by_key(|r| r.0);
        serde_json::to_string(&rows).expect("rows serialise")
    }

    pub fn execute(&mut self, statements: &str) -> Result<String, String> {
        let stmts = wire::read_statements(statements).map_err(|e| e.to_string())?;
        let mut results = Vec::with_capacity(stmts.len());
        for s in &stmts {
            let r = sim_exec::execute(&mut self.sim, s);
            let ends = r.ends_batch();
            results.push(r);
            if ends {
                break;
            }
        }
        let mut out = String::with_capacity(results.len() * 20);
        wire::write_results(&results, &mut out);
        Ok(out)
    }

    pub fn lose_session(&mut self) {
        self.sim.lose_session();
    }
}

#[cfg(target_arch = "wasm32")]
mod bindings {
    wit_bindgen::generate!({ path: "../../wit/sim/since_v0.1.0", world: "sim-component" });

    use exports::citus_ha::sim::simulator::{Guest, GuestCoordinator};
    use std::cell::RefCell;

    struct Component;
    export!(Component);

    /// Resources take `&self`: the simulator behind a RefCell.
    pub struct Resource(RefCell<super::Coordinator>);

    impl Guest for Component {
        type Coordinator = Resource;
    }

    impl GuestCoordinator for Resource {
        fn new() -> Self {
            Resource(RefCell::new(super::Coordinator::default()))
        }
        fn set_rows(&self, rows: String) -> Result<(), String> {
            self.0.borrow_mut().set_rows(&rows)
        }
        fn rows(&self) -> String {
            self.0.borrow().rows()
        }
        fn execute(&self, statements: String) -> Result<String, String> {
            self.0.borrow_mut().execute(&statements)
        }
        fn lose_session(&self) {
            self.0.borrow_mut().lose_session()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_runs_until_the_first_failure() {
        let mut c = Coordinator::default();
        c.set_rows(r#"[[1,0,"c",5432,"primary"],[2,1,"w1",5432,"primary"]]"#)
            .unwrap();
        let out = c
            .execute(concat!(
                "{\"op\":\"begin\"}\n",
                "{\"op\":\"update_node\",\"nodeid\":9,\"host\":\"x\",\"port\":1,\"force\":true,\"cooldown_ms\":1}\n",
                "{\"op\":\"commit\"}\n",
            ))
            .unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert_eq!(lines[0], r#"{"result":"done"}"#);
        assert!(
            lines[1].starts_with(r#"{"result":"failed","message":"#),
            "{out}"
        );
        let out = c
            .execute("{\"op\":\"add_node\",\"host\":\"w1b\",\"port\":5432,\"groupid\":1,\"role\":\"secondary\"}\n")
            .unwrap();
        assert_eq!(out, "{\"result\":\"added\",\"nodeid\":3}\n");
        assert_eq!(
            c.rows(),
            r#"[[1,0,"c",5432,"primary"],[2,1,"w1",5432,"primary"],[3,1,"w1b",5432,"secondary"]]"#
        );
        assert!(c
            .execute("{\"op\":\"nope\"}")
            .unwrap_err()
            .contains("line 1"));
        assert!(c.set_rows("[[1]]").unwrap_err().starts_with("rows:"));
    }
}
