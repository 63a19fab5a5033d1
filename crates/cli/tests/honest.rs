//! Honest commands (issue 14): each test pins one defect that an operator
//! met, run against the built binary. Config errors name the key and say
//! what is wrong; `up` points at real log files.

use pgha_testkit::cluster::{config_text, describe, kill_postmaster, run_pgha};
use std::path::{Path, PathBuf};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_pgha"))
}

/// Two members and an etcd endpoint nobody uses (the config is refused
/// before anything starts).
const TWO: &str = "[dcs]\nendpoints = [\"http://127.0.0.1:5530\"]\n[[members]]\nname = \"node1\"\nport = 5501\n[[members]]\nname = \"node2\"\nport = 5502\n";

/// `pgha up --config` with `text`: its stderr, after checking that it failed
/// and adopted nothing.
fn up_error(text: &str) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, text).expect("write config");
    let cluster_dir = dir.path().join("cluster");
    // Should a bad config be accepted, stop what it started.
    let _down = DownOnDrop {
        dir: cluster_dir.clone(),
        data_dirs: ["node1", "node2"]
            .iter()
            .map(|m| cluster_dir.join(m).join("data"))
            .collect(),
    };
    let out = run_pgha(
        bin(),
        &[
            "up",
            "--dir",
            cluster_dir.to_str().expect("utf-8"),
            "--config",
            cfg.to_str().expect("utf-8"),
            "--timeout",
            "5",
        ],
    );
    assert!(
        !out.status.success(),
        "accepted:\n{text}\n{}",
        describe(&out)
    );
    assert!(
        !cluster_dir.join("cluster.toml").exists(),
        "a bad config was adopted"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Ports that collide (proxy against a member, two proxy listeners) are
/// refused by validation, naming both keys; valid TOML of the wrong shape
/// names the key and is not called invalid TOML.
#[test]
fn up_refuses_colliding_ports_and_names_the_key_of_a_type_error() {
    let proxy = |rw: u16, ro: u16, primary: u16| {
        format!("[proxy]\nrw_port = {rw}\nro_port = {ro}\nprimary_port = {primary}\n{TWO}")
    };
    for (text, want) in [
        (
            proxy(5501, 6001, 6002),
            "proxy.rw_port 5501 collides with members[0].port",
        ),
        (
            proxy(6000, 6000, 6002),
            "proxy.ro_port 6000 collides with proxy.rw_port",
        ),
        (
            format!("[replication]\nsync_quorum = \"one\"\n{TWO}"),
            "replication.sync_quorum: invalid type: string \"one\"",
        ),
    ] {
        let err = up_error(&text);
        assert!(err.contains(want), "for\n{text}\nwant {want:?}, got: {err}");
        assert!(!err.contains("not valid TOML"), "{err}");
    }
}

/// Stops what a test's `pgha up` started: `pgha down`, then any postmaster
/// left in the data directories (by the PID it recorded).
struct DownOnDrop {
    dir: PathBuf,
    data_dirs: Vec<PathBuf>,
}

impl Drop for DownOnDrop {
    fn drop(&mut self) {
        if !self.dir.join("cluster.toml").exists() {
            return;
        }
        let out = run_pgha(bin(), &["down", "--dir", &self.dir.display().to_string()]);
        if !out.status.success() {
            eprintln!("pgha down failed during cleanup: {}", describe(&out));
        }
        for d in &self.data_dirs {
            kill_postmaster(d);
        }
    }
}

/// When `up` gives up waiting, its hint names the real log files, not the
/// pattern `<dir>/<member>`.
#[test]
fn up_timeout_names_the_real_log_files() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let cfg = tmp.path().join("input.toml");
    std::fs::write(&cfg, config_text(1, "")).expect("write config");
    let dir = tmp.path().join("cluster");
    let _down = DownOnDrop {
        dir: dir.clone(),
        data_dirs: vec![dir.join("node1/data")],
    };
    let out = run_pgha(
        bin(),
        &[
            "up",
            "--dir",
            &dir.display().to_string(),
            "--config",
            &cfg.display().to_string(),
            "--timeout",
            "0",
        ],
    );
    assert!(!out.status.success(), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("<dir>"), "{err}");
    let agent_log = dir.join("node1/agent.log");
    assert!(
        err.contains(&agent_log.display().to_string()),
        "should name {}: {err}",
        agent_log.display()
    );
    assert!(
        err.contains(&dir.join("node1/postgresql.log").display().to_string()),
        "{err}"
    );
}
