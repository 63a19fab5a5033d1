//! The conformance suite against a real etcd (each test its own), plus
//! etcd-only checks: outage, restart, watch resumption, 3-member quorum.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking

mod suite;

use pgha_dcs::{Dcs, DcsSettings, EtcdDcs, WatchEvent};
use pgha_testkit::etcd::{EtcdCluster, EtcdGuard};
use pgha_testkit::{free_port, wait_until_async};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Generous: tests run in parallel on a small, shared machine.
const TEST_TIMEOUT: Duration = Duration::from_secs(3);

fn client(endpoints: Vec<String>, timeout: Duration) -> EtcdDcs {
    let settings = DcsSettings {
        request_timeout: timeout,
        ..DcsSettings::with_endpoints(endpoints)
    };
    EtcdDcs::new(settings).expect("valid settings")
}

async fn start_etcd() -> EtcdGuard {
    tokio::task::spawn_blocking(EtcdGuard::start)
        .await
        .expect("join")
        .expect("start etcd")
}

async fn make() -> (EtcdGuard, Arc<dyn Dcs>) {
    let etcd = start_etcd().await;
    let dcs = client(vec![etcd.client_url.clone()], TEST_TIMEOUT);
    (etcd, Arc::new(dcs))
}

all_conformance_tests!(make);

