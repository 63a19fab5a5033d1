//! The classifier against real PostgreSQL 15 servers: `FunctionCatalog::refresh`
//! reads user function (and operator) volatility from `pg_proc`, and what the
//! classifier calls read-only is accepted by a hot standby (while what it
//! sends to the primary because it writes is refused there).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use pgha_proxy::classify::{Classifier, FunctionCatalog};
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
    CREATE OPERATOR === (LEFTARG = int, RIGHTARG = int, FUNCTION = eq_v);";

/// Statements the classifier must call read-only; each must run on a standby.
const READ_ONLY: &[&str] = &[
    "SELECT 1",
    "SELECT a, b FROM t WHERE id = 5 ORDER BY a LIMIT 10",
    "TABLE t",
    "VALUES (1), (2)",
    "SHOW search_path",
    "WITH x AS (SELECT 1) SELECT * FROM x",
    "SELECT count(*), max(a) FROM t GROUP BY b HAVING sum(b) > 1",
    "SELECT now(), version(), pg_is_in_recovery(), current_setting('TimeZone')",
    "SELECT * FROM t JOIN u ON u.id = t.uid AND gen_random_uuid() IS NOT NULL",
    "SELECT row_to_json(t), jsonb_build_object('a', 1) FROM t",
    "SELECT * FROM generate_series(1, 3) g",
    "EXPLAIN SELECT * FROM t",
    "EXPLAIN ANALYZE SELECT * FROM t",
    "SELECT stable_f(1), app.imm_f(2)",
    "SELECT txid_current_snapshot(), pg_last_wal_replay_lsn()",
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
    "SELECT pg_notify('c', 'x')",
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
        // lies_f is STABLE in pg_proc: only the standby's 25006 reveals it.
        assert_eq!(a.read_only, *sql == "SELECT lies_f()", "{sql:?}");
    }

    let standby_client = standby_client(&standby).await?;
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
    classifier.learn_writes("SELECT lies_f()");
    assert!(!classifier.analyze("SELECT lies_f()").read_only);

    drop(client);
    let _ = conn.await;
    drop(standby);
    drop(primary);
    Ok(())
}

async fn standby_client(standby: &PgServer) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = superuser_client_config(standby)
        .connect(tokio_postgres::NoTls)
        .await
        .context("connect to the standby")?;
    tokio::spawn(conn);
    Ok(client)
}
