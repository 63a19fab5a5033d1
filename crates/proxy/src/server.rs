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
use crate::config::{ClientTlsMode, ProxySettings, Secret};
use crate::monitor::Monitor;
use crate::session;
pub use crate::shared::{CancelTargets, ClientSlot, ListenerKind, Shared};
use crate::topology::Topology;
use rand::RngCore;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

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
    /// The HTTP listener (`/metrics`), when `http_listen` is set.
    pub http: Option<SocketAddr>,
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
        let tls = match (
            settings.tls,
            &settings.tls_cert_file,
            &settings.tls_key_file,
        ) {
            (ClientTlsMode::Disable, _, _) => None,
            (_, Some(cert), Some(key)) => Some(crate::tls::load_acceptor(cert, key)?),
            _ => None,
        };
        let backend_tls = crate::tls::BackendTls::from_settings(&settings)?;
        let catalog = Arc::new(FunctionCatalog::new());
        let classifier = Arc::new(Classifier::new(catalog.clone()));
        let monitor = Arc::new(Monitor::new(
            &settings,
            password,
            topology.clone(),
            backend_tls.clone(),
        ));
        let mut tasks = monitor.spawn(catalog, settings.catalog_refresh);
        let mut mock_key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut mock_key);
        let shared = Arc::new(Shared::new(
            settings.clone(),
            classifier,
            monitor,
            topology,
            mock_key,
            tls,
            backend_tls,
        ));
        tasks.push(tokio::spawn(crate::pool::prune_loop(shared.clone())));
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
        let http = match settings.http_listen.as_str() {
            "" => None,
            addr => {
                let bind_err = |source| StartError::Bind {
                    listener: "http",
                    addr: addr.to_string(),
                    source,
                };
                let listener = TcpListener::bind(addr).await.map_err(bind_err)?;
                let local = listener.local_addr().map_err(bind_err)?;
                tracing::info!("http listener (/metrics) on {local}");
                tasks.push(tokio::spawn(crate::http::serve(listener, shared.clone())));
                Some(local)
            }
        };
        Ok(ProxyHandle {
            http,
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
