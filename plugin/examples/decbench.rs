use citus_ha_policy::dcs::{ClusterView, GroupView, Member};
use std::time::Instant;
fn member(name: String, host: &str, role: &str) -> Member {
    Member {
        name,
        conn_url: Some(format!("postgres://{host}:5432/postgres")),
        conn_kwargs: None,
        role: Some(role.into()),
        state: Some("running".into()),
        noloadbalance: false,
    }
}
fn view(n: i32) -> ClusterView {
    ClusterView {
        coordinator: GroupView {
            leader: Some("c".into()),
            members: vec![member("c".into(), "10.0.0.1", "primary")],
        },
        workers: (1..=n)
            .map(|g| {
                (
                    g,
                    GroupView {
                        leader: Some(format!("g{g}-m1")),
                        members: (1..=3)
                            .map(|m| {
                                member(
                                    format!("g{g}-m{m}"),
                                    &format!("10.{}.{}.{}", g >> 8, g & 255, m),
                                    if m == 1 { "primary" } else { "replica" },
                                )
                            })
                            .collect(),
                    },
                )
            })
            .collect(),
    }
}
fn main() {
    let v = view(1000);
    let bytes = citus_ha_policy::packed_view::pack_once(&v);
    let iters = 3000;
    let mut ms = Vec::new();
    let t = Instant::now();
    for _ in 0..iters {
        let gs = citus_ha_policy::packed_view::groups(&bytes).unwrap();
        ms.clear();
        for g in &gs {
            g.decode(&mut ms).unwrap();
        }
        std::hint::black_box(&ms);
    }
    println!(
        "decode all {:.1} us",
        t.elapsed().as_nanos() as f64 / iters as f64 / 1000.0
    );
}
