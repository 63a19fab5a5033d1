//! The conformance suite against a real etcd (each test its own), plus
//! etcd-only checks: outage, restart, watch resumption, 3-member quorum.

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
    wait_until_async("etcd writable", Duration::from_secs(30), || async {
        dcs.put(key, b"probe", None).await.ok()
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
    assert!(dcs.get("/t/k").await.expect("get with 2 of 3").kv.is_some());

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

    etcd.process.signal(Signal::SIGSTOP);
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
