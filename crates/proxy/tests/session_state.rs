//! Session settings follow PostgreSQL's transaction rules when the proxy
//! replays them on another backend: a SET inside a transaction that rolls
//! back (explicitly, or because it failed) is undone, one inside a committed
//! transaction stays, ROLLBACK TO SAVEPOINT undoes the SETs after the
//! savepoint. Checked by reading `work_mem` on the standby, where the proxy
//! replays the session's settings before each read.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking

mod common;

use common::*;
use std::time::Duration;

/// `work_mem` as the standby sees it in this session (waits until a read is
/// actually served by the standby).
async fn standby_work_mem(c: &tokio_postgres::Client) -> anyhow::Result<String> {
    pgha_testkit::wait_until_async(
        "a read served by the standby",
        Duration::from_secs(20),
        || async move {
            let rows = c
                .simple_query("SELECT current_setting('work_mem'), current_setting('pgha_test.standby')::bool")
                .await
                .ok()?;
            rows.iter().find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) if r.get(1) == Some("t") => {
                    r.get(0).map(str::to_string)
                }
                _ => None,
            })
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolled_back_set_is_not_replayed() -> anyhow::Result<()> {
    let c = start(true, "").await?;
    c.wait_standby_healthy().await?;
    let mut client = connect(c.rw(), "alice", ALICE_PW).await?;
    assert_eq!(standby_work_mem(&client).await?, "4MB");

    client
        .batch_execute("BEGIN; SET work_mem = '7MB'; ROLLBACK")
        .await?;
    assert_eq!(standby_work_mem(&client).await?, "4MB", "one-unit rollback");

    client.batch_execute("BEGIN").await?;
    client.batch_execute("SET work_mem = '7MB'").await?;
    client.batch_execute("ROLLBACK").await?;
    assert_eq!(standby_work_mem(&client).await?, "4MB", "ROLLBACK");

    client.batch_execute("BEGIN").await?;
    client.batch_execute("SET work_mem = '8MB'").await?;
    assert!(client.batch_execute("SELECT 1/0").await.is_err());
    client.batch_execute("COMMIT").await?; // answered ROLLBACK
    assert_eq!(
        standby_work_mem(&client).await?,
        "4MB",
        "failed transaction"
    );

    let tx = client.transaction().await?;
    tx.batch_execute("SET work_mem = '9MB'").await?;
    tx.commit().await?;
    assert_eq!(standby_work_mem(&client).await?, "9MB", "committed SET");

    client.batch_execute("BEGIN").await?;
    client.batch_execute("SET work_mem = '10MB'").await?;
    client.batch_execute("SAVEPOINT a").await?;
    client.batch_execute("SET work_mem = '11MB'").await?;
    client.batch_execute("ROLLBACK TO SAVEPOINT a").await?;
    client.batch_execute("COMMIT").await?;
    assert_eq!(standby_work_mem(&client).await?, "10MB", "savepoint");

    client.batch_execute("BEGIN").await?;
    client.batch_execute("SAVEPOINT a").await?;
    client.batch_execute("SET work_mem = '12MB'").await?;
    client.batch_execute("RELEASE SAVEPOINT a").await?;
    client.batch_execute("COMMIT").await?;
    assert_eq!(
        standby_work_mem(&client).await?,
        "12MB",
        "released savepoint"
    );

    client.batch_execute("SET work_mem = '5MB'").await?;
    assert_eq!(standby_work_mem(&client).await?, "5MB", "autocommit SET");
    Ok(())
}
