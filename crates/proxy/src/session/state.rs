//! Per-session bookkeeping: the backends a session uses, the work in flight
//! on each ("units": one simple query, or extended messages up to Sync, each
//! answered by one ReadyForQuery), and the session state that must follow the
//! client from backend to backend (SET values, prepared statements, pins).
//!
//! Hazard: a backend's prepared-statement map is what the proxy *sent*, not
//! what succeeded; a failed Parse is left for the client to see and retry.

use crate::backend::BackendConn;
use crate::classify::{Analysis, SessionEffect};
use crate::monitor::Lsn;
use crate::monitor::{NodeStats, Outstanding};
use bytes::{Bytes, BytesMut};
use std::collections::{HashMap, VecDeque};

/// A hash map for the per-session maps looked up on every transaction.
/// foldhash instead of SipHash: several times cheaper for short keys, and
/// still seeded at random (per process and per map), because the keys
/// (statement names, setting names) come from clients. The maps are per
/// session, so colliding keys would first of all slow down the session that
/// sent them; the shared statement-text cache keeps std's SipHash.
pub type SessionMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
use std::sync::Arc;
use std::time::Instant;

pub use crate::routing::Role;

/// One unit of work in flight on a backend.
pub struct Unit {
    /// Injected by the proxy (SET replay): every response is swallowed.
    pub injected: bool,
    /// Completion tokens ('1' ParseComplete, '2' BindComplete, '3'
    /// CloseComplete) in send order, `true` for proxy-injected messages whose
    /// answer is dropped. Only built once the unit has an injection.
    pub tokens: Option<VecDeque<bool>>,
    /// Client P/B/C messages sent, and their answers seen, before `tokens`.
    pub plain_sent: u32,
    pub plain_seen: u32,
    /// Raw client messages, kept while a 25006 retry on the primary is possible.
    pub retry: Option<BytesMut>,
    /// Statement text to teach the classifier when the retry happens.
    pub retry_sql: Option<Bytes>,
    /// Responses held back while a retry is possible.
    pub held: Option<BytesMut>,
    /// The standby refused with 25006: drop the rest, then retry.
    pub discarding: bool,
    /// The refusal was serializable isolation (0A000 "cannot use
    /// serializable mode in a hot standby"), not a write.
    pub refused_serializable: bool,
    /// The deferred BEGIN this unit carried to the standby: a retry ends
    /// that transaction there and starts it again on the primary.
    pub retry_begin: Option<Bytes>,
    pub errored: bool,
    /// The unit may write (read-your-writes bookkeeping).
    pub write: bool,
    /// Analyses whose session effects apply when the unit succeeds.
    pub effects: Vec<Arc<Analysis>>,
    /// Statements the proxy re-prepared in this unit: if the unit fails,
    /// whether they exist on the backend is unknown.
    pub reprepared: Vec<Bytes>,
    /// The client's statements a SQL `DEALLOCATE` / `DISCARD ALL` in this
    /// unit removed from the session's map when it was sent: put back if the
    /// unit fails (it may not have run).
    pub deallocated: Vec<(Bytes, Prepared)>,
    /// The client's SQL `PREPARE`s in this unit, recorded when sent: if the
    /// unit fails, they are forgotten (PostgreSQL made none, or the name
    /// was taken).
    pub sql_prepared: Vec<Bytes>,
    /// Injected to fail on purpose (its error is expected: not logged).
    pub quiet: bool,
    /// Injected to learn whether the session state that pinned the
    /// session is gone: it fails while some remains.
    pub pin_check: bool,
    /// Ends with Sync/Query (false while an extended unit is open).
    pub closed: bool,
    /// Savepoint-related command tags seen in this unit, in order (empty,
    /// unallocated, for almost every unit).
    pub tx_marks: Vec<TxMark>,
    /// Closed by a Sync the proxy added: its ReadyForQuery is not forwarded.
    pub silent_ready: bool,
    /// Its last transaction-control statement leaves a transaction open
    /// (BEGIN, or COMMIT/ROLLBACK AND CHAIN): if the backend dies with it in
    /// flight, the session's transaction is lost, as for an open one.
    pub opens_tx: bool,
    /// When a client unit was sent (metrics: its latency); `None` for
    /// units the proxy injects.
    pub sent_at: Option<std::time::Instant>,
    _outstanding: Outstanding,
}

