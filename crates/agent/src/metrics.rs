//! The agent's Prometheus metrics (`GET /metrics`, docs/observability.md).
//!
//! Three sources, none of which the scrape waits on:
//! - the loop's last [`AgentStatus`] (role, timeline, positions, lag, sync
//!   set, leader), rendered at scrape time;
//! - counters the loop and the DCS wrapper ([`crate::instrumented`]) bump
//!   as they go: decisions and actions by kind, promotions with their
//!   durations, etcd requests, errors and latency;
//! - a [`PgSample`] the sampler task ([`crate::sampler`]) refreshes every
//!   few seconds with its own connection: per-standby replication,
//!   slots, the archiver and the archive directory.
//!
//! Hazard: the loop and the sampler take the small mutexes here briefly;
//! the scrape copies under them and renders outside.

use crate::status::AgentStatus;
use pgha_metrics::{Counter, Exposition, Histogram, Kind, EVENT_BUCKETS, LATENCY_BUCKETS};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The etcd operations the DCS wrapper measures (label `op`).
pub const ETCD_OPS: [&str; 14] = [
    "grant_lease",
    "keep_alive",
    "revoke_lease",
    "get",
    "get_prefix",
    "put",
    "delete",
    "create_if_absent",
    "compare_and_swap",
    "put_if_key_equals",
    "delete_if_equals",
    "put_and_delete_if_equals",
    "watch_prefix",
    "other",
];

/// How a promotion of this member came about (label `kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromotionKind {
    /// The leader key had expired or was released without a request.
    Failover,
    /// A `/switchover` request named this member (or any member).
    Switchover,
}

impl PromotionKind {
    fn label(self) -> &'static str {
        match self {
            PromotionKind::Failover => "failover",
            PromotionKind::Switchover => "switchover",
        }
    }
}

/// One etcd operation's counters.
#[derive(Debug)]
pub struct EtcdOp {
    pub requests: Counter,
    pub errors: Counter,
    pub latency: Histogram,
}

impl Default for EtcdOp {
    fn default() -> Self {
        EtcdOp {
            requests: Counter::new(),
            errors: Counter::new(),
            latency: Histogram::new(LATENCY_BUCKETS),
        }
    }
}

/// What the sampler last read from PostgreSQL and the archive.
#[derive(Debug, Clone, Default)]
pub struct PgSample {
    /// Unix seconds of the sample.
    pub at_unix: f64,
    pub standbys: Vec<StandbySample>,
    pub slots: Vec<SlotSample>,
    pub archiver: Option<ArchiverSample>,
    pub archive: Option<ArchiveDirSample>,
    /// The last failed `wal-fetch` on this member (a standby restoring).
    pub fetch_failure: Option<FetchFailure>,
}

/// A `wal-fetch` that failed for another reason than "not archived".
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct FetchFailure {
    pub wal: String,
    pub reason: String,
    /// Unix seconds.
    pub at_unix: f64,
}

/// One row of the primary's `pg_stat_replication`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StandbySample {
    pub name: String,
    pub state: String,
    /// `sync`, `quorum`, `potential` or `async`.
    pub sync_state: String,
    pub lag_bytes: Option<f64>,
    /// `replay_lag` (seconds).
    pub replay_lag_seconds: Option<f64>,
    pub flush_lag_seconds: Option<f64>,
}

/// One physical slot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SlotSample {
    pub name: String,
    pub active: bool,
    /// WAL the slot keeps: current position minus its `restart_lsn`.
    pub retained_bytes: Option<f64>,
}

/// `pg_stat_archiver` and the last `pgha wal-push` failure.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ArchiverSample {
    pub archived_count: f64,
    pub failed_count: f64,
    pub last_archived_wal: String,
    /// Unix seconds.
    pub last_archived_time: Option<f64>,
    pub last_failed_wal: String,
    pub last_failed_time: Option<f64>,
    /// What the last failed `wal-push` said (from its status file).
    pub last_failure_reason: Option<String>,
}

/// The archive directory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ArchiveDirSample {
    pub files: u64,
    pub bytes: u64,
    /// Oldest archived WAL segment by name.
    pub oldest_segment: Option<String>,
    /// Files found corrupt (by `pgha archive list --verify` or a fetch):
    /// name, reason, unix seconds.
    pub corrupt: Vec<(String, String, f64)>,
}

