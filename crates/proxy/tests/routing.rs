//! Routing on the rw/ro/primary listeners against a real primary + standby:
//! which node served each statement, session state following the client
//! (SET, named prepared statements), and read-your-writes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking

mod common;

use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_per_transaction_and_follows_session_state() -> anyhow::Result<()> {
    let c = start(true, "").await?;
    c.wait_standby_healthy().await?;
    let client = connect(c.rw(), "alice", ALICE_PW).await?;
    pgha_testkit::wait_until_async(
        "autocommit read on the standby",
        Duration::from_secs(20),
        || {
            let (c, client) = (&c, &client);
            async move { served_by_standby(c, client).await.then_some(()) }
        },
    )
    .await?;

    client.batch_execute("BEGIN").await?;
    assert!(
        !served_by_standby(&c, &client).await,
        "explicit transaction runs on the primary"
    );
    client.batch_execute("COMMIT").await?;

    client.batch_execute("BEGIN READ ONLY").await?;
    assert!(
        served_by_standby(&c, &client).await,
        "BEGIN READ ONLY runs on a standby"
    );
    client.batch_execute("COMMIT").await?;

    // A lone BEGIN: the next statement places the transaction.
    client.batch_execute("BEGIN").await?;
    client.batch_execute("SET TRANSACTION READ ONLY").await?;
    assert!(
        served_by_standby(&c, &client).await,
        "BEGIN; SET TRANSACTION READ ONLY runs on a standby"
    );
    client.batch_execute("COMMIT").await?;
    client.batch_execute("START TRANSACTION").await?;
    assert!(
        !served_by_standby(&c, &client).await,
        "BEGIN; SELECT runs on the primary"
    );
    client.batch_execute("INSERT INTO t (v) VALUES (1)").await?;
    client.batch_execute("COMMIT").await?;

    // default_transaction_read_only=on makes explicit transactions read-only.
    let ro_default = connect(c.rw(), "alice", ALICE_PW).await?;
    ro_default
        .batch_execute("SET default_transaction_read_only = on")
        .await?;
    pgha_testkit::wait_until_async(
        "read-only transaction on the standby",
        Duration::from_secs(20),
        || {
            let (c, client) = (&c, &ro_default);
            async move {
                client.batch_execute("BEGIN").await.ok()?;
                let on_standby = served_by_standby(c, client).await;
                client.batch_execute("COMMIT").await.ok()?;
                on_standby.then_some(())
            }
        },
    )
    .await?;

    client
        .batch_execute("SET application_name = 'routing-test'")
        .await?;
    let on_standby = client
        .query_one(
            "SELECT current_setting('application_name'), current_setting('pgha_test.standby')::bool",
            &[],
        )
        .await?;
    assert_eq!(on_standby.get::<_, String>(0), "routing-test");
    client.batch_execute("BEGIN").await?;
    let on_primary = client
        .query_one(
            "SELECT current_setting('application_name'), current_setting('pgha_test.standby')::bool",
            &[],
        )
        .await?;
    client.batch_execute("COMMIT").await?;
    assert_eq!(on_primary.get::<_, String>(0), "routing-test");
    assert!(!on_primary.get::<_, bool>(1));

    // A named prepared statement used outside and inside a transaction.
    let st = client
        .prepare("SELECT current_setting('pgha_test.standby')::bool, $1::int + 1")
        .await?;
    for i in 0..10i32 {
        let row = client.query_one(&st, &[&i]).await?;
        assert_eq!(row.get::<_, i32>(1), i + 1);
    }
    client.batch_execute("BEGIN").await?;
    let row = client.query_one(&st, &[&100i32]).await?;
    assert!(
        !row.get::<_, bool>(0),
        "statement re-prepared on the primary inside the transaction"
    );
    assert_eq!(row.get::<_, i32>(1), 101);
    client.batch_execute("COMMIT").await?;

    let ro = connect(c.ro(), "alice", ALICE_PW).await?;
    assert!(
        served_by_standby(&c, &ro).await,
        "ro listener serves from the standby"
    );
    let primary = connect(c.primary_addr(), "alice", ALICE_PW).await?;
    assert!(
        !served_by_standby(&c, &primary).await,
        "primary listener serves from the primary"
    );
    Ok(())
}

