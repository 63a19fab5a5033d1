//! The actions `decide` asks the runtime to execute, and the `Decision` that
//! carries them with a human-readable reason.
//!
//! Runtime contract, for every action: execute the actions of one decision
//! in order; stop at the first one that fails (log it with the decision's
//! reason) and observe again before deciding anew. Every action is
//! idempotent from the core's point of view: if the runtime crashes halfway,
//! the next decision asks for whatever is still missing.
//!
//! Hazard: the ordering inside one decision is part of the safety argument
//! (e.g. `WriteSyncKey` before `Promote`); never reorder or run them
//! concurrently.

use crate::member::{ConnInfo, MemberState};
use crate::sync::SyncStandbyNames;
use crate::time::Millis;
use crate::view::SyncRecord;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A member to replicate from: name (for `application_name`-based slots and
/// logs) and where to connect.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Upstream {
    pub name: String,
    pub conn: ConnInfo,
}

/// How a primary stops being one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DemoteKind {
    /// Switchover: `pg_ctl stop -m fast` (a clean shutdown: the walsenders
    /// send all WAL, including the shutdown checkpoint, and wait for the
    /// standbys to confirm it), then write `standby.signal` with an empty
    /// `primary_conninfo`, and leave PostgreSQL stopped. No rewind needed
    /// later. The leader key is released by a later decision.
    Graceful,
    /// Lost the lease to another node: `pg_ctl stop -m immediate` now. The
    /// data directory stays a former primary; it rejoins with `Rewind`.
    Immediate,
    /// The server is hung (`hung.rs`): an immediate stop that does not end
    /// the postmaster within a second is followed by SIGKILL to the
    /// postmaster and every one of its children. Done only when every
    /// process of the server is gone (a frozen process cannot be asked).
    Kill,
}

