//! The classifier against real PostgreSQL 15 servers: `FunctionCatalog::refresh`
//! reads user function (and operator) volatility from `pg_proc`, and what the
//! classifier calls read-only is accepted by a hot standby (while what it
//! sends to the primary because it writes is refused there); what it calls
//! server-local really answers differently on the standby, the derived sets
//! equal the built-in fallbacks, SQL function bodies are checked, and
//! statements it lets run in a READ ONLY transaction on a standby have the
//! primary's outcome there.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use pgha_proxy::classify::{
    allowed_builtins, builtin_server_local_views, builtin_session_settings, reason, Classifier,
    FunctionCatalog, Volatility,
};
use pgha_testkit::pg::{PgServer, SUPERUSER_PASSWORD};

const SETUP: &str = "\
    CREATE SCHEMA app; \
    CREATE TABLE t (id int PRIMARY KEY, a int, b int, uid int); \
    CREATE TABLE u (id int PRIMARY KEY, v text); \
    INSERT INTO t SELECT g, g, g, g FROM generate_series(1, 10) g; \
    INSERT INTO u SELECT g, g::text FROM generate_series(1, 10) g; \
    CREATE SEQUENCE s; \
    CREATE FUNCTION stable_f(int) RETURNS int LANGUAGE sql STABLE AS 'SELECT $1'; \
    CREATE FUNCTION app.imm_f(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT $1 + 1'; \
    CREATE FUNCTION volatile_f() RETURNS int LANGUAGE sql VOLATILE AS 'SELECT 1'; \
    CREATE FUNCTION lies_f() RETURNS bigint LANGUAGE sql STABLE AS 'SELECT nextval(''s'')'; \
    CREATE FUNCTION eq_v(int, int) RETURNS bool LANGUAGE sql VOLATILE AS 'SELECT $1 = $2'; \
    CREATE OPERATOR === (LEFTARG = int, RIGHTARG = int, FUNCTION = eq_v); \
    CREATE FUNCTION plpgsql_lies() RETURNS bigint STABLE LANGUAGE plpgsql \
      AS 'BEGIN RETURN nextval(''s''); END'; \
    CREATE FUNCTION f() RETURNS int STABLE LANGUAGE sql AS 'SELECT nextval(''s'')::int'; \
    CREATE FUNCTION calls_f() RETURNS int IMMUTABLE LANGUAGE sql AS 'SELECT f() + 1'; \
    CREATE FUNCTION calls_calls_f(int) RETURNS int STABLE LANGUAGE sql \
      RETURN (SELECT calls_f() + $1); \
    CREATE FUNCTION atomic_lies() RETURNS int STABLE LANGUAGE sql \
      BEGIN ATOMIC SELECT nextval('s')::int; END; \
    CREATE FUNCTION honest_f(int) RETURNS int STABLE LANGUAGE sql \
      AS 'SELECT a FROM t WHERE id = $1 UNION ALL SELECT stable_f($1) LIMIT 1'; \
    CREATE FUNCTION honest_atomic(int) RETURNS int STABLE LANGUAGE sql \
      BEGIN ATOMIC SELECT honest_f($1) + 1; END; \
    CREATE UNLOGGED TABLE ul (a int); \
    CREATE VIEW app.activity AS SELECT pid, backend_type FROM pg_stat_activity; \
    CREATE VIEW app.plain AS SELECT a FROM t; \
    SELECT pg_create_physical_replication_slot('slot1');";

/// Statements the classifier must call read-only; each must run on a standby.
const READ_ONLY: &[&str] = &[
    "SELECT 1",
    "SELECT a, b FROM t WHERE id = 5 ORDER BY a LIMIT 10",
    "TABLE t",
    "VALUES (1), (2)",
    "SHOW search_path",
    "WITH x AS (SELECT 1) SELECT * FROM x",
    "SELECT count(*), max(a) FROM t GROUP BY b HAVING sum(b) > 1",
    "SELECT now(), current_setting('TimeZone'), current_setting('search_path')",
    "SELECT * FROM t JOIN u ON u.id = t.uid AND gen_random_uuid() IS NOT NULL",
    "SELECT row_to_json(t), jsonb_build_object('a', 1) FROM t",
    "SELECT * FROM generate_series(1, 3) g",
    "EXPLAIN SELECT * FROM t",
    "EXPLAIN ANALYZE SELECT * FROM t",
    "SELECT stable_f(1), app.imm_f(2)",
    "SELECT pg_wal_lsn_diff('0/2', '0/1'), pg_size_pretty(1024::bigint)",
    "SELECT honest_f(1), honest_atomic(2)",
    "SELECT * FROM app.plain",
    "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace",
    "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
    "SELECT column_name FROM information_schema.columns WHERE table_name = 't'",
    "SELECT rolname FROM pg_roles",
    "SELECT * FROM pg_stats",
    "SELECT viewname FROM pg_views WHERE schemaname = 'app'",
    "SELECT has_table_privilege('t', 'select'), pg_get_viewdef('app.plain'::regclass)",
    "SHOW work_mem",
    "SHOW TIME ZONE",
    "SELECT current_setting('app.custom', true)",
    "SELECT rank() OVER (PARTITION BY a ORDER BY b) FROM t",
    "SELECT 1; SELECT 2",
    "",
];

