//! The chaos workload and the observers: client tasks that append unique
//! ids (one transaction each) through the proxy's rw port or straight to
//! whichever node says it is primary, readers checking read-your-writes in
//! the same proxy session, and a sampler of every node's role. Everything
//! lands in a [`Recorder`] as history records.
//!
//! Outcome rules (see `history`): an error before COMMIT was sent is
//! `Failed` (nothing can have committed); an error or timeout after COMMIT
//! was sent is `Unknown`, and the session is abandoned (a new connection is
//! a new session), because the in-flight COMMIT may still complete.

use super::history::{Op, OpKind, Outcome, RoleSample, Route};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

/// Bound on one operation (a COMMIT may wait for a synchronous standby).
const OP_TIMEOUT: Duration = Duration::from_secs(15);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Pause between a client's operations.
const PACE: Duration = Duration::from_millis(20);
/// Pause after a write that failed.
const FAILED_PAUSE: Duration = Duration::from_millis(100);
pub const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// Where clients connect.
#[derive(Clone, Debug)]
pub struct Endpoints {
    /// The proxy's rw listener.
    pub proxy: (String, u16),
    /// (name, host, port) of every node.
    pub nodes: Vec<(String, String, u16)>,
    pub user: String,
    pub password: String,
}

impl Endpoints {
    /// The node serving at `addr:port` (the server's own view).
    fn node_at(&self, addr: &str, port: i32) -> Option<String> {
        let by_addr: Vec<&(String, String, u16)> = self
            .nodes
            .iter()
            .filter(|n| i32::from(n.2) == port && n.1 == addr)
            .collect();
        if by_addr.len() == 1 {
            return Some(by_addr[0].0.clone());
        }
        // Loopback labs: the address is 127.0.0.1 everywhere, ports differ.
        let by_port: Vec<_> = self
            .nodes
            .iter()
            .filter(|n| i32::from(n.2) == port)
            .collect();
        (by_port.len() == 1).then(|| by_port[0].0.clone())
    }

    async fn connect(&self, host: &str, port: u16) -> Result<Client, String> {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(host)
            .port(port)
            .user(&self.user)
            .password(&self.password)
            .dbname("postgres")
            .application_name("chaos")
            .connect_timeout(CONNECT_TIMEOUT);
        let (client, conn) =
            tokio::time::timeout(CONNECT_TIMEOUT, cfg.connect(tokio_postgres::NoTls))
                .await
                .map_err(|_| "connect timed out".to_string())?
                .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }
}

/// Everything observed during a run, timestamped from `t0`.
pub struct Recorder {
    pub t0: Instant,
    pub ops: Mutex<Vec<Op>>,
    pub roles: Mutex<Vec<RoleSample>>,
}

impl Recorder {
    pub fn new() -> Arc<Self> {
        Arc::new(Recorder {
            t0: Instant::now(),
            ops: Mutex::new(Vec::new()),
            roles: Mutex::new(Vec::new()),
        })
    }

    pub fn now_ms(&self) -> u64 {
        self.t0.elapsed().as_millis() as u64
    }

    fn push_op(&self, op: Op) {
        if let Ok(mut v) = self.ops.lock() {
            v.push(op);
        }
    }

    /// Acknowledged writes so far.
    pub fn acked_writes(&self) -> usize {
        self.ops
            .lock()
            .map(|v| {
                v.iter()
                    .filter(|o| o.kind == OpKind::Write && o.outcome == Outcome::Ok)
                    .count()
            })
            .unwrap_or(0)
    }
}

/// An error as the server said it (SQLSTATE and message), else as text.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{}: {}", d.code().code(), d.message()),
        None => e.to_string(),
    }
}

/// Create the workload's table (on the primary, before the clients start).
pub async fn create_table(c: &Client) -> anyhow::Result<()> {
    c.batch_execute("CREATE TABLE IF NOT EXISTS chaos_ids(id bigint, client int)")
        .await?;
    Ok(())
}

/// Start `n` clients and the role sampler; they run until `stop`.
/// Even-numbered clients go through the proxy (and read), odd ones direct.
pub fn start(
    n: u32,
    ep: Endpoints,
    rec: Arc<Recorder>,
    stop: CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let ep = Arc::new(ep);
    let ids = Arc::new(AtomicI64::new(1));
    let mut tasks = Vec::new();
    for c in 0..n {
        let client = ClientTask {
            client: c,
            proxy: c % 2 == 0,
            ep: ep.clone(),
            rec: rec.clone(),
            ids: ids.clone(),
            stop: stop.clone(),
        };
        tasks.push(tokio::spawn(client.run()));
    }
    for (name, host, port) in ep.nodes.clone() {
        tasks.push(tokio::spawn(sample_roles(
            name,
            host,
            port,
            ep.clone(),
            rec.clone(),
            stop.clone(),
        )));
    }
    tasks
}

