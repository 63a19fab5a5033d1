//! Following topology changes: a transaction in flight on a dead primary
//! fails with a clear error while the client connection survives, and keeps
//! failing until the client ends it; new transactions wait for a primary;
//! pause/resume holds new transactions without errors.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking

mod common;

use common::*;
use std::time::{Duration, Instant};

/// primary_wait_timeout as `common::start` sets it.
const PRIMARY_WAIT: Duration = Duration::from_secs(10);

/// The primary dies; the standby is promoted and becomes the primary.
/// Returns the new primary and its port.
fn fail_over(c: &mut Cluster) -> anyhow::Result<(pgha_proxy::Node, u16)> {
    c.primary.kill();
    let standby = c.standby.as_ref().expect("standby");
    standby.psql("postgres", "SELECT pg_promote()")?;
    let new_primary = node("pg2", standby);
    c.topology.update(|t| {
        t.primary = Some(new_primary.clone());
        t.standbys.clear();
    });
    Ok((new_primary, standby.port))
}

fn code(e: &tokio_postgres::Error) -> Option<String> {
    e.as_db_error().map(|d| d.code().code().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_keeps_connections_and_fails_only_inflight() -> anyhow::Result<()> {
    failover_case("").await
}

/// The same with transaction pooling: pooled backends of the dead primary
/// are not handed out again; new transactions take the new primary's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_with_transaction_pooling() -> anyhow::Result<()> {
    failover_case("pool_mode = \"transaction\"\npool_size = 2\n").await
}

async fn failover_case(extra: &str) -> anyhow::Result<()> {
    let mut c = start(true, extra).await?;
    c.wait_standby_healthy().await?;
    let client = connect(c.rw(), "alice", ALICE_PW).await?;
    let idle = connect(c.rw(), "alice", ALICE_PW).await?;
    idle.batch_execute("SET application_name = 'survivor'")
        .await?;
    client
        .batch_execute("BEGIN; INSERT INTO t (v) VALUES (1)")
        .await?;

    let (new_primary, new_port) = fail_over(&mut c)?;

    let err = client
        .batch_execute("INSERT INTO t (v) VALUES (2)")
        .await
        .expect_err("in-flight transaction fails");
    assert_eq!(code(&err).as_deref(), Some("08006"), "{err:?}");
    // The connection survives: the next transaction runs on the new primary.
    client.batch_execute("ROLLBACK").await?;
    let row = client
        .query_one(
            "INSERT INTO t (v) VALUES (3) RETURNING inet_server_port()",
            &[],
        )
        .await?;
    assert_eq!(row.get::<_, i32>(0), i32::from(new_port));

    // A session that was idle carries on, with its settings.
    let row = idle
        .query_one(
            "SELECT current_setting('application_name'), pg_is_in_recovery()",
            &[],
        )
        .await?;
    assert_eq!(row.get::<_, String>(0), "survivor");
    assert!(!row.get::<_, bool>(1));

    // No primary for a while: a new transaction waits for one instead of
    // failing, up to primary_wait_timeout (10 s in these tests). The first
    // write proves the wait by running out of it; the second, sent 2 s
    // later, must still be waiting then, and completes once a primary is
    // back.
    c.topology.update(|t| t.primary = None);
    let started = Instant::now();
    let first = tokio::spawn(async move {
        let r = idle.execute("INSERT INTO t (v) VALUES (4)", &[]).await;
        (r, started.elapsed())
    });
    tokio::time::sleep(Duration::from_secs(2)).await; // stagger the two waits
    let second =
        tokio::spawn(async move { client.execute("INSERT INTO t (v) VALUES (5)", &[]).await });
    let (r, waited) = first.await?;
    let err = r.expect_err("no primary appeared within primary_wait_timeout");
    assert_eq!(code(&err).as_deref(), Some("08006"), "{err:?}");
    let message = err.as_db_error().map(|d| d.message().to_string());
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("no primary available after waiting")),
        "{err:?}"
    );
    assert!(waited >= PRIMARY_WAIT, "gave up after {waited:?}");
    assert!(
        !second.is_finished(),
        "a write sent while there was no primary did not wait for one"
    );
    c.topology.update(|t| t.primary = Some(new_primary.clone()));
    assert_eq!(second.await??, 1);
    Ok(())
}

