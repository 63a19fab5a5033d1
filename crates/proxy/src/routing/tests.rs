//! The routing table: one row per case of docs/routing.md ("What goes
//! where"), the way `core`'s `decide()` is tested.

use super::*;
use crate::classify::{Analysis, SessionEffect};
use ListenerKind::{Primary as PrimaryPort, Ro, Rw};
use Route::{Primary, Standby, Stay};

/// A statement of the given kind.
#[derive(Clone, Copy, Debug)]
enum S {
    /// Provably read-only SELECT.
    Read,
    /// A plain write.
    Write,
    /// Read-only-looking but server-local (pg_stat_activity, pg_is_in_recovery()).
    ServerLocal,
    /// An advisory lock, txid_current(), LISTEN/NOTIFY, a WITH HOLD cursor...
    NeedsPrimary,
    Begin,
    BeginReadOnly,
    BeginSerializable,
    BeginSerializableReadOnly,
    SetTxReadOnly,
    SetTxSerializable,
    Commit,
    Savepoint,
    SetSession,
}

fn analysis(s: S) -> Analysis {
    let base = Analysis::primary();
    match s {
        S::Read => Analysis {
            read_only: true,
            standby_in_tx: true,
            ..base
        },
        S::Write => base,
        S::ServerLocal => Analysis {
            primary_reason: Some("server-local state"),
            ..base
        },
        S::NeedsPrimary => Analysis {
            primary_reason: Some("advisory lock"),
            ..base
        },
        S::Begin => Analysis {
            tx: TxEffect::Begin { read_only: false },
            standby_in_tx: true,
            ..base
        },
        S::BeginReadOnly => Analysis {
            tx: TxEffect::Begin { read_only: true },
            standby_in_tx: true,
            ..base
        },
        S::BeginSerializable => Analysis {
            tx: TxEffect::Begin { read_only: false },
            serializable: true,
            primary_reason: Some("serializable"),
            ..base
        },
        S::BeginSerializableReadOnly => Analysis {
            tx: TxEffect::Begin { read_only: true },
            serializable: true,
            primary_reason: Some("serializable"),
            ..base
        },
        S::SetTxReadOnly => Analysis {
            tx: TxEffect::SetTransactionReadOnly,
            standby_in_tx: true,
            ..base
        },
        S::SetTxSerializable => Analysis {
            serializable: true,
            primary_reason: Some("serializable"),
            ..base
        },
        S::Commit => Analysis {
            tx: TxEffect::Commit,
            standby_in_tx: true,
            ..base
        },
        S::Savepoint => Analysis {
            standby_in_tx: true,
            ..base
        },
        S::SetSession => Analysis {
            standby_in_tx: true,
            session: vec![SessionEffect::Set {
                name: "work_mem".into(),
                statement: "SET work_mem = '8MB'".into(),
            }],
            ..base
        },
    }
}

#[derive(Clone, Copy)]
struct F {
    listener: ListenerKind,
    tx: TxPlace,
    pinned: bool,
    ro_default: bool,
    ser_default: bool,
}

const IDLE: F = F {
    listener: Rw,
    tx: TxPlace::Idle,
    pinned: false,
    ro_default: false,
    ser_default: false,
};

fn facts(f: F) -> SessionFacts {
    SessionFacts {
        listener: f.listener,
        tx: f.tx,
        pinned: f.pinned.then_some("temporary relation"),
        default_read_only: f.ro_default,
        default_serializable: f.ser_default,
    }
}

fn refuse(reason: &'static str, write: bool) -> Route {
    Route::Refuse(Refusal { reason, write })
}

const ON_STANDBY: TxPlace = TxPlace::Open(Role::Standby);
const ON_PRIMARY: TxPlace = TxPlace::Open(Role::Primary);
const DEFERRED: TxPlace = TxPlace::Deferred { read_only: false };
const DEFERRED_RO: TxPlace = TxPlace::Deferred { read_only: true };

