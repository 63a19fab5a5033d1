//! Listeners, the shared state every session reads, and the cancel registry.
//!
//! [`Proxy::start`] binds the configured listeners (so tests can use port 0),
//! starts the monitor and returns a [`ProxyHandle`]; dropping the handle
//! stops accepting and aborts background tasks (sessions end when their
//! sockets close).
//!
//! Sessions run on `session_threads` worker threads, each a current-thread
//! runtime ([`Workers`]); an accepted socket is handed to the next worker
//! round-robin and stays there. Dropping the handle stops the workers (their
//! sessions end); with `session_threads = 0` sessions run on the caller's
//! runtime and outlive the handle until their sockets close.
//!
//! Hazard: one task per client; a panic in a session ends that client only.

use crate::classify::{Classifier, FunctionCatalog};
use crate::codec::Limits;
use crate::config::{ProxySettings, Secret};
use crate::monitor::Monitor;
use crate::session;
use crate::topology::{Node, Topology};
use rand::RngCore;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Which listener a client came in through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListenerKind {
    /// Read/write splitting.
    Rw,
    /// Standbys, primary as fallback.
    Ro,
    /// Always the primary.
    Primary,
}

impl ListenerKind {
    pub fn name(self) -> &'static str {
        match self {
            ListenerKind::Rw => "rw",
            ListenerKind::Ro => "ro",
            ListenerKind::Primary => "primary",
        }
    }
}

/// Where a session's queries may be running: `(node, backend pid, key)`.
pub type CancelTargets = Mutex<Vec<(Node, i32, i32)>>;

/// Everything sessions share.
pub struct Shared {
    pub settings: ProxySettings,
    pub limits: Limits,
    pub classifier: Arc<Classifier>,
    pub monitor: Arc<Monitor>,
    pub topology: watch::Receiver<Topology>,
    /// Secret for mock SCRAM salts of unknown roles.
    pub mock_key: [u8; 32],
    /// TLS towards clients, when `tls_cert_file`/`tls_key_file` are set.
    pub tls: Option<crate::tls::TlsAcceptor>,
    /// Recent backend logins, to answer equivalent logins without a backend.
    pub logins: session::login_cache::LoginCache,
    cancels: Mutex<HashMap<(i32, i32), Arc<CancelTargets>>>,
    /// Client connections holding a [`ClientSlot`] (all listeners).
    clients: Arc<AtomicUsize>,
    /// Clients past `max_client_connections` being refused after their
    /// startup packet (at most `max_client_connections` of them too).
    refusing: Arc<AtomicUsize>,
}

/// One of the `max_client_connections` places (or of as many places for
/// clients being refused); dropping it frees it.
pub struct ClientSlot {
    clients: Arc<AtomicUsize>,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Shared {
    /// Takes a client slot; `None` when `max_client_connections` are taken.
    pub fn client_slot(&self) -> Option<ClientSlot> {
        take_slot(&self.clients, self.settings.max_client_connections)
    }

    /// Client connections holding a slot now.
    pub fn client_count(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }

    /// A place for a client refused for `max_client_connections` that is
    /// read up to its startup packet first (as many as there are client
    /// slots, like PostgreSQL's dead-end children); `None`: refuse at once.
    pub fn refusal_slot(&self) -> Option<ClientSlot> {
        take_slot(&self.refusing, self.settings.max_client_connections)
    }

    /// Clients being refused after their startup packet now.
    pub fn refusing_count(&self) -> usize {
        self.refusing.load(Ordering::Relaxed)
    }

    /// Registers a new session; returns its (pid, key) for BackendKeyData.
    pub fn register_cancel(&self, targets: Arc<CancelTargets>) -> (i32, i32) {
        let mut map = self.cancels.lock().unwrap_or_else(|e| e.into_inner());
        let mut rng = rand::thread_rng();
        loop {
            let pid = (rng.next_u32() & 0x3fff_ffff) as i32 + 1;
            let key = rng.next_u32() as i32;
            if let std::collections::hash_map::Entry::Vacant(v) = map.entry((pid, key)) {
                v.insert(targets);
                return (pid, key);
            }
        }
    }

    pub fn unregister_cancel(&self, id: (i32, i32)) {
        self.cancels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// Forwards a client's CancelRequest to the backends of that session.
    pub async fn cancel(&self, pid: i32, key: i32) {
        let targets = {
            let map = self.cancels.lock().unwrap_or_else(|e| e.into_inner());
            match map.get(&(pid, key)) {
                Some(t) => t.lock().unwrap_or_else(|e| e.into_inner()).clone(),
                None => return,
            }
        };
        for (node, bpid, bkey) in targets {
            if let Err(e) = crate::backend::send_cancel(&node, bpid, bkey).await {
                tracing::warn!(node = %node.name, "forward cancel request: {e:#}");
            }
        }
    }
}

fn take_slot(count: &Arc<AtomicUsize>, max: usize) -> Option<ClientSlot> {
    count
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < max).then_some(n + 1)
        })
        .ok()?;
    Some(ClientSlot {
        clients: count.clone(),
    })
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("bind {listener} listener on {addr}: {source}")]
    Bind {
        listener: &'static str,
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("start session threads: {0}")]
    Threads(std::io::Error),
}

