//! The etcd3 DCS source on its own against a real etcd: the view it builds, how fast it sees a
//! change, that it refuses to vouch for a view while etcd is silent, and etcd's auth.

#[path = "run_support/etcd.rs"]
mod etcd;

use citus_ha::dcs::etcd::{EtcdSettings, EtcdSource};
use citus_ha::dcs::DcsSource;
use etcd::{Etcd, SCOPE};
use std::time::{Duration, Instant};

fn settings(etcd: &Etcd) -> EtcdSettings {
    EtcdSettings {
        hosts: vec![etcd.endpoint()],
        https: false,
        auth: None,
        cacert: None,
        client_cert: None,
        namespace: "/service/".into(),
        scope: SCOPE.into(),
    }
}

/// Polls `snapshot` until it succeeds (at most 10 s).
async fn first_view(source: &mut EtcdSource) -> citus_ha_policy::dcs::ClusterView {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match source.snapshot().await {
            Ok(v) => return v,
            Err(e) => assert!(Instant::now() < deadline, "no view: {e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn write_group1(etcd: &Etcd) {
    etcd.put_leader(0, "coord1").await;
    etcd.put_member(0, "coord1", "10.0.0.1", "primary").await;
    etcd.put_member(1, "w1a", "10.0.1.1", "primary").await;
    etcd.put_member(1, "w1b", "10.0.1.2", "replica").await;
    etcd.put_leader(1, "w1a").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_then_follows_the_watch() {
    let etcd = Etcd::start().await;
    write_group1(&etcd).await;
    // Another scope's keys are none of this formation's business.
    etcd.put("/service/other/1/leader", "x").await;
    let mut source = EtcdSource::start(&settings(&etcd), Duration::from_secs(4)).unwrap();
    let v = first_view(&mut source).await;
    assert_eq!(v.coordinator.leader.as_deref(), Some("coord1"));
    assert_eq!(v.workers.len(), 1);
    assert_eq!(v.workers[0].1.leader.as_deref(), Some("w1a"));
    assert_eq!(v.workers[0].1.members.len(), 2);
    let info = source.describe();
    assert_eq!(info.kind, "etcd3");
    assert!(info.location.contains("/service/citus/"), "{info:?}");
    assert_eq!(info.revision, Some(etcd.revision().await));

    // A change wakes `changed` at once and the next snapshot has it.
    let mut worst = Duration::ZERO;
    for (i, leader) in ["w1b", "w1a", "w1b"].iter().enumerate() {
        let written = Instant::now();
        let rev = etcd.put_leader(1, leader).await;
        tokio::time::timeout(Duration::from_secs(2), source.changed())
            .await
            .unwrap_or_else(|_| panic!("change {i} not noticed within 2 s"));
        let v = source.snapshot().await.unwrap();
        worst = worst.max(written.elapsed());
        assert_eq!(v.workers[0].1.leader.as_deref(), Some(*leader));
        assert_eq!(source.describe().revision, Some(rev));
    }
    eprintln!("slowest change seen {worst:?} after the write");
    assert!(worst < Duration::from_millis(200), "{worst:?}");
    // Read your writes: a snapshot taken right after a write (as when a worker writes its
    // leader key and then sends after_promote) has it, without waiting for `changed`.
    for i in 0..20 {
        let leader = format!("w{i}");
        etcd.put_leader(1, &leader).await;
        let v = source.snapshot().await.unwrap();
        assert_eq!(v.workers[0].1.leader.as_deref(), Some(leader.as_str()));
    }
    // Deleting a group's keys removes it.
    etcd.delete_member(1, "w1a").await;
    tokio::time::timeout(Duration::from_secs(2), source.changed())
        .await
        .unwrap();
    let v = source.snapshot().await.unwrap();
    assert_eq!(v.workers[0].1.members.len(), 1);
    // Nothing changes: `changed` stays quiet (confirmations do not wake the owner).
    assert!(
        tokio::time::timeout(Duration::from_millis(2500), source.changed())
            .await
            .is_err(),
        "changed() fired without a change"
    );
    assert!(
        source.snapshot().await.is_ok(),
        "still vouched by confirmations"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_to_vouch_while_etcd_is_silent() {
    let etcd = Etcd::start().await;
    write_group1(&etcd).await;
    let ttl = Duration::from_secs(2);
    let mut source = EtcdSource::start(&settings(&etcd), ttl).unwrap();
    first_view(&mut source).await;
    etcd.signal("STOP");
    let stopped = Instant::now();
    let err = loop {
        match source.snapshot().await {
            Err(e) => break e,
            Ok(_) => assert!(
                stopped.elapsed() < ttl,
                "still vouched for after ttl with etcd stopped"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let noticed = stopped.elapsed();
    eprintln!("snapshot failed {noticed:?} after etcd stopped (ttl {ttl:?}): {err:#}");
    // Within a third of ttl after the last proof (confirmations every ttl/6): half is the bound.
    assert!(noticed < ttl / 2, "{noticed:?}");
    assert!(format!("{err:#}").contains("etcd3"), "{err:#}");
    // It keeps failing, not flapping, while etcd is silent.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(source.snapshot().await.is_err());
    }
    etcd.signal("CONT");
    first_view(&mut source).await;
    etcd.put_leader(1, "w1b").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(v) = source.snapshot().await {
            if v.workers[0].1.leader.as_deref() == Some("w1b") {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the change after the pause was lost"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moves_past_an_endpoint_that_does_not_answer() {
    let etcd = Etcd::start().await;
    write_group1(&etcd).await;
    // Nothing listens on the first endpoint (a port bound and released).
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut s = settings(&etcd);
    s.hosts.insert(0, dead.to_string());
    let mut source = EtcdSource::start(&s, Duration::from_secs(2)).unwrap();
    let v = first_view(&mut source).await;
    assert_eq!(v.workers[0].1.leader.as_deref(), Some("w1a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_in_with_etcd_authentication() {
    let mut etcd = Etcd::start().await;
    etcd.enable_auth("s3cret").await;
    write_group1(&etcd).await;
    let mut s = settings(&etcd);
    s.auth = Some(("root".into(), "s3cret".into()));
    let mut source = EtcdSource::start(&s, Duration::from_secs(4)).unwrap();
    let v = first_view(&mut source).await;
    assert_eq!(v.workers[0].1.leader.as_deref(), Some("w1a"));
    etcd.put_leader(1, "w1b").await;
    tokio::time::timeout(Duration::from_secs(2), source.changed())
        .await
        .unwrap();
    assert_eq!(
        source.snapshot().await.unwrap().workers[0]
            .1
            .leader
            .as_deref(),
        Some("w1b")
    );

    // Wrong password, or none: refused with etcd's reason, never a view.
    for auth in [Some(("root".to_string(), "wrong".to_string())), None] {
        let mut s = settings(&etcd);
        s.auth = auth.clone();
        let mut source = EtcdSource::start(&s, Duration::from_secs(4)).unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let err = format!("{:#}", source.snapshot().await.unwrap_err());
        let expected = if auth.is_some() {
            "authentication failed"
        } else {
            "user name is empty"
        };
        assert!(err.contains(expected), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speaks_tls_with_a_client_certificate() {
    let etcd = Etcd::start_tls().await;
    write_group1(&etcd).await;
    let pki = etcd.tls.as_ref().unwrap();
    let mut s = settings(&etcd);
    s.https = true;
    s.cacert = Some(pki.ca.clone());
    s.client_cert = Some((pki.client_cert.clone(), pki.client_key.clone()));
    let mut source = EtcdSource::start(&s, Duration::from_secs(4)).unwrap();
    let v = first_view(&mut source).await;
    assert_eq!(v.workers[0].1.leader.as_deref(), Some("w1a"));
    assert!(source.describe().location.starts_with("https://"));
    etcd.put_leader(1, "w1b").await;
    tokio::time::timeout(Duration::from_secs(2), source.changed())
        .await
        .expect("the watch works over TLS");
    assert_eq!(
        source.snapshot().await.unwrap().workers[0]
            .1
            .leader
            .as_deref(),
        Some("w1b")
    );

    // Without a client certificate etcd refuses; with another CA the server is not trusted.
    let mut no_cert = s.clone();
    no_cert.client_cert = None;
    let mut other_ca = s.clone();
    other_ca.cacert = Some(pki.server_cert.clone());
    for (what, s, reason) in [
        ("no client certificate", no_cert, "Certificate"),
        ("the wrong CA", other_ca, "UnknownIssuer"),
    ] {
        let mut source = EtcdSource::start(&s, Duration::from_secs(4)).unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let err = format!("{:#}", source.snapshot().await.expect_err(what));
        assert!(err.contains(reason), "{what}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_that_can_never_see_the_change_is_caught_by_confirmation() {
    let mut etcd = Etcd::start().await;
    write_group1(&etcd).await;
    for _ in 0..20 {
        etcd.put("/service/other/filler", "x").await;
    }
    let mut source = EtcdSource::start(&settings(&etcd), Duration::from_secs(2)).unwrap();
    first_view(&mut source).await;
    // etcd comes back empty (a restored backup, a rebuilt cluster): its revisions start
    // over below the one the source resumes its watch from, so the watch itself would wait
    // for revisions that hold none of these keys. Only the fingerprint shows the difference.
    etcd.restart_empty().await;
    etcd.put_leader(1, "w9").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(v) = source.snapshot().await {
            if v.coordinator.leader.is_none()
                && v.workers.len() == 1
                && v.workers[0].1.leader.as_deref() == Some("w9")
                && v.workers[0].1.members.is_empty()
            {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the source still vouches for the old etcd's view: {:?}",
            source.snapshot().await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
