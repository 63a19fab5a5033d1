//! An unmodified JDBC application through the dev cluster's rw port keeps
//! its one connection through a switchover and a failover (issue 4).
//!
//! `tests/jdbc/PghaJdbcLoop.java` (compiled into the test's temp dir against
//! Debian's `/usr/share/java/postgresql.jar`) holds one `Connection` for the
//! whole run and loops: a read-write transaction inserting row n with a
//! PreparedStatement, then a `setReadOnly(true)` transaction reading it back.
//! It logs one line per event to a file the test polls (format in the Java
//! header). Missing `javac`/`java`/the jar fail the test naming
//! `scripts/install-deps`.
//!
//! Hazards: the cluster runs on a shared machine, so nothing here asserts a
//! duration; every wait is a condition with a deadline. The Java process is
//! killed by its own handle when a test ends early.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking

use anyhow::Context;
use pgha_testkit::cluster::{describe, TestCluster};
use pgha_testkit::wait_until;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The Java program stops by itself after this long if the test vanished.
const MAX_RUN_SECS: &str = "600";

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_pgha"))
}

/// Compiles `PghaJdbcLoop.java` into `dir`; the classpath to run it with.
fn compile(dir: &Path) -> anyhow::Result<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/jdbc/PghaJdbcLoop.java");
    pgha_testkit::tools::compile_jdbc_program(&src, dir)
}

/// The running Java client; killed (by its own handle) when dropped.
struct JdbcLoop {
    child: Child,
    log: PathBuf,
    stop: PathBuf,
}

impl Drop for JdbcLoop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the client logged so far.
#[derive(Debug, Default)]
struct Seen {
    acked: BTreeSet<i32>,
    /// Iterations that finished: (n, rows read back, server port).
    ok: Vec<(i32, i64, u16)>,
    errors: Vec<String>,
    closed: Option<String>,
    done: bool,
}

impl JdbcLoop {
    fn start(c: &TestCluster, dir: &Path, table: &str) -> anyhow::Result<Self> {
        let classpath = compile(dir)?;
        let p = c
            .config
            .proxy
            .as_ref()
            .context("the dev cluster has no [proxy]")?;
        let url = format!(
            "jdbc:postgresql://{}:{}/postgres?sslmode=disable&connectTimeout=10",
            p.host, p.rw_port
        );
        let log = dir.join("jdbc.log");
        let stop = dir.join("stop");
        let child = Command::new("java")
            .args([
                "-XX:TieredStopAtLevel=1",
                "-XX:+UseSerialGC",
                "-cp",
                &classpath,
            ])
            .arg("PghaJdbcLoop")
            .args([&url, &c.config.superuser, &c.admin_password, table])
            .arg(&stop)
            .arg(MAX_RUN_SECS)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).context("create the client log")?)
            .stderr(std::fs::File::create(dir.join("jdbc.err")).context("create stderr log")?)
            .spawn()
            .context("start java")?;
        Ok(Self { child, log, stop })
    }

    fn seen(&self) -> Seen {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut s = Seen::default();
        // Only complete lines: the last one may still be being written.
        for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
            let f: Vec<&str> = line.split_whitespace().collect();
            match f.as_slice() {
                ["ack", n] => s.acked.extend(n.parse::<i32>().ok()),
                ["ok", n, found, port] => {
                    if let (Ok(n), Ok(found), Ok(port)) = (n.parse(), found.parse(), port.parse()) {
                        s.ok.push((n, found, port));
                    }
                }
                ["err", ..] => s.errors.push(line.trim().to_string()),
                ["closed", ..] => s.closed = Some(line.trim().to_string()),
                ["done", ..] => s.done = true,
                _ => {}
            }
        }
        s
    }

    /// Waits until `at_least` iterations finished; fails early if the client
    /// closed its connection or exited.
    fn wait_ok(&mut self, what: &str, at_least: usize) -> anyhow::Result<Seen> {
        tokio::task::block_in_place(|| {
            wait_until(what, Duration::from_secs(120), || {
                let s = self.seen();
                let exited = matches!(self.child.try_wait(), Ok(Some(_)));
                (s.ok.len() >= at_least || s.closed.is_some() || exited).then_some(s)
            })
        })
        .and_then(|s| {
            anyhow::ensure!(
                s.closed.is_none() && !s.done,
                "{what}: client stopped: {s:?}"
            );
            anyhow::ensure!(
                s.ok.len() >= at_least,
                "{what}: client exited: {s:?}\nstderr:\n{}",
                self.stderr()
            );
            Ok(s)
        })
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.log.with_file_name("jdbc.err")).unwrap_or_default()
    }

    /// Stops the client through its stop file; what it logged in all.
    fn finish(&mut self) -> anyhow::Result<Seen> {
        std::fs::write(&self.stop, b"").context("write the stop file")?;
        let status = tokio::task::block_in_place(|| {
            wait_until("the client stops", Duration::from_secs(60), || {
                self.child.try_wait().ok().flatten()
            })
        })?;
        let s = self.seen();
        let stderr = self.stderr();
        anyhow::ensure!(
            status.success() && s.done,
            "the client ended with {status}: {s:?}\nstderr:\n{stderr}"
        );
        Ok(s)
    }
}

