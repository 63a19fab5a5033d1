//! The `Dcs` trait and the values it exchanges.
//!
//! The trait uses `#[async_trait]` (boxed futures) so that it is object-safe:
//! agents and proxies hold an `Arc<dyn Dcs>` and tests swap in `MemoryDcs`.
//!
//! Semantics follow etcd v3, which is the reference:
//! * one global, monotonic revision; every successful write (or transaction
//!   that writes) bumps it by one, failed compares do not;
//! * `create_revision` / `mod_revision` of a key are the revisions at which it
//!   was created / last written; an absent key has both equal to 0;
//! * a key written with a lease is deleted when the lease expires or is
//!   revoked, in one revision per lease, and watchers see the deletes.
//!
//! Hazard: every call is bounded by the request timeout; on
//! [`DcsError::Unavailable`](crate::DcsError) the outcome is unknown.

use crate::error::DcsResult;
use async_trait::async_trait;
use std::fmt;
use tokio::sync::mpsc;

/// An etcd revision (global, monotonic, starting at 1 for an empty store).
pub type Revision = i64;

/// The id of a lease, as etcd numbers them (never 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(pub i64);

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// A granted lease: its id and the TTL the server actually granted
/// (etcd may round a small TTL up to its minimum).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub id: LeaseId,
    /// Granted TTL in whole seconds.
    pub ttl_secs: i64,
}

/// One key with its value and metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision at which the key was (last) created.
    pub create_revision: Revision,
    /// Revision of the last write to the key.
    pub mod_revision: Revision,
    /// The lease the key is attached to, if any.
    pub lease: Option<LeaseId>,
}

impl KeyValue {
    /// The value as UTF-8 text, lossily (keys we write hold text or JSON).
    pub fn value_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.value)
    }
}

/// Result of [`Dcs::get`]: the key if present, and the store revision the
/// read was served at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetResponse {
    pub kv: Option<KeyValue>,
    pub revision: Revision,
}

/// Result of [`Dcs::get_prefix`]: a consistent snapshot of all keys under the
/// prefix (sorted by key) at `revision`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeResponse {
    pub kvs: Vec<KeyValue>,
    pub revision: Revision,
}

/// A change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The key was created or written; `kv.mod_revision` is the revision.
    Put(KeyValue),
    /// The key was deleted (explicitly or by lease expiry) at `revision`.
    Delete { key: String, revision: Revision },
    /// Continuity was lost (history compacted while reconnecting, or the
    /// consumer fell too far behind): some events were skipped. Re-read the
    /// prefix with `get_prefix`; events after this one are complete again.
    Resync,
}

impl WatchEvent {
    /// The key the event is about (`None` for `Resync`).
    pub fn key(&self) -> Option<&str> {
        match self {
            WatchEvent::Put(kv) => Some(&kv.key),
            WatchEvent::Delete { key, .. } => Some(key),
            WatchEvent::Resync => None,
        }
    }

    /// The revision of the change (`None` for `Resync`).
    pub fn revision(&self) -> Option<Revision> {
        match self {
            WatchEvent::Put(kv) => Some(kv.mod_revision),
            WatchEvent::Delete { revision, .. } => Some(*revision),
            WatchEvent::Resync => None,
        }
    }
}

/// Capacity of a watch's event channel. A consumer that falls further
/// behind than this gets a [`WatchEvent::Resync`] instead of the backlog
/// (memory) or back-pressures the etcd stream (etcd).
pub(crate) const WATCH_CHANNEL: usize = 1024;

/// A live watch on a key prefix. Dropping it cancels the watch.
pub struct Watch {
    rx: mpsc::Receiver<WatchEvent>,
    _cancel: Option<Box<dyn Send + Sync>>,
}

impl Watch {
    pub(crate) fn new(
        rx: mpsc::Receiver<WatchEvent>,
        cancel: Option<Box<dyn Send + Sync>>,
    ) -> Self {
        Watch {
            rx,
            _cancel: cancel,
        }
    }

    /// The next event; `None` when the watch ended for good (the DCS handle
    /// was dropped). Transient connection loss does not end it: the etcd
    /// implementation reconnects and resumes after the last revision seen.
    /// Cancel-safe: use it in `tokio::select!` without losing events.
    pub async fn next(&mut self) -> Option<WatchEvent> {
        self.rx.recv().await
    }

