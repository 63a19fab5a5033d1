//! Table test of the SQL classifier: statement texts (and multi-statement
//! texts) with the exact `Analysis` expected, against a function catalogue
//! filled in here. Pure: no database.
//!
//! `table()` gives the routing fields (`read_only`, `tx`, `session`,
//! `chain`); `placement_table()` gives `read_only`, `standby_in_tx`,
//! `primary_reason` and `serializable`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking

use std::sync::Arc;

use pgha_proxy::classify::{
    reason, startup_options_serializable, Analysis, CatalogContent, CatalogRelation, Classifier,
    FunctionCatalog, RelationKind, SessionEffect, SqlBody, TxEffect, UserFunction, ViewDefinition,
    Volatility,
};

fn ro() -> Analysis {
    Analysis {
        read_only: true,
        tx: TxEffect::None,
        session: Vec::new(),
        chain: false,
        standby_in_tx: true,
        primary_reason: None,
        serializable: false,
    }
}

fn rw() -> Analysis {
    Analysis {
        read_only: false,
        standby_in_tx: false,
        ..ro()
    }
}

fn tx(effect: TxEffect) -> Analysis {
    Analysis { tx: effect, ..rw() }
}

fn chain(effect: TxEffect) -> Analysis {
    Analysis {
        chain: true,
        ..tx(effect)
    }
}

fn with(effects: Vec<SessionEffect>) -> Analysis {
    Analysis {
        session: effects,
        ..rw()
    }
}

fn pin(reason: &'static str) -> Analysis {
    with(vec![SessionEffect::Pin { reason }])
}

fn set(name: &str, statement: &str) -> Analysis {
    with(vec![SessionEffect::Set {
        name: name.into(),
        statement: statement.into(),
    }])
}

fn reset(name: &str, statement: &str) -> Analysis {
    with(vec![SessionEffect::Reset {
        name: name.into(),
        statement: statement.into(),
    }])
}

fn user(schema: &str, name: &str, volatility: Volatility) -> UserFunction {
    UserFunction {
        schema: schema.into(),
        name: name.into(),
        volatility,
    }
}

fn classifier() -> Classifier {
    let catalog = Arc::new(FunctionCatalog::new());
    catalog.replace(
        [
            user("public", "stable_f", Volatility::Stable),
            user("app", "stable_f", Volatility::Immutable),
            user("public", "immutable_f", Volatility::Immutable),
            user("public", "volatile_f", Volatility::Volatile),
            user("public", "lies_f", Volatility::Stable),
            user("public", "lower", Volatility::Volatile),
        ],
        ["===".to_string()],
    );
    Classifier::new(catalog)
}