/// Wait until `put` works again (after a restart or failover).
async fn until_writable(dcs: &EtcdDcs, key: &str) {
    let t = Instant::now();
    wait_until_async("etcd writable", Duration::from_secs(30), || async {
        let r = dcs.put(key, b"probe", None).await;
        if let Err(e) = &r {
            eprintln!("{:?} put {key}: {e:#?}", t.elapsed());
        }
        r.ok()
    })
    .await
    .expect("etcd writable again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_is_unavailable_fast() {
    let dcs = client(
        vec![format!("http://127.0.0.1:{}", free_port())],
        Duration::from_millis(500),
    );
    let t = Instant::now();
    let err = dcs.get("/k").await.expect_err("nothing listens");
    assert!(err.is_unavailable(), "{err:?}");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_is_unavailable_then_recovers_without_new_client() {
    let mut etcd = start_etcd().await;
    let timeout = Duration::from_millis(500);
    let dcs = client(vec![etcd.client_url.clone()], timeout);
    until_writable(&dcs, "/t/before").await;
    let lease = dcs.grant_lease(30).await.expect("grant");
    dcs.put("/t/leased", b"v", Some(lease.id))
        .await
        .expect("put");

    etcd.stop();
    let t = Instant::now();
    let errs = [
        dcs.get("/t/before").await.expect_err("down"),
        dcs.put("/t/x", b"v", None).await.expect_err("down"),
        dcs.keep_alive(lease.id).await.expect_err("down"),
        dcs.create_if_absent("/t/y", b"v", None)
            .await
            .expect_err("down"),
        dcs.watch_prefix("/t/", 0).await.expect_err("down"),
    ];
    for e in &errs {
        assert!(e.is_unavailable(), "{e:?}");
    }
    assert!(
        t.elapsed() < timeout * 5 + Duration::from_secs(1),
        "took {:?}",
        t.elapsed()
    );

    let etcd = restart(etcd).await;
    until_writable(&dcs, "/t/after").await;
    assert_eq!(
        dcs.get("/t/before")
            .await
            .expect("get")
            .kv
            .expect("kept")
            .value,
        b"probe"
    );
    assert!(
        dcs.keep_alive(lease.id)
            .await
            .expect("lease survives restart")
            >= 1
    );
    assert!(dcs.get("/t/leased").await.expect("get").kv.is_some());
    drop(etcd);
}

/// Stop and start the member again on its ports and data dir.
async fn restart(mut etcd: EtcdGuard) -> EtcdGuard {
    tokio::task::spawn_blocking(move || etcd.restart().map(|_| etcd))
        .await
        .expect("join")
        .expect("restart etcd")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_after_restart_without_gaps() {
    let etcd = start_etcd().await;
    let dcs = client(vec![etcd.client_url.clone()], TEST_TIMEOUT);
    until_writable(&dcs, "/probe").await;
    let mut w = dcs.watch_prefix("/t/", 0).await.expect("watch");
    dcs.put("/t/a", b"1", None).await.expect("put");
    assert_eq!(suite::next_event(&mut w).await.key(), Some("/t/a"));

    let etcd = restart(etcd).await;
    until_writable(&dcs, "/probe").await;
    dcs.put("/t/b", b"2", None).await.expect("put");
    match suite::next_event(&mut w).await {
        WatchEvent::Put(kv) => assert_eq!(kv.key, "/t/b", "no replay of /t/a, no gap"),
        other => panic!("expected put of /t/b, got {other:?}"),
    }
    drop(etcd);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_survive_one_loss_not_two() {
    let mut cluster = tokio::task::spawn_blocking(|| EtcdCluster::start(3))
        .await
        .expect("join")
        .expect("start etcd cluster");
    let dcs = client(cluster.endpoints(), TEST_TIMEOUT);
    until_writable(&dcs, "/t/k").await;

    cluster.members[0].kill();
    until_writable(&dcs, "/t/k").await;
    // Once a leader is elected again, no call fails: the client does not
    // keep trying the dead member.
    for i in 0..20 {
        dcs.get("/t/k")
            .await
            .expect("get with 2 of 3")
            .kv
            .expect("present");
        dcs.put("/t/k", format!("{i}").as_bytes(), None)
            .await
            .expect("put with 2 of 3");
        assert!(dcs
            .create_if_absent(&format!("/t/c{i}"), b"v", None)
            .await
            .expect("txn"));
    }

    cluster.members[1].kill();
    let err = dcs.put("/t/k", b"v", None).await.expect_err("no quorum");
    assert!(err.is_unavailable(), "{err:?}");

    let cluster =
        tokio::task::spawn_blocking(move || cluster.members[1].restart().map(|_| cluster))
            .await
            .expect("join")
            .expect("restart member");
    until_writable(&dcs, "/t/k").await;
    drop(cluster);
}

/// A hung etcd (SIGSTOP: connections stay open, nothing answers) must not
/// hang callers: every call returns `Unavailable` within its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_etcd_times_out_then_recovers() {
    use nix::sys::signal::Signal;
    let etcd = start_etcd().await;
    let timeout = Duration::from_millis(500);
    let dcs = client(vec![etcd.client_url.clone()], timeout);
    until_writable(&dcs, "/t/k").await;
    let mut w = dcs.watch_prefix("/t/", 0).await.expect("watch");

    etcd.process
        .stop_and_wait(Duration::from_secs(5))
        .expect("etcd stops");
    for _ in 0..3 {
        let t = Instant::now();
        let err = dcs.get("/t/k").await.expect_err("hung");
        assert!(err.is_unavailable(), "{err:?}");
        assert!(
            t.elapsed() < timeout + Duration::from_millis(500),
            "took {:?}",
            t.elapsed()
        );
    }
    etcd.process.signal(Signal::SIGCONT);

    until_writable(&dcs, "/t/k2").await;
    let ev = suite::next_event(&mut w).await;
    assert_eq!(ev.key(), Some("/t/k2"), "{ev:?}");
    drop(etcd);
}

/// etcd raises TTLs below its minimum (2 s with default election timing);
/// `grant_lease` reports the TTL actually granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_ttl_is_raised_to_etcd_minimum() {
    let (_etcd, dcs) = make().await;
    let lease = dcs.grant_lease(1).await.expect("grant");
    assert_eq!(lease.ttl_secs, 2, "etcd's minimum TTL with default timing");
    assert_eq!(dcs.keep_alive(lease.id).await.expect("alive"), 2);
    let lease = dcs.grant_lease(7).await.expect("grant");
    assert_eq!(lease.ttl_secs, 7);
}

/// A hung member (SIGSTOP) of three costs at most the calls that were
/// already on their way to it; reads go around it within their timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_member_is_avoided() {
    use nix::sys::signal::Signal;
    let cluster = tokio::task::spawn_blocking(|| EtcdCluster::start(3))
        .await
        .expect("join")
        .expect("start etcd cluster");
    let dcs = client(cluster.endpoints(), TEST_TIMEOUT);
    until_writable(&dcs, "/t/k").await;
    let mut w = dcs.watch_prefix("/t/", 0).await.expect("watch");

    cluster.members[0]
        .process
        .stop_and_wait(Duration::from_secs(5))
        .expect("etcd member stops");
    until_writable(&dcs, "/t/k").await;
    for i in 0..10 {
        dcs.get("/t/k").await.expect("read around the hung member");
        let key = format!("/t/c{i}");
        assert!(dcs.create_if_absent(&key, b"v", None).await.expect("txn"));
    }
    // The watch notices the silent member and resumes elsewhere, no gap.
    let mut seen = Vec::new();
    while seen.len() < 10 {
        if let WatchEvent::Put(kv) = suite::next_event(&mut w).await {
            if kv.key.starts_with("/t/c") {
                seen.push(kv.key);
            }
        }
    }
    assert_eq!(seen.len(), 10);
    cluster.members[0].process.signal(Signal::SIGCONT);
}
