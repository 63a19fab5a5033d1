//! The leader lease keeper: a background task that renews the leader lease
//! every quarter TTL while the agent's loop is alive, so that an action that
//! legitimately takes longer than the TTL (starting PostgreSQL on a loaded
//! machine, waiting for a reload) does not cost the leadership.
//!
//! Liveness guard: the keeper renews only while the loop has shown a
//! heartbeat within [`STALL_LIMIT`]; a loop stuck longer than that lets the
//! lease expire so another member can take over. Safety never depends on
//! this (the promotion rule does), only availability.

use pgha_core::{LeaseState, Millis};
use pgha_dcs::{Dcs, LeaseId};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest the loop may go without a heartbeat before renewals stop.
/// Every action has its own timeout well below this.
pub const STALL_LIMIT: Duration = Duration::from_secs(70);

#[derive(Default)]
struct Shared {
    lease: Option<LeaseId>,
    state: Option<LeaseState>,
    heartbeat: Option<Instant>,
}

#[derive(Clone)]
pub struct LeaseKeeper {
    shared: Arc<Mutex<Shared>>,
    started: Instant,
}

impl LeaseKeeper {
    /// A keeper with no lease; [`LeaseKeeper::run`] is its background task.
    pub fn new(started: Instant) -> Self {
        LeaseKeeper {
            shared: Arc::new(Mutex::new(Shared::default())),
            started,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now(&self) -> Millis {
        Millis(self.started.elapsed().as_millis() as u64)
    }

    /// The loop is alive.
    pub fn heartbeat(&self) {
        self.lock().heartbeat = Some(Instant::now());
    }

    /// A lease was acquired (or adopted: `state` None until the first renewal).
    pub fn set(&self, lease: LeaseId, state: Option<LeaseState>) {
        let mut s = self.lock();
        s.lease = Some(lease);
        s.state = state;
    }

    /// Record a renewal done by the loop itself.
    pub fn renewed(&self, state: LeaseState) {
        self.lock().state = Some(state);
    }

    /// The lease is gone (released or expired).
    pub fn clear(&self) {
        let mut s = self.lock();
        s.lease = None;
        s.state = None;
    }

    pub fn lease(&self) -> Option<LeaseId> {
        self.lock().lease
    }

    pub fn state(&self) -> Option<LeaseState> {
        self.lock().state
    }

    /// The background task: renews the lease every `period` while the
    /// loop is alive. Runs until aborted.
    pub async fn run(self, dcs: Arc<dyn Dcs>, period: Duration) {
        loop {
            tokio::time::sleep(period).await;
            let (lease, fresh) = {
                let s = self.lock();
                let fresh = s.heartbeat.is_some_and(|h| h.elapsed() < STALL_LIMIT);
                (s.lease, fresh)
            };
            let Some(id) = lease else { continue };
            if !fresh {
                tracing::error!("the agent loop has stalled; no longer renewing the leader lease");
                continue;
            }
            let sent = self.now();
            match dcs.keep_alive(id).await {
                Ok(ttl) => {
                    let mut s = self.lock();
                    if s.lease == Some(id) {
                        s.state = Some(LeaseState {
                            renewed_at: sent,
                            ttl: Millis(ttl.max(0) as u64 * 1000),
                        });
                    }
                }
                Err(e) if e.is_lease_expired() => {
                    tracing::warn!("the leader lease expired");
                    let mut s = self.lock();
                    if s.lease == Some(id) {
                        s.lease = None;
                        s.state = None;
                    }
                }
                Err(e) => tracing::debug!("leader lease renewal failed: {e:#}"),
            }
        }
    }
}