/// Statements the classifier sends to the primary because they write (or
/// would on a standby): a standby refuses each.
const REFUSED_BY_STANDBY: &[&str] = &[
    "SELECT * FROM t FOR UPDATE",
    "SELECT * FROM t FOR KEY SHARE",
    "WITH x AS (DELETE FROM t WHERE id = 0 RETURNING *) SELECT * FROM x",
    "SELECT nextval('s')",
    "SELECT setval('s', 10)",
    "SELECT txid_current()",
    "SELECT pg_current_xact_id()",
    "SELECT * INTO new_t FROM t",
    "EXPLAIN ANALYZE DELETE FROM t WHERE id = 0",
    "SELECT lies_f()",
    "SELECT plpgsql_lies()",
    "SELECT pg_notify('c', 'x')",
    "SELECT f()",
    "SELECT calls_calls_f(1)",
    "SELECT atomic_lies()",
];

/// Statements the classifier sends to the primary as server-local state,
/// each with the reason it gives; each answers differently on the standby
/// (compared as text, waited for with a deadline: statistics are flushed
/// asynchronously).
const DIFFERS_ON_STANDBY: &[&str] = &[
    "SELECT pg_is_in_recovery()",
    "SELECT count(*) FROM pg_stat_replication",
    "SELECT count(*) FROM pg_stat_wal_receiver",
    "SELECT count(*) FROM pg_replication_slots",
    "SELECT pid FROM pg_stat_activity WHERE pid = pg_backend_pid()",
    "SELECT string_agg(backend_type, ',' ORDER BY backend_type) FROM app.activity",
    "SELECT n_tup_ins FROM pg_stat_user_tables WHERE relname = 't'",
    "SELECT setting FROM pg_settings WHERE name = 'transaction_read_only'",
    "SELECT pid FROM pg_locks WHERE pid = pg_backend_pid() LIMIT 1",
    "SHOW transaction_read_only",
    "SHOW in_hot_standby",
    "SHOW ALL",
    "SELECT current_setting('transaction_read_only')",
    "SELECT current_setting('in_hot_standby')",
    "SELECT pg_postmaster_start_time()",
    "SELECT pg_conf_load_time()",
    "SELECT pg_last_wal_replay_lsn() IS NULL",
    "SELECT pg_last_wal_receive_lsn() IS NULL",
    "SELECT pg_backend_pid()",
    "SELECT inet_server_port()",
    "SELECT pg_stat_get_numscans('t'::regclass)",
    "SHOW port",
    "SHOW data_directory",
];

/// Server-local by nature, though two servers of one test may agree:
/// sizes on disk (hint bits, free space maps, unlogged init forks),
/// server build and configuration, prepared transactions (none here).
const SERVER_DEPENDENT: &[&str] = &[
    "SELECT version()",
    "SELECT pg_relation_size('t'), pg_total_relation_size('t'), pg_database_size('postgres')",
    "SELECT * FROM pg_prepared_xacts",
    "SELECT inet_client_addr()",
    "SELECT pg_current_snapshot(), txid_current_snapshot()",
    "SELECT pg_jit_available()",
    "SHOW server_version",
    "SELECT * FROM pg_file_settings",
    "SELECT * FROM pg_hba_file_rules",
];

