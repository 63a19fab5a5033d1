//! Routing: which backend a new unit wants ([`Want`]), and getting that
//! backend ready (waiting for a primary during failover or while paused,
//! choosing an eligible standby, opening connections).
//!
//! Hazards: a standby is eligible only on fresh evidence (a recent successful
//! poll, lag within the limit, and for read-your-writes a replay position
//! sampled at or past the primary position sampled *after* the session's last
//! write finished). Anything uncertain routes to the primary.
//!
//! Switchover drain: a session counts itself in the topology's `InFlight`
//! *before* it checks `paused` on its way to the primary, and stays counted
//! while it has a transaction open or work in flight there
//! ([`Session::track_in_flight`]); while it waits out a pause it is not
//! counted. So once the proxy has published `paused` and then read a zero
//! count, no transaction can start on the old primary.

use super::state::{Backend, Role};
use super::Session;
use crate::backend::{BackendConn, ConnectError};
use crate::codec::backend::error_field;
use crate::codec::ErrorInfo;
use crate::config::ReadConsistency;
use crate::monitor::{Lsn, NodeStats};
use crate::routing::{standby_may_serve, StandbyFacts};
use crate::shared::ListenerKind;
use crate::topology::Node;
use bytes::{BufMut, Bytes, BytesMut};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// Where a new unit wants to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Want {
    Primary,
    Standby,
    /// Wherever the session last ran (inside a transaction, or no statement).
    Sticky,
}

/// What routing decided for a unit.
pub(super) enum Resolution {
    Go(Role),
    /// The active backend must answer everything first.
    Stall,
    /// Tell the client (ErrorResponse body) and skip the unit.
    Fail(Bytes),
}

/// What routing needs from the topology, kept per topology generation (the
/// monitor's per-node stats never move, so an `Arc` stays valid).
#[derive(Default)]
pub(super) struct RouteView {
    generation: Option<u64>,
    /// The current primary's stats (`None`: no primary).
    primary: Option<std::sync::Arc<crate::monitor::NodeStats>>,
}

/// A primary's position sample from its stats: `(lsn, poll start)`.
fn primary_sample_of(stats: &crate::monitor::NodeStats) -> Option<(crate::monitor::Lsn, Instant)> {
    let s = stats.status();
    match s.ok_started {
        Some(at) if !s.in_recovery => Some((s.lsn, at)),
        _ => None,
    }
}

/// An ErrorResponse body for `e`.
pub(super) fn error_body(e: &ErrorInfo) -> Bytes {
    let mut b = BytesMut::new();
    e.encode(&mut b);
    b.split_off(5).freeze()
}

/// A server's login error as a non-fatal ErrorResponse body.
fn downgrade(fields: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(fields.len());
    let mut rest = fields;
    while let Some((&c, tail)) = rest.split_first() {
        if c == 0 {
            break;
        }
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        out.put_u8(c);
        if (c == b'S' || c == b'V') && &tail[..end] == b"FATAL" {
            out.put_slice(b"ERROR");
        } else {
            out.put_slice(&tail[..end]);
        }
        out.put_u8(0);
        rest = tail.get(end + 1..).unwrap_or(&[]);
    }
    out.put_u8(0);
    out.freeze()
}

impl Session {
    pub(super) fn default_role(&self) -> Role {
        if self.kind == ListenerKind::Ro {
            Role::Standby
        } else {
            Role::Primary
        }
    }

