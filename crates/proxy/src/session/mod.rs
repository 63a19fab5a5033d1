//! One client session: after [`startup`], a single task moves messages
//! between the client and at most two backends (the primary and one
//! standby), opened lazily and kept for the session.
//!
//! The loop: dispatch every complete client message ([`dispatch`]), then wait
//! on whichever of {client readable, active backend readable, either side
//! writable} comes first, and turn backend output into client output
//! ([`respond`]). Only one backend is *active* (has work in flight) at a time:
//! a unit routed elsewhere waits until the active backend has answered
//! everything, which keeps responses in order while pipelining on one backend
//! stays free.
//!
//! Hazards: a failure of a backend must end only the work in flight on it,
//! with an error per unit the client is waiting for; the client connection
//! survives. Client bytes are untrusted: any codec error closes this client
//! with 08P01 and nothing else.

mod admin;
mod deferral;
mod dispatch;
mod pooled;
mod refuse;
mod replay;
mod respond;
mod route;
pub mod startup;
pub mod state;

use crate::codec::{BackendMessage, CodecError, ErrorInfo};
use crate::metrics::{ClientGauge, ClientState};
use crate::shared::{CancelTargets, ListenerKind, Shared};
use crate::tls::{ClientRead, ClientWrite};
use bytes::{Bytes, BytesMut};
use state::{Backend, Role, SessionState};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::Instrument;

use crate::login_cache::{LoginKey, ParamSet};

/// Stop reading a backend while this much output waits for the client.
const CLIENT_HIGH_WATER: usize = 1 << 20;

/// A session keeps its (empty) buffers while it is active and frees them
/// once it has had no I/O event for one to two of these periods.
const IDLE_RELEASE: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a client that is being refused gets to take its error message.
const REFUSAL_FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The client socket (plain or TLS) and its buffers. Both buffers are empty
/// without an allocation once the session has been idle for a while (see
/// [`Session::idle_tick`]).
///
/// After login every message header is checked as soon as it arrives
/// ([`ClientIo::check_arrived`]), before the body is awaited: `rbuf` never
/// holds more of one message than `max_client_message_bytes`.
pub struct ClientIo {
    rd: ClientRead,
    wr: ClientWrite,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// Bytes at the end of `rbuf` from the next unchecked header on (less
    /// than a whole header when the checks are up to date).
    unchecked: usize,
    /// Bytes of the last checked message that have not arrived yet.
    body_due: usize,
}

impl ClientIo {
    fn new(stream: TcpStream) -> Self {
        let (rd, wr) = crate::tls::plain(stream);
        ClientIo {
            rd,
            wr,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            unchecked: 0,
            body_due: 0,
        }
    }

