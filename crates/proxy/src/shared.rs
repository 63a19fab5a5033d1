//! What every session shares, and the listener kinds: the proxy's settings,
//! classifier, monitor and topology, the cancel registry, the login cache
//! and the client-slot counters. Sessions and the server both depend on
//! this module; it depends on neither.

use crate::classify::Classifier;
use crate::codec::Limits;
use crate::config::ProxySettings;
use crate::login_cache::LoginCache;
use crate::monitor::Monitor;
use crate::topology::{Node, Topology};
use rand::RngCore;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

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
    /// TLS towards backends, unless `backend_tls = "disable"`.
    pub backend_tls: Option<crate::tls::BackendTls>,
    /// Recent backend logins, to answer equivalent logins without a backend.
    pub logins: LoginCache,
    /// Backend pools of transaction-mode sessions.
    pub pools: crate::pool::Pools,
    /// What `/metrics` reports.
    pub metrics: crate::metrics::ProxyMetrics,
    /// The connected clients (admin `SHOW CLIENTS`).
    pub registry: crate::clients::ClientRegistry,
    /// Prepared-statement versions of transaction-mode sessions: unique
    /// across the proxy, since their backends pass from client to client.
    statement_versions: std::sync::atomic::AtomicU64,
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
    pub fn new(
        settings: ProxySettings,
        classifier: Arc<Classifier>,
        monitor: Arc<Monitor>,
        topology: watch::Receiver<Topology>,
        mock_key: [u8; 32],
        tls: Option<crate::tls::TlsAcceptor>,
        backend_tls: Option<crate::tls::BackendTls>,
    ) -> Self {
        let pools = crate::pool::Pools::new(
            settings.pool_size,
            settings.pool_wait_timeout,
            settings.server_idle_timeout,
        )
        .with_upkeep(
            settings.min_pool_size,
            settings.server_check_delay,
            settings.connect_timeout,
        );
        Shared {
            limits: settings.limits(),
            settings,
            classifier,
            monitor,
            topology,
            mock_key,
            tls,
            backend_tls,
            logins: Default::default(),
            pools,
            metrics: Default::default(),
            registry: Default::default(),
            statement_versions: std::sync::atomic::AtomicU64::new(1),
            cancels: Mutex::new(HashMap::new()),
            clients: Default::default(),
            refusing: Default::default(),
        }
    }

    /// A prepared-statement version no other session uses.
    pub fn statement_version(&self) -> u64 {
        self.statement_versions.fetch_add(1, Ordering::Relaxed)
    }

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
        self.registry.unregister(id);
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
