//! The shared conformance suite: every `Dcs` implementation must pass these.
//!
//! Each function takes a fresh, empty DCS. `conformance_tests!` turns the
//! list into `#[tokio::test]`s for one implementation.

#![allow(dead_code)]

use futures::future::join_all;
use pgha_dcs::{Dcs, DcsError, Watch, WatchEvent};
use pgha_testkit::wait_until_async;
use std::sync::Arc;
use std::time::Duration;

/// Upper bound on seeing a lease expire (etcd checks leases every 500 ms
/// and may raise the TTL to its 2 s minimum).
const EXPIRY: Duration = Duration::from_secs(10);

/// Generate one `#[tokio::test]` per suite function, with `$make` an async
/// fn returning `(guard, Arc<dyn Dcs>)`.
#[macro_export]
macro_rules! conformance_tests {
    ($make:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (_guard, dcs) = $make().await;
                suite::$name(dcs).await;
            }
        )*
    };
}

pub async fn next_event(w: &mut Watch) -> WatchEvent {
    tokio::time::timeout(EXPIRY, w.next())
        .await
        .expect("a watch event in time")
        .expect("watch still open")
}

async fn gone(dcs: &dyn Dcs, key: &str) {
    let key = key.to_string();
    wait_until_async(&format!("{key} to disappear"), EXPIRY, || async {
        match dcs.get(&key).await {
            Ok(r) if r.kv.is_none() => Some(()),
            _ => None,
        }
    })
    .await
    .expect("key deleted with its lease");
}

pub async fn put_get_delete(dcs: Arc<dyn Dcs>) {
    let r1 = dcs.put("/t/a", b"1", None).await.expect("put");
    let got = dcs.get("/t/a").await.expect("get");
    let kv = got.kv.expect("present");
    assert_eq!(kv.value, b"1");
    assert_eq!((kv.create_revision, kv.mod_revision), (r1, r1));
    assert_eq!(kv.lease, None);
    assert!(got.revision >= r1);
    let r2 = dcs.put("/t/a", b"2", None).await.expect("put");
    assert!(r2 > r1, "revisions grow");
    let kv = dcs.get("/t/a").await.expect("get").kv.expect("present");
    assert_eq!((kv.create_revision, kv.mod_revision), (r1, r2));
    assert!(dcs.get("/t/missing").await.expect("get").kv.is_none());
    assert!(dcs.delete("/t/a").await.expect("delete"));
    assert!(!dcs.delete("/t/a").await.expect("delete"));
    assert!(dcs.get("/t/a").await.expect("get").kv.is_none());
}

pub async fn prefix_snapshot(dcs: Arc<dyn Dcs>) {
    for k in ["/t/b", "/t/a", "/t/c/d", "/tx", "/s"] {
        dcs.put(k, k.as_bytes(), None).await.expect("put");
    }
    let last = dcs.put("/t/e", b"e", None).await.expect("put");
    let snap = dcs.get_prefix("/t/").await.expect("get_prefix");
    let keys: Vec<_> = snap.kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/t/a", "/t/b", "/t/c/d", "/t/e"]);
    assert_eq!(snap.revision, last);
    assert!(dcs.get_prefix("/none/").await.expect("get").kvs.is_empty());
}

pub async fn lease_expiry_takes_keys(dcs: Arc<dyn Dcs>) {
    let lease = dcs.grant_lease(1).await.expect("grant");
    assert!(lease.ttl_secs >= 1);
    dcs.put("/t/l1", b"v", Some(lease.id)).await.expect("put");
    assert!(dcs
        .create_if_absent("/t/l2", b"v", Some(lease.id))
        .await
        .expect("create"));
    dcs.put("/t/keep", b"v", None).await.expect("put");
    let kv = dcs.get("/t/l1").await.expect("get").kv.expect("present");
    assert_eq!(kv.lease, Some(lease.id));
    gone(&*dcs, "/t/l1").await;
    gone(&*dcs, "/t/l2").await;
    assert!(dcs.get("/t/keep").await.expect("get").kv.is_some());
    let err = dcs.keep_alive(lease.id).await.expect_err("lease is gone");
    assert!(err.is_lease_expired(), "{err:?}");
    let err = dcs
        .put("/t/l3", b"v", Some(lease.id))
        .await
        .expect_err("lease is gone");
    assert!(err.is_lease_expired(), "{err:?}");
    let err = dcs
        .create_if_absent("/t/l3", b"v", Some(lease.id))
        .await
        .expect_err("lease is gone");
    assert!(err.is_lease_expired(), "{err:?}");
}

