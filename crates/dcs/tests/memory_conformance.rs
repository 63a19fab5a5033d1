//! The conformance suite against `MemoryDcs` on the real clock, plus
//! memory-only checks (manual clock, simulated partition).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking

mod suite;

use pgha_dcs::{Dcs, DcsError, ManualClock, MemoryDcs, WatchEvent};
use std::sync::Arc;
use std::time::Duration;

async fn make() -> ((), Arc<dyn Dcs>) {
    ((), Arc::new(MemoryDcs::new()))
}

all_conformance_tests!(make);

#[tokio::test]
async fn manual_clock_controls_expiry() {
    let clock = ManualClock::new();
    let dcs = MemoryDcs::with_manual_clock(clock.clone());
    let mut w = dcs.watch_prefix("/t/", 0).await.expect("watch");
    let lease = dcs.grant_lease(5).await.expect("grant");
    dcs.put("/t/k", b"v", Some(lease.id)).await.expect("put");
    dcs.advance(Duration::from_millis(4999));
    assert!(dcs.get("/t/k").await.expect("get").kv.is_some());
    assert!(matches!(w.try_next(), Some(WatchEvent::Put(_))));
    assert_eq!(w.try_next(), None);
    dcs.advance(Duration::from_millis(1));
    assert!(matches!(w.try_next(), Some(WatchEvent::Delete { .. })));
    assert!(dcs.get("/t/k").await.expect("get").kv.is_none());
}

#[tokio::test]
async fn unreachable_fails_fast_and_watch_resumes() {
    let dcs = MemoryDcs::new();
    let other_client = dcs.clone();
    let mut w = dcs.watch_prefix("/t/", 0).await.expect("watch");
    dcs.set_reachable(false);
    let err = dcs.get("/t/k").await.expect_err("partitioned");
    assert!(matches!(err, DcsError::Unavailable { .. }), "{err:?}");
    assert!(other_client.put("/t/k", b"v", None).await.is_err());
    dcs.set_reachable(true);
    dcs.put("/t/k", b"v", None).await.expect("put");
    assert!(matches!(
        suite::next_event(&mut w).await,
        WatchEvent::Put(_)
    ));
}

#[tokio::test]
async fn slow_watcher_gets_resync() {
    let dcs = MemoryDcs::new();
    let mut w = dcs.watch_prefix("/t/", 0).await.expect("watch");
    for i in 0..1100 {
        dcs.put("/t/k", format!("{i}").as_bytes(), None)
            .await
            .expect("put");
    }
    let mut seen = Vec::new();
    while let Some(ev) = w.try_next() {
        seen.push(ev);
    }
    assert_eq!(seen.len(), 1024);
    dcs.put("/t/k", b"last", None).await.expect("put");
    assert_eq!(w.try_next(), Some(WatchEvent::Resync));
    assert!(matches!(w.try_next(), Some(WatchEvent::Put(kv)) if kv.value == b"last"));
}

#[tokio::test]
async fn one_client_partitioned_others_go_on() {
    let clock = ManualClock::new();
    let a = MemoryDcs::with_manual_clock(clock);
    let b = a.new_client();
    let lease = a.grant_lease(2).await.expect("grant");
    a.put("/t/leader", b"a", Some(lease.id)).await.expect("put");
    let mut wa = a.watch_prefix("/t/", 0).await.expect("watch");

    a.set_reachable(false);
    assert!(a
        .keep_alive(lease.id)
        .await
        .expect_err("cut off")
        .is_unavailable());
    b.advance(Duration::from_secs(2));
    assert!(
        b.get("/t/leader").await.expect("get").kv.is_none(),
        "a's lease expired"
    );
    assert!(b
        .create_if_absent("/t/leader", b"b", None)
        .await
        .expect("create"));
    assert_eq!(wa.try_next(), None, "a partitioned client sees nothing");

    a.set_reachable(true);
    assert!(matches!(wa.try_next(), Some(WatchEvent::Delete { .. })));
    assert!(matches!(wa.try_next(), Some(WatchEvent::Put(kv)) if kv.value == b"b"));
    assert!(a
        .keep_alive(lease.id)
        .await
        .expect_err("gone")
        .is_lease_expired());
}
