//! TLS towards clients: with `tls_cert_file`/`tls_key_file` set (a
//! self-signed certificate made here), psql with `sslmode=require` connects
//! over TLS, plain clients still work, and the JDBC workload of `drivers.rs`
//! runs over TLS; without them `sslmode=require` is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking

mod common;

use common::*;
use std::process::Command;

/// Writes a self-signed certificate and key for 127.0.0.1 into `dir`; the
/// proxy config lines naming them.
fn self_signed(dir: &std::path::Path) -> anyhow::Result<String> {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])?;
    let cert = dir.join("proxy.crt");
    let key = dir.join("proxy.key");
    std::fs::write(&cert, ck.cert.pem())?;
    std::fs::write(&key, ck.key_pair.serialize_pem())?;
    Ok(format!(
        "tls_cert_file = {:?}\ntls_key_file = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    ))
}

fn psql(addr: std::net::SocketAddr, sslmode: &str, sql: &str) -> std::process::Output {
    Command::new(pgha_testkit::pg::pg_bin("psql"))
        .args(["-X", "-A", "-t", "-c", sql])
        .env("PGHOST", addr.ip().to_string())
        .env("PGPORT", addr.port().to_string())
        .env("PGUSER", "alice")
        .env("PGPASSWORD", ALICE_PW)
        .env("PGDATABASE", "postgres")
        .env("PGSSLMODE", sslmode)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("run psql")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_over_tls_and_plain() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let c = start(false, &self_signed(dir.path())?).await?;
    let (rw, ro) = (c.rw(), c.primary_addr());
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        for addr in [rw, ro] {
            let out = psql(addr, "require", "\\conninfo");
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            anyhow::ensure!(out.status.success(), "psql sslmode=require: {text}");
            anyhow::ensure!(text.contains("SSL connection"), "{text}");
            let out = psql(addr, "require", "SELECT 40 + 2");
            anyhow::ensure!(String::from_utf8_lossy(&out.stdout).trim() == "42");
            let out = psql(addr, "disable", "SELECT 40 + 2");
            anyhow::ensure!(
                String::from_utf8_lossy(&out.stdout).trim() == "42",
                "plain: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    })
    .await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_refused_without_tls() -> anyhow::Result<()> {
    let c = start(false, "").await?;
    let rw = c.rw();
    let out = tokio::task::spawn_blocking(move || psql(rw, "require", "SELECT 1")).await?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "sslmode=require must fail: {err}");
    assert!(err.contains("does not support SSL"), "{err}");
    Ok(())
}

/// `tls = "require"`: a client that does not ask for TLS gets FATAL 28000
/// naming the setting; one that does is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_require_refuses_plain_text() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let extra = format!("tls = \"require\"\n{}", self_signed(dir.path())?);
    let c = start(false, &extra).await?;
    let rw = c.rw();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let out = psql(rw, "disable", "SELECT 1");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        anyhow::ensure!(!out.status.success(), "plain text must be refused: {err}");
        anyhow::ensure!(err.contains("tls = \"require\""), "{err}");
        let out = psql(rw, "require", "SELECT 40 + 2");
        anyhow::ensure!(
            String::from_utf8_lossy(&out.stdout).trim() == "42",
            "TLS: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    })
    .await??;
    Ok(())
}
