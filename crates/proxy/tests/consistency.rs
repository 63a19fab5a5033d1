//! Issue 13: a read the rw listener sends to a standby must give the answer
//! the primary would give at that moment. Each test here is one bullet of
//! the issue, against a real primary and a real (asynchronous, so lagging
//! whenever it can) streaming standby, with PostgreSQL's own answer as the
//! reference.
//!
//! Where a test proves an ordering guarantee it also asserts that the
//! standby really served the reads (the proxy's per-node counters):
//! `read_wait_timeout` is raised so that a read always waits for the
//! standby instead of falling back to the primary, and a guarantee that
//! holds only because every read went to the primary would not count.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking

mod common;

use common::*;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_postgres::Client;

/// A wait long enough that the standby always catches up first (the test
/// asserts that the standby served every read; no timing is asserted).
const WAIT_FOR_STANDBY: &str = "read_wait_timeout = \"20s\"\n";

/// Client units the proxy sent to (primary, standby) so far.
fn served(c: &Cluster) -> (u64, u64) {
    let m = &c.proxy.shared.monitor;
    let p = m
        .stats(&node("pg1", &c.primary))
        .served
        .load(Ordering::Relaxed);
    let s = m
        .stats(&node("pg2", c.standby.as_ref().expect("standby")))
        .served
        .load(Ordering::Relaxed);
    (p, s)
}

/// Waits until `client` gets a simple query `sql` served by the standby
/// (the routing itself is not timing-dependent, but the standby counts as
/// healthy only while its last poll is recent, which a loaded machine can
/// delay: a read the rule sends to the standby gets there on a retry).
async fn standby_serves(c: &Cluster, client: &Client, sql: &str, what: &str) -> anyhow::Result<()> {
    pgha_testkit::wait_until_async(what, Duration::from_secs(20), || async {
        let (_, s0) = served(c);
        client.simple_query(sql).await.ok()?;
        (served(c).1 > s0).then_some(())
    })
    .await
}

async fn count(c: &Client, sql: &str) -> anyhow::Result<i64> {
    Ok(c.query_one(sql, &[]).await?.get::<_, i64>(0))
}