/// One step for the runtime. See each variant for what it must do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum Action {
    /// Put this record under `members/<name>` with the member's own lease
    /// (TTL = the leader TTL), creating the lease if needed.
    PublishMember(MemberState),
    /// `create_if_absent(initialize, <name>)`: race to bootstrap. Losing is
    /// not an error; the next view shows the winner.
    AcquireInitialize,
    /// Remove any partial data directory, run `initdb`, write the config,
    /// leave PostgreSQL stopped. Setup SQL after the first start (roles)
    /// must run with `synchronous_commit = local`, since the first primary
    /// may wait for a standby that does not exist yet.
    Bootstrap,
    /// Grant a lease of the configured TTL and `create_if_absent(leader,
    /// <name>, lease)`. On success set `LocalState::lease` (renewed_at =
    /// send time). Losing the race is not an error.
    AcquireLeader,
    /// Keep the leader lease alive (keep-alive on the lease id of the
    /// leader key, which may be adopted after an agent restart). On success
    /// update `LocalState::lease`; if the key is gone or not ours, set it to
    /// `None`; on a timeout leave it unchanged (it ages toward fencing).
    RenewLeader,
    /// Delete the leader key if it still names us (`delete_if_equals`), and
    /// revoke the lease; set `LocalState::lease` to `None`.
    ReleaseLeader,
    /// Write `/sync` with this record, only while the leader key is ours
    /// in the record's term (`put_if_key_equals(leader, <name>,
    /// record.term, expected)`: the key's value and its create revision),
    /// so that a write decided in an earlier reign of this member never
    /// lands, and only while `/sync` still has the mod revision `expected`
    /// = `ClusterView::sync_revision` of the view this decision was made
    /// from, so that a delayed write never lands over a newer record of
    /// the same term (a decision holds at most one `/sync` write). If the
    /// guard fails nothing was written and the action fails. If the outcome
    /// is unknown (timeout), set `LocalState::sync_in_doubt` to (record
    /// term, expected) and fail; on a definite answer clear it.
    WriteSyncKey(SyncRecord),
    /// A switchover's hand-over after the clean shutdown: write `/sync`
    /// with this record (it carries the final position) and delete the
    /// leader key, in one DCS transaction, only while the leader key names
    /// us in the record's term and `/sync` still has the view's mod
    /// revision (`put_and_delete_if_equals(sync, record, leader, <name>,
    /// record.term, expected)`, as for `WriteSyncKey`, including
    /// `sync_in_doubt`). If the guard fails, nothing is
    /// written and the action fails. On success the
    /// rest is as for `ReleaseLeader`: revoke the lease, set
    /// `LocalState::lease` to `None`. One write instead of `WriteSyncKey`
    /// then `ReleaseLeader`: the target sees the final position and the
    /// free key in the same revision, one agent loop sooner. `decide` puts
    /// this node's `PublishMember` after it (not first as usual), so that
    /// no write wakes the target while the key is still held.
    HandOver(SyncRecord),
    /// Set `synchronous_standby_names` (ALTER SYSTEM + reload), wait until
    /// the new value is in effect, then record the primary's flush LSN as
    /// `SyncNamesState::applied_at`.
    SetSyncStandbyNames(SyncStandbyNames),
    /// Start PostgreSQL as a primary (no `standby.signal`) with this
    /// `synchronous_standby_names` already in the config, so that the first
    /// commit is already synchronous; record `applied_at` once it runs.
    StartAsPrimary { sync_names: SyncStandbyNames },
    /// Set `synchronous_standby_names`, then `pg_promote()` and wait until
    /// it is writable; record `applied_at`. Clears `LocalState::detached`.
    Promote { sync_names: SyncStandbyNames },
    /// Write `standby.signal` and `primary_conninfo` for `upstream`
    /// (empty for `None`: recovery without streaming), then start.
    StartAsStandby { upstream: Option<Upstream> },
    /// Point `primary_conninfo` at the leader and reload (PostgreSQL 13+
    /// restarts the WAL receiver; no restart). Clears `detached`.
    FollowLeader(Upstream),
    /// Stop the WAL receiver for a failover vote: set `primary_conninfo`
    /// to empty persistently (so that a restart does not reconnect), reload,
    /// wait until `pg_stat_wal_receiver` is empty, then set
    /// `LocalState::detached = Some(Detached { after_term })` and report the
    /// now-final position in the next observation.
    DetachFromPrimary { after_term: u64 },
    /// Data directory is empty: `pg_basebackup` from the upstream (through
    /// its slot for us), configure as its standby, leave stopped.
    CloneFromLeader(Upstream),
    /// Stop PostgreSQL if running, run `pg_rewind` against the upstream,
    /// configure as its standby, leave stopped. On failure set
    /// `PgState::rewind_failed` (the core then asks for `Reclone`).
    Rewind(Upstream),
    /// Stop PostgreSQL if running, move the data directory aside, clone
    /// again as for `CloneFromLeader`; clears `rewind_failed` and the reinit
    /// request.
    Reclone(Upstream),
    /// Stop being a primary, see [`DemoteKind`].
    Demote(DemoteKind),
    /// Stop accepting writes on this primary without stopping reads: set
    /// `default_transaction_read_only = on`, reload, and terminate client
    /// backends that are not read-only. Safety never depends on it.
    Fence,
    /// Undo `Fence`.
    Unfence,
    /// Delete the `/switchover` key.
    ClearSwitchover,
    /// Delete the `/failover` key.
    ClearFailover,
}

impl Action {
    /// A short, stable, snake_case name of the action's kind (metrics
    /// labels, event kinds): no data, unlike `Display`.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::PublishMember(_) => "publish_member",
            Action::AcquireInitialize => "acquire_initialize",
            Action::Bootstrap => "bootstrap",
            Action::AcquireLeader => "acquire_leader",
            Action::RenewLeader => "renew_leader",
            Action::ReleaseLeader => "release_leader",
            Action::WriteSyncKey(_) => "write_sync_key",
            Action::HandOver(_) => "hand_over",
            Action::SetSyncStandbyNames(_) => "set_sync_standby_names",
            Action::StartAsPrimary { .. } => "start_as_primary",
            Action::Promote { .. } => "promote",
            Action::StartAsStandby { .. } => "start_as_standby",
            Action::FollowLeader(_) => "follow_leader",
            Action::DetachFromPrimary { .. } => "detach_from_primary",
            Action::CloneFromLeader(_) => "clone_from_leader",
            Action::Rewind(_) => "rewind",
            Action::Reclone(_) => "reclone",
            Action::Demote(_) => "demote",
            Action::Fence => "fence",
            Action::Unfence => "unfence",
            Action::ClearSwitchover => "clear_switchover",
            Action::ClearFailover => "clear_failover",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::PublishMember(_) => write!(f, "publish member state"),
            Action::WriteSyncKey(r) => write!(f, "write /sync term {} {}", r.term, r.set),
            Action::HandOver(r) => match &r.handoff {
                Some(h) => write!(
                    f,
                    "hand over to {} (write /sync term {} and release the leader key)",
                    h.to, r.term
                ),
                None => write!(f, "write /sync term {} and release the leader key", r.term),
            },
            Action::SetSyncStandbyNames(n) => write!(f, "set synchronous_standby_names {n}"),
            Action::StartAsPrimary { sync_names } => {
                write!(
                    f,
                    "start as primary with synchronous_standby_names {sync_names}"
                )
            }
            Action::Promote { sync_names } => {
                write!(f, "promote with synchronous_standby_names {sync_names}")
            }
            Action::StartAsStandby { upstream } => match upstream {
                Some(u) => write!(f, "start as standby of {}", u.name),
                None => write!(f, "start as standby without upstream"),
            },
            Action::FollowLeader(u) => write!(f, "follow {}", u.name),
            Action::DetachFromPrimary { after_term } => {
                write!(f, "detach from primary (after term {after_term})")
            }
            Action::CloneFromLeader(u) => write!(f, "clone from {}", u.name),
            Action::Rewind(u) => write!(f, "rewind from {}", u.name),
            Action::Reclone(u) => write!(f, "re-clone from {}", u.name),
            Action::Demote(kind) => write!(f, "demote ({kind:?})"),
            other => write!(f, "{}", variant_name(other)),
        }
    }
}