    /// Checks the headers of the client messages in the `n` bytes just
    /// appended to `rbuf` (after login). The session takes only whole
    /// messages off the front of `rbuf`, so the unchecked bytes stay at its
    /// end. The type byte is checked alone, the length word as soon as it
    /// is there ([`crate::codec::frontend::check_header_after_login`]).
    fn check_arrived(&mut self, n: usize, cap: usize) -> Result<(), CodecError> {
        use crate::codec::frontend::{check_header_after_login, valid_after_login};
        let body = n.min(self.body_due);
        self.body_due -= body;
        self.unchecked += n - body;
        while self.unchecked > 0 {
            let head = &self.rbuf[self.rbuf.len() - self.unchecked..];
            if head.len() < 5 {
                if !valid_after_login(head[0]) {
                    return Err(CodecError::UnknownTag(head[0]));
                }
                return Ok(());
            }
            let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]);
            check_header_after_login(head[0], len, cap)?;
            let total = len as usize + 1;
            if total <= self.unchecked {
                self.unchecked -= total;
            } else {
                self.body_due = total - self.unchecked;
                self.unchecked = 0;
            }
        }
        Ok(())
    }

    /// Tells the client why it is being closed (bounded in time: a client
    /// that does not read must not keep the session).
    async fn refuse(&mut self, e: CodecError) -> SessionError {
        let info = match &e {
            CodecError::UnknownTag(tag) => {
                ErrorInfo::fatal("08P01", format!("invalid frontend message type {tag}"))
            }
            CodecError::BadLength(_) => ErrorInfo::fatal("08P01", "invalid message length"),
            CodecError::TooLarge { len, max } => ErrorInfo::fatal(
                "54000",
                format!(
                    "message too large: {len} bytes, more than the proxy's \
                     max_client_message_bytes ({max})"
                ),
            ),
            other => ErrorInfo::fatal("08P01", format!("invalid frontend message: {other}")),
        };
        self.queue_error(&info);
        let _ = tokio::time::timeout(REFUSAL_FLUSH_TIMEOUT, self.flush()).await;
        SessionError::Protocol(e)
    }

    /// Reads until `f` decodes something; `Ok(None)` at end of stream.
    async fn read_with<T>(
        &mut self,
        mut f: impl FnMut(&mut BytesMut) -> Result<Option<T>, CodecError>,
    ) -> Result<Option<T>, startup::StartEnd> {
        loop {
            if let Some(v) = f(&mut self.rbuf)? {
                return Ok(Some(v));
            }
            if crate::bufio::read_some(&mut self.rd, &mut self.rbuf).await? == 0 {
                return Ok(None);
            }
        }
    }

    fn queue(&mut self, msg: &BackendMessage) {
        msg.encode(&mut self.wbuf);
    }

    fn queue_error(&mut self, e: &ErrorInfo) {
        e.encode(&mut self.wbuf);
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        self.wr.write_all_buf(&mut self.wbuf).await?;
        self.wr.flush().await
    }

    async fn write_now(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.flush().await?;
        self.wr.write_all(b).await?;
        self.wr.flush().await
    }

    /// Answers an SSLRequest with 'S' and runs the TLS handshake (bounded by
    /// `timeout`). Bytes the client sent after the SSLRequest, before the
    /// handshake, would be plaintext injected into the TLS session: refused.
    async fn start_tls(
        &mut self,
        acceptor: &crate::tls::TlsAcceptor,
        timeout: std::time::Duration,
    ) -> std::io::Result<()> {
        if !self.rbuf.is_empty() {
            return Err(std::io::Error::other(
                "client sent data after SSLRequest before the TLS handshake",
            ));
        }
        self.write_now(b"S").await?;
        let handshake = crate::tls::upgrade(&mut self.rd, &mut self.wr, acceptor);
        tokio::time::timeout(timeout, handshake)
            .await
            .map_err(|_| std::io::Error::other("TLS handshake timed out"))?
    }
}

