//! What the agent observed about its own node just before deciding: its
//! PostgreSQL, its leader lease, and the bits of runtime memory the rules
//! need (detach promise, last `synchronous_standby_names` change).
//!
//! Hazard: every field is a fresh observation except the ones documented as
//! runtime memory; those are lost when the agent restarts, and the rules are
//! written so that losing them is safe (the core re-issues the action that
//! sets them).

use crate::lsn::{Lsn, WalPos};
use crate::member::{ConnInfo, Detached, Role, Tags};
use crate::sync::SyncStandbyNames;
use crate::time::Millis;
use crate::view::ClusterView;
use serde::{Deserialize, Serialize};

/// What is in the data directory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataDir {
    /// Missing or empty (no `PG_VERSION`).
    #[default]
    Empty,
    /// A cluster without `standby.signal`: it was a primary (or was just
    /// bootstrapped). It never starts as a primary unless this node holds
    /// the lease as an established leader.
    Primary,
    /// A cluster with `standby.signal`.
    Standby,
}

/// One standby connected to this primary (`pg_stat_replication`, streaming).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    /// `application_name`, which pgha sets to the member name.
    pub name: String,
    /// `flush_lsn`: what the standby confirmed as durably flushed.
    pub flush_lsn: Lsn,
}

/// The current `synchronous_standby_names` and when it took effect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncNamesState {
    pub names: SyncStandbyNames,
    /// Runtime memory: the primary's flush LSN read right after the value
    /// was last changed and the change was in effect (after reload, once
    /// every walsender uses it). `None` when unknown (e.g. agent restart);
    /// the core then sets the same value again to learn it.
    pub applied_at: Option<Lsn>,
}

/// The local PostgreSQL.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgState {
    pub data_dir: DataDir,
    pub running: bool,
    /// `Unknown` when not running or the probe failed.
    pub role: Role,
    /// End of WAL durably on disk (see `MemberState::flush_lsn`); for a
    /// stopped server the end of WAL per `pg_controldata` (best effort).
    pub position: WalPos,
    pub replay_lsn: Option<Lsn>,
    /// The member named in `primary_conninfo`, if any.
    pub upstream: Option<String>,
    /// The WAL receiver is streaming from `upstream` right now.
    pub streaming: bool,
    /// Primary only: the standbys streaming from us.
    pub replicas: Vec<ReplicaStatus>,
    /// Primary only: `synchronous_standby_names`.
    pub sync_names: Option<SyncNamesState>,
    /// Writes are refused (the runtime's fence is in place).
    pub fenced: bool,
    /// Runtime memory: when the runtime first saw PostgreSQL not running
    /// (reset when it runs). Drives the leader's restart-or-hand-over rule.
    pub stopped_since: Option<Millis>,
    /// The runtime found that this node's WAL has diverged from the current
    /// leader's timeline (e.g. the WAL receiver fails with "requested
    /// timeline is not a child of this server's history", or
    /// `pg_rewind --dry-run` says a rewind is needed).
    pub diverged: bool,
    /// Runtime memory: the last `pg_rewind` failed; re-clone instead.
    pub rewind_failed: bool,
    /// Not running (or `exiting`), and the control file says a *primary*
    /// shut down cleanly (`shut down`): `position` is then its shutdown
    /// checkpoint, the last record of its WAL.
    #[serde(default)]
    pub clean_shutdown: bool,
    /// The postmaster still runs (`running` is true, `role` unknown) but
    /// the control file already says it shut down cleanly, after a
    /// graceful demote: it accepts no connections and only waits for its
    /// walsenders (standbys flushing the last WAL) and archiver before it
    /// exits. `position` and `clean_shutdown` are read as for a stopped
    /// server. The runtime starts nothing in the data directory before the
    /// postmaster has exited.
    #[serde(default)]
    pub exiting: bool,
    /// Runtime memory: the server runs but has not answered a probe within
    /// its deadline since then (`hung::judge`); `None` once it answers.
    #[serde(default)]
    pub unanswered: Option<crate::hung::Unanswered>,
}

impl PgState {
    pub fn is_running_primary(&self) -> bool {
        self.running && self.role == Role::Primary
    }

    pub fn is_running_standby(&self) -> bool {
        self.running && self.role == Role::Standby
    }
}

/// This node's belief about its leader lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseState {
    /// Local time at which the last *successful* acquire or renew request
    /// was sent (the send time, not the reply time: the DCS started the new
    /// TTL no earlier than that).
    pub renewed_at: Millis,
    /// The TTL the DCS granted.
    pub ttl: Millis,
}

impl LeaseState {
    /// Local time at which the DCS may have expired the lease.
    pub fn expires_at(&self) -> Millis {
        self.renewed_at + self.ttl
    }
}