/// Runs `n` rounds of: `writer` inserts row i (through `writer`'s path), and
/// right after the acknowledgement `reader` (another, already connected rw
/// session) looks for it. Returns the rounds that did not see the row.
async fn write_then_read_elsewhere(
    writer: &Client,
    reader: &Client,
    n: i32,
) -> anyhow::Result<Vec<i32>> {
    let mut missed = Vec::new();
    for i in 0..n {
        writer
            .execute("INSERT INTO seen (id) VALUES ($1)", &[&i])
            .await?;
        let found = reader
            .query_one("SELECT count(*) FROM seen WHERE id = $1", &[&i])
            .await?
            .get::<_, i64>(0);
        if found != 1 {
            missed.push(i);
        }
    }
    Ok(missed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_commit_is_visible_to_every_next_read() -> anyhow::Result<()> {
    let c = start(true, WAIT_FOR_STANDBY).await?;
    c.wait_standby_healthy().await?;
    c.primary.psql(
        "postgres",
        "CREATE TABLE seen (id int); GRANT ALL ON seen TO bob;",
    )?;
    let reader = connect(c.rw(), "alice", ALICE_PW).await?;

    // The writer through the proxy's rw listener.
    let writer = connect(c.rw(), "alice", ALICE_PW).await?;
    let (_, s0) = served(&c);
    let missed = write_then_read_elsewhere(&writer, &reader, 150).await?;
    assert!(
        missed.is_empty(),
        "rows acknowledged through rw, not seen by the next read: {missed:?}"
    );
    let (_, s1) = served(&c);
    assert!(
        s1 - s0 >= 150,
        "the standby served the reads ({} of 150)",
        s1 - s0
    );

    // The writer on the primary's own port.
    c.primary.psql("postgres", "TRUNCATE seen")?;
    let direct = connect(
        format!("127.0.0.1:{}", c.primary.port).parse()?,
        "alice",
        ALICE_PW,
    )
    .await?;
    let missed = write_then_read_elsewhere(&direct, &reader, 150).await?;
    assert!(
        missed.is_empty(),
        "rows acknowledged by the primary itself, not seen: {missed:?}"
    );
    let (_, s2) = served(&c);
    assert!(
        s2 - s1 >= 150,
        "the standby served the reads ({} of 150)",
        s2 - s1
    );

    // DDL is a commit like any other.
    for i in 0..5 {
        writer
            .batch_execute(&format!("CREATE DATABASE seen_{i}"))
            .await?;
        let n = count(
            &reader,
            &format!("SELECT count(*) FROM pg_database WHERE datname = 'seen_{i}'"),
        )
        .await?;
        assert_eq!(
            n, 1,
            "CREATE DATABASE seen_{i} acknowledged, not seen by the next read"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_reads_never_go_back_in_time() -> anyhow::Result<()> {
    for mode in ["linearizable", "session"] {
        let c = start(
            true,
            &format!("{WAIT_FOR_STANDBY}read_consistency = \"{mode}\"\n"),
        )
        .await?;
        c.wait_standby_healthy().await?;
        c.primary.psql(
            "postgres",
            "CREATE TABLE counter (v bigint); INSERT INTO counter VALUES (0);",
        )?;
        let bumper = connect(
            format!("127.0.0.1:{}", c.primary.port).parse()?,
            "alice",
            ALICE_PW,
        )
        .await?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        // The highest value an update has acknowledged so far.
        let acked = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
        let bumping = {
            let (stop, acked) = (stop.clone(), acked.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) && n < 100_000 {
                    let v: i64 = bumper
                        .query_one("UPDATE counter SET v = v + 1 RETURNING v", &[])
                        .await?
                        .get(0);
                    acked.store(v, Ordering::SeqCst);
                    n += 1;
                }
                anyhow::Ok(())
            })
        };
        let mut reader = connect(c.rw(), "alice", ALICE_PW).await?;
        let (_, s0) = served(&c);
        let mut last = 0i64;
        let mut backwards = Vec::new();
        let mut missed = Vec::new();
        let mut in_flight = 0;
        for i in 0..300 {
            let floor = acked.load(Ordering::SeqCst);
            let v: i64 = if i % 2 == 0 {
                // A read inside a read-write transaction: the primary.
                let tx = reader.transaction().await?;
                let v = tx.query_one("SELECT v FROM counter", &[]).await?.get(0);
                tx.commit().await?;
                v
            } else {
                reader.query_one("SELECT v FROM counter", &[]).await?.get(0)
            };
            if mode == "linearizable" && v < floor {
                missed.push((i, floor, v));
            }
            if v < last {
                // The one way back that is PostgreSQL's own: a standby can
                // show a commit before the primary's transaction has finished
                // (it replays the commit record while the primary still waits
                // to end it, see docs/routing.md). Such a value was never
                // acknowledged when this read began; anything else is a bug.
                if last > floor {
                    in_flight += 1;
                } else {
                    backwards.push((i, last, v));
                }
            }
            last = v;
        }
        stop.store(true, Ordering::Relaxed);
        bumping.await??;
        assert!(
            missed.is_empty(),
            "{mode}: reads missed acknowledged updates (round, acknowledged, read): {missed:?}"
        );
        assert!(
            backwards.is_empty(),
            "{mode}: reads went back past an acknowledged value (round, before, after): {backwards:?}"
        );
        eprintln!("{mode}: {in_flight} of 300 reads went back past a value not acknowledged yet");
        let (_, s1) = served(&c);
        assert!(
            s1 - s0 >= 150,
            "{mode}: the standby served the autocommit reads ({} of 150)",
            s1 - s0
        );
    }
    Ok(())
}

/// Runs `sql` directly on the primary and through the rw listener; the
/// answers (all rows, as text) must match.
async fn same_as_primary(
    c: &Cluster,
    via_rw: &Client,
    direct: &Client,
    sql: &str,
) -> anyhow::Result<()> {
    let rows = |msgs: Vec<tokio_postgres::SimpleQueryMessage>| {
        msgs.into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                    (0..r.len())
                        .map(|i| r.get(i).unwrap_or("NULL").to_string())
                        .collect::<Vec<_>>(),
                ),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let want = rows(direct.simple_query(sql).await?);
    let got = rows(via_rw.simple_query(sql).await?);
    let _ = c;
    assert_eq!(got, want, "{sql}: through rw vs on the primary");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_local_state_is_the_primarys() -> anyhow::Result<()> {
    let c = start(true, WAIT_FOR_STANDBY).await?;
    c.wait_standby_healthy().await?;
    let direct = connect(
        format!("127.0.0.1:{}", c.primary.port).parse()?,
        "alice",
        ALICE_PW,
    )
    .await?;
    direct
        .batch_execute("BEGIN; INSERT INTO t (v) VALUES (42); PREPARE TRANSACTION 'pgha-gid'")
        .await?;
    direct
        .batch_execute("SELECT pg_create_physical_replication_slot('pgha_test_slot')")
        .await?;
    let rw = connect(c.rw(), "alice", ALICE_PW).await?;
    // Reads that do not depend on the server still go to the standby.
    standby_serves(
        &c,
        &rw,
        "SELECT count(*) FROM t",
        "a plain read served by the standby",
    )
    .await?;
    for sql in [
        "SELECT pg_is_in_recovery()",
        "SELECT gid FROM pg_prepared_xacts",
        "SELECT count(*) FROM pg_stat_replication",
        "SELECT count(*) FROM pg_stat_wal_receiver",
        "SELECT slot_name FROM pg_replication_slots ORDER BY 1",
        "SELECT count(*) > 0 FROM pg_stat_activity WHERE backend_type = 'walsender'",
        "SHOW transaction_read_only",
        "SELECT current_setting('transaction_read_only')",
        "SELECT count(*) FROM pg_locks WHERE locktype = 'transactionid'",
        "SELECT pg_last_wal_replay_lsn() IS NULL",
    ] {
        same_as_primary(&c, &rw, &direct, sql).await?;
    }
    direct.batch_execute("ROLLBACK PREPARED 'pgha-gid'").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serializable_runs_on_the_primary_however_it_was_set() -> anyhow::Result<()> {
    let c = start(true, WAIT_FOR_STANDBY).await?;
    c.wait_standby_healthy().await?;
    c.primary.psql(
        "postgres",
        "CREATE ROLE carol LOGIN PASSWORD 'carol-pw'; GRANT SELECT ON t TO carol; \
         ALTER ROLE carol SET default_transaction_isolation = serializable; \
         CREATE ROLE dave LOGIN PASSWORD 'dave-pw'; GRANT SELECT ON t TO dave;",
    )?;
    c.primary.psql(
        "postgres",
        "ALTER DATABASE postgres SET default_transaction_isolation = 'read committed'",
    )?;

    let a = connect(c.rw(), "alice", ALICE_PW).await?;
    // What psycopg 3, asyncpg and node-postgres send.
    a.batch_execute("BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE")
        .await?;
    a.query_one("SELECT count(*) FROM t", &[]).await?;
    a.batch_execute("COMMIT").await?;
    a.batch_execute("START TRANSACTION READ ONLY, ISOLATION LEVEL SERIALIZABLE")
        .await?;
    a.query_one("SELECT count(*) FROM t", &[]).await?;
    a.batch_execute("COMMIT").await?;
    // SET TRANSACTION after a lone BEGIN.
    a.batch_execute("BEGIN").await?;
    a.batch_execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY")
        .await?;
    a.query_one("SELECT count(*) FROM t", &[]).await?;
    a.batch_execute("COMMIT").await?;
    // What pgjdbc sends for a serializable read-only connection.
    a.batch_execute("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE")
        .await?;
    for _ in 0..3 {
        a.batch_execute("BEGIN READ ONLY").await?;
        a.query_one("SELECT count(*) FROM t", &[]).await?;
        a.batch_execute("COMMIT").await?;
        a.query_one("SELECT count(*) FROM t", &[]).await?;
    }
    a.batch_execute("RESET default_transaction_isolation")
        .await?;
    standby_serves(
        &c,
        &a,
        "SELECT count(*) FROM t",
        "after RESET, a read served by the standby again",
    )
    .await?;

    // SET default_transaction_isolation, in a session.
    a.batch_execute("SET default_transaction_isolation = serializable")
        .await?;
    a.query_one("SELECT count(*) FROM t", &[]).await?;
    a.batch_execute("BEGIN READ ONLY; SELECT 1; COMMIT").await?;

    // Startup options, as libpq's `options` sends them.
    let (opt, conn) = tokio_postgres::connect(
        &format!(
            "{} options='-c default_transaction_isolation=serializable'",
            conn_str(c.rw(), "alice", ALICE_PW, "postgres")
        ),
        tokio_postgres::NoTls,
    )
    .await?;
    tokio::spawn(conn);
    for _ in 0..3 {
        opt.query_one("SELECT count(*) FROM t", &[]).await?;
        opt.batch_execute("BEGIN READ ONLY").await?;
        opt.query_one("SELECT count(*) FROM t", &[]).await?;
        opt.batch_execute("COMMIT").await?;
    }

    // A role default (ALTER ROLE ... SET) that the proxy cannot see: the
    // standby's refusal is retried on the primary and learned.
    let carol = connect(c.rw(), "carol", "carol-pw").await?;
    for _ in 0..3 {
        carol.query_one("SELECT count(*) FROM t", &[]).await?;
        carol.batch_execute("BEGIN READ ONLY").await?;
        carol.query_one("SELECT count(*) FROM t", &[]).await?;
        carol.batch_execute("COMMIT").await?;
    }
    let carol2 = connect(c.rw(), "carol", "carol-pw").await?;
    carol2.batch_execute("BEGIN READ ONLY").await?;
    carol2.query_one("SELECT count(*) FROM t", &[]).await?;
    carol2.batch_execute("COMMIT").await?;
    // Another role keeps its reads on the standby.
    let dave = connect(c.rw(), "dave", "dave-pw").await?;
    standby_serves(
        &c,
        &dave,
        "SELECT count(*) FROM t",
        "dave's read served by the standby",
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_transaction_that_needs_the_primary_never_diverges() -> anyhow::Result<()> {
    let c = start(true, WAIT_FOR_STANDBY).await?;
    c.wait_standby_healthy().await?;
    let a = connect(c.rw(), "alice", ALICE_PW).await?;
    let other = connect(c.rw(), "alice", ALICE_PW).await?;

    // First statement after BEGIN READ ONLY needs the primary: the whole
    // transaction runs there.
    a.batch_execute("BEGIN READ ONLY").await?;
    a.query_one("SELECT pg_advisory_lock(1)", &[]).await?;
    let got: bool = other
        .query_one("SELECT pg_try_advisory_lock(1)", &[])
        .await?
        .get(0);
    assert!(!got, "the lock taken in BEGIN READ ONLY is the primary's");
    a.batch_execute("COMMIT").await?;
    a.query_one("SELECT pg_advisory_unlock(1)", &[]).await?;

    a.batch_execute("BEGIN READ ONLY").await?;
    a.batch_execute("DECLARE held CURSOR WITH HOLD FOR SELECT g FROM generate_series(1, 3) g")
        .await?;
    a.batch_execute("COMMIT").await?;
    let rows = a.simple_query("FETCH ALL FROM held").await?;
    let n = rows
        .iter()
        .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
        .count();
    assert_eq!(
        n, 3,
        "the WITH HOLD cursor outlives its read-only transaction"
    );
    a.batch_execute("CLOSE held").await?;

    for first in [
        "LISTEN pgha_chan",
        "NOTIFY pgha_chan",
        "SELECT pg_notify('pgha_chan', 'x')",
        "SELECT txid_current()",
        "SELECT pg_current_xact_id()",
    ] {
        a.batch_execute("BEGIN READ ONLY").await?;
        a.batch_execute(first)
            .await
            .map_err(|e| anyhow::anyhow!("{first} in BEGIN READ ONLY: {e}"))?;
        a.batch_execute("COMMIT").await?;
    }
    a.batch_execute("UNLISTEN *").await?;

    // After a read on the standby, a statement that needs the primary is
    // refused with an error that names the cause; the transaction is then
    // aborted as after any error, and the session goes on. (A new session:
    // `a` is pinned to the primary by now, by its session-level lock,
    // LISTEN and WITH HOLD cursor.)
    let b = connect(c.rw(), "alice", ALICE_PW).await?;
    pgha_testkit::wait_until_async(
        "a read-only transaction whose first read runs on the standby",
        Duration::from_secs(20),
        || async {
            b.batch_execute("BEGIN READ ONLY").await.ok()?;
            let (_, s0) = served(&c);
            b.simple_query("SELECT count(*) FROM t").await.ok()?;
            let on_standby = served(&c).1 > s0;
            if !on_standby {
                b.batch_execute("ROLLBACK").await.ok()?;
            }
            on_standby.then_some(())
        },
    )
    .await?;
    let e = b
        .query_one("SELECT pg_advisory_lock(2)", &[])
        .await
        .expect_err("an advisory lock after a standby read is refused");
    let db = e.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "0A000");
    assert!(db.message().contains("advisory lock"), "{}", db.message());
    let e = b
        .query_one("SELECT 1", &[])
        .await
        .expect_err("the transaction is aborted");
    assert_eq!(e.as_db_error().map(|d| d.code().code()), Some("25P02"));
    b.batch_execute("ROLLBACK").await?;
    let got: bool = other
        .query_one("SELECT pg_try_advisory_lock(2)", &[])
        .await?
        .get(0);
    assert!(got, "the refused lock was never taken anywhere");
    assert_eq!(b.query_one("SELECT 1", &[]).await?.get::<_, i32>(0), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stable_sql_function_that_writes_returns_all_rows() -> anyhow::Result<()> {
    let c = start(true, "catalog_refresh = \"100ms\"\n").await?;
    c.wait_standby_healthy().await?;
    c.primary.psql(
        "postgres",
        "CREATE SEQUENCE s; \
         CREATE FUNCTION stable_writer() RETURNS int STABLE LANGUAGE sql AS $$ SELECT nextval('s')::int $$; \
         CREATE FUNCTION calls_writer() RETURNS int STABLE LANGUAGE sql AS $$ SELECT stable_writer() $$;",
    )?;
    let a = connect(c.rw(), "alice", ALICE_PW).await?;
    for f in ["stable_writer", "calls_writer"] {
        let sql = format!(
            "SELECT g, CASE WHEN g = 20000 THEN {f}() END FROM generate_series(1, 40000) g"
        );
        // Until the proxy's catalog refresh has read the function, the
        // standby may refuse it after rows were streamed (the one case the
        // 25006 retry cannot repair); afterwards, never.
        pgha_testkit::wait_until_async(
            &format!("{f}() classified from its body"),
            Duration::from_secs(20),
            || {
                let a = &a;
                let sql = &sql;
                async move { a.simple_query(sql).await.ok() }
            },
        )
        .await?;
        for _ in 0..3 {
            let rows = a.query(sql.as_str(), &[]).await?;
            assert_eq!(rows.len(), 40_000, "{f}");
        }
    }
    Ok(())
}
