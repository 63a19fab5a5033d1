//! What the agent's loop publishes for the REST API and `pgha status`: a
//! snapshot after every loop iteration (through a `tokio::sync::watch`), and
//! the commands the REST API may send back to the loop.
//!
//! The loop is the only writer of [`AgentStatus`]; readers never block it.

use pgha_core::{Lsn, Role, Timeline};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use tokio::sync::oneshot;

/// How many past decisions `/cluster` shows.
pub const DECISION_HISTORY: usize = 20;

/// The agent's view of itself and the cluster after one loop iteration.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AgentStatus {
    pub member: String,
    pub cluster: String,
    /// What PostgreSQL says, not the lease: `Unknown` while it does not run.
    /// JSON "primary", "standby" or "unknown".
    pub role: Role,
    pub pg_running: bool,
    /// This member holds the leader lease.
    pub is_leader: bool,
    /// The leader lease is held, PostgreSQL is a running primary and not
    /// fenced: the only state in which `GET /primary` answers 200.
    pub writable: bool,
    /// A standby whose WAL receiver is streaming from the leader.
    pub streaming: bool,
    pub timeline: Option<Timeline>,
    /// Flush (primary: current) WAL position.
    pub lsn: Option<Lsn>,
    pub replay_lsn: Option<Lsn>,
    /// Bytes behind the leader's last published position (standbys).
    pub lag_bytes: Option<u64>,
    /// Member of the synchronous standby set recorded in /sync.
    pub in_sync_set: bool,
    /// The cluster is paused (maintenance: no automatic actions).
    pub paused: bool,
    /// The DCS could not be read in the last iteration.
    pub dcs_unavailable: bool,
    /// Name of the leader, if any.
    pub leader: Option<String>,
    /// The DCS view as JSON (members, leader, sync, config), for `/cluster`.
    pub view: serde_json::Value,
    /// Newest last.
    pub decisions: VecDeque<DecisionRecord>,
    /// A running primary with pgha's fence on (refuses writes).
    #[serde(default)]
    pub fenced: bool,
}

/// One decision of the core, with its explanation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// Unix time in milliseconds.
    pub at_unix_ms: u64,
    pub reason: String,
    /// Debug rendering of the actions taken.
    pub actions: Vec<String>,
}

/// Requests from the REST API (or other local callers) to the loop.
#[derive(Debug)]
pub enum AgentCommand {
    /// Restart PostgreSQL in its current role.
    Restart {
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Throw away the data directory and clone again from the leader
    /// (refused on the leader).
    Reinit {
        reply: oneshot::Sender<Result<(), String>>,
    },
}
