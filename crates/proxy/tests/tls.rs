//! TLS towards clients: with `tls_cert_file`/`tls_key_file` set (a
//! self-signed certificate made here), psql with `sslmode=require` connects
//! over TLS, plain clients still work, and the JDBC workload of `drivers.rs`
//! runs over TLS; without them `sslmode=require` is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

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

/// Turns TLS on in `server` with a certificate for 127.0.0.1 signed by `ca`.
fn server_tls(
    server: &pgha_testkit::pg::PgServer,
    ca: &pgha_tls::certs::Authority,
) -> anyhow::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let pem = ca.issue("pg1", &pgha_tls::certs::server_names("127.0.0.1"))?;
    // Next to the data directory, owned by the server's OS user.
    let owner = std::fs::metadata(&server.data_dir)?;
    for (name, text) in [("server.crt", &pem.cert), ("server.key", &pem.key)] {
        let path = server.dir.join(name);
        std::fs::write(&path, text)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        std::os::unix::fs::chown(&path, Some(owner.uid()), Some(owner.gid()))?;
    }
    let file = |name: &str| server.dir.join(name).display().to_string();
    for sql in [
        format!("ALTER SYSTEM SET ssl_cert_file = '{}'", file("server.crt")),
        format!("ALTER SYSTEM SET ssl_key_file = '{}'", file("server.key")),
        "ALTER SYSTEM SET ssl = on".to_string(),
        "SELECT pg_reload_conf()".to_string(),
    ] {
        server.psql("postgres", &sql)?;
    }
    Ok(())
}

const SSL_IN_USE: &str = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";

/// `backend_tls = "verify-full"` in transaction pooling: every transaction's
/// backend is TLS (`pg_stat_ssl`), pooled backends are reused, and one the
/// server closed while it sat idle in the pool is noticed (a TLS stream has
/// no `try_read`) and replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_tls_in_transaction_pooling() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = pgha_tls::certs::Authority::generate("test")?;
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, ca.pem().cert)?;
    let extra = format!(
        "pool_mode = \"transaction\"\nbackend_tls = \"verify-full\"\nbackend_ca_file = {:?}\n",
        ca_file.display().to_string()
    );
    let c = start(false, &extra).await?;
    server_tls(&c.primary, &ca)?;
    let rw = c.rw();
    let client =
        pgha_testkit::wait_until_async("a TLS backend", Duration::from_secs(30), || async move {
            let client = connect(rw, "alice", ALICE_PW).await.ok()?;
            let row = client.query_one(SSL_IN_USE, &[]).await.ok()?;
            row.get::<_, bool>(0).then_some(client)
        })
        .await?;
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await?
        .get(0);
    let again: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await?
        .get(0);
    assert_eq!(pid, again, "the pooled TLS backend is reused");
    // The server ends the idle pooled backend; the next transaction gets a
    // new one, over TLS.
    c.primary
        .psql("postgres", &format!("SELECT pg_terminate_backend({pid})"))?;
    pgha_testkit::wait_until("the backend to exit", Duration::from_secs(10), || {
        let sql = format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}");
        let n = c.primary.psql("postgres", &sql).ok()?;
        (n.trim() == "0").then_some(())
    })?;
    let row = client.query_one(SSL_IN_USE, &[]).await?;
    assert!(row.get::<_, bool>(0));
    let new: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await?
        .get(0);
    assert_ne!(new, pid);
    Ok(())
}
