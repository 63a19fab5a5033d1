//! Observability against a real dev cluster, one cluster for the whole
//! story: `pgha up --prometheus` starts Debian's Prometheus with a
//! generated scrape config; the test asks it, through its HTTP API, for
//! `pgha_` series of every member and of the proxy; `pgha dashboard` serves
//! the status page, which headless Chromium loads; archiving is made to
//! fail and an archived file is corrupted (status, REST and metrics say
//! so); then the primary fails over: Prometheus, `pgha events` and the
//! page must show the new leader.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking

use pgha_agent::api::client;
use pgha_testkit::cluster::TestCluster;
use pgha_testkit::{free_port, wait_until_async};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_pgha"))
}

/// Percent-encode a PromQL query for a URL.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The result vector of an instant query (empty on any failure).
async fn query(prom: &str, q: &str) -> Vec<Value> {
    let url = format!("{prom}/api/v1/query?query={}", encode(q));
    let Ok(resp) = client::get(&url, Duration::from_secs(5)).await else {
        return Vec::new();
    };
    let body: Value = resp.json().unwrap_or(Value::Null);
    body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Label `name` of every series in `result`.
fn labels(result: &[Value], name: &str) -> Vec<String> {
    let mut v: Vec<String> = result
        .iter()
        .filter_map(|s| s["metric"][name].as_str().map(str::to_string))
        .collect();
    v.sort();
    v
}

/// Wait until `q` returns series whose `label`s are exactly `want`.
async fn wait_series(prom: &str, q: &str, label: &str, want: &[&str]) {
    let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    let what = format!("Prometheus answers {q} with {label} = {want:?}");
    wait_until_async(&what, Duration::from_secs(60), || async {
        (labels(&query(prom, q).await, label) == want).then_some(())
    })
    .await
    .unwrap();
}

async fn through_proxy(c: &TestCluster) {
    let p = c.config.proxy.as_ref().unwrap();
    let conn = format!(
        "host={} port={} user={} password={} dbname=postgres",
        p.host, p.rw_port, c.config.superuser, c.admin_password
    );
    let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client.simple_query("SELECT 1").await.unwrap();
    client
        .simple_query(
            "CREATE TABLE IF NOT EXISTS observe_t (i int); INSERT INTO observe_t VALUES (1)",
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn operators_see_a_failover_in_prometheus_status_events_and_the_status_page() {
    let c = TestCluster::up(bin(), 3, "").expect("pgha up");
    let port = free_port().to_string();
    let out = c.pgha(&["up", "--prometheus", "--prometheus-port", &port]);
    assert!(
        out.status.success(),
        "{}",
        pgha_testkit::cluster::describe(&out)
    );
    // Not a terminal: progress comes as plain phase lines on stderr.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pgha up: starting etcd\n"), "{err}");
    assert!(!err.contains('\r'), "no line rewriting into a pipe: {err}");
    let prom = format!("http://127.0.0.1:{port}");
    let page = format!("http://127.0.0.1:{}/", free_port());
    let _dashboard = start_dashboard(&c, &page);
    through_proxy(&c).await;
    logs_are_at_hand(&c);
    let all = ["node1", "node2", "node3"];
    wait_series(&prom, "pgha_member_info", "member", &all).await;
    wait_series(&prom, "pgha_timeline", "member", &all).await;
    let old = c.leader().await.unwrap();
    wait_series(&prom, "pgha_member_is_leader == 1", "member", &[&old]).await;
    let dom = wait_page(&page, &old).await;
    for m in all {
        assert!(
            dom.contains(&format!("data-member=\"{m}\"")),
            "{m} drawn: {dom}"
        );
    }
    assert!(dom.contains("offloaded"), "routing split shown: {dom}");
    let standbys: Vec<&str> = all.iter().copied().filter(|m| *m != old).collect();
    wait_series(&prom, "pgha_replication_lag_bytes", "standby", &standbys).await;
    wait_series(&prom, "up{job=\"pgha-proxy\"} == 1", "job", &["pgha-proxy"]).await;
    wait_series(
        &prom,
        "pgha_proxy_node_role{role=\"primary\"}",
        "node",
        &[&old],
    )
    .await;
    wait_series(
        &prom,
        "pgha_proxy_statements_total{target=\"primary\",reason=\"write\"} > 0",
        "reason",
        &["write"],
    )
    .await;

    archive_problems_are_reported(&c, &prom, &old).await;

    c.kill_node(&old);
    let new = c
        .wait_new_leader(Some(&old), Duration::from_secs(60))
        .await
        .unwrap();
    wait_series(&prom, "pgha_member_is_leader == 1", "member", &[&new]).await;
    wait_series(
        &prom,
        "pgha_promotions_total{kind=\"failover\"} > 0",
        "member",
        &[&new],
    )
    .await;
    wait_series(
        &prom,
        "pgha_proxy_node_role{role=\"primary\"}",
        "node",
        &[&new],
    )
    .await;
    events_tell_the_story(&c, &old, &new).await;
    let dom = wait_page(&page, &new).await;
    assert!(
        dom.contains(">failover<"),
        "the failover is in the page's events: {dom}"
    );
    // The killed member's agent is gone: Prometheus says so.
    wait_series(
        &prom,
        "up{job=\"pgha-agents\"} == 0",
        "job",
        &["pgha-agents"],
    )
    .await;

    let pid = std::fs::read_to_string(c.dir.path().join("run/prometheus.pid")).unwrap();
    let out = c.pgha(&["down"]);
    assert!(
        out.status.success(),
        "{}",
        pgha_testkit::cluster::describe(&out)
    );
    // Gone, or a zombie its parent (init, in a container perhaps one that
    // does not reap) has not collected yet.
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
    let gone = stat
        .rsplit_once(')')
        .is_none_or(|(_, rest)| rest.trim_start().starts_with('Z'));
    assert!(gone, "pgha down stopped Prometheus (pid {})", pid.trim());

    // The cluster's archive now gets a newer segment of another cluster:
    // `up` refuses to start on it and says how to proceed.
    push_foreign_segment(&c.config.archive_dir, "000000FF0000000000000001");
    let out = c.pgha(&["up"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "{}",
        pgha_testkit::cluster::describe(&out)
    );
    assert!(
        err.contains("holds another cluster's history") && err.contains("To proceed"),
        "{err}"
    );
}

/// Archiving fails on the leader (the archive already holds its next
/// segment with other content, as when two clusters share an archive) and
/// an archived file is corrupt: `status` (JSON and table), the leader's REST
/// API and Prometheus all say so, with the reason.
async fn archive_problems_are_reported(c: &TestCluster, prom: &str, leader: &str) {
    let pg = c.connect(leader).await.unwrap();
    let next: String = pg
        .query_one("SELECT pg_walfile_name(pg_current_wal_lsn())", &[])
        .await
        .unwrap()
        .get(0);
    push_foreign_segment(&c.config.archive_dir, &next);
    pg.batch_execute("CREATE TABLE observe_wal (i int); INSERT INTO observe_wal VALUES (1); SELECT pg_switch_wal();")
        .await
        .unwrap();
    let status = wait_until_async(
        "status reports the failing archiver",
        Duration::from_secs(60),
        || async {
            let s = c.status_json();
            (s["archive"]["state"] == "failing").then_some(s)
        },
    )
    .await
    .unwrap();
    let reason = status["archive"]["last_failure_reason"].as_str().unwrap();
    assert!(reason.contains("refusing to overwrite"), "{status:#}");
    let table = c.pgha(&["status"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("archive: failing") && table.contains("archiving FAILS"),
        "{table}"
    );
    let api = c.config.member(leader).unwrap().api_url();
    let doc = client::get(&format!("{api}/patroni"), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(doc.json().unwrap()["archive"]["state"], "failing");
    wait_series(prom, "pgha_archiver_failing == 1", "member", &[leader]).await;
    let q = "pgha_archiver_last_failure_timestamp_seconds{reason=~\".*refusing to overwrite.*\"}";
    wait_series(prom, q, "member", &[leader]).await;

    // A corrupt archived file, found by `pgha archive list --verify`.
    let oldest = status["archive"]["oldest_segment"]
        .as_str()
        .unwrap()
        .to_string();
    let path = c.config.archive_dir.join(&oldest);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let dir = c.config.archive_dir.display().to_string();
    let out =
        pgha_testkit::cluster::run_pgha(bin(), &["archive", "list", "--verify", "--archive", &dir]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        pgha_testkit::cluster::describe(&out)
    );
    wait_until_async(
        "status lists the corrupt file",
        Duration::from_secs(30),
        || async {
            let s = c.status_json();
            let corrupt = s["archive"]["corrupt"].as_array()?.clone();
            corrupt
                .iter()
                .any(|f| f["file"] == oldest.as_str())
                .then_some(())
        },
    )
    .await
    .unwrap();
    let table = c.pgha(&["status"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains(&format!("corrupt archived file {oldest}")),
        "{table}"
    );
    wait_series(
        prom,
        "pgha_archive_corrupt_files == 1",
        "member",
        &["node1", "node2", "node3"],
    )
    .await;
}

/// `pgha logs`: the tail of a member's logs (the agents log only warnings
/// under the testkit's RUST_LOG=warn; PostgreSQL's log always has lines), a
/// clear error for an unknown name, and `--follow` printing a line appended
/// to the proxy's log.
fn logs_are_at_hand(c: &TestCluster) {
    let describe = pgha_testkit::cluster::describe;
    let out = c.pgha(&["logs", "node1", "--lines", "3"]);
    let lines = String::from_utf8_lossy(&out.stdout).lines().count();
    assert!(out.status.success() && lines <= 3, "{}", describe(&out));
    let out = c.pgha(&["logs", "node1", "--postgres", "--lines", "3"]);
    let lines = String::from_utf8_lossy(&out.stdout).lines().count();
    assert!(out.status.success() && lines == 3, "{}", describe(&out));
    let out = c.pgha(&["logs", "nosuch"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no log named \"nosuch\""),
        "{err}"
    );

    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let printed = dir.path().join("follow.out");
    let child = std::process::Command::new(bin())
        .args([
            "logs",
            "proxy",
            "--follow",
            "--lines",
            "1",
            "--dir",
            &c.dir_arg(),
        ])
        .stdout(std::fs::File::create(&printed).unwrap())
        .process_group(0)
        .spawn()
        .unwrap();
    let _follow = pgha_testkit::ProcessGuard::new("pgha logs --follow", child, true);
    // Its first line (the log's last) shows that it follows from the end.
    let read = || std::fs::read_to_string(&printed).unwrap();
    pgha_testkit::wait_until("pgha logs --follow starts", Duration::from_secs(30), || {
        (!read().is_empty()).then_some(())
    })
    .unwrap();
    let marker = "observe.rs: a line appended to proxy.log";
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(c.dir.path().join("proxy.log"))
        .unwrap();
    std::io::Write::write_all(&mut f, format!("{marker}\n").as_bytes()).unwrap();
    pgha_testkit::wait_until(
        "pgha logs --follow prints the new line",
        Duration::from_secs(30),
        || read().contains(marker).then_some(()),
    )
    .unwrap();
}

/// `pgha dashboard` on `url`, stopped by PID when the guard drops.
fn start_dashboard(c: &TestCluster, url: &str) -> pgha_testkit::ProcessGuard {
    use std::os::unix::process::CommandExt;
    let listen = url.trim_start_matches("http://").trim_end_matches('/');
    let child = std::process::Command::new(bin())
        .args(["dashboard", "--dir", &c.dir_arg(), "--listen", listen])
        .stdout(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    pgha_testkit::ProcessGuard::new("pgha dashboard", child, true)
}

/// The page's DOM after headless Chromium loaded it (scripts run).
fn dump_dom(url: &str) -> Option<String> {
    use std::os::unix::process::CommandExt;
    let profile = tempfile::tempdir().unwrap();
    let out = profile.path().join("dom.html");
    let child = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!(
                "--user-data-dir={}",
                profile.path().join("profile").display()
            ),
            "--dump-dom",
            url,
        ])
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .expect("chromium (Debian package chromium; scripts/install-deps installs it)");
    let mut guard = pgha_testkit::ProcessGuard::new("chromium", child, true);
    pgha_testkit::wait_until("chromium to dump the page", Duration::from_secs(60), || {
        (!guard.is_running()).then_some(())
    })
    .ok()?;
    std::fs::read_to_string(out).ok()
}

/// Load the page in Chromium until it names `leader` as the leader; the DOM.
async fn wait_page(url: &str, leader: &str) -> String {
    let want = format!("<body data-leader=\"{leader}\">");
    let what = format!("the status page shows leader {leader}");
    wait_until_async(&what, Duration::from_secs(90), || async {
        let url = url.to_string();
        let dom = tokio::task::spawn_blocking(move || dump_dom(&url))
            .await
            .ok()??;
        dom.contains(&want).then_some(dom)
    })
    .await
    .unwrap()
}

/// `pgha events` lists the failover to `new` with its duration and reason,
/// and the synchronous-set changes the dead leader `old` made before.
async fn events_tell_the_story(c: &TestCluster, old: &str, new: &str) {
    let events = wait_until_async(
        "pgha events lists the failover",
        Duration::from_secs(60),
        || async {
            let out = c.pgha(&["events", "--json"]);
            let list: Vec<Value> = serde_json::from_slice(&out.stdout).ok()?;
            list.iter()
                .any(|e| e["kind"] == "failover" && e["member"] == new && e["ok"] == true)
                .then_some(list)
        },
    )
    .await
    .unwrap();
    let failover = events.iter().find(|e| e["kind"] == "failover").unwrap();
    assert!(failover["duration_ms"].as_u64().is_some(), "{failover}");
    assert!(
        !failover["reason"].as_str().unwrap().is_empty(),
        "{failover}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "sync_set" && e["member"] == old),
        "the old leader's sync-set changes are kept: {events:#?}"
    );
    let table = c.pgha(&["events"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table
            .lines()
            .any(|l| l.contains("failover") && l.contains(new)),
        "{table}"
    );
}

/// A WAL segment of a cluster with system identifier 4242, archived with
/// `pgha wal-push` into `archive`.
fn push_foreign_segment(archive: &Path, name: &str) {
    let src = tempfile::tempdir().unwrap();
    let mut seg = vec![0u8; 8192];
    seg[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
    seg[2..4].copy_from_slice(&2u16.to_le_bytes()); // XLP_LONG_HEADER
    seg[24..32].copy_from_slice(&4242u64.to_le_bytes());
    let path = src.path().join(name);
    std::fs::write(&path, seg).unwrap();
    let out = pgha_testkit::cluster::run_pgha(
        bin(),
        &[
            "wal-push",
            "--archive",
            &archive.display().to_string(),
            &path.display().to_string(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        pgha_testkit::cluster::describe(&out)
    );
}

/// A new cluster whose archive already holds WAL is refused before
/// anything starts, naming the archive and what to do.
#[test]
fn up_refuses_a_new_cluster_on_an_archive_holding_wal() {
    let archive = tempfile::tempdir().unwrap();
    push_foreign_segment(archive.path(), "000000010000000000000001");
    let extra = format!(
        "[archive]\ndir = {:?}\n",
        archive.path().display().to_string()
    );
    let err = match TestCluster::up(bin(), 1, &extra) {
        Ok(_) => panic!("pgha up accepted an archive holding another cluster's WAL"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("belongs to another cluster"), "{err}");
    assert!(err.contains("system identifier 4242"), "{err}");
    assert!(err.contains("To proceed"), "{err}");
    assert!(!err.contains("left running"), "nothing was started: {err}");
}