struct ClientTask {
    client: u32,
    proxy: bool,
    ep: Arc<Endpoints>,
    rec: Arc<Recorder>,
    ids: Arc<AtomicI64>,
    stop: CancellationToken,
}

/// The fields of one write's result.
struct Served {
    node: Option<String>,
    timeline: Option<u32>,
    lsn: Option<String>,
}

impl ClientTask {
    async fn run(self) {
        let mut session = 0u32;
        while !self.stop.is_cancelled() {
            let Some((client, route)) = self.open().await else {
                self.pause(Duration::from_millis(200)).await;
                continue;
            };
            session += 1;
            self.session(&client, route, session).await;
        }
    }

    async fn pause(&self, d: Duration) {
        tokio::select! {
            _ = self.stop.cancelled() => {}
            _ = tokio::time::sleep(d) => {}
        }
    }

    /// Connect through the proxy, or to the node that says it is primary.
    async fn open(&self) -> Option<(Client, Route)> {
        if self.proxy {
            let (h, p) = &self.ep.proxy;
            return Some((self.ep.connect(h, *p).await.ok()?, Route::Proxy));
        }
        for (name, host, port) in &self.ep.nodes {
            let Ok(c) = self.ep.connect(host, *port).await else {
                continue;
            };
            let q = tokio::time::timeout(
                CONNECT_TIMEOUT,
                c.query_one("SELECT pg_is_in_recovery()", &[]),
            );
            if let Ok(Ok(row)) = q.await {
                if !row.get::<_, bool>(0) {
                    return Some((c, Route::Direct(name.clone())));
                }
            }
        }
        None
    }

    /// Write (and read back through the proxy) until the session breaks.
    async fn session(&self, c: &Client, route: Route, session: u32) {
        let mut last_acked: Option<i64> = None;
        while !self.stop.is_cancelled() {
            let id = self.ids.fetch_add(1, Ordering::SeqCst);
            let start_ms = self.rec.now_ms();
            let (outcome, served, broken) = self.write(c, id).await;
            let failed = outcome != Outcome::Ok;
            if outcome == Outcome::Ok {
                last_acked = Some(id);
            }
            self.rec.push_op(Op {
                client: self.client,
                session,
                kind: OpKind::Write,
                route: route.clone(),
                id,
                start_ms,
                end_ms: self.rec.now_ms(),
                outcome,
                node: served.node,
                timeline: served.timeline,
                lsn: served.lsn,
                expect: None,
                saw: None,
            });
            if broken {
                return;
            }
            if failed {
                // Back off; a direct client looks for the primary again
                // (the node it holds may be fenced or demoted).
                self.pause(FAILED_PAUSE).await;
                if route != Route::Proxy {
                    return;
                }
                continue;
            }
            if let (Route::Proxy, Some(expect)) = (&route, last_acked) {
                if !self.read(c, session, expect).await {
                    return;
                }
            }
            self.pause(PACE).await;
        }
    }

