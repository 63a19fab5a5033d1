//! Real drivers through the rw listener, each running the same small
//! workload against a primary + standby and printing what it saw: read-only
//! transactions (which must run on the standby: `current_setting('pgha_test.port')::int`), one
//! statement executed more than five times (drivers switch to named
//! server-side statements), a read-write transaction (on the primary), reads
//! of its own writes, a rolled-back transaction, autocommit reads.
//!
//! Each workload runs twice: in session mode and in transaction pooling.
//!
//! Drivers: PostgreSQL JDBC (Debian's jar; the Java program is compiled into
//! the test's temp dir), psycopg 3 and asyncpg (a venv), node-postgres (an npm
//! install), tokio-postgres (in-process). `scripts/install-deps` installs them;
//! the Python and Node drivers live in `$PGHA_TEST_DRIVERS` (default
//! `/opt/pgha-test-drivers`). A missing driver fails the test with a message
//! naming that script.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking

mod common;

use anyhow::Context;
use common::*;
use pgha_testkit::tools::{require, require_command};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The expected sum of `v` after the workload's writes: ids 1..=10 with
/// v = 10 * id, then id 1 incremented once.
const SUM: i64 = 551;
const PROGRAM_TIMEOUT: Duration = Duration::from_secs(180);

fn program(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/drivers")
        .join(name)
}

fn drivers_dir() -> PathBuf {
    std::env::var_os("PGHA_TEST_DRIVERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/pgha-test-drivers"))
}

/// The databases every workload runs in: `postgres` in session mode,
/// `pooled` in transaction mode (`database_pool_mode`, two backends per
/// pool: a client's transactions move between backends).
const DATABASES: [&str; 2] = ["postgres", "pooled"];

/// A primary + standby behind the proxy, with table `table (id int primary
/// key, v int)` created directly on the primary in each of [`DATABASES`]
/// and replayed on the standby.
async fn cluster(table: &str, extra: &str) -> anyhow::Result<Cluster> {
    let extra = format!("{extra}pool_size = 2\n[database_pool_mode]\npooled = \"transaction\"\n");
    let c = start(true, &extra).await?;
    c.primary.psql("postgres", "CREATE DATABASE pooled")?;
    for db in DATABASES {
        c.primary.psql(
            db,
            &format!("CREATE TABLE {table} (id int PRIMARY KEY, v int)"),
        )?;
    }
    c.standby
        .as_ref()
        .context("standby")?
        .wait_caught_up(&c.primary, Duration::from_secs(30))?;
    c.wait_standby_healthy().await?;
    Ok(c)
}

