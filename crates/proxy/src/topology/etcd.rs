//! The topology from the DCS: the leader key names the primary, member
//! records (JSON `pgha_core::MemberState`) give addresses and roles, and a
//! pending switchover request pauses new transactions.
//!
//! [`spawn`] reads the cluster prefix, then follows it with a watch from the
//! next revision; on `Resync` or a DCS error it re-reads. Alongside, it
//! keeps this proxy's record under `proxies/<name>` (see `register.rs`):
//! paused or not, sessions in flight on the primary while paused, and
//! "drained for" the switchover request (by its key's revision) once paused
//! with nothing in flight. The leader waits for that before shutting down.
//!
//! Hazards: while the DCS is unreachable the last topology stays in force (a
//! belief, not a fact; connection failures still show a dead node). The
//! primary is published only when the leader's own record says it runs as a
//! primary and is not fenced, so a promotion in progress reads as "no
//! primary" and new transactions wait instead of going to a standby.

use super::{register, InFlight, Node, Topology};
use pgha_core::{MemberState, ProxyState, SwitchoverRequest};
use pgha_dcs::keys::ClusterKey;
use pgha_dcs::{parse_value, ClusterKeys, Dcs, KeyValue, WatchEvent};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The keys of one cluster the topology depends on, parsed when they
/// arrive. A value that does not parse is warned about once and read as
/// absent (`pgha_dcs::value`), the same way the agents read it: a garbage
/// `/switchover` is no request, so it never pauses writes that no leader
/// would ever resume.
#[derive(Debug, Default, Clone)]
pub struct ClusterSnapshot {
    leader: Option<String>,
    /// Member records by key.
    members: BTreeMap<String, MemberState>,
    switchover: Option<SwitchoverRequest>,
    /// Mod revision of the `/switchover` key: names the request.
    switchover_revision: u64,
}

impl ClusterSnapshot {
    /// Stores a key read or watched from the DCS.
    pub fn put_kv(&mut self, keys: &ClusterKeys, kv: KeyValue) {
        if keys.parse(&kv.key) == Some(ClusterKey::Switchover) {
            self.switchover_revision = kv.mod_revision as u64;
        }
        self.put(keys, &kv.key, &kv.value);
    }

    /// Stores `value` under `key`: a value that does not parse replaces the
    /// previous one with nothing.
    pub fn put(&mut self, keys: &ClusterKeys, key: &str, value: &[u8]) {
        match keys.parse(key) {
            Some(ClusterKey::Leader) => {
                self.leader = Some(String::from_utf8_lossy(value).into_owned());
            }
            Some(ClusterKey::Member(_)) => match parse_value::<MemberState>(key, value) {
                Some(m) => {
                    self.members.insert(key.to_string(), m);
                }
                None => {
                    self.members.remove(key);
                }
            },
            Some(ClusterKey::Switchover) => self.switchover = parse_value(key, value),
            _ => {}
        }
    }

    pub fn delete(&mut self, keys: &ClusterKeys, key: &str) {
        match keys.parse(key) {
            Some(ClusterKey::Leader) => self.leader = None,
            Some(ClusterKey::Member(_)) => {
                self.members.remove(key);
            }
            Some(ClusterKey::Switchover) => self.switchover = None,
            _ => {}
        }
    }

    /// The topology these keys describe (generation 0; the caller numbers it).
    pub fn topology(&self, now_unix_ms: u64) -> Topology {
        let leader = &self.leader;
        let members: Vec<&MemberState> = self.members.values().collect();
        // Hold new transactions while the request is due and the member it
        // was made against still leads (or nobody does yet). Once another
        // member holds the leader key the old primary is gone: transactions
        // wait for the new one as in a failover instead of for the key to be
        // cleared, which comes a loop or more later.
        let paused = self.switchover.as_ref().is_some_and(|req| {
            let due = req.scheduled_at_unix_ms.is_none_or(|at| at <= now_unix_ms);
            let old_leads = match (leader, &req.from) {
                (Some(l), Some(from)) => l == from,
                _ => true,
            };
            due && old_leads
        });
        let node = |m: &MemberState| Node {
            name: m.name.clone(),
            host: m.conn.host.clone(),
            port: m.conn.port,
        };
        let primary = members
            .iter()
            .copied()
            .find(|m| Some(&m.name) == leader.as_ref() && m.is_running_primary() && !m.fenced)
            .map(node);
        let standbys = members
            .iter()
            .copied()
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
            in_flight: InFlight::default(),
        }
    }
}

/// This proxy's record for topology `t` (already published): `drained_for`
/// the request once paused with no session in flight on the primary.
fn proxy_state(t: &Topology, switchover_revision: u64) -> ProxyState {
    if !t.paused {
        return ProxyState::default();
    }
    let n = t.in_flight.count() as u64;
    ProxyState {
        paused: true,
        in_flight: n,
        drained_for: (n == 0).then_some(switchover_revision),
    }
}

