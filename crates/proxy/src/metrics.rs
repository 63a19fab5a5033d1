//! The proxy's Prometheus metrics (`GET /metrics` on `http_listen`,
//! docs/observability.md).
//!
//! Hot-path rule: a session updates only atomics in fixed arrays indexed
//! by enums (listener, target, reason, SQLSTATE class); no lock, no map,
//! no allocation per statement. Everything labelled by a name (nodes,
//! pools) is read at scrape time from what the monitor and the pools keep
//! anyway.

use crate::routing::Role;
use crate::shared::{ListenerKind, Shared};
use pgha_metrics::{Counter, Exposition, Gauge, Histogram, Kind, EVENT_BUCKETS, LATENCY_BUCKETS};
use std::time::Duration;

const LISTENERS: [ListenerKind; 3] = [ListenerKind::Rw, ListenerKind::Ro, ListenerKind::Primary];
const TARGETS: [Role; 2] = [Role::Primary, Role::Standby];

fn target_name(r: Role) -> &'static str {
    match r {
        Role::Primary => "primary",
        Role::Standby => "standby",
    }
}

/// A client connection's state (label `state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// Connected, logging in.
    Login = 0,
    /// Logged in (idle or running statements).
    Active = 1,
}

const CLIENT_STATES: [(ClientState, &str); 2] = [
    (ClientState::Login, "login"),
    (ClientState::Active, "active"),
];

/// Why a unit of client work went where it went (label `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Standby: the classifier proved it read-only.
    ReadOnly = 0,
    /// Primary: it may write.
    Write = 1,
    /// Primary: part of an explicit (read-write) transaction.
    Transaction = 2,
    /// Primary: the session is pinned (temp table, LISTEN, advisory lock...).
    Pinned = 3,
    /// Primary: serializable isolation.
    Serializable = 4,
    /// Primary: a fast-path function call.
    FunctionCall = 5,
    /// Primary: the `primary` listener.
    Listener = 6,
    /// Primary: no standby could answer in time (health, lag, read barrier).
    StandbyUnavailable = 7,
    /// Primary: a standby refused it and it was retried on the primary.
    Retry = 8,
    /// Either: a message that continues the session's last unit (Execute of
    /// an unknown statement, Sync...).
    Sticky = 9,
}

const REASONS: [(Reason, &str); 10] = [
    (Reason::ReadOnly, "read_only"),
    (Reason::Write, "write"),
    (Reason::Transaction, "transaction"),
    (Reason::Pinned, "pinned"),
    (Reason::Serializable, "serializable"),
    (Reason::FunctionCall, "function_call"),
    (Reason::Listener, "listener"),
    (Reason::StandbyUnavailable, "standby_unavailable"),
    (Reason::Retry, "retry"),
    (Reason::Sticky, "sticky"),
];

/// Why a unit was sent again (label `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// A standby refused a read (25006, serializable, unlogged table).
    StandbyRefused = 0,
    /// The backend died before the unit's first answer.
    BackendLost = 1,
}

/// What a client waited for (label `for`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// A primary (failover or a switchover's pause).
    Primary = 0,
    /// A standby that has replayed far enough (the read barrier).
    Standby = 1,
}

/// SQLSTATE classes: two characters of `0-9A-Z`.
const CLASS_CHARS: usize = 36;

fn class_index(code: &[u8]) -> Option<usize> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some((c - b'0') as usize),
        b'A'..=b'Z' => Some((c - b'A') as usize + 10),
        _ => None,
    };
    match code {
        [a, b, ..] => Some(digit(*a)? * CLASS_CHARS + digit(*b)?),
        _ => None,
    }
}

fn class_name(i: usize) -> String {
    let ch = |d: usize| {
        if d < 10 {
            (b'0' + d as u8) as char
        } else {
            (b'A' + (d - 10) as u8) as char
        }
    };
    [ch(i / CLASS_CHARS), ch(i % CLASS_CHARS)].iter().collect()
}

