//! Extended-protocol details through the rw listener with a hand-driven
//! client: Flush before Sync answers at once, pipelined units answer in
//! order, and a unit with an error skips to its Sync while the next unit runs.

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
