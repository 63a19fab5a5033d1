//! `[backup] schedule`: on a real two-member dev cluster with no backup yet,
//! the leader's agent takes one by itself (through `pgha backup`, under the
//! cluster-wide lock), and only one: the next is not due for a minute.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking

use pgha_testkit::cluster::{describe, TestCluster};
use pgha_testkit::wait_until;
use std::path::Path;
use std::time::Duration;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_pgha"))
}

#[test]
fn the_leaders_agent_takes_a_scheduled_backup() {
    let c = TestCluster::up(bin(), 2, "[backup]\nschedule = \"1m\"\n").expect("cluster");
    let list = || -> serde_json::Value {
        let out = c.pgha(&["backup", "list", "--json"]);
        assert!(out.status.success(), "{}", describe(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // The first check comes a quarter of the schedule (15 s) after the
    // agent started; the backup itself takes a few seconds more.
    let backups = wait_until("a scheduled backup", Duration::from_secs(180), || {
        let l = list();
        (!l.as_array().unwrap().is_empty()).then_some(l)
    })
    .unwrap();
    assert_eq!(backups[0]["state"], "verified", "{backups}");
    assert_eq!(backups[0]["source_role"], "standby", "{backups}");
    let leader = c.settled_leader();
    let log = std::fs::read_to_string(c.instance(&leader).node_dir().join("agent.log"))
        .unwrap_or_default();
    // The agent runs `pgha backup`, whose output lands in the agent's log.
    assert!(
        log.contains("with pg_basebackup into"),
        "the leader's agent took it:\n{log}"
    );
}