/// The proxy's counters.
#[derive(Debug)]
pub struct ProxyMetrics {
    clients: [[Gauge; 2]; 3],
    waiting: [Gauge; 3],
    statements: [[Counter; REASONS.len()]; 2],
    transactions: [Counter; 2],
    latency: [Histogram; 2],
    errors: Box<[Counter]>,
    retries: [Counter; 2],
    waits: [Counter; 2],
    wait_seconds: [Histogram; 2],
    /// Sessions pinned to the primary, by the classifier's reason (rare:
    /// a lock per pin, never per statement).
    pins: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        ProxyMetrics {
            clients: Default::default(),
            waiting: Default::default(),
            statements: Default::default(),
            transactions: Default::default(),
            latency: [
                Histogram::new(LATENCY_BUCKETS),
                Histogram::new(LATENCY_BUCKETS),
            ],
            errors: (0..CLASS_CHARS * CLASS_CHARS)
                .map(|_| Counter::new())
                .collect(),
            retries: Default::default(),
            waits: Default::default(),
            wait_seconds: [Histogram::new(EVENT_BUCKETS), Histogram::new(EVENT_BUCKETS)],
            pins: Default::default(),
        }
    }
}

/// A client counted in one state; moves between states, uncounts on drop.
pub struct ClientGauge {
    shared: std::sync::Arc<Shared>,
    listener: usize,
    state: ClientState,
}

impl ClientGauge {
    pub fn new(shared: std::sync::Arc<Shared>, kind: ListenerKind, state: ClientState) -> Self {
        let listener = kind as usize;
        shared.metrics.clients[listener][state as usize].inc();
        ClientGauge {
            shared,
            listener,
            state,
        }
    }

    pub fn set(&mut self, state: ClientState) {
        let c = &self.shared.metrics.clients[self.listener];
        c[self.state as usize].dec();
        c[state as usize].inc();
        self.state = state;
    }
}

/// A client counted in `pgha_proxy_clients_waiting` while this lives (it
/// stays counted in its state too: a client may wait during its login).
pub struct WaitingClient {
    shared: std::sync::Arc<Shared>,
    listener: usize,
}

impl WaitingClient {
    pub fn new(shared: std::sync::Arc<Shared>, kind: ListenerKind) -> Self {
        let listener = kind as usize;
        shared.metrics.waiting[listener].inc();
        WaitingClient { shared, listener }
    }
}

impl Drop for WaitingClient {
    fn drop(&mut self) {
        self.shared.metrics.waiting[self.listener].dec();
    }
}

impl Drop for ClientGauge {
    fn drop(&mut self) {
        self.shared.metrics.clients[self.listener][self.state as usize].dec();
    }
}

impl ProxyMetrics {
    /// A unit of client work was sent to `target` for `reason`.
    pub fn statement(&self, target: Role, reason: Reason) {
        self.statements[target as usize][reason as usize].inc();
    }

    /// A unit's answer ended (ReadyForQuery) `took` after it was sent;
    /// `tx_end`: the session is outside a transaction again.
    pub fn completed(&self, target: Role, took: Duration, tx_end: bool) {
        self.latency[target as usize].observe(took);
        if tx_end {
            self.transactions[target as usize].inc();
        }
    }

    /// An ErrorResponse went to a client with this SQLSTATE.
    pub fn error(&self, sqlstate: &[u8]) {
        if let Some(i) = class_index(sqlstate) {
            self.errors[i].inc();
        }
    }

    /// A session became pinned to the primary for `reason`.
    pub fn pinned(&self, reason: &'static str) {
        if let Ok(mut p) = self.pins.lock() {
            *p.entry(reason).or_default() += 1;
        }
    }

    pub fn retry(&self, why: Retry) {
        self.retries[why as usize].inc();
    }

    pub fn waited(&self, what: Wait, took: Duration) {
        self.waits[what as usize].inc();
        self.wait_seconds[what as usize].observe(took);
    }

    /// The scrape answer.
    pub fn render(&self, shared: &Shared) -> String {
        let mut e = Exposition::new();
        self.client_metrics(&mut e);
        self.unit_metrics(&mut e);
        self.error_metrics(&mut e);
        node_metrics(&mut e, shared);
        pool_metrics(&mut e, shared);
        e.finish()
    }

