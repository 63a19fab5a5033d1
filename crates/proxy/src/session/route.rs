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
use crate::classify::{Analysis, TxEffect};
use crate::codec::backend::error_field;
use crate::codec::ErrorInfo;
use crate::server::ListenerKind;
use crate::topology::Node;
use bytes::{BufMut, Bytes, BytesMut};
use std::sync::atomic::Ordering;
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
    /// The backend a new unit wants, from its analysis.
    pub(super) fn want(&self, a: Option<&Analysis>) -> Want {
        match self.kind {
            ListenerKind::Primary => Want::Primary,
            _ if self.tx_status != b'I' => Want::Sticky,
            ListenerKind::Ro => Want::Standby,
            ListenerKind::Rw => {
                let Some(a) = a else { return Want::Sticky };
                if self.state.pinned.is_some() {
                    return Want::Primary;
                }
                if let TxEffect::Begin { read_only } = a.tx {
                    return if read_only || self.state.default_read_only {
                        Want::Standby
                    } else {
                        Want::Primary
                    };
                }
                if a.read_only {
                    Want::Standby
                } else {
                    Want::Primary
                }
            }
        }
    }

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
                    || self.current_standby_eligible());
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

    fn current_standby_eligible(&mut self) -> bool {
        self.current_standby_usable(true)
    }

    /// Whether the session's standby connection may serve (`ryw`: also
    /// checking read-your-writes).
    fn current_standby_usable(&mut self, ryw: bool) -> bool {
        self.standby_check(None, ryw)
    }

    /// Is `node` a standby that may serve this session's reads now?
    fn standby_eligible(&mut self, node: &Node) -> bool {
        self.standby_check(Some(node), true)
    }

    /// `node`: `None` for the session's standby connection (no `Node` clone
    /// per transaction). The primary's stats come from [`RouteView`], looked
    /// up once per topology generation instead of in the monitor's map each
    /// time.
    fn standby_check(&mut self, node: Option<&Node>, ryw: bool) -> bool {
        let settings = &self.shared.settings;
        let standby = self.backends[Role::Standby as usize].as_ref();
        let (node, connected) = match (node, standby) {
            (None, Some(b)) => (&b.conn.node, Some(b)),
            (None, None) => return false,
            (Some(n), b) => (n, b.filter(|b| b.conn.node == *n)),
        };
        let primary_sample = {
            let t = self.topology.borrow();
            if !t.standbys.contains(node) {
                return false;
            }
            if self.route_view.generation != Some(t.generation) {
                self.route_view = RouteView {
                    generation: Some(t.generation),
                    primary: t.primary.as_ref().map(|p| self.shared.monitor.stats(p)),
                };
            }
            self.route_view
                .primary
                .as_deref()
                .and_then(primary_sample_of)
        };
        let st = match connected {
            Some(b) => b.stats.status(),
            None => self.shared.monitor.stats(node).status(),
        };
        let fresh = st
            .ok_started
            .is_some_and(|at| at.elapsed() <= settings.health_timeout);
        if !fresh || !st.in_recovery {
            return false;
        }
        if let (Some(max), Some((plsn, _))) = (settings.max_lag_bytes, primary_sample) {
            if plsn.bytes_after(st.lsn) > max {
                return false;
            }
        }
        if !ryw {
            return true;
        }
        if let Some(wrote_at) = self.state.last_write {
            if self.state.ryw_target.is_none() {
                match primary_sample {
                    Some((lsn, started)) if started > wrote_at => self.state.ryw_target = Some(lsn),
                    _ => return false,
                }
            }
            if self.state.ryw_target.is_some_and(|target| st.lsn < target) {
                return false;
            }
        }
        true
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

    async fn ensure_standby(&mut self) -> bool {
        if self.current_standby_eligible() {
            return true;
        }
        if self.current_standby_usable(false) {
            // Healthy but not yet past this session's last write: the
            // primary serves this read rather than churning connections.
            return false;
        }
        let standbys = self.topology.borrow().standbys.clone();
        let mut best: Option<(usize, Node)> = None;
        for node in standbys {
            if !self.standby_eligible(&node) {
                continue;
            }
            let load = self
                .shared
                .monitor
                .stats(&node)
                .outstanding
                .load(Ordering::Relaxed);
            if best.as_ref().is_none_or(|(l, _)| load < *l) {
                best = Some((load, node));
            }
        }
        let Some((_, node)) = best else { return false };
        match self.open_backend(&node).await {
            Ok(conn) => {
                self.install(Role::Standby, conn);
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
                Ok(conn) => {
                    self.install(Role::Primary, conn);
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
        let pause_deadline = Instant::now() + self.shared.settings.pause_timeout;
        loop {
            self.hold_primary();
            let (primary, paused) = {
                let t = self.topology.borrow_and_update();
                (t.primary.clone(), t.paused)
            };
            let until = match (&primary, paused) {
                (Some(p), false) => return Ok(p.clone()),
                (_, true) => pause_deadline,
                (None, false) => deadline,
            };
            // Nothing of ours runs on the primary while we wait.
            self.in_flight = None;
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

    async fn open_backend(&self, node: &Node) -> Result<BackendConn, ConnectError> {
        let s = &self.shared.settings;
        BackendConn::connect(
            node,
            &self.params,
            &self.creds,
            s.connect_timeout,
            s.max_message_bytes,
        )
        .await
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

    fn install(&mut self, role: Role, conn: BackendConn) {
        self.drop_backend(role);
        tracing::debug!(backend = %conn.node.name, ?role, "backend connected");
        if role == self.default_role() {
            let key = super::login_cache::LoginKey::new(self.kind, &self.params);
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
        let stats = self.shared.monitor.stats(&conn.node);
        self.backends[role as usize] = Some(Backend::new(conn, stats));
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