/// Statements the classifier lets run inside a READ ONLY transaction on a
/// standby: each gives the same outcome (success, or the same SQLSTATE) on
/// both, run after `BEGIN READ ONLY` (and, with `DECLARE c`, after the
/// cursor's declaration).
const SAME_IN_READ_ONLY_TX: &[&str] = &[
    "SELECT a FROM t WHERE id = 1",
    "SAVEPOINT sp",
    "SET LOCAL work_mem = '8MB'",
    "SET work_mem = '8MB'",
    "RESET work_mem",
    "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
    "SET TRANSACTION READ ONLY",
    "SET transaction_read_only = on",
    "SET LOCAL search_path = app, public",
    "DECLARE c CURSOR FOR SELECT a FROM t ORDER BY id",
    "DECLARE c CURSOR FOR SELECT a FROM t ORDER BY id; FETCH 2 FROM c; MOVE 1 IN c; FETCH 1 FROM c; CLOSE c",
    "SHOW search_path",
    "SELECT honest_f(3)",
    "SAVEPOINT a; RELEASE a; SAVEPOINT b; SELECT 1; ROLLBACK TO b",
    "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
    "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
    "SET default_transaction_isolation = serializable",
    "SET LOCAL transaction_deferrable = on",
    "SET ROLE postgres",
    "RESET ALL",
    "BEGIN",
    "COMMIT AND CHAIN",
    "COMMIT",
    "ROLLBACK",
];

/// ... and statements it does not, that really differ there.
const DIFFERS_IN_READ_ONLY_TX: &[&str] = &[
    "SET TRANSACTION READ WRITE",
    "SET transaction_read_only = off",
    "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
    "SELECT pg_is_in_recovery()",
    "SELECT * FROM ul",
    "LISTEN chan",
    "SELECT pid FROM pg_stat_activity WHERE pid = pg_backend_pid()",
];