pub async fn keep_alive_keeps_keys(dcs: Arc<dyn Dcs>) {
    let lease = dcs.grant_lease(2).await.expect("grant");
    dcs.put("/t/k", b"v", Some(lease.id)).await.expect("put");
    let mut tick = tokio::time::interval(Duration::from_millis(400));
    let until = tokio::time::Instant::now() + Duration::from_secs(lease.ttl_secs as u64 * 2 + 1);
    while tokio::time::Instant::now() < until {
        tick.tick().await;
        let ttl = dcs.keep_alive(lease.id).await.expect("keep_alive");
        assert!(ttl >= 1, "ttl {ttl}");
        assert!(
            dcs.get("/t/k").await.expect("get").kv.is_some(),
            "key lost while kept alive"
        );
    }
    gone(&*dcs, "/t/k").await;
}

pub async fn revoke_deletes_keys(dcs: Arc<dyn Dcs>) {
    let lease = dcs.grant_lease(30).await.expect("grant");
    dcs.put("/t/r", b"v", Some(lease.id)).await.expect("put");
    dcs.revoke_lease(lease.id).await.expect("revoke");
    assert!(dcs.get("/t/r").await.expect("get").kv.is_none());
    let err = dcs
        .revoke_lease(lease.id)
        .await
        .expect_err("already revoked");
    assert!(err.is_lease_expired(), "{err:?}");
}

pub async fn invalid_ttl_is_rejected(dcs: Arc<dyn Dcs>) {
    let err = dcs.grant_lease(0).await.expect_err("ttl 0");
    assert!(matches!(err, DcsError::Other { .. }), "{err:?}");
}

pub async fn create_if_absent_single_winner(dcs: Arc<dyn Dcs>) {
    let tries = (0..16).map(|i| {
        let dcs = dcs.clone();
        tokio::spawn(async move {
            let v = format!("node{i}");
            let won = dcs.create_if_absent("/t/leader", v.as_bytes(), None).await;
            (v, won.expect("create_if_absent"))
        })
    });
    let results: Vec<_> = join_all(tries)
        .await
        .into_iter()
        .map(|r| r.expect("task"))
        .collect();
    let winners: Vec<_> = results.iter().filter(|(_, won)| *won).collect();
    assert_eq!(winners.len(), 1, "exactly one winner: {results:?}");
    let kv = dcs
        .get("/t/leader")
        .await
        .expect("get")
        .kv
        .expect("present");
    assert_eq!(kv.value, winners[0].0.as_bytes());
    assert!(!dcs
        .create_if_absent("/t/leader", b"late", None)
        .await
        .expect("create"));
}

pub async fn compare_and_swap_semantics(dcs: Arc<dyn Dcs>) {
    assert!(dcs
        .compare_and_swap("/t/c", b"1", 0, None)
        .await
        .expect("cas"));
    assert!(!dcs
        .compare_and_swap("/t/c", b"x", 0, None)
        .await
        .expect("cas"));
    let rev = dcs
        .get("/t/c")
        .await
        .expect("get")
        .kv
        .expect("present")
        .mod_revision;
    assert!(!dcs
        .compare_and_swap("/t/c", b"x", rev - 1, None)
        .await
        .expect("cas"));
    assert!(!dcs
        .compare_and_swap("/t/c", b"x", rev + 1, None)
        .await
        .expect("cas"));
    assert!(dcs
        .compare_and_swap("/t/c", b"2", rev, None)
        .await
        .expect("cas"));
    let kv = dcs.get("/t/c").await.expect("get").kv.expect("present");
    assert_eq!(kv.value, b"2");
    assert!(kv.mod_revision > rev);
    assert!(!dcs
        .compare_and_swap("/t/c", b"3", rev, None)
        .await
        .expect("stale cas"));
    dcs.delete("/t/c").await.expect("delete");
    assert!(dcs
        .compare_and_swap("/t/c", b"4", 0, None)
        .await
        .expect("cas on absent"));
}

