//! Server connection pools for `pool_mode = "transaction"`: backends shared
//! by the clients with the same startup parameters (user, database,
//! options...) on the same node, handed out per transaction.
//!
//! A pool counts every connection it allowed to open, idle or in use, and
//! never lets more than `pool_size` exist; a client that finds none idle and
//! the pool full waits (FIFO by wake-up order, bounded by
//! `pool_wait_timeout`). A backend comes back with what the proxy knows of
//! its session state (prepared statements by version, settings applied):
//! the next client's session replays onto it only the difference (see
//! `session::replay`), so nothing of one client's session reaches another.
//!
//! Hazards: a [`Slot`] must be dropped exactly when its connection is gone
//! (closed, broken, or given up), or the pool leaks capacity; a backend that
//! is not idle at a ReadyForQuery `I` with nothing in flight must never be
//! put back (the caller resets it first: [`Pools::reset_and_return`]).

use crate::backend::BackendConn;
use crate::codec::{BackendMessage, FrontendMessage};
use crate::session::state::SessionMap;
use crate::topology::Node;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The connections of one pool key: a node and the startup parameters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    node: Node,
    params: Vec<(String, String)>,
}

impl PoolKey {
    pub fn new(node: &Node, params: &[(String, String)]) -> Self {
        let mut params = params.to_vec();
        params.sort();
        PoolKey {
            node: node.clone(),
            params,
        }
    }

    fn user(&self) -> &str {
        self.param("user")
    }

    fn database(&self) -> &str {
        match self.param("database") {
            "" => self.user(),
            d => d,
        }
    }

    fn param(&self, name: &str) -> &str {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// A backend at rest in its pool, with the session state the proxy left on it.
pub struct Idle {
    pub conn: BackendConn,
    /// Prepared statement name -> statement version (versions are unique
    /// across the proxy, so another client's statement never matches).
    pub prepared: SessionMap<Bytes, u64>,
    /// Settings applied on it: name -> SET statement.
    pub settings: SessionMap<String, String>,
    pub slot: Slot,
    since: Instant,
}

/// One unit of a pool's capacity, held by a connection (idle or in use).
pub struct Slot {
    pool: Arc<Pool>,
    /// The backend's PID once connected (0 before).
    pid: i32,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut s = self.pool.lock();
        s.open -= 1;
        s.in_use.remove(&self.pid);
        let wake = s.waiting > 0;
        drop(s);
        if wake {
            self.pool.notify.notify_one();
        }
    }
}

impl Slot {
    /// The pool this slot belongs to.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }
}

/// What a client got from [`Pools::acquire`].
pub enum Acquired {
    /// A pooled backend (its state to replay over).
    Idle(Idle),
    /// A new connection, opened under this slot.
    New(BackendConn, Slot),
}

/// Why no backend was handed out.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error(
        "no server connection to {node} for user \"{user}\" became free within \
         pool_wait_timeout ({waited:?}): all {size} (pool_size) are in use; raise pool_size \
         (and the server's max_connections) or pool_wait_timeout, or shorten transactions"
    )]
    Timeout {
        node: String,
        user: String,
        size: usize,
        waited: Duration,
    },
    #[error(
        "new transactions of database \"{database}\" are paused (admin PAUSE) and were not \
         resumed within pool_wait_timeout ({waited:?})"
    )]
    Paused { database: String, waited: Duration },
    #[error(transparent)]
    Connect(#[from] crate::backend::ConnectError),
}

/// A pool's counters, for the admin view and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStats {
    pub node: String,
    pub database: String,
    pub user: String,
    /// Connections open (idle + in use).
    pub open: usize,
    pub idle: usize,
    /// Clients waiting for a connection now.
    pub waiting: usize,
    pub size: usize,
    /// Clients that waited, and for how long in all.
    pub waits_total: u64,
    pub wait_micros_total: u64,
    pub timeouts_total: u64,
    /// New transactions of this pool's database wait (admin `PAUSE`).
    pub paused: bool,
}

