//! A writer that appends unique ids, one transaction each, to whichever
//! member holds the leader key, and records every id whose commit was
//! acknowledged, with the member that acknowledged it. The checker then
//! asks: is every acknowledged id on the final primary?
//!
//! A commit that does not return within `COMMIT_TIMEOUT` (e.g. it waits for
//! a synchronous standby that is gone) is abandoned and not counted.

use crate::cluster::TestCluster;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

const COMMIT_TIMEOUT: Duration = Duration::from_secs(5);

/// One acknowledged write.
#[derive(Clone, Debug)]
pub struct Ack {
    pub id: i64,
    pub member: String,
    pub at: Instant,
}

pub struct Writer {
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<Ack>>>,
    task: JoinHandle<()>,
}

impl Writer {
    /// Create the table and start writing.
    pub async fn start(cluster: Arc<TestCluster>) -> anyhow::Result<Self> {
        let leader = cluster
            .leader()
            .await
            .ok_or_else(|| anyhow::anyhow!("no leader"))?;
        let c = cluster.connect(&leader).await?;
        c.batch_execute(
            "CREATE TABLE IF NOT EXISTS acked(id bigint PRIMARY KEY, at timestamptz DEFAULT now())",
        )
        .await?;
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(write_loop(cluster, stop.clone(), acks.clone()));
        Ok(Writer { stop, acks, task })
    }

    /// Acknowledged so far.
    pub fn acks(&self) -> Vec<Ack> {
        self.acks.lock().map(|a| a.clone()).unwrap_or_default()
    }

    /// Wait until `n` more writes are acknowledged after now; returns the
    /// time it took.
    pub async fn wait_more(&self, n: usize, timeout: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        let base = self.acks().len();
        crate::wait_until_async("more acknowledged writes", timeout, || async {
            (self.acks().len() >= base + n).then_some(())
        })
        .await?;
        Ok(start.elapsed())
    }

    /// Stop writing and return every acknowledged write.
    pub async fn stop(self) -> Vec<Ack> {
        self.stop.store(true, Ordering::SeqCst);
        let acks = self.acks.clone();
        let _ = self.task.await;
        let out = acks.lock().map(|a| a.clone()).unwrap_or_default();
        out
    }
}

async fn write_loop(cluster: Arc<TestCluster>, stop: Arc<AtomicBool>, acks: Arc<Mutex<Vec<Ack>>>) {
    let mut next_id: i64 = 1;
    while !stop.load(Ordering::SeqCst) {
        let Some(leader) = cluster.leader().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(client) = cluster.connect(&leader).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        while !stop.load(Ordering::SeqCst) {
            let id = next_id;
            next_id += 1;
            let r = tokio::time::timeout(
                COMMIT_TIMEOUT,
                client.execute("INSERT INTO acked(id) VALUES ($1)", &[&id]),
            )
            .await;
            match r {
                Ok(Ok(_)) => {
                    if let Ok(mut a) = acks.lock() {
                        a.push(Ack {
                            id,
                            member: leader.clone(),
                            at: Instant::now(),
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                _ => break,
            }
        }
    }
}

/// Ids of `acks` missing from `member`'s table.
pub async fn missing_on(
    cluster: &TestCluster,
    member: &str,
    acks: &[Ack],
) -> anyhow::Result<Vec<i64>> {
    let c = cluster.connect(member).await?;
    let rows = c.query("SELECT id FROM acked", &[]).await?;
    let have: std::collections::HashSet<i64> = rows.iter().map(|r| r.get(0)).collect();
    Ok(acks
        .iter()
        .map(|a| a.id)
        .filter(|id| !have.contains(id))
        .collect())
}