pub async fn compare_and_swap_race(dcs: Arc<dyn Dcs>) {
    dcs.put("/t/n", b"0", None).await.expect("put");
    let rev = dcs
        .get("/t/n")
        .await
        .expect("get")
        .kv
        .expect("present")
        .mod_revision;
    let tries = (0..8).map(|i| {
        let dcs = dcs.clone();
        tokio::spawn(async move {
            let v = format!("{i}");
            dcs.compare_and_swap("/t/n", v.as_bytes(), rev, None)
                .await
                .expect("cas")
        })
    });
    let wins = join_all(tries)
        .await
        .into_iter()
        .filter(|r| *r.as_ref().expect("task"))
        .count();
    assert_eq!(wins, 1);
}

/// The create revision (term) of `key`, which must exist.
async fn term_of(dcs: &dyn Dcs, key: &str) -> i64 {
    let kv = dcs.get(key).await.expect("get").kv.expect("key present");
    kv.create_revision
}

/// The mod revision of `key`, which must exist.
async fn mod_of(dcs: &dyn Dcs, key: &str) -> i64 {
    let kv = dcs.get(key).await.expect("get").kv.expect("key present");
    kv.mod_revision
}

pub async fn guarded_put(dcs: Arc<dyn Dcs>) {
    let lease = dcs.grant_lease(30).await.expect("grant");
    assert!(dcs
        .create_if_absent("/t/leader", b"n1", Some(lease.id))
        .await
        .expect("create"));
    let term = term_of(&*dcs, "/t/leader").await;
    assert!(dcs
        .put_if_key_equals("/t/sync", b"s1", "/t/leader", b"n1", term, 0)
        .await
        .expect("put"));
    let s1 = mod_of(&*dcs, "/t/sync").await;
    assert!(!dcs
        .put_if_key_equals("/t/sync", b"s2", "/t/leader", b"n2", term, s1)
        .await
        .expect("put"));
    assert!(!dcs
        .put_if_key_equals("/t/sync", b"s2", "/t/leader", b"n1", term + 1, s1)
        .await
        .expect("put"));
    assert!(!dcs
        .put_if_key_equals("/t/sync", b"s2", "/t/nokey", b"n1", term, s1)
        .await
        .expect("put"));
    assert!(!dcs
        .put_if_key_equals("/t/sync", b"s2", "/t/nokey", b"n1", 0, s1)
        .await
        .expect("put"));
    dcs.put("/t/leader", b"n2", None).await.expect("takeover");
    assert!(!dcs
        .put_if_key_equals("/t/sync", b"s3", "/t/leader", b"n1", term, s1)
        .await
        .expect("put"));
    let kv = dcs.get("/t/sync").await.expect("get").kv.expect("present");
    assert_eq!(kv.value, b"s1");
    assert_eq!(kv.lease, None);
}