/// Everything about this node that `decide` needs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalState {
    pub name: String,
    pub api_url: String,
    pub conn: ConnInfo,
    pub tags: Tags,
    pub pg: PgState,
    /// Runtime memory: set when an acquire or renew succeeded, `None` after
    /// a release, a failed renew that found the key gone, or a restart.
    pub lease: Option<LeaseState>,
    /// Runtime memory: set by `DetachFromPrimary`, cleared by any action
    /// that makes PostgreSQL stream from a leader or run as a primary.
    pub detached: Option<Detached>,
    /// Wall clock (Unix milliseconds), only for scheduled switchovers.
    pub unix_time_ms: u64,
    /// The operator asked to re-clone this node (`pgha reinit`).
    pub reinit_requested: bool,
    /// Runtime memory: the switchover request this node first saw due, and
    /// when; bounds the leader's wait for the proxies to drain. Losing it
    /// restarts that wait (bounded again).
    pub switchover_seen: Option<SwitchoverSeen>,
    /// Runtime memory: the last `/sync` write (`WriteSyncKey` or
    /// `HandOver`) whose outcome is unknown (it timed out or failed without
    /// a definite answer). Set by the runtime on such a failure, cleared by
    /// a write that succeeded or was refused; after a restart see
    /// [`SyncInDoubt::after_restart`].
    #[serde(default)]
    pub sync_in_doubt: Option<SyncInDoubt>,
    /// Runtime memory (standby): the failsafe promise this member gave the
    /// leader during a DCS outage (`failsafe::grant`). Losing it is safe:
    /// the promotion rule alone keeps acknowledged commits; the promise only
    /// keeps the leader's writes from being a dead end.
    #[serde(default)]
    pub promise: Option<crate::failsafe::Promise>,
    /// Runtime memory (leader): the failsafe promises it holds and the sync
    /// set they are counted against (`failsafe::writes_may_continue`).
    /// `None` when this node does not lead or did not ask.
    #[serde(default)]
    pub failsafe: Option<crate::failsafe::Confirmations>,
    /// Runtime memory: when this node last killed its hung primary and gave
    /// up the leader key; it then waits (bounded) for another leader instead
    /// of starting PostgreSQL again at once.
    #[serde(default)]
    pub gave_up_hung_at: Option<Millis>,
}

/// A `/sync` write with an unknown outcome: it may have landed, or may
/// still land later, as long as its guard holds: the leader key ours in
/// `term` and `/sync` still at `revision` (the mod revision the write was
/// conditional on). Until a read shows either guard gone, the leader
/// knows neither `/sync`'s content nor whether it is about to change, and
/// relies on nothing in it (see `decide`): it first rewrites the record it
/// reads, conditional on `revision`, which ends the doubt either way.
///
/// Losing this memory (agent restart) must not forget a doubt: a restarted
/// runtime sets it, on its first view that shows the leader key ours, to
/// that term and that view's `/sync` revision (a write sent by the previous
/// process may still be on its way), at the price of one confirming write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncInDoubt {
    /// The term of the record written (the leader key's create revision).
    pub term: u64,
    /// The `/sync` mod revision the write was conditional on.
    pub revision: u64,
}

impl SyncInDoubt {
    /// Whether the write may still land, per this view: the leader key
    /// still names `me` in `term` and `/sync` is still at `revision`.
    /// Otherwise its guard can never hold again (revisions only grow, a
    /// term never returns) and the view shows what is really there.
    /// What a freshly started runtime assumes on its first view: a write
    /// of the previous process may still land if the key is ours.
    pub fn after_restart(view: &ClusterView, me: &str) -> Option<SyncInDoubt> {
        let key = view.leader.as_ref().filter(|l| l.holder == me)?;
        Some(SyncInDoubt {
            term: key.term,
            revision: view.sync_revision,
        })
    }

    pub fn may_still_land(&self, view: &ClusterView, me: &str) -> bool {
        let ours = view
            .leader
            .as_ref()
            .is_some_and(|l| l.holder == me && l.term == self.term);
        ours && view.sync_revision == self.revision
    }
}

/// When this node first saw one switchover request (by its revision) due.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchoverSeen {
    pub revision: u64,
    pub at: Millis,
}

impl SwitchoverSeen {
    /// The runtime's update of this memory before each decision: keep it
    /// while the same request stays due, start it for a new due request,
    /// clear it otherwise.
    pub fn track(
        prev: Option<SwitchoverSeen>,
        view: &ClusterView,
        unix_time_ms: u64,
        now: Millis,
    ) -> Option<SwitchoverSeen> {
        let req = view.switchover.as_ref()?;
        if !req.is_due(unix_time_ms) {
            return None;
        }
        let revision = view.switchover_revision;
        match prev {
            Some(p) if p.revision == revision => Some(p),
            _ => Some(SwitchoverSeen { revision, at: now }),
        }
    }
}
