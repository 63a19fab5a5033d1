//! The proxy's view of node health and WAL positions, the role-verifier
//! lookup, and the function-catalog refresh, all through the monitoring role.
//!
//! One poller task per node in the topology runs
//! `pg_is_in_recovery()` and the current (primary) or replayed (standby) LSN
//! every `monitor_interval`, recording when the poll *started*: a sample
//! taken by a poll that started after a commit finished is at or past that
//! commit's LSN, which is what read-your-writes relies on.
//!
//! A caller that needs a sample taken *after* some moment (the read barrier
//! of `read_consistency = linearizable`, see docs/routing.md) asks for the
//! next round ([`NodeStats::fresh`]): the poller starts one at once, and
//! every caller that asked before that round started shares its answer, so
//! a burst of reads costs one query per node, not one per read. On a primary
//! the position polled is `pg_current_wal_flush_lsn()`: at or past the end
//! of every commit record acknowledged before the poll started (a commit is
//! flushed before it is acknowledged, unless `synchronous_commit = off`),
//! and never past what a standby can receive (walsenders send flushed WAL
//! only). The insert position would include WAL of transactions still
//! running, which no standby has until the primary flushes it: measured,
//! reads then waited about 5 ms at the median (see docs/BENCHMARKS.md).
//!
//! Hazards: samples are old by up to one interval; only ever compare them in
//! the safe direction (a standby's sampled replay LSN only understates it).

use crate::auth::{Secret, LOOKUP_QUERY};
use crate::classify::FunctionCatalog;
use crate::config::{ProxySettings, Secret as Password};
use crate::topology::{Node, Topology};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

pub use pgha_core::Lsn;

/// The last poll result of one node.
#[derive(Debug, Clone, Copy)]
pub struct NodeStatus {
    /// When the last successful poll started.
    pub ok_started: Option<Instant>,
    pub in_recovery: bool,
    /// Replay LSN (standby) or current WAL LSN (primary).
    pub lsn: Lsn,
}

/// Shared per-node counters and status.
#[derive(Debug)]
pub struct NodeStats {
    status: Mutex<NodeStatus>,
    /// Units (transactions / queries) in flight on this node through this proxy.
    pub outstanding: AtomicUsize,
    /// Client units sent to this node so far (metrics, routing tests).
    pub served: std::sync::atomic::AtomicU64,
    /// Backend connections sessions hold on this node (metrics).
    pub backends: pgha_metrics::Gauge,
    /// Poll rounds: the last one started, the latest one a caller waits for.
    rounds: Mutex<Rounds>,
    /// Wakes the poller when a caller wants a round.
    wake: Notify,
    /// The last finished round.
    done: watch::Sender<Round>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Rounds {
    started: u64,
    wanted: u64,
}

/// A finished poll round: `status` is `None` when the poll failed.
#[derive(Debug, Clone, Copy, Default)]
struct Round {
    number: u64,
    status: Option<NodeStatus>,
}

impl NodeStats {
    fn new() -> Self {
        NodeStats {
            status: Mutex::new(NodeStatus {
                ok_started: None,
                in_recovery: false,
                lsn: Lsn::ZERO,
            }),
            outstanding: AtomicUsize::new(0),
            served: std::sync::atomic::AtomicU64::new(0),
            backends: Default::default(),
            rounds: Mutex::new(Rounds::default()),
            wake: Notify::new(),
            done: watch::channel(Round::default()).0,
        }
    }

    pub fn status(&self) -> NodeStatus {
        *self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, s: NodeStatus) {
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = s;
    }

    /// A status from a poll that started after this call: joins the next
    /// round (started at once when the poller is idle; shared with every
    /// caller that asked before it started). `None` when that poll failed,
    /// no poller serves this node, or `deadline` passed first.
    pub async fn fresh(&self, deadline: Instant) -> Option<NodeStatus> {
        let mut done = self.done.subscribe();
        let mine = {
            let mut r = self.rounds.lock().unwrap_or_else(|e| e.into_inner());
            let mine = r.started + 1;
            r.wanted = r.wanted.max(mine);
            mine
        };
        self.wake.notify_one();
        let wait = async {
            done.wait_for(|d| d.number >= mine)
                .await
                .ok()
                .and_then(|d| d.status)
        };
        tokio::time::timeout_at(deadline.into(), wait)
            .await
            .ok()
            .flatten()
    }

    /// Waits until a poll shows this standby's replay position at or past
    /// `target` (true), the poll fails or shows it out of recovery, or
    /// `deadline` passes (false). The last sample is tried first: a replay
    /// position only grows, so any sample at or past `target` proves it.
    pub async fn replayed(&self, target: Lsn, deadline: Instant) -> bool {
        let last = self.status();
        if last.ok_started.is_some() && last.in_recovery && last.lsn >= target {
            return true;
        }
        loop {
            match self.fresh(deadline).await {
                Some(s) if s.in_recovery && s.lsn >= target => return true,
                Some(s) if s.in_recovery && Instant::now() < deadline => continue,
                _ => return false,
            }
        }
    }

