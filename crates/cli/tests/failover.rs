//! Automatic failover with real processes: agents, PostgreSQL, etcd. A
//! writer commits numbered rows throughout and records every acknowledged
//! id; each test checks that none is lost. RTO (fault to the first
//! acknowledged write on the new primary) is printed, never asserted.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking

use pgha_testkit::cluster::TestCluster;
use pgha_testkit::wait_until_async;
use pgha_testkit::workload::{missing_on, Writer};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_pgha"))
}

async fn cluster() -> Arc<TestCluster> {
    Arc::new(TestCluster::up(bin(), 3, "").expect("pgha up"))
}

/// Wait until `member` runs as a standby that has replayed every id in `acks`.
async fn wait_caught_up_standby(
    c: &TestCluster,
    member: &str,
    acks: &[pgha_testkit::workload::Ack],
) {
    wait_until_async(
        &format!("{member} rejoins as a standby"),
        Duration::from_secs(90),
        || async {
            let client = c.connect(member).await.ok()?;
            let standby: bool = client
                .query_one("SELECT pg_is_in_recovery()", &[])
                .await
                .ok()?
                .get(0);
            if !standby {
                return None;
            }
            missing_on(c, member, acks)
                .await
                .ok()?
                .is_empty()
                .then_some(())
        },
    )
    .await
    .unwrap();
}

fn rto(
    fault_at: Instant,
    acks: &[pgha_testkit::workload::Ack],
    new_leader: &str,
) -> Option<Duration> {
    acks.iter()
        .find(|a| a.at > fault_at && a.member == new_leader)
        .map(|a| a.at - fault_at)
}

/// SIGKILL of the primary's agent and PostgreSQL: a standby is promoted with
/// every acknowledged write, and the old node rejoins as a standby.
#[tokio::test(flavor = "multi_thread")]
async fn node_crash_fails_over_and_the_old_primary_rejoins() {
    let c = cluster().await;
    let writer = Writer::start(c.clone()).await.unwrap();
    writer.wait_more(20, Duration::from_secs(30)).await.unwrap();
    let old = c.leader().await.unwrap();
    let fault = Instant::now();
    c.kill_node(&old);
    let new = c
        .wait_new_leader(Some(&old), Duration::from_secs(60))
        .await
        .unwrap();
    writer.wait_more(20, Duration::from_secs(60)).await.unwrap();
    let acks = writer.stop().await;
    println!(
        "node crash: {old} -> {new}, RTO {:?}",
        rto(fault, &acks, &new)
    );
    assert_eq!(
        missing_on(&c, &new, &acks).await.unwrap(),
        Vec::<i64>::new(),
        "acknowledged writes lost"
    );
    c.start_member(&old).unwrap();
    wait_caught_up_standby(&c, &old, &acks).await;
}

/// Only PostgreSQL crashes on the primary; its agent reacts and writes
/// resume without losing an acknowledged one.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_crash_on_the_primary_with_its_agent_alive() {
    let c = cluster().await;
    let writer = Writer::start(c.clone()).await.unwrap();
    writer.wait_more(20, Duration::from_secs(30)).await.unwrap();
    let old = c.leader().await.unwrap();
    let pid = c.postmaster_pid(&old).unwrap();
    let fault = Instant::now();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
    let took = writer.wait_more(20, Duration::from_secs(60)).await.unwrap();
    let acks = writer.stop().await;
    let leader = c.leader().await.unwrap();
    println!(
        "postgres crash on {old}: leader now {leader}, writes back after {:?} (RTO {:?})",
        took,
        rto(fault, &acks, &leader)
    );
    assert_eq!(
        missing_on(&c, &leader, &acks).await.unwrap(),
        Vec::<i64>::new()
    );
}

/// A hung agent (SIGSTOP) on the primary: a standby is promoted, the old
/// primary acknowledges nothing after that, and nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread")]
async fn hung_primary_agent_is_replaced_and_its_primary_acknowledges_nothing() {
    let c = cluster().await;
    let writer = Writer::start(c.clone()).await.unwrap();
    writer.wait_more(20, Duration::from_secs(30)).await.unwrap();
    let old = c.leader().await.unwrap();
    let fault = Instant::now();
    c.pause_agent(&old, true);
    let new = c
        .wait_new_leader(Some(&old), Duration::from_secs(60))
        .await
        .unwrap();
    // The old primary still runs; a commit there must not be acknowledged.
    let stale = c.connect(&old).await;
    if let Ok(stale) = stale {
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            stale.execute("INSERT INTO acked(id) VALUES (-1)", &[]),
        )
        .await;
        assert!(
            !matches!(r, Ok(Ok(_))),
            "the old primary acknowledged a write after failover"
        );
    }
    writer.wait_more(20, Duration::from_secs(60)).await.unwrap();
    c.pause_agent(&old, false);
    let acks = writer.stop().await;
    println!(
        "hung agent on {old}: {new} promoted, RTO {:?}",
        rto(fault, &acks, &new)
    );
    assert_eq!(
        missing_on(&c, &new, &acks).await.unwrap(),
        Vec::<i64>::new()
    );
    wait_caught_up_standby(&c, &old, &acks).await;
}