/// Found by the chaos run (seed 42): the error for a transaction whose
/// backend died landed on a message the driver ignores (tokio-postgres
/// closes a dropped statement with Close + Sync). The next statements then
/// ran on the new primary outside any transaction, and the COMMIT
/// "succeeded" there: a lost INSERT was acknowledged. Every statement of a
/// lost transaction must fail, COMMIT included, until the client ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_transaction_fails_until_the_client_ends_it() -> anyhow::Result<()> {
    let mut c = start(true, "").await?;
    c.wait_standby_healthy().await?;
    let committer = connect(c.rw(), "alice", ALICE_PW).await?;
    let roller = connect(c.rw(), "alice", ALICE_PW).await?;
    let mut held = Vec::new();
    for (client, v) in [(&committer, 10i32), (&roller, 20i32)] {
        client.batch_execute("BEGIN").await?;
        let insert = client.prepare("INSERT INTO t (v) VALUES ($1)").await?;
        client.execute(&insert, &[&v]).await?;
        held.push(insert);
    }
    // A third session's query is in flight when the primary dies, and its
    // last transaction statement is a BEGIN: that transaction is lost too.
    let inflight = connect(c.rw(), "alice", ALICE_PW).await?;
    let inflight = std::sync::Arc::new(inflight);
    let running = {
        let inflight = inflight.clone();
        tokio::spawn(async move {
            inflight
                .batch_execute("BEGIN; INSERT INTO t (v) VALUES (40); SELECT pg_sleep(60)")
                .await
        })
    };
    pgha_testkit::wait_until(
        "the sleeping query runs on the primary",
        Duration::from_secs(10),
        || {
            let out = c
            .primary
            .psql(
                "postgres",
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(60)%' AND state = 'active' AND pid <> pg_backend_pid()",
            )
            .ok()?;
            (out.trim() == "1").then_some(())
        },
    )?;

    let (_, new_port) = fail_over(&mut c)?;

    // Close + Sync for each prepared INSERT; tokio-postgres ignores the answers.
    drop(held);
    for client in [&committer, &roller] {
        for _ in 0..2 {
            let err = client
                .query_one("SELECT inet_server_port()", &[])
                .await
                .expect_err("a statement of a lost transaction must fail");
            assert_eq!(code(&err).as_deref(), Some("08006"), "{err:?}");
        }
    }
    let err = running
        .await?
        .expect_err("the query in flight on the dead primary must fail");
    assert_eq!(code(&err).as_deref(), Some("08006"), "{err:?}");
    let err = inflight
        .batch_execute("COMMIT")
        .await
        .expect_err("the COMMIT after a BEGIN lost in flight must fail");
    assert_eq!(code(&err).as_deref(), Some("08006"), "{err:?}");
    let err = committer
        .batch_execute("COMMIT")
        .await
        .expect_err("the COMMIT of a lost transaction must fail");
    assert_eq!(code(&err).as_deref(), Some("08006"), "{err:?}");
    let message = err.as_db_error().map(|d| d.message()).unwrap_or_default();
    assert!(message.contains("did not commit"), "{message}");
    roller.batch_execute("ROLLBACK").await?;

    // Both sessions carry on outside a transaction, on the new primary, and
    // neither INSERT exists.
    for client in [&committer, &roller] {
        let row = client
            .query_one(
                "SELECT count(*) FILTER (WHERE v IN (10, 20, 40)), inet_server_port() FROM t",
                &[],
            )
            .await?;
        assert_eq!(row.get::<_, i64>(0), 0);
        assert_eq!(row.get::<_, i32>(1), i32::from(new_port));
        client
            .batch_execute("INSERT INTO t (v) VALUES (30)")
            .await?;
    }
    Ok(())
}