    /// Starts a round; returns its number.
    fn start_round(&self) -> u64 {
        let mut r = self.rounds.lock().unwrap_or_else(|e| e.into_inner());
        r.started += 1;
        r.started
    }

    /// A caller waits for a round not started yet.
    fn round_wanted(&self) -> bool {
        let r = self.rounds.lock().unwrap_or_else(|e| e.into_inner());
        r.wanted > r.started
    }

    fn finish_round(&self, number: u64, status: Option<NodeStatus>) {
        self.done.send_replace(Round { number, status });
    }
}

/// Why a verifier lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("no node is available to look up roles")]
    NoNode,
    #[error("look up role: {0}")]
    Postgres(String),
    #[error("look up role: timed out")]
    Timeout,
}

/// Health/position monitor and verifier lookup.
pub struct Monitor {
    user: String,
    password: Password,
    database: String,
    catalog_database: String,
    interval: Duration,
    connect_timeout: Duration,
    nodes: RwLock<HashMap<Node, Arc<NodeStats>>>,
    lookup: tokio::sync::Mutex<Option<(Node, tokio_postgres::Client)>>,
    topology: watch::Receiver<Topology>,
    /// TLS towards the nodes (`backend_tls`), as the sessions' backends.
    tls: Option<crate::tls::BackendTls>,
}

impl Monitor {
    pub fn new(
        settings: &ProxySettings,
        password: Password,
        topology: watch::Receiver<Topology>,
        tls: Option<crate::tls::BackendTls>,
    ) -> Self {
        Monitor {
            tls,
            user: settings.monitor_user.clone(),
            password,
            database: settings.monitor_database.clone(),
            catalog_database: settings.catalog_database.clone(),
            interval: settings.monitor_interval,
            connect_timeout: settings.connect_timeout,
            nodes: RwLock::new(HashMap::new()),
            lookup: tokio::sync::Mutex::new(None),
            topology,
        }
    }

    /// Counters and status of `node` (created on first use).
    pub fn stats(&self, node: &Node) -> Arc<NodeStats> {
        if let Some(s) = self
            .nodes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(node)
        {
            return s.clone();
        }
        let mut w = self.nodes.write().unwrap_or_else(|e| e.into_inner());
        w.entry(node.clone())
            .or_insert_with(|| Arc::new(NodeStats::new()))
            .clone()
    }

