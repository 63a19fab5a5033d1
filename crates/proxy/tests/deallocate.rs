//! SQL `DEALLOCATE name` / `DEALLOCATE ALL` / `DISCARD ALL` remove the
//! client's protocol-level prepared statements, which the proxy may have
//! prepared on both backends or on the other one only: the statement must be
//! gone for the client (a Bind fails, a Parse of the same name succeeds on
//! either backend), and a `DEALLOCATE` of a statement the proxy prepared on
//! the standby only must succeed wherever it runs.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking

mod common;

use bytes::{Bytes, BytesMut};
use common::*;
use pgha_proxy::codec::{BackendMessage as B, FrontendMessage as F};

fn encode(msgs: &[F]) -> BytesMut {
    let mut out = BytesMut::new();
    for m in msgs {
        m.encode(&mut out);
    }
    out
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// The SQLSTATE of an ErrorResponse body.
fn sqlstate(body: &[u8]) -> String {
    let mut rest = body;
    while let Some((&field, tail)) = rest.split_first() {
        let end = tail.iter().position(|&c| c == 0).unwrap_or(tail.len());
        if field == b'C' {
            return String::from_utf8_lossy(&tail[..end]).into_owned();
        }
        rest = tail.get(end + 1..).unwrap_or(&[]);
    }
    String::new()
}

/// Runs `msgs` (ending with Sync, or a simple Query) and returns the first
/// column of its first DataRow, or the SQLSTATE of its first error.
async fn outcome(raw: &mut Raw, msgs: &[F]) -> anyhow::Result<Result<Option<String>, String>> {
    raw.send(&encode(msgs)).await?;
    let mut value = None;
    let mut error = None;
    loop {
        match raw.next().await?.ok_or_else(|| anyhow::anyhow!("closed"))? {
            B::ReadyForQuery { .. } => return Ok(error.map_or(Ok(value), Err)),
            B::ErrorResponse(e) if error.is_none() => {
                error = Some(format!("{} {}", sqlstate(&e), String::from_utf8_lossy(&e)))
            }
            B::Other { tag: b'D', body } if value.is_none() && body.len() >= 6 => {
                value = Some(String::from_utf8_lossy(&body[6..]).into_owned());
            }
            _ => {}
        }
    }
}

/// Like [`outcome`], failing on an error.
async fn value(raw: &mut Raw, msgs: &[F]) -> anyhow::Result<Option<String>> {
    outcome(raw, msgs)
        .await?
        .map_err(|e| anyhow::anyhow!("{msgs:?}: {e}"))
}

fn query(sql: &str) -> Vec<F> {
    vec![F::Query { sql: b(sql) }]
}

fn parse(name: &str, sql: &str) -> F {
    F::Parse {
        name: b(name),
        sql: b(sql),
        param_types: Bytes::from_static(&[0, 0]),
    }
}

fn run(name: &str) -> Vec<F> {
    vec![
        F::Bind {
            portal: b(""),
            statement: b(name),
            rest: Bytes::from_static(&[0, 0, 0, 0, 0, 0]),
        },
        F::Execute {
            portal: b(""),
            max_rows: 0,
        },
        F::Sync,
    ]
}

fn parse_run(name: &str, sql: &str) -> Vec<F> {
    let mut v = vec![parse(name, sql)];
    v.extend(run(name));
    v
}

const READ: &str = "SELECT current_setting('pgha_test.standby')";

/// Waits until statement `name` (returning `current_setting('pgha_test.standby')`)
/// runs on the standby: the proxy has then prepared it there.
async fn on_standby(raw: Raw, name: &str) -> anyhow::Result<Raw> {
    let raw = tokio::sync::Mutex::new(raw);
    pgha_testkit::wait_until_async(
        "the statement runs on the standby",
        std::time::Duration::from_secs(20),
        || {
            let raw = &raw;
            async move {
                let mut r = raw.lock().await;
                let v = value(&mut r, &run(name)).await.ok()?;
                (v.as_deref() == Some("true")).then_some(())
            }
        },
    )
    .await?;
    Ok(raw.into_inner())
}

/// Runs statement `name` inside a writing transaction, so on the primary:
/// the proxy prepares it there too.
async fn on_primary(raw: &mut Raw, name: &str) -> anyhow::Result<()> {
    value(raw, &query("BEGIN")).await?;
    value(raw, &query("INSERT INTO t (v) VALUES (1)")).await?;
    assert_eq!(value(raw, &run(name)).await?.as_deref(), Some("false"));
    value(raw, &query("COMMIT")).await?;
    Ok(())
}

/// After the statement is gone: a Bind fails as PostgreSQL's would, and a
/// Parse of the same name succeeds, on the standby and on the primary.
async fn gone_then_reusable(raw: Raw, name: &str) -> anyhow::Result<Raw> {
    let mut raw = raw;
    let e = outcome(&mut raw, &run(name)).await?.unwrap_err();
    assert!(
        e.starts_with("26000"),
        "Bind of a deallocated statement: {e}"
    );
    value(&mut raw, &parse_run(name, READ)).await?;
    on_both(raw, name).await
}

/// Runs statement `name` on the primary, then on the standby (after the
/// write on the primary, once read-your-writes lets reads go there): the
/// proxy has it prepared on both.
async fn on_both(raw: Raw, name: &str) -> anyhow::Result<Raw> {
    let mut raw = raw;
    on_primary(&mut raw, name).await?;
    on_standby(raw, name).await
}

/// A statement the proxy prepared on the standby only, deallocated by a
/// simple-query `DEALLOCATE` (which runs on the primary).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_of_a_statement_on_the_standby_only() -> anyhow::Result<()> {
    let c = start(true, "").await?;
    c.wait_standby_healthy().await?;
    let mut raw = Raw::login(c.rw(), "alice", ALICE_PW).await?;
    // Parsed and run in one unit: on the standby, never on the primary.
    let first = value(&mut raw, &parse_run("s", READ)).await?;
    assert_eq!(
        first.as_deref(),
        Some("true"),
        "a healthy standby serves it"
    );
    value(&mut raw, &query("DEALLOCATE s")).await?;
    let raw = gone_then_reusable(raw, "s").await?;
    let mut raw = raw;
    raw.send(&encode(&[F::Terminate])).await?;
    Ok(())
}