/// One pooled backend, for the admin view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerRow {
    pub node: String,
    pub database: String,
    pub user: String,
    /// Serving a client (else idle in the pool).
    pub active: bool,
    pub pid: i32,
}

#[derive(Default)]
struct PoolState {
    /// The login of the latest client that opened a backend here: what
    /// `min_pool_size` warm connections log in with (none before a client
    /// has connected: the proxy holds no passwords of its own).
    creds: Option<crate::auth::BackendCredentials>,
    idle: Vec<Idle>,
    /// PIDs of the backends serving a client now.
    in_use: std::collections::HashSet<i32>,
    open: usize,
    waiting: usize,
    waits_total: u64,
    wait_micros_total: u64,
    timeouts_total: u64,
}

/// One pool: the connections of one [`PoolKey`].
pub struct Pool {
    key: PoolKey,
    /// The monitor's record of the pool's node (looked up once, not per
    /// transaction).
    node_stats: std::sync::OnceLock<Arc<crate::monitor::NodeStats>>,
    size: usize,
    state: Mutex<PoolState>,
    notify: Notify,
}

/// What one look at a pool gave.
enum Take {
    Idle(Box<Idle>),
    /// Room for a new connection (counted already).
    Open(Slot),
    Wait,
}

impl Pool {
    /// The node this pool's backends are on.
    pub fn node(&self) -> &Node {
        &self.key.node
    }

    /// The monitor's record of this pool's node (`lookup` on first use).
    pub fn node_stats(
        &self,
        lookup: impl FnOnce() -> Arc<crate::monitor::NodeStats>,
    ) -> Arc<crate::monitor::NodeStats> {
        self.node_stats.get_or_init(lookup).clone()
    }

    /// Remembers the login a client opened a backend with, for the warm
    /// connections of `min_pool_size`.
    pub fn note_credentials(&self, creds: &crate::auth::BackendCredentials) {
        self.lock().creds = Some(creds.clone());
    }

    /// Room for `want` more connections under `min`: slots for them and the
    /// login to open them with.
    fn room_to_warm(
        self: &Arc<Self>,
        min: usize,
    ) -> Option<(Vec<Slot>, crate::auth::BackendCredentials)> {
        let mut s = self.lock();
        let creds = s.creds.clone()?;
        let want = min.min(self.size).saturating_sub(s.open);
        if want == 0 {
            return None;
        }
        s.open += want;
        drop(s);
        let slots = (0..want)
            .map(|_| Slot {
                pool: self.clone(),
                pid: 0,
            })
            .collect();
        Some((slots, creds))
    }