/// Everything the agent counts.
#[derive(Debug)]
pub struct AgentMetrics {
    started: Instant,
    decisions: Mutex<BTreeMap<&'static str, u64>>,
    actions: Mutex<BTreeMap<(&'static str, bool), u64>>,
    events: Mutex<BTreeMap<(&'static str, bool), u64>>,
    promotions: [Counter; 2],
    promotion_seconds: [Histogram; 2],
    pub etcd: [EtcdOp; ETCD_OPS.len()],
    lease_expires: Mutex<Option<Instant>>,
    pg: Mutex<PgSample>,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        AgentMetrics {
            started: Instant::now(),
            decisions: Mutex::default(),
            actions: Mutex::default(),
            events: Mutex::default(),
            promotions: [Counter::new(), Counter::new()],
            promotion_seconds: [Histogram::new(EVENT_BUCKETS), Histogram::new(EVENT_BUCKETS)],
            etcd: Default::default(),
            lease_expires: Mutex::default(),
            pg: Mutex::default(),
        }
    }
}

fn bump<K: Ord>(m: &Mutex<BTreeMap<K, u64>>, k: K) {
    if let Ok(mut m) = m.lock() {
        *m.entry(k).or_default() += 1;
    }
}

impl AgentMetrics {
    /// A decision of the core that did something besides routine renewal,
    /// by the kind of its first step (`none` without steps).
    pub fn decision(&self, kind: &'static str) {
        bump(&self.decisions, kind);
    }

    /// An executed action and whether it succeeded.
    pub fn action(&self, kind: &'static str, ok: bool) {
        bump(&self.actions, (kind, ok));
    }

    /// An event this agent recorded in the history (`pgha events`).
    pub fn event(&self, kind: &'static str, ok: bool) {
        bump(&self.events, (kind, ok));
    }

    /// This member became the writable primary, `took` after the leader
    /// key was first seen gone (or the switchover request first seen).
    pub fn promoted(&self, kind: PromotionKind, took: Duration) {
        let i = kind as usize;
        self.promotions[i].inc();
        self.promotion_seconds[i].observe(took);
    }

    /// The index of `op` in [`ETCD_OPS`].
    pub fn etcd_op(&self, op: &str) -> &EtcdOp {
        let i = ETCD_OPS
            .iter()
            .position(|o| *o == op)
            .unwrap_or(ETCD_OPS.len() - 1);
        &self.etcd[i]
    }

    /// When the leader lease this member holds may expire (None: none held).
    pub fn set_lease_expiry(&self, at: Option<Instant>) {
        if let Ok(mut l) = self.lease_expires.lock() {
            *l = at;
        }
    }

    pub fn set_pg_sample(&self, s: PgSample) {
        if let Ok(mut pg) = self.pg.lock() {
            *pg = s;
        }
    }