/// Serves one accepted client until it disconnects.
///
/// The client holds one of `max_client_connections` slots until it leaves;
/// without a free slot it gets PostgreSQL's "sorry, too many clients
/// already" after its startup packet. Everything up to the end of the login
/// is bounded by `authentication_timeout`: then the client is closed
/// without a message, as PostgreSQL closes it.
pub async fn serve(stream: TcpStream, peer: SocketAddr, kind: ListenerKind, shared: Arc<Shared>) {
    // A debug-level span: entered on every poll, so it must cost nothing at
    // the usual log levels; the events that matter carry `client` themselves.
    let span = tracing::debug_span!("session", client_addr = %peer, listener = kind.name());
    async move {
        let deadline = tokio::time::Instant::now() + shared.settings.authentication_timeout;
        let mut io = ClientIo::new(stream);
        let Some(_slot) = shared.client_slot() else {
            match shared.refusal_slot() {
                Some(_refusing) => {
                    let refuse = refuse_too_many(&mut io, &shared, peer);
                    let _ = tokio::time::timeout_at(deadline, refuse).await;
                }
                None => {
                    // As many refusals under way as clients: this one does
                    // not wait for a startup packet (a small message fits in
                    // the socket's buffer; the wait is bounded anyway).
                    io.queue_error(&too_many_clients());
                    let _ = tokio::time::timeout(REFUSAL_FLUSH_TIMEOUT, io.flush()).await;
                }
            }
            return;
        };
        let mut gauge = ClientGauge::new(shared.clone(), kind, ClientState::Login);
        let login = {
            let shared = shared.clone();
            async move {
                let started = match startup::start(&mut io, &shared).await {
                    Ok(s) => s,
                    Err(startup::StartEnd::Quiet) => return None,
                    Err(startup::StartEnd::Fatal(e)) => {
                        tracing::info!(client = %peer, "login refused: {}", e.message);
                        io.queue_error(&e);
                        let _ = io.flush().await;
                        return None;
                    }
                };
                if admin::is_admin_login(&shared, &started) {
                    return Some(Err((io, started)));
                }
                let mut session = Session::new(io, kind, shared.clone(), started, peer);
                if let Err(e) = session.begin().await {
                    tracing::info!(client = %peer, "session start failed: {e:#}");
                    return None;
                }
                Some(Ok(session))
            }
        };
        let mut session = match tokio::time::timeout_at(deadline, login).await {
            Ok(Some(Ok(session))) => {
                gauge.set(ClientState::Active);
                session
            }
            Ok(Some(Err((io, started)))) => {
                gauge.set(ClientState::Active);
                if let Err(e) = admin::serve(io, shared, started).await {
                    tracing::info!(client = %peer, "admin console session ended: {e:#}");
                }
                return;
            }
            Ok(None) => return,
            Err(_) => {
                tracing::info!(client = %peer, "canceling authentication due to timeout");
                return;
            }
        };
        let pipelined = session.io.rbuf.len();
        let cap = shared.limits.max_client_message;
        if let Err(e) = session.io.check_arrived(pipelined, cap) {
            let e = session.io.refuse(e).await;
            tracing::info!(client = %peer, "session ended: {e:#}");
            return;
        }
        match session.run().await {
            Ok(()) => tracing::debug!("client left"),
            Err(e) => tracing::info!(client = %peer, "session ended: {e:#}"),
        }
    }
    .instrument(span)
    .await
}

/// PostgreSQL's answer when `max_connections` are taken.
fn too_many_clients() -> ErrorInfo {
    ErrorInfo::fatal("53300", "sorry, too many clients already")
}

/// A client past `max_client_connections`: like PostgreSQL, read its
/// startup packet (answering SSL/GSS requests, serving a CancelRequest),
/// then FATAL 53300 and close.
async fn refuse_too_many(io: &mut ClientIo, shared: &Shared, peer: SocketAddr) {
    let e = match startup::negotiate(io, shared).await {
        Ok(_) => too_many_clients(),
        Err(startup::StartEnd::Fatal(e)) => e,
        Err(startup::StartEnd::Quiet) => return,
    };
    tracing::info!(client = %peer, "login refused: {}", e.message);
    io.queue_error(&e);
    let _ = io.flush().await;
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("client I/O: {0}")]
    ClientIo(#[from] std::io::Error),
    #[error("client protocol violation: {0}")]
    Protocol(#[from] CodecError),
    #[error("{0}")]
    Start(String),
}

/// What the dispatcher did with the client buffer.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Exit,
}

