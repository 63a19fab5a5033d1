//! The cluster-control verbs against a real etcd, with no PostgreSQL and no
//! agents (fast): pause/resume and edit-config write `/config`; switchover
//! and failover write their request and withdraw it when nobody acts;
//! status shows members without keys, agents or servers as down; restart
//! and reinit reach an agent API served in the test with the token.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking

use pgha_agent::status::{AgentCommand, AgentStatus};
use pgha_core::{DynamicConfig, FailoverRequest, SwitchoverRequest};
use pgha_dcs::{ClusterKeys, Dcs, DcsSettings, EtcdDcs};
use pgha_testkit::cluster::{describe, run_pgha};
use pgha_testkit::etcd::EtcdGuard;
use pgha_testkit::free_port;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_pgha"))
}

/// A cluster config on "a real host": three members, the given etcd, a
/// secrets dir with an API token, no data directories.
struct Fixture {
    dir: tempfile::TempDir,
    etcd_url: String,
    api_ports: Vec<u16>,
}

const TOKEN: &str = "verbs-test-token";

impl Fixture {
    fn new(etcd_url: &str) -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let api_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let mut text = format!("name = \"vt\"\n[dcs]\nendpoints = [\"{etcd_url}\"]\n");
        for (i, api) in api_ports.iter().enumerate() {
            text.push_str(&format!(
                "[[members]]\nname = \"node{}\"\nport = {}\napi_port = {api}\n",
                i + 1,
                free_port()
            ));
        }
        std::fs::write(dir.path().join("cluster.toml"), text).expect("write config");
        std::fs::create_dir(dir.path().join("secrets")).expect("secrets dir");
        std::fs::write(dir.path().join("secrets/api.token"), format!("{TOKEN}\n")).expect("token");
        Fixture {
            dir,
            etcd_url: etcd_url.to_string(),
            api_ports,
        }
    }

    fn config_arg(&self) -> String {
        self.dir.path().join("cluster.toml").display().to_string()
    }

    fn pgha(&self, args: &[&str]) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        let cfg = self.config_arg();
        all.push("--config");
        all.push(&cfg);
        run_pgha(bin(), &all)
    }

    fn dcs(&self) -> EtcdDcs {
        // Generous: a freshly started etcd on a loaded machine can be slow.
        let settings = DcsSettings {
            request_timeout: Duration::from_secs(10),
            ..DcsSettings::with_endpoints([self.etcd_url.clone()])
        };
        EtcdDcs::new(settings).expect("client")
    }

    fn keys(&self) -> ClusterKeys {
        ClusterKeys::new("/pgha", "vt").expect("keys")
    }
}