    /// An idle backend still open, else room for a new one, else wait
    /// (`waited`: this client is counted as waiting).
    fn take(self: &Arc<Self>, waited: &mut bool, started: Instant) -> Take {
        let mut dead = Vec::new();
        let mut s = self.lock();
        let got = loop {
            if let Some(mut idle) = s.idle.pop() {
                if idle.conn.closed_while_idle() {
                    // Dropped below, unlocked: that frees its slot.
                    dead.push(idle);
                    continue;
                }
                s.in_use.insert(idle.conn.pid);
                break Take::Idle(Box::new(idle));
            }
            if s.open < self.size {
                s.open += 1;
                break Take::Open(Slot {
                    pool: self.clone(),
                    pid: 0,
                });
            }
            if !*waited {
                *waited = true;
                s.waiting += 1;
            }
            return Take::Wait;
        };
        if *waited {
            *waited = false;
            s.waiting -= 1;
            s.waits_total += 1;
            s.wait_micros_total += started.elapsed().as_micros() as u64;
        }
        drop(s);
        drop(dead);
        got
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stats(&self, paused: bool) -> PoolStats {
        let s = self.lock();
        PoolStats {
            node: self.key.node.name.clone(),
            database: self.key.database().to_string(),
            user: self.key.user().to_string(),
            open: s.open,
            idle: s.idle.len(),
            waiting: s.waiting,
            size: self.size,
            waits_total: s.waits_total,
            wait_micros_total: s.wait_micros_total,
            timeouts_total: s.timeouts_total,
            paused,
        }
    }

    /// Puts a clean, idle backend back (the most recently used is handed
    /// out first: the others can age out).
    pub fn put(
        self: &Arc<Self>,
        conn: BackendConn,
        prepared: SessionMap<Bytes, u64>,
        settings: SessionMap<String, String>,
        slot: Slot,
    ) {
        debug_assert!(Arc::ptr_eq(&slot.pool, self));
        let idle = Idle {
            conn,
            prepared,
            settings,
            slot,
            since: Instant::now(),
        };
        let mut s = self.lock();
        s.in_use.remove(&idle.conn.pid);
        s.idle.push(idle);
        // Only a waiter needs a wake-up (with none, notify_one would store
        // a permit that makes the next waiter spin once).
        let wake = s.waiting > 0;
        drop(s);
        if wake {
            self.notify.notify_one();
        }
    }
}

/// What admin `PAUSE` stopped.
#[derive(Default)]
struct Paused {
    all: bool,
    databases: std::collections::HashSet<String>,
}

/// Every pool of the proxy.
pub struct Pools {
    paused: Mutex<Paused>,
    /// Some pause is in effect (saves a lock per transaction otherwise).
    any_paused: std::sync::atomic::AtomicBool,
    resumed: Notify,
    size: usize,
    wait_timeout: Duration,
    idle_timeout: Duration,
    map: Mutex<HashMap<PoolKey, Arc<Pool>>>,
    /// Connections each pool keeps open, idle or not (`min_pool_size`).
    min_size: usize,
    /// An idle backend unused this long answers an empty query before it
    /// serves a client (`server_check_delay`).
    check_delay: Duration,
    /// How long that answer (and a warm connection's login) may take.
    check_timeout: Duration,
}

impl Pools {
    pub fn new(size: usize, wait_timeout: Duration, idle_timeout: Duration) -> Self {
        Pools {
            paused: Mutex::new(Paused::default()),
            any_paused: std::sync::atomic::AtomicBool::new(false),
            resumed: Notify::new(),
            size: size.max(1),
            wait_timeout,
            idle_timeout,
            map: Mutex::new(HashMap::new()),
            min_size: 0,
            check_delay: Duration::from_secs(30),
            check_timeout: Duration::from_secs(5),
        }
    }

    /// Sets `min_pool_size` (kept by [`prune_loop`]), `server_check_delay`
    /// and the timeout of a health check or warm login.
    pub fn with_upkeep(
        mut self,
        min_size: usize,
        check_delay: Duration,
        check_timeout: Duration,
    ) -> Self {
        self.min_size = min_size;
        self.check_delay = check_delay;
        self.check_timeout = check_timeout;
        self
    }

