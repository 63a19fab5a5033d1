//! Logins answered from the login cache: idle clients hold no PostgreSQL
//! backend (counted in `pg_stat_activity`) and still run queries correctly
//! once they send work; a lazily opened backend whose login-time
//! ParameterStatus differs from what the client was told sends the
//! difference; a database dropped since the cached login ends the session
//! with PostgreSQL's own FATAL at the first statement.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking

mod common;

use common::*;
use pgha_proxy::codec::BackendMessage as B;
use std::time::Duration;

/// Client backends of the test's clients (`application_name`) on `pg`.
fn backends(pg: &pgha_testkit::pg::PgServer, app: &str) -> anyhow::Result<usize> {
    let out = pg.psql(
        "postgres",
        &format!(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE backend_type = 'client backend' AND application_name = '{app}'"
        ),
    )?;
    Ok(out.trim().parse()?)
}

async fn connect_app(
    addr: std::net::SocketAddr,
    app: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let s = format!(
        "{} application_name={app}",
        conn_str(addr, "bob", BOB_PW, "postgres")
    );
    let (client, conn) = tokio_postgres::connect(&s, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_hold_no_backends() -> anyhow::Result<()> {
    // More idle clients than the server's max_connections (200).
    const CLIENTS: usize = 300;
    const WAVE: usize = 25;
    let c = start(false, "").await?;
    let pg = &c.primary;
    let count = || tokio::task::block_in_place(|| backends(pg, "lazy-idle"));
    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        clients.push(connect_app(c.rw(), "lazy-idle").await?);
    }
    // The first login of its kind opens a backend; the rest come from the cache.
    let held = count()?;
    assert!(
        held <= 1,
        "{CLIENTS} idle logged-in clients hold {held} backends"
    );
    // Every client then works, a wave at a time (each one that sent work
    // holds its backend until it disconnects: no server-side pooling, and
    // 300 at once would exceed max_connections).
    let mut next = 0;
    while !clients.is_empty() {
        let wave: Vec<_> = clients.drain(..WAVE.min(clients.len())).collect();
        let answers = futures::future::join_all(wave.iter().enumerate().map(|(i, cl)| {
            let arg = (next + i) as i32;
            async move {
                let v: i32 = cl.query_one("SELECT $1::int + 1", &[&arg]).await?.get(0);
                anyhow::ensure!(v == arg + 1, "client {arg} got {v}");
                Ok(())
            }
        }))
        .await;
        for a in answers {
            a?;
        }
        assert_eq!(count()?, wave.len(), "one backend per client that worked");
        if next == 0 {
            // Writes through a lazily started session, read by another.
            wave[7]
                .batch_execute("INSERT INTO t (v) VALUES (4242)")
                .await?;
            let n: i64 = wave[8]
                .query_one("SELECT count(*) FROM t WHERE v = 4242", &[])
                .await?
                .get(0);
            assert_eq!(n, 1);
        }
        next += wave.len();
        drop(wave);
        pgha_testkit::wait_until_async(
            "backends closed with their clients",
            Duration::from_secs(20),
            || async { (count().ok()? == 0).then_some(()) },
        )
        .await?;
    }
    assert_eq!(next, CLIENTS);
    Ok(())
}

fn parameter_status(msgs: &[Option<B>], name: &str) -> Option<String> {
    msgs.iter().flatten().find_map(|m| match m {
        B::ParameterStatus { name: n, value } if &n[..] == name.as_bytes() => {
            Some(String::from_utf8_lossy(value).into_owned())
        }
        _ => None,
    })
}

fn first_row_value(msgs: &[Option<B>]) -> Option<String> {
    msgs.iter().flatten().find_map(|m| match m {
        B::Other { tag: b'D', body } if body.len() > 6 => {
            Some(String::from_utf8_lossy(&body[6..]).into_owned())
        }
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_parameter_status_is_forwarded() -> anyhow::Result<()> {
    let c = start(false, "").await?;
    // A real login fills the cache.
    let first = Raw::login(c.rw(), "alice", ALICE_PW).await?;
    let before = first.param("TimeZone").map(str::to_string);
    assert!(before.is_some(), "login reports TimeZone");
    assert_ne!(before.as_deref(), Some("Asia/Tokyo"));
    c.primary
        .psql("postgres", "ALTER ROLE alice SET TimeZone = 'Asia/Tokyo'")?;

    // Answered from the cache: the old value, no backend yet.
    let mut lazy = Raw::login(c.rw(), "alice", ALICE_PW).await?;
    assert_eq!(lazy.param("TimeZone").map(str::to_string), before);
    // The backend opened for the first query logs in with the role's new
    // setting: the client is told before the query's results.
    let msgs = lazy.query("SHOW TimeZone").await?;
    assert_eq!(
        parameter_status(&msgs, "TimeZone").as_deref(),
        Some("Asia/Tokyo"),
        "{msgs:?}"
    );
    assert_eq!(first_row_value(&msgs).as_deref(), Some("Asia/Tokyo"));
    // A value that did not change is not repeated.
    assert_eq!(parameter_status(&msgs, "server_version"), None, "{msgs:?}");
    assert!(matches!(msgs.last(), Some(Some(B::ReadyForQuery { .. }))));

    // The cache learned the new value from that backend.
    let next = Raw::login(c.rw(), "alice", ALICE_PW).await?;
    assert_eq!(next.param("TimeZone"), Some("Asia/Tokyo"));
    // in_hot_standby never reaches rw clients; the ro listener shows it.
    assert_eq!(next.param("in_hot_standby"), None);
    let ro = Raw::login(c.ro(), "alice", ALICE_PW).await?;
    assert_eq!(ro.param("in_hot_standby"), Some("off"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_database_fails_at_first_statement() -> anyhow::Result<()> {
    let c = start(false, "").await?;
    c.primary.psql("postgres", "CREATE DATABASE lazydb")?;
    let first = Raw::login_to(c.rw(), "alice", ALICE_PW, "lazydb").await?;
    drop(first);
    c.primary
        .psql("postgres", "DROP DATABASE lazydb WITH (FORCE)")?;
    // Cached: the login itself succeeds without a backend...
    let mut lazy = Raw::login_to(c.rw(), "alice", ALICE_PW, "lazydb").await?;
    // ...and the first statement gets the server's FATAL, then the end.
    let msgs = lazy.query("SELECT 1").await?;
    let fatal = msgs.iter().flatten().find_map(|m| match m {
        B::ErrorResponse(f) => Some(f.clone()),
        _ => None,
    });
    let fatal = fatal.ok_or_else(|| anyhow::anyhow!("no error: {msgs:?}"))?;
    let field = |c: u8| pgha_proxy::codec::backend::error_field(&fatal, c).map(|v| v.to_vec());
    assert_eq!(field(b'V').as_deref(), Some(&b"FATAL"[..]));
    assert_eq!(field(b'C').as_deref(), Some(&b"3D000"[..]));
    assert!(matches!(msgs.last(), Some(None)), "closed: {msgs:?}");
    // A new login (the cached entry is still there) behaves the same, and
    // other databases are unaffected.
    let ok = connect(c.rw(), "alice", ALICE_PW).await?;
    assert_eq!(ok.query_one("SELECT 1", &[]).await?.get::<_, i32>(0), 1);
    Ok(())
}