    /// Decides and prepares the backend for a new unit.
    pub(super) async fn resolve(&mut self, want: Want) -> Resolution {
        let busy = self.active_busy();
        if busy && self.active_retryable() {
            return Resolution::Stall;
        }
        if self.tx_status != b'I' && !busy && self.deferred_begin.is_none() {
            // Inside a transaction: only its own backend may continue it
            // (`start_unit` refuses units while `tx_lost` is set).
            return match self.active.filter(|r| self.backends[*r as usize].is_some()) {
                Some(r) => Resolution::Go(r),
                None => {
                    self.tx_lost.get_or_insert_with(|| "its server".into());
                    self.tx_status = b'E';
                    Resolution::Fail(error_body(&ErrorInfo::error(
                        "08006",
                        "the connection that held this transaction was lost; the transaction did not commit, \
                         and commands are ignored until ROLLBACK",
                    )))
                }
            };
        }
        let role = match want {
            Want::Sticky => self.active.unwrap_or(self.default_role()),
            Want::Primary => Role::Primary,
            Want::Standby => Role::Standby,
        };
        if busy {
            let active = self.active.unwrap_or(role);
            let same = active == role
                && (role == Role::Primary
                    || want == Want::Sticky
                    || self.current_standby_ready().await);
            return if same {
                Resolution::Go(active)
            } else {
                Resolution::Stall
            };
        }
        match self.ensure_backend(role).await {
            Ok(r) => Resolution::Go(r),
            Err(body) => Resolution::Fail(body),
        }
    }

    fn active_retryable(&self) -> bool {
        self.active
            .and_then(|r| self.backends[r as usize].as_ref())
            .is_some_and(|b| b.units.iter().any(|u| u.retry.is_some()))
    }

    /// The facts [`crate::routing::standby_may_serve`] needs about `node`
    /// (`None`: the session's standby connection). The primary's stats come
    /// from [`RouteView`], looked up once per topology generation instead of
    /// in the monitor's map each time.
    ///
    /// The node is identified by its stats record (one per node for the
    /// proxy's life): no `Node` clone per read.
    fn standby_facts(&mut self, node: Option<&Node>) -> Option<(StandbyFacts, Arc<NodeStats>)> {
        let stats = match node {
            None => self.backends[Role::Standby as usize]
                .as_ref()?
                .stats
                .clone(),
            Some(n) => self.shared.monitor.stats(n),
        };
        let (listed, primary_sample) = {
            let t = self.topology.borrow();
            let node = match (node, self.backends[Role::Standby as usize].as_ref()) {
                (Some(n), _) => n,
                (None, Some(b)) => &b.conn.node,
                (None, None) => return None,
            };
            if self.route_view.generation != Some(t.generation) {
                self.route_view = RouteView {
                    generation: Some(t.generation),
                    primary: t.primary.as_ref().map(|p| self.shared.monitor.stats(p)),
                };
            }
            (
                t.standbys.contains(node),
                self.route_view
                    .primary
                    .as_deref()
                    .and_then(primary_sample_of),
            )
        };
        let st = stats.status();
        let facts = StandbyFacts {
            listed,
            fresh: st
                .ok_started
                .is_some_and(|at| at.elapsed() <= self.shared.settings.health_timeout),
            in_recovery: st.in_recovery,
            lag_bytes: primary_sample.map(|(plsn, _)| plsn.bytes_after(st.lsn)),
        };
        Some((facts, stats))
    }

    /// Whether the session's standby connection may serve the unit being
    /// routed: healthy, and ordered as `read_consistency` asks.
    async fn current_standby_ready(&mut self) -> bool {
        let Some((facts, stats)) = self.standby_facts(None) else {
            return false;
        };
        standby_may_serve(&facts, self.shared.settings.max_lag_bytes) && self.ordered(&stats).await
    }

