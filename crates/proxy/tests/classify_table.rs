//! Table test of the SQL classifier: statement texts (and multi-statement
//! texts) with the exact `Analysis` expected, against a function catalogue
//! filled in here. Pure: no database.

use std::sync::Arc;

use pgha_proxy::classify::{
    Analysis, Classifier, FunctionCatalog, SessionEffect, TxEffect, UserFunction, Volatility,
};

fn ro() -> Analysis {
    Analysis {
        read_only: true,
        tx: TxEffect::None,
        session: Vec::new(),
        chain: false,
    }
}

fn rw() -> Analysis {
    Analysis {
        read_only: false,
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
        ("SHOW ALL", ro()),
        ("SELECT * FROM t TABLESAMPLE SYSTEM (10)", ro()),
        ("SELECT * FROM pg_stat_activity", ro()),
        ("WITH x AS (SELECT 1) SELECT * FROM x", ro()),
        ("SELECT a FROM t WHERE b = (SELECT max(b) FROM t)", ro()),
        ("SELECT count(*), max(a) FROM t GROUP BY b HAVING sum(c) > 1", ro()),
        ("SELECT now(), version(), pg_is_in_recovery(), current_setting('TimeZone')", ro()),
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
        ("PREPARE p AS SELECT 1", pin("SQL PREPARE")),
        ("LOAD 'auto_explain'", pin("LOAD")),
        // writes and utilities
        ("INSERT INTO t VALUES (1)", rw()),
        ("UPDATE t SET a = a + 1", rw()),
        ("DELETE FROM t", rw()),
        ("MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DELETE", rw()),
        ("CREATE TABLE t2 (a int)", rw()),
        ("COPY t TO STDOUT", rw()),
        ("COPY (SELECT 1) TO STDOUT", rw()),
        ("EXECUTE p", rw()),
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
    for (sql, want) in &cases {
        // Twice: the cached answer must equal the fresh one.
        for round in 0..2 {
            let got = c.analyze(sql);
            if *got != *want {
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
    assert_eq!(*c.analyze(&locked), pin("session advisory lock"));
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
