use citus_ha_policy::dcs::{ClusterView, GroupView, Member};
use citus_ha_policy::packed_view::{groups, Packer};
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
    hb_new();
    if std::env::args().count() > 1 {
        return;
    }
    for n in [1000, 10000] {
        let v = view(n);
        let mut p = Packer::new();
        let iters = 2_000_000 / n as usize;
        for _ in 0..10 {
            p.pack(&v);
        }
        let t = Instant::now();
        let mut len = 0;
        for _ in 0..iters {
            len += p.pack(&v).bytes.len();
        }
        let pack = t.elapsed().as_nanos() as f64 / iters as f64;
        let t = Instant::now();
        for _ in 0..iters {
            p.reset();
            len += p.pack(&v).bytes.len();
        }
        let enc = t.elapsed().as_nanos() as f64 / iters as f64;
        println!("encode only {:.1} us", enc / 1000.0);
        let bytes = p.pack(&v).bytes.to_vec();
        let t = Instant::now();
        for _ in 0..iters {
            len += groups(&bytes).unwrap().len();
        }
        let scan = t.elapsed().as_nanos() as f64 / iters as f64;
        println!(
            "n={n} pack {:.1} us scan {:.1} us bytes {} {}",
            pack / 1000.0,
            scan / 1000.0,
            bytes.len(),
            len % 7
        );
    }
}

#[allow(dead_code)]
pub fn hb_new() {
    use citus_ha_policy::packed_view::PackedView;
    use citus_ha_policy::{CitusConfig, Handler};
    let n = 1000;
    let v = view(n);
    let base = Handler::new(
        CitusConfig {
            group: 0,
            database: "citus".into(),
        },
        "c",
        "postgres://10.0.0.1:5432/postgres",
    );
    let bytes = citus_ha_policy::packed_view::pack_once(&v);
    let (mut tp, mut tr) = (0u128, 0u128);
    let iters = 300;
    for i in 0..iters + 20 {
        let mut h = base.clone();
        let t = Instant::now();
        h.handle_heartbeat_packed(
            1,
            PackedView {
                seq: 1,
                base: None,
                bytes: &bytes,
            },
        )
        .unwrap();
        let e1 = t.elapsed().as_nanos();
        let mut h2 = base.clone();
        let t = Instant::now();
        h2.handle_heartbeat(1, &v);
        let e2 = t.elapsed().as_nanos();
        if i >= 20 {
            tp += e1;
            tr += e2;
        }
        assert_eq!(h.queued_tasks(), n as usize + 1);
    }
    let t = Instant::now();
    for _ in 0..iters {
        let gs = citus_ha_policy::packed_view::groups(&bytes).unwrap();
        let mut ms = Vec::new();
        for g in &gs {
            g.decode(&mut ms).unwrap();
        }
        std::hint::black_box(&ms);
    }
    println!(
        "decode all {:.1} us",
        t.elapsed().as_nanos() as f64 / iters as f64 / 1000.0
    );
    println!(
        "hb_new packed {:.1} us plain {:.1} us",
        tp as f64 / iters as f64 / 1000.0,
        tr as f64 / iters as f64 / 1000.0
    );
}