    /// The ordering guarantee for a read on `node`, by listener and
    /// `read_consistency` (docs/routing.md, "Consistency"):
    /// - linearizable (rw): the standby has replayed the primary's WAL
    ///   insert position polled by a round that started after the read
    ///   arrived (after `client_read_at`), so every commit acknowledged
    ///   before that, to anyone, is visible there;
    /// - session (and the ro listener): the standby has replayed the
    ///   primary's position polled after the session's last unit on the
    ///   primary finished (its writes, and what its primary reads saw);
    /// - any: nothing.
    ///
    /// Waits at most `read_wait_timeout`; false sends the read to the primary.
    async fn ordered(&mut self, stats: &Arc<NodeStats>) -> bool {
        let mode = match self.kind {
            ListenerKind::Rw => self.shared.settings.read_consistency,
            _ => ReadConsistency::Session,
        };
        let deadline = Instant::now() + self.shared.settings.read_wait_timeout;
        match mode {
            ReadConsistency::Any => true,
            ReadConsistency::Session => {
                let Some(after) = self.state.last_write else {
                    return true;
                };
                let target = match self.state.ryw_target {
                    Some(t) => t,
                    None => {
                        let sample = self.primary_position_after(after, deadline).await;
                        let Some(t) = sample else { return false };
                        self.state.ryw_target = Some(t);
                        t
                    }
                };
                stats.replayed(target, deadline).await
            }
            ReadConsistency::Linearizable => {
                let arrived = self.client_read_at;
                if self
                    .proven
                    .as_ref()
                    .is_some_and(|(at, s)| *at >= arrived && Arc::ptr_eq(s, stats))
                {
                    return true;
                }
                let Some(primary) = self.route_view.primary.clone() else {
                    return false;
                };
                let checked = Instant::now();
                let _timed = WaitTimer(&self.shared.metrics, checked);
                // The standby's round runs beside the primary's: a replay
                // position only grows, so any sample at or past the target
                // proves it, whenever it was taken.
                let (target, standby) =
                    tokio::join!(primary.fresh(deadline), stats.fresh(deadline));
                let Some(target) = target.filter(|p| !p.in_recovery).map(|p| p.lsn) else {
                    return false;
                };
                let ok = match standby {
                    Some(s) if s.in_recovery && s.lsn >= target => true,
                    _ => stats.replayed(target, deadline).await,
                };
                if ok {
                    self.proven = Some((checked, stats.clone()));
                }
                ok
            }
        }
    }

    /// The primary's position from a poll that started after `after`: the
    /// last periodic sample when it is recent enough, else a fresh round.
    async fn primary_position_after(&mut self, after: Instant, deadline: Instant) -> Option<Lsn> {
        let primary = self.route_view.primary.clone()?;
        if let Some((lsn, started)) = primary_sample_of(&primary) {
            if started > after {
                return Some(lsn);
            }
        }
        primary
            .fresh(deadline)
            .await
            .filter(|p| !p.in_recovery)
            .map(|p| p.lsn)
    }

    /// Makes sure the backend for `role` is connected (waiting for a primary
    /// when needed); a standby falls back to the primary.
    pub(super) async fn ensure_backend(&mut self, role: Role) -> Result<Role, Bytes> {
        match role {
            Role::Primary => self.ensure_primary().await.map(|_| Role::Primary),
            Role::Standby => match self.ensure_standby().await {
                true => Ok(Role::Standby),
                false => self.ensure_primary().await.map(|_| Role::Primary),
            },
        }
    }

    /// A standby for a read: the session's own standby connection when it
    /// is healthy (if it is not yet ordered, the primary serves this read
    /// rather than churning connections), else the least loaded healthy
    /// standby that is ordered.
    async fn ensure_standby(&mut self) -> bool {
        let max_lag = self.shared.settings.max_lag_bytes;
        if let Some((facts, stats)) = self.standby_facts(None) {
            if standby_may_serve(&facts, max_lag) {
                return self.ordered(&stats).await;
            }
        }
        let standbys = self.topology.borrow().standbys.clone();
        let mut best: Option<(usize, Arc<NodeStats>, Node)> = None;
        for node in standbys {
            let Some((facts, stats)) = self.standby_facts(Some(&node)) else {
                continue;
            };
            if !standby_may_serve(&facts, max_lag) {
                continue;
            }
            let load = stats.outstanding.load(Ordering::Relaxed);
            if best.as_ref().is_none_or(|(l, _, _)| load < *l) {
                best = Some((load, stats, node));
            }
        }
        let Some((_, stats, node)) = best else {
            return false;
        };
        if self
            .state
            .read_standby
            .as_ref()
            .is_some_and(|s| !Arc::ptr_eq(s, &stats))
        {
            // Another standby than the one this session read from: it must
            // be at least where the primary is now (monotonic reads).
            self.state.last_write = Some(Instant::now());
            self.state.ryw_target = None;
        }
        if !self.ordered(&stats).await {
            return false;
        }
        match self.open_backend(&node).await {
            Ok(opened) => {
                self.install(Role::Standby, opened);
                self.state.read_standby = Some(stats);
                true
            }
            Err(e) => {
                tracing::warn!(client = %self.peer, node = %node.name, "standby connection failed, using the primary: {e}");
                false
            }
        }
    }