/// A `/sync` write whose expected mod revision of `/sync` is no longer
/// current writes nothing, though the leader key is still the writer's in
/// the same term: a delayed write of the same term cannot overwrite a newer
/// record (guarded put and hand-over alike).
pub async fn guarded_put_refuses_a_stale_sync_revision(dcs: Arc<dyn Dcs>) {
    let lease = dcs.grant_lease(30).await.expect("grant");
    assert!(dcs
        .create_if_absent("/t/leader", b"n1", Some(lease.id))
        .await
        .expect("create"));
    let term = term_of(&*dcs, "/t/leader").await;
    // Absent /sync: only expected revision 0 writes.
    assert!(!dcs
        .put_if_key_equals("/t/sync", b"s0", "/t/leader", b"n1", term, term)
        .await
        .expect("put"));
    assert!(dcs
        .put_if_key_equals("/t/sync", b"s1", "/t/leader", b"n1", term, 0)
        .await
        .expect("put"));
    let first = mod_of(&*dcs, "/t/sync").await;
    assert!(dcs
        .put_if_key_equals("/t/sync", b"s2", "/t/leader", b"n1", term, first)
        .await
        .expect("put"));
    let second = mod_of(&*dcs, "/t/sync").await;
    assert!(second > first);
    let before = dcs.get_prefix("/t/").await.expect("snapshot");
    // The late write, decided when /sync was at `first`.
    assert!(!dcs
        .put_if_key_equals("/t/sync", b"late", "/t/leader", b"n1", term, first)
        .await
        .expect("late put"));
    assert!(!dcs
        .put_if_key_equals("/t/sync", b"late", "/t/leader", b"n1", term, 0)
        .await
        .expect("late put"));
    assert!(!dcs
        .put_and_delete_if_equals("/t/sync", b"late", "/t/leader", b"n1", term, first)
        .await
        .expect("late hand-over"));
    let after = dcs.get_prefix("/t/").await.expect("snapshot");
    assert_eq!(after, before, "a stale expected revision writes nothing");
    // With the current revision the hand-over goes through.
    assert!(dcs
        .put_and_delete_if_equals("/t/sync", b"s3", "/t/leader", b"n1", term, second)
        .await
        .expect("hand-over"));
    let kv = dcs.get("/t/sync").await.expect("get").kv.expect("present");
    assert_eq!(kv.value, b"s3");
    assert!(dcs.get("/t/leader").await.expect("get").kv.is_none());
}

/// The same member loses the leader key and takes it again: a `/sync`
/// write from its earlier term (delayed, or decided before the loss) must
/// not land, though the key holds the same name again.
pub async fn guarded_put_refuses_an_earlier_term_of_the_same_holder(dcs: Arc<dyn Dcs>) {
    let first = dcs.grant_lease(30).await.expect("grant");
    assert!(dcs
        .create_if_absent("/t/leader", b"n1", Some(first.id))
        .await
        .expect("create"));
    let old_term = term_of(&*dcs, "/t/leader").await;
    dcs.revoke_lease(first.id).await.expect("revoke");
    let second = dcs.grant_lease(30).await.expect("grant");
    assert!(dcs
        .create_if_absent("/t/leader", b"n1", Some(second.id))
        .await
        .expect("re-create"));
    let new_term = term_of(&*dcs, "/t/leader").await;
    assert!(new_term > old_term);
    let before = dcs.get_prefix("/t/").await.expect("snapshot");
    assert!(!dcs
        .put_if_key_equals("/t/sync", b"old", "/t/leader", b"n1", old_term, 0)
        .await
        .expect("put"));
    assert!(!dcs
        .put_and_delete_if_equals("/t/sync", b"old", "/t/leader", b"n1", old_term, 0)
        .await
        .expect("hand over"));
    let after = dcs.get_prefix("/t/").await.expect("snapshot");
    assert_eq!(after, before, "an earlier term wrote nothing");
    assert!(dcs
        .put_if_key_equals("/t/sync", b"new", "/t/leader", b"n1", new_term, 0)
        .await
        .expect("put"));
    let kv = dcs.get("/t/sync").await.expect("get").kv.expect("present");
    assert_eq!(kv.value, b"new");
}

