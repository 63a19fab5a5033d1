//! Who is primary and which standbys exist, delivered to every session
//! through a `tokio::sync::watch` channel.
//!
//! Sources: [`StaticTopology`] (tests, fixed clusters); an etcd source
//! follows the DCS leader and member keys.
//!
//! Hazard: a topology is a belief, not a fact: the named primary may already
//! be dead. Sessions treat a failed connection as "wait for the next
//! generation", never as permission to write elsewhere.

pub mod etcd;

use serde::Deserialize;
use tokio::sync::watch;

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
}

/// A topology set by hand (tests, or a fixed cluster): a `watch` sender.
#[derive(Debug, Clone)]
pub struct StaticTopology {
    tx: std::sync::Arc<watch::Sender<Topology>>,
}

impl StaticTopology {
    pub fn new(initial: Topology) -> Self {
        let (tx, _rx) = watch::channel(initial);
        StaticTopology {
            tx: std::sync::Arc::new(tx),
        }
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
}
