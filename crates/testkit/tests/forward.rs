//! `pgha-testkit forward` as a black box: a real PostgreSQL query through
//! the null forwarder, in both modes. The forwarder is stopped by PID (its
//! guard) when the test ends, also on a panic.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking

use pgha_testkit::pg::{PgServer, SUPERUSER_PASSWORD};
use pgha_testkit::{free_port, wait_until, ProcessGuard};
use std::process::{Command, Stdio};
use std::time::Duration;

fn start_forwarder(upstream: u16, mode: &str) -> (ProcessGuard, u16) {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_pgha-testkit"))
        .args(["forward", "--mode", mode, "--runtimes", "2"])
        .arg(format!("--listen=127.0.0.1:{port}"))
        .arg(format!("--upstream=127.0.0.1:{upstream}"))
        .stdout(Stdio::null())
        .spawn()
        .expect("start pgha-testkit forward");
    let guard = ProcessGuard::new(format!("forward-{mode}"), child, false);
    wait_until("the forwarder to listen", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    })
    .expect("forwarder listening");
    (guard, port)
}

async fn query_through(port: u16) -> anyhow::Result<i32> {
    let conninfo = format!(
        "host=127.0.0.1 port={port} user=postgres password={SUPERUSER_PASSWORD} dbname=postgres"
    );
    let (client, conn) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await?;
    let task = tokio::spawn(conn);
    let row = client.query_one("SELECT 40 + $1::int", &[&2i32]).await?;
    // A large result crosses the forwarder in many reads.
    let big = client
        .query_one(
            "SELECT length(string_agg(md5(g::text), '')) FROM generate_series(1, 20000) g",
            &[],
        )
        .await?;
    assert_eq!(big.get::<_, i32>(0), 20000 * 32);
    drop(client);
    task.await??;
    Ok(row.get(0))
}

#[tokio::test]
async fn a_query_goes_through_both_modes() {
    let pg = tokio::task::spawn_blocking(PgServer::start)
        .await
        .unwrap()
        .expect("start PostgreSQL");
    for mode in ["threads", "epoll"] {
        let (guard, port) = tokio::task::spawn_blocking({
            let upstream = pg.port;
            move || start_forwarder(upstream, mode)
        })
        .await
        .unwrap();
        let got = query_through(port)
            .await
            .expect("query through the forwarder");
        assert_eq!(got, 42, "{mode}");
        drop(guard);
    }
}