/// A running proxy.
pub struct ProxyHandle {
    pub rw: Option<SocketAddr>,
    pub ro: Option<SocketAddr>,
    pub primary: Option<SocketAddr>,
    pub shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
    /// Held so the session threads live as long as the handle.
    _workers: Option<Arc<Workers>>,
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl ProxyHandle {
    /// Waits until a background task ends (they normally never do).
    pub async fn wait(&mut self) {
        if self.tasks.is_empty() {
            return std::future::pending().await;
        }
        let (_res, _idx, rest) = futures::future::select_all(std::mem::take(&mut self.tasks)).await;
        self.tasks = rest;
    }
}

/// Entry point.
pub struct Proxy;

impl Proxy {
    /// Binds the listeners and starts accepting.
    pub async fn start(
        settings: ProxySettings,
        password: Secret,
        topology: watch::Receiver<Topology>,
    ) -> Result<ProxyHandle, StartError> {
        settings.validate()?;
        let tls = match (&settings.tls_cert_file, &settings.tls_key_file) {
            (Some(cert), Some(key)) => Some(crate::tls::load_acceptor(cert, key)?),
            _ => None,
        };
        let catalog = Arc::new(FunctionCatalog::new());
        let classifier = Arc::new(Classifier::new(catalog.clone()));
        let monitor = Arc::new(Monitor::new(&settings, password, topology.clone()));
        let mut tasks = monitor.spawn(catalog, settings.catalog_refresh);
        let mut mock_key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut mock_key);
        let shared = Arc::new(Shared {
            limits: settings.limits(),
            settings: settings.clone(),
            classifier,
            monitor,
            topology,
            mock_key,
            tls,
            logins: Default::default(),
            cancels: Mutex::new(HashMap::new()),
            clients: Default::default(),
            refusing: Default::default(),
        });
        let workers = match settings.session_threads {
            0 => None,
            n => Some(Arc::new(Workers::start(n).map_err(StartError::Threads)?)),
        };
        let mut addrs = [None, None, None];
        let listeners = [
            (ListenerKind::Rw, &settings.listen_rw),
            (ListenerKind::Ro, &settings.listen_ro),
            (ListenerKind::Primary, &settings.listen_primary),
        ];
        for (i, (kind, addr)) in listeners.into_iter().enumerate() {
            if addr.is_empty() {
                continue;
            }
            let bind_err = |source| StartError::Bind {
                listener: kind.name(),
                addr: addr.clone(),
                source,
            };
            let listener = TcpListener::bind(addr.as_str()).await.map_err(bind_err)?;
            addrs[i] = Some(listener.local_addr().map_err(bind_err)?);
            tracing::info!(
                "{} listener on {}",
                kind.name(),
                addrs[i].map(|a| a.to_string()).unwrap_or_default()
            );
            tasks.push(tokio::spawn(accept_loop(
                listener,
                kind,
                shared.clone(),
                workers.clone(),
            )));
        }
        Ok(ProxyHandle {
            rw: addrs[0],
            ro: addrs[1],
            primary: addrs[2],
            shared,
            tasks,
            _workers: workers,
        })
    }
}

async fn accept_loop(
    listener: TcpListener,
    kind: ListenerKind,
    shared: Arc<Shared>,
    workers: Option<Arc<Workers>>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                match &workers {
                    Some(w) => w.spawn(stream, peer, kind, shared),
                    None => {
                        tokio::spawn(session::serve(stream, peer, kind, shared));
                    }
                }
            }
            Err(e) => {
                tracing::warn!("{} listener: accept: {e:#}", kind.name());
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Session threads: one current-thread runtime each. A session never
/// migrates, so its wake-ups stay on one thread (no cross-thread futex
/// wake-ups, no work-stealing bookkeeping) and its memory stays in one
/// core's cache.
struct Workers {
    handles: Vec<tokio::runtime::Handle>,
    next: std::sync::atomic::AtomicUsize,
    /// Dropping these ends the threads (and their sessions).
    _stop: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl Workers {
    fn start(n: usize) -> std::io::Result<Workers> {
        let mut handles = Vec::with_capacity(n);
        let mut stop = Vec::with_capacity(n);
        for i in 0..n {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(rt.handle().clone());
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            stop.push(tx);
            std::thread::Builder::new()
                .name(format!("pgha-session-{i}"))
                .spawn(move || {
                    rt.block_on(async {
                        let _ = rx.await;
                    });
                })?;
        }
        Ok(Workers {
            handles,
            next: Default::default(),
            _stop: stop,
        })
    }

    /// Moves an accepted socket to the next session thread and serves it there.
    fn spawn(&self, stream: TcpStream, peer: SocketAddr, kind: ListenerKind, shared: Arc<Shared>) {
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.handles.len();
        let std_stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(client = %peer, "hand accepted socket to a session thread: {e}");
                return;
            }
        };
        self.handles[i].spawn(async move {
            match TcpStream::from_std(std_stream) {
                Ok(stream) => session::serve(stream, peer, kind, shared).await,
                Err(e) => tracing::warn!(client = %peer, "register client socket: {e}"),
            }
        });
    }
}
