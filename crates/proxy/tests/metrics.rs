//! The proxy's `/metrics` against a real primary: statements by target and
//! reason, transactions, latency, errors by SQLSTATE class, clients by
//! state, and a client counted as waiting while there is no primary.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking

mod common;

use common::*;
use std::time::Duration;

async fn scrape(c: &Cluster) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = c.proxy.http.expect("http listener");
    // A plain HTTP/1.0 GET: the proxy crate has no HTTP client.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    assert!(
        body.starts_with("HTTP/1.0 200") || body.starts_with("HTTP/1.1 200"),
        "{body}"
    );
    assert!(body.contains("text/plain; version=0.0.4"), "{body}");
    body
}

/// The value of the sample `series` (exactly as written, labels included).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_statements_errors_clients_and_waits() -> anyhow::Result<()> {
    let c = start(false, "http_listen = \"127.0.0.1:0\"\n").await?;
    let client = connect(c.rw(), "alice", ALICE_PW).await?;
    client
        .batch_execute("CREATE TABLE metrics_t (i int)")
        .await?;
    client
        .batch_execute("BEGIN; INSERT INTO metrics_t VALUES (1); COMMIT")
        .await?;
    client.simple_query("SELECT 1").await?;
    assert!(client
        .batch_execute("SELECT nosuch FROM metrics_t")
        .await
        .is_err());
    client
        .batch_execute("CREATE TEMP TABLE metrics_tmp (i int)")
        .await?;

    let m = scrape(&c).await;
    let get = |s: &str| value(&m, s).unwrap_or_else(|| panic!("no {s} in\n{m}"));
    assert_eq!(
        get("pgha_proxy_clients{listener=\"rw\",state=\"active\"}"),
        1.0
    );
    assert!(get("pgha_proxy_statements_total{target=\"primary\",reason=\"write\"}") >= 1.0);
    // No standby: a read goes to the primary for that reason.
    assert!(
        get("pgha_proxy_statements_total{target=\"primary\",reason=\"standby_unavailable\"}")
            >= 1.0
    );
    assert_eq!(get("pgha_proxy_errors_total{class=\"42\"}"), 1.0);
    assert!(get("pgha_proxy_transactions_total{target=\"primary\"}") >= 3.0);
    assert!(get("pgha_proxy_statement_duration_seconds_count{target=\"primary\"}") >= 4.0);
    assert_eq!(
        get("pgha_proxy_node_role{node=\"pg1\",role=\"primary\"}"),
        1.0
    );
    let pins = m.lines().find(|l| l.starts_with("pgha_proxy_pins_total{"));
    assert!(
        pins.is_some_and(|l| l.ends_with(" 1")),
        "a temp table pins: {m}"
    );

    // Without a primary the next statement waits, and is counted so.
    c.topology.update(|t| t.primary = None);
    let waiting =
        tokio::spawn(async move { client.simple_query("SELECT 2").await.map(|_| client) });
    pgha_testkit::wait_until_async(
        "a client counted as waiting",
        Duration::from_secs(10),
        || async {
            let m = scrape(&c).await;
            (value(&m, "pgha_proxy_clients_waiting{listener=\"rw\"}") == Some(1.0)).then_some(())
        },
    )
    .await?;
    let primary = node("pg1", &c.primary);
    c.topology.update(|t| t.primary = Some(primary));
    waiting.await??;
    let m = scrape(&c).await;
    assert_eq!(
        value(&m, "pgha_proxy_clients_waiting{listener=\"rw\"}"),
        Some(0.0),
        "{m}"
    );
    assert_eq!(
        value(&m, "pgha_proxy_waits_total{for=\"primary\"}"),
        Some(1.0),
        "{m}"
    );
    Ok(())
}