    async fn connect(
        &self,
        node: &Node,
        database: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(&node.host)
            .port(node.port)
            .user(&self.user)
            .password(&self.password.0)
            .dbname(database)
            .application_name("pgha-proxy-monitor")
            .connect_timeout(self.connect_timeout);
        let client = match &self.tls {
            Some(tls) => {
                cfg.ssl_mode(tokio_postgres::config::SslMode::Require);
                let (client, conn) = cfg.connect(tls.postgres()).await?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!("monitor connection ended: {e:#}");
                    }
                });
                client
            }
            None => {
                let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!("monitor connection ended: {e:#}");
                    }
                });
                client
            }
        };
        Ok(client)
    }

    /// Looks up a role's verifier (primary first, else any standby).
    pub async fn lookup_secret(&self, user: &str) -> Result<Secret, LookupError> {
        let fut = self.lookup_inner(user);
        tokio::time::timeout(self.connect_timeout * 2, fut)
            .await
            .map_err(|_| LookupError::Timeout)?
    }

    async fn lookup_inner(&self, user: &str) -> Result<Secret, LookupError> {
        let mut guard = self.lookup.lock().await;
        let candidates = {
            let t = self.topology.borrow();
            t.primary
                .iter()
                .chain(t.standbys.iter())
                .cloned()
                .collect::<Vec<_>>()
        };
        if let Some((node, client)) = guard.as_ref() {
            if !client.is_closed() && candidates.contains(node) {
                match client.query_opt(LOOKUP_QUERY, &[&user]).await {
                    Ok(row) => return Ok(row_secret(row)),
                    Err(e) => tracing::warn!("role lookup on {} failed: {e:#}", node.name),
                }
            }
        }
        *guard = None;
        let mut last = None;
        for node in candidates {
            match self.connect(&node, &self.database).await {
                Ok(client) => {
                    let row = client.query_opt(LOOKUP_QUERY, &[&user]).await?;
                    *guard = Some((node, client));
                    return Ok(row_secret(row));
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.map(LookupError::from).unwrap_or(LookupError::NoNode))
    }

    /// The primary's latest position sample: `(lsn, poll start)`.
    pub fn primary_sample(&self, primary: &Node) -> Option<(Lsn, Instant)> {
        let s = self.stats(primary).status();
        match s.ok_started {
            Some(at) if !s.in_recovery => Some((s.lsn, at)),
            _ => None,
        }
    }

    /// Starts the node pollers and the catalog refresh; ends when dropped.
    pub fn spawn(
        self: &Arc<Self>,
        catalog: Arc<FunctionCatalog>,
        catalog_every: Duration,
    ) -> Vec<JoinHandle<()>> {
        let me = self.clone();
        let pollers = tokio::spawn(async move { me.manage_pollers().await });
        let me = self.clone();
        let refresh = tokio::spawn(async move { me.refresh_catalog(catalog, catalog_every).await });
        vec![pollers, refresh]
    }

    async fn manage_pollers(self: Arc<Self>) {
        let mut rx = self.topology.clone();
        let mut tasks: HashMap<Node, JoinHandle<()>> = HashMap::new();
        loop {
            let want: Vec<Node> = {
                let t = rx.borrow_and_update();
                t.primary.iter().chain(t.standbys.iter()).cloned().collect()
            };
            tasks.retain(|n, h| {
                let keep = want.contains(n);
                if !keep {
                    h.abort();
                }
                keep
            });
            for node in want {
                if let std::collections::hash_map::Entry::Vacant(v) = tasks.entry(node) {
                    let me = self.clone();
                    let n = v.key().clone();
                    v.insert(tokio::spawn(async move { me.poll_node(n).await }));
                }
            }
            if rx.changed().await.is_err() {
                break;
            }
        }
        for (_, h) in tasks {
            h.abort();
        }
    }

    /// Polls `node` every `interval`, and at once whenever a caller of
    /// [`NodeStats::fresh`] waits for a round.
    async fn poll_node(self: Arc<Self>, node: Node) {
        let stats = self.stats(&node);
        let mut client: Option<(tokio_postgres::Client, tokio_postgres::Statement)> = None;
        const Q: &str = "SELECT pg_is_in_recovery(), (CASE WHEN pg_is_in_recovery() \
            THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_flush_lsn() END)::text";
        loop {
            let round = stats.start_round();
            if client.as_ref().is_none_or(|(c, _)| c.is_closed()) {
                client = match self.connect(&node, &self.database).await {
                    Ok(c) => match c.prepare(Q).await {
                        Ok(q) => Some((c, q)),
                        Err(e) => {
                            tracing::debug!(node = %node.name, "monitor prepare failed: {e:#}");
                            None
                        }
                    },
                    Err(e) => {
                        tracing::debug!(node = %node.name, "monitor connect failed: {e:#}");
                        None
                    }
                };
            }
            let started = Instant::now();
            let mut result = None;
            if let Some((c, q)) = &client {
                let res = tokio::time::timeout(self.connect_timeout, c.query_one(q, &[])).await;
                match res {
                    Ok(Ok(row)) => {
                        let in_recovery: bool = row.get(0);
                        let lsn: Option<String> = row.get(1);
                        let lsn = lsn.and_then(|s| s.parse::<Lsn>().ok()).unwrap_or(Lsn::ZERO);
                        let status = NodeStatus {
                            ok_started: Some(started),
                            in_recovery,
                            lsn,
                        };
                        stats.set(status);
                        result = Some(status);
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(node = %node.name, "monitor poll failed: {e:#}");
                        client = None;
                    }
                    Err(_) => client = None,
                }
            }
            stats.finish_round(round, result);
            // The next round: after `interval`, or at once when a caller
            // waits for one (a failed connection retries after `interval`
            // at the earliest, so callers fail fast instead of spinning).
            let next = started + self.interval;
            if client.is_none() {
                tokio::time::sleep_until(next.into()).await;
                continue;
            }
            let _ = tokio::time::timeout_at(next.into(), async {
                loop {
                    let woken = stats.wake.notified();
                    if stats.round_wanted() {
                        return;
                    }
                    woken.await;
                }
            })
            .await;
        }
    }

    async fn refresh_catalog(self: Arc<Self>, catalog: Arc<FunctionCatalog>, every: Duration) {
        loop {
            let node = {
                let t = self.topology.borrow();
                t.primary.clone().or_else(|| t.standbys.first().cloned())
            };
            if let Some(node) = node {
                match self.connect(&node, &self.catalog_database).await {
                    Ok(c) => {
                        if let Err(e) = catalog.refresh(&c).await {
                            tracing::warn!("refresh function catalog: {e:#}");
                        }
                    }
                    Err(e) => tracing::debug!("catalog connect failed: {e:#}"),
                }
            }
            tokio::time::sleep(every).await;
        }
    }
}

impl From<tokio_postgres::Error> for LookupError {
    fn from(e: tokio_postgres::Error) -> Self {
        LookupError::Postgres(pg_error_text(&e))
    }
}

/// A tokio-postgres error with the server's message, when there is one.
pub fn pg_error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {} ({})", db.severity(), db.message(), db.code().code()),
        None => e.to_string(),
    }
}

fn row_secret(row: Option<tokio_postgres::Row>) -> Secret {
    let stored: Option<String> = row.and_then(|r| r.get::<_, Option<String>>(1));
    Secret::parse(stored.as_deref())
}

/// Decrements a node's outstanding counter when dropped.
#[derive(Debug)]
pub struct Outstanding(Arc<NodeStats>);

impl Outstanding {
    pub fn new(stats: Arc<NodeStats>) -> Self {
        stats.outstanding.fetch_add(1, Ordering::Relaxed);
        Outstanding(stats)
    }
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}
