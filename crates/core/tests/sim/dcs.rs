//! A fake etcd: one global revision, leases that expire on the DCS clock
//! (global simulated time), create-if-absent for the leader and initialize
//! keys, and the `/sync` write guarded by the leader key's value and term
//! (create revision) and by `/sync`'s own mod revision, exactly the primitives the real agent uses
//! (`pgha_dcs::Dcs`).

use pgha_core::{
    ClusterView, DynamicConfig, FailoverRequest, LeaderKey, MemberState, ProxyState,
    SwitchoverRequest, SyncRecord,
};
use std::collections::BTreeMap;

#[derive(Default)]
pub struct Dcs {
    pub revision: u64,
    pub leader: Option<(LeaderKey, u64)>,
    /// lease id -> expiry (global ms)
    pub leases: BTreeMap<u64, u64>,
    next_lease: u64,
    pub members: BTreeMap<String, (MemberState, u64)>,
    pub sync: Option<SyncRecord>,
    /// The revision of the last `/sync` write (0: never written).
    pub sync_revision: u64,
    pub config: DynamicConfig,
    pub switchover: Option<SwitchoverRequest>,
    /// The revision at which `switchover` was written, and the global time.
    pub switchover_revision: u64,
    pub switchover_at: u64,
    pub failover: Option<FailoverRequest>,
    pub initialize: Option<String>,
    /// Proxy records (the simulated proxies never die, so no lease).
    pub proxies: BTreeMap<String, ProxyState>,
    /// Whole outage with a stopped clock until this global time: nothing
    /// expires meanwhile, and every lease gets a full TTL at the end.
    pub frozen_until: u64,
}

impl Dcs {
    pub fn new(config: DynamicConfig) -> Dcs {
        Dcs {
            config,
            ..Default::default()
        }
    }

    pub fn bump(&mut self) -> u64 {
        self.revision += 1;
        self.revision
    }

    /// Drop expired leases (and the leader key with its lease) and expired
    /// member records.
    pub fn expire(&mut self, now: u64) {
        if self.frozen_until > 0 {
            if now < self.frozen_until {
                return;
            }
            self.frozen_until = 0;
            let full = now + self.config.ttl.0;
            for exp in self.leases.values_mut() {
                *exp = (*exp).max(full);
            }
            for (_, exp) in self.members.values_mut() {
                *exp = (*exp).max(full);
            }
        }
        self.leases.retain(|_, exp| *exp > now);
        if let Some((_, lease)) = &self.leader {
            if !self.leases.contains_key(lease) {
                self.leader = None;
                self.bump();
            }
        }
        let before = self.members.len();
        self.members.retain(|_, (_, exp)| *exp > now);
        if self.members.len() != before {
            self.bump();
        }
    }

    pub fn view(&self) -> ClusterView {
        ClusterView {
            leader: self.leader.as_ref().map(|(k, _)| k.clone()),
            members: self
                .members
                .iter()
                .map(|(n, (m, _))| (n.clone(), m.clone()))
                .collect(),
            sync: self.sync.clone(),
            sync_revision: self.sync_revision,
            config: self.config.clone(),
            switchover: self.switchover.clone(),
            switchover_revision: self.switchover_revision,
            failover: self.failover.clone(),
            proxies: self.proxies.clone(),
            initialize: self.initialize.clone(),
        }
    }

    /// `pgha switchover`: write the request (a new revision names it).
    pub fn request_switchover(&mut self, req: SwitchoverRequest, now: u64) {
        self.switchover = Some(req);
        self.switchover_revision = self.bump();
        self.switchover_at = now;
    }

    /// A proxy's put of its record; an unchanged value is not rewritten.
    pub fn publish_proxy(&mut self, name: &str, state: ProxyState) {
        if self.proxies.get(name) != Some(&state) {
            self.proxies.insert(name.to_string(), state);
            self.bump();
        }
    }

    /// create_if_absent(leader, name, new lease); the lease id on success.
    pub fn acquire_leader(&mut self, name: &str, now: u64) -> Option<u64> {
        if self.leader.is_some() {
            return None;
        }
        self.next_lease += 1;
        let lease = self.next_lease;
        self.leases.insert(lease, now + self.config.ttl.0);
        let term = self.bump();
        self.leader = Some((
            LeaderKey {
                holder: name.to_string(),
                term,
            },
            lease,
        ));
        Some(lease)
    }

    /// Keep-alive of the leader key's lease if the key names us.
    pub fn renew_leader(&mut self, name: &str, now: u64) -> bool {
        let ttl = self.config.ttl.0;
        match &self.leader {
            Some((k, lease)) if k.holder == name => {
                self.leases.insert(*lease, now + ttl);
                true
            }
            _ => false,
        }
    }

    pub fn release_leader(&mut self, name: &str) {
        if let Some((k, lease)) = &self.leader {
            if k.holder == name {
                self.leases.remove(lease);
                self.leader = None;
                self.bump();
            }
        }
    }

    /// Revoke the leader lease (fault injection: as if it expired).
    pub fn revoke_leader(&mut self) {
        if let Some((_, lease)) = self.leader.take() {
            self.leases.remove(&lease);
            self.bump();
        }
    }

    /// Whether the leader key names `name` in `term` (its create revision):
    /// the guard of every `/sync` write.
    fn held_in_term(&self, name: &str, term: u64) -> bool {
        self.leader
            .as_ref()
            .is_some_and(|(k, _)| k.holder == name && k.term == term)
    }

    /// put_if_key_equals(sync, leader == name, created in record.term,
    /// sync's mod revision == expected).
    pub fn write_sync(&mut self, record: SyncRecord, name: &str, expected: u64) -> bool {
        if !self.held_in_term(name, record.term) || self.sync_revision != expected {
            return false;
        }
        self.sync = Some(record);
        self.sync_revision = self.bump();
        true
    }

    /// put_and_delete_if_equals(sync, record, leader, name, record.term,
    /// expected): the record and the release in one revision, or nothing.
    pub fn hand_over(&mut self, record: SyncRecord, name: &str, expected: u64) -> bool {
        if !self.held_in_term(name, record.term) || self.sync_revision != expected {
            return false;
        }
        if let Some((_, lease)) = self.leader.take() {
            self.leases.remove(&lease);
        }
        self.sync = Some(record);
        self.sync_revision = self.bump();
        true
    }

    /// Put a member record; rewriting an identical value only refreshes
    /// its lease (a real put would bump the revision; the simulator skips
    /// that so it can cache views).
    pub fn publish(&mut self, m: MemberState, now: u64) {
        let exp = now + self.config.ttl.0;
        if let Some((old, e)) = self.members.get_mut(&m.name) {
            if *old == m {
                *e = exp;
                return;
            }
        }
        self.members.insert(m.name.clone(), (m, exp));
        self.bump();
    }

    pub fn holder(&self) -> Option<&str> {
        self.leader.as_ref().map(|(k, _)| k.holder.as_str())
    }
}