    pub fn pg_sample(&self) -> PgSample {
        self.pg.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// The scrape answer.
    pub fn render(&self, st: &AgentStatus) -> String {
        let mut e = Exposition::new();
        let member = st.member.as_str();
        let m = [("member", member)];
        status_metrics(&mut e, st, &m);
        self.lease_metrics(&mut e, &m);
        self.counter_metrics(&mut e, &m);
        self.etcd_metrics(&mut e, &m);
        pg_sample_metrics(&mut e, &self.pg_sample(), member);
        e.single(
            "pgha_agent_uptime_seconds",
            Kind::Gauge,
            "Seconds since this agent process started.",
            self.started.elapsed().as_secs_f64(),
        );
        e.finish()
    }

    fn lease_metrics(&self, e: &mut Exposition, m: &[(&str, &str)]) {
        let expires = self.lease_expires.lock().ok().and_then(|l| *l);
        let remaining = expires.map(|t| t.saturating_duration_since(Instant::now()));
        e.family(
            "pgha_leader_lease_remaining_seconds",
            Kind::Gauge,
            "Seconds until the leader lease this member holds may expire unless renewed (0 when it holds none).",
        )
        .sample(
            "pgha_leader_lease_remaining_seconds",
            m,
            remaining.map(|d| d.as_secs_f64()).unwrap_or(0.0),
        );
    }

    fn counter_metrics(&self, e: &mut Exposition, m: &[(&str, &str)]) {
        let member = m[0].1;
        let name = "pgha_decisions_total";
        e.family(
            name,
            Kind::Counter,
            "Decisions of the HA core that changed something, by the kind of their first action.",
        );
        let decisions = self.decisions.lock().map(|d| d.clone()).unwrap_or_default();
        for (kind, n) in decisions {
            e.sample(name, &[("member", member), ("kind", kind)], n as f64);
        }
        let name = "pgha_actions_total";
        e.family(
            name,
            Kind::Counter,
            "Actions executed by the agent, by kind and outcome (ok, error).",
        );
        let actions = self.actions.lock().map(|a| a.clone()).unwrap_or_default();
        for ((kind, ok), n) in actions {
            let outcome = if ok { "ok" } else { "error" };
            let labels = [("member", member), ("kind", kind), ("outcome", outcome)];
            e.sample(name, &labels, n as f64);
        }
        let name = "pgha_events_total";
        e.family(name, Kind::Counter, "Events this agent recorded in the event history (pgha events), by kind (failover, switchover, demote, fence, unfence, rewind, reclone, sync_set) and outcome.");
        let events = self.events.lock().map(|a| a.clone()).unwrap_or_default();
        for ((kind, ok), n) in events {
            let outcome = if ok { "ok" } else { "error" };
            let labels = [("member", member), ("kind", kind), ("outcome", outcome)];
            e.sample(name, &labels, n as f64);
        }
        let kinds = [PromotionKind::Failover, PromotionKind::Switchover];
        let name = "pgha_promotions_total";
        e.family(
            name,
            Kind::Counter,
            "Times this member was promoted to primary, by kind (failover, switchover).",
        );
        for k in kinds {
            let labels = [("member", member), ("kind", k.label())];
            e.sample(name, &labels, self.promotions[k as usize].get() as f64);
        }
        let name = "pgha_promotion_duration_seconds";
        e.family(name, Kind::Histogram, "From the moment this member first saw the leader key gone (failover) or the switchover request (switchover) to its promotion completing.");
        for k in kinds {
            let labels = [("member", member), ("kind", k.label())];
            e.histogram(name, &labels, &self.promotion_seconds[k as usize]);
        }
    }

    fn etcd_metrics(&self, e: &mut Exposition, m: &[(&str, &str)]) {
        let member = m[0].1;
        let families = [
            ("pgha_etcd_requests_total", "etcd requests by operation."),
            (
                "pgha_etcd_request_errors_total",
                "etcd requests that failed (timeouts, unavailable, lease gone), by operation.",
            ),
        ];
        for (fi, (name, help)) in families.into_iter().enumerate() {
            e.family(name, Kind::Counter, help);
            for (op, c) in ETCD_OPS.iter().zip(&self.etcd) {
                let v = if fi == 0 {
                    c.requests.get()
                } else {
                    c.errors.get()
                };
                if c.requests.get() > 0 {
                    e.sample(name, &[("member", member), ("op", op)], v as f64);
                }
            }
        }
        let name = "pgha_etcd_request_duration_seconds";
        e.family(
            name,
            Kind::Histogram,
            "etcd request latency by operation (failed requests included).",
        );
        for (op, c) in ETCD_OPS.iter().zip(&self.etcd) {
            if c.requests.get() > 0 && *op != "watch_prefix" {
                e.histogram(name, &[("member", member), ("op", op)], &c.latency);
            }
        }
    }
}

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// The member's state word (label `state` of `pgha_member_state`).
pub fn state_word(st: &AgentStatus) -> &'static str {
    use pgha_core::Role;
    match (st.pg_running, st.role) {
        (false, _) => "stopped",
        (true, Role::Primary) if st.writable => "running",
        (true, Role::Primary) if st.fenced => "fenced",
        (true, Role::Primary) => "read_only",
        (true, Role::Standby) if st.streaming => "streaming",
        (true, Role::Standby) => "not_streaming",
        (true, Role::Unknown) => "unknown",
    }
}

const STATES: [&str; 7] = [
    "running",
    "fenced",
    "read_only",
    "streaming",
    "not_streaming",
    "stopped",
    "unknown",
];

fn status_metrics(e: &mut Exposition, st: &AgentStatus, m: &[(&str, &str)]) {
    let member = m[0].1;
    let role = serde_json::to_value(st.role)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "unknown".into());
    e.family("pgha_member_info", Kind::Gauge, "Always 1; labels: the member's cluster, its role as PostgreSQL reports it (primary, standby, unknown) and the leader it sees.")
        .sample(
            "pgha_member_info",
            &[
                ("member", member),
                ("cluster", &st.cluster),
                ("role", &role),
                ("leader", st.leader.as_deref().unwrap_or("")),
            ],
            1.0,
        );
    let name = "pgha_member_state";
    e.family(name, Kind::Gauge, "1 for the member's current state (running, fenced, read_only, streaming, not_streaming, stopped, unknown), 0 for the others.");
    let now = state_word(st);
    for s in STATES {
        e.sample(name, &[("member", member), ("state", s)], flag(s == now));
    }
    let gauges: [(&str, &str, f64); 7] = [
        (
            "pgha_member_is_leader",
            "1 while this member holds the leader lease.",
            flag(st.is_leader),
        ),
        (
            "pgha_member_writable",
            "1 while this member is the leader's running, unfenced primary (accepts writes).",
            flag(st.writable),
        ),
        (
            "pgha_postgres_up",
            "1 while this member's PostgreSQL runs.",
            flag(st.pg_running),
        ),
        (
            "pgha_member_streaming",
            "1 while this standby streams WAL from the leader.",
            flag(st.streaming),
        ),
        (
            "pgha_member_in_sync_set",
            "1 while this member is in the synchronous standby set recorded in /sync.",
            flag(st.in_sync_set),
        ),
        (
            "pgha_cluster_paused",
            "1 while the cluster is paused (no automatic actions).",
            flag(st.paused),
        ),
        (
            "pgha_dcs_unavailable",
            "1 when the agent's last read of etcd failed.",
            flag(st.dcs_unavailable),
        ),
    ];
    for (name, help, v) in gauges {
        e.family(name, Kind::Gauge, help).sample(name, m, v);
    }
    if let Some(t) = st.timeline {
        e.family(
            "pgha_timeline",
            Kind::Gauge,
            "The PostgreSQL timeline this member is on.",
        )
        .sample("pgha_timeline", m, t.0 as f64);
    }
    let name = "pgha_wal_position_bytes";
    e.family(name, Kind::Gauge, "WAL positions as byte offsets: kind=flush (primary: flushed; standby: best of received and replayed), kind=replay (standbys).");
    if let Some(l) = st.lsn {
        e.sample(name, &[("member", member), ("kind", "flush")], l.0 as f64);
    }
    if let Some(l) = st.replay_lsn {
        e.sample(name, &[("member", member), ("kind", "replay")], l.0 as f64);
    }
    if let Some(lag) = st.lag_bytes {
        e.family(
            "pgha_member_lag_bytes",
            Kind::Gauge,
            "Bytes this standby's replay is behind the leader's last published position.",
        )
        .sample("pgha_member_lag_bytes", m, lag as f64);
    }
}

