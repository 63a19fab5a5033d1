//! What the DCS says: the cluster view every agent reads at the start of a
//! loop, plus the dynamic (cluster-wide) configuration.
//!
//! Hazard: [`DcsView::Unknown`] is a real value. When the read failed the
//! node does not know who leads, and the decision step acts as if the
//! worst case were true (it fences a primary whose lease may be expiring).

use crate::lsn::WalPos;
use crate::member::MemberState;
use crate::sync::SyncSet;
use crate::time::Millis;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The leader key: who holds the leader lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderKey {
    /// The member name stored as the key's value.
    pub holder: String,
    /// The key's etcd `create_revision`: unique and increasing for every
    /// acquisition, so it names one "reign" of one holder (its term).
    pub term: u64,
}

/// The `/sync` record, written only by the leader while it holds the key.
///
/// `term` and `leader` name the reign that wrote it. A leader whose key
/// term equals `term` is *established*: it has claimed the term, and only
/// then may it promote, start as primary, accept writes, or be followed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRecord {
    pub term: u64,
    pub leader: String,
    /// S and k: promotion needs the final LSN of |S| - k + 1 members of S.
    #[serde(flatten)]
    pub set: SyncSet,
    /// A switchover in progress: the member this leader hands over to and,
    /// once its PostgreSQL has shut down cleanly, where its WAL ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff: Option<Handoff>,
}

/// The leader's record of a planned hand-over (in `/sync`, so written only
/// while it holds the leader key, and gone with the next leader's claim).
///
/// Why the target may promote on it alone: the leader was established, so
/// its WAL holds every acknowledged commit; after a clean shutdown nothing
/// follows `final_position` (the shutdown checkpoint record) and the
/// stopped server never runs as a primary again without the key. A target
/// whose WAL reaches `final_position` on the same timeline therefore holds
/// every acknowledged commit, whatever the other standbys report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handoff {
    pub to: String,
    /// Start of the shutdown checkpoint record, from the control file of
    /// the cleanly stopped server; `None` while it still runs.
    #[serde(default)]
    pub final_position: Option<WalPos>,
}

impl SyncRecord {
    /// The completed hand-over to `name`: the position its WAL must reach.
    pub fn handoff_to(&self, name: &str) -> Option<WalPos> {
        let h = self.handoff.as_ref()?;
        (h.to == name).then_some(h.final_position).flatten()
    }
}

/// Cluster-wide settings kept in the DCS (`pgha edit-config`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DynamicConfig {
    /// Maintenance mode: nothing automatic except publishing member state
    /// and renewing the leader lease.
    pub paused: bool,
    /// Leader lease TTL. Whole seconds with etcd. Default 2 s.
    #[serde(rename = "ttl_ms")]
    pub ttl: Millis,
    /// Interval between decision loops. Default 500 ms.
    #[serde(rename = "loop_wait_ms")]
    pub loop_wait: Millis,
    /// A primary fences itself when its lease is this close to expiring
    /// without a successful renew. Default 500 ms.
    #[serde(rename = "fence_margin_ms")]
    pub fence_margin: Millis,
    /// k: how many synchronous standbys must hold a commit before it is
    /// acknowledged (`ANY k (...)`). Default 1.
    pub sync_quorum: u32,
    /// With no healthy standby, switch to asynchronous replication instead
    /// of blocking writes. Default false (durability first).
    pub allow_async_fallback: bool,
    /// Extra limit: a candidate lagging the last position the old primary
    /// published by more than this many bytes does not promote. Default none.
    pub max_lag_on_failover: Option<u64>,
    /// The leader hands over when its PostgreSQL has not come back up
    /// within this time after stopping. Default 5 s.
    #[serde(rename = "primary_start_timeout_ms")]
    pub primary_start_timeout: Millis,
    /// A switchover target must be within this many bytes of the primary
    /// before the primary shuts down. Default 16 MiB.
    pub switchover_max_lag: u64,
    /// How long the leader waits, from the moment a switchover request is
    /// due, for every registered proxy to report that it has paused and
    /// has no transaction in flight on the primary. After that it shuts
    /// down anyway (transactions still open then fail). Default 5 s.
    #[serde(rename = "switchover_drain_timeout_ms")]
    pub switchover_drain_timeout: Millis,
    /// While the DCS is unreachable, the leader keeps taking writes past its
    /// lease as long as k members of the sync set promise over the agents'
    /// API not to promote (`failsafe.rs`). Default on.
    pub failsafe_mode: bool,
    /// A running PostgreSQL that answers no probe and writes no WAL for
    /// this long is treated as failed (`hung.rs`). Default 6 s.
    #[serde(rename = "hung_timeout_ms")]
    pub hung_timeout: Millis,
}

impl Default for DynamicConfig {
    fn default() -> Self {
        DynamicConfig {
            paused: false,
            ttl: Millis(2000),
            loop_wait: Millis(500),
            fence_margin: Millis(500),
            sync_quorum: 1,
            allow_async_fallback: false,
            max_lag_on_failover: None,
            primary_start_timeout: Millis(5000),
            switchover_max_lag: 16 << 20,
            switchover_drain_timeout: Millis(5000),
            failsafe_mode: true,
            hung_timeout: Millis(6000),
        }
    }
}

impl DynamicConfig {
    /// Check the timing relations the decision rules rely on.
    pub fn validate(&self) -> Result<(), String> {
        if self.ttl.0 == 0 || self.loop_wait.0 == 0 {
            return Err("ttl and loop_wait must be positive".into());
        }
        if self.fence_margin >= self.ttl {
            return Err(format!(
                "fence_margin ({}) must be smaller than ttl ({})",
                self.fence_margin, self.ttl
            ));
        }
        if self.loop_wait + self.fence_margin >= self.ttl {
            return Err(format!(
                "loop_wait ({}) + fence_margin ({}) must be smaller than ttl ({}): \
                 the leader must get at least one renew in before it fences",
                self.loop_wait, self.fence_margin, self.ttl
            ));
        }
        Ok(())
    }
}

