//! pgha-dcs: the distributed configuration store the HA agent and the proxy
//! agree through.
//!
//! * [`Dcs`] — the async trait: a small key-value store with leases,
//!   compare-and-swap transactions and prefix watches (see `api`).
//! * [`EtcdDcs`] — the production implementation over etcd v3.
//! * [`MemoryDcs`] / [`MemoryStore`] — an in-memory implementation with the
//!   same semantics, for tests and the deterministic simulator.
//! * [`keys`] — the key layout under `/<namespace>/<cluster>/`.
//! * [`DcsSettings`] — the `[dcs]` table of the cluster config file.
//! * [`credentials`] — the etcd user and password a client presents, and
//!   the message for a secret file the caller may not read.
//! * [`etcd::auth`] — turning etcd authentication on for a cluster.
//! * [`value`] — reading a JSON value: one that does not parse is reported
//!   and treated as absent, by every reader alike.
//!
//! Hazard for every caller: an [`DcsError::Unavailable`] result means the
//! outcome is UNKNOWN — a write may or may not have been applied, and the
//! cluster state read earlier may be stale. Never treat it as "absent".

mod api;
pub mod credentials;
mod error;
pub mod etcd;
pub mod keys;
pub mod memory;
mod settings;
pub mod value;

pub use api::{
    Dcs, GetResponse, KeyValue, Lease, LeaseId, RangeResponse, Revision, Watch, WatchEvent,
};
pub use credentials::Credentials;
pub use error::{DcsError, DcsResult};
pub use etcd::EtcdDcs;
pub use keys::{ClusterKey, ClusterKeys};
pub use memory::{ManualClock, MemoryDcs, MemoryStore};
pub use settings::DcsSettings;
pub use value::parse_value;
