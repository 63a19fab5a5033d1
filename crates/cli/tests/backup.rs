//! Backups and point-in-time recovery through the real binary, on one real
//! two-member dev cluster (PostgreSQL 15, etcd): `pgha backup` from the
//! standby, `pgha restore-point`, and `pgha restore` to a time before a
//! dropped table, to a restore point, to an LSN and to the latest WAL; a
//! missing or corrupt WAL segment the restore needs stops it with an error
//! naming the segment, and PostgreSQL refuses to promote short of a target.
//!
//! Hazards: every restored server runs as the `postgres` OS user on a free
//! loopback port under a guard that kills its postmaster by the PID in its
//! postmaster.pid. One cluster serves every case, in order: the phases of
//! writes are separated by WAL switches so each lies in its own segment.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking

use pgha_testkit::cluster::{describe, kill_postmaster, TestCluster};
use pgha_testkit::{free_port, wait_until};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;
use tokio_postgres::Client;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_pgha"))
}

/// A restored server: killed by PID when dropped.
struct Restored {
    data: PathBuf,
    port: u16,
    out: Output,
}

impl Drop for Restored {
    fn drop(&mut self) {
        kill_postmaster(&self.data);
    }
}

impl Restored {
    fn ok(&self) -> bool {
        self.out.status.success()
    }
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }
}

fn restore(c: &TestCluster, label: &str, target: &[&str]) -> Restored {
    let data = c.dir.path().join(format!("restore-{label}"));
    let port = free_port();
    let port_s = port.to_string();
    let data_s = data.display().to_string();
    let mut args = vec![
        "restore",
        "--to",
        &data_s,
        "--port",
        &port_s,
        "--timeout",
        "5m",
    ];
    args.extend_from_slice(target);
    let out = c.pgha(&args);
    eprintln!("$ pgha {} -> {}", args.join(" "), describe(&out));
    Restored { data, port, out }
}

async fn connect(c: &TestCluster, port: u16) -> Client {
    pgha_postgres::probe::connect(
        "127.0.0.1",
        port,
        &c.config.superuser,
        &c.admin_password,
        Duration::from_secs(5),
    )
    .await
    .expect("connect to the restored server")
}

async fn count(client: &Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.expect(sql).get(0)
}

/// The WAL file now being written on the primary, then a switch, and a wait
/// until the archive holds it.
async fn switch_and_archive(c: &TestCluster, primary: &Client) -> String {
    let seg: String = primary
        .query_one("SELECT pg_walfile_name(pg_current_wal_lsn())", &[])
        .await
        .unwrap()
        .get(0);
    primary
        .execute("SELECT pg_switch_wal()", &[])
        .await
        .unwrap();
    let path = c.config.archive_dir.join(&seg);
    wait_until("segment archived", Duration::from_secs(60), || {
        path.exists().then_some(())
    })
    .unwrap();
    seg
}