/// A planned switchover (`pgha switchover`), key `/switchover`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchoverRequest {
    /// The leader the request was made against; a leader with another name
    /// treats the request as done (or stale) and clears it.
    #[serde(default)]
    pub from: Option<String>,
    /// The member to hand over to; `None` = the best synchronous standby.
    #[serde(default)]
    pub to: Option<String>,
    /// Not before this wall-clock time (Unix milliseconds).
    #[serde(default)]
    pub scheduled_at_unix_ms: Option<u64>,
}

impl SwitchoverRequest {
    /// The request applies now (not scheduled, or its time has come).
    pub fn is_due(&self, unix_time_ms: u64) -> bool {
        self.scheduled_at_unix_ms
            .is_none_or(|at| at <= unix_time_ms)
    }
}

/// What a proxy publishes under `/proxies/<name>` (its own lease), so that
/// a leader can wait for the proxies to drain before a switchover.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProxyState {
    /// New transactions are held (a switchover request is due).
    pub paused: bool,
    /// Sessions with a transaction (or a statement) in flight on the
    /// primary, as last sampled while paused; 0 when not paused.
    pub in_flight: u64,
    /// Set while paused with nothing in flight: the revision of the
    /// `/switchover` key (see [`ClusterView::switchover_revision`]) this
    /// proxy has drained for.
    pub drained_for: Option<u64>,
}

/// A manual failover (`pgha failover --to NODE`), key `/failover`: used when
/// the primary is gone. Honoured only if the promotion rule allows it,
/// unless `allow_data_loss`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverRequest {
    pub to: String,
    #[serde(default)]
    pub allow_data_loss: bool,
}

/// Everything one read of the DCS returned.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    pub leader: Option<LeaderKey>,
    pub members: BTreeMap<String, MemberState>,
    pub sync: Option<SyncRecord>,
    /// The `/sync` key's modification revision (0 without the key). Every
    /// `/sync` write the decision asks for is conditional on it (see
    /// [`crate::Action::WriteSyncKey`]).
    #[serde(default)]
    pub sync_revision: u64,
    pub config: DynamicConfig,
    pub switchover: Option<SwitchoverRequest>,
    /// The `/switchover` key's modification revision: names one request
    /// (a rewritten request is a new one). 0 without a request.
    pub switchover_revision: u64,
    pub failover: Option<FailoverRequest>,
    /// Live proxies (their records vanish with their lease), by name.
    pub proxies: BTreeMap<String, ProxyState>,
    /// Who won the initialize race (`None`: the cluster was never
    /// bootstrapped).
    pub initialize: Option<String>,
}

impl ClusterView {
    /// The term of the last established leader (0 before the first one).
    pub fn sync_term(&self) -> u64 {
        self.sync.as_ref().map_or(0, |s| s.term)
    }

    /// The leader key holder, if it is established (has claimed `/sync`).
    pub fn established_leader(&self) -> Option<&LeaderKey> {
        let leader = self.leader.as_ref()?;
        let sync = self.sync.as_ref()?;
        (sync.term == leader.term && sync.leader == leader.holder).then_some(leader)
    }

    /// S and k as recorded, or "no promotion possible" without a record
    /// (any set that allows no promotion is normalized to that).
    pub fn sync_set(&self) -> SyncSet {
        match &self.sync {
            Some(s) if s.set.promotion_quorum().is_some() => s.set.clone(),
            _ => SyncSet::no_promotion(),
        }
    }
}

/// The result of reading the DCS: a view, or the fact that we do not know.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // one value per loop; boxing buys nothing
pub enum DcsView {
    /// The read failed or timed out; `error` is for the log, `last_config`
    /// is the last dynamic config read successfully (or the default).
    Unknown {
        error: String,
        last_config: DynamicConfig,
    },
    Known(ClusterView),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        DynamicConfig::default().validate().unwrap();
    }

    #[test]
    fn config_rejects_a_margin_that_leaves_no_renew() {
        let c = DynamicConfig {
            ttl: Millis(1000),
            loop_wait: Millis(600),
            fence_margin: Millis(500),
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().contains("loop_wait"));
    }

    #[test]
    fn config_json_uses_unit_suffixed_names_and_defaults() {
        let c: DynamicConfig = serde_json::from_str(r#"{"paused":true,"ttl_ms":3000}"#).unwrap();
        assert!(c.paused);
        assert_eq!(c.ttl, Millis(3000));
        assert_eq!(c.loop_wait, Millis(500));
        assert_eq!(c.switchover_drain_timeout, Millis(5000));
    }

    #[test]
    fn proxy_state_json_tolerates_missing_fields() {
        let p: ProxyState = serde_json::from_str(r#"{"paused":true}"#).unwrap();
        assert!(p.paused);
        assert_eq!(p.drained_for, None);
        let json = serde_json::to_string(&ProxyState {
            paused: true,
            in_flight: 0,
            drained_for: Some(42),
        })
        .unwrap();
        assert_eq!(json, r#"{"paused":true,"in_flight":0,"drained_for":42}"#);
    }

    #[test]
    fn sync_record_json_is_flat() {
        let r = SyncRecord {
            term: 4,
            leader: "node1".into(),
            set: SyncSet::new(["node2", "node3"], 1),
            handoff: None,
        };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(
            json,
            r#"{"term":4,"leader":"node1","members":["node2","node3"],"quorum":1}"#
        );
        assert_eq!(serde_json::from_str::<SyncRecord>(&json).unwrap(), r);
    }
}
