//! The REST API over real sockets: a hand-built `AgentStatus` served on
//! 127.0.0.1:0, checked with a plain HTTP client and raw requests the way
//! HAProxy and Kubernetes send them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking

use pgha_agent::api::{self, client};
use pgha_agent::status::{AgentCommand, AgentStatus, DecisionRecord};
use pgha_core::{Lsn, Role, Timeline};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};

const TOKEN: &str = "s3cret-token";
const T: Duration = Duration::from_secs(5);

struct Server {
    base: String,
    status: watch::Sender<AgentStatus>,
    commands: mpsc::Receiver<AgentCommand>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Server {
    async fn start(initial: AgentStatus) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (status, rx) = watch::channel(initial);
        let (cmd_tx, commands) = mpsc::channel(4);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(api::serve(
            listener,
            rx,
            cmd_tx,
            TOKEN.to_string(),
            async move {
                let _ = stopped.await;
            },
        ));
        Server {
            base,
            status,
            commands,
            stop: Some(stop),
            task,
        }
    }

    async fn code(&self, method: &str, path: &str) -> u16 {
        client::request(method, &format!("{}{path}", self.base), &[], &[], T)
            .await
            .expect("request")
            .status
    }

    async fn get(&self, path: &str) -> client::Response {
        client::get(&format!("{}{path}", self.base), T)
            .await
            .expect("request")
    }

    async fn post(&self, path: &str, auth: Option<&str>) -> client::Response {
        let header;
        let headers: Vec<(&str, &str)> = match auth {
            Some(a) => {
                header = a.to_string();
                vec![("Authorization", header.as_str())]
            }
            None => vec![],
        };
        client::request("POST", &format!("{}{path}", self.base), &headers, &[], T)
            .await
            .expect("request")
    }

    async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(T, &mut self.task)
            .await
            .expect("server stops on shutdown")
            .expect("join")
            .expect("serve ok");
    }
}

fn primary() -> AgentStatus {
    AgentStatus {
        member: "node1".into(),
        cluster: "main".into(),
        role: Role::Primary,
        pg_running: true,
        is_leader: true,
        writable: true,
        timeline: Some(Timeline(2)),
        lsn: Some(Lsn(0x3000060)),
        leader: Some("node1".into()),
        ..Default::default()
    }
}

fn standby(lag: u64, in_sync: bool) -> AgentStatus {
    AgentStatus {
        member: "node2".into(),
        cluster: "main".into(),
        role: Role::Standby,
        pg_running: true,
        streaming: true,
        timeline: Some(Timeline(2)),
        lsn: Some(Lsn(0x3000000)),
        replay_lsn: Some(Lsn(0x3000000)),
        lag_bytes: Some(lag),
        in_sync_set: in_sync,
        leader: Some("node1".into()),
        ..Default::default()
    }
}

const HEALTH: [&str; 9] = [
    "/primary",
    "/master",
    "/leader",
    "/replica",
    "/read-only",
    "/health",
    "/sync",
    "/async",
    "/",
];

async fn codes(s: &Server, method: &str) -> Vec<(&'static str, u16)> {
    let mut out = Vec::new();
    for p in HEALTH {
        out.push((p, s.code(method, p).await));
    }
    out
}