pub async fn guarded_put_fails_after_guard_expires(dcs: Arc<dyn Dcs>) {
    let lease = dcs.grant_lease(1).await.expect("grant");
    assert!(dcs
        .create_if_absent("/t/leader", b"n1", Some(lease.id))
        .await
        .expect("create"));
    let term = term_of(&*dcs, "/t/leader").await;
    assert!(dcs
        .put_if_key_equals("/t/sync", b"s1", "/t/leader", b"n1", term, 0)
        .await
        .expect("put"));
    let s1 = mod_of(&*dcs, "/t/sync").await;
    gone(&*dcs, "/t/leader").await;
    assert!(!dcs
        .put_if_key_equals("/t/sync", b"s2", "/t/leader", b"n1", term, s1)
        .await
        .expect("put"));
    let kv = dcs
        .get("/t/sync")
        .await
        .expect("get")
        .kv
        .expect("sync has no lease");
    assert_eq!(kv.value, b"s1");
}

pub async fn delete_if_equals(dcs: Arc<dyn Dcs>) {
    assert!(!dcs
        .delete_if_equals("/t/leader", b"n1")
        .await
        .expect("absent"));
    dcs.put("/t/leader", b"n1", None).await.expect("put");
    assert!(!dcs
        .delete_if_equals("/t/leader", b"n2")
        .await
        .expect("not mine"));
    assert!(dcs.get("/t/leader").await.expect("get").kv.is_some());
    assert!(dcs
        .delete_if_equals("/t/leader", b"n1")
        .await
        .expect("mine"));
    assert!(dcs.get("/t/leader").await.expect("get").kv.is_none());
}

pub async fn watch_sees_changes(dcs: Arc<dyn Dcs>) {
    let mut w = dcs.watch_prefix("/t/", 0).await.expect("watch");
    let r1 = dcs.put("/t/a", b"1", None).await.expect("put");
    dcs.put("/other", b"x", None).await.expect("put");
    dcs.delete("/t/a").await.expect("delete");
    let lease = dcs.grant_lease(30).await.expect("grant");
    dcs.put("/t/l", b"v", Some(lease.id)).await.expect("put");
    dcs.revoke_lease(lease.id).await.expect("revoke");
    match next_event(&mut w).await {
        WatchEvent::Put(kv) => {
            assert_eq!(
                (kv.key.as_str(), kv.value.as_slice(), kv.mod_revision),
                ("/t/a", &b"1"[..], r1)
            )
        }
        other => panic!("expected put, got {other:?}"),
    }
    let del = next_event(&mut w).await;
    assert_eq!(del.key(), Some("/t/a"));
    assert!(matches!(del, WatchEvent::Delete { revision, .. } if revision > r1 + 1));
    assert!(matches!(next_event(&mut w).await, WatchEvent::Put(kv) if kv.lease == Some(lease.id)));
    assert!(matches!(next_event(&mut w).await, WatchEvent::Delete { key, .. } if key == "/t/l"));
}

pub async fn watch_sees_lease_expiry(dcs: Arc<dyn Dcs>) {
    let mut w = dcs.watch_prefix("/t/", 0).await.expect("watch");
    let lease = dcs.grant_lease(1).await.expect("grant");
    dcs.put("/t/e", b"v", Some(lease.id)).await.expect("put");
    assert!(matches!(next_event(&mut w).await, WatchEvent::Put(_)));
    let ev = next_event(&mut w).await;
    assert!(
        matches!(ev, WatchEvent::Delete { ref key, .. } if key == "/t/e"),
        "{ev:?}"
    );
}

pub async fn watch_from_revision_replays(dcs: Arc<dyn Dcs>) {
    let r1 = dcs.put("/t/a", b"1", None).await.expect("put");
    dcs.put("/t/b", b"2", None).await.expect("put");
    let snap = dcs.get_prefix("/t/").await.expect("snapshot");
    let mut all = dcs.watch_prefix("/t/", r1).await.expect("watch");
    assert_eq!(next_event(&mut all).await.key(), Some("/t/a"));
    assert_eq!(next_event(&mut all).await.key(), Some("/t/b"));
    let mut after = dcs
        .watch_prefix("/t/", snap.revision + 1)
        .await
        .expect("watch");
    dcs.put("/t/c", b"3", None).await.expect("put");
    assert_eq!(next_event(&mut after).await.key(), Some("/t/c"));
    assert_eq!(next_event(&mut all).await.key(), Some("/t/c"));
}

