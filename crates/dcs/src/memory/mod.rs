//! In-memory DCS: [`MemoryStore`] (synchronous, explicit time) and
//! [`MemoryDcs`] (the async [`Dcs`] over it, with a real or manual clock).
//!
//! `MemoryDcs` is a client handle on a shared store. `clone()` is the same
//! client (same reachability); [`MemoryDcs::new_client`] is another client
//! of the same store, like a second node talking to the same etcd.
//! Watches are fed after every operation and, with the real clock, by a
//! background ticker that expires leases every 50 ms.
//! `set_reachable(false)` partitions one client from the DCS: its calls fail
//! with `Unavailable` and its watches stall, then resume without a gap
//! (leases keep expiring meanwhile, as on a real etcd).
//!
//! Hazard: with a [`ManualClock`] leases expire only when time is advanced
//! and some call (or [`MemoryDcs::tick`]) observes it.

pub(crate) mod store;

pub use store::{Compacted, MemoryStore};

use crate::api::{
    Dcs, GetResponse, Lease, LeaseId, RangeResponse, Revision, Watch, WatchEvent, WATCH_CHANNEL,
};
use crate::error::{DcsError, DcsResult};
use async_trait::async_trait;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How often the real-clock ticker expires leases for watchers.
const TICK: Duration = Duration::from_millis(50);

/// A clock that moves only when told to. Clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<Instant>>,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl ManualClock {
    /// A clock starting at the real current instant.
    pub fn new() -> Self {
        ManualClock {
            now: Arc::new(Mutex::new(Instant::now())),
        }
    }

    pub fn now(&self) -> Instant {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Move the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *now += d;
    }
}

#[derive(Debug, Clone)]
enum Clock {
    Real,
    Manual(ManualClock),
}

impl Clock {
    fn now(&self) -> Instant {
        match self {
            Clock::Real => Instant::now(),
            Clock::Manual(c) => c.now(),
        }
    }
}

struct Watcher {
    prefix: String,
    /// The first revision not yet delivered.
    next_rev: Revision,
    tx: mpsc::Sender<WatchEvent>,
    overflowed: bool,
    /// The owning client's reachability.
    reachable: Arc<AtomicBool>,
}

impl Watcher {
    /// Deliver one event; on a full channel, drop it and owe a `Resync`.
    fn send(&mut self, ev: &WatchEvent) {
        if self.overflowed {
            if self.tx.try_send(WatchEvent::Resync).is_err() {
                return;
            }
            self.overflowed = false;
        }
        if self.tx.try_send(ev.clone()).is_err() {
            self.overflowed = true;
        }
    }

    /// Deliver everything from `next_rev` up to `current`, if reachable.
    fn catch_up(&mut self, store: &mut MemoryStore, now: Instant, current: Revision) {
        if !self.reachable.load(Ordering::SeqCst) || self.next_rev > current {
            return;
        }
        match store.events_since(now, self.next_rev, &self.prefix) {
            Ok(events) => events.iter().for_each(|ev| self.send(ev)),
            Err(_) => self.send(&WatchEvent::Resync),
        }
        self.next_rev = current + 1;
    }
}

struct State {
    store: MemoryStore,
    watchers: Vec<Watcher>,
    ticker_started: bool,
}

struct Shared {
    state: Mutex<State>,
    clock: Clock,
}

/// The in-memory [`Dcs`]. See the module docs.
#[derive(Clone)]
pub struct MemoryDcs {
    shared: Arc<Shared>,
    reachable: Arc<AtomicBool>,
}

impl Default for MemoryDcs {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryDcs {
    /// A store on the real monotonic clock.
    pub fn new() -> Self {
        Self::build(MemoryStore::new(), Clock::Real)
    }

    /// A store whose leases expire only as `clock` is advanced.
    pub fn with_manual_clock(clock: ManualClock) -> Self {
        Self::build(MemoryStore::new(), Clock::Manual(clock))
    }

    /// Wrap a prepared store (e.g. `MemoryStore::new().with_min_ttl(2)`).
    pub fn from_store(store: MemoryStore, clock: Option<ManualClock>) -> Self {
        Self::build(store, clock.map_or(Clock::Real, Clock::Manual))
    }