fn table() -> Vec<(&'static str, Analysis)> {
    use TxEffect::*;
    const ADV: &str = "session advisory lock";
    const TEMP: &str = "temporary relation";
    vec![
        // plain reads
        ("SELECT 1", ro()),
        ("select a, b from t where id = 5 order by a limit 10", ro()),
        ("SELECT $1::int", ro()),
        ("TABLE t", ro()),
        ("VALUES (1), (2)", ro()),
        ("SHOW search_path", ro()),
        ("SHOW ALL", rw()),
        ("SELECT * FROM t TABLESAMPLE SYSTEM (10)", ro()),
        ("SELECT * FROM pg_stat_activity", rw()),
        ("WITH x AS (SELECT 1) SELECT * FROM x", ro()),
        ("SELECT a FROM t WHERE b = (SELECT max(b) FROM t)", ro()),
        ("SELECT count(*), max(a) FROM t GROUP BY b HAVING sum(c) > 1", ro()),
        ("SELECT now(), version(), pg_is_in_recovery(), current_setting('TimeZone')", rw()),
        ("SELECT now(), current_setting('TimeZone')", ro()),
        ("SELECT current_user, session_user, current_timestamp, localtimestamp", ro()),
        ("SELECT EXTRACT(year FROM now()), substring('abc' from 1 for 2), trim(' a '), position('a' in 'abc')", ro()),
        ("SELECT * FROM generate_series(1, 10) g", ro()),
        ("SELECT row_to_json(t), jsonb_build_object('a', 1) FROM t", ro()),
        ("SELECT * FROM t JOIN u ON u.id = t.uid AND gen_random_uuid() IS NOT NULL", ro()),
        ("SELECT pg_sleep(0)", ro()),
        ("SELECT rank() OVER (PARTITION BY a ORDER BY b) FROM t", ro()),
        // locking clauses
        ("SELECT * FROM t FOR UPDATE", rw()),
        ("SELECT * FROM t WHERE id = $1 FOR SHARE", rw()),
        ("SELECT * FROM t FOR NO KEY UPDATE", rw()),
        ("SELECT * FROM t FOR KEY SHARE SKIP LOCKED", rw()),
        ("SELECT * FROM (SELECT * FROM t FOR UPDATE) s", rw()),
        ("SELECT x FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.id = t.id FOR UPDATE)", rw()),
        // data-modifying CTEs and SELECT INTO
        ("WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x", rw()),
        ("WITH x AS (INSERT INTO t VALUES (1) RETURNING id) SELECT id FROM x", rw()),
        ("WITH a AS (SELECT 1), b AS (UPDATE t SET c = 1 RETURNING c) SELECT * FROM a", rw()),
        ("SELECT * INTO new_t FROM t", rw()),
        ("SELECT * INTO TEMP tt FROM t", pin(TEMP)),
        // EXPLAIN
        ("EXPLAIN SELECT * FROM t", ro()),
        ("EXPLAIN ANALYZE SELECT * FROM t", ro()),
        ("EXPLAIN (ANALYZE, BUFFERS) SELECT nextval('s')", rw()),
        ("EXPLAIN ANALYZE DELETE FROM t", rw()),
        ("EXPLAIN (ANALYZE true) UPDATE t SET a = 1", rw()),
        ("EXPLAIN DELETE FROM t", rw()),
        // functions that write, lock or change session state
        ("SELECT nextval('s')", rw()),
        ("SELECT pg_catalog.nextval('s')", rw()),
        ("SELECT currval('s')", rw()),
        ("SELECT lastval()", rw()),
        ("SELECT setval('s', 10)", rw()),
        ("SELECT txid_current()", rw()),
        ("SELECT pg_current_xact_id()", rw()),
        ("SELECT pg_notify('c', 'x')", rw()),
        ("SELECT lo_import('/etc/hosts')", rw()),
        ("SELECT dblink('dbname=x', 'select 1')", rw()),
        ("SELECT query_to_xml('delete from t returning 1', true, true, '')", rw()),
        ("SELECT pg_terminate_backend(42)", rw()),
        ("SELECT pg_advisory_lock(1)", pin(ADV)),
        ("SELECT pg_try_advisory_lock(1, 2)", pin(ADV)),
        ("SELECT CASE WHEN a THEN pg_advisory_lock_shared(a) END FROM t", pin(ADV)),
        ("SELECT pg_advisory_xact_lock(1)", rw()),
        ("SELECT pg_advisory_unlock(1)", rw()),
        ("SELECT set_config('search_path', 'app', false)", set("search_path", "SELECT pg_catalog.set_config('search_path', 'app', false)")),
        ("SELECT pg_catalog.set_config('app.user', '42', true)", rw()),
        ("SELECT set_config('app.user', $1, false)", pin("set_config")),
        ("SELECT set_config('a', 'b', false) FROM t", pin("set_config")),
        // functions anywhere in the tree
        ("SELECT lower(name) FROM users WHERE id IN (SELECT uid FROM o WHERE nextval('s') > 0)", rw()),
        ("SELECT 1 FROM t UNION SELECT nextval('s')", rw()),
        ("SELECT ARRAY(SELECT nextval('s'))", rw()),
        ("SELECT * FROM t ORDER BY nextval('s')", rw()),
        ("SELECT * FROM t, LATERAL (SELECT nextval('s')) x", rw()),
        ("SELECT count(*) FILTER (WHERE nextval('s') > 0) FROM t", rw()),
        ("WITH x AS (SELECT setval('s', 1)) SELECT 1", rw()),
        // user functions from the catalogue
        ("SELECT stable_f(1)", ro()),
        ("SELECT immutable_f(a) FROM t", ro()),
        ("SELECT app.stable_f(1)", ro()),
        ("SELECT volatile_f()", rw()),
        ("SELECT * FROM t WHERE a = public.volatile_f()", rw()),
        ("SELECT unknown_f()", rw()),
        ("SELECT other.stable_f(1)", rw()),
        ("SELECT lower('A')", rw()),
        ("SELECT pg_catalog.lower('A')", ro()),
        ("SELECT * FROM t WHERE a === b", rw()),
        // multi-statement simple queries
        ("SELECT 1; SELECT 2", ro()),
        ("SELECT 1; DELETE FROM t", rw()),
        ("SELECT 1; SELECT nextval('s');", rw()),
        ("SET search_path = a; SELECT 1", set("search_path", "SET search_path = a")),
        ("SELECT 'é€'; SET search_path = a ; SELECT 2", set("search_path", "SET search_path = a")),
        ("BEGIN READ ONLY; SELECT 1; COMMIT", tx(Commit)),
        ("COMMIT; BEGIN", tx(Begin { read_only: false })),
        ("BEGIN READ ONLY; SELECT 1", tx(Begin { read_only: true })),
        ("DELETE FROM t; BEGIN READ ONLY", tx(Begin { read_only: false })),
        ("SET search_path = a; START TRANSACTION READ ONLY", Analysis { tx: Begin { read_only: false }, ..set("search_path", "SET search_path = a") }),
        // transactions
        ("BEGIN", tx(Begin { read_only: false })),
        ("BEGIN READ ONLY", tx(Begin { read_only: true })),
        ("begin transaction read write", tx(Begin { read_only: false })),
        ("START TRANSACTION ISOLATION LEVEL SERIALIZABLE READ ONLY", tx(Begin { read_only: true })),
        ("START TRANSACTION READ ONLY, DEFERRABLE", tx(Begin { read_only: true })),
        ("SET TRANSACTION READ ONLY", tx(SetTransactionReadOnly)),
        ("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", tx(SetTransactionReadOnly)),
        ("SET TRANSACTION READ WRITE", rw()),
        ("SET transaction_read_only = on", tx(SetTransactionReadOnly)),
        ("SET LOCAL transaction_read_only TO true", tx(SetTransactionReadOnly)),
        ("COMMIT", tx(Commit)),
        ("END", tx(Commit)),
        ("COMMIT AND CHAIN", chain(Commit)),
        ("ROLLBACK", tx(Rollback)),
        ("ABORT", tx(Rollback)),
        ("ROLLBACK AND CHAIN", chain(Rollback)),
        ("PREPARE TRANSACTION 'gid1'", tx(Commit)),
        ("COMMIT PREPARED 'gid1'", rw()),
        ("SAVEPOINT a", rw()),
        ("RELEASE SAVEPOINT a", rw()),
        ("ROLLBACK TO SAVEPOINT a", rw()),
        // session settings
        ("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", set("default_transaction_read_only", "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")),
        ("SET default_transaction_read_only = on", set("default_transaction_read_only", "SET default_transaction_read_only = on")),
        ("SET search_path TO app, public", set("search_path", "SET search_path TO app, public")),
        ("set TIME ZONE 'UTC'", set("timezone", "set TIME ZONE 'UTC'")),
        ("SET application_name = 'x'", set("application_name", "SET application_name = 'x'")),
        ("SET ROLE admin", set("role", "SET ROLE admin")),
        ("SET LOCAL search_path = app", rw()),
        ("RESET search_path", reset("search_path", "RESET search_path")),
        ("SET search_path TO DEFAULT", reset("search_path", "SET search_path TO DEFAULT")),
        ("RESET ALL", with(vec![SessionEffect::ResetAll])),
        ("DISCARD ALL", with(vec![SessionEffect::ResetAll, SessionEffect::Deallocate { name: Option::None }])),
        ("DISCARD PLANS", rw()),
        ("DEALLOCATE ALL", with(vec![SessionEffect::Deallocate { name: Option::None }])),
        ("DEALLOCATE PREPARE s1", with(vec![SessionEffect::Deallocate { name: Some("s1".into()) }])),
        ("deallocate \"S_1\"", with(vec![SessionEffect::Deallocate { name: Some("S_1".into()) }])),
        // pins
        ("CREATE TEMP TABLE tt (a int)", pin(TEMP)),
        ("CREATE TEMPORARY TABLE tt AS SELECT 1", pin(TEMP)),
        ("CREATE TABLE pg_temp.tt (a int)", pin(TEMP)),
        ("CREATE TEMP VIEW v AS SELECT 1", pin(TEMP)),
        ("LISTEN chan", pin("LISTEN")),
        ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", pin("WITH HOLD cursor")),
        ("DECLARE c CURSOR FOR SELECT 1", rw()),
        ("PREPARE p AS SELECT 1", with(vec![SessionEffect::Prepare { name: "p".into(), statement: "PREPARE p AS SELECT 1".into() }])),
        ("PREPARE q (int) AS SELECT $1; SELECT 1", with(vec![SessionEffect::Prepare { name: "q".into(), statement: "PREPARE q (int) AS SELECT $1".into() }])),
        ("EXPLAIN EXECUTE p", with(vec![SessionEffect::Execute { name: "p".into() }])),
        ("CREATE TABLE t3 AS EXECUTE p(1)", with(vec![SessionEffect::Execute { name: "p".into() }])),
        ("LOAD 'auto_explain'", pin("LOAD")),
        // writes and utilities
        ("INSERT INTO t VALUES (1)", rw()),
        ("UPDATE t SET a = a + 1", rw()),
        ("DELETE FROM t", rw()),
        ("MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DELETE", rw()),
        ("CREATE TABLE t2 (a int)", rw()),
        ("COPY t TO STDOUT", rw()),
        ("COPY (SELECT 1) TO STDOUT", rw()),
        ("EXECUTE p", with(vec![SessionEffect::Execute { name: "p".into() }])),
        ("UNLISTEN *", rw()),
        ("NOTIFY chan", rw()),
        ("DO $$ BEGIN END $$", rw()),
        ("CALL p()", rw()),
        ("LOCK TABLE t", rw()),
        ("VACUUM", rw()),
        // bad input
        ("SELEC 1", rw()),
        ("SELECT (1", rw()),
        ("SELECT 'unterminated", rw()),
        ("", ro()),
        ("   ", ro()),
        ("-- just a comment", ro()),
        ("/* c */ ;", ro()),
        ("SELECT 'a\\'", rw()),
    ]
}