    /// Counts this session as in flight on the primary (idempotent). Must
    /// come before looking at `paused`.
    fn hold_primary(&mut self) {
        if self.in_flight.is_none() {
            self.in_flight = Some(self.topology.borrow().in_flight.hold());
        }
    }

    /// Called once per loop turn: stop counting the session when it has
    /// nothing open or in flight on the primary.
    pub(super) fn track_in_flight(&mut self) {
        if self.in_flight.is_none() {
            return;
        }
        let primary = Some(Role::Primary);
        let in_use = self.backends[Role::Primary as usize]
            .as_ref()
            .is_some_and(|b| {
                b.busy()
                    || self.open == primary
                    || (self.tx_status != b'I'
                        && self.active == primary
                        && self.deferred_begin.is_none())
            });
        if !in_use {
            self.in_flight = None;
        }
    }

    async fn ensure_primary(&mut self) -> Result<(), Bytes> {
        self.hold_primary();
        if self.primary_current() {
            return Ok(());
        }
        let deadline = Instant::now() + self.shared.settings.primary_wait_timeout;
        loop {
            let node = self.wait_primary(deadline).await?;
            if let Some(b) = &self.backends[Role::Primary as usize] {
                if b.conn.node == node {
                    return Ok(());
                }
                tracing::info!(client = %self.peer, old = %b.conn.node.name, new = %node.name, "primary changed");
                self.drop_backend(Role::Primary);
            }
            match self.open_backend(&node).await {
                Ok(opened) => {
                    self.install(Role::Primary, opened);
                    return Ok(());
                }
                Err(ConnectError::Server(fields)) => {
                    self.note_refusal(&fields);
                    return Err(downgrade(&fields));
                }
                Err(e) => {
                    // Expected during failover until the topology moves on;
                    // the monitor reports node health, so keep this quiet.
                    tracing::debug!(node = %node.name, "primary connection failed, retrying: {e}");
                    if Instant::now() >= deadline {
                        return Err(error_body(&ErrorInfo::error(
                            "08006",
                            format!(
                                "no primary reachable within {:?}: {e}",
                                self.shared.settings.primary_wait_timeout
                            ),
                        )));
                    }
                    let wait = tokio::time::sleep(std::time::Duration::from_millis(200));
                    let _ = tokio::time::timeout_at(deadline.into(), async {
                        tokio::select! { _ = self.topology.changed() => {}, _ = wait => {} }
                    })
                    .await;
                }
            }
        }
    }

    /// Fast path: the session's primary connection is to the current primary
    /// and the proxy is not paused (no allocation).
    fn primary_current(&mut self) -> bool {
        let Some(b) = &self.backends[Role::Primary as usize] else {
            return false;
        };
        let t = self.topology.borrow_and_update();
        !t.paused && t.primary.as_ref() == Some(&b.conn.node)
    }

    /// The current primary, waiting while there is none or the proxy is paused.
    async fn wait_primary(&mut self, deadline: Instant) -> Result<Node, Bytes> {
        let started = Instant::now();
        let mut waiting: Option<crate::metrics::WaitingClient> = None;
        let r = self.wait_primary_inner(deadline, &mut waiting).await;
        if waiting.is_some() {
            let m = &self.shared.metrics;
            m.waited(crate::metrics::Wait::Primary, started.elapsed());
        }
        r
    }