fn superuser_client_config(pg: &PgServer) -> tokio_postgres::Config {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(pg.port)
        .user("postgres")
        .password(SUPERUSER_PASSWORD)
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(10));
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalogue_and_standby_agree_with_the_classifier() -> anyhow::Result<()> {
    let (primary, standby) = tokio::task::spawn_blocking(|| -> anyhow::Result<_> {
        let primary = PgServer::start()?;
        primary.psql("postgres", SETUP)?;
        let standby = primary.start_standby()?;
        standby.wait_caught_up(&primary, Duration::from_secs(30))?;
        Ok((primary, standby))
    })
    .await??;

    let (client, conn) = superuser_client_config(&primary)
        .connect(tokio_postgres::NoTls)
        .await
        .context("connect to the primary")?;
    let conn = tokio::spawn(conn);
    let catalog = Arc::new(FunctionCatalog::new());
    let classifier = Classifier::new(catalog.clone());
    assert!(
        !classifier.analyze("SELECT stable_f(1)").read_only,
        "unknown before refresh"
    );
    catalog
        .refresh(&client)
        .await
        .context("refresh the catalogue")?;
    let generation = catalog.generation();
    catalog.refresh(&client).await?;
    assert_eq!(
        catalog.generation(),
        generation,
        "an unchanged catalogue keeps its generation"
    );

    for sql in READ_ONLY {
        assert!(
            classifier.analyze(sql).read_only,
            "{sql:?} should be read-only"
        );
    }
    for sql in [
        "SELECT volatile_f()",
        "SELECT 1 WHERE 1 === 1",
        "SELECT public.volatile_f()",
    ] {
        assert!(
            !classifier.analyze(sql).read_only,
            "{sql:?} should go to the primary"
        );
    }
    for sql in REFUSED_BY_STANDBY {
        let a = classifier.analyze(sql);
        // plpgsql_lies is STABLE in pg_proc and its body is not SQL: only
        // the standby's 25006 reveals it. (lies_f, f, calls_calls_f,
        // atomic_lies: SQL bodies, read by the refresh.)
        assert_eq!(a.read_only, *sql == "SELECT plpgsql_lies()", "{sql:?}");
        assert!(
            !a.standby_in_tx || *sql == "SELECT plpgsql_lies()",
            "{sql:?}"
        );
    }
    for (schema, name, want) in [
        ("public", "f", Volatility::Volatile),
        ("public", "calls_f", Volatility::Volatile),
        ("public", "calls_calls_f", Volatility::Volatile),
        ("public", "atomic_lies", Volatility::Volatile),
        ("public", "lies_f", Volatility::Volatile),
        ("public", "honest_f", Volatility::Stable),
        ("public", "honest_atomic", Volatility::Stable),
        ("public", "stable_f", Volatility::Stable),
        ("app", "imm_f", Volatility::Immutable),
        ("public", "plpgsql_lies", Volatility::Stable),
    ] {
        assert_eq!(
            catalog.volatility(schema, name),
            Some(want),
            "{schema}.{name}"
        );
    }

    // The allow list against pg_proc: statistics and activity functions are
    // parallel-restricted, and a volatile function may read anything; every
    // allowed name that is either was reviewed and is listed here with why.
    let allowed: Vec<String> = allowed_builtins().iter().map(|s| s.to_string()).collect();
    let audit = client
        .query(
            "SELECT p.proname::text, bool_or(p.proparallel <> 's'), bool_or(p.provolatile = 'v') \
             FROM pg_catalog.pg_proc p \
             WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.proname = ANY($1) \
             GROUP BY 1 ORDER BY 1",
            &[&allowed],
        )
        .await?;
    // age(xid): the latest xid (Known limits); current_query,
    // pg_trigger_depth, random: the session's own; current_schema(s),
    // pg_my_temp_schema: only a temporary schema differs, and it pins the
    // session; pg_get_viewdef: the catalogue.
    const RESTRICTED_OK: &[&str] = &[
        "age",
        "current_query",
        "current_schema",
        "current_schemas",
        "pg_get_viewdef",
        "pg_my_temp_schema",
        "pg_trigger_depth",
        "random",
    ];
    // Clocks, randomness and sleeping; the partition tree is the catalogue.
    const VOLATILE_OK: &[&str] = &[
        "clock_timestamp",
        "timeofday",
        "gen_random_uuid",
        "random",
        "pg_sleep",
        "pg_sleep_for",
        "pg_sleep_until",
        "current_query",
        "pg_partition_ancestors",
        "pg_partition_tree",
    ];
    for row in audit {
        let name: String = row.get(0);
        let (restricted, volatile): (bool, bool) = (row.get(1), row.get(2));
        assert!(
            !restricted || RESTRICTED_OK.contains(&name.as_str()),
            "allowed built-in {name} is not parallel-safe: review it"
        );
        assert!(
            !volatile || VOLATILE_OK.contains(&name.as_str()),
            "allowed built-in {name} is VOLATILE: review it"
        );
    }

    // The derived sets equal the built-in fallbacks (PostgreSQL 15).
    let derived = catalog
        .server_local_system_views()
        .context("derived views")?;
    let builtin = builtin_server_local_views();
    assert!(
        derived == builtin,
        "built-in server-local views drifted from the catalogue; derived:\n{}",
        derived
            .iter()
            .map(|(s, n)| format!("(\"{s}\", \"{n}\"),"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    for view in [
        "pg_stat_activity",
        "pg_stat_replication",
        "pg_stat_wal_receiver",
        "pg_prepared_xacts",
        "pg_replication_slots",
        "pg_locks",
        "pg_settings",
        "pg_stat_user_tables",
        "pg_file_settings",
        "pg_hba_file_rules",
    ] {
        assert!(
            derived.contains(&("pg_catalog".to_string(), view.to_string())),
            "{view} not derived as server-local"
        );
    }
    let settings = catalog.session_settings().context("derived settings")?;
    assert!(
        settings == builtin_session_settings(),
        "built-in session settings drifted from pg_settings; derived:\n{}",
        settings
            .iter()
            .map(|n| format!("\"{n}\","))
            .collect::<Vec<_>>()
            .join(" ")
    );

    for sql in DIFFERS_ON_STANDBY.iter().chain(SERVER_DEPENDENT) {
        let a = classifier.analyze(sql);
        assert!(
            !a.read_only && !a.standby_in_tx && a.primary_reason == Some(reason::SERVER_LOCAL),
            "{sql:?} should be server-local: {a:?}"
        );
    }
    for (sql, why) in [
        ("SELECT * FROM ul", reason::UNLOGGED),
        ("SELECT last_value FROM s", reason::SEQUENCE),
        ("SELECT * FROM public.s", reason::SEQUENCE),
    ] {
        let a = classifier.analyze(sql);
        assert!(
            !a.read_only && a.primary_reason == Some(why),
            "{sql:?}: {a:?}"
        );
    }

    let standby_client = connect(&standby).await?;
    for sql in READ_ONLY {
        standby_client
            .simple_query(sql)
            .await
            .with_context(|| format!("standby refused read-only {sql:?}"))?;
    }
    for sql in REFUSED_BY_STANDBY {
        let err = standby_client
            .simple_query(sql)
            .await
            .err()
            .with_context(|| format!("standby accepted {sql:?}"))?;
        let code = err.code().map(|c| c.code().to_owned());
        assert_eq!(code.as_deref(), Some("25006"), "{sql:?}: {err}");
    }

    // The proxy's answer to that 25006.
    classifier.learn_writes("SELECT plpgsql_lies()");
    assert!(!classifier.analyze("SELECT plpgsql_lies()").read_only);

    // Server-local statements really answer differently on the standby.
    let primary_client = connect(&primary).await?;
    for sql in DIFFERS_ON_STANDBY {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let on_primary = answer(&primary_client, sql).await;
            let on_standby = answer(&standby_client, sql).await;
            if on_primary != on_standby {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{sql:?} answers the same on both: {on_primary}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Inside a READ ONLY transaction: what the classifier lets run on a
    // standby has the primary's outcome there; what it does not, differs.
    for sql in SAME_IN_READ_ONLY_TX {
        assert!(classifier.analyze(sql).standby_in_tx, "{sql:?}");
        let on_primary = in_read_only_tx(&primary_client, sql).await?;
        let on_standby = in_read_only_tx(&standby_client, sql).await?;
        assert_eq!(on_primary, on_standby, "{sql:?}");
    }
    // A SERIALIZABLE transaction cannot run on a hot standby.
    for begin in [
        "BEGIN ISOLATION LEVEL SERIALIZABLE",
        "START TRANSACTION READ ONLY, ISOLATION LEVEL SERIALIZABLE, DEFERRABLE",
        "BEGIN ISOLATION LEVEL READ COMMITTED, ISOLATION LEVEL SERIALIZABLE",
    ] {
        let a = classifier.analyze(begin);
        assert!(a.serializable && !a.standby_in_tx, "{begin:?}");
        let mut outcomes = Vec::new();
        for client in [&primary_client, &standby_client] {
            let first = answer(client, begin).await;
            let then = answer(client, "SELECT 1").await;
            client.simple_query("ROLLBACK").await?;
            outcomes.push(format!("{first} / {then}"));
        }
        assert_ne!(outcomes[0], outcomes[1], "{begin:?}");
    }
    for sql in DIFFERS_IN_READ_ONLY_TX {
        assert!(!classifier.analyze(sql).standby_in_tx, "{sql:?}");
        let on_primary = in_read_only_tx(&primary_client, sql).await?;
        let on_standby = in_read_only_tx(&standby_client, sql).await?;
        assert_ne!(on_primary, on_standby, "{sql:?}");
    }

    // A refresh sees a view redefined and a function added since the last
    // one (the view's text is re-read when its rule changes).
    assert!(classifier.analyze("SELECT * FROM app.plain").read_only);
    client
        .batch_execute(
            "CREATE OR REPLACE VIEW app.plain AS SELECT a FROM t WHERE pg_postmaster_start_time() IS NOT NULL; \
             CREATE FUNCTION later_lies() RETURNS int IMMUTABLE LANGUAGE sql RETURN calls_f();",
        )
        .await?;
    let before = catalog.generation();
    catalog.refresh(&client).await?;
    assert_ne!(catalog.generation(), before);
    let a = classifier.analyze("SELECT * FROM app.plain");
    assert!(
        !a.read_only && a.primary_reason == Some(reason::SERVER_LOCAL),
        "{a:?}"
    );
    assert_eq!(
        catalog.volatility("public", "later_lies"),
        Some(Volatility::Volatile)
    );

    drop(client);
    let _ = conn.await;
    drop(standby);
    drop(primary);
    Ok(())
}

/// A statement's rows (or its error's SQLSTATE) as text.
async fn answer(client: &tokio_postgres::Client, sql: &str) -> String {
    match client.simple_query(sql).await {
        Ok(messages) => messages
            .iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                    (0..r.len())
                        .map(|i| r.get(i).unwrap_or("NULL").to_owned())
                        .collect::<Vec<_>>()
                        .join("|"),
                ),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Err(e) => format!("error {:?}", e.code().map(|c| c.code().to_owned())),
    }
}

/// Runs `sql` right after `BEGIN READ ONLY`, then `SELECT 1` and ROLLBACK;
/// the answers of both as text (rows, or the error's SQLSTATE).
async fn in_read_only_tx(client: &tokio_postgres::Client, sql: &str) -> anyhow::Result<String> {
    client.simple_query("BEGIN READ ONLY").await?;
    let outcome = format!(
        "{} / {}",
        answer(client, sql).await,
        answer(client, "SELECT 1").await
    );
    client.simple_query("ROLLBACK").await?;
    Ok(outcome)
}

async fn connect(server: &PgServer) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = superuser_client_config(server)
        .connect(tokio_postgres::NoTls)
        .await
        .context("connect to a server")?;
    tokio::spawn(conn);
    Ok(client)
}
