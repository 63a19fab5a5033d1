//! Extended-protocol details through the rw listener with a hand-driven
//! client: Flush before Sync answers at once, pipelined units answer in
//! order, and a unit with an error skips to its Sync while the next unit runs.

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

/// Tags of messages up to and including the next ReadyForQuery (or `stop`).
async fn tags_until(raw: &mut Raw, stop: u8) -> anyhow::Result<Vec<u8>> {
    let mut tags = Vec::new();
    loop {
        let m = raw.next().await?.ok_or_else(|| anyhow::anyhow!("closed"))?;
        let tag = match &m {
            B::ReadyForQuery { .. } => b'Z',
            B::ErrorResponse(_) => b'E',
            B::NoticeResponse(_) => continue,
            B::ParameterStatus { .. } => continue,
            B::Other { tag, .. } => *tag,
            _ => b'?',
        };
        tags.push(tag);
        if tag == stop {
            return Ok(tags);
        }
    }
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn no_params() -> Bytes {
    Bytes::from_static(&[0, 0])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_pipelining_and_errors() -> anyhow::Result<()> {
    let c = start(true, "").await?;
    c.wait_standby_healthy().await?;
    let mut raw = Raw::login(c.rw(), "alice", ALICE_PW).await?;

    // Parse + Describe + Flush: answered before any Sync.
    raw.send(&encode(&[
        F::Parse {
            name: b("s1"),
            sql: b("SELECT 1"),
            param_types: no_params(),
        },
        F::Describe {
            kind: b'S',
            name: b("s1"),
        },
        F::Flush,
    ]))
    .await?;
    assert_eq!(tags_until(&mut raw, b'T').await?, b"1tT");
    let bind = |stmt: &str| F::Bind {
        portal: b(""),
        statement: b(stmt),
        rest: Bytes::from_static(&[0, 0, 0, 0, 0, 0]),
    };
    let exec = F::Execute {
        portal: b(""),
        max_rows: 0,
    };
    raw.send(&encode(&[bind("s1"), exec.clone(), F::Sync]))
        .await?;
    assert_eq!(tags_until(&mut raw, b'Z').await?, b"2DCZ");

    // Three units in one write, the middle one failing: answers in order,
    // the failing one skips to its Sync, the third runs.
    raw.send(&encode(&[
        bind("s1"),
        exec.clone(),
        F::Sync,
        F::Parse {
            name: b(""),
            sql: b("SELECT 1/0"),
            param_types: no_params(),
        },
        bind(""),
        exec.clone(),
        F::Sync,
        F::Query {
            sql: b("BEGIN; INSERT INTO t (v) VALUES (7); COMMIT"),
        },
        bind("s1"),
        exec,
        F::Sync,
    ]))
    .await?;
    assert_eq!(tags_until(&mut raw, b'Z').await?, b"2DCZ");
    assert_eq!(tags_until(&mut raw, b'Z').await?, b"1EZ");
    assert_eq!(tags_until(&mut raw, b'Z').await?, b"CCCZ");
    assert_eq!(tags_until(&mut raw, b'Z').await?, b"2DCZ");
    raw.send(&encode(&[F::Terminate])).await?;
    Ok(())
}

/// Runs `msgs` (one unit, ending with Sync) and returns the first column
/// of its first DataRow (text format), `None` without one.
async fn first_value(raw: &mut Raw, msgs: &[F]) -> anyhow::Result<Option<String>> {
    raw.send(&encode(msgs)).await?;
    let mut value = None;
    loop {
        match raw.next().await?.ok_or_else(|| anyhow::anyhow!("closed"))? {
            B::ReadyForQuery { .. } => return Ok(value),
            B::ErrorResponse(e) => anyhow::bail!("error: {}", String::from_utf8_lossy(&e)),
            B::Other { tag: b'D', body } if value.is_none() && body.len() >= 6 => {
                value = Some(String::from_utf8_lossy(&body[6..]).into_owned());
            }
            _ => {}
        }
    }
}

/// Waits until `unit` (a statement returning `current_setting('pgha_test.standby')`)
/// runs on the standby.
async fn standby_serves(
    raw: Raw,
    unit: Vec<F>,
    what: &str,
) -> anyhow::Result<tokio::sync::Mutex<Raw>> {
    let raw = tokio::sync::Mutex::new(raw);
    pgha_testkit::wait_until_async(what, std::time::Duration::from_secs(20), || {
        let (raw, unit) = (&raw, &unit);
        async move {
            let mut r = raw.lock().await;
            let v = first_value(&mut r, unit).await.ok()?;
            (v.as_deref() == Some("true")).then_some(())
        }
    })
    .await?;
    Ok(raw)
}

/// A named statement closed and parsed again with another text routes by
/// the new text: the proxy keeps each statement's analysis on the session's
/// record, made at Parse, and a Bind uses the record's current one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reparsed_statement_routes_by_its_new_text() -> anyhow::Result<()> {
    let c = start(true, "").await?;
    c.wait_standby_healthy().await?;
    let mut raw = Raw::login(c.rw(), "alice", ALICE_PW).await?;
    let parse = |sql: &str| F::Parse {
        name: b("s"),
        sql: b(sql),
        param_types: no_params(),
    };
    let run = || {
        vec![
            F::Bind {
                portal: b(""),
                statement: b("s"),
                rest: Bytes::from_static(&[0, 0, 0, 0, 0, 0]),
            },
            F::Execute {
                portal: b(""),
                max_rows: 0,
            },
            F::Sync,
        ]
    };
    let close = [
        F::Close {
            kind: b'S',
            name: b("s"),
        },
        F::Sync,
    ];
    let read = "SELECT current_setting('pgha_test.standby')";
    let write = "WITH w AS (INSERT INTO t (v) VALUES (1) RETURNING v) \
                 SELECT current_setting('pgha_test.standby') FROM w";

    let mut first = vec![parse(read)];
    first.extend(run());
    first_value(&mut raw, &first).await?;
    let raw = standby_serves(raw, run(), "the read-only statement on the standby").await?;
    let mut raw = raw.into_inner();

    first_value(&mut raw, &close).await?;
    let mut again = vec![parse(write)];
    again.extend(run());
    assert_eq!(
        first_value(&mut raw, &again).await?.as_deref(),
        Some("false"),
        "the new text writes: primary"
    );
    for _ in 0..3 {
        assert_eq!(
            first_value(&mut raw, &run()).await?.as_deref(),
            Some("false"),
            "Bind of the re-parsed statement routes by its new text"
        );
    }

    first_value(&mut raw, &close).await?;
    let mut back = vec![parse(read)];
    back.extend(run());
    first_value(&mut raw, &back).await?;
    let raw = standby_serves(
        raw,
        run(),
        "the statement parsed back to a read on the standby",
    )
    .await?;
    let mut raw = raw.into_inner();
    raw.send(&encode(&[F::Terminate])).await?;
    Ok(())
}