/// Runs a workload program; its `key=value` lines, by key.
async fn run_workload(
    mut cmd: tokio::process::Command,
) -> anyhow::Result<HashMap<String, Vec<String>>> {
    cmd.kill_on_drop(true).stdin(std::process::Stdio::null());
    let desc = format!("{cmd:?}");
    let out = tokio::time::timeout(PROGRAM_TIMEOUT, cmd.output())
        .await
        .with_context(|| format!("{desc} did not finish in {PROGRAM_TIMEOUT:?}"))?
        .with_context(|| format!("run {desc}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(
        out.status.success() && stdout.contains("done=ok"),
        "{desc} failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let mut map: HashMap<String, Vec<String>> = HashMap::new();
    for line in stdout.lines() {
        if let Some((k, v)) = line.split_once('=') {
            map.entry(k.to_string())
                .or_default()
                .push(v.trim().to_string());
        }
    }
    Ok(map)
}

/// Checks the values every workload prints.
fn check(c: &Cluster, out: &HashMap<String, Vec<String>>) -> anyhow::Result<()> {
    let standby = c.standby.as_ref().context("standby")?.port.to_string();
    let primary = c.primary.port.to_string();
    let all = |key: &str, want: &str| -> anyhow::Result<()> {
        let got = out
            .get(key)
            .with_context(|| format!("no {key} in {out:?}"))?;
        anyhow::ensure!(
            got.iter().all(|v| v == want),
            "{key}: want all {want}, got {got:?} (primary port {primary}, standby port {standby})"
        );
        Ok(())
    };
    all("ro_port", &standby)?;
    all("ro_count", "0")?;
    all("ro_sum", "0")?;
    all("rw_port", &primary)?;
    all("ryw_count", "10")?;
    all("ryw_sum", &SUM.to_string())?;
    all("rolled_back_count", "0")?;
    all("autocommit_sum", &SUM.to_string())?;
    // A serializable read-only transaction (each driver's own way of asking
    // for one) runs on the primary: a standby refuses serializable.
    all("ser_port", &primary)?;
    all("ser_count", "10")?;
    all("ser_sum", &SUM.to_string())?;
    Ok(())
}

/// Compiles `PghaJdbc.java` into `dir`; the classpath to run it with.
async fn compile_jdbc(dir: &Path) -> anyhow::Result<String> {
    let (src, dir) = (program("PghaJdbc.java"), dir.to_path_buf());
    tokio::task::spawn_blocking(move || pgha_testkit::tools::compile_jdbc_program(&src, &dir))
        .await
        .context("javac task")?
}

async fn run_jdbc(classpath: &str, url: &str) -> anyhow::Result<HashMap<String, Vec<String>>> {
    let mut cmd = tokio::process::Command::new("java");
    cmd.args([
        "-XX:TieredStopAtLevel=1",
        "-XX:+UseSerialGC",
        "-cp",
        classpath,
    ])
    .arg("PghaJdbc")
    .args([url, "alice", ALICE_PW]);
    run_workload(cmd).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jdbc_through_rw() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let classpath = compile_jdbc(dir.path()).await?;
    let c = cluster("jdbc_items", "").await?;
    let rw = c.rw();
    for db in DATABASES {
        let url = format!(
            "jdbc:postgresql://{}:{}/{db}?sslmode=disable&connectTimeout=10",
            rw.ip(),
            rw.port()
        );
        let out = run_jdbc(&classpath, &url).await?;
        check(&c, &out).with_context(|| format!("database {db}"))?;
        assert_eq!(out["batch"], ["3"]);
    }
    Ok(())
}

/// The JDBC workload over TLS (`sslmode=require`; the proxy's certificate
/// is self-signed, made here, so the non-validating factory is used).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jdbc_over_tls() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let classpath = compile_jdbc(dir.path()).await?;
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()])?;
    let (cert, key) = (dir.path().join("proxy.crt"), dir.path().join("proxy.key"));
    std::fs::write(&cert, ck.cert.pem())?;
    std::fs::write(&key, ck.key_pair.serialize_pem())?;
    let extra = format!(
        "tls_cert_file = {:?}\ntls_key_file = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    let c = cluster("jdbc_items", &extra).await?;
    let rw = c.rw();
    for db in DATABASES {
        let url = format!(
            "jdbc:postgresql://{}:{}/{db}?sslmode=require\
             &sslfactory=org.postgresql.ssl.NonValidatingFactory&connectTimeout=10",
            rw.ip(),
            rw.port()
        );
        let out = run_jdbc(&classpath, &url).await?;
        check(&c, &out).with_context(|| format!("database {db}"))?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_through_rw() -> anyhow::Result<()> {
    let python = require(
        &drivers_dir().join("venv/bin/python"),
        "the Python driver venv (psycopg 3, asyncpg)",
    )?;
    let c = cluster("py_items", "").await?;
    let rw = c.rw();
    for db in DATABASES {
        let mut cmd = tokio::process::Command::new(&python);
        cmd.arg(program("psycopg_workload.py"))
            .arg(conn_str(rw, "alice", ALICE_PW, db) + " sslmode=disable");
        let out = run_workload(cmd).await?;
        check(&c, &out).with_context(|| format!("database {db}"))?;
        assert_eq!(out["pipeline_sum"], [SUM.to_string()]);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_through_rw() -> anyhow::Result<()> {
    let python = require(
        &drivers_dir().join("venv/bin/python"),
        "the Python driver venv (psycopg 3, asyncpg)",
    )?;
    let c = cluster("apg_items", "").await?;
    let rw = c.rw();
    for db in DATABASES {
        let mut cmd = tokio::process::Command::new(&python);
        cmd.arg(program("asyncpg_workload.py"))
            .arg(rw.ip().to_string())
            .arg(rw.port().to_string())
            .args(["alice", ALICE_PW, db]);
        let out = run_workload(cmd).await?;
        check(&c, &out).with_context(|| format!("database {db}"))?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_through_rw() -> anyhow::Result<()> {
    let modules = require(
        &drivers_dir().join("node/node_modules"),
        "node-postgres (npm package pg)",
    )?;
    require(&modules.join("pg"), "node-postgres (npm package pg)")?;
    let node = require_command("node", "Node.js (Debian package nodejs)")?;
    let c = cluster("node_items", "").await?;
    let rw = c.rw();
    for db in DATABASES {
        let mut cmd = tokio::process::Command::new(&node);
        cmd.env("NODE_PATH", &modules)
            .arg(program("pg_workload.js"))
            .arg(rw.ip().to_string())
            .arg(rw.port().to_string())
            .args(["alice", ALICE_PW, db]);
        let out = run_workload(cmd).await?;
        check(&c, &out).with_context(|| format!("database {db}"))?;
    }
    Ok(())
}

/// The same workload with tokio-postgres (named statements for every
/// prepared query; `START TRANSACTION READ ONLY` from its builder).
async fn tokio_postgres_workload(
    client: &mut tokio_postgres::Client,
) -> anyhow::Result<HashMap<String, Vec<String>>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    let mut put = |k: &str, v: String| out.entry(k.to_string()).or_default().push(v);
    let select =
        "SELECT count(*), coalesce(sum(v), 0)::bigint, current_setting('pgha_test.port')::int \
                  FROM tp_items WHERE id > $1";
    for label in ["ro", "ryw"] {
        if label == "ryw" {
            let tx = client.transaction().await?;
            let ins = tx
                .prepare("INSERT INTO tp_items (id, v) VALUES ($1, $2)")
                .await?;
            for i in 1..=10i32 {
                tx.execute(&ins, &[&i, &(i * 10)]).await?;
            }
            let row = tx
                .query_one(
                    "UPDATE tp_items SET v = v + 1 WHERE id = 1 RETURNING current_setting('pgha_test.port')::int",
                    &[],
                )
                .await?;
            put("rw_port", row.get::<_, i32>(0).to_string());
            tx.commit().await?;
        }
        let stmt = client.prepare(select).await?;
        for _ in 0..4 {
            let tx = client.build_transaction().read_only(true).start().await?;
            let mut last = None;
            for _ in 0..2 {
                last = Some(tx.query_one(&stmt, &[&0i32]).await?);
            }
            tx.commit().await?;
            let row = last.context("no row")?;
            put(&format!("{label}_count"), row.get::<_, i64>(0).to_string());
            put(&format!("{label}_sum"), row.get::<_, i64>(1).to_string());
            put(&format!("{label}_port"), row.get::<_, i32>(2).to_string());
        }
    }
    let tx = client.transaction().await?;
    tx.execute("INSERT INTO tp_items (id, v) VALUES (1000, 1)", &[])
        .await?;
    tx.rollback().await?;
    let n: i64 = client
        .query_one("SELECT count(*) FROM tp_items WHERE id = 1000", &[])
        .await?
        .get(0);
    put("rolled_back_count", n.to_string());
    let get = client
        .prepare("SELECT v FROM tp_items WHERE id = $1")
        .await?;
    let mut total = 0i64;
    for i in 1..=10i32 {
        total += i64::from(client.query_one(&get, &[&i]).await?.get::<_, i32>(0));
    }
    put("autocommit_sum", total.to_string());
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::Serializable)
        .read_only(true)
        .deferrable(true)
        .start()
        .await?;
    let row = tx.query_one(select, &[&0i32]).await?;
    tx.commit().await?;
    put("ser_count", row.get::<_, i64>(0).to_string());
    put("ser_sum", row.get::<_, i64>(1).to_string());
    put("ser_port", row.get::<_, i32>(2).to_string());
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_through_rw() -> anyhow::Result<()> {
    let c = cluster("tp_items", "").await?;
    for db in DATABASES {
        let (mut client, conn) = tokio_postgres::connect(
            &conn_str(c.rw(), "alice", ALICE_PW, db),
            tokio_postgres::NoTls,
        )
        .await?;
        tokio::spawn(conn);
        let out = tokio_postgres_workload(&mut client).await?;
        check(&c, &out).with_context(|| format!("database {db}"))?;
    }
    Ok(())
}