fn variant_name(a: &Action) -> &'static str {
    match a {
        Action::AcquireInitialize => "acquire initialize key",
        Action::Bootstrap => "bootstrap (initdb)",
        Action::AcquireLeader => "acquire leader lease",
        Action::RenewLeader => "renew leader lease",
        Action::ReleaseLeader => "release leader lease",
        Action::Fence => "fence (refuse writes)",
        Action::Unfence => "unfence",
        Action::ClearSwitchover => "clear switchover request",
        Action::ClearFailover => "clear failover request",
        _ => "action",
    }
}

/// What `decide` returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// In execution order.
    pub actions: Vec<Action>,
    /// Why, in one line, for the log and `/cluster` (also when there are no
    /// actions: "no safe candidate: ...").
    pub reason: String,
    /// When to decide again at the latest: the loop interval, or zero after
    /// a step whose outcome the next decision needs at once (the runtime
    /// should still wait a few ms between loops to avoid spinning).
    pub wake_in: Millis,
}

impl Decision {
    /// The actions other than `PublishMember` (which nearly every decision
    /// carries), for tests and logs.
    pub fn steps(&self) -> Vec<&Action> {
        self.actions
            .iter()
            .filter(|a| !matches!(a, Action::PublishMember(_)))
            .collect()
    }

    /// The record this decision publishes, if any.
    pub fn published(&self) -> Option<&MemberState> {
        self.actions.iter().find_map(|a| match a {
            Action::PublishMember(m) => Some(m),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::SyncSet;

    #[test]
    fn actions_serialize_with_a_tag() {
        let a = Action::SetSyncStandbyNames(SyncStandbyNames::Quorum(SyncSet::new(["n2"], 1)));
        let json = serde_json::to_string(&a).unwrap();
        assert!(
            json.starts_with(r#"{"action":"set_sync_standby_names""#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Action>(&json).unwrap(), a);
        for names in [SyncStandbyNames::Async, SyncStandbyNames::AnyStandby] {
            let a = Action::Promote {
                sync_names: names.clone(),
            };
            let json = serde_json::to_string(&a).unwrap();
            assert_eq!(serde_json::from_str::<Action>(&json).unwrap(), a);
            let a = Action::SetSyncStandbyNames(names);
            let json = serde_json::to_string(&a).unwrap();
            assert_eq!(serde_json::from_str::<Action>(&json).unwrap(), a);
        }
        let a = Action::Demote(DemoteKind::Graceful);
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<Action>(&json).unwrap(), a);
        let d = Action::DetachFromPrimary { after_term: 7 };
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, r#"{"action":"detach_from_primary","after_term":7}"#);
    }

    #[test]
    fn actions_display_for_logs() {
        assert_eq!(Action::RenewLeader.to_string(), "renew leader lease");
        assert_eq!(
            Action::SetSyncStandbyNames(SyncStandbyNames::Async).to_string(),
            "set synchronous_standby_names '' (asynchronous)"
        );
    }
}
