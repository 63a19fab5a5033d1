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

mod dispatch;
mod respond;
mod route;
pub mod startup;
pub mod state;

use crate::codec::{BackendMessage, CodecError, ErrorInfo};
use crate::server::{CancelTargets, ListenerKind, Shared};
use crate::tls::{ClientRead, ClientWrite};
use bytes::{Bytes, BytesMut};
use state::{Backend, Role, SessionState};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tracing::Instrument;

/// Stop reading a backend while this much output waits for the client.
const CLIENT_HIGH_WATER: usize = 1 << 20;

/// The client socket (plain or TLS) and its buffers.
pub struct ClientIo {
    rd: ClientRead,
    wr: ClientWrite,
    rbuf: BytesMut,
    wbuf: BytesMut,
}

impl ClientIo {
    fn new(stream: TcpStream) -> Self {
        let (rd, wr) = crate::tls::plain(stream);
        ClientIo {
            rd,
            wr,
            rbuf: BytesMut::with_capacity(8192),
            wbuf: BytesMut::with_capacity(8192),
        }
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
            if self.rd.read_buf(&mut self.rbuf).await? == 0 {
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
pub async fn serve(stream: TcpStream, peer: SocketAddr, kind: ListenerKind, shared: Arc<Shared>) {
    let span = tracing::info_span!("session", client_addr = %peer, listener = kind.name());
    async move {
        let mut io = ClientIo::new(stream);
        let started = match startup::start(&mut io, &shared).await {
            Ok(s) => s,
            Err(startup::StartEnd::Quiet) => return,
            Err(startup::StartEnd::Fatal(e)) => {
                tracing::info!("login refused: {}", e.message);
                io.queue_error(&e);
                let _ = io.flush().await;
                return;
            }
        };
        let mut session = Session::new(io, kind, shared, started);
        if let Err(e) = session.begin().await {
            tracing::info!("session start failed: {e:#}");
            return;
        }
        match session.run().await {
            Ok(()) => tracing::debug!("client left"),
            Err(e) => tracing::info!("session ended: {e:#}"),
        }
    }
    .instrument(span)
    .await
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
    /// The analysis of the Parse that opened the current unit (saves a
    /// second classifier lookup when the Parse is forwarded).
    last_parse: Option<(Bytes, Arc<crate::classify::Analysis>)>,
    state: SessionState,
    cancel: Arc<CancelTargets>,
    cancel_id: (i32, i32),
    topology: tokio::sync::watch::Receiver<crate::topology::Topology>,
    /// Counted as in flight on the primary (switchover drain; see route.rs).
    in_flight: Option<crate::topology::InFlightHold>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.shared.unregister_cancel(self.cancel_id);
    }
}

impl Session {
    fn new(
        io: ClientIo,
        kind: ListenerKind,
        shared: Arc<Shared>,
        started: startup::Started,
    ) -> Self {
        let cancel = Arc::new(CancelTargets::default());
        let cancel_id = shared.register_cancel(cancel.clone());
        let topology = shared.topology.clone();
        Session {
            io,
            kind,
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
            last_parse: None,
            state: SessionState::default(),
            cancel,
            cancel_id,
            topology,
            in_flight: None,
        }
    }

    /// Opens the first backend and finishes the client's login.
    async fn begin(&mut self) -> Result<(), SessionError> {
        let first = if self.kind == ListenerKind::Ro {
            Role::Standby
        } else {
            Role::Primary
        };
        let role = match self.ensure_backend(first).await {
            Ok(role) => role,
            Err(body) => {
                let text = Session::error_text(&body);
                self.io.queue(&BackendMessage::ErrorResponse(fatal(&body)));
                let _ = self.io.flush().await;
                return Err(SessionError::Start(text));
            }
        };
        self.io.queue(&BackendMessage::Authentication(
            crate::codec::backend::Authentication::Ok,
        ));
        let b = self.backends[role as usize]
            .as_ref()
            .map(|b| b.conn.params.clone())
            .unwrap_or_default();
        for (name, value) in b {
            if self.kind == ListenerKind::Rw && &name[..] == b"in_hot_standby" {
                continue;
            }
            if &name[..] == b"default_transaction_read_only" {
                self.state.default_read_only = &value[..] == b"on";
            }
            self.io
                .queue(&BackendMessage::ParameterStatus { name, value });
        }
        let (pid, key) = self.cancel_id;
        self.io.queue(&BackendMessage::BackendKeyData { pid, key });
        self.io
            .queue(&BackendMessage::ReadyForQuery { status: b'I' });
        self.io.flush().await?;
        tracing::debug!(user = %self.user, "session started");
        Ok(())
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

    /// The client sent Terminate: hand the backends what is queued for them
    /// (pipelined work runs, as it would on a direct connection), then
    /// Terminate, bounded by the connect timeout.
    async fn terminate_backends(&mut self) {
        let timeout = self.shared.settings.connect_timeout;
        for b in self.backends.iter_mut().flatten() {
            crate::codec::FrontendMessage::Terminate.encode(&mut b.conn.wbuf);
            let write = b.conn.wr.write_all_buf(&mut b.conn.wbuf);
            let _ = tokio::time::timeout(timeout, write).await;
        }
    }

    async fn run(&mut self) -> Result<(), SessionError> {
        loop {
            if let Some(bytes) = self.retry.take() {
                self.redispatch(bytes).await?;
            }
            if self.retry.is_none() && !self.blocked() && self.dispatch().await? == Flow::Exit {
                let _ = self.io.flush().await;
                self.terminate_backends().await;
                return Ok(());
            }
            self.try_write();
            self.track_in_flight();
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
        }
        let backend_full = self
            .active
            .and_then(|r| self.backends[r as usize].as_ref())
            .is_some_and(|b| b.conn.wbuf.len() >= CLIENT_HIGH_WATER);
        let read_client = !self.blocked() && self.retry.is_none() && !backend_full;
        let read_backend = self.io.wbuf.len() < CLIENT_HIGH_WATER;
        let ev = {
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
            let bwr = bwr.filter(|(_, buf)| !buf.is_empty());
            let brd = brd.filter(|_| read_backend);
            let has_out = !io.wbuf.is_empty() || io.wr.pending_flush();
            tokio::select! {
                r = io.rd.read_buf(&mut io.rbuf), if read_client => Ev::ClientRead(r),
                r = write_out(&mut io.wr, &mut io.wbuf), if has_out => Ev::ClientWrote(r),
                r = read_opt(brd) => Ev::BackendRead(r),
                r = write_opt(bwr) => Ev::BackendWrote(r),
            }
        };
        match ev {
            Ev::ClientRead(Ok(0)) | Ev::ClientRead(Err(_)) => return Ok(Flow::Exit),
            Ev::ClientRead(Ok(_)) => {}
            Ev::ClientWrote(r) => {
                r?;
            }
            Ev::BackendRead(Ok(0)) => self.backend_lost("the server closed the connection"),
            Ev::BackendRead(Err(e)) | Ev::BackendWrote(Err(e)) => self.backend_lost(&e.to_string()),
            Ev::BackendRead(Ok(_)) => {
                self.respond()?;
                self.try_write();
            }
            Ev::BackendWrote(Ok(_)) => {}
        }
        Ok(Flow::Continue)
    }
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

/// Writes some of `buf`, or flushes TLS output when `buf` is empty.
async fn write_out(wr: &mut ClientWrite, buf: &mut BytesMut) -> std::io::Result<usize> {
    if buf.is_empty() {
        wr.flush().await?;
        return Ok(0);
    }
    wr.write_buf(buf).await
}

async fn read_opt(x: Option<(&mut OwnedReadHalf, &mut BytesMut)>) -> std::io::Result<usize> {
    match x {
        Some((rd, buf)) => {
            if buf.capacity() - buf.len() < 4096 {
                buf.reserve(8192);
            }
            rd.read_buf(buf).await
        }
        None => std::future::pending().await,
    }
}

async fn write_opt(x: Option<(&mut OwnedWriteHalf, &mut BytesMut)>) -> std::io::Result<usize> {
    match x {
        Some((wr, buf)) => wr.write_buf(buf).await,
        None => std::future::pending().await,
    }
}