    /// [`Session::wait_primary`]; `waiting` counts the client as waiting
    /// (in `active`'s place) from the first time it has to.
    async fn wait_primary_inner(
        &mut self,
        deadline: Instant,
        waiting: &mut Option<crate::metrics::WaitingClient>,
    ) -> Result<Node, Bytes> {
        let pause_deadline = Instant::now() + self.shared.settings.pause_timeout;
        loop {
            self.hold_primary();
            let (primary, paused) = {
                let t = self.topology.borrow_and_update();
                (t.primary.clone(), t.paused)
            };
            let until = match (primary, paused) {
                (Some(p), false) => return Ok(p),
                (_, true) => pause_deadline,
                (None, false) => deadline,
            };
            // Nothing of ours runs on the primary while we wait.
            self.in_flight = None;
            if waiting.is_none() {
                *waiting = Some(crate::metrics::WaitingClient::new(
                    self.shared.clone(),
                    self.kind,
                ));
            }
            match tokio::time::timeout_at(until.into(), self.topology.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => {
                    return Err(error_body(&ErrorInfo::error(
                        "08006",
                        "the proxy is shutting down",
                    )))
                }
                Err(_) if paused => {
                    return Err(error_body(&ErrorInfo::error(
                        "57P03",
                        "the proxy is paused for a switchover and did not resume in time",
                    )))
                }
                Err(_) => {
                    return Err(error_body(&ErrorInfo::error(
                        "08006",
                        format!(
                            "no primary available after waiting {:?}",
                            self.shared.settings.primary_wait_timeout
                        ),
                    )))
                }
            }
        }
    }

    /// The pool of this session's login on `node` (looked up once per node).
    fn pool_for(&self, node: &Node) -> Arc<crate::pool::Pool> {
        let mut cached = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = cached.iter().find(|p| p.node() == node) {
            return p.clone();
        }
        let p = self
            .shared
            .pools
            .pool(crate::pool::PoolKey::new(node, &self.params));
        cached.push(p.clone());
        p
    }

    /// A backend on `node`: a new connection, or in transaction mode one
    /// from the pool (with the state the proxy left on it).
    async fn open_backend(&self, node: &Node) -> Result<Opened, ConnectError> {
        let s = &self.shared.settings;
        let connect = || {
            BackendConn::connect(
                node,
                &self.params,
                &self.creds,
                s.connect_timeout,
                s.max_message_bytes,
                self.shared.backend_tls.as_ref(),
            )
        };
        if !self.pooled {
            return Ok(Opened {
                conn: connect().await?,
                carried: None,
                slot: None,
            });
        }
        let pool = self.pool_for(node);
        let acquired = {
            let waiting = WaitingFlag::new(&self.view.waiting);
            let acquired = self.shared.pools.acquire(&pool, connect).await;
            drop(waiting);
            acquired
        };
        match acquired {
            Ok(crate::pool::Acquired::Idle(idle)) => Ok(Opened {
                conn: idle.conn,
                carried: Some((idle.prepared, idle.settings)),
                slot: Some(idle.slot),
            }),
            Ok(crate::pool::Acquired::New(conn, slot)) => {
                pool.note_credentials(&self.creds);
                Ok(Opened {
                    conn,
                    carried: None,
                    slot: Some(slot),
                })
            }
            Err(crate::pool::PoolError::Connect(e)) => Err(e),
            Err(e @ crate::pool::PoolError::Paused { .. }) => {
                tracing::warn!(client = %self.peer, "{e}");
                Err(ConnectError::Server(error_body(&ErrorInfo::error(
                    "57P03",
                    e.to_string(),
                ))))
            }
            Err(e @ crate::pool::PoolError::Timeout { .. }) => {
                tracing::warn!(client = %self.peer, "{e}");
                Err(ConnectError::Server(error_body(&ErrorInfo::error(
                    "53300",
                    e.to_string(),
                ))))
            }
        }
    }