#[test]
fn routing_table() {
    #[rustfmt::skip]
    let rows: &[(&str, F, S, Route)] = &[
        // Outside a transaction, rw.
        ("read-only statement", IDLE, S::Read, Standby),
        ("write", IDLE, S::Write, Primary),
        ("server-local state goes to the primary", IDLE, S::ServerLocal, Primary),
        ("advisory lock, xid, LISTEN...", IDLE, S::NeedsPrimary, Primary),
        ("pinned session reads on the primary", F { pinned: true, ..IDLE }, S::Read, Primary),
        ("BEGIN", IDLE, S::Begin, Primary),
        ("BEGIN READ ONLY", IDLE, S::BeginReadOnly, Standby),
        ("BEGIN with default_transaction_read_only", F { ro_default: true, ..IDLE }, S::Begin, Standby),
        ("BEGIN READ ONLY, pinned", F { pinned: true, ..IDLE }, S::BeginReadOnly, Primary),
        ("BEGIN SERIALIZABLE", IDLE, S::BeginSerializable, Primary),
        ("BEGIN SERIALIZABLE READ ONLY DEFERRABLE", IDLE, S::BeginSerializableReadOnly, Primary),
        ("BEGIN READ ONLY, default serializable", F { ser_default: true, ..IDLE }, S::BeginReadOnly, Primary),
        ("autocommit read, default serializable", F { ser_default: true, ..IDLE }, S::Read, Primary),
        ("read-only default and serializable default", F { ro_default: true, ser_default: true, ..IDLE }, S::Begin, Primary),
        ("session SET outside a transaction", IDLE, S::SetSession, Primary),
        // A lone BEGIN answered by the proxy: the first statement decides.
        ("deferred BEGIN then a read", F { tx: DEFERRED, ..IDLE }, S::Read, Primary),
        ("deferred BEGIN then SET TRANSACTION READ ONLY", F { tx: DEFERRED, ..IDLE }, S::SetTxReadOnly, Standby),
        ("deferred BEGIN then SET TRANSACTION SERIALIZABLE", F { tx: DEFERRED, ..IDLE }, S::SetTxSerializable, Primary),
        ("deferred BEGIN, default serializable, then SET TRANSACTION READ ONLY", F { tx: DEFERRED, ser_default: true, ..IDLE }, S::SetTxReadOnly, Primary),
        ("deferred BEGIN READ ONLY then a read", F { tx: DEFERRED_RO, ..IDLE }, S::Read, Standby),
        ("deferred BEGIN READ ONLY then an advisory lock: all on the primary", F { tx: DEFERRED_RO, ..IDLE }, S::NeedsPrimary, Primary),
        ("deferred BEGIN READ ONLY then server-local state", F { tx: DEFERRED_RO, ..IDLE }, S::ServerLocal, Primary),
        ("deferred BEGIN READ ONLY then a write (fails as on the primary)", F { tx: DEFERRED_RO, ..IDLE }, S::Write, Primary),
        ("deferred BEGIN READ ONLY then SET TRANSACTION SERIALIZABLE", F { tx: DEFERRED_RO, ..IDLE }, S::SetTxSerializable, Primary),
        ("deferred BEGIN READ ONLY then SAVEPOINT", F { tx: DEFERRED_RO, ..IDLE }, S::Savepoint, Standby),
        // Inside a transaction.
        ("read inside a primary transaction", F { tx: ON_PRIMARY, ..IDLE }, S::Read, Stay),
        ("anything inside a primary transaction", F { tx: ON_PRIMARY, ..IDLE }, S::NeedsPrimary, Stay),
        ("read inside a standby transaction", F { tx: ON_STANDBY, ..IDLE }, S::Read, Stay),
        ("COMMIT of a standby transaction", F { tx: ON_STANDBY, ..IDLE }, S::Commit, Stay),
        ("SAVEPOINT in a standby transaction", F { tx: ON_STANDBY, ..IDLE }, S::Savepoint, Stay),
        ("session SET in a standby transaction", F { tx: ON_STANDBY, ..IDLE }, S::SetSession, Stay),
        ("advisory lock in a standby transaction is refused", F { tx: ON_STANDBY, ..IDLE }, S::NeedsPrimary, refuse("advisory lock", false)),
        ("server-local state in a standby transaction is refused", F { tx: ON_STANDBY, ..IDLE }, S::ServerLocal, refuse("server-local state", false)),
        ("a write in a standby transaction fails as in PostgreSQL (25006)", F { tx: ON_STANDBY, ..IDLE }, S::Write, refuse("it may write", true)),
        ("SET TRANSACTION SERIALIZABLE in a standby transaction", F { tx: ON_STANDBY, ..IDLE }, S::SetTxSerializable, refuse("serializable", false)),
        // The ro listener: standbys, except where a standby cannot answer.
        ("ro: read", F { listener: Ro, ..IDLE }, S::Read, Standby),
        ("ro: write still tries a standby (and fails there)", F { listener: Ro, ..IDLE }, S::Write, Standby),
        ("ro: serializable", F { listener: Ro, ..IDLE }, S::BeginSerializableReadOnly, Primary),
        ("ro: default serializable", F { listener: Ro, ser_default: true, ..IDLE }, S::Read, Primary),
        ("ro: inside a standby transaction", F { listener: Ro, tx: ON_STANDBY, ..IDLE }, S::NeedsPrimary, Stay),
        // The primary listener.
        ("primary port: read", F { listener: PrimaryPort, ..IDLE }, S::Read, Primary),
        ("primary port: in a transaction", F { listener: PrimaryPort, tx: ON_PRIMARY, ..IDLE }, S::Read, Primary),
    ];
    let mut failed = Vec::new();
    for (name, f, s, want) in rows {
        let a = analysis(*s);
        let got = decide(&facts(*f), UnitKind::Statement(&a));
        if got != *want {
            failed.push(format!("{name}: {s:?} -> {got:?}, want {want:?}"));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn units_without_a_statement() {
    #[rustfmt::skip]
    let rows: &[(&str, F, UnitKind<'static>, Route)] = &[
        ("function call outside a transaction", IDLE, UnitKind::FunctionCall, Primary),
        ("function call in a standby transaction", F { tx: ON_STANDBY, ..IDLE }, UnitKind::FunctionCall, refuse("a fast-path function call", false)),
        ("function call in a primary transaction", F { tx: ON_PRIMARY, ..IDLE }, UnitKind::FunctionCall, Stay),
        ("function call after a deferred BEGIN", F { tx: DEFERRED_RO, ..IDLE }, UnitKind::FunctionCall, Primary),
        ("ro: function call", F { listener: Ro, ..IDLE }, UnitKind::FunctionCall, Standby),
        ("unknown unit outside a transaction", IDLE, UnitKind::Unknown, Stay),
        ("unknown unit in a standby transaction", F { tx: ON_STANDBY, ..IDLE }, UnitKind::Unknown, Stay),
        ("unknown unit after a deferred BEGIN", F { tx: DEFERRED, ..IDLE }, UnitKind::Unknown, Primary),
    ];
    for (name, f, unit, want) in rows {
        assert_eq!(decide(&facts(*f), *unit), *want, "{name}");
    }
}

#[test]
fn refusal_errors_name_the_cause() {
    let (code, msg) = Refusal {
        reason: "advisory lock",
        write: false,
    }
    .error();
    assert_eq!(code, "0A000");
    assert!(msg.contains("advisory lock"), "{msg}");
    assert_eq!(
        Refusal {
            reason: "it may write",
            write: true
        }
        .error()
        .0,
        "25006"
    );
}

#[test]
fn standby_health_table() {
    let ok = StandbyFacts {
        listed: true,
        fresh: true,
        in_recovery: true,
        lag_bytes: Some(100),
    };
    #[rustfmt::skip]
    let rows: &[(&str, StandbyFacts, Option<u64>, bool)] = &[
        ("healthy", ok, None, true),
        ("within the lag limit", ok, Some(100), true),
        ("over the lag limit", ok, Some(99), false),
        ("lag unknown", StandbyFacts { lag_bytes: None, ..ok }, Some(1), true),
        ("not in the topology", StandbyFacts { listed: false, ..ok }, None, false),
        ("stale poll", StandbyFacts { fresh: false, ..ok }, None, false),
        ("promoted (not in recovery)", StandbyFacts { in_recovery: false, ..ok }, None, false),
    ];
    for (name, f, max, want) in rows {
        assert_eq!(standby_may_serve(f, *max), *want, "{name}");
    }
}
