//! A planned switchover is invisible to clients of the proxy: several
//! clients write through the dev cluster's rw port in a loop (autocommit
//! inserts in the simple and the extended protocol, and transactions of two
//! inserts with a pause inside) while `pgha switchover` runs. No client sees
//! an error, writes continue on the new primary, every acknowledged row is
//! there, and the old leader shut down only after the proxy had drained.
//!
//! The longest pause between two acknowledged writes is printed, not
//! asserted (the machine is shared).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking

use pgha_agent::api::client;
use pgha_testkit::cluster::{describe, TestCluster};
use pgha_testkit::proxy_writer::connect_rw;
use pgha_testkit::wait_until;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_postgres::Client;

const INSERT: &str = "INSERT INTO drain_t(client, n) VALUES ($1, $2)";

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_pgha"))
}

/// What the clients saw: acknowledged writes (client, rows, time) and errors.
#[derive(Default)]
struct Log {
    acks: Vec<(i32, i64, Instant)>,
    errors: Vec<String>,
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    /// One INSERT per round trip, extended protocol (a named statement).
    Extended,
    /// One INSERT per round trip, simple protocol.
    Simple,
    /// BEGIN; INSERT; (pause) INSERT; COMMIT.
    Transaction,
}

/// One round: the rows it acknowledged, or the error.
async fn round(client: &mut Client, kind: Kind, id: i32, n: i32) -> Result<i64, String> {
    let err = |e: tokio_postgres::Error| {
        let code = e.code().map(|c| c.code().to_string()).unwrap_or_default();
        format!("{kind:?} client {id}: {code} {e}")
    };
    let rows = match kind {
        Kind::Extended => client.execute(INSERT, &[&id, &n]).await.map_err(err)? as i64,
        Kind::Simple => client
            .batch_execute(&format!(
                "INSERT INTO drain_t(client, n) VALUES ({id}, {n})"
            ))
            .await
            .map(|_| 1)
            .map_err(err)?,
        Kind::Transaction => {
            let tx = client.transaction().await.map_err(err)?;
            tx.execute(INSERT, &[&id, &n]).await.map_err(err)?;
            tokio::time::sleep(Duration::from_millis(30)).await;
            tx.execute(INSERT, &[&id, &(n + 1)]).await.map_err(err)?;
            tx.commit().await.map_err(err)?;
            2
        }
    };
    Ok(rows)
}

/// Writes in a loop until `stop`, logging every acknowledgement and error.
async fn client_loop(
    mut client: Client,
    kind: Kind,
    id: i32,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Log>>,
) {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 2;
        let result = round(&mut client, kind, id, n).await;
        let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(rows) => l.acks.push((id, rows, Instant::now())),
            Err(e) => {
                l.errors.push(e);
                if client.is_closed() {
                    return;
                }
            }
        }
    }
}

/// The longest time between two acknowledgements within `[from, to]`.
fn longest_gap(log: &Log, from: Instant, to: Instant) -> Duration {
    let mut at: Vec<Instant> = log.acks.iter().map(|a| a.2).collect();
    at.sort();
    let inside: Vec<Instant> = at
        .iter()
        .copied()
        .filter(|t| *t >= from && *t <= to)
        .collect();
    let before = at.iter().copied().rfind(|t| *t < from);
    before
        .into_iter()
        .chain(inside)
        .collect::<Vec<_>>()
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
}