    /// A session answered from the login cache whose first backend refuses
    /// the login for a reason that will not go away (not 57P0x shutting
    /// down / starting up, 53xxx too many connections, 08xxx): remember the
    /// error so the session ends with it.
    fn note_refusal(&mut self, fields: &Bytes) {
        if self.unverified.is_none() {
            return;
        }
        let code = error_field(fields, b'C').unwrap_or(b"");
        let transient =
            code.starts_with(b"57P") || code.starts_with(b"53") || code.starts_with(b"08");
        if !transient {
            self.refused = Some(fields.clone());
        }
    }

    fn install(&mut self, role: Role, opened: Opened) {
        let Opened {
            conn,
            carried,
            slot,
        } = opened;
        self.drop_backend(role);
        tracing::debug!(backend = %conn.node.name, ?role, "backend connected");
        // A pooled backend handed out again logged in long ago: refreshing
        // the login cache with it on every transaction would cost a key
        // (every startup parameter copied and sorted) and a map update each.
        if role == self.default_role() && carried.is_none() {
            let key = crate::login_cache::LoginKey::new(self.kind, &self.params);
            self.shared.logins.put(&key, &conn.params);
        }
        if let Some(told) = self.unverified.take() {
            self.refused = None;
            self.announce_changes(&told, &conn.params);
        }
        self.cancel.lock().unwrap_or_else(|e| e.into_inner()).push((
            conn.node.clone(),
            conn.pid,
            conn.key,
        ));
        let monitor = &self.shared.monitor;
        let stats = match &slot {
            Some(slot) => slot.pool().node_stats(|| monitor.stats(&conn.node)),
            None => monitor.stats(&conn.node),
        };
        let mut b = Backend::new(conn, stats);
        if let Some((prepared, settings)) = carried {
            b.prepared = prepared;
            b.settings = settings;
        }
        b.slot = slot;
        self.backends[role as usize] = Some(b);
    }

    /// Forgets a backend (its socket closes).
    pub(super) fn drop_backend(&mut self, role: Role) {
        if let Some(b) = self.backends[role as usize].take() {
            let mut c = self.cancel.lock().unwrap_or_else(|e| e.into_inner());
            c.retain(|(n, pid, _)| !(n == &b.conn.node && *pid == b.conn.pid));
        }
        if self.active == Some(role) {
            self.active = None;
        }
    }

    /// Text of a server error body's message, for logs.
    pub(super) fn error_text(fields: &[u8]) -> String {
        String::from_utf8_lossy(error_field(fields, b'M').unwrap_or(b"")).into_owned()
    }
}

/// Marks a client as waiting while a pool acquire is pending (also when the
/// acquire future is dropped).
struct WaitingFlag<'a>(&'a std::sync::atomic::AtomicBool);

impl<'a> WaitingFlag<'a> {
    fn new(flag: &'a std::sync::atomic::AtomicBool) -> Self {
        flag.store(true, std::sync::atomic::Ordering::Relaxed);
        WaitingFlag(flag)
    }
}

impl Drop for WaitingFlag<'_> {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A backend connection ready to install, with what a pooled one carries.
pub(super) struct Opened {
    conn: BackendConn,
    /// A pooled backend's prepared statements and settings.
    carried: Option<(
        super::state::SessionMap<bytes::Bytes, u64>,
        super::state::SessionMap<String, String>,
    )>,
    slot: Option<crate::pool::Slot>,
}

/// Counts a read barrier's wait for a standby when dropped.
struct WaitTimer<'a>(&'a crate::metrics::ProxyMetrics, Instant);

impl Drop for WaitTimer<'_> {
    fn drop(&mut self) {
        self.0
            .waited(crate::metrics::Wait::Standby, self.1.elapsed());
    }
}