    /// The next event if one is ready now, without waiting.
    pub fn try_next(&mut self) -> Option<WatchEvent> {
        self.rx.try_recv().ok()
    }
}

impl fmt::Debug for Watch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watch").finish_non_exhaustive()
    }
}

/// A small key-value store with leases: the primitives the HA agent needs.
///
/// Keys are UTF-8 strings (see [`crate::keys`]); values are bytes.
/// Every method is bounded by the implementation's request timeout.
#[async_trait]
pub trait Dcs: Send + Sync + 'static {
    /// Grant a lease of `ttl_secs` whole seconds (at least 1; etcd raises
    /// small TTLs to its minimum, 2 s with default etcd timing).
    async fn grant_lease(&self, ttl_secs: i64) -> DcsResult<Lease>;

    /// Renew a lease to its full TTL; returns the TTL in seconds from now.
    /// `LeaseExpired` when the lease is gone (its keys are gone too).
    async fn keep_alive(&self, lease: LeaseId) -> DcsResult<i64>;

    /// Revoke a lease now, deleting its keys. `LeaseExpired` if it is
    /// already gone.
    async fn revoke_lease(&self, lease: LeaseId) -> DcsResult<()>;

    /// Read one key.
    async fn get(&self, key: &str) -> DcsResult<GetResponse>;

    /// Read every key that starts with `prefix`, as one snapshot.
    async fn get_prefix(&self, prefix: &str) -> DcsResult<RangeResponse>;

    /// Write a key unconditionally; returns the new revision.
    /// `LeaseExpired` when `lease` is gone.
    async fn put(&self, key: &str, value: &[u8], lease: Option<LeaseId>) -> DcsResult<Revision>;

    /// Delete a key; returns whether it existed.
    async fn delete(&self, key: &str) -> DcsResult<bool>;

    /// Create `key` only if it does not exist; returns whether this call
    /// created it. Exactly one of N concurrent callers wins.
    async fn create_if_absent(
        &self,
        key: &str,
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> DcsResult<bool>;

    /// Write `key` only if its `mod_revision` equals `expected`
    /// (0 = the key must be absent); returns whether it was written.
    async fn compare_and_swap(
        &self,
        key: &str,
        value: &[u8],
        expected: Revision,
        lease: Option<LeaseId>,
    ) -> DcsResult<bool>;

    /// Write `key` (without lease) only while `guard_key` exists, holds
    /// exactly `guard_value` and has the create revision `guard_created`,
    /// and `key`'s own mod revision is `expected` (0 = absent), atomically;
    /// returns whether it was written. Used to write `/sync` only while
    /// holding the leader key *in the term the record names* (the key's
    /// create revision): the value alone cannot tell a member's current
    /// reign from an earlier one, whose delayed write must not land; and
    /// only over the `/sync` the writer last read, so that a delayed write
    /// of the same term cannot land over a newer record.
    async fn put_if_key_equals(
        &self,
        key: &str,
        value: &[u8],
        guard_key: &str,
        guard_value: &[u8],
        guard_created: Revision,
        expected: Revision,
    ) -> DcsResult<bool>;

    /// Delete `key` only if it holds exactly `value`; returns whether it was
    /// deleted. Used to release the leader key only if it is ours.
    async fn delete_if_equals(&self, key: &str, value: &[u8]) -> DcsResult<bool>;

    /// Write `put_key` (without lease) and delete `del_key`, in one
    /// transaction (one revision), only if `del_key` holds exactly
    /// `expected` and has the create revision `del_created` (the term, as
    /// for [`Dcs::put_if_key_equals`]) and `put_key`'s mod revision is
    /// `put_expected` (0 = absent); returns whether it happened. On `false` neither key was
    /// touched. Used for a switchover's hand-over: the old leader writes
    /// `/sync` with the final position and releases the leader key in one
    /// step, so the target sees both at once. The keys must differ.
    async fn put_and_delete_if_equals(
        &self,
        put_key: &str,
        value: &[u8],
        del_key: &str,
        expected: &[u8],
        del_created: Revision,
        put_expected: Revision,
    ) -> DcsResult<bool>;

    /// Watch every key under `prefix`. `start_revision` 0 means "changes
    /// from now on"; otherwise history from that revision is replayed first
    /// (pass `snapshot.revision + 1` after a `get_prefix` to miss nothing).
    async fn watch_prefix(&self, prefix: &str, start_revision: Revision) -> DcsResult<Watch>;
}