    fn build(store: MemoryStore, clock: Clock) -> Self {
        let state = State {
            store,
            watchers: Vec::new(),
            ticker_started: false,
        };
        MemoryDcs {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                clock,
            }),
            reachable: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Another client of the same store, with its own reachability.
    pub fn new_client(&self) -> Self {
        MemoryDcs {
            shared: self.shared.clone(),
            reachable: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Partition this client (and its clones) from the DCS (`false`), or
    /// heal it (`true`).
    pub fn set_reachable(&self, reachable: bool) {
        self.reachable.store(reachable, Ordering::SeqCst);
        if reachable {
            self.tick();
        }
    }

    fn is_reachable(&self) -> bool {
        self.reachable.load(Ordering::SeqCst)
    }

    /// Advance the manual clock (no-op on the real clock) and expire leases.
    pub fn advance(&self, d: Duration) {
        if let Clock::Manual(c) = &self.shared.clock {
            c.advance(d);
        }
        self.tick();
    }

    /// Expire due leases now and feed watchers.
    pub fn tick(&self) {
        let now = self.shared.clock.now();
        let mut st = self.lock();
        st.store.expire(now);
        dispatch(&mut st, now);
    }

    /// Run `f` on the store (for inspection in tests), then feed watchers.
    pub fn with_store<T>(&self, f: impl FnOnce(&mut MemoryStore, Instant) -> T) -> T {
        let now = self.shared.clock.now();
        let mut st = self.lock();
        let out = f(&mut st.store, now);
        dispatch(&mut st, now);
        out
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Run one operation: fail if partitioned, else apply and dispatch.
    fn op<T>(
        &self,
        name: &'static str,
        f: impl FnOnce(&mut MemoryStore, Instant) -> DcsResult<T>,
    ) -> DcsResult<T> {
        if !self.is_reachable() {
            return Err(DcsError::unavailable(name, "memory DCS set unreachable"));
        }
        let now = self.shared.clock.now();
        let mut st = self.lock();
        let out = f(&mut st.store, now);
        dispatch(&mut st, now);
        out
    }

    fn start_ticker(&self, st: &mut State) {
        if st.ticker_started || !matches!(self.shared.clock, Clock::Real) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        st.ticker_started = true;
        let weak: Weak<Shared> = Arc::downgrade(&self.shared);
        handle.spawn(async move {
            loop {
                tokio::time::sleep(TICK).await;
                let Some(shared) = weak.upgrade() else { return };
                let now = shared.clock.now();
                let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
                st.store.expire(now);
                dispatch(&mut st, now);
            }
        });
    }
}

/// Hand every watcher of a reachable client the events it has not seen.
fn dispatch(st: &mut State, now: Instant) {
    let current = st.store.revision(now);
    st.watchers.retain(|w| !w.tx.is_closed());
    let State {
        store, watchers, ..
    } = st;
    for w in watchers.iter_mut() {
        w.catch_up(store, now, current);
    }
}

#[async_trait]
impl Dcs for MemoryDcs {
    async fn grant_lease(&self, ttl_secs: i64) -> DcsResult<Lease> {
        self.op("grant_lease", |s, now| s.grant_lease(now, ttl_secs))
    }

    async fn keep_alive(&self, lease: LeaseId) -> DcsResult<i64> {
        self.op("keep_alive", |s, now| s.keep_alive(now, lease))
    }

    async fn revoke_lease(&self, lease: LeaseId) -> DcsResult<()> {
        self.op("revoke_lease", |s, now| s.revoke_lease(now, lease))
    }

    async fn get(&self, key: &str) -> DcsResult<GetResponse> {
        self.op("get", |s, now| Ok(s.get(now, key)))
    }

    async fn get_prefix(&self, prefix: &str) -> DcsResult<RangeResponse> {
        self.op("get_prefix", |s, now| Ok(s.get_prefix(now, prefix)))
    }

    async fn put(&self, key: &str, value: &[u8], lease: Option<LeaseId>) -> DcsResult<Revision> {
        self.op("put", |s, now| s.put(now, key, value, lease))
    }

    async fn delete(&self, key: &str) -> DcsResult<bool> {
        self.op("delete", |s, now| Ok(s.delete(now, key)))
    }

    async fn create_if_absent(
        &self,
        key: &str,
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> DcsResult<bool> {
        self.op("create_if_absent", |s, now| {
            s.create_if_absent(now, key, value, lease)
        })
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        value: &[u8],
        expected: Revision,
        lease: Option<LeaseId>,
    ) -> DcsResult<bool> {
        self.op("compare_and_swap", |s, now| {
            s.compare_and_swap(now, key, value, expected, lease)
        })
    }

    async fn put_if_key_equals(
        &self,
        key: &str,
        value: &[u8],
        guard_key: &str,
        guard_value: &[u8],
        guard_created: Revision,
        expected: Revision,
    ) -> DcsResult<bool> {
        self.op("put_if_key_equals", |s, now| {
            Ok(s.put_if_key_equals(
                now,
                key,
                value,
                guard_key,
                guard_value,
                guard_created,
                expected,
            ))
        })
    }

    async fn delete_if_equals(&self, key: &str, value: &[u8]) -> DcsResult<bool> {
        self.op("delete_if_equals", |s, now| {
            Ok(s.delete_if_equals(now, key, value))
        })
    }

    async fn put_and_delete_if_equals(
        &self,
        put_key: &str,
        value: &[u8],
        del_key: &str,
        expected: &[u8],
        del_created: Revision,
        put_expected: Revision,
    ) -> DcsResult<bool> {
        self.op("put_and_delete_if_equals", |s, now| {
            Ok(s.put_and_delete_if_equals(
                now,
                put_key,
                value,
                del_key,
                expected,
                del_created,
                put_expected,
            ))
        })
    }

    async fn watch_prefix(&self, prefix: &str, start_revision: Revision) -> DcsResult<Watch> {
        if !self.is_reachable() {
            return Err(DcsError::unavailable(
                "watch_prefix",
                "memory DCS set unreachable",
            ));
        }
        let now = self.shared.clock.now();
        let mut st = self.lock();
        let current = st.store.revision(now);
        let (tx, rx) = mpsc::channel(WATCH_CHANNEL);
        st.watchers.push(Watcher {
            prefix: prefix.to_string(),
            next_rev: if start_revision > 0 {
                start_revision
            } else {
                current + 1
            },
            tx,
            overflowed: false,
            reachable: self.reachable.clone(),
        });
        dispatch(&mut st, now);
        self.start_ticker(&mut st);
        Ok(Watch::new(rx, None))
    }
}
