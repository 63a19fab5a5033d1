//! The control verbs on a real dev cluster (etcd, three agents, PostgreSQL):
//! `status` sees etcd and the agents, `switchover` moves the leader and
//! waits until it accepts writes, `pause` shows in status and in every
//! agent's health document, `restart` goes through the agent, and a killed
//! node shows as down. One test, to keep the suite's run time reasonable.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking

use pgha_agent::api::client;
use pgha_testkit::cluster::{describe, member, TestCluster};
use pgha_testkit::wait_until;
use std::path::Path;
use std::time::Duration;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_pgha"))
}

async fn api_get(c: &TestCluster, name: &str, path: &str) -> client::Response {
    let url = format!("{}{path}", c.config.member(name).expect("member").api_url());
    client::get(&url, Duration::from_secs(5))
        .await
        .expect("agent answers")
}

#[tokio::test(flavor = "multi_thread")]
async fn control_verbs_on_a_running_cluster() {
    let c = TestCluster::up(bin(), 3, "").expect("pgha up");
    let leader = c.settled_leader();
    let s = c.status_json();
    assert_eq!(s["etcd"], "ok", "{s}");
    assert_eq!(s["paused"], false);
    assert_eq!(member(&s, &leader)["leader"], true);
    assert_eq!(member(&s, &leader)["role"], "primary");
    assert_eq!(api_get(&c, &leader, "/primary").await.status, 200);

    // Planned switchover: another member leads and accepts writes.
    let out = c.pgha(&["switchover", "--wait", "60"]);
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("switchover done"), "{}", describe(&out));
    let new_leader = c.settled_leader();
    assert_ne!(new_leader, leader);
    assert_eq!(api_get(&c, &new_leader, "/primary").await.status, 200);
    assert_eq!(api_get(&c, &leader, "/primary").await.status, 503);

    // Pause: in etcd, in status, in each agent's document.
    let out = c.pgha(&["pause"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(c.status_json()["paused"], true);
    let doc = wait_until("the agent sees the pause", Duration::from_secs(10), || {
        let rt = tokio::runtime::Handle::current();
        let r = tokio::task::block_in_place(|| rt.block_on(api_get(&c, &leader, "/patroni")));
        let d = r.json().ok()?;
        (d["pause"] == true).then_some(d)
    })
    .expect("pause reaches the agent");
    assert_eq!(doc["pause"], true);
    let out = c.pgha(&["resume"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(c.status_json()["paused"], false);

    // Restart a standby through its agent.
    let out = c.pgha(&["restart", &leader]);
    assert!(out.status.success(), "{}", describe(&out));
    c.settled_leader();

    // A killed node (agent and PostgreSQL) shows as down once its key expires.
    let pid_file = c.dir.path().join(format!("run/agent-{leader}.pid"));
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("agent pid file")
        .trim()
        .parse()
        .expect("pid");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL)
        .expect("kill agent");
    pgha_testkit::cluster::kill_postmaster(&c.instance(&leader).data_dir);
    wait_until(
        "the killed node shows as down",
        Duration::from_secs(30),
        || {
            let s = c.status_json();
            (member(&s, &leader)["state"] == "down").then_some(())
        },
    )
    .expect("down");
    let s = c.status_json();
    assert_eq!(member(&s, &leader)["agent"], "down");
    assert_eq!(s["leader"], new_leader.as_str());
}