    fn client_metrics(&self, e: &mut Exposition) {
        let name = "pgha_proxy_clients";
        e.family(
            name,
            Kind::Gauge,
            "Client connections by listener and state: login (authenticating), active (logged in).",
        );
        for l in LISTENERS {
            for (s, sname) in CLIENT_STATES {
                let v = self.clients[l as usize][s as usize].get();
                e.sample(name, &[("listener", l.name()), ("state", sname)], v as f64);
            }
        }
        let name = "pgha_proxy_clients_waiting";
        e.family(name, Kind::Gauge, "Clients waiting now for a primary (failover, a switchover's pause), by listener; also counted in pgha_proxy_clients.");
        for l in LISTENERS {
            let v = self.waiting[l as usize].get();
            e.sample(name, &[("listener", l.name())], v as f64);
        }
    }

    fn unit_metrics(&self, e: &mut Exposition) {
        let name = "pgha_proxy_statements_total";
        e.family(name, Kind::Counter, "Units of client work (a simple-protocol statement, or an extended-protocol batch up to Sync) by target (primary, standby) and the reason for that target.");
        for t in TARGETS {
            for (r, rname) in REASONS {
                let v = self.statements[t as usize][r as usize].get();
                if v > 0 || matches!(r, Reason::ReadOnly | Reason::Write) {
                    e.sample(
                        name,
                        &[("target", target_name(t)), ("reason", rname)],
                        v as f64,
                    );
                }
            }
        }
        let name = "pgha_proxy_transactions_total";
        e.family(
            name,
            Kind::Counter,
            "Transactions (or statements outside one) that ended, by the target they ran on.",
        );
        for t in TARGETS {
            let v = self.transactions[t as usize].get();
            e.sample(name, &[("target", target_name(t))], v as f64);
        }
        let name = "pgha_proxy_statement_duration_seconds";
        e.family(
            name,
            Kind::Histogram,
            "From sending a unit to the backend to its ReadyForQuery, by target.",
        );
        for t in TARGETS {
            e.histogram(
                name,
                &[("target", target_name(t))],
                &self.latency[t as usize],
            );
        }
        let name = "pgha_proxy_pins_total";
        e.family(name, Kind::Counter, "Sessions pinned to the primary (their session state cannot move: temporary table, LISTEN, advisory lock, ...), by reason.");
        let pins = self.pins.lock().map(|p| p.clone()).unwrap_or_default();
        for (reason, n) in pins {
            e.sample(name, &[("reason", reason)], n as f64);
        }
        let name = "pgha_proxy_retries_total";
        e.family(name, Kind::Counter, "Units sent again on the primary: standby_refused (a standby refused a read), backend_lost (the backend died before answering).");
        for (r, rname) in [
            (Retry::StandbyRefused, "standby_refused"),
            (Retry::BackendLost, "backend_lost"),
        ] {
            e.sample(
                name,
                &[("reason", rname)],
                self.retries[r as usize].get() as f64,
            );
        }
        let waits = [(Wait::Primary, "primary"), (Wait::Standby, "standby")];
        let name = "pgha_proxy_waits_total";
        e.family(name, Kind::Counter, "Times a unit waited: for a primary (failover, switchover pause) or for a standby to replay far enough (read barrier).");
        for (w, wname) in waits {
            e.sample(name, &[("for", wname)], self.waits[w as usize].get() as f64);
        }
        let name = "pgha_proxy_wait_duration_seconds";
        e.family(name, Kind::Histogram, "How long those waits took.");
        for (w, wname) in waits {
            e.histogram(name, &[("for", wname)], &self.wait_seconds[w as usize]);
        }
    }

    fn error_metrics(&self, e: &mut Exposition) {
        let name = "pgha_proxy_errors_total";
        e.family(name, Kind::Counter, "ErrorResponses sent to clients (from a server or from the proxy), by SQLSTATE class (the code's first two characters).");
        for (i, c) in self.errors.iter().enumerate() {
            let v = c.get();
            if v > 0 {
                e.sample(name, &[("class", &class_name(i))], v as f64);
            }
        }
    }
}

