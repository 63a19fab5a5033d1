//! Deterministic tests of `MemoryStore` with explicit time.

use super::*;

fn t0() -> Instant {
    Instant::now()
}

#[test]
fn revisions_are_global_and_monotonic() {
    let now = t0();
    let mut s = MemoryStore::new();
    assert_eq!(s.revision(now), 1);
    let r1 = s.put(now, "/a", b"1", None).expect("put");
    let r2 = s.put(now, "/b", b"1", None).expect("put");
    let r3 = s.put(now, "/a", b"2", None).expect("put");
    assert_eq!((r1, r2, r3), (2, 3, 4));
    let a = s.get(now, "/a").kv.expect("present");
    assert_eq!((a.create_revision, a.mod_revision), (2, 4));
    assert!(!s.compare_and_swap(now, "/a", b"x", 2, None).expect("cas"));
    assert_eq!(
        s.revision(now),
        4,
        "a failed compare must not bump the revision"
    );
}

#[test]
fn lease_expiry_is_exact_and_takes_keys() {
    let now = t0();
    let mut s = MemoryStore::new();
    let lease = s.grant_lease(now, 3).expect("grant");
    s.put(now, "/k1", b"v", Some(lease.id)).expect("put");
    s.put(now, "/k2", b"v", Some(lease.id)).expect("put");
    let rev = s.revision(now);
    let just_before = now + Duration::from_millis(2999);
    assert!(s.get(just_before, "/k1").kv.is_some());
    let at = now + Duration::from_secs(3);
    assert!(s.get(at, "/k1").kv.is_none());
    assert!(s.get(at, "/k2").kv.is_none());
    assert_eq!(s.revision(at), rev + 1, "one revision per expired lease");
    let evs = s.events_since(at, rev + 1, "/").expect("history");
    assert_eq!(evs.len(), 2);
    assert!(matches!(
        s.keep_alive(at, lease.id),
        Err(DcsError::LeaseExpired(_))
    ));
}

#[test]
fn keep_alive_pushes_the_deadline() {
    let now = t0();
    let mut s = MemoryStore::new();
    let lease = s.grant_lease(now, 2).expect("grant");
    s.put(now, "/k", b"v", Some(lease.id)).expect("put");
    let later = now + Duration::from_millis(1500);
    assert_eq!(s.keep_alive(later, lease.id).expect("alive"), 2);
    assert!(s.get(now + Duration::from_millis(3400), "/k").kv.is_some());
    assert!(s.get(now + Duration::from_millis(3500), "/k").kv.is_none());
}

#[test]
fn rewriting_a_key_without_lease_detaches_it() {
    let now = t0();
    let mut s = MemoryStore::new();
    let lease = s.grant_lease(now, 1).expect("grant");
    s.put(now, "/k", b"v", Some(lease.id)).expect("put");
    s.put(now, "/k", b"w", None).expect("put");
    let later = now + Duration::from_secs(5);
    let kv = s.get(later, "/k").kv.expect("key outlives the lease");
    assert_eq!(kv.lease, None);
}

#[test]
fn min_ttl_raises_small_ttls() {
    let now = t0();
    let mut s = MemoryStore::new().with_min_ttl(2);
    assert_eq!(s.grant_lease(now, 1).expect("grant").ttl_secs, 2);
    assert!(s.grant_lease(now, 0).is_err());
}

#[test]
fn history_compaction_is_reported() {
    let now = t0();
    let mut s = MemoryStore::new().with_history_limit(2);
    for i in 0..5 {
        s.put(now, "/k", format!("{i}").as_bytes(), None)
            .expect("put");
    }
    assert!(s.events_since(now, 2, "/").is_err());
    assert_eq!(s.events_since(now, 5, "/").expect("kept").len(), 2);
}

#[test]
fn guarded_put_follows_the_guard() {
    let now = t0();
    let mut s = MemoryStore::new();
    let lease = s.grant_lease(now, 1).expect("grant");
    assert!(s
        .create_if_absent(now, "/leader", b"n1", Some(lease.id))
        .expect("create"));
    let term = s.get(now, "/leader").kv.expect("leader").create_revision;
    assert!(s.put_if_key_equals(now, "/sync", b"s1", "/leader", b"n1", term, 0));
    let s1 = s.get(now, "/sync").kv.expect("sync").mod_revision;
    assert!(!s.put_if_key_equals(now, "/sync", b"s2", "/leader", b"n2", term, s1));
    assert!(!s.put_if_key_equals(now, "/sync", b"s2", "/leader", b"n1", term + 1, s1));
    assert!(!s.put_if_key_equals(now, "/sync", b"s2", "/leader", b"n1", term, 0));
    let later = now + Duration::from_secs(1);
    assert!(!s.put_if_key_equals(later, "/sync", b"s3", "/leader", b"n1", term, s1));
    assert_eq!(s.get(later, "/sync").kv.expect("kept").value, b"s1");
}
