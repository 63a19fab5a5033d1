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
    let c = TestCluster::up(bin(), 2, "[backup]\nkeep = 1\n").expect("cluster");
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
    let original = std::fs::read(&aside).unwrap();
    let mut bytes = original.clone();
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
    std::fs::write(&archived, &original).unwrap();

    retention_keeps_what_backups_and_standbys_need(&c, &primary, &list[0]["id"]).await;
}

fn archived_segments(c: &TestCluster) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(&c.config.archive_dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.len() == 24)
        .collect();
    v.sort();
    v
}

/// `[backup] keep = 1`: the next backup removes the first one, but the WAL
/// a standby (replay paused, so behind) still needs stays until it caught
/// up; the kept backup restores to the latest WAL after the clean.
async fn retention_keeps_what_backups_and_standbys_need(
    c: &TestCluster,
    primary: &Client,
    first_id: &serde_json::Value,
) {
    let out = c.pgha(&["archive", "clean", "--keep-backups", "0"]);
    assert!(!out.status.success(), "keeping no backup is refused");

    let standby = c.connect("node2").await.unwrap();
    standby
        .batch_execute("SELECT pg_wal_replay_pause()")
        .await
        .unwrap();
    let behind: String = wait_until("replay paused", Duration::from_secs(30), || {
        futures_lite_block(async {
            let r = standby
                .query_one(
                    "SELECT pg_get_wal_replay_pause_state(), pg_last_wal_replay_lsn()::text",
                    &[],
                )
                .await
                .ok()?;
            // "pause requested" until the next record arrives: replay is
            // held before it either way.
            (r.get::<_, String>(0) != "not paused").then(|| segment_of(&r.get::<_, String>(1)))
        })
    })
    .unwrap();
    primary
        .batch_execute(
            "CREATE TABLE later (id int); INSERT INTO later SELECT generate_series(1, 300)",
        )
        .await
        .unwrap();
    switch_and_archive(c, primary).await;
    switch_and_archive(c, primary).await;

    let out = c.pgha(&["backup", "--from-primary"]);
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains(&format!("deleted backup {}", first_id.as_str().unwrap())),
        "{text}"
    );
    assert!(text.contains("member node2 still needs WAL"), "{text}");
    let list: serde_json::Value =
        serde_json::from_slice(&c.pgha(&["backup", "list", "--json"]).stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    let segs = archived_segments(c);
    assert!(
        segs.contains(&behind),
        "WAL the standby needs ({behind}) is kept: {segs:?}"
    );
    assert!(
        segs.iter().all(|s| s.as_str() >= behind.as_str()),
        "older WAL is gone: {segs:?}"
    );

    // Once the standby caught up, a clean lets that WAL go too.
    standby
        .batch_execute("SELECT pg_wal_replay_resume()")
        .await
        .unwrap();
    let head: String = primary
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    wait_until("standby caught up", Duration::from_secs(60), || {
        futures_lite_block(async {
            let r = standby
                .query_one(
                    "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                    &[&head],
                )
                .await
                .ok()?;
            r.get::<_, bool>(0).then_some(())
        })
    })
    .unwrap();
    let out = c.pgha(&["archive", "clean"]);
    assert!(out.status.success(), "{}", describe(&out));
    let segs = archived_segments(c);
    assert!(
        !segs.contains(&behind),
        "{behind} is no longer needed: {segs:?}"
    );

    // The kept backup still restores, to the latest WAL.
    let r = restore(c, "after-clean", &["--latest"]);
    assert!(r.ok(), "{}", r.stderr());
    let db = connect(c, r.port).await;
    assert_eq!(count(&db, "SELECT count(*) FROM later").await, 300);
}

/// The timeline-1 segment (16 MB) holding `lsn` (pg_walfile_name() is not
/// available during recovery).
fn segment_of(lsn: &str) -> String {
    let (hi, lo) = lsn.split_once('/').unwrap();
    let lsn = (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap();
    let segno = lsn >> 24;
    format!("00000001{:08X}{:08X}", segno >> 8, segno & 0xff)
}

/// Run a future to completion from a synchronous wait closure.
fn futures_lite_block<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}