fn pg_sample_metrics(e: &mut Exposition, s: &PgSample, member: &str) {
    standby_metrics(e, s, member);
    let name = "pgha_replication_slot_retained_bytes";
    e.family(name, Kind::Gauge, "WAL kept on this member for a physical replication slot (current position minus restart_lsn).");
    for slot in &s.slots {
        if let Some(b) = slot.retained_bytes {
            e.sample(name, &[("member", member), ("slot", &slot.name)], b);
        }
    }
    let name = "pgha_replication_slot_active";
    e.family(
        name,
        Kind::Gauge,
        "1 while a standby streams through the slot.",
    );
    for slot in &s.slots {
        e.sample(
            name,
            &[("member", member), ("slot", &slot.name)],
            flag(slot.active),
        );
    }
    if let Some(a) = &s.archiver {
        archiver_metrics(e, a, s.at_unix, member);
    }
    if let Some(d) = &s.archive {
        archive_dir_metrics(e, d, member);
    }
    let name = "pgha_archive_fetch_failure_timestamp_seconds";
    e.family(name, Kind::Gauge, "Unix time of this member's last failed wal-fetch (other than a file not archived); labels: the file and the reason.");
    if let Some(f) = &s.fetch_failure {
        let labels = [("member", member), ("wal", &f.wal), ("reason", &f.reason)];
        e.sample(name, &labels, f.at_unix);
    }
}