impl Unit {
    pub fn new(stats: Arc<NodeStats>) -> Self {
        Unit {
            injected: false,
            tokens: None,
            plain_sent: 0,
            plain_seen: 0,
            retry: None,
            retry_sql: None,
            held: None,
            discarding: false,
            refused_serializable: false,
            retry_begin: None,
            errored: false,
            write: false,
            effects: Vec::new(),
            reprepared: Vec::new(),
            deallocated: Vec::new(),
            sql_prepared: Vec::new(),
            quiet: false,
            pin_check: false,
            closed: false,
            tx_marks: Vec::new(),
            silent_ready: false,
            opens_tx: false,
            sent_at: None,
            _outstanding: Outstanding::new(stats),
        }
    }

    /// Records a P/B/C message sent to the backend; `injected` answers are dropped.
    pub fn push_token(&mut self, injected: bool) {
        match (&mut self.tokens, injected) {
            (None, false) => self.plain_sent += 1,
            (None, true) => {
                let pending = self.plain_sent.saturating_sub(self.plain_seen) as usize;
                let mut q = VecDeque::with_capacity(pending + 4);
                q.extend(std::iter::repeat_n(false, pending));
                q.push_back(true);
                self.tokens = Some(q);
            }
            (Some(q), inj) => q.push_back(inj),
        }
    }

    /// An answer '1'/'2'/'3' arrived: true when it must be dropped.
    pub fn pop_token(&mut self) -> bool {
        match &mut self.tokens {
            None => {
                self.plain_seen += 1;
                false
            }
            Some(q) => q.pop_front().unwrap_or(false),
        }
    }
}

/// The retry and hold-back buffers of finished units, cleared with their
/// capacity kept, for the next retryable unit: a select-only transaction on a
/// standby would otherwise allocate two buffers and grow them several times.
/// Emptied with the session's other idle buffers (`Session::idle_tick`), so
/// an idle session holds none.
#[derive(Default)]
pub struct SpareBufs(Vec<BytesMut>);

impl SpareBufs {
    /// At most this many buffers are kept (a unit uses two).
    const MAX_COUNT: usize = 4;
    /// A buffer larger than this (a big statement) is not kept.
    const MAX_CAPACITY: usize = 16 * 1024;

    /// An empty buffer, with capacity when one is spare.
    pub fn take(&mut self) -> BytesMut {
        self.0.pop().unwrap_or_default()
    }

    /// Keeps `buf` (emptied) for a later unit.
    pub fn put(&mut self, mut buf: BytesMut) {
        if self.0.len() < Self::MAX_COUNT && buf.capacity() <= Self::MAX_CAPACITY {
            buf.clear();
            self.0.push(buf);
        }
    }

    /// Keeps a unit's retry and hold-back buffers; it can no longer be retried.
    pub fn reclaim(&mut self, u: &mut Unit) {
        if let Some(b) = u.retry.take() {
            self.put(b);
        }
        if let Some(b) = u.held.take() {
            self.put(b);
        }
    }

    /// Frees every spare buffer.
    pub fn release(&mut self) {
        self.0 = Vec::new();
    }

    pub fn holds_memory(&self) -> bool {
        self.0.capacity() > 0
    }
}

/// A transaction-control command tag a unit's answer carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxMark {
    /// `SAVEPOINT`.
    Savepoint,
    /// `RELEASE`.
    Release,
    /// `ROLLBACK`: of the transaction when it ends, else `ROLLBACK TO SAVEPOINT`
    /// (a failed transaction's `COMMIT` answers `ROLLBACK` too).
    Rollback,
    /// `COMMIT` (also `END`, `COMMIT AND CHAIN`).
    Commit,
}

impl TxMark {
    /// The mark for a CommandComplete body (tag and its NUL).
    pub fn from_tag(body: &[u8]) -> Option<TxMark> {
        match body {
            b"SAVEPOINT\0" => Some(TxMark::Savepoint),
            b"RELEASE\0" => Some(TxMark::Release),
            b"ROLLBACK\0" => Some(TxMark::Rollback),
            b"COMMIT\0" => Some(TxMark::Commit),
            _ => None,
        }
    }
}