fn expect(pairs: &[(&'static str, u16)]) -> Vec<(&'static str, u16)> {
    HEALTH
        .iter()
        .map(|p| {
            let code = pairs.iter().find(|(q, _)| q == p).map_or(503, |(_, c)| *c);
            (*p, code)
        })
        .collect()
}

#[tokio::test]
async fn primary_answers_primary_checks() {
    let s = Server::start(primary()).await;
    let want = expect(&[
        ("/primary", 200),
        ("/master", 200),
        ("/leader", 200),
        ("/", 200),
        ("/read-only", 200),
        ("/health", 200),
    ]);
    for method in ["GET", "OPTIONS", "HEAD"] {
        assert_eq!(codes(&s, method).await, want, "{method}");
    }
    let body = s.get("/primary").await.json().expect("json");
    assert_eq!(body["role"], "primary");
    assert_eq!(body["xlog"]["location"], "0/3000060");
    let r = s.get("/replica").await;
    assert_eq!(r.status, 503);
    assert!(r.json().expect("json")["reason"].is_string());
    s.shutdown().await;
}

#[tokio::test]
async fn sync_and_async_standbys() {
    let s = Server::start(standby(0, true)).await;
    let want = expect(&[
        ("/replica", 200),
        ("/read-only", 200),
        ("/health", 200),
        ("/sync", 200),
    ]);
    assert_eq!(codes(&s, "GET").await, want);
    assert_eq!(codes(&s, "OPTIONS").await, want);
    s.status.send_replace(standby(0, false));
    let want = expect(&[
        ("/replica", 200),
        ("/read-only", 200),
        ("/health", 200),
        ("/async", 200),
    ]);
    assert_eq!(codes(&s, "GET").await, want);
    s.shutdown().await;
}

#[tokio::test]
async fn lagging_standby_fails_replica_with_lag_limit() {
    let s = Server::start(standby(20 << 20, false)).await;
    assert_eq!(s.code("GET", "/replica").await, 200);
    assert_eq!(s.code("GET", "/replica?lag=16MB").await, 503);
    assert_eq!(s.code("OPTIONS", "/replica?lag=16MB").await, 503);
    assert_eq!(s.code("GET", "/replica?lag=1048576").await, 503);
    assert_eq!(s.code("GET", "/replica?lag=64MB").await, 200);
    assert_eq!(s.code("GET", "/replica?lag=64MB&tag_zone=a").await, 200);
    assert_eq!(s.code("GET", "/async?lag=1MB").await, 503);
    assert_eq!(s.code("GET", "/replica?lag=lots").await, 400);
    s.shutdown().await;
}

#[tokio::test]
async fn stopped_postgres_fails_everything_but_documents() {
    let stopped = AgentStatus {
        pg_running: false,
        streaming: false,
        ..standby(0, true)
    };
    let s = Server::start(stopped).await;
    assert_eq!(codes(&s, "GET").await, expect(&[]));
    assert_eq!(s.code("GET", "/patroni").await, 200);
    assert_eq!(s.code("GET", "/cluster").await, 200);
    assert_eq!(s.code("GET", "/liveness").await, 200);
    assert_eq!(s.code("GET", "/config").await, 200);
    assert_eq!(s.code("GET", "/nope").await, 404);
    assert_eq!(s.code("DELETE", "/primary").await, 405);
    let doc = s.get("/patroni").await.json().expect("json");
    assert_eq!(doc["state"], "stopped");
    s.shutdown().await;
}

/// HAProxy's default `option httpchk` request: `OPTIONS / HTTP/1.0`, no Host.
#[tokio::test]
async fn haproxy_default_check_over_http_1_0() {
    let s = Server::start(primary()).await;
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut raw = Vec::new();
    let mut stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    stream
        .write_all(b"OPTIONS / HTTP/1.0\r\n\r\n")
        .await
        .expect("write");
    tokio::time::timeout(T, stream.read_to_end(&mut raw))
        .await
        .expect("server closes an HTTP/1.0 connection")
        .expect("read");
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"),
        "{text}"
    );
    s.status.send_replace(standby(0, true));
    assert_eq!(s.code("OPTIONS", "/").await, 503);
    s.shutdown().await;
}

#[tokio::test]
async fn cluster_document_shows_decisions() {
    let mut st = primary();
    st.decisions.push_back(DecisionRecord {
        at_unix_ms: 1,
        reason: "no safe candidate: need the final LSN of 2 of {node2, node3}".into(),
        actions: vec![],
    });
    st.paused = true;
    let s = Server::start(st).await;
    let doc = s.get("/cluster").await.json().expect("json");
    assert_eq!(doc["leader"], "node1");
    assert_eq!(doc["paused"], true);
    let reason = doc["decisions"][0]["reason"].as_str().expect("reason");
    assert!(reason.contains("no safe candidate"), "{doc}");
    s.shutdown().await;
}

#[tokio::test]
async fn control_endpoints_need_the_token() {
    let mut s = Server::start(standby(0, true)).await;
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Basic s3cret-token"),
        Some("Bearer"),
    ] {
        let r = s.post("/restart", auth).await;
        assert_eq!(r.status, 401, "{auth:?}");
        assert_eq!(s.post("/reinit", auth).await.status, 401, "{auth:?}");
    }
    assert!(
        s.commands.try_recv().is_err(),
        "no command may reach the loop"
    );
    assert_eq!(s.code("GET", "/restart").await, 405);

    // A loop that answers: success, then a refusal.
    let base = s.base.clone();
    let req = tokio::spawn(async move {
        let h = [("Authorization", "Bearer s3cret-token")];
        let ok = client::request("POST", &format!("{base}/restart"), &h, &[], T).await;
        let refused = client::request("POST", &format!("{base}/reinit"), &h, &[], T).await;
        (ok.expect("restart"), refused.expect("reinit"))
    });
    match tokio::time::timeout(T, s.commands.recv())
        .await
        .expect("cmd")
    {
        Some(AgentCommand::Restart { reply }) => reply.send(Ok(())).expect("reply"),
        other => panic!("unexpected {other:?}"),
    }
    match tokio::time::timeout(T, s.commands.recv())
        .await
        .expect("cmd")
    {
        Some(AgentCommand::Reinit { reply }) => reply
            .send(Err("refused on the leader".into()))
            .expect("reply"),
        other => panic!("unexpected {other:?}"),
    }
    let (ok, refused) = req.await.expect("join");
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(refused.status, 500);
    assert!(refused.text().contains("refused on the leader"));
    s.shutdown().await;
}

