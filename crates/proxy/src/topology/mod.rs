//! Who is primary and which standbys exist, delivered to every session
//! through a `tokio::sync::watch` channel.
//!
//! Sources: [`StaticTopology`] (tests, fixed clusters); an etcd source
//! follows the DCS leader and member keys.
//!
//! Every topology also carries the [`InFlight`] counter: sessions count
//! themselves there while they have work on the primary, and the etcd
//! source reads it to tell the leader when a switchover pause has drained.
//!
//! Hazard: a topology is a belief, not a fact: the named primary may already
//! be dead. Sessions treat a failed connection as "wait for the next
//! generation", never as permission to write elsewhere. A session must take
//! its [`InFlightHold`] *before* it looks at `paused` (and the source must
//! publish `paused` before it reads the count), or a transaction could start
//! on the old primary after the proxy reported "drained".

pub mod etcd;
mod register;

use serde::Deserialize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{watch, Notify};

/// One PostgreSQL node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// Member name (unique in the cluster).
    pub name: String,
    pub host: String,
    pub port: u16,
}

/// The cluster as the proxy currently believes it to be.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    /// The writable node, `None` during failover.
    pub primary: Option<Node>,
    /// Streaming standbys that may serve reads.
    pub standbys: Vec<Node>,
    /// Bumped on every change.
    pub generation: u64,
    /// Planned switchover: hold new transactions (in-flight ones finish).
    pub paused: bool,
    /// Sessions with work on the primary (the same counter in every
    /// topology a source publishes).
    pub in_flight: InFlight,
}

/// How many sessions have a transaction open, or a statement in flight, on
/// the primary. Clones share the count; two counters are equal only when
/// they are the same counter.
#[derive(Debug, Clone, Default)]
pub struct InFlight(Arc<InFlightInner>);

#[derive(Debug, Default)]
struct InFlightInner {
    count: AtomicUsize,
    /// Signalled when the count drops to zero.
    idle: Notify,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for InFlight {}

impl InFlight {
    /// Sessions counted right now.
    pub fn count(&self) -> usize {
        self.0.count.load(Ordering::SeqCst)
    }

    /// Count one session until the hold is dropped.
    pub fn hold(&self) -> InFlightHold {
        self.0.count.fetch_add(1, Ordering::SeqCst);
        InFlightHold(self.0.clone())
    }

    /// Resolves after the count dropped to zero (possibly before this call:
    /// one stored wake-up).
    pub async fn idle(&self) {
        self.0.idle.notified().await
    }
}

/// One session counted in [`InFlight`]; dropping it uncounts it.
#[derive(Debug)]
pub struct InFlightHold(Arc<InFlightInner>);

impl Drop for InFlightHold {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_one();
        }
    }
}

/// A topology set by hand (tests, or a fixed cluster): a `watch` sender.
#[derive(Debug, Clone)]
pub struct StaticTopology {
    tx: Arc<watch::Sender<Topology>>,
}

impl StaticTopology {
    pub fn new(initial: Topology) -> Self {
        let (tx, _rx) = watch::channel(initial);
        StaticTopology { tx: Arc::new(tx) }
    }

    pub fn subscribe(&self) -> watch::Receiver<Topology> {
        self.tx.subscribe()
    }

    /// The current value.
    pub fn get(&self) -> Topology {
        self.tx.borrow().clone()
    }

    /// Applies `f` and bumps the generation.
    pub fn update(&self, f: impl FnOnce(&mut Topology)) {
        self.tx.send_modify(|t| {
            f(t);
            t.generation += 1;
        });
    }

    /// Pause new transactions (planned switchover).
    pub fn pause(&self) {
        self.update(|t| t.paused = true);
    }

    /// Resume after [`StaticTopology::pause`].
    pub fn resume(&self) {
        self.update(|t| t.paused = false);
    }

    /// The sessions' in-flight counter.
    pub fn in_flight(&self) -> InFlight {
        self.tx.borrow().in_flight.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn holds_count_sessions_and_wake_the_source_at_zero() {
        let f = InFlight::default();
        let a = f.hold();
        let b = f.clone().hold();
        assert_eq!(f.count(), 2);
        drop(a);
        assert_eq!(f.count(), 1);
        drop(b);
        assert_eq!(f.count(), 0);
        tokio::time::timeout(std::time::Duration::from_secs(1), f.idle())
            .await
            .expect("the drop to zero left a wake-up");
        assert_eq!(f, f.clone());
        assert_ne!(f, InFlight::default());
    }
}