/// Client units the proxy has sent to the standby so far (the monitor's
/// per-node counter; no SQL can tell which node answered).
fn standby_served(c: &Cluster) -> u64 {
    let standby = c.standby.as_ref().expect("standby");
    let stats = c.proxy.shared.monitor.stats(&node("pg2", standby));
    stats.served.load(std::sync::atomic::Ordering::Relaxed)
}

/// Every read right after a write sees it, wherever it runs. Then, with no
/// writer and the standby caught up, the reads go to the standby: a proxy
/// that sent every read to the primary would pass the first half only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_see_own_writes() -> anyhow::Result<()> {
    let c = start(true, "").await?;
    c.wait_standby_healthy().await?;
    let client = connect(c.rw(), "alice", ALICE_PW).await?;
    let insert = client
        .prepare("INSERT INTO t (v) VALUES ($1) RETURNING id")
        .await?;
    let read = client
        .prepare("SELECT count(*) FROM t WHERE id = $1")
        .await?;
    let mut ids = Vec::new();
    for i in 0..500i32 {
        let id: i32 = client.query_one(&insert, &[&i]).await?.get(0);
        let row = client.query_one(&read, &[&id]).await?;
        assert_eq!(
            row.get::<_, i64>(0),
            1,
            "iteration {i}: read did not see its own write"
        );
        ids.push(id);
    }

    // No writer now: once the standby has replayed all the primary wrote,
    // nothing a read could need is missing there.
    let standby = c.standby.as_ref().expect("standby");
    standby.wait_caught_up(&c.primary, Duration::from_secs(20))?;
    let first = ids[0];
    pgha_testkit::wait_until_async(
        "a read served by the caught-up standby",
        Duration::from_secs(20),
        || {
            let (c, client, read) = (&c, &client, &read);
            async move {
                let before = standby_served(c);
                client.query_one(read, &[&first]).await.ok()?;
                (standby_served(c) > before).then_some(())
            }
        },
    )
    .await?;
    let sample: Vec<i32> = ids.iter().copied().step_by(10).collect();
    let before = standby_served(&c);
    for id in &sample {
        let row = client.query_one(&read, &[id]).await?;
        assert_eq!(row.get::<_, i64>(0), 1, "row {id} missing");
    }
    let on_standby = (standby_served(&c) - before) as usize;
    // A share, not all: background WAL on the primary (autovacuum after
    // the inserts) may briefly put the standby behind again.
    assert!(
        on_standby * 2 >= sample.len(),
        "{on_standby} of {} reads served by the caught-up standby",
        sample.len()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_refusal_is_retried_on_the_primary_and_standby_loss_is_invisible(
) -> anyhow::Result<()> {
    let mut c = start(true, "catalog_refresh = \"200ms\"").await?;
    // Declared STABLE, but writes: the standby refuses it with 25006.
    c.primary.psql(
        "postgres",
        "CREATE FUNCTION f_lies() RETURNS bigint LANGUAGE sql STABLE AS $$ SELECT nextval('t_id_seq') $$",
    )?;
    let standby = c.standby.as_ref().expect("standby");
    standby.wait_caught_up(&c.primary, Duration::from_secs(20))?;
    c.wait_standby_healthy().await?;
    let client = connect(c.rw(), "alice", ALICE_PW).await?;
    let written = 5i64;
    client
        .batch_execute("INSERT INTO t (v) SELECT g FROM generate_series(1, 5) g")
        .await?;
    standby.wait_caught_up(&c.primary, Duration::from_secs(20))?;
    pgha_testkit::wait_until_async("reads on the standby", Duration::from_secs(20), || {
        let (c, client) = (&c, &client);
        async move { served_by_standby(c, client).await.then_some(()) }
    })
    .await?;
    // Simple protocol, then extended: no error reaches the client.
    let rows = client.simple_query("SELECT f_lies()").await?;
    assert!(rows
        .iter()
        .any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_))));
    let v: i64 = client.query_one("SELECT f_lies() + 0", &[]).await?.get(0);
    assert!(v > 0);
    let again: i64 = client.query_one("SELECT f_lies()", &[]).await?.get(0);
    assert!(again > v);

    // The standby dies: reads carry on (on the primary), without errors.
    c.standby.as_mut().expect("standby").kill();
    for i in 0..50 {
        let row = client.query_one("SELECT count(*) FROM t", &[]).await?;
        assert_eq!(row.get::<_, i64>(0), written, "read {i}: rows missing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!served_by_standby(&c, &client).await);
    Ok(())
}