/// A session after authentication.
pub struct Session {
    io: ClientIo,
    kind: ListenerKind,
    peer: SocketAddr,
    shared: Arc<Shared>,
    user: String,
    params: Vec<(String, String)>,
    creds: crate::auth::BackendCredentials,
    backends: [Option<Backend>; 2],
    /// The backend that last got work (responses are read from it).
    active: Option<Role>,
    /// An extended-protocol unit (no Sync yet) is open on this backend.
    open: Option<Role>,
    /// A unit failed before reaching a backend: drop client messages up to Sync.
    discard_until_sync: bool,
    /// A client message that could not be dispatched yet (waits for drain).
    stalled: Option<(u8, Bytes)>,
    /// Client messages of a unit refused by a standby, to run on the primary.
    retry: Option<Bytes>,
    /// Transaction status from the last ReadyForQuery.
    tx_status: u8,
    /// A lone `BEGIN` answered by the proxy and not sent yet: the next
    /// statement decides where the transaction runs (`SET TRANSACTION READ
    /// ONLY` -> standby).
    deferred_begin: Option<Bytes>,
    /// The deferred BEGIN (or the session default) made it READ ONLY.
    deferred_read_only: bool,
    /// When client bytes last arrived: every message buffered now arrived
    /// before it (the read barrier needs a primary position sampled later).
    client_read_at: std::time::Instant,
    /// A standby proven to have replayed the primary's position sampled at
    /// this moment: reads that arrived before it need no new barrier.
    proven: Option<(std::time::Instant, Arc<crate::monitor::NodeStats>)>,
    /// The backend that held the session's open transaction was lost (its
    /// node's name): every unit fails until the client ends the transaction
    /// (see `dispatch::refuse_in_lost_tx`).
    tx_lost: Option<String>,
    /// The analysis of the Parse that opened the current unit (saves a
    /// second classifier lookup when the Parse is forwarded).
    last_parse: Option<(Bytes, Arc<crate::classify::Analysis>)>,
    state: SessionState,
    /// Retry/hold-back buffers of finished units, for the next one.
    spare: state::SpareBufs,
    cancel: Arc<CancelTargets>,
    cancel_id: (i32, i32),
    topology: tokio::sync::watch::Receiver<crate::topology::Topology>,
    /// Routing facts of the current topology generation.
    route_view: route::RouteView,
    /// Counted as in flight on the primary (switchover drain; see route.rs).
    in_flight: Option<crate::topology::InFlightHold>,
    /// The login was answered from the login cache with these values and no
    /// backend has logged in for this session yet: the first one that does
    /// is compared with them (differences are sent as ParameterStatus).
    unverified: Option<ParamSet>,
    /// The first backend of an unverified session refused the login for
    /// good (unknown database, no CONNECT privilege...): that FATAL ends the
    /// session, as it would have ended a direct login.
    refused: Option<Bytes>,
    /// I/O events so far (wraps); compared at each idle-timer tick.
    events: u64,
    /// `events` at the last idle-timer tick.
    events_at_tick: u64,
    /// `pool_mode = transaction`: backends come from the shared pools and
    /// go back when a transaction ends.
    pooled: bool,
    /// The pools this session took backends from, one per node.
    pools: std::sync::Mutex<Vec<Arc<crate::pool::Pool>>>,
    /// Pooled and pinned: a transaction ended on the primary since the
    /// last pin check.
    pin_check_due: bool,
    /// What `SHOW CLIENTS` shows of this client.
    view: Arc<crate::clients::ClientView>,
    /// Armed only while the session holds buffer memory: ticks every
    /// [`IDLE_RELEASE`]; a tick with no event since the previous one frees
    /// the empty buffers (see [`Session::idle_tick`]). No timer operation
    /// happens per transaction.
    idle_timer: Option<IdleTimer>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.shared.unregister_cancel(self.cancel_id);
        if self.pooled {
            self.return_backends_at_exit();
        }
    }
}

impl Session {
    fn new(
        io: ClientIo,
        kind: ListenerKind,
        shared: Arc<Shared>,
        started: startup::Started,
        peer: SocketAddr,
    ) -> Self {
        let cancel = Arc::new(CancelTargets::default());
        let cancel_id = shared.register_cancel(cancel.clone());
        let topology = shared.topology.clone();
        let database = started
            .params
            .iter()
            .find(|(k, _)| k == "database")
            .map_or(started.user.as_str(), |(_, v)| v.as_str());
        let pooled = shared
            .settings
            .pool_mode_for(kind.name(), &started.user, database)
            == crate::config::PoolMode::Transaction;
        let view = Arc::new(crate::clients::ClientView {
            user: started.user.clone(),
            database: database.to_string(),
            application_name: started
                .params
                .iter()
                .find(|(k, _)| k == "application_name")
                .map_or(String::new(), |(_, v)| v.clone()),
            addr: peer,
            listener: kind.name(),
            pooled,
            connected_at: std::time::SystemTime::now(),
            targets: cancel.clone(),
            waiting: Default::default(),
        });
        shared.registry.register(cancel_id, view.clone());
        let mut session = Session {
            io,
            kind,
            peer,
            shared,
            user: started.user,
            params: started.params,
            creds: started.creds,
            backends: [None, None],
            active: None,
            open: None,
            discard_until_sync: false,
            stalled: None,
            retry: None,
            tx_status: b'I',
            deferred_begin: None,
            deferred_read_only: false,
            client_read_at: std::time::Instant::now(),
            proven: None,
            tx_lost: None,
            last_parse: None,
            state: SessionState::default(),
            spare: state::SpareBufs::default(),
            cancel,
            cancel_id,
            topology,
            route_view: route::RouteView::default(),
            in_flight: None,
            unverified: None,
            refused: None,
            events: 0,
            events_at_tick: 0,
            idle_timer: None,
            pooled,
            pools: Default::default(),
            pin_check_due: false,
            view,
        };
        session.state.serializable_base = startup_serializable(&session.params);
        session.state.default_serializable = session.state.serializable_base;
        session
    }

