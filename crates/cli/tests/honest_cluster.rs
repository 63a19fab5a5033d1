//! Honest commands (issue 14) against a real dev cluster (etcd, three
//! agents, PostgreSQL), one cluster for several checks: `reinit` returns
//! only once the member streams again from a new clone; `failover --to` a
//! member whose agent does not answer refuses at once; a dead former
//! primary shows no role `primary` in `status`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking

use pgha_testkit::cluster::{describe, member, TestCluster};
use pgha_testkit::wait_until;
use std::path::Path;
use std::time::{Duration, Instant};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_pgha"))
}

#[tokio::test(flavor = "multi_thread")]
async fn reinit_waits_for_the_clone_and_status_tells_dead_from_primary() {
    let c = TestCluster::up(bin(), 3, "").expect("pgha up");
    let leader = c.settled_leader();
    let standbys: Vec<String> = ["node1", "node2", "node3"]
        .iter()
        .map(|s| s.to_string())
        .filter(|n| *n != leader)
        .collect();
    let (target, other) = (&standbys[0], &standbys[1]);

    // A file only the old data directory holds: gone once re-cloned.
    let marker = c
        .config
        .member(target)
        .expect("member")
        .data_dir
        .join("pgha-test-old-clone");
    std::fs::write(&marker, "old").expect("marker");
    let out = c.pgha(&["reinit", target]);
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains(&format!("reinit done: streaming from {leader}")),
        "{}",
        describe(&out)
    );
    assert!(
        !marker.exists(),
        "done before the data directory was re-cloned"
    );
    let s = c.status_json();
    let m = member(&s, target);
    assert_eq!(
        (m["role"].as_str(), m["state"].as_str()),
        (Some("standby"), Some("running")),
        "{s}"
    );

    // An agent that does not answer (stopped): failover to it refuses at once.
    c.pause_agent(other, true);
    let started = Instant::now();
    let out = c.pgha(&["failover", "--to", other, "--wait", "60"]);
    c.pause_agent(other, false);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        describe(&out).contains(&format!("{other}'s agent is not running")),
        "{}",
        describe(&out)
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "waited for the failover"
    );

    // The leader's node dies: it is no primary in status any more.
    c.kill_node(&leader);
    let s = wait_until("the dead node seen", Duration::from_secs(60), || {
        let s = c.status_json();
        let state = member(&s, &leader)["state"].as_str().map(str::to_string);
        matches!(state.as_deref(), Some("stopped" | "down")).then_some(s)
    })
    .expect("status");
    let m = member(&s, &leader);
    assert_eq!(m["role"], "unknown", "{s}");
    assert_eq!(m["last_role"], "primary", "{s}");
    let out = c.pgha(&["status"]);
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    let row = table
        .lines()
        .find(|l| {
            l.split_whitespace()
                .next()
                .map(|w| w.trim_start_matches('*'))
                == Some(leader.as_str())
        })
        .unwrap_or_else(|| panic!("{leader} in {table}"));
    assert!(!row.contains("primary"), "{row}");
}
