//! Builders for unit tests of the decision rules: a cluster view and a
//! local observation in a few chained calls.

use crate::local::{DataDir, LeaseState, LocalState, ReplicaStatus, SyncNamesState};
use crate::lsn::{Lsn, WalPos};
use crate::member::{ConnInfo, Detached, MemberState, Role};
use crate::sync::{SyncSet, SyncStandbyNames};
use crate::time::Millis;
use crate::view::{
    ClusterView, DcsView, DynamicConfig, FailoverRequest, LeaderKey, ProxyState, SwitchoverRequest,
    SyncRecord,
};

pub fn pos(tl: u32, lsn: u64) -> WalPos {
    WalPos::new(tl, lsn)
}

pub fn set(members: &[&str], k: u32) -> SyncSet {
    SyncSet::new(members.iter().copied(), k)
}

pub fn quorum(members: &[&str], k: u32) -> SyncStandbyNames {
    SyncStandbyNames::Quorum(set(members, k))
}

fn member(name: &str) -> MemberState {
    MemberState {
        name: name.into(),
        api_url: format!("http://{name}:8008"),
        conn: ConnInfo {
            host: name.into(),
            port: 5432,
        },
        ..Default::default()
    }
}

/// Builds a `ClusterView` of an initialized cluster.
pub struct View(pub ClusterView);

impl View {
    pub fn new() -> View {
        View(ClusterView {
            initialize: Some("node1".into()),
            ..Default::default()
        })
    }

    pub fn uninitialized() -> View {
        View(ClusterView::default())
    }

    pub fn leader(mut self, holder: &str, term: u64) -> View {
        self.0.leader = Some(LeaderKey {
            holder: holder.into(),
            term,
        });
        self
    }

    pub fn sync(mut self, term: u64, leader: &str, members: &[&str], k: u32) -> View {
        self.0.sync = Some(SyncRecord {
            term,
            leader: leader.into(),
            set: set(members, k),
            handoff: None,
        });
        self
    }

    /// Leader key and a `/sync` record of the same term.
    pub fn established(self, holder: &str, term: u64, members: &[&str], k: u32) -> View {
        self.leader(holder, term).sync(term, holder, members, k)
    }

    pub fn primary(mut self, name: &str, p: WalPos) -> View {
        let m = MemberState {
            role: Role::Primary,
            pg_running: true,
            timeline: p.timeline,
            flush_lsn: p.lsn,
            ..member(name)
        };
        self.0.members.insert(name.into(), m);
        self
    }

    pub fn standby(mut self, name: &str, upstream: Option<&str>, p: WalPos) -> View {
        let m = MemberState {
            role: Role::Standby,
            pg_running: true,
            timeline: p.timeline,
            flush_lsn: p.lsn,
            streaming_from: upstream.map(Into::into),
            ..member(name)
        };
        self.0.members.insert(name.into(), m);
        self
    }

    pub fn detached(self, name: &str, after_term: u64, p: WalPos) -> View {
        let mut v = self.standby(name, None, p);
        if let Some(m) = v.0.members.get_mut(name) {
            m.detached = Some(Detached { after_term });
        }
        v
    }

    pub fn edit_member(mut self, name: &str, f: impl FnOnce(&mut MemberState)) -> View {
        if let Some(m) = self.0.members.get_mut(name) {
            f(m);
        }
        self
    }

    pub fn config(mut self, f: impl FnOnce(&mut DynamicConfig)) -> View {
        f(&mut self.0.config);
        self
    }

    /// The `/sync` record (set before) names a hand-over to `to`.
    pub fn handoff(mut self, to: &str, final_position: Option<WalPos>) -> View {
        if let Some(s) = self.0.sync.as_mut() {
            s.handoff = Some(crate::view::Handoff {
                to: to.into(),
                final_position,
            });
        }
        self
    }

    pub fn switchover(mut self, from: Option<&str>, to: Option<&str>) -> View {
        self.0.switchover = Some(SwitchoverRequest {
            from: from.map(Into::into),
            to: to.map(Into::into),
            scheduled_at_unix_ms: None,
        });
        self.0.switchover_revision = 77;
        self
    }

    /// A registered proxy; `drained_for` = the switchover revision it
    /// drained for.
    pub fn proxy(mut self, name: &str, in_flight: u64, drained_for: Option<u64>) -> View {
        self.0.proxies.insert(
            name.into(),
            ProxyState {
                paused: true,
                in_flight,
                drained_for,
            },
        );
        self
    }

    pub fn failover(mut self, to: &str, allow_data_loss: bool) -> View {
        self.0.failover = Some(FailoverRequest {
            to: to.into(),
            allow_data_loss,
        });
        self
    }

    pub fn build(self) -> DcsView {
        DcsView::Known(self.0)
    }
}

/// Builds a `LocalState`.
pub struct Node(pub LocalState);

impl Node {
    pub fn new(name: &str) -> Node {
        let m = member(name);
        Node(LocalState {
            name: name.into(),
            api_url: m.api_url,
            conn: m.conn,
            ..Default::default()
        })
    }

    pub fn running_primary(mut self, p: WalPos) -> Node {
        let pg = &mut self.0.pg;
        pg.data_dir = DataDir::Primary;
        pg.running = true;
        pg.role = Role::Primary;
        pg.position = p;
        self
    }

    pub fn running_standby(mut self, upstream: Option<&str>, p: WalPos) -> Node {
        let pg = &mut self.0.pg;
        pg.data_dir = DataDir::Standby;
        pg.running = true;
        pg.role = Role::Standby;
        pg.position = p;
        pg.upstream = upstream.map(Into::into);
        pg.streaming = upstream.is_some();
        self
    }

    pub fn stopped(mut self, data: DataDir, p: WalPos) -> Node {
        let pg = &mut self.0.pg;
        pg.data_dir = data;
        pg.running = false;
        pg.role = Role::Unknown;
        pg.position = p;
        self
    }

    /// Shut down cleanly after a graceful demote (`standby.signal` written)
    /// while the postmaster still exits: see `PgState::exiting`.
    pub fn exiting(mut self, p: WalPos) -> Node {
        self = self.stopped(DataDir::Standby, p);
        let pg = &mut self.0.pg;
        pg.running = true;
        pg.exiting = true;
        pg.clean_shutdown = true;
        self
    }

    pub fn lease(mut self, renewed_at: u64) -> Node {
        self.0.lease = Some(LeaseState {
            renewed_at: Millis(renewed_at),
            ttl: DynamicConfig::default().ttl,
        });
        self
    }

    pub fn detached(mut self, after_term: u64) -> Node {
        self.0.detached = Some(Detached { after_term });
        self.0.pg.upstream = None;
        self.0.pg.streaming = false;
        self
    }

    pub fn replicas(mut self, reps: &[(&str, u64)]) -> Node {
        self.0.pg.replicas = reps
            .iter()
            .map(|(n, l)| ReplicaStatus {
                name: n.to_string(),
                flush_lsn: Lsn(*l),
            })
            .collect();
        self
    }

    pub fn names(mut self, names: SyncStandbyNames, applied_at: Option<u64>) -> Node {
        self.0.pg.sync_names = Some(SyncNamesState {
            names,
            applied_at: applied_at.map(Lsn),
        });
        self
    }

    pub fn edit(mut self, f: impl FnOnce(&mut LocalState)) -> Node {
        f(&mut self.0);
        self
    }
}