    /// The pool of `key` (made on first use; pools are never removed, so a
    /// session may keep the `Arc` for the node it uses).
    pub fn pool(&self, key: PoolKey) -> Arc<Pool> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Pool {
                    key,
                    node_stats: Default::default(),
                    size: self.size,
                    state: Mutex::new(PoolState::default()),
                    notify: Notify::new(),
                })
            })
            .clone()
    }

    /// A backend for `key`: an idle one that is still open, else a new one
    /// (`connect`) while the pool has room, else the first one freed within
    /// `pool_wait_timeout`.
    pub async fn acquire<F, Fut>(&self, pool: &Arc<Pool>, connect: F) -> Result<Acquired, PoolError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<BackendConn, crate::backend::ConnectError>>,
    {
        let started = Instant::now();
        let deadline = started + self.wait_timeout;
        if self.any_paused.load(std::sync::atomic::Ordering::Relaxed) {
            self.wait_while_paused(pool.key.database(), deadline)
                .await?;
        }
        let mut waited = false;
        // The common case takes a backend at once: no waiter is registered
        // (that costs the Notify's lock twice) unless the pool is full.
        match pool.take(&mut waited, started) {
            Take::Idle(idle) => {
                if let Some(idle) = self.checked(idle).await {
                    return Ok(Acquired::Idle(*idle));
                }
            }
            Take::Open(slot) => return Self::open_new(pool, slot, connect).await,
            Take::Wait => {}
        }
        loop {
            let notified = pool.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match pool.take(&mut waited, started) {
                Take::Idle(idle) => match self.checked(idle).await {
                    Some(idle) => return Ok(Acquired::Idle(*idle)),
                    None => continue,
                },
                Take::Open(slot) => return Self::open_new(pool, slot, connect).await,
                Take::Wait => {}
            }
            if tokio::time::timeout_at(deadline.into(), notified)
                .await
                .is_err()
            {
                let mut s = pool.lock();
                s.waiting -= 1;
                s.timeouts_total += 1;
                return Err(PoolError::Timeout {
                    node: pool.key.node.name.clone(),
                    user: pool.key.user().to_string(),
                    size: pool.size,
                    waited: self.wait_timeout,
                });
            }
        }
    }

    async fn open_new<F, Fut>(
        pool: &Arc<Pool>,
        mut slot: Slot,
        connect: F,
    ) -> Result<Acquired, PoolError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<BackendConn, crate::backend::ConnectError>>,
    {
        let conn = connect().await?;
        slot.pid = conn.pid;
        pool.lock().in_use.insert(conn.pid);
        Ok(Acquired::New(conn, slot))
    }

    /// An idle backend unused for `server_check_delay` must answer an empty
    /// query first; one that does not is closed (`None`: its slot is free).
    async fn checked(&self, mut idle: Box<Idle>) -> Option<Box<Idle>> {
        let now = Instant::now();
        if now.saturating_duration_since(idle.since) >= self.check_delay
            && !idle.conn.ping(self.check_timeout).await
        {
            tracing::info!(
                backend = %idle.conn.node.name,
                pid = idle.conn.pid,
                "a pooled backend failed its health check; closed"
            );
            return None;
        }
        idle.since = now;
        Some(idle)
    }

    /// Ends what a client left on a backend (an open transaction, session
    /// state that pinned it), then puts it back; a backend that does not
    /// answer as expected within `timeout` is closed instead.
    pub fn reset_and_return(&self, mut conn: BackendConn, slot: Slot, timeout: Duration) {
        tokio::spawn(async move {
            let reset = async {
                // Two queries: DISCARD ALL cannot run inside the
                // transaction a ROLLBACK ends.
                FrontendMessage::Query {
                    sql: Bytes::from_static(b"ROLLBACK"),
                }
                .encode(&mut conn.wbuf);
                FrontendMessage::Query {
                    sql: Bytes::from_static(b"DISCARD ALL"),
                }
                .encode(&mut conn.wbuf);
                conn.flush().await.ok()?;
                let mut ready = 0;
                while ready < 2 {
                    match conn.next(usize::MAX).await.ok()? {
                        BackendMessage::ReadyForQuery { status: b'I' } => ready += 1,
                        BackendMessage::ReadyForQuery { .. } => return None,
                        _ => {}
                    }
                }
                Some(())
            };
            match tokio::time::timeout(timeout, reset).await {
                Ok(Some(())) => {
                    let pool = slot.pool.clone();
                    pool.put(conn, SessionMap::default(), SessionMap::default(), slot);
                }
                _ => {
                    tracing::debug!(backend = %conn.node.name, "reset of a pooled backend failed; closed")
                }
            }
        });
    }

    /// Closes idle backends unused for `server_idle_timeout` (down to
    /// `min_pool_size` open), those the server closed, and those of nodes
    /// that are no longer in the topology (`keep`).
    pub fn prune(&self, keep: &dyn Fn(&Node) -> bool) {
        let pools: Vec<Arc<Pool>> = {
            let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            map.values().cloned().collect()
        };
        for pool in pools {
            let gone = !keep(&pool.key.node);
            let mut s = pool.lock();
            let idle_timeout = self.idle_timeout;
            // Oldest first: they go first, down to min_pool_size open.
            let mut spare = s.open.saturating_sub(self.min_size);
            let mut go = Vec::new();
            let mut stay = Vec::with_capacity(s.idle.len());
            for mut i in std::mem::take(&mut s.idle) {
                let old = i.since.elapsed() >= idle_timeout && spare > 0;
                if gone || old || i.conn.closed_while_idle() {
                    spare = spare.saturating_sub(1);
                    go.push(i);
                } else {
                    stay.push(i);
                }
            }
            s.idle = stay;
            drop(s);
            drop(go);
        }
    }

    /// Opens connections in the background until every pool of a node in
    /// `keep` with a known login has `min_pool_size` open.
    pub fn warm(
        &self,
        keep: &dyn Fn(&Node) -> bool,
        max_message: usize,
        tls: Option<&crate::tls::BackendTls>,
    ) {
        if self.min_size == 0 {
            return;
        }
        for pool in self.all() {
            if !keep(&pool.key.node) {
                continue;
            }
            let Some((slots, creds)) = pool.room_to_warm(self.min_size) else {
                continue;
            };
            let timeout = self.check_timeout;
            for mut slot in slots {
                let creds = creds.clone();
                let pool = pool.clone();
                let tls = tls.cloned();
                tokio::spawn(async move {
                    let key = &pool.key;
                    match BackendConn::connect(
                        &key.node,
                        &key.params,
                        &creds,
                        timeout,
                        max_message,
                        tls.as_ref(),
                    )
                    .await
                    {
                        Ok(conn) => {
                            slot.pid = conn.pid;
                            pool.put(conn, SessionMap::default(), SessionMap::default(), slot);
                        }
                        Err(e) => tracing::warn!(
                            node = %key.node.name,
                            user = key.user(),
                            "min_pool_size: open a warm backend: {e}"
                        ),
                    }
                });
            }
        }
    }

    fn all(&self) -> Vec<Arc<Pool>> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn is_paused(&self, database: &str) -> bool {
        let p = self.paused.lock().unwrap_or_else(|e| e.into_inner());
        p.all || p.databases.contains(database)
    }

    /// Waits (until `deadline`) while new transactions of `database` are paused.
    async fn wait_while_paused(&self, database: &str, deadline: Instant) -> Result<(), PoolError> {
        loop {
            let resumed = self.resumed.notified();
            tokio::pin!(resumed);
            resumed.as_mut().enable();
            if !self.is_paused(database) {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline.into(), resumed)
                .await
                .is_err()
            {
                return Err(PoolError::Paused {
                    database: database.to_string(),
                    waited: self.wait_timeout,
                });
            }
        }
    }

    /// Admin `PAUSE [db]`: new transactions of transaction-mode clients (of
    /// `database`, or all) wait for `resume`; returns once no pooled backend
    /// of theirs serves a client, or an error after `timeout` (the pause
    /// stays in effect).
    pub async fn pause(&self, database: Option<&str>, timeout: Duration) -> Result<(), String> {
        {
            let mut p = self.paused.lock().unwrap_or_else(|e| e.into_inner());
            match database {
                Some(db) => {
                    p.databases.insert(db.to_string());
                }
                None => p.all = true,
            }
            self.any_paused
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let busy: usize = self
                .all()
                .iter()
                .filter(|pool| database.is_none_or(|db| pool.key.database() == db))
                .map(|pool| pool.lock().in_use.len())
                .sum();
            if busy == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "PAUSE: {busy} backend(s) still serve a transaction after {timeout:?}; the \
                     pause stays in effect (RESUME ends it)"
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Admin `RESUME [db]`: ends a pause (`None`: every pause).
    pub fn resume(&self, database: Option<&str>) {
        let mut p = self.paused.lock().unwrap_or_else(|e| e.into_inner());
        match database {
            Some(db) => {
                p.databases.remove(db);
            }
            None => *p = Paused::default(),
        }
        self.any_paused.store(
            p.all || !p.databases.is_empty(),
            std::sync::atomic::Ordering::Relaxed,
        );
        drop(p);
        self.resumed.notify_waiters();
    }

    /// Every pooled backend, idle or serving a client.
    pub fn servers(&self) -> Vec<ServerRow> {
        let mut rows = Vec::new();
        for pool in self.all() {
            let s = pool.lock();
            let row = |pid: i32, active: bool| ServerRow {
                node: pool.key.node.name.clone(),
                database: pool.key.database().to_string(),
                user: pool.key.user().to_string(),
                active,
                pid,
            };
            rows.extend(s.in_use.iter().map(|pid| row(*pid, true)));
            rows.extend(s.idle.iter().map(|i| row(i.conn.pid, false)));
        }
        rows.sort_by(|a, b| {
            (&a.node, &a.database, &a.user, a.pid).cmp(&(&b.node, &b.database, &b.user, b.pid))
        });
        rows
    }

    /// Every pool's counters, sorted by node, database and user.
    pub fn stats(&self) -> Vec<PoolStats> {
        let mut all: Vec<PoolStats> = self
            .all()
            .iter()
            .map(|p| p.stats(self.is_paused(p.key.database())))
            .collect();
        all.sort_by(|a, b| (&a.node, &a.database, &a.user).cmp(&(&b.node, &b.database, &b.user)));
        all
    }
}

/// Whether [`PIN_CHECK_SQL`] can tell that the session state behind a pin
/// `reason` (a classifier pin reason) is gone. The others pin for good.
pub fn pin_can_lift(reason: &str) -> bool {
    matches!(
        reason,
        "session advisory lock" | "temporary relation" | "LISTEN" | "WITH HOLD cursor"
    )
}

/// Run on a pinned transaction-mode session's backend when a transaction
/// ends: fails while the backend holds session state that cannot move to
/// another backend (a temporary relation, a session-level advisory lock, a
/// LISTEN, a WITH HOLD cursor), succeeds once
/// all of it is gone, which lifts the pin.
pub const PIN_CHECK_SQL: &[u8] = b"DO $pgha$ BEGIN IF \
EXISTS (SELECT 1 FROM pg_catalog.pg_class WHERE relnamespace = pg_catalog.pg_my_temp_schema()) \
OR EXISTS (SELECT 1 FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid()) \
OR EXISTS (SELECT 1 FROM pg_catalog.pg_listening_channels()) \
OR EXISTS (SELECT 1 FROM pg_catalog.pg_cursors WHERE is_holdable) \
THEN RAISE EXCEPTION USING ERRCODE = 'P0001', MESSAGE = 'pgha: session state remains'; \
END IF; END $pgha$";

/// Every few seconds: closes pooled backends idle for `server_idle_timeout`
/// (down to `min_pool_size`) and those of nodes that left the topology (a
/// failed primary's), then opens backends up to `min_pool_size`.
pub async fn prune_loop(shared: Arc<crate::shared::Shared>) {
    let period = (shared.settings.server_idle_timeout / 10)
        .clamp(Duration::from_millis(500), Duration::from_secs(5));
    let mut topology = shared.topology.clone();
    loop {
        if let Ok(Err(_)) = tokio::time::timeout(period, topology.changed()).await {
            return; // the proxy is shutting down
        }
        let t = topology.borrow_and_update().clone();
        let keep = |n: &Node| t.primary.as_ref() == Some(n) || t.standbys.contains(n);
        shared.pools.prune(&keep);
        shared.pools.warm(
            &keep,
            shared.settings.max_message_bytes,
            shared.backend_tls.as_ref(),
        );
    }
}