/// Statements prepared on both backends, removed by `DEALLOCATE` in the
/// extended protocol, by `DEALLOCATE ALL` and by `DISCARD ALL`; a
/// `DEALLOCATE` that fails (in an aborted transaction) removes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_and_discard_all_of_statements_on_both_backends() -> anyhow::Result<()> {
    let c = start(true, "").await?;
    c.wait_standby_healthy().await?;
    let mut raw = Raw::login(c.rw(), "alice", ALICE_PW).await?;
    value(&mut raw, &parse_run("s", READ)).await?;
    let mut raw = on_both(raw, "s").await?;

    // A failed DEALLOCATE leaves the statement usable.
    value(&mut raw, &query("BEGIN")).await?;
    assert!(outcome(&mut raw, &query("SELECT 1/0")).await?.is_err());
    assert!(outcome(&mut raw, &query("DEALLOCATE s")).await?.is_err());
    value(&mut raw, &query("ROLLBACK")).await?;
    let mut raw = on_both(raw, "s").await?;

    // DEALLOCATE through the extended protocol (as JDBC sends it).
    value(&mut raw, &parse_run("", "DEALLOCATE s")).await?;
    let mut raw = gone_then_reusable(raw, "s").await?;

    // Inside a transaction that rolls back: still gone.
    value(&mut raw, &query("BEGIN")).await?;
    value(&mut raw, &query("DEALLOCATE s")).await?;
    value(&mut raw, &query("ROLLBACK")).await?;
    let mut raw = gone_then_reusable(raw, "s").await?;

    value(&mut raw, &query("DEALLOCATE ALL")).await?;
    let mut raw = gone_then_reusable(raw, "s").await?;

    value(&mut raw, &query("DISCARD ALL")).await?;
    let mut raw = gone_then_reusable(raw, "s").await?;

    // DISCARD PLANS keeps prepared statements.
    value(&mut raw, &query("DISCARD PLANS")).await?;
    value(&mut raw, &run("s")).await?;
    raw.send(&encode(&[F::Terminate])).await?;
    Ok(())
}