/// A prepared statement that may or may not exist on a backend (its
/// re-prepare was in a unit that failed): close it before preparing again.
pub const UNKNOWN_VERSION: u64 = u64::MAX;

/// One backend connection of a session and what it has seen.
pub struct Backend {
    pub conn: BackendConn,
    pub stats: Arc<NodeStats>,
    pub units: VecDeque<Unit>,
    /// Prepared statement name -> version the backend was sent
    /// ([`UNKNOWN_VERSION`]: may or may not exist).
    pub prepared: SessionMap<Bytes, u64>,
    /// Session settings applied on this backend: name -> SET statement.
    pub settings: SessionMap<String, String>,
    /// Transaction mode: the backend's place in its pool.
    pub slot: Option<crate::pool::Slot>,
    /// Counts this backend in its node's `backends` while it lives.
    pub counted: BackendCount,
}

/// One backend counted in [`NodeStats::backends`] until dropped (a field,
/// not a `Drop` on [`Backend`], whose fields are moved out when a pooled
/// backend goes back to its pool).
#[derive(Debug)]
pub struct BackendCount(Arc<NodeStats>);

impl BackendCount {
    pub fn new(stats: Arc<NodeStats>) -> Self {
        stats.backends.inc();
        BackendCount(stats)
    }
}

impl Drop for BackendCount {
    fn drop(&mut self) {
        self.0.backends.dec();
    }
}

impl Backend {
    pub fn new(conn: BackendConn, stats: Arc<NodeStats>) -> Self {
        Backend {
            conn,
            counted: BackendCount::new(stats.clone()),
            stats,
            units: VecDeque::new(),
            prepared: SessionMap::default(),
            settings: SessionMap::default(),
            slot: None,
        }
    }

    pub fn busy(&self) -> bool {
        !self.units.is_empty()
    }
}

/// A prepared statement as the client created it.
pub struct Prepared {
    pub version: u64,
    /// The client's Parse message, header included.
    pub parse: Bytes,
    /// Its statement text.
    pub sql: Bytes,
    pub analysis: Option<Arc<Analysis>>,
    /// Made by SQL `PREPARE`: `parse` is then a simple Query running that
    /// PREPARE statement (replayed as an injected unit of its own, never
    /// inside a client's unit) and `sql` its text.
    pub from_sql: bool,
}

/// State that follows the client across backends.
#[derive(Default)]
pub struct SessionState {
    /// Non-LOCAL SET statements in force: name -> statement.
    pub settings: SessionMap<String, String>,
    /// SET/RESET effects of the open transaction, applied to `settings` only
    /// when it commits (PostgreSQL undoes them on rollback); `None` marks a
    /// savepoint.
    pub pending: Vec<Option<SessionEffect>>,
    pub prepared: SessionMap<Bytes, Prepared>,
    pub next_version: u64,
    /// The session has made statements with SQL `PREPARE` (some may be
    /// gone): each unit on the primary checks they exist there.
    pub sql_prepared: bool,
    /// Pinned to the primary (temp table, LISTEN, ...). In transaction
    /// mode the session also keeps its primary backend while pinned.
    pub pinned: Option<&'static str>,
    /// A pin no check on the backend can lift (LOAD, set_config, a
    /// statement the classifier could not read): `pinned` returns to it.
    pub pinned_for_good: Option<&'static str>,
    /// `default_transaction_read_only` as the server reported it.
    pub default_read_only: bool,
    /// `default_transaction_isolation` is (or may be) serializable: set by
    /// the session (SET, startup options) or learned from a standby's
    /// refusal (a role or database default).
    pub default_serializable: bool,
    /// What `default_serializable` returns to on RESET: the startup
    /// packet's value, or a role/database default learned from a standby.
    pub serializable_base: bool,
    /// The current transaction has written (or may have).
    pub tx_wrote: bool,
    /// The current (or just dispatched) transaction is READ ONLY.
    pub tx_read_only: bool,
    /// When the session's last write transaction finished (with
    /// `read_consistency = session`: its last unit on the primary), or it
    /// moved to another standby: a standby read must see the primary's
    /// position polled after this moment.
    pub last_write: Option<Instant>,
    /// The standby this session last read from.
    pub read_standby: Option<Arc<NodeStats>>,
    /// The primary LSN reads must wait for (resolved from the monitor).
    pub ryw_target: Option<Lsn>,
}
