//! In-memory DCS: [`MemoryStore`] (synchronous, explicit time) and
//! [`MemoryDcs`] (the async [`Dcs`] over it, with a real or manual clock).
//!
//! `MemoryDcs` is cheap to clone; clones share one store, like several
//! clients of one etcd. Watches are fed after every operation and, with the
//! real clock, by a background ticker that expires leases every 50 ms.
//! `set_reachable(false)` simulates a partition from the DCS: every call
//! fails with `Unavailable` and watches stall, then resume without a gap.
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
    min_revision: Revision,
    tx: mpsc::Sender<WatchEvent>,
    overflowed: bool,
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

    fn wants(&self, ev: &WatchEvent) -> bool {
        ev.key().is_some_and(|k| k.starts_with(&self.prefix))
            && ev.revision().is_some_and(|r| r >= self.min_revision)
    }
}

struct State {
    store: MemoryStore,
    watchers: Vec<Watcher>,
    /// Every event up to this revision has been handed to the watchers.
    dispatched: Revision,
    ticker_started: bool,
}

struct Shared {
    state: Mutex<State>,
    clock: Clock,
    reachable: AtomicBool,
}

/// The in-memory [`Dcs`]. See the module docs.
#[derive(Clone)]
pub struct MemoryDcs {
    shared: Arc<Shared>,
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
            dispatched: 0,
            ticker_started: false,
        };
        MemoryDcs {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                clock,
                reachable: AtomicBool::new(true),
            }),
        }
    }

    /// Simulate losing (`false`) or regaining (`true`) the DCS.
    pub fn set_reachable(&self, reachable: bool) {
        self.shared.reachable.store(reachable, Ordering::SeqCst);
        if reachable {
            self.tick();
        }
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
        if self.shared.reachable.load(Ordering::SeqCst) {
            let now = self.shared.clock.now();
            let mut st = self.lock();
            st.store.expire(now);
            dispatch(&mut st, now);
        }
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
        if !self.shared.reachable.load(Ordering::SeqCst) {
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
                MemoryDcs { shared }.tick();
            }
        });
    }
}

/// Hand every event after `st.dispatched` to the interested watchers.
fn dispatch(st: &mut State, now: Instant) {
    let current = st.store.revision(now);
    if current <= st.dispatched {
        return;
    }
    st.watchers.retain(|w| !w.tx.is_closed());
    match st.store.events_since(now, st.dispatched + 1, "") {
        Ok(events) => {
            for ev in &events {
                for w in st.watchers.iter_mut().filter(|w| w.wants(ev)) {
                    w.send(ev);
                }
            }
        }
        Err(_) => {
            for w in st.watchers.iter_mut() {
                w.send(&WatchEvent::Resync);
            }
        }
    }
    st.dispatched = current;
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
    ) -> DcsResult<bool> {
        self.op("put_if_key_equals", |s, now| {
            Ok(s.put_if_key_equals(now, key, value, guard_key, guard_value))
        })
    }

    async fn delete_if_equals(&self, key: &str, value: &[u8]) -> DcsResult<bool> {
        self.op("delete_if_equals", |s, now| {
            Ok(s.delete_if_equals(now, key, value))
        })
    }

    async fn watch_prefix(&self, prefix: &str, start_revision: Revision) -> DcsResult<Watch> {
        if !self.shared.reachable.load(Ordering::SeqCst) {
            return Err(DcsError::unavailable(
                "watch_prefix",
                "memory DCS set unreachable",
            ));
        }
        let now = self.shared.clock.now();
        let mut st = self.lock();
        dispatch(&mut st, now);
        let (tx, rx) = mpsc::channel(WATCH_CHANNEL);
        let mut w = Watcher {
            prefix: prefix.to_string(),
            min_revision: start_revision,
            tx,
            overflowed: false,
        };
        if start_revision > 0 {
            match st.store.events_since(now, start_revision, prefix) {
                Ok(events) => events.iter().for_each(|ev| w.send(ev)),
                Err(_) => w.send(&WatchEvent::Resync),
            }
        }
        st.watchers.push(w);
        self.start_ticker(&mut st);
        Ok(Watch::new(rx, None))
    }
}