pub async fn put_and_delete_if_equals(dcs: Arc<dyn Dcs>) {
    let lease = dcs.grant_lease(30).await.expect("grant");
    assert!(dcs
        .create_if_absent("/t/leader", b"n1", Some(lease.id))
        .await
        .expect("create"));
    let term = term_of(&*dcs, "/t/leader").await;
    dcs.put("/t/sync", b"s0", None).await.expect("put");
    let s0 = mod_of(&*dcs, "/t/sync").await;
    let mut w = dcs.watch_prefix("/t/", 0).await.expect("watch");

    // Compare failure: neither key is touched, the revision stays.
    let before = dcs.get_prefix("/t/").await.expect("snapshot");
    assert!(!dcs
        .put_and_delete_if_equals("/t/sync", b"s1", "/t/leader", b"n1", term - 1, s0)
        .await
        .expect("another term"));
    assert!(!dcs
        .put_and_delete_if_equals("/t/sync", b"s1", "/t/leader", b"n2", term, s0)
        .await
        .expect("not mine"));
    assert!(!dcs
        .put_and_delete_if_equals("/t/sync", b"s1", "/t/nokey", b"n1", term, s0)
        .await
        .expect("absent"));
    let after = dcs.get_prefix("/t/").await.expect("snapshot");
    assert_eq!(after, before, "a failed compare writes nothing");

    // Success: the put and the delete share one revision.
    assert!(dcs
        .put_and_delete_if_equals("/t/sync", b"s1", "/t/leader", b"n1", term, s0)
        .await
        .expect("mine"));
    let now = dcs.get_prefix("/t/").await.expect("snapshot");
    assert_eq!(now.revision, before.revision + 1, "one transaction");
    assert_eq!(now.kvs.len(), 1, "{:?}", now.kvs);
    let sync = &now.kvs[0];
    assert_eq!(
        (sync.key.as_str(), &sync.value[..]),
        ("/t/sync", &b"s1"[..])
    );
    assert_eq!(sync.mod_revision, now.revision);
    assert_eq!(sync.lease, None);
    let first = next_event(&mut w).await;
    let second = next_event(&mut w).await;
    assert_eq!(first.key(), Some("/t/sync"));
    assert_eq!(second.key(), Some("/t/leader"));
    assert!(matches!(second, WatchEvent::Delete { .. }), "{second:?}");
    assert_eq!(first.revision(), Some(now.revision));
    assert_eq!(second.revision(), Some(now.revision));

    // Once released, a second hand-over finds nothing to compare with.
    assert!(!dcs
        .put_and_delete_if_equals("/t/sync", b"s2", "/t/leader", b"n1", term, now.revision)
        .await
        .expect("released"));
    let kv = dcs.get("/t/sync").await.expect("get").kv.expect("present");
    assert_eq!(kv.value, b"s1");
}

/// The list for `conformance_tests!`.
#[macro_export]
macro_rules! all_conformance_tests {
    ($make:path) => {
        conformance_tests!($make;
            put_get_delete,
            prefix_snapshot,
            lease_expiry_takes_keys,
            keep_alive_keeps_keys,
            revoke_deletes_keys,
            invalid_ttl_is_rejected,
            create_if_absent_single_winner,
            compare_and_swap_semantics,
            compare_and_swap_race,
            guarded_put,
            guarded_put_refuses_an_earlier_term_of_the_same_holder,
            guarded_put_fails_after_guard_expires,
            guarded_put_refuses_a_stale_sync_revision,
            delete_if_equals,
            put_and_delete_if_equals,
            watch_sees_changes,
            watch_sees_lease_expiry,
            watch_from_revision_replays,
        );
    };
}
