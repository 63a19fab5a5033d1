//! The routing decision: where a new unit of client work runs, as a pure
//! function of the session's state and the statement's analysis (no I/O, no
//! `Session`). The session does the I/O: it waits for a primary, and for a
//! [`Route::Standby`] it still has to prove that a standby may answer (health,
//! lag and, by `read_consistency`, the read barrier; see
//! [`standby_may_serve`]), and falls back to the primary otherwise.
//!
//! The rule (docs/routing.md): **a statement runs on a standby only when its
//! answer there is provably the answer the primary would give at that
//! moment; in every other case it runs on the primary.** Here that means: the
//! classifier proved it read-only, nothing in the session makes a standby
//! answer differently (a pin, serializable isolation), and inside a READ ONLY
//! transaction on a standby only statements whose outcome there is the
//! primary's ([`Analysis::standby_in_tx`]) continue; the others are refused
//! with an error that names the cause, never run where they would diverge.

use crate::classify::{Analysis, TxEffect};
use crate::shared::ListenerKind;

/// Which of a session's two backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Primary = 0,
    Standby = 1,
}

/// Where the session's transaction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxPlace {
    /// No transaction open.
    Idle,
    /// A lone `BEGIN` the proxy answered itself and has not sent anywhere:
    /// the next statement decides where the transaction runs. `read_only`:
    /// the BEGIN or the session default made it READ ONLY.
    Deferred { read_only: bool },
    /// A transaction is open on this backend.
    Open(Role),
}

/// What the decision needs from the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionFacts {
    pub listener: ListenerKind,
    pub tx: TxPlace,
    /// Pinned to the primary (temporary table, LISTEN, ...): the reason.
    pub pinned: Option<&'static str>,
    /// The session's `default_transaction_read_only`.
    pub default_read_only: bool,
    /// The session's `default_transaction_isolation` is (or may be)
    /// serializable: SET, startup options, or learned from a standby's
    /// refusal (role or database defaults).
    pub default_serializable: bool,
}

/// The unit's first message, as far as routing cares.
#[derive(Debug, Clone, Copy)]
pub enum UnitKind<'a> {
    /// A statement (simple Query, Parse, or Bind/Describe of a known
    /// prepared statement) with its analysis.
    Statement(&'a Analysis),
    /// A FunctionCall message (fast-path function call).
    FunctionCall,
    /// Nothing to analyse (Bind of an unknown statement, Execute, Sync, ...).
    Unknown,
}

/// Where a new unit goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The primary (waiting for one during failover or a pause).
    Primary,
    /// A standby that passes [`standby_may_serve`], else the primary.
    Standby,
    /// The backend that holds the open transaction or last ran (the
    /// listener's default when there is none).
    Stay,
    /// Inside a READ ONLY transaction running on a standby, a statement
    /// that needs the primary: refuse it (nothing runs), naming the reason.
    Refuse(Refusal),
}

/// Why a statement inside a standby transaction is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// What the statement needs the primary for.
    pub reason: &'static str,
    /// A plain write: PostgreSQL itself refuses it in a READ ONLY
    /// transaction (SQLSTATE 25006), so the refusal uses that code.
    pub write: bool,
}

impl Refusal {
    /// SQLSTATE and message of the error the client gets.
    pub fn error(&self) -> (&'static str, String) {
        if self.write {
            (
                "25006",
                "cannot execute this statement in a read-only transaction".into(),
            )
        } else {
            (
                "0A000",
                format!(
                    "this statement needs the primary ({}), but this READ ONLY transaction runs on \
                     a standby since its first statement: run it first in the transaction, outside \
                     the transaction, or in a read-write transaction",
                    self.reason
                ),
            )
        }
    }
}