/// A standby crash does not stop writes; the standby rejoins.
#[tokio::test(flavor = "multi_thread")]
async fn standby_crash_keeps_writes_flowing() {
    let c = cluster().await;
    let writer = Writer::start(c.clone()).await.unwrap();
    writer.wait_more(10, Duration::from_secs(30)).await.unwrap();
    let leader = c.leader().await.unwrap();
    let victim = ["node1", "node2", "node3"]
        .into_iter()
        .find(|m| *m != leader)
        .unwrap();
    c.kill_node(victim);
    let took = writer.wait_more(50, Duration::from_secs(60)).await.unwrap();
    println!("standby {victim} crashed: 50 more writes in {took:?}");
    c.start_member(victim).unwrap();
    let acks = writer.stop().await;
    assert_eq!(
        missing_on(&c, &leader, &acks).await.unwrap(),
        Vec::<i64>::new()
    );
    wait_caught_up_standby(&c, victim, &acks).await;
}

/// Planned switchover both ways while writing: nothing acknowledged is
/// lost and the old primary becomes a standby without a rewind.
#[tokio::test(flavor = "multi_thread")]
async fn switchover_both_ways_loses_nothing() {
    let c = cluster().await;
    let writer = Writer::start(c.clone()).await.unwrap();
    writer.wait_more(10, Duration::from_secs(30)).await.unwrap();
    for (from, to) in [("node1", "node2"), ("node2", "node1")] {
        let out = c.pgha(&["switchover", "--to", to]);
        assert!(
            out.status.success(),
            "{}",
            pgha_testkit::cluster::describe(&out)
        );
        let leader = c
            .wait_new_leader(Some(from), Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(leader, to);
        writer.wait_more(10, Duration::from_secs(60)).await.unwrap();
        let acks = writer.acks();
        wait_caught_up_standby(&c, from, &acks).await;
    }
    let acks = writer.stop().await;
    assert_eq!(
        missing_on(&c, "node1", &acks).await.unwrap(),
        Vec::<i64>::new()
    );
    for m in ["node1", "node2"] {
        let log =
            std::fs::read_to_string(c.instance(m).node_dir().join("agent.log")).unwrap_or_default();
        assert!(
            !log.contains("rewinding"),
            "{m} needed a rewind after a switchover:\n{log}"
        );
    }
}

/// etcd stopped with failsafe mode off: the primary stops accepting writes
/// once its lease cannot be renewed, standbys keep serving reads; etcd back:
/// writes resume. (With failsafe mode on, the default, writes go on:
/// tests/etcd_outage.rs.)
#[tokio::test(flavor = "multi_thread")]
async fn etcd_outage_fences_the_primary_and_recovery_resumes_writes() {
    let c = Arc::new(TestCluster::up(bin(), 3, "[ha]\nfailsafe_mode = false\n").expect("pgha up"));
    let leader = c.leader().await.unwrap();
    let primary = c.connect(&leader).await.unwrap();
    primary
        .batch_execute("CREATE TABLE e(id int)")
        .await
        .unwrap();
    let etcd_pid: i32 = std::fs::read_to_string(c.dir.path().join("run/etcd.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(etcd_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_until_async(
        "primary refuses writes",
        Duration::from_secs(30),
        || async {
            let client = c.connect(&leader).await.ok()?;
            let r = tokio::time::timeout(
                Duration::from_secs(2),
                client.execute("INSERT INTO e VALUES (1)", &[]),
            )
            .await;
            (!matches!(r, Ok(Ok(_)))).then_some(())
        },
    )
    .await
    .unwrap();
    let standby = ["node1", "node2", "node3"]
        .into_iter()
        .find(|m| *m != leader)
        .unwrap();
    let s = c.connect(standby).await.unwrap();
    let n: i64 = s
        .query_one("SELECT count(*) FROM e", &[])
        .await
        .unwrap()
        .get(0);
    // Standbys keep serving reads while etcd is down.
    println!("etcd down: standby {standby} still answers reads ({n} rows)");
    let out = c.pgha(&["up"]);
    assert!(
        out.status.success(),
        "{}",
        pgha_testkit::cluster::describe(&out)
    );
    let leader = c
        .wait_new_leader(None, Duration::from_secs(60))
        .await
        .unwrap();
    let client = c.connect(&leader).await.unwrap();
    client
        .execute("INSERT INTO e VALUES (2)", &[])
        .await
        .unwrap();
}
