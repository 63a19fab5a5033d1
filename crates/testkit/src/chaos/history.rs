//! The record of one chaos run: every client operation with its outcome,
//! every fault with its start and heal time, periodic samples of each
//! node's role, and the final contents of every node. It is written as
//! JSON (`history.json`) so the checker can run again offline on exactly
//! what the run saw (`pgha-testkit check history.json`).
//!
//! Times are milliseconds since the run started (`t0`), measured on one
//! monotonic clock by the harness. An operation's outcome is what the
//! client saw: `Ok` means the commit (or read) was acknowledged; `Failed`
//! means the server said it did not happen (an error before COMMIT was
//! sent); `Unknown` means the connection broke or timed out while the
//! outcome was in flight: such a write may or may not exist afterwards,
//! and the checker accepts either.

use serde::{Deserialize, Serialize};

/// Schema version, bumped on any incompatible change.
pub const HISTORY_VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct History {
    pub version: u32,
    pub seed: u64,
    /// The exact command that replays this run.
    pub replay: String,
    /// Wall-clock time at t0, Unix milliseconds (for humans only).
    pub started_unix_ms: u64,
    /// Planned duration of the fault phase.
    pub duration_ms: u64,
    /// Node names, in cluster order (node1, node2, node3).
    pub nodes: Vec<String>,
    /// How partitions were made: "netns" or "loopback".
    pub network: String,
    pub ops: Vec<Op>,
    pub faults: Vec<Fault>,
    pub roles: Vec<RoleSample>,
    /// Filled once faults have healed and the cluster has settled.
    pub final_state: Option<FinalState>,
}

/// How the client reached the database.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "node")]
pub enum Route {
    /// Through the proxy's rw port.
    Proxy,
    /// Straight to the node that claimed to be primary (by its own
    /// `pg_is_in_recovery() = false`) when the client connected.
    Direct(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// `INSERT INTO chaos_ids(id, client) VALUES ($id, $client)` in its
    /// own transaction, reporting the serving node, its timeline and the
    /// commit's WAL position.
    Write,
    /// In the same session as the client's writes: does the table hold
    /// the session's last acknowledged id (`expect`)?
    Read,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status", content = "error")]
pub enum Outcome {
    Ok,
    Failed(String),
    Unknown(String),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Op {
    /// Client number; each client is one session (reconnecting after a
    /// broken connection starts a new session: `session` increases).
    pub client: u32,
    pub session: u32,
    pub kind: OpKind,
    pub route: Route,
    /// Write: the unique id inserted. Read: 0.
    pub id: i64,
    pub start_ms: u64,
    pub end_ms: u64,
    pub outcome: Outcome,
    /// The node that served the operation, when the server told us
    /// (from `inet_server_addr()`/`cluster_name` inside the transaction).
    pub node: Option<String>,
    /// Write: the timeline the commit was made on.
    pub timeline: Option<u32>,
    /// Write: the commit's WAL position, "X/Y" (from
    /// `pg_current_wal_insert_lsn()` after the insert, same transaction).
    pub lsn: Option<String>,
    /// Read: the session's last acknowledged id before this read began.
    pub expect: Option<i64>,
    /// Read: whether `expect` was visible.
    pub saw: Option<bool>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Fault {
    /// A stable name per fault kind, e.g. "kill_postgres", "kill_agent",
    /// "node_crash", "pause_agent", "pause_postgres", "primary_from_etcd",
    /// "primary_from_standbys", "isolate_standby", "kill_etcd_member",
    /// "etcd_majority_lost", "switchover", "link_latency", "archive_full",
    /// "etcd_outage".
    pub kind: String,
    /// Node (or etcd member) the fault was aimed at.
    pub target: String,
    /// Role of the target when the fault began ("primary", "standby", "etcd").
    pub target_role: String,
    pub start_ms: u64,
    /// When the harness healed it (restarted, resumed, reconnected).
    pub healed_ms: Option<u64>,
    /// Free text: what exactly was done.
    pub detail: String,
}

/// Each node's view of itself, sampled periodically by the harness.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RoleSample {
    pub at_ms: u64,
    pub node: String,
    /// "primary", "standby", "down" or "unknown".
    pub role: String,
    pub timeline: Option<u32>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FinalState {
    pub at_ms: u64,
    /// The node that is primary at the end.
    pub primary: String,
    /// Timeline history of the final primary: one entry per earlier
    /// timeline, as in PostgreSQL's `.history` files.
    pub timeline_history: Vec<TimelineSwitch>,
    /// The final primary's current timeline.
    pub timeline: u32,
    pub nodes: Vec<NodeContents>,
}

/// Timeline `timeline` ended at `switch_lsn` ("X/Y"): WAL beyond that
/// position on that timeline is not part of the final history.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TimelineSwitch {
    pub timeline: u32,
    pub switch_lsn: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeContents {
    pub node: String,
    pub role: String,
    /// Ids in `chaos_ids` on this node, as sorted inclusive ranges
    /// `[first, last]`, so an hour-long run stays small.
    pub id_ranges: Vec<(i64, i64)>,
    /// Ids present more than once (there is no unique constraint on
    /// purpose, so that a write applied twice shows up here).
    pub duplicates: Vec<i64>,
}