/// Publishes the proxy state if it changed (logging the drain).
fn report(tx: &watch::Sender<Topology>, rev: u64, state: &watch::Sender<ProxyState>) {
    let s = proxy_state(&tx.borrow(), rev);
    state.send_if_modified(|cur| {
        if *cur == s {
            return false;
        }
        if s.drained_for.is_some() {
            tracing::info!(
                switchover = rev,
                "paused with no transaction in flight on the primary: drained"
            );
        }
        *cur = s;
        true
    });
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
        t.in_flight = cur.in_flight.clone();
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
/// Also registers this proxy under `proxies/<name>` with a generated name
/// (`<host>-<pid>-<n>`). Aborting the task stops both (the record then
/// expires with its lease).
pub fn spawn<D: Dcs + ?Sized>(
    dcs: Arc<D>,
    keys: ClusterKeys,
) -> (watch::Receiver<Topology>, JoinHandle<()>) {
    let (tx, rx) = watch::channel(Topology::default());
    let name = register::proxy_name();
    let task = tokio::spawn(async move {
        let (state_tx, state_rx) = watch::channel(ProxyState::default());
        let key = keys.proxy(&name);
        tracing::info!(%key, "registering the proxy in the DCS");
        tokio::join!(
            follow(&*dcs, &keys, tx, state_tx),
            register::keep_registered(&*dcs, &key, state_rx),
        );
    });
    (rx, task)
}

async fn follow<D: Dcs + ?Sized>(
    dcs: &D,
    keys: &ClusterKeys,
    tx: watch::Sender<Topology>,
    state: watch::Sender<ProxyState>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match follow_once(dcs, keys, &tx, &state).await {
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
    state: &watch::Sender<ProxyState>,
) -> Result<(), pgha_dcs::DcsError> {
    let range = dcs.get_prefix(keys.prefix()).await?;
    let mut snap = ClusterSnapshot::default();
    for kv in range.kvs {
        snap.put_kv(keys, kv);
    }
    publish(tx, snap.topology(now_ms()));
    report(tx, snap.switchover_revision, state);
    let mut watch = dcs.watch_prefix(keys.prefix(), range.revision + 1).await?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let in_flight = tx.borrow().in_flight.clone();
    loop {
        tokio::select! {
            ev = watch.next() => match ev {
                Some(WatchEvent::Put(kv)) => snap.put_kv(keys, kv),
                Some(WatchEvent::Delete { key, .. }) => snap.delete(keys, &key),
                Some(WatchEvent::Resync) | None => return Ok(()),
            },
            // A scheduled switchover starts without a key change; while
            // paused this also refreshes the in-flight count.
            _ = tick.tick() => {}
            // The last in-flight session finished: maybe drained now.
            _ = in_flight.idle() => {}
        }
        if tx.is_closed() {
            return Ok(());
        }
        // Publish first, then count (see the hazard in `topology`).
        publish(tx, snap.topology(now_ms()));
        report(tx, snap.switchover_revision, state);
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
        s.put(&keys, &keys.member("a"), &member("a", Role::Primary, 5001));
        s.put(&keys, &keys.member("b"), &member("b", Role::Standby, 5002));
        s.put(&keys, &keys.member("c"), &member("c", Role::Unknown, 5003));
        let t = s.topology(0);
        assert_eq!(t.primary, None, "no leader key: no primary");
        assert_eq!(
            t.standbys.len(),
            1,
            "only running standbys serve reads: {t:?}"
        );
        s.put(&keys, &keys.leader(), b"a");
        let t = s.topology(0);
        assert_eq!(t.primary.as_ref().map(|n| n.port), Some(5001));
        assert_eq!(
            t.standbys
                .iter()
                .map(|n| n.name.as_str())
                .collect::<Vec<_>>(),
            ["b"]
        );
        assert!(!t.paused);
        s.put(&keys, &keys.switchover(), b"{}");
        assert!(s.topology(0).paused);
        s.put(
            &keys,
            &keys.switchover(),
            br#"{"scheduled_at_unix_ms": 1000}"#,
        );
        assert!(!s.topology(999).paused);
        assert!(s.topology(1000).paused);
        // Made against "a": paused while "a" leads or nobody does, not once
        // another member holds the key.
        s.put(&keys, &keys.switchover(), br#"{"from": "a"}"#);
        assert!(s.topology(0).paused);
        s.delete(&keys, &keys.leader());
        assert!(s.topology(0).paused);
        s.put(&keys, &keys.leader(), b"b");
        assert!(!s.topology(0).paused);
    }

    /// Garbage under `/switchover` is no request: no pause, and it also
    /// replaces (ends) a valid request that was pending.
    #[test]
    fn an_unparseable_switchover_never_pauses() {
        let keys = ClusterKeys::new("/pgha", "c1").unwrap();
        let mut s = ClusterSnapshot::default();
        s.put(&keys, &keys.member("a"), &member("a", Role::Primary, 5001));
        s.put(&keys, &keys.leader(), b"a");
        for garbage in [&b"garbage"[..], b"", br#"{"from": 7}"#] {
            s.put(&keys, &keys.switchover(), b"{}");
            assert!(s.topology(0).paused);
            s.put(&keys, &keys.switchover(), garbage);
            let t = s.topology(0);
            assert!(!t.paused, "{garbage:?}");
            assert!(t.primary.is_some());
        }
    }

    #[test]
    fn drained_only_when_paused_with_nothing_in_flight() {
        let mut t = Topology::default();
        assert_eq!(proxy_state(&t, 9), ProxyState::default());
        t.paused = true;
        let hold = t.in_flight.hold();
        let s = proxy_state(&t, 9);
        assert_eq!((s.paused, s.in_flight, s.drained_for), (true, 1, None));
        drop(hold);
        assert_eq!(proxy_state(&t, 9).drained_for, Some(9));
    }
}
