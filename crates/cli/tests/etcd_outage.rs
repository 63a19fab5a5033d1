//! Failsafe mode with real processes: etcd is killed for 20 s under a
//! writer that goes through the proxy. With every standby able to promise,
//! no write fails and none is lost; with the standbys' agents stopped
//! during the outage, the primary fences itself (no other member can have
//! been promoted: there is never a second writable primary) and nothing
//! acknowledged is lost.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking

use pgha_testkit::cluster::{describe, TestCluster};
use pgha_testkit::proxy_writer::{self, Log, ProxyWriter as Writer};
use pgha_testkit::wait_until_async;
use std::path::Path;
use std::time::{Duration, Instant};

const OUTAGE: Duration = Duration::from_secs(20);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_pgha"))
}

/// Every member that takes writes right now.
async fn writable_members(c: &TestCluster) -> Vec<String> {
    let mut out = Vec::new();
    for m in &c.config.members {
        if c.writable(&m.name).await == Some(true) {
            out.push(m.name.clone());
        }
    }
    out
}

async fn missing(c: &TestCluster, member: &str, log: &Log) -> Vec<i64> {
    proxy_writer::missing(c, member, "outage", log)
        .await
        .unwrap()
}

fn bring_etcd_back(c: &TestCluster) {
    let out = c.start_etcd();
    assert!(out.status.success(), "pgha up: {}", describe(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_go_on_through_a_20s_etcd_outage() {
    let c = tokio::task::block_in_place(|| TestCluster::up(bin(), 3, "").expect("pgha up"));
    let leader = tokio::task::block_in_place(|| c.settled_leader());
    let w = Writer::start(&c, "outage").await;
    w.wait_acked(20, Duration::from_secs(60)).await;

    assert!(c.kill_etcd(), "etcd was running");
    let down = Instant::now();
    let at_kill = w.acked();
    // Past the point where the lease could have run out (1.5 s): writes
    // must still be acknowledged in the last part of the outage.
    let mut late = None;
    while down.elapsed() < OUTAGE {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(w.failed(), 0, "{:?}", w.log.lock().unwrap().failed);
        if late.is_none() && down.elapsed() >= OUTAGE / 2 {
            late = Some(w.acked());
        }
    }
    let during = w.acked() - at_kill;
    let late = w.acked() - late.unwrap_or(at_kill);
    tokio::task::block_in_place(|| bring_etcd_back(&c));
    w.wait_acked(50, Duration::from_secs(30)).await;
    let log = w.stop().await;
    println!(
        "etcd down {:?}: {during} writes acknowledged meanwhile, {} in all, {} failed",
        OUTAGE,
        log.acked.len(),
        log.failed.len()
    );
    assert!(log.failed.is_empty(), "failed writes: {:?}", log.failed);
    assert!(
        late > 0,
        "no write acknowledged in the second half of the outage"
    );
    assert_eq!(c.leader().await.as_deref(), Some(leader.as_str()));
    assert_eq!(missing(&c, &leader, &log).await, Vec::<i64>::new());
}

/// k = 1 of {two standbys}: with one standby's agent stopped the other's
/// promise is enough (the stopped one cannot gather the reports a promotion
/// needs); with both stopped the primary fences itself within the promise
/// time. Never two writable members; nothing acknowledged lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_primary_fences_when_the_standbys_cannot_promise() {
    let c = tokio::task::block_in_place(|| TestCluster::up(bin(), 3, "").expect("pgha up"));
    let leader = tokio::task::block_in_place(|| c.settled_leader());
    let standbys: Vec<String> = c
        .config
        .members
        .iter()
        .map(|m| m.name.clone())
        .filter(|m| *m != leader)
        .collect();
    let w = Writer::start(&c, "outage").await;
    w.wait_acked(20, Duration::from_secs(60)).await;

    assert!(c.kill_etcd(), "etcd was running");
    w.wait_acked(50, Duration::from_secs(10)).await;
    c.pause_agent(&standbys[0], true);
    // No observable event marks it: give the stopped agent's last promise
    // its 1.5 s to run out, so that the writes below rest on the other
    // standby's promises alone.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    w.wait_acked(50, Duration::from_secs(10)).await;
    assert_eq!(w.failed(), 0, "{:?}", w.log.lock().unwrap().failed);

    c.pause_agent(&standbys[1], true);
    let fenced = Instant::now();
    wait_until_async(
        "the primary fences itself",
        Duration::from_secs(10),
        || async { (c.writable(&leader).await == Some(false)).then_some(()) },
    )
    .await
    .expect("no promise left: the primary fences");
    println!(
        "fenced {:?} after the last promiser stopped",
        fenced.elapsed()
    );
    assert_eq!(
        writable_members(&c).await,
        Vec::<String>::new(),
        "nobody writable"
    );

    c.pause_agent(&standbys[0], false);
    c.pause_agent(&standbys[1], false);
    tokio::task::block_in_place(|| bring_etcd_back(&c));
    w.wait_acked(50, Duration::from_secs(60)).await;
    let log = w.stop().await;
    let primaries = writable_members(&c).await;
    assert_eq!(primaries.len(), 1, "one writable primary: {primaries:?}");
    assert_eq!(missing(&c, &primaries[0], &log).await, Vec::<i64>::new());
    for m in standbys.iter().filter(|m| **m != primaries[0]) {
        wait_until_async(
            "the standby replays every write",
            Duration::from_secs(60),
            || async {
                let client = c.connect(m).await.ok()?;
                let rows = client.query("SELECT id FROM outage", &[]).await.ok()?;
                (rows.len() >= log.acked.len()).then_some(())
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{m}: {e:#}"));
    }
}