    /// One transaction: insert `id`, learn the server, its timeline and LSN.
    /// The flag says whether the session is broken (must be abandoned).
    async fn write(&self, c: &Client, id: i64) -> (Outcome, Served, bool) {
        let mut served = Served {
            node: None,
            timeline: None,
            lsn: None,
        };
        let deadline = tokio::time::Instant::now() + OP_TIMEOUT;
        let before = async {
            c.batch_execute("BEGIN").await?;
            c.execute(
                "INSERT INTO chaos_ids(id, client) VALUES ($1, $2)",
                &[&id, &(self.client as i32)],
            )
            .await?;
            c.query_one(
                "SELECT coalesce(host(inet_server_addr()), ''), coalesce(inet_server_port(), 0), \
                 pg_walfile_name(pg_current_wal_insert_lsn()), pg_current_wal_insert_lsn()::text",
                &[],
            )
            .await
        };
        match tokio::time::timeout_at(deadline, before).await {
            // COMMIT was never sent: nothing can have committed.
            Err(_) => {
                return (
                    Outcome::Failed("timed out before COMMIT".into()),
                    served,
                    true,
                )
            }
            Ok(Err(e)) => {
                let rollback = c.batch_execute("ROLLBACK");
                let _ = tokio::time::timeout(Duration::from_secs(2), rollback).await;
                return (Outcome::Failed(describe(&e)), served, c.is_closed());
            }
            Ok(Ok(row)) => {
                let addr: String = row.get(0);
                let port: i32 = row.get(1);
                let walfile: String = row.get(2);
                served.node = self.ep.node_at(&addr, port);
                served.timeline = walfile
                    .get(..8)
                    .and_then(|t| u32::from_str_radix(t, 16).ok());
                served.lsn = Some(row.get(3));
            }
        }
        match tokio::time::timeout_at(deadline, c.batch_execute("COMMIT")).await {
            Ok(Ok(())) => (Outcome::Ok, served, false),
            Ok(Err(e)) => (
                Outcome::Unknown(format!("COMMIT: {}", describe(&e))),
                served,
                true,
            ),
            Err(_) => (Outcome::Unknown("COMMIT timed out".into()), served, true),
        }
    }

    /// Read-your-writes: is `expect` visible in this session? False when the
    /// session broke.
    async fn read(&self, c: &Client, session: u32, expect: i64) -> bool {
        let start_ms = self.rec.now_ms();
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&expect];
        let q = c.query_one(
            "SELECT count(*), coalesce(host(inet_server_addr()), ''), coalesce(inet_server_port(), 0) \
             FROM chaos_ids WHERE id = $1",
            &params,
        );
        let (outcome, node, saw) = match tokio::time::timeout(OP_TIMEOUT, q).await {
            Ok(Ok(row)) => {
                let n: i64 = row.get(0);
                let addr: String = row.get(1);
                let node = self.ep.node_at(&addr, row.get(2));
                (Outcome::Ok, node, Some(n > 0))
            }
            Ok(Err(e)) if !c.is_closed() => (Outcome::Failed(describe(&e)), None, None),
            Ok(Err(e)) => (Outcome::Unknown(describe(&e)), None, None),
            Err(_) => (Outcome::Unknown("read timed out".into()), None, None),
        };
        let keep = matches!(outcome, Outcome::Ok | Outcome::Failed(_));
        self.rec.push_op(Op {
            client: self.client,
            session,
            kind: OpKind::Read,
            route: Route::Proxy,
            id: 0,
            start_ms,
            end_ms: self.rec.now_ms(),
            outcome,
            node,
            timeline: None,
            lsn: None,
            expect: Some(expect),
            saw,
        });
        keep
    }
}

/// Sample one node's role every [`SAMPLE_EVERY`].
async fn sample_roles(
    name: String,
    host: String,
    port: u16,
    ep: Arc<Endpoints>,
    rec: Arc<Recorder>,
    stop: CancellationToken,
) {
    let mut conn: Option<Client> = None;
    while !stop.is_cancelled() {
        let at_ms = rec.now_ms();
        if conn.as_ref().is_none_or(|c| c.is_closed()) {
            conn = ep.connect(&host, port).await.ok();
        }
        let (role, timeline) = match &conn {
            None => ("down".to_string(), None),
            Some(c) => match tokio::time::timeout(Duration::from_secs(1), role_of(c)).await {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => {
                    conn = None;
                    ("down".to_string(), None)
                }
                Err(_) => {
                    conn = None;
                    ("unknown".to_string(), None)
                }
            },
        };
        if let Ok(mut v) = rec.roles.lock() {
            v.push(RoleSample {
                at_ms,
                node: name.clone(),
                role,
                timeline,
            });
        }
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(SAMPLE_EVERY) => {}
        }
    }
}

async fn role_of(c: &Client) -> Result<(String, Option<u32>), tokio_postgres::Error> {
    let row = c
        .query_one(
            "SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() \
             THEN (SELECT received_tli::text FROM pg_stat_wal_receiver LIMIT 1) \
             ELSE substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8) END",
            &[],
        )
        .await?;
    let standby: bool = row.get(0);
    let tl: Option<String> = row.get(1);
    Ok(if standby {
        ("standby".into(), tl.and_then(|t| t.parse().ok()))
    } else {
        (
            "primary".into(),
            tl.and_then(|t| u32::from_str_radix(&t, 16).ok()),
        )
    })
}
