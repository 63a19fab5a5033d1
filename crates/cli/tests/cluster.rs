//! The cluster foundation, end to end with real PostgreSQL servers: the seed
//! (synchronous quorum, slots, hot standbys), synchronous replication really
//! holding, archiving and restore, restart with data, bad configs, status.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking

use pgha_agent::api::client;
use pgha_testkit::cluster::{describe, member, run_pgha, TestCluster};
use pgha_testkit::wait_until_async;
use std::path::Path;
use std::time::Duration;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_pgha"))
}

/// node2 and node3 stream synchronously (quorum) through active slots,
/// a committed row is readable on both, and standbys refuse writes.
#[tokio::test(flavor = "multi_thread")]
async fn seed_is_a_synchronous_quorum_of_hot_standbys() {
    let c = TestCluster::up(bin(), 3, "").unwrap();
    let primary = c.connect("node1").await.unwrap();
    // The leader adds each standby to the quorum once it has caught up.
    let got = wait_until_async(
        "both standbys in the quorum",
        Duration::from_secs(30),
        || async {
            let rows = primary
            .query(
                "SELECT application_name, state, sync_state FROM pg_stat_replication ORDER BY 1",
                &[],
            )
            .await
            .ok()?;
            let got: Vec<(String, String, String)> = rows
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect();
            got.iter().all(|r| r.2 == "quorum").then_some(got)
        },
    )
    .await
    .unwrap();
    assert_eq!(
        got,
        vec![
            ("node2".into(), "streaming".into(), "quorum".into()),
            ("node3".into(), "streaming".into(), "quorum".into())
        ]
    );
    let names: String = primary
        .query_one("SHOW synchronous_standby_names", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(names, r#"ANY 1 ("node2", "node3")"#);
    let slots = primary
        .query(
            "SELECT slot_name::text, active FROM pg_replication_slots ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let slots: Vec<(String, bool)> = slots.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(slots, vec![("node2".into(), true), ("node3".into(), true)]);

    primary
        .batch_execute("CREATE TABLE seed(id int primary key); INSERT INTO seed VALUES (42);")
        .await
        .unwrap();
    for standby in ["node2", "node3"] {
        let s = c.connect(standby).await.unwrap();
        let n = wait_until_async("row on standby", Duration::from_secs(10), || async {
            let r = s
                .query_opt("SELECT id FROM seed WHERE id = 42", &[])
                .await
                .ok()??;
            Some(r.get::<_, i32>(0))
        })
        .await
        .unwrap();
        assert_eq!(n, 42);
        let err = s
            .batch_execute("INSERT INTO seed VALUES (1)")
            .await
            .unwrap_err();
        assert_eq!(err.code().unwrap().code(), "25006", "{err}");
    }

    let status = c.status_json();
    assert_eq!(member(&status, "node1")["role"], "primary");
    let proxy = &status["proxy"];
    assert!(
        proxy["rw"].is_u64() && proxy["ro"].is_u64() && proxy["primary"].is_u64(),
        "{status}"
    );
    assert_eq!(proxy["state"], "running", "{status}");
    for standby in ["node2", "node3"] {
        let m = member(&status, standby);
        assert_eq!(m["role"], "standby");
        assert_eq!(m["state"], "running");
        assert_eq!(m["sync_state"], "quorum");
        assert_eq!(m["slot_active"], true);
        assert_eq!(m["timeline"], 1);
        assert!(m["lag_bytes"].is_u64(), "{m}");
        assert!(m["port"].is_u64());
    }
}

/// With both standbys stopped a commit does not return; when one standby
/// starts again it does.
#[tokio::test(flavor = "multi_thread")]
async fn commit_waits_for_a_synchronous_standby() {
    let c = TestCluster::up(bin(), 3, "").unwrap();
    let primary = c.connect("node1").await.unwrap();
    primary
        .batch_execute("CREATE TABLE w(id int)")
        .await
        .unwrap();
    c.stop_member("node2").await.unwrap();
    c.stop_member("node3").await.unwrap();

    let commit = tokio::spawn(async move {
        primary
            .batch_execute("INSERT INTO w VALUES (1)")
            .await
            .map(|_| primary)
    });
    // The commit is flushed locally and waits for a synchronous standby
    // (wait event SyncRep): from then on it may not return.
    let watcher = c.connect("node1").await.unwrap();
    wait_until_async(
        "the INSERT waiting for synchronous replication",
        Duration::from_secs(30),
        || async {
            let row = watcher
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE wait_event = 'SyncRep' AND query LIKE 'INSERT INTO w%'",
                    &[],
                )
                .await
                .ok()?;
            (row.get::<_, i64>(0) == 1).then_some(())
        },
    )
    .await
    .unwrap();
    // The leader's agent has seen both standbys gone and its standing
    // decision (the latest it recorded) is to keep the synchronous set: it
    // had its chance to drop it.
    let url = format!("{}/cluster", c.config.member("node1").unwrap().api_url());
    wait_until_async(
        "the leader deciding to keep waiting for a standby",
        Duration::from_secs(30),
        || async {
            let doc: serde_json::Value = client::get(&url, Duration::from_secs(5))
                .await
                .ok()?
                .json()
                .ok()?;
            let latest = doc["decisions"].as_array()?.last()?["reason"].as_str()?;
            latest
                .contains("no healthy synchronous standby")
                .then_some(())
        },
    )
    .await
    .unwrap();
    assert!(
        !commit.is_finished(),
        "commit returned with no synchronous standby"
    );

    c.start_member("node3").unwrap();
    let primary = tokio::time::timeout(Duration::from_secs(30), commit)
        .await
        .expect("commit returns once a standby is back")
        .unwrap()
        .unwrap();
    let n: i64 = primary
        .query_one("SELECT count(*) FROM w", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

/// A switched segment reaches the archive with a valid checksum; a standby
/// whose slot was invalidated (max_slot_wal_keep_size) and whose WAL the
/// primary recycled catches up through `pgha wal-fetch`.
#[tokio::test(flavor = "multi_thread")]
async fn archive_holds_segments_and_feeds_a_standby_whose_slot_was_lost() {
    let c = TestCluster::up(
        bin(),
        3,
        "[replication]\nwal_keep_size = \"0\"\nmax_slot_wal_keep_size = \"32MB\"",
    )
    .unwrap();
    let primary = c.connect("node1").await.unwrap();
    let seg: String = primary
        .query_one("SELECT pg_walfile_name(pg_current_wal_lsn())", &[])
        .await
        .unwrap()
        .get(0);
    primary
        .batch_execute("SELECT pg_switch_wal()")
        .await
        .unwrap();
    let archive = pgha_archive::Archive::open(&c.config.archive_dir).unwrap();
    let name = pgha_archive::WalName::parse(&seg).unwrap();
    wait_until_async("segment archived", Duration::from_secs(20), || async {
        archive.path_of(&name).exists().then_some(())
    })
    .await
    .unwrap();
    archive
        .verify(&name)
        .expect("archived segment passes its checksum");

    c.stop_member("node3").await.unwrap();
    primary
        .batch_execute(
            "CREATE TABLE late(id int); INSERT INTO late SELECT generate_series(1, 1000)",
        )
        .await
        .unwrap();
    let gone: String = primary
        .query_one("SELECT pg_walfile_name(pg_current_wal_lsn())", &[])
        .await
        .unwrap()
        .get(0);
    let pg_wal = c
        .config
        .member("node1")
        .unwrap()
        .data_dir
        .join("pg_wal")
        .join(&gone);
    wait_until_async(
        "primary invalidates node3's slot and recycles its WAL",
        Duration::from_secs(60),
        || async {
            primary
                .batch_execute("INSERT INTO late VALUES (0); SELECT pg_switch_wal(); CHECKPOINT;")
                .await
                .ok()?;
            (!pg_wal.exists()).then_some(())
        },
    )
    .await
    .unwrap();

    c.start_member("node3").unwrap();
    let want: i64 = primary
        .query_one("SELECT count(*) FROM late", &[])
        .await
        .unwrap()
        .get(0);
    wait_until_async("node3 catches up", Duration::from_secs(120), || async {
        let s = c.connect("node3").await.ok()?;
        let n: i64 = s
            .query_one("SELECT count(*) FROM late", &[])
            .await
            .ok()?
            .get(0);
        (n >= want).then_some(())
    })
    .await
    .unwrap();
    let log = c.server_log("node3");
    assert!(
        log.contains("restored log file"),
        "node3 did not restore from the archive:\n{log}"
    );
}

/// `down` then `up` keeps the data and the roles; status shows a stopped standby.
#[tokio::test(flavor = "multi_thread")]
async fn down_then_up_keeps_data_and_status_shows_stopped_members() {
    let c = TestCluster::up(bin(), 3, "").unwrap();
    {
        let primary = c.connect("node1").await.unwrap();
        primary
            .batch_execute("CREATE TABLE kept(v text); INSERT INTO kept VALUES ('still here')")
            .await
            .unwrap();
    }
    c.stop_member("node3").await.unwrap();
    let status = c.status_json();
    let node3 = member(&status, "node3");
    assert!(
        matches!(node3["state"].as_str(), Some("stopped" | "down")),
        "{node3}"
    );
    assert_eq!(member(&status, "node2")["state"], "running");

    let out = c.pgha(&["down"]);
    assert!(out.status.success(), "{}", describe(&out));
    let status = c.status_json();
    for m in status["members"].as_array().unwrap() {
        assert!(
            matches!(m["state"].as_str(), Some("stopped" | "down")),
            "{m}"
        );
    }
    let out = c.pgha(&["up"]);
    assert!(out.status.success(), "{}", describe(&out));
    for name in ["node1", "node2", "node3"] {
        let client = c.connect(name).await.unwrap();
        let v: String = client
            .query_one("SELECT v FROM kept", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(v, "still here", "on {name}");
    }
    let status = c.status_json();
    let primaries = status["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "primary")
        .count();
    assert_eq!(primaries, 1, "{status}");
}

/// Each bad config is refused with an error naming the key, and leaves no
/// cluster behind.
#[test]
fn bad_configs_are_refused_with_the_key_named() {
    let cases: &[(&str, &str)] = &[
        (
            "[[members]]\nname = \"node1\"\nport = 5501\n[[members]]\nname = \"node2\"\nport = 5501\n",
            "members[1].port 5501 is already used by members[0]",
        ),
        (
            "[archive]\ndir = \"node1/data/wal\"\n[[members]]\nname = \"node1\"\nport = 5501\n",
            "archive.dir",
        ),
        (
            "[postgres.parameters]\narchive_command = \"cp %p /x\"\n[[members]]\nname = \"node1\"\nport = 5501\n",
            "postgres.parameters.archive_command",
        ),
        ("[[members]]\nname = \"node1\"\nport = \"high\"\n", "port"),
        ("[replication]\nsync_quorum = 0\n[[members]]\nname = \"node1\"\nport = 5501\n", "replication.sync_quorum"),
        ("[postgres]\nbin_dir = \"/nonexistent\"\n[[members]]\nname = \"node1\"\nport = 5501\n", "postgresql-15"),
    ];
    for (text, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("bad.toml");
        std::fs::write(&cfg, text).unwrap();
        let cluster_dir = dir.path().join("cluster");
        let out = run_pgha(
            bin(),
            &[
                "up",
                "--dir",
                cluster_dir.to_str().unwrap(),
                "--config",
                cfg.to_str().unwrap(),
            ],
        );
        assert!(!out.status.success(), "accepted:\n{text}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(expected),
            "error for\n{text}\nshould mention {expected:?}, got: {stderr}"
        );
        {
            assert!(
                !cluster_dir.join("cluster.toml").exists(),
                "a bad config was adopted"
            );
        }
    }
}