/// An agent REST API on the port of member `i` (0-based) that answers but
/// never acts: the target of a failover must have a running agent.
async fn idle_agent(f: &Fixture, i: usize) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", f.api_ports[i]))
        .await
        .expect("bind");
    let (status_tx, status_rx) = tokio::sync::watch::channel(AgentStatus::default());
    let (cmd_tx, cmd_rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let _keep = (status_tx, cmd_rx);
        let served = pgha_agent::api::serve(
            listener,
            status_rx,
            cmd_tx,
            TOKEN.to_string(),
            std::future::pending(),
        );
        served.await.expect("idle agent API");
    })
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn read_config(f: &Fixture) -> DynamicConfig {
    let kv = f
        .dcs()
        .get(&f.keys().config())
        .await
        .expect("get")
        .kv
        .expect("/config exists");
    serde_json::from_slice(&kv.value).expect("DynamicConfig JSON")
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_resume_and_edit_config_round_trip() {
    let etcd = EtcdGuard::start().expect("etcd");
    let f = Fixture::new(&etcd.client_url);
    let out = f.pgha(&["pause"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(stdout(&out).contains("paused"), "{}", describe(&out));
    assert!(read_config(&f).await.paused);
    let out = f.pgha(&["pause"]);
    assert!(
        stdout(&out).contains("already paused"),
        "{}",
        describe(&out)
    );

    let out = f.pgha(&[
        "edit-config",
        "--set",
        "ttl_ms=4000",
        "--set",
        "allow_async_fallback=true",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let c = read_config(&f).await;
    assert_eq!(c.ttl.0, 4000);
    assert!(c.allow_async_fallback);
    assert!(c.paused, "edit-config must keep the other fields");

    let out = f.pgha(&["resume"]);
    assert!(out.status.success(), "{}", describe(&out));
    let c = read_config(&f).await;
    assert!(!c.paused);
    assert_eq!(c.ttl.0, 4000);

    // Invalid changes are refused and nothing is written.
    for bad in ["ttl_ms=100", "no_such_key=1", "sync_quorum=lots"] {
        let out = f.pgha(&["edit-config", "--set", bad]);
        assert!(!out.status.success(), "{bad} accepted: {}", describe(&out));
    }
    assert_eq!(read_config(&f).await, c);
    let out = f.pgha(&["edit-config"]);
    assert!(
        stdout(&out).contains("\"ttl_ms\": 4000"),
        "{}",
        describe(&out)
    );
}

/// `edit-config` follows the config file's rules: a sync_quorum above the
/// number of standbys is refused (not clamped), and a wrong type names its
/// key. Nothing is written.
#[tokio::test(flavor = "multi_thread")]
async fn edit_config_refuses_what_the_config_file_refuses() {
    let etcd = EtcdGuard::start().expect("etcd");
    let f = Fixture::new(&etcd.client_url);
    let out = f.pgha(&["edit-config", "--set", "sync_quorum=2"]);
    assert!(out.status.success(), "{}", describe(&out));
    let before = read_config(&f).await;
    assert_eq!(before.sync_quorum, 2);
    for (bad, want) in [
        (
            "sync_quorum=5",
            "sync_quorum 5 must be between 1 and the number of standbys (2)",
        ),
        ("sync_quorum=0", "sync_quorum 0 must be between 1"),
        ("sync_quorum=lots", "sync_quorum: invalid value \"lots\""),
    ] {
        let out = f.pgha(&["edit-config", "--set", bad]);
        assert_eq!(out.status.code(), Some(1), "{bad}: {}", describe(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(want),
            "{bad}: want {want:?}: {}",
            describe(&out)
        );
    }
    assert_eq!(read_config(&f).await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn switchover_without_leader_is_refused_and_times_out_cleanly() {
    let etcd = EtcdGuard::start().expect("etcd");
    let f = Fixture::new(&etcd.client_url);
    let out = f.pgha(&["switchover", "--wait", "1"]);
    assert!(!out.status.success());
    assert!(describe(&out).contains("no leader"), "{}", describe(&out));

    let dcs = f.dcs();
    let keys = f.keys();
    dcs.put(&keys.leader(), b"node1", None)
        .await
        .expect("leader");
    let out = f.pgha(&["switchover", "--to", "node2", "--wait", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        describe(&out).contains("did not complete"),
        "{}",
        describe(&out)
    );
    assert!(
        dcs.get(&keys.switchover()).await.expect("get").kv.is_none(),
        "request withdrawn"
    );

    let out = f.pgha(&["switchover", "--to", "node1"]);
    assert!(
        describe(&out).contains("already the leader"),
        "{}",
        describe(&out)
    );
    let out = f.pgha(&["switchover", "--to", "node9"]);
    assert!(describe(&out).contains("no member"), "{}", describe(&out));

    // Scheduled: submitted, not waited for.
    let out = f.pgha(&["switchover", "--at", "2030-01-01T00:00:00Z"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(stdout(&out).contains("scheduled"), "{}", describe(&out));
    let kv = dcs
        .get(&keys.switchover())
        .await
        .expect("get")
        .kv
        .expect("request");
    let req: SwitchoverRequest = serde_json::from_slice(&kv.value).expect("json");
    assert_eq!(req.scheduled_at_unix_ms, Some(1_893_456_000_000));
    let out = f.pgha(&["switchover", "--wait", "1"]);
    assert!(
        describe(&out).contains("already pending"),
        "{}",
        describe(&out)
    );
    let out = f.pgha(&["switchover", "--at", "tomorrow"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
}

/// Requests nobody can act on are refused at once instead of waiting out
/// `--wait`: a switchover while the cluster is paused, a failover to a
/// member whose agent is not running. Neither request is written.
#[tokio::test(flavor = "multi_thread")]
async fn switchover_while_paused_and_failover_to_a_dead_agent_refuse_at_once() {
    let etcd = EtcdGuard::start().expect("etcd");
    let f = Fixture::new(&etcd.client_url);
    let dcs = f.dcs();
    let keys = f.keys();
    dcs.put(&keys.leader(), b"node1", None)
        .await
        .expect("leader");
    let out = f.pgha(&["pause"]);
    assert!(out.status.success(), "{}", describe(&out));
    let started = std::time::Instant::now();
    let out = f.pgha(&["switchover", "--to", "node2", "--wait", "30"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        describe(&out).contains("paused") && describe(&out).contains("pgha resume"),
        "{}",
        describe(&out)
    );
    assert!(started.elapsed() < Duration::from_secs(15), "waited");
    assert!(dcs.get(&keys.switchover()).await.expect("get").kv.is_none());

    let started = std::time::Instant::now();
    let out = f.pgha(&["failover", "--to", "node3", "--wait", "30"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = describe(&out);
    assert!(err.contains("node3's agent is not running"), "{err}");
    assert!(!err.contains("--allow-data-loss"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(15), "waited");
    assert!(dcs.get(&keys.failover()).await.expect("get").kv.is_none());
}

/// A fake leader that hands over as soon as it sees the request.
#[tokio::test(flavor = "multi_thread")]
async fn switchover_waits_for_the_new_leader() {
    let etcd = EtcdGuard::start().expect("etcd");
    let f = Fixture::new(&etcd.client_url);
    let dcs = f.dcs();
    let keys = f.keys();
    dcs.put(&keys.leader(), b"node1", None)
        .await
        .expect("leader");
    let (d2, k2) = (dcs.clone(), keys.clone());
    let agent = tokio::spawn(async move {
        for _ in 0..200 {
            if let Some(kv) = d2.get(&k2.switchover()).await.expect("get").kv {
                let req: SwitchoverRequest = serde_json::from_slice(&kv.value).expect("json");
                assert_eq!(req.from.as_deref(), Some("node1"));
                assert_eq!(req.to, None);
                d2.put(&k2.leader(), b"node3", None).await.expect("put");
                d2.delete(&k2.switchover()).await.expect("del");
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no switchover request appeared");
    });
    let out = tokio::task::spawn_blocking(move || f.pgha(&["switchover", "--wait", "10"]))
        .await
        .expect("join");
    agent.await.expect("fake leader");
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        stdout(&out).contains("node1 -> node3"),
        "{}",
        describe(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn failover_writes_the_request_and_withdraws_it() {
    let etcd = EtcdGuard::start().expect("etcd");
    let f = Fixture::new(&etcd.client_url);
    let out = f.pgha(&["failover", "--to", "node2", "--wait", "0"]);
    assert!(out.status.success(), "{}", describe(&out));
    let kv = f
        .dcs()
        .get(&f.keys().failover())
        .await
        .expect("get")
        .kv
        .expect("request");
    let req: FailoverRequest = serde_json::from_slice(&kv.value).expect("json");
    assert_eq!(req.to, "node2");
    assert!(!req.allow_data_loss);

    let agent = idle_agent(&f, 2).await;
    let out = f.pgha(&[
        "failover",
        "--to",
        "node3",
        "--allow-data-loss",
        "--wait",
        "1",
    ]);
    agent.abort();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        describe(&out).contains("did not become the leader"),
        "{}",
        describe(&out)
    );
    assert!(f
        .dcs()
        .get(&f.keys().failover())
        .await
        .expect("get")
        .kv
        .is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn status_shows_down_members_and_unreachable_etcd() {
    let mut etcd = EtcdGuard::start().expect("etcd");
    let f = Fixture::new(&etcd.client_url);
    f.dcs()
        .put(&f.keys().leader(), b"node1", None)
        .await
        .expect("leader");
    let out = f.pgha(&["status", "--json"]);
    assert!(out.status.success(), "{}", describe(&out));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(s["etcd"], "ok");
    assert_eq!(s["leader"], "node1");
    assert_eq!(s["paused"], false);
    for m in s["members"].as_array().expect("members") {
        assert_eq!(m["state"], "down", "{m}");
        assert_eq!(m["agent"], "down", "{m}");
        assert_eq!(m["in_dcs"], false, "{m}");
    }
    let table = stdout(&f.pgha(&["status"]));
    assert!(table.contains("leader: node1"), "{table}");

    etcd.stop();
    let out = f.pgha(&["status", "--json"]);
    assert!(out.status.success(), "{}", describe(&out));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(s["etcd"], "unreachable");
    assert!(s["etcd_error"].is_string());
    assert_eq!(s["members"][0]["state"], "stopped");
    let table = stdout(&f.pgha(&["status"]));
    assert!(table.contains("etcd unreachable"), "{table}");
}

/// `pgha restart` / `reinit` reach the member's agent API with the token;
/// the agent's refusal is reported with a non-zero exit.
#[tokio::test(flavor = "multi_thread")]
async fn restart_and_reinit_go_through_the_agent_api() {
    let f = Fixture::new("http://127.0.0.1:9");
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", f.api_ports[1]))
        .await
        .expect("bind");
    let (_status_tx, status_rx) = tokio::sync::watch::channel(AgentStatus::default());
    let (cmd_tx, mut cmd_rx) = tokio::sync::mpsc::channel(4);
    let server = tokio::spawn(pgha_agent::api::serve(
        listener,
        status_rx,
        cmd_tx,
        TOKEN.to_string(),
        std::future::pending(),
    ));
    let fake_loop = tokio::spawn(async move {
        while let Some(cmd) = cmd_rx.recv().await {
            match cmd {
                AgentCommand::Restart { reply } => drop(reply.send(Ok(()))),
                AgentCommand::Reinit { reply } => {
                    drop(reply.send(Err("refused on the leader".into())))
                }
            }
        }
    });
    let cfg = f.config_arg();
    let run = move |verb: &'static str, node: &'static str| {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || run_pgha(bin(), &[verb, node, "--config", &cfg]))
    };
    let out = run("restart", "node2").await.expect("join");
    assert!(out.status.success(), "{}", describe(&out));
    assert!(stdout(&out).contains("restart done"), "{}", describe(&out));
    let out = run("reinit", "node2").await.expect("join");
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        describe(&out).contains("refused on the leader"),
        "{}",
        describe(&out)
    );
    let out = run("restart", "node3").await.expect("join");
    assert!(!out.status.success(), "{}", describe(&out));

    std::fs::write(f.dir.path().join("secrets/api.token"), "wrong").expect("token");
    let out = run("restart", "node2").await.expect("join");
    assert!(
        describe(&out).contains("refused the API token"),
        "{}",
        describe(&out)
    );
    server.abort();
    fake_loop.abort();
}

/// A fake agent for `reinit` on member `i`: takes the request, then
/// publishes what a real agent would, in order, each after `step`:
/// `states[k]` = (decisions newer than the request, pg_running, streaming).
async fn reinit_agent(
    f: &Fixture,
    i: usize,
    states: Vec<(Vec<&'static str>, bool, bool)>,
    step: Duration,
) -> tokio::task::JoinHandle<()> {
    use pgha_agent::status::DecisionRecord;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", f.api_ports[i]))
        .await
        .expect("bind");
    let before = AgentStatus {
        pg_running: true,
        streaming: true,
        leader: Some("node1".into()),
        decisions: [DecisionRecord {
            at_unix_ms: 1_000,
            reason: "old".into(),
            actions: vec!["re-clone from node1".into()],
        }]
        .into(),
        ..AgentStatus::default()
    };
    let (status_tx, status_rx) = tokio::sync::watch::channel(before.clone());
    let (cmd_tx, mut cmd_rx) = tokio::sync::mpsc::channel(4);
    // One task for the API and the script, so that aborting it stops both.
    let server = pgha_agent::api::serve(
        listener,
        status_rx,
        cmd_tx,
        TOKEN.to_string(),
        std::future::pending(),
    );
    let script = async move {
        let Some(AgentCommand::Reinit { reply }) = cmd_rx.recv().await else {
            panic!("expected a reinit request");
        };
        drop(reply.send(Ok(())));
        let mut status = before;
        for (k, (actions, running, streaming)) in states.into_iter().enumerate() {
            tokio::time::sleep(step).await;
            for (j, a) in actions.into_iter().enumerate() {
                status.decisions.push_back(DecisionRecord {
                    at_unix_ms: 2_000 + 10 * k as u64 + j as u64,
                    reason: a.into(),
                    actions: vec![a.into()],
                });
            }
            status.pg_running = running;
            status.streaming = streaming;
            status_tx.send_replace(status.clone());
        }
        std::future::pending::<()>().await;
    };
    tokio::spawn(async move {
        let (served, ()) = tokio::join!(server, script);
        served.expect("fake agent API");
    })
}

/// `reinit` waits until the member streams again after the re-clone and
/// shows each phase; a document published with the re-clone (still the
/// state from before it) is not taken for the end. A clone that fails (the
/// agent re-clones again) exits 1; `--no-wait` returns once the agent took
/// the request.
#[tokio::test(flavor = "multi_thread")]
async fn reinit_waits_until_the_member_streams_again() {
    let f = Fixture::new("http://127.0.0.1:9");
    let step = Duration::from_millis(700);
    let agent = reinit_agent(
        &f,
        1,
        vec![
            (vec!["re-clone from node1"], true, true),
            (vec!["follow node1"], true, false),
            (vec![], true, true),
        ],
        step,
    )
    .await;
    let cfg = f.config_arg();
    let run = move |args: Vec<&'static str>| {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || {
            let mut all = args;
            all.extend(["--config", cfg.as_str()]);
            run_pgha(bin(), &all)
        })
    };
    let started = std::time::Instant::now();
    let out = run(vec!["reinit", "node2"]).await.expect("join");
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        started.elapsed() >= step * 3,
        "done before the member streamed again: {}",
        describe(&out)
    );
    let text = stdout(&out);
    let order = [
        "reinit requested",
        "re-cloned from the leader",
        "PostgreSQL running; waiting until it streams",
        "reinit done: streaming from node1",
    ];
    let at: Vec<usize> = order
        .iter()
        .map(|w| {
            text.find(w)
                .unwrap_or_else(|| panic!("{w:?} missing: {}", describe(&out)))
        })
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{}", describe(&out));
    agent.abort();

    let agent = reinit_agent(
        &f,
        2,
        vec![
            (vec!["re-clone from node1"], false, false),
            (vec!["re-clone from node1"], false, false),
        ],
        Duration::from_millis(300),
    )
    .await;
    let out = run(vec!["reinit", "node3"]).await.expect("join");
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        describe(&out).contains("re-clone failed"),
        "{}",
        describe(&out)
    );
    agent.abort();

    let agent = reinit_agent(&f, 0, vec![], step).await;
    let out = run(vec!["reinit", "node1", "--no-wait"])
        .await
        .expect("join");
    assert!(out.status.success(), "{}", describe(&out));
    assert!(stdout(&out).contains("not waiting"), "{}", describe(&out));
    agent.abort();
}

/// A live leader clears a failover request it will not act on; the command
/// says so at once instead of waiting out its timeout.
#[tokio::test(flavor = "multi_thread")]
async fn failover_against_a_live_leader_points_to_switchover() {
    let etcd = EtcdGuard::start().expect("etcd");
    let f = Fixture::new(&etcd.client_url);
    let dcs = f.dcs();
    let keys = f.keys();
    dcs.put(&keys.leader(), b"node1", None)
        .await
        .expect("leader");
    let (d2, k2) = (dcs.clone(), keys.clone());
    let leader = tokio::spawn(async move {
        for _ in 0..200 {
            if d2.get(&k2.failover()).await.expect("get").kv.is_some() {
                d2.delete(&k2.failover()).await.expect("clear");
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no failover request appeared");
    });
    let _agent = idle_agent(&f, 1).await;
    let started = std::time::Instant::now();
    let out =
        tokio::task::spawn_blocking(move || f.pgha(&["failover", "--to", "node2", "--wait", "30"]))
            .await
            .expect("join");
    leader.await.expect("fake leader");
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        describe(&out).contains("pgha switchover --to node2"),
        "{}",
        describe(&out)
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "waited out the timeout"
    );
}