fn node_metrics(e: &mut Exposition, shared: &Shared) {
    let topo = shared.topology.borrow().clone();
    let primary = topo.primary.as_ref().map(|p| p.name.clone());
    let mut nodes: Vec<_> = topo
        .primary
        .iter()
        .chain(topo.standbys.iter())
        .cloned()
        .collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    nodes.dedup_by(|a, b| a.name == b.name);
    let name = "pgha_proxy_node_role";
    e.family(name, Kind::Gauge, "1 per node the proxy routes to, labelled with the role the topology gives it (primary, standby).");
    for n in &nodes {
        let role = if Some(&n.name) == primary.as_ref() {
            "primary"
        } else {
            "standby"
        };
        e.sample(name, &[("node", &n.name), ("role", role)], 1.0);
    }
    e.single(
        "pgha_proxy_primary_known",
        Kind::Gauge,
        "1 while the topology names a primary.",
        if primary.is_some() { 1.0 } else { 0.0 },
    );
    e.single(
        "pgha_proxy_paused",
        Kind::Gauge,
        "1 while new transactions wait for a switchover.",
        if topo.paused { 1.0 } else { 0.0 },
    );
    let gauges: [(&str, &str); 3] = [
        (
            "pgha_proxy_server_connections",
            "Backend connections that sessions hold on the node (both pool modes).",
        ),
        (
            "pgha_proxy_server_units_in_flight",
            "Units running on the node through this proxy now.",
        ),
        (
            "pgha_proxy_node_statements_total",
            "Units sent to the node.",
        ),
    ];
    for (i, (name, help)) in gauges.into_iter().enumerate() {
        let kind = if i == 2 { Kind::Counter } else { Kind::Gauge };
        e.family(name, kind, help);
        for n in &nodes {
            let s = shared.monitor.stats(n);
            let v = match i {
                0 => s.backends.get() as f64,
                1 => s.outstanding.load(std::sync::atomic::Ordering::Relaxed) as f64,
                _ => s.served.load(std::sync::atomic::Ordering::Relaxed) as f64,
            };
            e.sample(name, &[("node", &n.name)], v);
        }
    }
}

fn pool_metrics(e: &mut Exposition, shared: &Shared) {
    let pools = shared.pools.stats();
    type Get = fn(&crate::pool::PoolStats) -> f64;
    let families: [(&str, Kind, &str, Get); 7] = [
        ("pgha_proxy_pool_server_active_connections", Kind::Gauge, "Transaction pooling: backends serving a client now (PgBouncer sv_active).", |p| p.open.saturating_sub(p.idle) as f64),
        ("pgha_proxy_pool_server_idle_connections", Kind::Gauge, "Transaction pooling: backends idle in the pool (PgBouncer sv_idle).", |p| p.idle as f64),
        ("pgha_proxy_pool_client_waiting_connections", Kind::Gauge, "Transaction pooling: clients waiting for a backend of a full pool (PgBouncer cl_waiting).", |p| p.waiting as f64),
        ("pgha_proxy_pool_size", Kind::Gauge, "Transaction pooling: the pool's most backends (pool_size).", |p| p.size as f64),
        ("pgha_proxy_pool_waits_total", Kind::Counter, "Transaction pooling: clients that had to wait for a backend.", |p| p.waits_total as f64),
        ("pgha_proxy_pool_wait_seconds_total", Kind::Counter, "Transaction pooling: seconds clients waited for a backend, in all.", |p| p.wait_micros_total as f64 / 1e6),
        ("pgha_proxy_pool_timeouts_total", Kind::Counter, "Transaction pooling: waits that ended in 53300 after pool_wait_timeout.", |p| p.timeouts_total as f64),
    ];
    for (name, kind, help, get) in families {
        e.family(name, kind, help);
        for p in &pools {
            let labels = [
                ("node", p.node.as_str()),
                ("database", &p.database),
                ("user", &p.user),
            ];
            e.sample(name, &labels, get(p));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstate_classes_round_trip_and_junk_is_ignored() {
        for code in ["40001", "57P01", "08006", "XX000", "25006"] {
            let i = class_index(code.as_bytes()).unwrap();
            assert_eq!(class_name(i), code[..2]);
        }
        assert_eq!(class_index(b"4"), None);
        assert_eq!(class_index(b"a1000"), None);
    }
}