    /// Finishes the client's login. When an equivalent login (same listener
    /// and startup parameters) succeeded on a backend recently, the client
    /// gets that login's ParameterStatus values and no backend is opened:
    /// the first unit of work opens it (see `unverified`). Otherwise the
    /// first backend is opened now and its values are sent (and cached).
    async fn begin(&mut self) -> Result<(), SessionError> {
        let key = LoginKey::new(self.kind, &self.params);
        let params = match self.shared.logins.get(&key) {
            Some(cached) => {
                self.unverified = Some(cached.clone());
                cached
            }
            None => self.begin_with_backend(&key).await?,
        };
        self.io.queue(&BackendMessage::Authentication(
            crate::codec::backend::Authentication::Ok,
        ));
        for (name, value) in params.iter() {
            if let Some(msg) = self.client_parameter(name, value) {
                self.io.queue(&msg);
            }
        }
        let (pid, key) = self.cancel_id;
        self.io.queue(&BackendMessage::BackendKeyData { pid, key });
        self.io
            .queue(&BackendMessage::ReadyForQuery { status: b'I' });
        self.io.flush().await?;
        tracing::debug!(user = %self.user, lazy = self.unverified.is_some(), "session started");
        Ok(())
    }

    /// Opens the session's first backend for its login; its ParameterStatus
    /// values.
    async fn begin_with_backend(&mut self, key: &LoginKey) -> Result<ParamSet, SessionError> {
        let role = match self.ensure_backend(self.default_role()).await {
            Ok(role) => role,
            Err(body) => {
                let text = Session::error_text(&body);
                self.io.queue(&BackendMessage::ErrorResponse(fatal(&body)));
                let _ = self.io.flush().await;
                return Err(SessionError::Start(text));
            }
        };
        let params: ParamSet = match &self.backends[role as usize] {
            Some(b) => b.conn.params.as_slice().into(),
            None => Vec::new().into(),
        };
        self.shared.logins.put(key, &params);
        Ok(params)
    }

    /// A backend's login-time ParameterStatus as the client sees it (`None`:
    /// not shown on this listener); notes default_transaction_read_only.
    fn client_parameter(&mut self, name: &Bytes, value: &Bytes) -> Option<BackendMessage> {
        if self.kind == ListenerKind::Rw && &name[..] == b"in_hot_standby" {
            return None;
        }
        if &name[..] == b"default_transaction_read_only" {
            // Routing follows the session's own choice (a startup parameter
            // or `options`), not the server's configuration: a login during
            // pgha's fence would otherwise make the whole session read-only
            // (see `respond::own_read_only_default`).
            let asked = self.params.iter().any(|(k, v)| {
                k == "default_transaction_read_only"
                    || (k == "options" && v.contains("default_transaction_read_only"))
            });
            self.state.default_read_only = asked && &value[..] == b"on";
        }
        Some(BackendMessage::ParameterStatus {
            name: name.clone(),
            value: value.clone(),
        })
    }