/// The routing decision for a new unit.
pub fn decide(s: &SessionFacts, unit: UnitKind<'_>) -> Route {
    if s.listener == ListenerKind::Primary {
        return Route::Primary;
    }
    let serializable = |a: &Analysis| a.serializable || s.default_serializable;
    match s.tx {
        TxPlace::Open(Role::Primary) => Route::Stay,
        TxPlace::Open(Role::Standby) => match (s.listener, unit) {
            // The ro listener serves standbys by definition.
            (ListenerKind::Ro, _) => Route::Stay,
            (_, UnitKind::Unknown) => Route::Stay,
            (_, UnitKind::FunctionCall) => Route::Refuse(Refusal {
                reason: "a fast-path function call",
                write: false,
            }),
            (_, UnitKind::Statement(a)) if a.standby_in_tx && !a.serializable => Route::Stay,
            (_, UnitKind::Statement(a)) => Route::Refuse(Refusal {
                reason: a.primary_reason.unwrap_or("it may write"),
                write: a.primary_reason.is_none(),
            }),
        },
        TxPlace::Deferred { read_only } => match unit {
            UnitKind::Statement(a) if serializable(a) => Route::Primary,
            UnitKind::Statement(a) if a.tx == TxEffect::SetTransactionReadOnly => Route::Standby,
            UnitKind::Statement(a) if read_only && a.standby_in_tx => Route::Standby,
            _ => Route::Primary,
        },
        TxPlace::Idle => match (s.listener, unit) {
            (ListenerKind::Ro, UnitKind::Statement(a)) if serializable(a) => Route::Primary,
            (ListenerKind::Ro, _) => Route::Standby,
            (_, UnitKind::Unknown) => Route::Stay,
            (_, UnitKind::FunctionCall) => Route::Primary,
            _ if s.pinned.is_some() => Route::Primary,
            (_, UnitKind::Statement(a)) if serializable(a) => Route::Primary,
            (_, UnitKind::Statement(a)) => match a.tx {
                TxEffect::Begin { read_only } if read_only || s.default_read_only => Route::Standby,
                TxEffect::Begin { .. } => Route::Primary,
                _ if a.read_only => Route::Standby,
                _ => Route::Primary,
            },
        },
    }
}

/// Why [`decide`] sends a unit to the primary (metrics; the same rules in
/// the same order, for a unit `decide` routes to [`Route::Primary`]).
pub fn primary_reason(s: &SessionFacts, unit: UnitKind<'_>) -> crate::metrics::Reason {
    use crate::metrics::Reason;
    let serializable = |a: &Analysis| a.serializable || s.default_serializable;
    if s.listener == ListenerKind::Primary {
        return Reason::Listener;
    }
    match (s.tx, unit) {
        (_, UnitKind::Statement(a)) if serializable(a) => Reason::Serializable,
        (TxPlace::Open(_) | TxPlace::Deferred { .. }, _) => Reason::Transaction,
        (TxPlace::Idle, UnitKind::FunctionCall) => Reason::FunctionCall,
        (TxPlace::Idle, UnitKind::Unknown) => Reason::Sticky,
        (TxPlace::Idle, _) if s.pinned.is_some() => Reason::Pinned,
        (TxPlace::Idle, UnitKind::Statement(a)) => match a.tx {
            TxEffect::Begin { .. } => Reason::Transaction,
            _ => Reason::Write,
        },
    }
}

/// What the session measured about a standby for one read (see
/// [`standby_may_serve`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StandbyFacts {
    /// In the topology's standby list.
    pub listed: bool,
    /// Its last successful poll is within `health_timeout`.
    pub fresh: bool,
    /// Its last poll found it in recovery.
    pub in_recovery: bool,
    /// Bytes of WAL it is behind the primary's last sample (`None`: unknown).
    pub lag_bytes: Option<u64>,
}

/// Whether a standby is healthy enough to be asked at all (the ordering
/// guarantee is checked after this, against a position).
pub fn standby_may_serve(f: &StandbyFacts, max_lag_bytes: Option<u64>) -> bool {
    f.listed
        && f.fresh
        && f.in_recovery
        && match (max_lag_bytes, f.lag_bytes) {
            (Some(max), Some(lag)) => lag <= max,
            _ => true,
        }
}

#[cfg(test)]
mod tests;
