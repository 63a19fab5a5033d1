//! A primary whose PostgreSQL hangs (every process SIGSTOPped, by PID) is
//! failed over like one that dies, under a writer through the proxy: after
//! `hung_timeout` (6 s) its agent kills it and hands over, writes resume on
//! another member, nothing acknowledged is lost, and the frozen member
//! rejoins as a standby once thawed. A stall shorter than `hung_timeout`
//! changes nothing. Times are printed, never asserted.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking

use pgha_testkit::cluster::TestCluster;
use pgha_testkit::proxy_writer::{missing, ProxyWriter};
use pgha_testkit::wait_until_async;
use std::path::Path;
use std::time::{Duration, Instant};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_pgha"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_primary_is_failed_over_and_rejoins() {
    let c = tokio::task::block_in_place(|| TestCluster::up(bin(), 3, "").expect("pgha up"));
    let old = tokio::task::block_in_place(|| c.settled_leader());
    let w = ProxyWriter::start(&c, "hung").await;
    w.wait_acked(20, Duration::from_secs(60)).await;

    let pids = c.postgres_pids(&old);
    assert!(pids.len() > 3, "postmaster and children: {pids:?}");
    c.freeze_pids(&pids, true);
    let frozen = Instant::now();
    let others: Vec<String> = c
        .config
        .members
        .iter()
        .map(|m| m.name.clone())
        .filter(|m| *m != old)
        .collect();
    let new = wait_until_async(
        "another member writable",
        Duration::from_secs(60),
        || async {
            for m in &others {
                if c.writable(m).await == Some(true) {
                    return Some(m.clone());
                }
            }
            None
        },
    )
    .await
    .expect("a standby takes over from the hung primary");
    let promoted = frozen.elapsed();
    let base = w.acked();
    w.wait_acked(20, Duration::from_secs(60)).await;
    let resumed = w
        .log
        .lock()
        .unwrap()
        .acked
        .get(base)
        .map(|(_, at)| *at - frozen);
    println!("frozen {old}: {new} writable after {promoted:?}, writes through the proxy resumed after {resumed:?}");
    assert!(
        c.postgres_pids(&old).iter().all(|p| !pids.contains(p)),
        "the hung server's processes were killed"
    );
    // The rest of the 30 s freeze, then thaw what is left (nothing).
    let left = Duration::from_secs(30).saturating_sub(frozen.elapsed());
    tokio::time::sleep(left).await;
    c.freeze_pids(&pids, false);

    let log = w.stop().await;
    assert_eq!(
        missing(&c, &new, "hung", &log).await.unwrap(),
        Vec::<i64>::new()
    );
    wait_until_async(
        "the old primary rejoins as a standby",
        Duration::from_secs(120),
        || async {
            let client = c.connect(&old).await.ok()?;
            let standby: bool = client
                .query_one("SELECT pg_is_in_recovery()", &[])
                .await
                .ok()?
                .get(0);
            let rows = client.query("SELECT id FROM hung", &[]).await.ok()?;
            (standby && rows.len() >= log.acked.len()).then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", c.server_log(&old)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stall_shorter_than_hung_timeout_changes_nothing() {
    let c = tokio::task::block_in_place(|| TestCluster::up(bin(), 3, "").expect("pgha up"));
    let leader = tokio::task::block_in_place(|| c.settled_leader());
    let w = ProxyWriter::start(&c, "stall").await;
    w.wait_acked(20, Duration::from_secs(60)).await;

    let pids = c.postgres_pids(&leader);
    c.freeze_pids(&pids, true);
    tokio::time::sleep(Duration::from_secs(3)).await;
    c.freeze_pids(&pids, false);
    let thawed = Instant::now();
    w.wait_acked(50, Duration::from_secs(30)).await;
    println!("writes resumed {:?} after the thaw", thawed.elapsed());
    assert_eq!(c.postgres_pids(&leader)[0], pids[0], "same postmaster");
    assert_eq!(c.leader().await.as_deref(), Some(leader.as_str()));
    assert_eq!(
        c.writable(&leader).await,
        Some(true),
        "still the writable primary"
    );
    let log = w.stop().await;
    assert!(log.failed.is_empty(), "failed writes: {:?}", log.failed);
    assert_eq!(
        missing(&c, &leader, "stall", &log).await.unwrap(),
        Vec::<i64>::new()
    );
}