#[test]
fn classification_table() {
    let c = classifier();
    let cases = table();
    assert!(cases.len() >= 60);
    let mut failures = Vec::new();
    // The routing fields; `placement_table` checks the others.
    let fields = |a: &Analysis| (a.read_only, a.tx.clone(), a.session.clone(), a.chain);
    for (sql, want) in &cases {
        // Twice: the cached answer must equal the fresh one.
        for round in 0..2 {
            let got = c.analyze(sql);
            if fields(&got) != fields(want) {
                failures.push(format!(
                    "round {round}: {sql:?}\n   want {want:?}\n    got {got:?}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// Expected `(read_only, standby_in_tx, primary_reason, serializable)`.
type Placement = (bool, bool, Option<&'static str>, bool);

fn placement(a: &Analysis) -> Placement {
    (
        a.read_only,
        a.standby_in_tx,
        a.primary_reason,
        a.serializable,
    )
}

/// Where a statement may run: outside a transaction (`read_only`), inside a
/// READ ONLY transaction on a standby (`standby_in_tx`), why it needs the
/// primary, and whether it makes a transaction SERIALIZABLE. Against the
/// built-in (pre-refresh) lists of server-local views and session settings.
fn placement_table() -> Vec<(&'static str, Placement)> {
    const SL: Option<&str> = Some(reason::SERVER_LOCAL);
    const ADV: Option<&str> = Some(reason::ADVISORY_LOCK);
    const XID: Option<&str> = Some(reason::TRANSACTION_ID);
    const LN: Option<&str> = Some(reason::LISTEN_NOTIFY);
    const SEQ: Option<&str> = Some(reason::SEQUENCE);
    const SER: Option<&str> = Some(reason::SERIALIZABLE);
    const TEMP: Option<&str> = Some(reason::TEMPORARY);
    const READ: Placement = (true, true, None, false);
    const IN_TX: Placement = (false, true, None, false);
    const WRITE: Placement = (false, false, None, false);
    const LOCAL: Placement = (false, false, SL, false);
    const SERIAL: Placement = (false, false, SER, true);
    vec![
        // server-local views, qualified or not, anywhere in the tree
        ("SELECT * FROM pg_stat_activity", LOCAL),
        ("SELECT * FROM pg_catalog.pg_stat_replication", LOCAL),
        ("SELECT * FROM pg_stat_wal_receiver", LOCAL),
        ("SELECT * FROM pg_prepared_xacts", LOCAL),
        ("SELECT slot_name FROM pg_replication_slots", LOCAL),
        (
            "SELECT * FROM pg_locks l JOIN pg_class c ON c.oid = l.relation",
            LOCAL,
        ),
        (
            "SELECT name, setting FROM pg_settings WHERE name = 'work_mem'",
            LOCAL,
        ),
        ("SELECT relname, n_tup_ins FROM pg_stat_user_tables", LOCAL),
        ("SELECT * FROM pg_stat_database", LOCAL),
        ("SELECT * FROM pg_file_settings", LOCAL),
        ("SELECT * FROM pg_hba_file_rules", LOCAL),
        ("SELECT * FROM pg_cursors", LOCAL),
        ("SELECT * FROM pg_prepared_statements", LOCAL),
        (
            "SELECT 1 WHERE EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = 1)",
            LOCAL,
        ),
        (
            "WITH a AS (SELECT * FROM pg_locks) SELECT count(*) FROM a",
            LOCAL,
        ),
        (
            "SELECT * FROM t JOIN LATERAL (SELECT * FROM pg_stat_ssl) s ON true",
            LOCAL,
        ),
        ("EXPLAIN SELECT * FROM pg_locks", LOCAL),
        ("DECLARE c CURSOR FOR SELECT * FROM pg_stat_activity", LOCAL),
        ("SELECT * FROM pg_sequences", (false, false, SEQ, false)),
        // ... not a user relation of that name in another schema, named so
        ("SELECT * FROM app.pg_locks", READ),
        // server-local functions
        ("SELECT pg_is_in_recovery()", LOCAL),
        ("SELECT pg_catalog.pg_last_wal_replay_lsn()", LOCAL),
        (
            "SELECT pg_last_wal_receive_lsn(), pg_last_xact_replay_timestamp()",
            LOCAL,
        ),
        ("SELECT pg_is_wal_replay_paused()", LOCAL),
        ("SELECT pg_current_wal_lsn()", LOCAL),
        ("SELECT pg_postmaster_start_time()", LOCAL),
        ("SELECT pg_conf_load_time()", LOCAL),
        ("SELECT version()", LOCAL),
        ("SELECT inet_server_addr(), inet_server_port()", LOCAL),
        ("SELECT inet_client_addr()", LOCAL),
        ("SELECT pg_backend_pid()", LOCAL),
        (
            "SELECT pg_relation_size('t'), pg_total_relation_size('t')",
            LOCAL,
        ),
        ("SELECT pg_database_size(current_database())", LOCAL),
        ("SELECT pg_tablespace_location(1663)", LOCAL),
        ("SELECT pg_stat_get_numscans('t'::regclass)", LOCAL),
        ("SELECT * FROM pg_stat_get_activity(NULL)", LOCAL),
        ("SELECT * FROM pg_lock_status()", LOCAL),
        ("SELECT txid_current_snapshot()", LOCAL),
        ("SELECT pg_current_snapshot()", LOCAL),
        ("SELECT pg_blocking_pids(1)", LOCAL),
        ("SELECT pg_jit_available()", LOCAL),
        (
            "SELECT a FROM t WHERE b > pg_postmaster_start_time()",
            LOCAL,
        ),
        // ... and what stays on a standby
        (
            "SELECT pg_size_pretty(1024::bigint), pg_wal_lsn_diff('0/2', '0/1')",
            READ,
        ),
        (
            "SELECT * FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace",
            READ,
        ),
        ("SELECT table_name FROM information_schema.tables", READ),
        (
            "SELECT * FROM information_schema.columns WHERE table_name = 't'",
            READ,
        ),
        ("SELECT * FROM pg_roles", READ),
        ("SELECT * FROM pg_stats", READ),
        (
            "SELECT has_table_privilege('t', 'select'), pg_get_viewdef('v'::regclass)",
            READ,
        ),
        (
            "SELECT current_database(), current_user, pg_my_temp_schema()",
            READ,
        ),
        // SHOW and current_setting: settings that follow the session
        ("SHOW search_path", READ),
        ("SHOW TIME ZONE", READ),
        ("SHOW work_mem", READ),
        ("SHOW DateStyle", READ),
        ("SHOW app.custom", READ),
        ("SHOW default_transaction_isolation", READ),
        ("SELECT current_setting('search_path')", READ),
        (
            "SELECT current_setting('TimeZone'), current_setting('work_mem', true)",
            READ,
        ),
        ("SELECT pg_catalog.current_setting('app.user', true)", READ),
        ("SHOW transaction_read_only", LOCAL),
        ("SHOW in_hot_standby", LOCAL),
        ("SHOW ALL", LOCAL),
        ("SHOW port", LOCAL),
        ("SHOW server_version", LOCAL),
        ("SHOW hot_standby_feedback", LOCAL),
        ("SHOW max_connections", LOCAL),
        ("SHOW TRANSACTION ISOLATION LEVEL", LOCAL),
        ("SHOW transaction_deferrable", LOCAL),
        ("SHOW no_such_setting", LOCAL),
        ("SELECT current_setting('transaction_read_only')", LOCAL),
        ("SELECT current_setting('IN_HOT_STANDBY')", LOCAL),
        ("SELECT current_setting('port')", LOCAL),
        ("SELECT current_setting('data_directory', true)", LOCAL),
        ("SELECT current_setting(name) FROM t", LOCAL),
        ("SELECT current_setting('search_' || 'path')", LOCAL),
        ("SELECT current_setting('search_path'::text)", LOCAL),
        ("SELECT current_setting(lower('PORT'))", LOCAL),
        // advisory locks
        ("SELECT pg_advisory_lock(1)", (false, false, ADV, false)),
        (
            "SELECT pg_try_advisory_lock_shared(1, 2)",
            (false, false, ADV, false),
        ),
        (
            "SELECT pg_advisory_xact_lock(1)",
            (false, false, ADV, false),
        ),
        (
            "SELECT pg_try_advisory_xact_lock_shared(1)",
            (false, false, ADV, false),
        ),
        ("SELECT pg_advisory_unlock(1)", (false, false, ADV, false)),
        (
            "SELECT pg_advisory_unlock_all()",
            (false, false, ADV, false),
        ),
        (
            "SELECT a FROM t WHERE pg_try_advisory_xact_lock(a)",
            (false, false, ADV, false),
        ),
        // transaction ids
        ("SELECT txid_current()", (false, false, XID, false)),
        ("SELECT pg_current_xact_id()", (false, false, XID, false)),
        (
            "SELECT txid_current_if_assigned()",
            (false, false, XID, false),
        ),
        (
            "SELECT pg_catalog.pg_current_xact_id_if_assigned()",
            (false, false, XID, false),
        ),
        // LISTEN / NOTIFY
        ("LISTEN chan", (false, false, LN, false)),
        ("UNLISTEN *", (false, false, LN, false)),
        ("UNLISTEN chan", (false, false, LN, false)),
        ("NOTIFY chan", (false, false, LN, false)),
        ("NOTIFY chan, 'payload'", (false, false, LN, false)),
        ("SELECT pg_notify('chan', 'x')", (false, false, LN, false)),
        // cursors
        (
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
            (false, false, Some(reason::WITH_HOLD), false),
        ),
        (
            "DECLARE c NO SCROLL CURSOR WITH HOLD FOR SELECT * FROM t",
            (false, false, Some(reason::WITH_HOLD), false),
        ),
        ("DECLARE c CURSOR FOR SELECT * FROM t", IN_TX),
        (
            "DECLARE c SCROLL CURSOR WITHOUT HOLD FOR SELECT a FROM t ORDER BY a",
            IN_TX,
        ),
        ("DECLARE c BINARY CURSOR FOR VALUES (1)", IN_TX),
        (
            "DECLARE c CURSOR FOR SELECT nextval('s')",
            (false, false, SEQ, false),
        ),
        ("DECLARE c CURSOR FOR SELECT * FROM t FOR UPDATE", WRITE),
        ("DECLARE c CURSOR FOR SELECT volatile_f()", WRITE),
        ("FETCH 10 FROM c", IN_TX),
        ("FETCH ALL c", IN_TX),
        ("FETCH PRIOR FROM c", IN_TX),
        ("MOVE NEXT IN c", IN_TX),
        ("MOVE ABSOLUTE 5 FROM c", IN_TX),
        ("CLOSE c", IN_TX),
        ("CLOSE ALL", IN_TX),
        // sequences
        ("SELECT nextval('s')", (false, false, SEQ, false)),
        ("SELECT setval('s', 1)", (false, false, SEQ, false)),
        ("SELECT currval('s')", (false, false, SEQ, false)),
        ("SELECT lastval()", (false, false, SEQ, false)),
        (
            "SELECT pg_sequence_last_value('s')",
            (false, false, SEQ, false),
        ),
        // temporary relations
        ("SELECT * FROM pg_temp.x", (false, false, TEMP, false)),
        ("CREATE TEMP TABLE x (a int)", (false, false, TEMP, false)),
        // transaction control
        ("BEGIN", IN_TX),
        ("BEGIN READ ONLY", IN_TX),
        ("BEGIN READ WRITE", IN_TX),
        (
            "START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
            IN_TX,
        ),
        ("COMMIT", IN_TX),
        ("END", IN_TX),
        ("COMMIT AND CHAIN", IN_TX),
        ("ROLLBACK", IN_TX),
        ("ABORT", IN_TX),
        ("ROLLBACK AND NO CHAIN", IN_TX),
        ("SAVEPOINT a", IN_TX),
        ("RELEASE SAVEPOINT a", IN_TX),
        ("RELEASE a", IN_TX),
        ("ROLLBACK TO SAVEPOINT a", IN_TX),
        ("ROLLBACK TO a", IN_TX),
        ("PREPARE TRANSACTION 'g'", WRITE),
        ("COMMIT PREPARED 'g'", WRITE),
        ("ROLLBACK PREPARED 'g'", WRITE),
        // settings
        ("SET LOCAL work_mem = '1MB'", IN_TX),
        ("SET LOCAL search_path = app", IN_TX),
        ("SET work_mem = '1MB'", IN_TX),
        ("SET search_path TO app, public", IN_TX),
        ("SET TIME ZONE 'UTC'", IN_TX),
        ("SET ROLE admin", IN_TX),
        ("RESET work_mem", IN_TX),
        ("SET search_path TO DEFAULT", IN_TX),
        ("RESET ALL", IN_TX),
        ("SET default_transaction_read_only = on", IN_TX),
        (
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
            IN_TX,
        ),
        ("SET TRANSACTION READ ONLY", IN_TX),
        ("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ", IN_TX),
        (
            "SET TRANSACTION ISOLATION LEVEL READ COMMITTED, DEFERRABLE",
            IN_TX,
        ),
        ("SET transaction_read_only = on", IN_TX),
        ("SET LOCAL transaction_deferrable = on", IN_TX),
        ("SET transaction_isolation = 'repeatable read'", IN_TX),
        ("SET TRANSACTION READ WRITE", WRITE),
        (
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ WRITE",
            WRITE,
        ),
        ("SET transaction_read_only = off", WRITE),
        ("SET LOCAL transaction_read_only TO DEFAULT", WRITE),
        // serializable
        ("BEGIN ISOLATION LEVEL SERIALIZABLE", SERIAL),
        (
            "begin transaction isolation level serializable, read only, deferrable",
            SERIAL,
        ),
        (
            "START TRANSACTION READ ONLY ISOLATION LEVEL SERIALIZABLE DEFERRABLE",
            SERIAL,
        ),
        (
            "START TRANSACTION ISOLATION LEVEL REPEATABLE READ, ISOLATION LEVEL SERIALIZABLE",
            SERIAL,
        ),
        (
            "START TRANSACTION ISOLATION LEVEL SERIALIZABLE, ISOLATION LEVEL REPEATABLE READ",
            IN_TX,
        ),
        ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", SERIAL),
        (
            "SET TRANSACTION READ ONLY, ISOLATION LEVEL SERIALIZABLE",
            SERIAL,
        ),
        ("SET transaction_isolation = serializable", SERIAL),
        ("SET LOCAL transaction_isolation TO 'SERIALIZABLE'", SERIAL),
        ("SET SESSION transaction_isolation = 'serializable'", SERIAL),
        ("RESET transaction_isolation", SERIAL),
        ("SET transaction_isolation TO DEFAULT", SERIAL),
        (
            "SELECT set_config('transaction_isolation', 'serializable', true)",
            SERIAL,
        ),
        (
            "SELECT 1; SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            SERIAL,
        ),
        (
            "SELECT pg_advisory_lock(1); BEGIN ISOLATION LEVEL SERIALIZABLE",
            SERIAL,
        ),
        ("SET default_transaction_isolation = serializable", IN_TX),
        (
            "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            IN_TX,
        ),
        // writes and everything else
        ("INSERT INTO t VALUES (1)", WRITE),
        ("UPDATE t SET a = a + 1", WRITE),
        (
            "WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x",
            WRITE,
        ),
        ("SELECT * FROM t FOR SHARE", WRITE),
        ("SELECT volatile_f()", WRITE),
        ("SELECT * INTO new_t FROM t", WRITE),
        ("CREATE TABLE t2 (a int)", WRITE),
        ("LOCK TABLE t IN ACCESS SHARE MODE", WRITE),
        ("VACUUM", WRITE),
        ("COPY t TO STDOUT", WRITE),
        ("DO $$ BEGIN END $$", WRITE),
        ("CALL p()", WRITE),
        ("DISCARD ALL", WRITE),
        ("DEALLOCATE ALL", WRITE),
        ("PREPARE p AS SELECT 1", WRITE),
        ("EXECUTE p", WRITE),
        ("LOAD 'auto_explain'", WRITE),
        ("SELECT set_config('search_path', 'app', false)", WRITE),
        ("SELEC 1", WRITE),
        ("SELECT 'a\\'", WRITE),
        // reads
        ("SELECT 1", READ),
        ("SELECT a FROM t WHERE id = $1", READ),
        ("TABLE t", READ),
        ("VALUES (1)", READ),
        ("EXPLAIN SELECT * FROM t", READ),
        ("SELECT stable_f(1)", READ),
        ("", READ),
        // several statements
        ("BEGIN READ ONLY; SELECT 1; COMMIT", IN_TX),
        ("SAVEPOINT a; SELECT 1; RELEASE a", IN_TX),
        (
            "SAVEPOINT a; SELECT nextval('s')",
            (false, false, SEQ, false),
        ),
        ("SELECT pg_is_in_recovery(); SELECT nextval('s')", LOCAL),
        (
            "DECLARE c CURSOR FOR SELECT 1; FETCH 1 FROM c; CLOSE c",
            IN_TX,
        ),
        ("SELECT 1; SELECT 2", READ),
        ("SELECT 1; INSERT INTO t VALUES (1)", WRITE),
    ]
}

#[test]
fn placement_of_every_statement_kind() {
    let c = classifier();
    let cases = placement_table();
    let mut failures = Vec::new();
    for (sql, want) in &cases {
        for round in 0..2 {
            let got = placement(&c.analyze(sql));
            if got != *want {
                failures.push(format!(
                    "round {round}: {sql:?}\n   want {want:?}\n    got {got:?}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// `serializable` never leaves the transaction effect behind: the READ ONLY
/// of a serializable BEGIN is still reported.
#[test]
fn serializable_begin_keeps_its_transaction_effect() {
    let c = classifier();
    let a = c.analyze("BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE");
    assert_eq!(a.tx, TxEffect::Begin { read_only: true });
    assert!(a.serializable && !a.read_only && !a.standby_in_tx);
    assert_eq!(a.primary_reason, Some(reason::SERIALIZABLE));
    let a = c.analyze("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY");
    assert_eq!(a.tx, TxEffect::SetTransactionReadOnly);
    assert!(a.serializable);
}

#[test]
fn default_serializable_is_readable() {
    let c = classifier();
    for (sql, want) in [
        ("SET default_transaction_isolation = serializable", Some(true)),
        ("SET default_transaction_isolation TO 'SERIALIZABLE'", Some(true)),
        ("set default_transaction_isolation = 'read committed'", Some(false)),
        (
            "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            Some(true),
        ),
        (
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY, ISOLATION LEVEL SERIALIZABLE",
            Some(true),
        ),
        (
            "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ",
            Some(false),
        ),
        (
            "SELECT set_config('default_transaction_isolation', 'serializable', false)",
            Some(true),
        ),
        (
            "SELECT pg_catalog.set_config('default_transaction_isolation', 'repeatable read', false)",
            Some(false),
        ),
        ("SET default_transaction_read_only = on", None),
        ("SET search_path = a", None),
        ("SET default_transaction_isolation TO DEFAULT", None),
    ] {
        let a = c.analyze(sql);
        let got = a.session.iter().find_map(|e| e.default_serializable());
        assert_eq!(got, want, "{sql}");
    }
}

#[test]
fn startup_options_are_read_like_postgres() {
    for (options, want) in [
        ("-c default_transaction_isolation=serializable", Some(true)),
        ("--default-transaction-isolation=serializable", Some(true)),
        (
            "-c geqo=off -c default_transaction_isolation=serializable",
            Some(true),
        ),
        (
            "-c default_transaction_isolation=read\\ committed",
            Some(false),
        ),
        ("-c search_path=a\\ b", None),
        ("", None),
    ] {
        assert_eq!(startup_options_serializable(options), want, "{options:?}");
    }
}

/// A catalogue as a refresh installs it: sequences, unlogged tables, views
/// and session settings are derived, SQL function bodies are read.
fn refreshed_classifier() -> (Arc<FunctionCatalog>, Classifier) {
    let catalog = Arc::new(FunctionCatalog::new());
    catalog.install(catalogue_content(true));
    let c = Classifier::new(catalog.clone());
    (catalog, c)
}

fn catalogue_content(with_unlogged: bool) -> CatalogContent {
    let rel = |name: &str, kind| CatalogRelation {
        schema: "public".into(),
        name: name.into(),
        kind,
    };
    let view = |schema: &str, name: &str, definition: &str| ViewDefinition {
        schema: schema.into(),
        name: name.into(),
        definition: definition.into(),
    };
    let body = |name: &str, text: &str| SqlBody {
        schema: "public".into(),
        name: name.into(),
        text: text.into(),
        atomic: false,
    };
    let mut relations = vec![rel("s", RelationKind::Sequence)];
    if with_unlogged {
        relations.push(rel("ul", RelationKind::Unlogged));
    }
    CatalogContent {
        functions: vec![
            user("public", "lies", Volatility::Stable),
            user("public", "calls_lies", Volatility::Immutable),
            user("public", "honest", Volatility::Stable),
        ],
        sql_bodies: vec![
            body("lies", "SELECT nextval('s')::int"),
            body("calls_lies", "SELECT lies() + 1"),
            body("honest", "SELECT a FROM t WHERE id = $1"),
        ],
        relations,
        views: vec![
            view(
                "pg_catalog",
                "pg_locks",
                " SELECT l.locktype FROM pg_lock_status() l(locktype);",
            ),
            view(
                "app",
                "over_locks",
                " SELECT count(*) AS count FROM pg_locks;",
            ),
            view("app", "plain", " SELECT t.a FROM t;"),
            view("app", "over_ul", " SELECT ul.a FROM ul;"),
        ],
        session_settings: vec!["search_path".into(), "work_mem".into(), "TimeZone".into()],
        ..Default::default()
    }
}

#[test]
fn derived_relations_settings_and_function_bodies() {
    let (_, c) = refreshed_classifier();
    const SL: Option<&str> = Some(reason::SERVER_LOCAL);
    for (sql, want) in [
        (
            "SELECT * FROM s",
            (false, false, Some(reason::SEQUENCE), false),
        ),
        (
            "SELECT last_value FROM public.s",
            (false, false, Some(reason::SEQUENCE), false),
        ),
        ("SELECT * FROM other.s", (true, true, None, false)),
        (
            "SELECT * FROM ul",
            (false, false, Some(reason::UNLOGGED), false),
        ),
        (
            "SELECT * FROM t JOIN public.ul USING (a)",
            (false, false, Some(reason::UNLOGGED), false),
        ),
        (
            "SELECT * FROM app.over_ul",
            (false, false, Some(reason::UNLOGGED), false),
        ),
        ("SELECT * FROM pg_locks", (false, false, SL, false)),
        ("SELECT * FROM app.over_locks", (false, false, SL, false)),
        ("SELECT * FROM over_locks", (false, false, SL, false)),
        ("SELECT * FROM app.plain", (true, true, None, false)),
        // Derived: pg_stat_activity was not in this catalogue.
        ("SELECT * FROM pg_stat_activity", (true, true, None, false)),
        ("SHOW work_mem", (true, true, None, false)),
        (
            "SELECT current_setting('TIMEZONE')",
            (true, true, None, false),
        ),
        ("SHOW DateStyle", (false, false, SL, false)),
        ("SHOW app.custom", (true, true, None, false)),
        ("SELECT lies()", (false, false, None, false)),
        ("SELECT calls_lies()", (false, false, None, false)),
        ("SELECT public.calls_lies()", (false, false, None, false)),
        ("SELECT honest(1)", (true, true, None, false)),
    ] {
        assert_eq!(placement(&c.analyze(sql)), want, "{sql}");
    }
}

#[test]
fn derived_changes_invalidate_cached_answers() {
    let (catalog, c) = refreshed_classifier();
    assert!(!c.analyze("SELECT * FROM ul").read_only);
    let generation = catalog.generation();
    assert!(!catalog.install(catalogue_content(true)), "same content");
    assert_eq!(catalog.generation(), generation);
    assert!(catalog.install(catalogue_content(false)));
    assert_ne!(catalog.generation(), generation);
    assert!(c.analyze("SELECT * FROM ul").read_only);
    assert!(c.analyze("SELECT * FROM app.over_ul").read_only);
}

/// `current_setting`'s answer depends on its literal: texts that differ
/// only there do not share a cached answer.
#[test]
fn current_setting_literals_are_not_shape_cached() {
    let c = classifier();
    assert!(c.analyze("SELECT current_setting('search_path')").read_only);
    assert!(!c.analyze("SELECT current_setting('port')").read_only);
    assert!(c.analyze("SELECT current_setting('work_mem')").read_only);
    assert!(
        !c.analyze("SELECT current_setting('transaction_read_only')")
            .read_only
    );
}

#[test]
fn classifier_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Classifier>();
    check::<Analysis>();
    check::<FunctionCatalog>();
}

#[test]
fn texts_differing_in_literals_share_one_entry() {
    let c = classifier();
    let a = c.analyze("SELECT abalance FROM pgbench_accounts WHERE aid = 17");
    let b = c.analyze("SELECT abalance FROM pgbench_accounts WHERE aid = 99 -- trace=abc");
    assert!(a.read_only && Arc::ptr_eq(&a, &b));
    // Literal-sensitive results are never shared.
    let x = c.analyze("SET application_name = 'x'");
    let y = c.analyze("SET application_name = 'y'");
    assert_ne!(x, y);
}

/// Texts that differ only in what their literals contain share one cache
/// entry and one answer, whatever the literals hold (quotes, comment
/// markers, dollar signs, semicolons, SQL); a backslash in a plain string
/// makes the text depend on standard_conforming_strings: primary.
#[test]
fn literal_contents_never_change_the_answer() {
    let c = classifier();
    let pieces = [
        "'",
        "''",
        "--",
        "/*",
        "*/",
        "$$",
        "$q$",
        ";",
        "DELETE FROM t",
        "é",
        "\"",
        "\n",
        "\\",
        " ",
        "nextval(",
        "0x1",
    ];
    let templates = [
        "SELECT a FROM t WHERE b = {s} AND id = {n}",
        "SELECT {s}, {n} /* {c} */ FROM t",
        "INSERT INTO t VALUES ({n}, {s})",
        "SELECT * FROM t WHERE v LIKE {s} FOR UPDATE",
        "SELECT {d}, {e}, {n}.5e3",
    ];
    let mut seed: u64 = 0x5eed;
    let mut next = move |n: usize| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as usize % n
    };
    for template in templates {
        let mut first: Option<Arc<Analysis>> = None;
        for _ in 0..200 {
            let mut content = String::new();
            for _ in 0..next(6) {
                content.push_str(pieces[next(pieces.len())]);
            }
            let quoted = format!("'{}'", content.replace('\'', "''"));
            let comment = content.replace("*/", "").replace("/*", "");
            let dollar = format!("$x${}$x$", content.replace("$x$", ""));
            let escaped = format!("E'{}'", content.replace('\\', "\\\\").replace('\'', "\\'"));
            let sql = template
                .replace("{s}", &quoted)
                .replace("{c}", &comment)
                .replace("{d}", &dollar)
                .replace("{e}", &escaped)
                .replace("{n}", &next(100000).to_string());
            let a = c.analyze(&sql);
            if template.contains("{s}") && quoted.contains('\\') {
                assert!(!a.read_only, "{sql}");
                continue;
            }
            match &first {
                None => first = Some(a),
                Some(f) => assert!(Arc::ptr_eq(f, &a), "{sql}\n{a:?} vs {f:?}"),
            }
        }
    }
}

#[test]
fn learned_writes_go_to_the_primary() {
    let c = classifier();
    assert!(c.analyze("SELECT lies_f(1)").read_only);
    c.learn_writes("SELECT lies_f(1)");
    assert!(!c.analyze("SELECT lies_f(1)").read_only);
    // Same shape, other literal.
    assert!(!c.analyze("SELECT lies_f(2)").read_only);
    assert!(c.analyze("SELECT stable_f(2)").read_only);
    // A text without literals.
    assert!(c.analyze("SELECT lies_f(a) FROM t").read_only);
    c.learn_writes("SELECT lies_f(a) FROM t");
    assert!(!c.analyze("SELECT lies_f(a) FROM t").read_only);
}

#[test]
fn catalogue_changes_invalidate_cached_answers() {
    let catalog = Arc::new(FunctionCatalog::new());
    let c = Classifier::new(catalog.clone());
    assert!(!c.analyze("SELECT later_f()").read_only);
    catalog.replace([user("public", "later_f", Volatility::Stable)], Vec::new());
    assert!(c.analyze("SELECT later_f()").read_only);
    catalog.replace(
        [user("public", "later_f", Volatility::Volatile)],
        Vec::new(),
    );
    assert!(!c.analyze("SELECT later_f()").read_only);
}

#[test]
fn long_statements_are_parsed_off_the_callers_stack() {
    let c = classifier();
    let cols: Vec<String> = (0..400).map(|i| format!("t.c{i} AS a{i}")).collect();
    let select = format!("SELECT {} FROM t WHERE t.id = $1", cols.join(", "));
    assert!(c.analyze(&select).read_only);
    let locked = format!("{select} FOR UPDATE");
    assert!(!c.analyze(&locked).read_only);
    let set = format!(
        "SET search_path = {}",
        cols.iter().map(|_| "s").collect::<Vec<_>>().join(", ")
    );
    assert!(matches!(
        c.analyze(&set).session.as_slice(),
        [SessionEffect::Set { .. }]
    ));
}

#[test]
fn large_bulk_writes_skip_the_parser_but_not_session_effects() {
    let c = classifier();
    let rows = vec!["(1, 'x', now())"; 3000].join(", ");
    assert_eq!(*c.analyze(&format!("INSERT INTO t VALUES {rows}")), rw());
    let locked = format!("INSERT INTO t VALUES {rows}; SELECT pg_advisory_lock(1)");
    let want = Analysis {
        primary_reason: Some(reason::ADVISORY_LOCK),
        ..pin("session advisory lock")
    };
    assert_eq!(*c.analyze(&locked), want);
    let set = format!("INSERT INTO t VALUES {rows}; SET search_path = a");
    assert_eq!(c.analyze(&set).session.len(), 1);
}

#[test]
fn default_read_only_value_is_readable() {
    let c = classifier();
    for (sql, want) in [
        ("SET default_transaction_read_only = on", Some(true)),
        ("SET default_transaction_read_only TO off", Some(false)),
        (
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
            Some(false),
        ),
        ("SET search_path = a", None),
    ] {
        let a = c.analyze(sql);
        assert_eq!(
            a.session.first().and_then(|e| e.default_read_only()),
            want,
            "{sql}"
        );
    }
}

#[test]
fn hostile_input_does_not_panic() {
    let c = classifier();
    // Deep trees: either classified or rejected, never a crash.
    let parens = format!("SELECT {}1{}", "(".repeat(5000), ")".repeat(5000));
    assert!(c.analyze(&parens).read_only);
    // Deeper than prost's decoding limit: rejected (primary), no crash.
    let calls = format!("SELECT {}1{}", "abs(".repeat(3000), ")".repeat(3000));
    assert!(!c.analyze(&calls).read_only);
    let subqueries = format!("SELECT {}1{}", "(SELECT ".repeat(1000), ")".repeat(1000));
    assert!(!c.analyze(&subqueries).read_only);
    // Deep left-recursive trees, also below the inline-parse size.
    for n in [120, 200, 3_000, 12_000] {
        let plus = format!("SELECT 1{}", "+a".repeat(n));
        assert!(!c.analyze(&plus).read_only, "{n}");
        let unary = format!("SELECT {}a", "-+".repeat(n));
        assert!(!c.analyze(&unary).read_only, "{n}");
    }
    // Too large to analyse: primary, and the session is pinned.
    let huge = format!("SELECT 1{}", " ".repeat(2 << 20));
    let a = c.analyze(&huge);
    assert!(!a.read_only && matches!(a.session.as_slice(), [SessionEffect::Pin { .. }]));
    let texts = [
        "\0",
        "SELECT '\u{1F600}'",
        "SELECT $$",
        "$1",
        "SELECT 1 /* /* */",
        "\u{feff}SELECT 1",
    ];
    for t in texts {
        let a = c.analyze(t);
        assert!(!a.read_only || t == "SELECT '\u{1F600}'", "{t:?} -> {a:?}");
    }
}