    /// The first backend of a session whose login came from the cache has
    /// logged in: tell the client each value that differs from what it was
    /// told (ParameterStatus may arrive at any time).
    fn announce_changes(&mut self, told: &[(Bytes, Bytes)], now: &[(Bytes, Bytes)]) {
        for (name, value) in now {
            if told.iter().any(|(n, v)| n == name && v == value) {
                continue;
            }
            if let Some(msg) = self.client_parameter(name, value) {
                self.io.queue(&msg);
            }
        }
    }

    /// True while client input must wait for the active backend to drain.
    fn blocked(&self) -> bool {
        self.stalled.is_some() && self.active_busy()
    }

    fn active_busy(&self) -> bool {
        self.active
            .and_then(|r| self.backends[r as usize].as_ref())
            .is_some_and(|b| b.busy())
    }

    /// Writes what it can without waiting (saves a trip through `select!`).
    fn try_write(&mut self) {
        use bytes::Buf;
        if !self.io.wbuf.is_empty() {
            if let Ok(n) = self.io.wr.try_write(&self.io.wbuf) {
                self.io.wbuf.advance(n);
            }
        }
        if let Some(b) = self.active.and_then(|r| self.backends[r as usize].as_mut()) {
            if !b.conn.wbuf.is_empty() {
                if let Ok(n) = b.conn.wr.try_write(&b.conn.wbuf) {
                    b.conn.wbuf.advance(n);
                }
            }
        }
    }

    /// Drops buffers that are empty, so an idle session holds no buffer
    /// memory. A buffer that still has bytes is kept.
    fn release_idle_buffers(&mut self) {
        release_if_empty(&mut self.io.rbuf);
        release_if_empty(&mut self.io.wbuf);
        self.spare.release();
        for b in self.backends.iter_mut().flatten() {
            if !b.busy() {
                release_if_empty(&mut b.conn.rbuf);
                release_if_empty(&mut b.conn.wbuf);
            }
        }
    }

    /// True while some buffer of the session holds memory.
    fn holds_buffers(&self) -> bool {
        self.io.rbuf.capacity() > 0
            || self.io.wbuf.capacity() > 0
            || self.spare.holds_memory()
            || self
                .backends
                .iter()
                .flatten()
                .any(|b| b.conn.rbuf.capacity() > 0 || b.conn.wbuf.capacity() > 0)
    }

    /// Arms the idle timer when the session holds buffers and it is not
    /// armed yet (once per active period, not per transaction).
    fn arm_idle_timer(&mut self) {
        if self.idle_timer.is_none() && self.holds_buffers() {
            self.events_at_tick = self.events;
            self.idle_timer = Some(IdleTimer {
                sleep: Box::pin(tokio::time::sleep(IDLE_RELEASE)),
                registered: false,
            });
        }
    }

    /// The idle timer fired: with no I/O event during the last period, frees
    /// the empty buffers (and drops the timer once nothing is held);
    /// otherwise it ticks again one period later.
    fn idle_tick(&mut self) {
        if self.events == self.events_at_tick {
            self.release_idle_buffers();
            if !self.holds_buffers() {
                self.idle_timer = None;
                return;
            }
        }
        self.events_at_tick = self.events;
        if let Some(t) = self.idle_timer.as_mut() {
            t.sleep
                .as_mut()
                .reset(tokio::time::Instant::now() + IDLE_RELEASE);
            t.registered = false;
        }
    }

    /// The client sent Terminate: hand the backends what is queued for them
    /// (pipelined work runs, as it would on a direct connection), then
    /// Terminate, bounded by the connect timeout.
    async fn terminate_backends(&mut self) {
        let timeout = self.shared.settings.connect_timeout;
        // Pooled backends go back to their pools (`Drop`).
        for b in self
            .backends
            .iter_mut()
            .flatten()
            .filter(|b| b.slot.is_none())
        {
            crate::codec::FrontendMessage::Terminate.encode(&mut b.conn.wbuf);
            let conn = &mut b.conn;
            let write = async {
                conn.wr.write_all_buf(&mut conn.wbuf).await?;
                conn.wr.flush().await
            };
            let _ = tokio::time::timeout(timeout, write).await;
        }
    }

