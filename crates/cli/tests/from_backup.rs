//! `pgha up --from-backup`: a whole new HA cluster (primary and standbys)
//! made from a backup of another, running, cluster through the real binary,
//! real PostgreSQL 15 servers and real etcd: every acknowledged row is there
//! (`--latest` makes the source's primary archive its current WAL first),
//! the standbys clone from the restored primary and stream synchronously,
//! the new cluster has its own passwords, timeline and archive, and the
//! source cluster is left untouched; and from the bare archive directory (the
//! cluster gone), to a restore point. Refusals come before anything starts.
//!
//! Hazards: two dev clusters (two and three members) run at once on free
//! loopback ports; each `TestCluster` stops its own processes by PID when
//! dropped, even after a failed assertion.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking

use pgha_testkit::cluster::{describe, member, run_pgha, TestCluster};
use pgha_testkit::{wait_until, wait_until_async};
use std::path::Path;
use std::time::Duration;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_pgha"))
}

async fn count(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .expect("count rows")
        .get(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_ha_cluster_from_a_backup_of_another() {
    let source = TestCluster::up(bin(), 2, "").expect("source cluster");
    let primary = source.connect("node1").await.unwrap();
    primary
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, v text);
             INSERT INTO t SELECT g, 'before the backup' FROM generate_series(1, 1000) g;",
        )
        .await
        .unwrap();
    let out = source.pgha(&["backup"]);
    assert!(out.status.success(), "{}", describe(&out));
    primary
        .execute(
            "INSERT INTO t SELECT g, 'after the backup' FROM generate_series(1001, 2000) g",
            &[],
        )
        .await
        .unwrap();
    let out = source.pgha(&["restore-point", "mark"]);
    assert!(out.status.success(), "{}", describe(&out));
    // Acknowledged after the restore point, and not yet in any archived
    // segment: only `--latest`'s request to the primary puts them into the
    // archive.
    primary
        .execute(
            "INSERT INTO t SELECT g, 'after the mark' FROM generate_series(2001, 3000) g",
            &[],
        )
        .await
        .unwrap();

    // Refused before anything is created or started.
    let out = run_pgha(
        bin(),
        &[
            "up",
            "--dir",
            &source.dir_arg(),
            "--from-backup",
            &source.dir_arg(),
        ],
    );
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already holds a cluster"),
        "{}",
        describe(&out)
    );
    let shared = tempfile::tempdir().unwrap();
    let shared_dir = shared.path().join("cluster");
    let config = shared.path().join("input.toml");
    std::fs::write(
        &config,
        format!(
            "[archive]\ndir = \"{}\"\n{}",
            source.config.archive_dir.display(),
            pgha_testkit::cluster::config_text(1, "")
        ),
    )
    .unwrap();
    let out = run_pgha(
        bin(),
        &[
            "up",
            "--dir",
            &shared_dir.display().to_string(),
            "--config",
            &config.display().to_string(),
            "--from-backup",
            &source.dir_arg(),
        ],
    );
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is the source cluster's"),
        "{}",
        describe(&out)
    );
    assert!(
        !shared_dir.exists(),
        "a refused --from-backup leaves no directory behind"
    );

    let new = TestCluster::up_with(
        bin(),
        3,
        "",
        &["--from-backup", &source.dir_arg(), "--latest"],
    )
    .expect("the cluster restored from the backup");

    // Every acknowledged row, through the new cluster's proxy.
    let proxy = new.config.proxy.as_ref().expect("proxy");
    let through_proxy = pgha_postgres::probe::connect(
        "127.0.0.1",
        proxy.rw_port,
        &new.config.superuser,
        &new.admin_password,
        Duration::from_secs(5),
    )
    .await
    .expect("connect through the new cluster's proxy");
    assert_eq!(count(&through_proxy).await, 3000);

    // A primary and two synchronous standbys on a new timeline.
    let status = new.status_json();
    assert_eq!(status["leader"], "node1", "{status}");
    for name in ["node2", "node3"] {
        let m = member(&status, name);
        assert_eq!(m["role"], "standby", "{status}");
    }
    let new_primary = new.connect("node1").await.unwrap();
    let timeline: i32 = new_primary
        .query_one("SELECT timeline_id FROM pg_control_checkpoint()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        timeline >= 2,
        "the restore starts a new timeline: {timeline}"
    );
    let sync: i64 = new_primary
        .query_one(
            "SELECT count(*) FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(sync, 2, "both standbys stream synchronously");

    // Writable, and the write reaches a standby's copy.
    through_proxy
        .execute("INSERT INTO t VALUES (3001, 'in the new cluster')", &[])
        .await
        .unwrap();
    let standby = new.connect("node2").await.unwrap();
    wait_until_async(
        "the standby replays the new row",
        Duration::from_secs(30),
        || async { (count(&standby).await == 3001).then_some(()) },
    )
    .await
    .unwrap();

    // Its own passwords: the source's admin password no longer logs in.
    let old = pgha_postgres::probe::connect(
        "127.0.0.1",
        new.port("node1"),
        &source.config.superuser,
        &source.admin_password,
        Duration::from_secs(5),
    )
    .await;
    assert!(old.is_err(), "the source's password is refused");

    // Configured by its agent, not by the restore: no recovery settings,
    // no restore log travelling into clones.
    let auto = std::fs::read_to_string(new.config.members[0].data_dir.join("postgresql.auto.conf"))
        .unwrap();
    assert!(!auto.contains("pgha restore"), "{auto}");
    assert!(!new.config.members[1]
        .data_dir
        .join("pgha-restore.log")
        .exists());

    // Its own archive, with the history of its timeline; the source's
    // archive holds no timeline of the new cluster, and the source still
    // serves on timeline 1 with its rows.
    let history = new
        .config
        .archive_dir
        .join(format!("{timeline:08X}.history"));
    wait_until(
        "the new timeline's history archived",
        Duration::from_secs(30),
        || history.exists().then_some(()),
    )
    .unwrap();
    assert!(!source
        .config
        .archive_dir
        .join(format!("{timeline:08X}.history"))
        .exists());
    let source_timeline: i32 = primary
        .query_one("SELECT timeline_id FROM pg_control_checkpoint()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(source_timeline, 1);
    assert_eq!(count(&primary).await, 3000);
    drop(through_proxy);
    drop(standby);
    drop(new_primary);
    drop(new);

    // The cluster gone, its archive is enough: a cluster from the archive
    // directory alone (no config, no password of the source), to the
    // restore point.
    let archive = source.config.archive_dir.display().to_string();
    let bare = TestCluster::up_with(bin(), 1, "", &["--from-backup", &archive, "--name", "mark"])
        .expect("a cluster from the bare archive");
    let proxy = bare.config.proxy.as_ref().expect("proxy");
    let client = pgha_postgres::probe::connect(
        "127.0.0.1",
        proxy.rw_port,
        &bare.config.superuser,
        &bare.admin_password,
        Duration::from_secs(5),
    )
    .await
    .expect("connect through the proxy of the cluster from the bare archive");
    assert_eq!(count(&client).await, 2000, "up to the restore point");
    let hba = std::fs::read_to_string(bare.config.members[0].data_dir.join("pg_hba.conf")).unwrap();
    assert!(
        !hba.contains("trust"),
        "the recovery's trust is gone: {hba}"
    );
    drop(client);
    drop(bare);

    // A cluster on several hosts: `pgha bootstrap-from-backup` on the first
    // member's host, then its agent, started by hand, takes over the data.
    multi_host_bootstrap(&source).await;
}

/// SIGKILL to the postmaster of a data directory when dropped.
struct PostmasterGuard(std::path::PathBuf);

impl Drop for PostmasterGuard {
    fn drop(&mut self) {
        pgha_testkit::cluster::kill_postmaster(&self.0);
    }
}

async fn multi_host_bootstrap(source: &TestCluster) {
    use std::os::unix::fs::PermissionsExt;
    let etcd = pgha_testkit::etcd::EtcdGuard::start().expect("etcd");
    let host = tempfile::tempdir().unwrap();
    // PostgreSQL runs as the service user: it must reach the directories.
    std::fs::set_permissions(host.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let archive = host.path().join("archive");
    std::fs::create_dir(&archive).unwrap();
    std::fs::set_permissions(&archive, std::fs::Permissions::from_mode(0o777)).unwrap();
    let config = host.path().join("cluster.toml");
    std::fs::write(
        &config,
        pgha_testkit::cluster::config_text(
            1,
            &format!("[dcs]\nendpoints = [\"{}\"]\n", etcd.client_url),
        ),
    )
    .unwrap();
    let cfg_s = config.display().to_string();
    let parsed = pgha_config::load(&config).unwrap();
    let out = run_pgha(
        bin(),
        &[
            "secrets",
            "init",
            "--dir",
            &parsed.secrets_dir.display().to_string(),
        ],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let data = parsed.members[0].data_dir.clone();
    let _postmaster = PostmasterGuard(data.clone());
    let bootstrap = [
        "bootstrap-from-backup",
        "--config",
        &cfg_s,
        "--from-backup",
        &source.dir_arg(),
        "--latest",
    ];
    let out = run_pgha(bin(), &bootstrap);
    assert!(out.status.success(), "{}", describe(&out));
    // Twice is refused: the member has data now.
    let out = run_pgha(bin(), &bootstrap);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already has a data directory"),
        "{}",
        describe(&out)
    );

    let log = std::fs::File::create(host.path().join("agent.log")).unwrap();
    let child = std::process::Command::new(bin())
        .args(["agent", "--config", &cfg_s, "--member", "node1"])
        .env("RUST_LOG", "info")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start the agent");
    let _agent = pgha_testkit::process::ProcessGuard::new("agent", child, false);
    let password = std::fs::read_to_string(parsed.secrets_dir.join("admin.password")).unwrap();
    let port = parsed.members[0].port;
    let rows = wait_until_async(
        "the agent serves the restored data",
        Duration::from_secs(90),
        || {
            let password = password.trim().to_string();
            let superuser = parsed.superuser.clone();
            async move {
                let c = pgha_postgres::probe::connect(
                    "127.0.0.1",
                    port,
                    &superuser,
                    &password,
                    Duration::from_secs(2),
                )
                .await
                .ok()?;
                let primary: bool = c
                    .query_one("SELECT NOT pg_is_in_recovery()", &[])
                    .await
                    .ok()?
                    .get(0);
                if !primary {
                    return None;
                }
                c.query_one("SELECT count(*) FROM t", &[])
                    .await
                    .ok()
                    .map(|r| r.get::<_, i64>(0))
            }
        },
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}: {}",
            std::fs::read_to_string(host.path().join("agent.log")).unwrap_or_default()
        )
    });
    assert_eq!(rows, 3000);
}
