//! The topology from the DCS: the leader key names the primary, member
//! records (JSON `pgha_core::MemberState`) give addresses and roles, and a
//! pending switchover request pauses new transactions.
//!
//! [`spawn`] reads the cluster prefix, then follows it with a watch from the
//! next revision; on `Resync` or a DCS error it re-reads.
//!
//! Hazards: while the DCS is unreachable the last topology stays in force (a
//! belief, not a fact; connection failures still show a dead node). The
//! primary is published only when the leader's own record says it runs as a
//! primary and is not fenced, so a promotion in progress reads as "no
//! primary" and new transactions wait instead of going to a standby.

use super::{Node, Topology};
use pgha_core::{MemberState, SwitchoverRequest};
use pgha_dcs::keys::ClusterKey;
use pgha_dcs::{ClusterKeys, Dcs, WatchEvent};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The raw keys of one cluster: key -> value.
#[derive(Debug, Default, Clone)]
pub struct ClusterSnapshot {
    kvs: BTreeMap<String, Vec<u8>>,
}

impl ClusterSnapshot {
    pub fn put(&mut self, key: String, value: Vec<u8>) {
        self.kvs.insert(key, value);
    }

    pub fn delete(&mut self, key: &str) {
        self.kvs.remove(key);
    }

    /// The topology these keys describe (generation 0; the caller numbers it).
    pub fn topology(&self, keys: &ClusterKeys, now_unix_ms: u64) -> Topology {
        let mut leader = None;
        let mut members = Vec::new();
        let mut paused = false;
        for (k, v) in &self.kvs {
            match keys.parse(k) {
                Some(ClusterKey::Leader) => leader = Some(String::from_utf8_lossy(v).into_owned()),
                Some(ClusterKey::Member(_)) => match serde_json::from_slice::<MemberState>(v) {
                    Ok(m) => members.push(m),
                    Err(e) => tracing::warn!(key = %k, "unreadable member record: {e}"),
                },
                Some(ClusterKey::Switchover) => {
                    let req: SwitchoverRequest = serde_json::from_slice(v).unwrap_or_default();
                    paused = req.scheduled_at_unix_ms.is_none_or(|at| at <= now_unix_ms);
                }
                _ => {}
            }
        }
        let node = |m: &MemberState| Node {
            name: m.name.clone(),
            host: m.conn.host.clone(),
            port: m.conn.port,
        };
        let primary = members
            .iter()
            .find(|m| Some(&m.name) == leader.as_ref() && m.is_running_primary() && !m.fenced)
            .map(node);
        let standbys = members
            .iter()
            .filter(|m| {
                Some(&m.name) != leader.as_ref() && m.is_running_standby() && m.detached.is_none()
            })
            .map(node)
            .collect();
        Topology {
            primary,
            standbys,
            generation: 0,
            paused,
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Publishes `t` if it differs from the current value (bumping the generation).
fn publish(tx: &watch::Sender<Topology>, mut t: Topology) {
    tx.send_if_modified(|cur| {
        t.generation = cur.generation;
        if *cur == t {
            return false;
        }
        tracing::info!(
            primary = ?t.primary.as_ref().map(|n| &n.name),
            standbys = ?t.standbys.iter().map(|n| &n.name).collect::<Vec<_>>(),
            paused = t.paused,
            "topology changed"
        );
        t.generation = cur.generation + 1;
        *cur = t;
        true
    });
}

/// Why the etcd topology source could not start.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Name(#[from] pgha_dcs::keys::InvalidName),
    #[error(transparent)]
    Dcs(#[from] pgha_dcs::DcsError),
}

/// Follows cluster `cluster` in the etcd described by `settings`.
pub fn spawn_etcd(
    cluster: &str,
    settings: &pgha_dcs::DcsSettings,
) -> Result<(watch::Receiver<Topology>, JoinHandle<()>), SourceError> {
    let keys = ClusterKeys::new(&settings.namespace, cluster)?;
    let client = pgha_dcs::EtcdDcs::new(settings.clone())?;
    Ok(spawn(Arc::new(client), keys))
}

/// Follows the cluster's keys in the DCS; the receiver sees every change.
pub fn spawn<D: Dcs + ?Sized>(
    dcs: Arc<D>,
    keys: ClusterKeys,
) -> (watch::Receiver<Topology>, JoinHandle<()>) {
    let (tx, rx) = watch::channel(Topology::default());
    let task = tokio::spawn(async move { follow(dcs, keys, tx).await });
    (rx, task)
}

async fn follow<D: Dcs + ?Sized>(dcs: Arc<D>, keys: ClusterKeys, tx: watch::Sender<Topology>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match follow_once(&*dcs, &keys, &tx).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e) => {
                tracing::warn!("reading the topology from the DCS: {e}; keeping the last one");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
        if tx.is_closed() {
            return;
        }
    }
}

/// One read + watch; returns Ok on Resync (re-read wanted).
async fn follow_once<D: Dcs + ?Sized>(
    dcs: &D,
    keys: &ClusterKeys,
    tx: &watch::Sender<Topology>,
) -> Result<(), pgha_dcs::DcsError> {
    let range = dcs.get_prefix(keys.prefix()).await?;
    let mut snap = ClusterSnapshot::default();
    for kv in range.kvs {
        snap.put(kv.key, kv.value);
    }
    publish(tx, snap.topology(keys, now_ms()));
    let mut watch = dcs.watch_prefix(keys.prefix(), range.revision + 1).await?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            ev = watch.next() => match ev {
                Some(WatchEvent::Put(kv)) => snap.put(kv.key, kv.value),
                Some(WatchEvent::Delete { key, .. }) => snap.delete(&key),
                Some(WatchEvent::Resync) | None => return Ok(()),
            },
            // A scheduled switchover starts without a key change.
            _ = tick.tick() => {}
        }
        if tx.is_closed() {
            return Ok(());
        }
        publish(tx, snap.topology(keys, now_ms()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgha_core::{ConnInfo, Role};

    fn member(name: &str, role: Role, port: u16) -> Vec<u8> {
        let m = MemberState {
            name: name.into(),
            role,
            pg_running: true,
            conn: ConnInfo {
                host: "127.0.0.1".into(),
                port,
            },
            ..Default::default()
        };
        serde_json::to_vec(&m).unwrap()
    }

    #[test]
    fn leader_and_members_make_the_topology() {
        let keys = ClusterKeys::new("/pgha", "c1").unwrap();
        let mut s = ClusterSnapshot::default();
        s.put(keys.member("a"), member("a", Role::Primary, 5001));
        s.put(keys.member("b"), member("b", Role::Standby, 5002));
        s.put(keys.member("c"), member("c", Role::Unknown, 5003));
        let t = s.topology(&keys, 0);
        assert_eq!(t.primary, None, "no leader key: no primary");
        assert_eq!(
            t.standbys.len(),
            1,
            "only running standbys serve reads: {t:?}"
        );
        s.put(keys.leader(), b"a".to_vec());
        let t = s.topology(&keys, 0);
        assert_eq!(t.primary.as_ref().map(|n| n.port), Some(5001));
        assert_eq!(
            t.standbys
                .iter()
                .map(|n| n.name.as_str())
                .collect::<Vec<_>>(),
            ["b"]
        );
        assert!(!t.paused);
        s.put(keys.switchover(), b"{}".to_vec());
        assert!(s.topology(&keys, 0).paused);
        s.put(
            keys.switchover(),
            br#"{"scheduled_at_unix_ms": 1000}"#.to_vec(),
        );
        assert!(!s.topology(&keys, 999).paused);
        assert!(s.topology(&keys, 1000).paused);
    }
}
