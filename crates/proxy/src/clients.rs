//! The connected clients, for the admin console's `SHOW CLIENTS`: who each
//! client is (user, database, address, listener, pool mode) and, read at
//! the moment of the query, which backends serve it and whether it waits
//! for one.
//!
//! Hazard: a session registers once and unregisters when it ends (with its
//! cancel key); nothing here is touched per transaction except the
//! `waiting` flag of a client that has to wait for a pooled backend.

use crate::shared::CancelTargets;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// One connected client, as registered by its session.
pub struct ClientView {
    pub user: String,
    pub database: String,
    pub application_name: String,
    pub addr: SocketAddr,
    pub listener: &'static str,
    /// `pool_mode = transaction` applies to this client.
    pub pooled: bool,
    pub connected_at: SystemTime,
    /// The backends serving the client now (its cancel targets).
    pub targets: Arc<CancelTargets>,
    /// Waiting for a backend of a full (or paused) pool.
    pub waiting: AtomicBool,
}

/// One client at the moment of the query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRow {
    pub user: String,
    pub database: String,
    pub application_name: String,
    pub addr: SocketAddr,
    pub listener: &'static str,
    pub pooled: bool,
    pub connected_at: SystemTime,
    /// `active` (holds a backend), `waiting` (for a pooled backend), `idle`.
    pub state: &'static str,
    /// PIDs of the backends serving it now, sorted.
    pub server_pids: Vec<i32>,
}

/// Every registered client, by the (pid, key) its session handed out.
#[derive(Default)]
pub struct ClientRegistry {
    map: Mutex<HashMap<(i32, i32), Arc<ClientView>>>,
}

impl ClientRegistry {
    pub fn register(&self, id: (i32, i32), view: Arc<ClientView>) {
        self.lock().insert(id, view);
    }

    pub fn unregister(&self, id: (i32, i32)) {
        self.lock().remove(&id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(i32, i32), Arc<ClientView>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every client now, oldest connection first.
    pub fn rows(&self) -> Vec<ClientRow> {
        let views: Vec<Arc<ClientView>> = self.lock().values().cloned().collect();
        let mut rows: Vec<ClientRow> = views.iter().map(|v| row(v)).collect();
        rows.sort_by_key(|r| (r.connected_at, r.addr));
        rows
    }
}

fn row(v: &ClientView) -> ClientRow {
    let mut server_pids: Vec<i32> = v
        .targets
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(_, pid, _)| *pid)
        .collect();
    server_pids.sort_unstable();
    let state = if v.waiting.load(Ordering::Relaxed) {
        "waiting"
    } else if server_pids.is_empty() {
        "idle"
    } else {
        "active"
    };
    ClientRow {
        user: v.user.clone(),
        database: v.database.clone(),
        application_name: v.application_name.clone(),
        addr: v.addr,
        listener: v.listener,
        pooled: v.pooled,
        connected_at: v.connected_at,
        state,
        server_pids,
    }
}
