//! Bad input and cancellation: garbage, truncated and oversized messages end
//! only the offending client (with 08P01 where it can still be told);
//! CancelRequest through the proxy cancels the right query.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking

mod common;

use common::*;
use pgha_proxy::codec::backend::error_field;
use pgha_proxy::codec::BackendMessage;
use std::time::Duration;

/// Reads until an ErrorResponse or close; returns its SQLSTATE (if any).
async fn error_code(raw: &mut Raw) -> anyhow::Result<Option<String>> {
    while let Some(msg) = raw.next().await? {
        if let BackendMessage::ErrorResponse(f) = msg {
            return Ok(error_field(&f, b'C').map(|c| String::from_utf8_lossy(c).into_owned()));
        }
    }
    Ok(None)
}

/// After an error, the proxy closes the connection.
async fn closed(raw: &mut Raw) -> anyhow::Result<()> {
    while raw.next().await?.is_some() {}
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_ends_only_that_client() -> anyhow::Result<()> {
    let c = start(false, "max_message_bytes = 1048576").await?;
    let bystander = connect(c.rw(), "alice", ALICE_PW).await?;
    bystander
        .batch_execute("BEGIN; INSERT INTO t (v) VALUES (1)")
        .await?;

    // Garbage instead of a startup packet.
    let mut raw = Raw::connect(c.rw()).await?;
    raw.send(b"GARBAGE! this is not postgres").await?;
    assert_eq!(error_code(&mut raw).await?.as_deref(), Some("08P01"));
    closed(&mut raw).await?;

    // Startup packet claiming a huge length.
    let mut raw = Raw::connect(c.rw()).await?;
    raw.send(&[0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0]).await?;
    assert_eq!(error_code(&mut raw).await?.as_deref(), Some("08P01"));

    // After login: a length below 4, a huge length, an unknown type, a bad body.
    let bad: [&[u8]; 4] = [
        b"Q\0\0\0\x02",
        b"Q\x7f\xff\xff\xf0",
        b"!\0\0\0\x04",
        b"D\0\0\0\x07Xab\0",
    ];
    for msg in bad {
        let mut raw = Raw::login(c.rw(), "alice", ALICE_PW).await?;
        raw.send(msg).await?;
        assert_eq!(
            error_code(&mut raw).await?.as_deref(),
            Some("08P01"),
            "for {msg:?}"
        );
        closed(&mut raw).await?;
    }

    // Truncated: half a message, then the client goes away.
    let mut raw = Raw::login(c.rw(), "alice", ALICE_PW).await?;
    raw.send(b"Q\0\0\0\x20SELECT").await?;
    drop(raw);

    // The bystander's transaction is intact.
    bystander
        .batch_execute("INSERT INTO t (v) VALUES (2); COMMIT")
        .await?;
    let n: i64 = bystander
        .query_one("SELECT count(*) FROM t", &[])
        .await?
        .get(0);
    assert_eq!(n, 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_request_cancels_the_right_query() -> anyhow::Result<()> {
    let c = start(false, "").await?;
    let victim = connect(c.rw(), "alice", ALICE_PW).await?;
    let other = connect(c.rw(), "alice", ALICE_PW).await?;
    let token = victim.cancel_token();
    let other_sleep =
        tokio::spawn(async move { other.simple_query("SELECT pg_sleep(1)").await.map(|_| ()) });
    let sleep =
        tokio::spawn(async move { victim.simple_query("SELECT pg_sleep(60)").await.map(|_| ()) });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !sleep.is_finished() {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "query was not cancelled"
        );
        token.cancel_query(tokio_postgres::NoTls).await?;
        let _ = tokio::time::timeout(Duration::from_millis(200), async {
            while !sleep.is_finished() {
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }
    let err = sleep.await?.expect_err("the sleep must be cancelled");
    assert_eq!(
        err.as_db_error().map(|d| d.code().code()),
        Some("57014"),
        "{err:?}"
    );
    other_sleep
        .await?
        .expect("the other session's query is not cancelled");
    Ok(())
}
