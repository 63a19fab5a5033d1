//! Differential test: the same seeded random operations against a real
//! etcd and against `MemoryDcs` must give the same answers, revisions
//! included. (Lease expiry timing is not compared; leases here live long.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking

use pgha_dcs::{Dcs, DcsSettings, EtcdDcs, KeyValue, LeaseId, MemoryDcs};
use pgha_testkit::etcd::EtcdGuard;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;

const KEYS: [&str; 5] = ["/d/a", "/d/b", "/d/c/x", "/d/c/y", "/e"];

/// key, value, create_revision, mod_revision, lease (as grant index).
type NormKv = (String, Vec<u8>, i64, i64, Option<usize>);

/// Outcome of one operation, with lease ids replaced by grant order.
#[derive(Debug, PartialEq)]
enum Outcome {
    Rev(i64),
    Bool(bool),
    Kvs(i64, Vec<NormKv>),
    Granted(usize),
    Err(String),
}

struct Side<'a> {
    dcs: &'a dyn Dcs,
    leases: Vec<LeaseId>,
}

impl Side<'_> {
    fn norm(&self, kvs: Vec<KeyValue>, rev: i64) -> Outcome {
        let kvs = kvs
            .into_iter()
            .map(|kv| {
                let lease = kv
                    .lease
                    .and_then(|l| self.leases.iter().position(|x| *x == l));
                (kv.key, kv.value, kv.create_revision, kv.mod_revision, lease)
            })
            .collect();
        Outcome::Kvs(rev, kvs)
    }

    async fn apply(&mut self, op: &Op) -> Outcome {
        let lease = |i: Option<usize>| i.and_then(|i| self.leases.get(i).copied());
        let d = self.dcs;
        let r = match op {
            Op::Put(k, v, l) => d.put(k, v, lease(*l)).await.map(Outcome::Rev),
            Op::Delete(k) => d.delete(k).await.map(Outcome::Bool),
            Op::Create(k, v, l) => d.create_if_absent(k, v, lease(*l)).await.map(Outcome::Bool),
            Op::Cas(k, v, rev) => d
                .compare_and_swap(k, v, *rev, None)
                .await
                .map(Outcome::Bool),
            Op::Guarded(k, v, g, gv, t, m) => d
                .put_if_key_equals(k, v, g, gv, *t, *m)
                .await
                .map(Outcome::Bool),
            Op::DeleteIf(k, v) => d.delete_if_equals(k, v).await.map(Outcome::Bool),
            Op::HandOver(k, v, g, gv, t, m) => d
                .put_and_delete_if_equals(k, v, g, gv, *t, *m)
                .await
                .map(Outcome::Bool),
            Op::Get(k) => d
                .get(k)
                .await
                .map(|r| self.norm(r.kv.into_iter().collect(), r.revision)),
            Op::Prefix(p) => d.get_prefix(p).await.map(|r| self.norm(r.kvs, r.revision)),
            Op::Grant => match d.grant_lease(60).await {
                Ok(l) => {
                    self.leases.push(l.id);
                    Ok(Outcome::Granted(self.leases.len() - 1))
                }
                Err(e) => Err(e),
            },
            Op::Revoke(i) => match lease(Some(*i)) {
                Some(l) => d.revoke_lease(l).await.map(|_| Outcome::Bool(true)),
                None => Ok(Outcome::Bool(false)),
            },
        };
        r.unwrap_or_else(|e| {
            Outcome::Err(if e.is_lease_expired() {
                "lease".into()
            } else {
                format!("{e:#}")
            })
        })
    }
}

#[derive(Debug, Clone)]
enum Op {
    Put(&'static str, Vec<u8>, Option<usize>),
    Delete(&'static str),
    Create(&'static str, Vec<u8>, Option<usize>),
    Cas(&'static str, Vec<u8>, i64),
    /// put_if_key_equals(key, value, guard key, guard value, guard create
    /// revision, key's expected mod revision)
    Guarded(&'static str, Vec<u8>, &'static str, Vec<u8>, i64, i64),
    DeleteIf(&'static str, Vec<u8>),
    /// put_and_delete_if_equals(put key, value, delete key, expected,
    /// expected create revision, put key's expected mod revision)
    HandOver(&'static str, Vec<u8>, &'static str, Vec<u8>, i64, i64),
    Get(&'static str),
    Prefix(&'static str),
    Grant,
    Revoke(usize),
}

/// A revision among the last few (so compares on it sometimes hold).
fn recent(rng: &mut StdRng, rev: i64) -> i64 {
    rng.gen_range((rev - 4).max(0)..=rev)
}

fn random_op(rng: &mut StdRng, rev: i64) -> Op {
    let key = KEYS[rng.gen_range(0..KEYS.len())];
    let val = vec![b'0' + rng.gen_range(0..3u8)];
    let lease = if rng.gen_bool(0.3) {
        Some(rng.gen_range(0..4))
    } else {
        None
    };
    match rng.gen_range(0..12) {
        0 | 1 => Op::Put(key, val, lease),
        2 => Op::Delete(key),
        3 => Op::Create(key, val, lease),
        4 => Op::Cas(key, val, recent(rng, rev)),
        5 => {
            let guard = KEYS[rng.gen_range(0..KEYS.len())];
            let created = recent(rng, rev);
            Op::Guarded(key, val.clone(), guard, val, created, recent(rng, rev))
        }
        6 => Op::DeleteIf(key, val),
        7 => Op::Get(key),
        8 => Op::Prefix(["/d/", "/d/c/", "/", "/z"][rng.gen_range(0..4)]),
        9 => Op::Grant,
        10 => {
            // Two distinct keys (etcd refuses a put and a delete of one key
            // in the same transaction).
            let i = KEYS.iter().position(|k| *k == key).unwrap_or(0);
            let other = KEYS[(i + rng.gen_range(1..KEYS.len())) % KEYS.len()];
            let created = recent(rng, rev);
            Op::HandOver(key, val.clone(), other, val, created, recent(rng, rev))
        }
        _ => Op::Revoke(rng.gen_range(0..4)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_and_memory_agree_on_random_operations() {
    let etcd = tokio::task::spawn_blocking(EtcdGuard::start)
        .await
        .expect("join")
        .expect("start etcd");
    let settings = DcsSettings {
        request_timeout: Duration::from_secs(5),
        ..DcsSettings::with_endpoints([etcd.client_url.clone()])
    };
    let etcd_dcs = EtcdDcs::new(settings).expect("settings");
    let mem_dcs = MemoryDcs::new();
    let mut real = Side {
        dcs: &etcd_dcs,
        leases: Vec::new(),
    };
    let mut model = Side {
        dcs: &mem_dcs,
        leases: Vec::new(),
    };

    let seed: u64 = std::env::var("PGHA_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut rev = 1;
    for step in 0..400 {
        let op = random_op(&mut rng, rev);
        let want = model.apply(&op).await;
        let got = real.apply(&op).await;
        assert_eq!(got, want, "seed {seed} step {step}: {op:?}");
        rev = mem_dcs.get("/").await.expect("get").revision;
    }
}