/// The cluster, its leader, and `table` created on it.
async fn cluster(table: &str) -> (TestCluster, String) {
    let c = TestCluster::up(bin(), 3, "").expect("pgha up");
    let leader = c.settled_leader();
    let admin = c.connect(&leader).await.expect("connect to the leader");
    admin
        .batch_execute(&format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, port int NOT NULL)"
        ))
        .await
        .expect("create table");
    wait_proxy(&c).await;
    (c, leader)
}

/// Waits until the rw listener serves a session (it starts with the
/// cluster and may not route yet), so the client's one connect succeeds.
async fn wait_proxy(c: &TestCluster) {
    let p = c
        .config
        .proxy
        .as_ref()
        .expect("the dev cluster has a [proxy]");
    let conninfo = format!(
        "host={} port={} user={} password={} dbname=postgres connect_timeout=10",
        p.host, p.rw_port, c.config.superuser, c.admin_password
    );
    pgha_testkit::wait_until_async(
        "a session through the proxy",
        Duration::from_secs(60),
        || async {
            let (client, conn) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
                .await
                .ok()?;
            tokio::spawn(conn);
            client.simple_query("SELECT 1").await.ok().map(|_| ())
        },
    )
    .await
    .expect("the proxy serves sessions");
}

/// Every acknowledged row is on `member`'s PostgreSQL (which must be the
/// primary); the number of rows it holds that were written on it.
async fn check_rows(c: &TestCluster, member: &str, table: &str, seen: &Seen) -> usize {
    let client = c.connect(member).await.expect("connect to the primary");
    let rows = client
        .query(&format!("SELECT id, port FROM {table}"), &[])
        .await
        .expect("read the rows");
    let stored: BTreeSet<i32> = rows.iter().map(|r| r.get(0)).collect();
    let missing: Vec<i32> = seen.acked.difference(&stored).copied().collect();
    assert!(
        missing.is_empty(),
        "acknowledged rows missing on {member}: {missing:?}"
    );
    let port = i32::from(c.port(member));
    rows.iter().filter(|r| r.get::<_, i32>(1) == port).count()
}

/// Every finished iteration read its own row back.
fn check_reads(seen: &Seen) {
    let unread: Vec<_> = seen.ok.iter().filter(|o| o.1 != 1).collect();
    assert!(
        unread.is_empty(),
        "iterations that did not read their own row: {unread:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_shows_a_jdbc_client_no_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (c, old) = cluster("jdbc_so").await;
    let mut app = JdbcLoop::start(&c, dir.path(), "jdbc_so").expect("start the JDBC client");
    let before = app
        .wait_ok("JDBC iterations through the proxy", 20)
        .expect("warm up");

    let out = tokio::task::block_in_place(|| c.pgha(&["switchover", "--wait", "90"]));
    assert!(out.status.success(), "{}", describe(&out));
    // Only the new primary matters here, not the old one rejoining.
    let new = c
        .wait_new_leader(Some(&old), Duration::from_secs(90))
        .await
        .expect("the leader moved to a writable primary");

    let at_switch = app.seen().ok.len();
    app.wait_ok("JDBC iterations after the switchover", at_switch + 20)
        .expect("the same connection works after the switchover");
    let seen = app.finish().expect("the client ends cleanly");
    eprintln!(
        "JDBC switchover {old} -> {new}: {} iterations ({} before), {} errors",
        seen.ok.len(),
        before.ok.len(),
        seen.errors.len()
    );
    assert!(
        seen.errors.is_empty(),
        "the client saw errors: {:#?}",
        seen.errors
    );
    check_reads(&seen);
    let on_new = check_rows(&c, &new, "jdbc_so", &seen).await;
    assert!(on_new > 0, "no row was written on the new primary {new}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_crash_keeps_the_jdbc_connection() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (c, old) = cluster("jdbc_fo").await;
    let mut app = JdbcLoop::start(&c, dir.path(), "jdbc_fo").expect("start the JDBC client");
    app.wait_ok("JDBC iterations through the proxy", 20)
        .expect("warm up");

    tokio::task::block_in_place(|| c.kill_node(&old));
    let new = c
        .wait_new_leader(Some(&old), Duration::from_secs(90))
        .await
        .expect("a new leader");
    let at_failover = app.seen().ok.len();
    app.wait_ok("JDBC iterations after the failover", at_failover + 20)
        .expect("the same connection works on the new primary");
    let seen = app.finish().expect("the client ends cleanly");
    let failed: BTreeSet<&str> = seen
        .errors
        .iter()
        .filter_map(|e| e.split_whitespace().nth(1))
        .collect();
    eprintln!(
        "JDBC node crash {old} -> {new}: {} iterations, errors: {:#?}",
        seen.ok.len(),
        seen.errors
    );
    // One transaction at a time is in flight: at most one iteration fails.
    assert!(
        failed.len() <= 1,
        "more than the in-flight transaction failed: {:#?}",
        seen.errors
    );
    check_reads(&seen);
    let on_new = check_rows(&c, &new, "jdbc_fo", &seen).await;
    assert!(on_new > 0, "no row was written on the new primary {new}");
}
