//! `MemoryStore`: a synchronous, deterministic model of etcd's key-value
//! store with leases, driven by an explicit `now` on every call.
//!
//! No threads, no clock of its own: the deterministic simulator calls it
//! directly with virtual time, and `MemoryDcs` wraps it with a real or
//! manual clock. Before doing anything else every operation expires the
//! leases whose deadline is `<= now` (in deadline order, one revision per
//! lease that still had keys), exactly as if etcd's lessor had run.
//!
//! Hazard: `now` must never go backwards between calls on one store; a
//! backwards clock only delays expiry, it never resurrects a lease.

use crate::api::{GetResponse, KeyValue, Lease, LeaseId, RangeResponse, Revision, WatchEvent};
use crate::error::{DcsError, DcsResult};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

/// How many events the store keeps for watches that start in the past.
const DEFAULT_HISTORY: usize = 10_000;

#[derive(Debug, Clone)]
struct LeaseState {
    ttl_secs: i64,
    expires_at: Instant,
    keys: BTreeSet<String>,
}

/// Events older than the retained history were requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("revision {requested} is compacted (oldest kept: {oldest})")]
pub struct Compacted {
    pub requested: Revision,
    pub oldest: Revision,
}

/// The in-memory store. See the module docs.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    revision: Revision,
    kvs: BTreeMap<String, KeyValue>,
    leases: BTreeMap<LeaseId, LeaseState>,
    next_lease: i64,
    history: VecDeque<WatchEvent>,
    history_limit: usize,
    /// Every event with a revision `<= compacted` has been dropped.
    compacted: Revision,
    min_ttl_secs: i64,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store at revision 1 (etcd's starting revision), with a
    /// minimum lease TTL of 1 s.
    pub fn new() -> Self {
        MemoryStore {
            revision: 1,
            kvs: BTreeMap::new(),
            leases: BTreeMap::new(),
            next_lease: 0x1000,
            history: VecDeque::new(),
            history_limit: DEFAULT_HISTORY,
            compacted: 0,
            min_ttl_secs: 1,
        }
    }

    /// Raise granted TTLs to at least `secs`, as etcd does (its minimum is
    /// 2 s with default election timing).
    pub fn with_min_ttl(mut self, secs: i64) -> Self {
        self.min_ttl_secs = secs.max(1);
        self
    }

    /// Keep at most `events` events of history for watches from the past.
    pub fn with_history_limit(mut self, events: usize) -> Self {
        self.history_limit = events.max(1);
        self
    }

    /// The current revision (of the last write), after expiring at `now`.
    pub fn revision(&mut self, now: Instant) -> Revision {
        self.expire(now);
        self.revision
    }

    /// The earliest lease deadline, so a driver knows when to call again.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.leases.values().map(|l| l.expires_at).min()
    }

    /// Expire every lease whose deadline is `<= now`, deleting its keys.
    pub fn expire(&mut self, now: Instant) {
        let mut due: Vec<(Instant, LeaseId)> = self
            .leases
            .iter()
            .filter(|(_, l)| l.expires_at <= now)
            .map(|(id, l)| (l.expires_at, *id))
            .collect();
        due.sort();
        for (_, id) in due {
            self.drop_lease(id);
        }
    }

    /// Grant a lease of `ttl_secs` (raised to the minimum TTL).
    pub fn grant_lease(&mut self, now: Instant, ttl_secs: i64) -> DcsResult<Lease> {
        self.expire(now);
        check_ttl(ttl_secs)?;
        let ttl_secs = ttl_secs.max(self.min_ttl_secs);
        self.next_lease += 1;
        let id = LeaseId(self.next_lease);
        let state = LeaseState {
            ttl_secs,
            expires_at: now + secs(ttl_secs),
            keys: BTreeSet::new(),
        };
        self.leases.insert(id, state);
        Ok(Lease { id, ttl_secs })
    }

    /// Renew a lease to its full TTL from `now`.
    pub fn keep_alive(&mut self, now: Instant, id: LeaseId) -> DcsResult<i64> {
        self.expire(now);
        let lease = self.leases.get_mut(&id).ok_or(DcsError::LeaseExpired(id))?;
        lease.expires_at = now + secs(lease.ttl_secs);
        Ok(lease.ttl_secs)
    }

    /// Seconds left on a lease (rounded down), without renewing it.
    pub fn lease_remaining(&mut self, now: Instant, id: LeaseId) -> DcsResult<Duration> {
        self.expire(now);
        let lease = self.leases.get(&id).ok_or(DcsError::LeaseExpired(id))?;
        Ok(lease.expires_at.saturating_duration_since(now))
    }

    /// Revoke a lease, deleting its keys.
    pub fn revoke_lease(&mut self, now: Instant, id: LeaseId) -> DcsResult<()> {
        self.expire(now);
        if !self.leases.contains_key(&id) {
            return Err(DcsError::LeaseExpired(id));
        }
        self.drop_lease(id);
        Ok(())
    }

    pub fn get(&mut self, now: Instant, key: &str) -> GetResponse {
        self.expire(now);
        GetResponse {
            kv: self.kvs.get(key).cloned(),
            revision: self.revision,
        }
    }

    pub fn get_prefix(&mut self, now: Instant, prefix: &str) -> RangeResponse {
        self.expire(now);
        let kvs = self
            .kvs
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, kv)| kv.clone())
            .collect();
        RangeResponse {
            kvs,
            revision: self.revision,
        }
    }

    pub fn put(
        &mut self,
        now: Instant,
        key: &str,
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> DcsResult<Revision> {
        self.expire(now);
        self.check_lease(lease)?;
        Ok(self.write(key, value, lease))
    }

    pub fn delete(&mut self, now: Instant, key: &str) -> bool {
        self.expire(now);
        if !self.kvs.contains_key(key) {
            return false;
        }
        self.revision += 1;
        self.remove(key);
        true
    }

    pub fn create_if_absent(
        &mut self,
        now: Instant,
        key: &str,
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> DcsResult<bool> {
        self.compare_and_swap(now, key, value, 0, lease)
    }

    pub fn compare_and_swap(
        &mut self,
        now: Instant,
        key: &str,
        value: &[u8],
        expected: Revision,
        lease: Option<LeaseId>,
    ) -> DcsResult<bool> {
        self.expire(now);
        if self.mod_revision(key) != expected {
            return Ok(false);
        }
        self.check_lease(lease)?;
        self.write(key, value, lease);
        Ok(true)
    }

    /// The mod revision of `key`, 0 when absent.
    fn mod_revision(&self, key: &str) -> Revision {
        self.kvs.get(key).map_or(0, |kv| kv.mod_revision)
    }

    // The arguments of `Dcs::put_if_key_equals`, plus `now`.
    #[allow(clippy::too_many_arguments)]
    pub fn put_if_key_equals(
        &mut self,
        now: Instant,
        key: &str,
        value: &[u8],
        guard_key: &str,
        guard_value: &[u8],
        guard_created: Revision,
        expected: Revision,
    ) -> bool {
        self.expire(now);
        if !self.holds_in_term(guard_key, guard_value, guard_created)
            || self.mod_revision(key) != expected
        {
            return false;
        }
        self.write(key, value, None);
        true
    }

    pub fn delete_if_equals(&mut self, now: Instant, key: &str, value: &[u8]) -> bool {
        self.expire(now);
        if !self.holds(key, value) {
            return false;
        }
        self.revision += 1;
        self.remove(key);
        true
    }

    /// Put `put_key` and delete `del_key` in one revision, only while
    /// `del_key` holds `expected` and was created at `del_created` and
    /// `put_key` was last written at `put_expected` (0 = absent); nothing
    /// happens otherwise.
    #[allow(clippy::too_many_arguments)] // as put_if_key_equals
    pub fn put_and_delete_if_equals(
        &mut self,
        now: Instant,
        put_key: &str,
        value: &[u8],
        del_key: &str,
        expected: &[u8],
        del_created: Revision,
        put_expected: Revision,
    ) -> bool {
        self.expire(now);
        if !self.holds_in_term(del_key, expected, del_created)
            || self.mod_revision(put_key) != put_expected
        {
            return false;
        }
        self.write(put_key, value, None);
        self.remove(del_key);
        true
    }

    /// Events with revision `>= from` under `prefix`, oldest first.
    pub fn events_since(
        &mut self,
        now: Instant,
        from: Revision,
        prefix: &str,
    ) -> Result<Vec<WatchEvent>, Compacted> {
        self.expire(now);
        if from <= self.compacted {
            return Err(Compacted {
                requested: from,
                oldest: self.compacted + 1,
            });
        }
        let start = self
            .history
            .partition_point(|e| e.revision().is_some_and(|r| r < from));
        Ok(self
            .history
            .range(start..)
            .filter(|e| e.key().is_some_and(|k| k.starts_with(prefix)))
            .cloned()
            .collect())
    }

    fn holds(&self, key: &str, value: &[u8]) -> bool {
        self.kvs.get(key).is_some_and(|kv| kv.value == value)
    }

    /// `key` holds `value` and was created at `created` (its term).
    fn holds_in_term(&self, key: &str, value: &[u8], created: Revision) -> bool {
        self.kvs
            .get(key)
            .is_some_and(|kv| kv.value == value && kv.create_revision == created)
    }

    fn check_lease(&self, lease: Option<LeaseId>) -> DcsResult<()> {
        match lease {
            Some(id) if !self.leases.contains_key(&id) => Err(DcsError::LeaseExpired(id)),
            _ => Ok(()),
        }
    }

    /// Write one key in a new revision; the lease must exist.
    fn write(&mut self, key: &str, value: &[u8], lease: Option<LeaseId>) -> Revision {
        self.revision += 1;
        let rev = self.revision;
        let create_revision = self.kvs.get(key).map_or(rev, |kv| kv.create_revision);
        self.detach(key);
        if let Some(id) = lease {
            if let Some(l) = self.leases.get_mut(&id) {
                l.keys.insert(key.to_string());
            }
        }
        let kv = KeyValue {
            key: key.to_string(),
            value: value.to_vec(),
            create_revision,
            mod_revision: rev,
            lease,
        };
        self.kvs.insert(key.to_string(), kv.clone());
        self.record(WatchEvent::Put(kv));
        rev
    }

    /// Delete one key at the current revision (the caller bumped it).
    fn remove(&mut self, key: &str) {
        self.detach(key);
        if self.kvs.remove(key).is_some() {
            let ev = WatchEvent::Delete {
                key: key.to_string(),
                revision: self.revision,
            };
            self.record(ev);
        }
    }

    fn detach(&mut self, key: &str) {
        let old = self.kvs.get(key).and_then(|kv| kv.lease);
        if let Some(l) = old.and_then(|id| self.leases.get_mut(&id)) {
            l.keys.remove(key);
        }
    }

    fn drop_lease(&mut self, id: LeaseId) {
        let Some(lease) = self.leases.remove(&id) else {
            return;
        };
        if lease.keys.is_empty() {
            return;
        }
        self.revision += 1;
        for key in &lease.keys {
            if self.kvs.remove(key).is_some() {
                let ev = WatchEvent::Delete {
                    key: key.clone(),
                    revision: self.revision,
                };
                self.record(ev);
            }
        }
    }

    fn record(&mut self, ev: WatchEvent) {
        self.history.push_back(ev);
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.compacted = self.compacted.max(old.revision().unwrap_or(0));
            }
        }
    }
}

fn secs(s: i64) -> Duration {
    Duration::from_secs(u64::try_from(s).unwrap_or(0))
}

/// TTLs are whole seconds, at least 1 (etcd's unit).
pub(crate) fn check_ttl(ttl_secs: i64) -> DcsResult<()> {
    if ttl_secs < 1 {
        return Err(DcsError::other(
            "grant_lease",
            format!("lease TTL must be at least 1 second, got {ttl_secs}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
