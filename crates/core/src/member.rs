//! What each agent publishes about itself under `members/<name>` in the DCS.
//!
//! The record is JSON (serde) and is rewritten every loop under the member's
//! own lease, so a dead agent's record disappears after the TTL. Hazard: a
//! record can be up to one loop old; the decision rules only trust the parts
//! whose staleness is safe (see [`Detached`]).

use crate::lsn::{Lsn, Timeline, WalPos};
use serde::{Deserialize, Serialize};

/// The role PostgreSQL reports (`pg_is_in_recovery()`), or `Unknown` when it
/// is not running or could not be asked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Primary,
    Standby,
    #[default]
    Unknown,
}

/// Where clients and standbys reach a member's PostgreSQL.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConnInfo {
    pub host: String,
    pub port: u16,
}

/// Per-member switches from the node's config file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct Tags {
    /// Never promote this member (it still reports its final LSN, which
    /// can be needed for someone else's promotion).
    pub nofailover: bool,
    /// Never put this member into the synchronous standby set.
    pub nosync: bool,
}

/// A standby's promise, published for a failover vote: "my WAL receiver is
/// stopped, the position in my record is final, and I will not stream from
/// any primary again until a leader newer than `after_term` is established".
///
/// `after_term` is the `/sync` term (the leader key revision of the last
/// established leader) this node saw when it detached. A candidate counts
/// the report only if `after_term` equals the current `/sync` term, which
/// makes stale reports (from before the member re-attached to a later
/// leader) worthless instead of dangerous.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Detached {
    pub after_term: u64,
}

/// One member's record in the DCS.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberState {
    pub name: String,
    pub role: Role,
    pub pg_running: bool,
    /// Timeline of the last WAL durably on this node's disk.
    pub timeline: Timeline,
    /// End of the WAL durably on this node's disk: for a primary
    /// `pg_current_wal_flush_lsn()`, for a standby the larger of
    /// `pg_last_wal_receive_lsn()` and `pg_last_wal_replay_lsn()`.
    pub flush_lsn: Lsn,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_lsn: Option<Lsn>,
    /// The member this standby's WAL receiver is streaming from right now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streaming_from: Option<String>,
    /// Set while the node has stopped streaming for a failover vote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detached: Option<Detached>,
    /// A primary that stopped accepting writes because its lease is in doubt.
    #[serde(default)]
    pub fenced: bool,
    /// Base URL of the agent's REST API, e.g. `http://10.0.0.2:8008`.
    pub api_url: String,
    pub conn: ConnInfo,
    #[serde(default)]
    pub tags: Tags,
}

impl MemberState {
    /// Its server runs but answers no probe (hung, see `hung.rs`), or its
    /// role could not be read.
    pub fn runs_unanswering(&self) -> bool {
        self.pg_running && self.role == Role::Unknown
    }

    /// Where this member's WAL ends.
    pub fn position(&self) -> WalPos {
        WalPos {
            timeline: self.timeline,
            lsn: self.flush_lsn,
        }
    }

    /// PostgreSQL runs and is in recovery.
    pub fn is_running_standby(&self) -> bool {
        self.pg_running && self.role == Role::Standby
    }

    /// PostgreSQL runs as a primary.
    pub fn is_running_primary(&self) -> bool {
        self.pg_running && self.role == Role::Primary
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_state_round_trips_through_json() {
        let m = MemberState {
            name: "node2".into(),
            role: Role::Standby,
            pg_running: true,
            timeline: Timeline(3),
            flush_lsn: Lsn(0x3000060),
            replay_lsn: Some(Lsn(0x3000000)),
            streaming_from: Some("node1".into()),
            detached: Some(Detached { after_term: 17 }),
            fenced: false,
            api_url: "http://127.0.0.1:8008".into(),
            conn: ConnInfo {
                host: "127.0.0.1".into(),
                port: 5433,
            },
            tags: Tags {
                nofailover: true,
                nosync: false,
            },
        };
        let json = serde_json::to_string(&m).unwrap();
        assert!(json.contains("\"flush_lsn\":\"0/3000060\""), "{json}");
        assert!(json.contains("\"role\":\"standby\""), "{json}");
        assert_eq!(serde_json::from_str::<MemberState>(&json).unwrap(), m);
    }

    #[test]
    fn optional_fields_may_be_missing() {
        let json = r#"{"name":"n","role":"primary","pg_running":true,"timeline":1,
            "flush_lsn":"0/10","api_url":"","conn":{"host":"h","port":1}}"#;
        let m: MemberState = serde_json::from_str(json).unwrap();
        assert!(m.is_running_primary());
        assert_eq!(m.detached, None);
        assert_eq!(m.tags, Tags::default());
    }
}
