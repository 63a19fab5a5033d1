//! A writer through the dev cluster's proxy (rw listener): one session,
//! one autocommit INSERT of a unique id every 20 ms, recording each
//! acknowledged id and each failed write with its time. A write that takes
//! more than 10 s counts as failed (the session stays). For tests that
//! check "no write failed" and "nothing acknowledged was lost" through the
//! proxy, as a client sees it.

use crate::cluster::TestCluster;
use crate::wait_until_async;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_postgres::{Client, NoTls};

/// What the writer saw: acknowledged ids, and failed writes with the time.
#[derive(Default)]
pub struct Log {
    pub acked: Vec<(i64, Instant)>,
    pub failed: Vec<(Instant, String)>,
}

pub struct ProxyWriter {
    stop: Arc<AtomicBool>,
    pub log: Arc<Mutex<Log>>,
    task: tokio::task::JoinHandle<()>,
}

impl ProxyWriter {
    /// Create table `table` (id bigint primary key) through the proxy and
    /// start writing into it.
    pub async fn start(c: &TestCluster, table: &str) -> ProxyWriter {
        let client = wait_until_async(
            "a session through the proxy",
            Duration::from_secs(60),
            || async { connect_rw(c).await.ok() },
        )
        .await
        .unwrap_or_else(|e| panic!("the proxy accepts no session: {e:#}"));
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {table}(id bigint PRIMARY KEY)"
            ))
            .await
            .unwrap_or_else(|e| panic!("create {table}: {e}"));
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Log::default()));
        let task = tokio::spawn(write_loop(
            client,
            table.to_string(),
            stop.clone(),
            log.clone(),
        ));
        ProxyWriter { stop, log, task }
    }

    pub fn acked(&self) -> usize {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .acked
            .len()
    }

    pub fn failed(&self) -> usize {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .failed
            .len()
    }

    pub async fn wait_acked(&self, more: usize, timeout: Duration) {
        let base = self.acked();
        wait_until_async("acknowledged writes", timeout, || async {
            (self.acked() >= base + more).then_some(())
        })
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{e:#}; failures: {:?}",
                self.log.lock().unwrap_or_else(|e| e.into_inner()).failed
            )
        });
    }

    pub async fn stop(self) -> Log {
        self.stop.store(true, Ordering::SeqCst);
        let _ = tokio::time::timeout(Duration::from_secs(30), self.task).await;
        std::mem::take(&mut *self.log.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// A session through the proxy's rw listener.
pub async fn connect_rw(c: &TestCluster) -> anyhow::Result<Client> {
    let p = c
        .config
        .proxy
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("the dev cluster has no [proxy]"))?;
    let conninfo = format!(
        "host={} port={} user={} password={} dbname=postgres connect_timeout=10",
        p.host, p.rw_port, c.config.superuser, c.admin_password
    );
    let (client, conn) = tokio_postgres::connect(&conninfo, NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// One insert at a time on one session, every 20 ms; a write that fails or
/// takes more than 10 s is a failure (the session stays).
async fn write_loop(client: Client, table: String, stop: Arc<AtomicBool>, log: Arc<Mutex<Log>>) {
    let insert_sql = format!("INSERT INTO {table}(id) VALUES ($1)");
    let mut id: i64 = 0;
    while !stop.load(Ordering::SeqCst) {
        id += 1;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&id];
        let insert = client.execute(insert_sql.as_str(), &params);
        let r = tokio::time::timeout(Duration::from_secs(10), insert).await;
        let entry = match r {
            Ok(Ok(_)) => Ok(id),
            Ok(Err(e)) => Err(format!("{e}")),
            Err(_) => Err("no answer within 10 s".to_string()),
        };
        record(&log, entry);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn record(log: &Mutex<Log>, entry: Result<i64, String>) {
    let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
    match entry {
        Ok(id) => l.acked.push((id, Instant::now())),
        Err(e) => l.failed.push((Instant::now(), e)),
    }
}

/// Ids acknowledged in `log` but missing from `table` on `member`.
pub async fn missing(
    c: &TestCluster,
    member: &str,
    table: &str,
    log: &Log,
) -> anyhow::Result<Vec<i64>> {
    let client = c.connect(member).await?;
    let rows = client
        .query(&format!("SELECT id FROM {table}"), &[])
        .await?;
    let have: std::collections::HashSet<i64> = rows.iter().map(|r| r.get(0)).collect();
    Ok(log
        .acked
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| !have.contains(id))
        .collect())
}