fn standby_metrics(e: &mut Exposition, s: &PgSample, member: &str) {
    type Get = fn(&StandbySample) -> Option<f64>;
    let families: [(&str, &str, Get); 3] = [
        ("pgha_replication_lag_bytes", "On the primary, per standby: bytes between the primary's current WAL position and the standby's replay position.", |r| r.lag_bytes),
        ("pgha_replication_lag_seconds", "On the primary, per standby: replay_lag of pg_stat_replication (time until a commit was replayed there; 0 when idle).", |r| r.replay_lag_seconds.or(Some(0.0))),
        ("pgha_replication_flush_lag_seconds", "On the primary, per standby: flush_lag of pg_stat_replication (what a synchronous commit waits for).", |r| r.flush_lag_seconds.or(Some(0.0))),
    ];
    for (name, help, get) in families {
        e.family(name, Kind::Gauge, help);
        for r in &s.standbys {
            if let Some(v) = get(r) {
                e.sample(name, &[("member", member), ("standby", &r.name)], v);
            }
        }
    }
    let name = "pgha_replication_sync_state";
    e.family(name, Kind::Gauge, "On the primary, per standby: 1 for its sync_state in pg_stat_replication (sync, quorum, potential, async).");
    for r in &s.standbys {
        let labels = [
            ("member", member),
            ("standby", &r.name),
            ("sync_state", &r.sync_state),
        ];
        e.sample(name, &labels, 1.0);
    }
}

fn archiver_metrics(e: &mut Exposition, a: &ArchiverSample, now: f64, member: &str) {
    let m = [("member", member)];
    e.family(
        "pgha_archiver_archived_total",
        Kind::Counter,
        "WAL files this member archived (pg_stat_archiver.archived_count).",
    )
    .sample("pgha_archiver_archived_total", &m, a.archived_count);
    e.family(
        "pgha_archiver_failed_total",
        Kind::Counter,
        "Failed archive attempts on this member (pg_stat_archiver.failed_count).",
    )
    .sample("pgha_archiver_failed_total", &m, a.failed_count);
    let name = "pgha_archiver_last_archived_timestamp_seconds";
    e.family(
        name,
        Kind::Gauge,
        "Unix time of the last successful archive; label wal: that file.",
    );
    if let Some(t) = a.last_archived_time {
        e.sample(
            name,
            &[("member", member), ("wal", &a.last_archived_wal)],
            t,
        );
    }
    let name = "pgha_archiver_last_archived_age_seconds";
    e.family(name, Kind::Gauge, "Seconds since the last successful archive (on the primary: alert when it grows while writes go on).");
    if let Some(t) = a.last_archived_time {
        e.sample(name, &m, (now - t).max(0.0));
    }
    let name = "pgha_archiver_last_failure_timestamp_seconds";
    e.family(name, Kind::Gauge, "Unix time of the last failed archive attempt; labels: the file and the reason pgha wal-push gave.");
    if let Some(t) = a.last_failed_time {
        let reason = a.last_failure_reason.as_deref().unwrap_or("");
        let labels = [
            ("member", member),
            ("wal", &a.last_failed_wal),
            ("reason", reason),
        ];
        e.sample(name, &labels, t);
    }
    let failing = match (a.last_failed_time, a.last_archived_time) {
        (Some(f), Some(ok)) => f > ok,
        (Some(_), None) => true,
        _ => false,
    };
    e.family("pgha_archiver_failing", Kind::Gauge, "1 while the last archive attempt failed (the last failure is newer than the last success).")
        .sample("pgha_archiver_failing", &m, flag(failing));
}

fn archive_dir_metrics(e: &mut Exposition, d: &ArchiveDirSample, member: &str) {
    let m = [("member", member)];
    e.family(
        "pgha_archive_files",
        Kind::Gauge,
        "Files in the WAL archive (segments, history and backup files).",
    )
    .sample("pgha_archive_files", &m, d.files as f64);
    e.family(
        "pgha_archive_size_bytes",
        Kind::Gauge,
        "Bytes the WAL archive's files take (compressed as stored).",
    )
    .sample("pgha_archive_size_bytes", &m, d.bytes as f64);
    let name = "pgha_archive_oldest_segment_info";
    e.family(name, Kind::Gauge, "Always 1; label segment: the oldest WAL segment in the archive (how far back point-in-time recovery reaches).");
    if let Some(seg) = &d.oldest_segment {
        e.sample(name, &[("member", member), ("segment", seg)], 1.0);
    }
    e.family("pgha_archive_corrupt_files", Kind::Gauge, "Archived files found corrupt by `pgha archive list --verify` or by a wal-fetch (until a verification finds them good or gone).")
        .sample("pgha_archive_corrupt_files", &m, d.corrupt.len() as f64);
    let name = "pgha_archive_corrupt_file_info";
    e.family(
        name,
        Kind::Gauge,
        "Always 1 per corrupt archived file; labels: its name and what is wrong.",
    );
    for (file, reason, _) in &d.corrupt {
        e.sample(
            name,
            &[("member", member), ("file", file), ("reason", reason)],
            1.0,
        );
    }
}