async fn insert(primary: &Client, from: i32, to: i32) {
    primary
        .execute(
            "INSERT INTO t SELECT g, 'row ' || g FROM generate_series($1::int, $2::int) g",
            &[&from, &to],
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_and_point_in_time_restores() {
    let c = TestCluster::up(bin(), 2, "").expect("cluster");
    let primary = c.connect("node1").await.unwrap();
    primary
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        .await
        .unwrap();
    insert(&primary, 1, 1000).await;

    // A backup from the standby, verified and listed.
    let out = c.pgha(&["backup"]);
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("pg_verifybackup"), "{text}");
    assert!(text.contains("node2 (standby)"), "{text}");
    let out = c.pgha(&["backup", "list", "--json"]);
    assert!(out.status.success(), "{}", describe(&out));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let b = &list[0];
    assert_eq!(b["state"], "verified", "{list}");
    assert_eq!(b["source_role"], "standby", "{list}");
    assert_eq!(b["timeline"], 1, "{list}");
    assert!(b["stored_bytes"].as_u64().unwrap() > 0, "{list}");

    // Phase B: rows after the backup, then the time mark and a restore point.
    insert(&primary, 1001, 2000).await;
    let mark: String = primary
        .query_one(
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let out = c.pgha(&["restore-point", "before_c"]);
    assert!(out.status.success(), "{}", describe(&out));
    let out = c.pgha(&["restore-point", "before_c"]);
    assert!(
        !out.status.success(),
        "a second restore point of one name is refused"
    );
    switch_and_archive(&c, &primary).await;

    // Phase C, then the LSN mark; phase D in its own segment; the drop.
    insert(&primary, 2001, 3000).await;
    let lsn: String = primary
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    switch_and_archive(&c, &primary).await;
    insert(&primary, 3001, 4000).await;
    let seg_d = switch_and_archive(&c, &primary).await;
    primary.batch_execute("DROP TABLE t").await.unwrap();
    primary
        .batch_execute(
            "CREATE TABLE after (id int); INSERT INTO after SELECT generate_series(1, 500)",
        )
        .await
        .unwrap();
    let late: String = primary
        .query_one(
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    switch_and_archive(&c, &primary).await;

    // To the time before phase C: every row of A and B, none after.
    {
        let r = restore(&c, "time", &["--time", &mark]);
        assert!(r.ok(), "{}", r.stderr());
        assert!(r.stdout().contains("recovery stopping"), "{}", r.stdout());
        let db = connect(&c, r.port).await;
        assert_eq!(count(&db, "SELECT count(*) FROM t").await, 2000);
        assert_eq!(count(&db, "SELECT max(id)::bigint FROM t").await, 2000);
    }
    // To the restore point: the same rows.
    {
        let r = restore(&c, "name", &["--name", "before_c"]);
        assert!(r.ok(), "{}", r.stderr());
        let db = connect(&c, r.port).await;
        assert_eq!(count(&db, "SELECT count(*) FROM t").await, 2000);
    }
    // To the LSN after phase C: A, B and C, not D.
    {
        let r = restore(&c, "lsn", &["--lsn", &lsn]);
        assert!(r.ok(), "{}", r.stderr());
        let db = connect(&c, r.port).await;
        assert_eq!(count(&db, "SELECT count(*) FROM t").await, 3000);
    }
    // The latest: the drop happened, every acknowledged row of `after` is there.
    {
        let r = restore(&c, "latest", &["--latest"]);
        assert!(r.ok(), "{}", r.stderr());
        let db = connect(&c, r.port).await;
        assert_eq!(count(&db, "SELECT count(*) FROM after").await, 500);
        assert_eq!(
            count(&db, "SELECT count(*) FROM pg_class WHERE relname = 't'").await,
            0
        );
    }

    // Phase D's segment goes missing.
    let archived = c.config.archive_dir.join(&seg_d);
    let aside = c.dir.path().join("aside");
    std::fs::rename(&archived, &aside).unwrap();
    {
        let r = restore(&c, "latest-hole", &["--latest"]);
        assert!(!r.ok(), "--latest past a hole must fail: {}", r.stdout());
        assert!(
            r.stderr().contains(&seg_d),
            "names the segment: {}",
            r.stderr()
        );
        assert!(r.stderr().contains("missing"), "{}", r.stderr());
        assert!(!r.data.join("PG_VERSION").exists(), "nothing was restored");
    }
    {
        // A time past the hole: PostgreSQL 15 refuses to promote short of it.
        let r = restore(&c, "time-hole", &["--time", &late]);
        assert!(!r.ok(), "a time past a hole must fail: {}", r.stdout());
        let err = r.stderr();
        assert!(
            err.contains("recovery ended before configured recovery target was reached"),
            "{err}"
        );
        assert!(err.contains(&seg_d), "names the segment: {err}");
        assert!(err.contains("Nothing was promoted"), "{err}");
    }
    {
        // Before the hole all is well.
        let r = restore(&c, "lsn-before-hole", &["--lsn", &lsn]);
        assert!(r.ok(), "{}", r.stderr());
    }
    // Back, but corrupt: one flipped byte in the payload.
    let mut bytes = std::fs::read(&aside).unwrap();
    let i = bytes.len() / 2;
    bytes[i] ^= 0xff;
    std::fs::write(&aside, &bytes).unwrap();
    std::fs::rename(&aside, &archived).unwrap();
    {
        let r = restore(&c, "latest-corrupt", &["--latest"]);
        assert!(
            !r.ok(),
            "--latest past a corrupt segment must fail: {}",
            r.stdout()
        );
        assert!(
            r.stderr().contains(&seg_d),
            "names the segment: {}",
            r.stderr()
        );
        assert!(r.stderr().contains("corrupt"), "{}", r.stderr());
    }
}
