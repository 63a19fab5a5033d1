//! The routing table: for each statement (or sequence, the last statement
//! is checked) through the rw listener of a real primary + standby, which
//! node served it, read from the proxy's per-node `served` counters. Each
//! row runs in a fresh session.
//!
//! Under load (CI runs every test at once on 2 cores) the proxy's standby
//! poll can be older than `health_timeout` at the moment a row is routed;
//! the proxy then rightly sends reads to the primary. A row counts only when
//! the standby was provably fresh during its last statement (a poll that
//! started less than `health_timeout` before the statement finished);
//! otherwise it runs again in a new session, until a deadline.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking

mod common;

use common::*;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq)]
enum On {
    Primary,
    Standby,
    /// Read-your-writes: the primary, or a standby that had already replayed
    /// the session's write (the proxy may prove that from its samples when
    /// the statements are slow, e.g. under load); the result must show it.
    PrimaryOrCaughtUp,
}
use On::*;

/// (statements, where the last one must run)
const TABLE: &[(&[&str], On)] = &[
    (&["SELECT 1"], Standby),
    (&["SELECT * FROM t"], Standby),
    (&["VALUES (1), (2)"], Standby),
    (&["TABLE t"], Standby),
    (&["SHOW work_mem"], Standby),
    (&["EXPLAIN SELECT * FROM t"], Standby),
    (&["SELECT now(), lower('A'), count(*) FROM t"], Standby),
    (&["SELECT 1 FROM t WHERE v = 1 LIMIT 1 OFFSET 0"], Standby),
    (&["SELECT (SELECT max(v) FROM t)"], Standby),
    (&["WITH r AS (SELECT 1) SELECT * FROM r"], Standby),
    (&["SELECT generate_series(1, 3)"], Standby),
    // Server-local state is the primary's (issue 13).
    (&["SELECT count(*) FROM pg_stat_activity"], Primary),
    (&["SELECT pg_is_in_recovery()"], Primary),
    (&["SELECT gid FROM pg_prepared_xacts"], Primary),
    (&["SHOW transaction_read_only"], Primary),
    // Serializable runs on the primary.
    (
        &[
            "BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE",
            "SELECT 1",
        ],
        Primary,
    ),
    (
        &[
            "SET default_transaction_isolation = serializable",
            "SELECT 1 FROM t",
        ],
        Primary,
    ),
    // A read-only transaction whose first statement needs the primary.
    (
        &["BEGIN READ ONLY", "SELECT pg_try_advisory_xact_lock(7)"],
        Primary,
    ),
    (&["BEGIN READ ONLY", "SELECT txid_current()"], Primary),
    (&["SELECT 1; SELECT 2"], Standby),
    (&["SELECT f_stable()"], Standby),
    (&["SELECT f_immutable(1)"], Standby),
    (&["BEGIN READ ONLY", "SELECT 1"], Standby),
    (&["START TRANSACTION READ ONLY", "SELECT * FROM t"], Standby),
    (&["BEGIN", "SET TRANSACTION READ ONLY", "SELECT 1"], Standby),
    (
        &[
            "SET default_transaction_read_only = on",
            "BEGIN",
            "SELECT 1",
        ],
        Standby,
    ),
    (&["BEGIN", "COMMIT", "SELECT 1"], Standby),
    (&["RESET ALL", "SELECT 1"], Standby),
    (&["SELECT * FROM t FOR UPDATE"], Primary),
    (&["SELECT * FROM t FOR SHARE"], Primary),
    (&["SELECT * FROM t FOR NO KEY UPDATE"], Primary),
    (&["SELECT * FROM t FOR KEY SHARE"], Primary),
    (
        &["WITH x AS (INSERT INTO t (v) VALUES (1) RETURNING *) SELECT * FROM x"],
        Primary,
    ),
    (&["SELECT * INTO TEMP t_copy FROM t"], Primary),
    (&["SELECT nextval('t_id_seq')"], Primary),
    (&["SELECT * FROM (SELECT nextval('t_id_seq')) s"], Primary),
    (&["SELECT setval('t_id_seq', 1000)"], Primary),
    (&["SELECT pg_advisory_xact_lock(1)"], Primary),
    (&["SELECT set_config('work_mem', '8MB', false)"], Primary),
    (&["SELECT txid_current()"], Primary),
    (&["SELECT pg_notify('ch', 'x')"], Primary),
    (&["SELECT lo_create(0)"], Primary),
    (&["SELECT f_volatile()"], Primary),
    (&["SELECT 1; INSERT INTO t (v) VALUES (1)"], Primary),
    (&["INSERT INTO t (v) VALUES (1)"], Primary),
    (&["INSERT INTO t (v) VALUES (1) RETURNING id"], Primary),
    (&["UPDATE t SET v = v WHERE false"], Primary),
    (&["DELETE FROM t WHERE false"], Primary),
    (&["CREATE TABLE IF NOT EXISTS t_new (a int)"], Primary),
    (&["TRUNCATE t_scratch"], Primary),
    (&["ANALYZE t"], Primary),
    (&["VACUUM t"], Primary),
    (&["DO $$ BEGIN END $$"], Primary),
    (&["NOTIFY ch"], Primary),
    (&["CHECKPOINT"], Primary),
    (&["EXPLAIN ANALYZE INSERT INTO t (v) VALUES (1)"], Primary),
    (&["BEGIN", "SELECT 1"], Primary),
    (&["START TRANSACTION", "SELECT * FROM t"], Primary),
    (&["BEGIN ISOLATION LEVEL SERIALIZABLE", "SELECT 1"], Primary),
    (&["CREATE TEMP TABLE tt (a int)", "SELECT 1"], Primary),
    (&["LISTEN ch", "SELECT 1"], Primary),
    (
        &["DECLARE c CURSOR WITH HOLD FOR SELECT 1", "SELECT 1"],
        Primary,
    ),
    (&["PREPARE p AS SELECT 1", "EXECUTE p"], Primary),
    (&["SELECT pg_advisory_lock(5)", "SELECT 1"], Primary),
    (
        &["INSERT INTO t (v) VALUES (1)", "SELECT count(*) FROM t"],
        PrimaryOrCaughtUp,
    ),
    (&["SELEC 1"], Primary),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_table() -> anyhow::Result<()> {
    let c = start(true, "catalog_refresh = \"200ms\"").await?;
    let setup = "CREATE FUNCTION f_volatile() RETURNS int LANGUAGE sql VOLATILE AS 'SELECT 1'; \
                 CREATE FUNCTION f_stable() RETURNS int LANGUAGE sql STABLE AS 'SELECT 1'; \
                 CREATE FUNCTION f_immutable(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT $1'; \
                 CREATE TABLE t_scratch (a int);";
    c.primary.psql("postgres", setup)?;
    let standby = c.standby.as_ref().expect("standby");
    standby.wait_caught_up(&c.primary, Duration::from_secs(20))?;
    c.wait_standby_healthy().await?;
    let probe = connect(c.rw(), "alice", ALICE_PW).await?;
    pgha_testkit::wait_until_async("reads on the standby", Duration::from_secs(20), || {
        let (c, probe) = (&c, &probe);
        async move { served_by_standby(c, probe).await.then_some(()) }
    })
    .await?;
    // The function catalog knows the new functions.
    let classifier = c.proxy.shared.classifier.clone();
    pgha_testkit::wait_until_async(
        "function catalog refreshed",
        Duration::from_secs(20),
        || {
            let ready = classifier.analyze("SELECT f_stable()").read_only
                && classifier.analyze("SELECT f_immutable(1)").read_only;
            async move { ready.then_some(()) }
        },
    )
    .await?;

    let monitor = c.proxy.shared.monitor.clone();
    let health_timeout = c.proxy.shared.settings.health_timeout;
    let primary_stats = monitor.stats(&node("pg1", &c.primary));
    let standby_stats = monitor.stats(&node("pg2", standby));
    let mut wrong = Vec::new();
    for (stmts, expect) in TABLE {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut stale_runs = 0;
        let outcome = loop {
            pgha_testkit::wait_until_async("a fresh standby poll", Duration::from_secs(20), || {
                let st = standby_stats.status();
                let fresh = st
                    .ok_started
                    .is_some_and(|at| at.elapsed() < health_timeout / 2);
                async move { (fresh && st.in_recovery).then_some(()) }
            })
            .await?;
            let client = connect(c.rw(), "alice", ALICE_PW).await?;
            let (last, before) = stmts.split_last().expect("non-empty row");
            let mut setup_failed = None;
            for s in before {
                if let Err(e) = client.simple_query(s).await {
                    setup_failed = Some(format!("setup statement {s:?} failed: {e:?}"));
                }
            }
            let polled = standby_stats.status().ok_started;
            let p0 = primary_stats.served.load(Ordering::Relaxed);
            let s0 = standby_stats.served.load(Ordering::Relaxed);
            let result = client.simple_query(last).await;
            let dp = primary_stats.served.load(Ordering::Relaxed) - p0;
            let ds = standby_stats.served.load(Ordering::Relaxed) - s0;
            let fresh = polled.is_some_and(|at| at + health_timeout > Instant::now());
            if !fresh && Instant::now() < deadline {
                stale_runs += 1;
                continue;
            }
            let got = match (dp, ds) {
                (0, n) if n > 0 => Some(Standby),
                (n, _) if n > 0 => Some(Primary),
                _ => None,
            };
            let ok = match (expect, got) {
                (PrimaryOrCaughtUp, Some(Primary)) => true,
                (PrimaryOrCaughtUp, Some(Standby)) => {
                    let seen = first_value(result.as_ref().ok());
                    let on_primary = c.primary.psql("postgres", "SELECT count(*) FROM t")?;
                    seen.as_deref() == Some(on_primary.trim())
                }
                (e, g) => g == Some(*e),
            };
            break match (setup_failed, ok) {
                (Some(f), _) => Some(format!("{stmts:?}: {f}")),
                (None, true) => None,
                (None, false) => Some(format!(
                    "{stmts:?}: expected {expect:?}, got {got:?} (result {:?}, standby fresh: {fresh}, \
                     stale runs before: {stale_runs})",
                    result.map(|_| ())
                )),
            };
        };
        wrong.extend(outcome);
    }
    assert!(
        wrong.is_empty(),
        "{} of {} rows wrong:\n{}",
        wrong.len(),
        TABLE.len(),
        wrong.join("\n")
    );
    Ok(())
}

/// The first column of the first row of a simple-query result.
fn first_value(msgs: Option<&Vec<tokio_postgres::SimpleQueryMessage>>) -> Option<String> {
    msgs?.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
        _ => None,
    })
}