/// The archive's health as JSON, for the REST API's documents and `pgha
/// status` (docs/observability.md): `state` is `failing` while the last
/// archive attempt failed, `corrupt` while a corrupt file is known,
/// `fetch_failing` while this member's last restore failed, else `ok`
/// (`unknown` before the first sample).
pub fn archive_doc(s: &PgSample) -> serde_json::Value {
    use serde_json::json;
    let Some(a) = &s.archiver else {
        return json!({"state": "unknown"});
    };
    let failing = match (a.last_failed_time, a.last_archived_time) {
        (Some(f), Some(ok)) => f > ok,
        (Some(_), None) => true,
        _ => false,
    };
    let dir = s.archive.clone().unwrap_or_default();
    let state = if failing {
        "failing"
    } else if !dir.corrupt.is_empty() {
        "corrupt"
    } else if s.fetch_failure.is_some() {
        "fetch_failing"
    } else {
        "ok"
    };
    let age = a
        .last_archived_time
        .map(|t| (s.at_unix - t).max(0.0).round());
    json!({
        "state": state,
        "archived_count": a.archived_count,
        "failed_count": a.failed_count,
        "last_archived_wal": (!a.last_archived_wal.is_empty()).then_some(&a.last_archived_wal),
        "last_archived_age_seconds": age,
        "last_failed_wal": (!a.last_failed_wal.is_empty()).then_some(&a.last_failed_wal),
        "last_failure_reason": a.last_failure_reason.as_ref().filter(|_| failing),
        "fetch_failure": s.fetch_failure,
        "files": s.archive.as_ref().map(|d| d.files),
        "bytes": s.archive.as_ref().map(|d| d.bytes),
        "oldest_segment": dir.oldest_segment,
        "corrupt": dir.corrupt.iter().map(|(n, r, _)| json!({"file": n, "reason": r})).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgha_core::{Lsn, Role, Timeline};

    #[test]
    fn a_primary_renders_its_state_counters_and_sample() {
        let m = AgentMetrics::default();
        m.decision("promote");
        m.action("promote", true);
        m.promoted(PromotionKind::Failover, Duration::from_millis(1500));
        m.etcd_op("get_prefix").requests.inc();
        m.set_pg_sample(PgSample {
            at_unix: 100.0,
            standbys: vec![StandbySample {
                name: "node2".into(),
                sync_state: "quorum".into(),
                lag_bytes: Some(128.0),
                ..Default::default()
            }],
            archiver: Some(ArchiverSample {
                last_archived_time: Some(90.0),
                last_failed_time: Some(95.0),
                last_failure_reason: Some("disk full".into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        let st = AgentStatus {
            member: "node1".into(),
            role: Role::Primary,
            pg_running: true,
            writable: true,
            is_leader: true,
            timeline: Some(Timeline(2)),
            lsn: Some(Lsn(4096)),
            ..Default::default()
        };
        let text = m.render(&st);
        for line in [
            "pgha_member_state{member=\"node1\",state=\"running\"} 1",
            "pgha_timeline{member=\"node1\"} 2",
            "pgha_wal_position_bytes{member=\"node1\",kind=\"flush\"} 4096",
            "pgha_decisions_total{member=\"node1\",kind=\"promote\"} 1",
            "pgha_actions_total{member=\"node1\",kind=\"promote\",outcome=\"ok\"} 1",
            "pgha_promotions_total{member=\"node1\",kind=\"failover\"} 1",
            "pgha_replication_lag_bytes{member=\"node1\",standby=\"node2\"} 128",
            "pgha_replication_sync_state{member=\"node1\",standby=\"node2\",sync_state=\"quorum\"} 1",
            "pgha_archiver_last_archived_age_seconds{member=\"node1\"} 10",
            "pgha_archiver_failing{member=\"node1\"} 1",
            "reason=\"disk full\"",
            "pgha_etcd_requests_total{member=\"node1\",op=\"get_prefix\"} 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