    async fn run(&mut self) -> Result<(), SessionError> {
        // The login's buffers: an idle client holds nothing from the start.
        self.release_idle_buffers();
        loop {
            if let Some(bytes) = self.retry.take() {
                self.redispatch(bytes).await?;
            }
            if self.retry.is_none() && !self.blocked() && self.dispatch().await? == Flow::Exit {
                let _ = self.io.flush().await;
                self.terminate_backends().await;
                return Ok(());
            }
            if self.pooled {
                self.release_idle_backends();
            }
            self.try_write();
            self.track_in_flight();
            self.arm_idle_timer();
            if self.wait_io().await? == Flow::Exit {
                return Ok(());
            }
        }
    }

    /// Waits for one I/O event and handles it.
    async fn wait_io(&mut self) -> Result<Flow, SessionError> {
        enum Ev {
            ClientRead(std::io::Result<usize>),
            ClientWrote(std::io::Result<usize>),
            BackendRead(std::io::Result<usize>),
            BackendWrote(std::io::Result<usize>),
            IdleTick,
        }
        let backend_full = self
            .active
            .and_then(|r| self.backends[r as usize].as_ref())
            .is_some_and(|b| b.conn.wbuf.len() >= CLIENT_HIGH_WATER);
        let read_client = !self.blocked() && self.retry.is_none() && !backend_full;
        let read_backend = self.io.wbuf.len() < CLIENT_HIGH_WATER;
        let ev = {
            let timer = &mut self.idle_timer;
            let io = &mut self.io;
            let be = self
                .active
                .and_then(|r| self.backends[r as usize].as_mut())
                .map(|b| &mut b.conn);
            let (brd, bwr) = match be {
                Some(c) => (
                    Some((&mut c.rd, &mut c.rbuf)),
                    Some((&mut c.wr, &mut c.wbuf)),
                ),
                None => (None, None),
            };
            let bwr = bwr.filter(|(wr, buf)| !buf.is_empty() || wr.pending_flush());
            let brd = brd.filter(|_| read_backend);
            let has_out = !io.wbuf.is_empty() || io.wr.pending_flush();
            // `biased`: polled in this order, without drawing a random
            // start. No branch can keep a later one waiting for long: the
            // writes drain a buffer only the other branches fill; a backend
            // that keeps sending (a large result) stops being read once the
            // client's buffer reaches `CLIENT_HIGH_WATER` and at the latest
            // when its answer ends (the client would wait for it on a
            // direct connection too); a client that keeps sending stops
            // being read once the backend's buffer reaches the high-water
            // mark, which it does as soon as the backend stops reading
            // because its own answers are not read; the idle tick matters
            // only when no I/O is ready at all.
            tokio::select! {
                biased;
                r = write_out(&mut io.wr, &mut io.wbuf), if has_out => Ev::ClientWrote(r),
                r = write_opt(bwr) => Ev::BackendWrote(r),
                r = read_opt(brd) => Ev::BackendRead(r),
                r = crate::bufio::read_some(&mut io.rd, &mut io.rbuf), if read_client => Ev::ClientRead(r),
                () = tick_opt(timer) => Ev::IdleTick,
            }
        };
        if matches!(ev, Ev::IdleTick) {
            self.idle_tick();
            return Ok(Flow::Continue);
        }
        self.events = self.events.wrapping_add(1);
        match ev {
            Ev::ClientRead(Ok(0)) | Ev::ClientRead(Err(_)) => return Ok(Flow::Exit),
            Ev::ClientRead(Ok(n)) => {
                self.client_read_at = std::time::Instant::now();
                let cap = self.shared.limits.max_client_message;
                if let Err(e) = self.io.check_arrived(n, cap) {
                    return Err(self.io.refuse(e).await);
                }
            }
            Ev::ClientWrote(r) => {
                r?;
            }
            Ev::BackendRead(Ok(0)) => self.backend_lost("the server closed the connection"),
            Ev::BackendRead(Err(e)) | Ev::BackendWrote(Err(e)) => self.backend_lost(&e.to_string()),
            Ev::BackendRead(Ok(_)) => {
                self.respond()?;
                self.try_write();
            }
            Ev::BackendWrote(Ok(_)) | Ev::IdleTick => {}
        }
        Ok(Flow::Continue)
    }
}