/// The reason the old leader logged when it shut down for the switchover.
async fn shutdown_reason(c: &TestCluster, member: &str) -> String {
    let url = format!(
        "{}/cluster",
        c.config.member(member).expect("member").api_url()
    );
    let doc = wait_until(
        "the old leader's agent answers",
        Duration::from_secs(30),
        || {
            let rt = tokio::runtime::Handle::current();
            let r = tokio::task::block_in_place(|| {
                rt.block_on(client::get(&url, Duration::from_secs(5)))
            });
            r.ok()?.json().ok()
        },
    )
    .expect("/cluster document");
    let decisions: Vec<(u64, String)> = doc["decisions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            let at = d["at_unix_ms"].as_u64().unwrap_or(0);
            (at, d["reason"].as_str().unwrap_or("").to_string())
        })
        .collect();
    let first = decisions.first().map_or(0, |d| d.0);
    for (at, reason) in &decisions {
        eprintln!("{member} +{}ms: {reason}", at.saturating_sub(first));
    }
    decisions
        .into_iter()
        .map(|d| d.1)
        .find(|r| r.contains("shutting down cleanly"))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn switchover_under_load_shows_clients_no_error() {
    let c = TestCluster::up(bin(), 3, "").expect("pgha up");
    let old = c.settled_leader();
    let admin = c.connect(&old).await.expect("connect to the leader");
    admin
        .batch_execute(
            "CREATE TABLE drain_t(id bigserial PRIMARY KEY, client int NOT NULL, n int NOT NULL)",
        )
        .await
        .expect("create table");

    let kinds = [
        Kind::Extended,
        Kind::Simple,
        Kind::Transaction,
        Kind::Transaction,
    ];
    let mut clients = Vec::new();
    for _ in kinds {
        let client = pgha_testkit::wait_until_async(
            "a session through the proxy",
            Duration::from_secs(60),
            || async { connect_rw(&c).await.ok() },
        )
        .await
        .expect("the proxy accepts sessions");
        clients.push(client);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Log::default()));
    let mut tasks = Vec::new();
    for (i, (client, kind)) in clients.into_iter().zip(kinds).enumerate() {
        let (stop, log) = (stop.clone(), log.clone());
        tasks.push(tokio::spawn(client_loop(client, kind, i as i32, stop, log)));
    }
    let acks = |log: &Arc<Mutex<Log>>| log.lock().map(|l| l.acks.len()).unwrap_or(0);
    let warm = wait_until("writes through the proxy", Duration::from_secs(60), || {
        (acks(&log) >= 40).then_some(())
    });
    assert!(warm.is_ok(), "no writes through the proxy");

    let started = Instant::now();
    let out = tokio::task::block_in_place(|| c.pgha(&["switchover", "--wait", "90"]));
    let done = Instant::now();
    assert!(out.status.success(), "{}", describe(&out));
    let new = c.settled_leader();
    assert_ne!(new, old, "the leader moved");
    let reason = shutdown_reason(&c, &old).await;

    let at_switch = acks(&log);
    let resumed = wait_until("writes on the new primary", Duration::from_secs(60), || {
        (acks(&log) >= at_switch + 40).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
    }
    let log = Arc::try_unwrap(log)
        .ok()
        .and_then(|m| m.into_inner().ok())
        .unwrap_or_default();
    assert!(
        log.errors.is_empty(),
        "clients saw {} error(s): {:#?}",
        log.errors.len(),
        &log.errors[..log.errors.len().min(10)]
    );
    assert!(
        resumed.is_ok(),
        "writes did not continue after the switchover"
    );
    eprintln!(
        "switchover took {:?}; {} acknowledged writes; longest pause between acknowledged writes \
         around it: {:?}",
        done - started,
        log.acks.len(),
        longest_gap(&log, started, done + Duration::from_secs(5))
    );

    // Every acknowledged row is on the new primary.
    let primary = c.connect(&new).await.expect("connect to the new leader");
    for id in 0..kinds.len() as i32 {
        let acked: i64 = log.acks.iter().filter(|a| a.0 == id).map(|a| a.1).sum();
        let row = primary
            .query_one("SELECT count(*) FROM drain_t WHERE client = $1", &[&id])
            .await
            .expect("count rows");
        let stored: i64 = row.get(0);
        assert_eq!(stored, acked, "client {id}: rows on the new primary");
    }

    assert!(
        reason.contains("proxies drained"),
        "the old leader shut down without the proxy's drain report: {reason:?}"
    );
}