#[tokio::test]
async fn control_without_a_loop_is_unavailable() {
    let mut s = Server::start(primary()).await;
    s.commands.close();
    let r = s.post("/restart", Some("Bearer s3cret-token")).await;
    assert_eq!(r.status, 503, "{}", r.text());
    s.shutdown().await;
}

/// `POST /failsafe` over a socket: the token is required, a bad body is
/// 400, a standby following the asking leader with the DCS out grants (200)
/// and refuses a second leader (409); an API without a loop answers 503.
#[tokio::test]
async fn failsafe_promises_need_the_token_and_follow_the_rule() {
    use pgha_agent::failsafe::Failsafe;
    use pgha_core::{DcsView, DynamicConfig, LocalState};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (_status, rx) = watch::channel(standby(0, true));
    let (cmd_tx, _commands) = mpsc::channel(4);
    let failsafe = Failsafe::new("node2", TOKEN, std::time::Instant::now());
    let mut local = LocalState {
        name: "node2".into(),
        ..Default::default()
    };
    local.pg.running = true;
    local.pg.role = Role::Standby;
    local.pg.upstream = Some("node1".into());
    let down = DcsView::Unknown {
        error: "etcd down".into(),
        last_config: DynamicConfig::default(),
    };
    failsafe.observed(&local, &down);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(api::serve_agent(
        listener,
        rx,
        cmd_tx,
        TOKEN.to_string(),
        Some(failsafe.clone()),
        Default::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    let url = format!("{base}/failsafe");
    let post = |auth: &'static str, body: &'static str| {
        let url = url.clone();
        async move {
            let h = [("Authorization", auth)];
            client::request("POST", &url, &h, body.as_bytes(), T)
                .await
                .unwrap()
        }
    };
    let node1 = r#"{"leader": "node1", "term": 4}"#;
    assert_eq!(post("Bearer wrong", node1).await.status, 401);
    assert!(failsafe.promise().is_none(), "no promise without the token");
    let bad = post("Bearer s3cret-token", "{").await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert!(bad.text().contains("leader"), "{}", bad.text());
    let ok = post("Bearer s3cret-token", node1).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(failsafe.promise().unwrap().leader, "node1");
    let other = post("Bearer s3cret-token", r#"{"leader": "node3", "term": 9}"#).await;
    assert_eq!(other.status, 409, "{}", other.text());
    assert!(other.text().contains("promised node1"), "{}", other.text());
    let _ = stop.send(());
    task.await.unwrap().unwrap();

    let s = Server::start(standby(0, true)).await;
    let r = client::request(
        "POST",
        &format!("{}/failsafe", s.base),
        &[("Authorization", "Bearer s3cret-token")],
        node1.as_bytes(),
        T,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    s.shutdown().await;
}

/// `/metrics` answers in Prometheus' text format with the member's state,
/// and the documents carry the archive's health (unknown before a sample).
#[tokio::test]
async fn metrics_and_archive_health() {
    let s = Server::start(standby(4096, true)).await;
    let r = s.get("/metrics").await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/plain; version=0.0.4")));
    let text = r.text();
    for line in [
        "pgha_member_state{member=\"node2\",state=\"streaming\"} 1",
        "pgha_member_lag_bytes{member=\"node2\"} 4096",
        "pgha_member_in_sync_set{member=\"node2\"} 1",
        "# TYPE pgha_etcd_request_duration_seconds histogram",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
    assert_eq!(s.code("POST", "/metrics").await, 405);
    let doc = s.get("/patroni").await.json().expect("json");
    assert_eq!(doc["archive"]["state"], "unknown");
    s.shutdown().await;
}