/// Whether the startup packet makes the session's default isolation
/// serializable: the parameter itself (as asyncpg's `server_settings` send
/// it) or `-c default_transaction_isolation=...` in `options`.
fn startup_serializable(params: &[(String, String)]) -> bool {
    let mut serializable = false;
    for (k, v) in params {
        if k == "default_transaction_isolation" {
            serializable = v.to_ascii_lowercase().contains("serializable");
        } else if k == "options" {
            if let Some(s) = crate::classify::startup_options_serializable(v) {
                serializable = s;
            }
        }
    }
    serializable
}

/// An error body with severity FATAL (the session ends after it).
fn fatal(fields: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(fields.len() + 8);
    let mut rest = fields;
    while let Some((&c, tail)) = rest.split_first() {
        if c == 0 {
            break;
        }
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        out.extend_from_slice(&[c]);
        if c == b'S' || c == b'V' {
            out.extend_from_slice(b"FATAL");
        } else {
            out.extend_from_slice(&tail[..end]);
        }
        out.extend_from_slice(&[0]);
        rest = tail.get(end + 1..).unwrap_or(&[]);
    }
    out.extend_from_slice(&[0]);
    out.freeze()
}

fn release_if_empty(buf: &mut BytesMut) {
    if buf.is_empty() && buf.capacity() > 0 {
        *buf = BytesMut::new();
    }
}

/// Writes some of `buf`, or flushes TLS output when `buf` is empty (a
/// client's or a backend's connection).
async fn write_out(wr: &mut ClientWrite, buf: &mut BytesMut) -> std::io::Result<usize> {
    if buf.is_empty() {
        wr.flush().await?;
        return Ok(0);
    }
    wr.write_buf(buf).await
}

async fn read_opt(x: Option<(&mut ClientRead, &mut BytesMut)>) -> std::io::Result<usize> {
    match x {
        Some((rd, buf)) => crate::bufio::read_some(rd, buf).await,
        None => std::future::pending().await,
    }
}

/// The session's idle timer: a `Sleep` armed once per period.
struct IdleTimer {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    /// Polled since it was (re)armed: the timer holds the session task's
    /// waker and wakes it when the deadline passes.
    registered: bool,
}

/// Ready when the idle timer fired. Polling a `Sleep` (coop budget, waker
/// registration) on each of the several waits of a transaction costs more
/// than the rest of the wait; once registered, the timer wakes the session
/// task by itself (the session is one task, its waker does not change), so
/// later waits only read whether it elapsed (one atomic load).
async fn tick_opt(t: &mut Option<IdleTimer>) {
    let Some(t) = t else {
        return std::future::pending().await;
    };
    use std::future::Future as _;
    std::future::poll_fn(|cx| {
        if t.registered && !t.sleep.is_elapsed() {
            return std::task::Poll::Pending;
        }
        t.registered = true;
        t.sleep.as_mut().poll(cx)
    })
    .await
}

async fn write_opt(x: Option<(&mut ClientWrite, &mut BytesMut)>) -> std::io::Result<usize> {
    match x {
        Some((wr, buf)) => write_out(wr, buf).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Once polled, the idle timer wakes the session by itself: a later wait
    /// that only checks whether it elapsed still ends when it fires.
    #[tokio::test]
    async fn idle_timer_wakes_after_its_first_poll() {
        let mut t = Some(IdleTimer {
            sleep: Box::pin(tokio::time::sleep(Duration::from_millis(20))),
            registered: false,
        });
        let first = tokio::time::timeout(Duration::from_millis(1), tick_opt(&mut t)).await;
        assert!(first.is_err(), "not yet elapsed");
        assert!(t.as_ref().is_some_and(|t| t.registered));
        tokio::time::timeout(Duration::from_secs(10), tick_opt(&mut t))
            .await
            .expect("the registered timer wakes the task");
    }
}