/// pgha's fence (ALTER SYSTEM SET default_transaction_read_only = on and a
/// reload, on a primary that cannot renew its lease) reaches the session as
/// a ParameterStatus. That is the server's setting, not the session's: once
/// the fenced backend is gone, the session's transactions go to the primary
/// again. A chaos run found sessions whose every later write got 25006 from
/// a standby.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fence_does_not_leave_the_session_read_only() -> anyhow::Result<()> {
    let c = start(true, "").await?;
    c.wait_standby_healthy().await?;
    let client = connect(c.rw(), "alice", ALICE_PW).await?;
    client
        .batch_execute("INSERT INTO t (v) VALUES (50)")
        .await?;

    c.primary.psql(
        "postgres",
        "ALTER SYSTEM SET default_transaction_read_only = on",
    )?;
    c.primary.psql("postgres", "SELECT pg_reload_conf()")?;
    pgha_testkit::wait_until_async(
        "the fenced primary refusing a write",
        Duration::from_secs(10),
        || {
            let client = &client;
            async move {
                match client.batch_execute("INSERT INTO t (v) VALUES (51)").await {
                    Err(e) if code(&e).as_deref() == Some("25006") => Some(()),
                    _ => None,
                }
            }
        },
    )
    .await?;

    // The fence ends; its backends were terminated (as the fence does).
    c.primary.psql(
        "postgres",
        "ALTER SYSTEM RESET default_transaction_read_only",
    )?;
    c.primary.psql("postgres", "SELECT pg_reload_conf()")?;
    c.primary.psql(
        "postgres",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
    )?;

    // The first try may meet the terminated backend (08006); none may be
    // refused as read-only.
    pgha_testkit::wait_until_async(
        "a write transaction through the same session",
        Duration::from_secs(10),
        || {
            let client = &client;
            async move {
                client.batch_execute("BEGIN").await.ok()?;
                match client.batch_execute("INSERT INTO t (v) VALUES (52)").await {
                    Ok(()) => client.batch_execute("COMMIT").await.ok(),
                    Err(e) => {
                        assert_ne!(
                            code(&e).as_deref(),
                            Some("25006"),
                            "the session was left read-only: {e:?}"
                        );
                        let _ = client.batch_execute("ROLLBACK").await;
                        None
                    }
                }
            }
        },
    )
    .await?;
    let row = client
        .query_one("SELECT count(*) FROM t WHERE v = 52", &[])
        .await?;
    assert_eq!(row.get::<_, i64>(0), 1);
    Ok(())
}

/// pause_timeout for the pause test: long enough for the worker to start
/// waiting well before the probe gives up, short for the test's run time.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(4);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_new_transactions_without_errors() -> anyhow::Result<()> {
    let c = start(
        false,
        &format!("pause_timeout = \"{}s\"", PAUSE_TIMEOUT.as_secs()),
    )
    .await?;
    let probe = connect(c.rw(), "alice", ALICE_PW).await?;
    let client = connect(c.rw(), "alice", ALICE_PW).await?;
    client
        .batch_execute("BEGIN; INSERT INTO t (v) VALUES (1)")
        .await?;
    c.topology.pause();
    // The transaction in flight finishes while paused.
    client
        .batch_execute("INSERT INTO t (v) VALUES (2); COMMIT")
        .await?;
    // A probe transaction proves the hold by running out of pause_timeout;
    // the worker, started 2 s later, must still be held then.
    let started = Instant::now();
    let probe = tokio::spawn(async move {
        let r = probe
            .batch_execute("BEGIN; INSERT INTO t (v) VALUES (100); COMMIT")
            .await;
        (r, started.elapsed())
    });
    tokio::time::sleep(Duration::from_secs(2)).await; // stagger the two waits
    let worker = tokio::spawn(async move {
        for i in 0..20 {
            client
                .batch_execute(&format!("BEGIN; INSERT INTO t (v) VALUES ({i}); COMMIT"))
                .await?;
        }
        Ok::<_, tokio_postgres::Error>(())
    });
    let (r, waited) = probe.await?;
    let err = r.expect_err("the pause outlasted pause_timeout");
    assert_eq!(code(&err).as_deref(), Some("57P03"), "{err:?}");
    assert!(waited >= PAUSE_TIMEOUT, "gave up after {waited:?}");
    assert!(
        !worker.is_finished(),
        "new transactions must wait while paused"
    );
    c.topology.resume();
    worker.await??;
    let direct = connect(c.primary_addr(), "alice", ALICE_PW).await?;
    let n: i64 = direct
        .query_one("SELECT count(*) FROM t", &[])
        .await?
        .get(0);
    assert_eq!(n, 22, "the probe's transaction never ran");
    Ok(())
}
