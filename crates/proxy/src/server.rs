//! Listeners, the shared state every session reads, and the cancel registry.
//!
//! [`Proxy::start`] binds the configured listeners (so tests can use port 0),
//! starts the monitor and returns a [`ProxyHandle`]; dropping the handle
//! stops accepting and aborts background tasks (sessions end when their
//! sockets close).
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
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Which listener a client came in through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    cancels: Mutex<HashMap<(i32, i32), Arc<CancelTargets>>>,
}

impl Shared {
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
}

/// A running proxy.
pub struct ProxyHandle {
    pub rw: Option<SocketAddr>,
    pub ro: Option<SocketAddr>,
    pub primary: Option<SocketAddr>,
    pub shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
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
            cancels: Mutex::new(HashMap::new()),
        });
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
            tasks.push(tokio::spawn(accept_loop(listener, kind, shared.clone())));
        }
        Ok(ProxyHandle {
            rw: addrs[0],
            ro: addrs[1],
            primary: addrs[2],
            shared,
            tasks,
        })
    }
}

async fn accept_loop(listener: TcpListener, kind: ListenerKind, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                tokio::spawn(session::serve(stream, peer, kind, shared));
            }
            Err(e) => {
                tracing::warn!("{} listener: accept: {e:#}", kind.name());
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}
