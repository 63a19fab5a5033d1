//! Honest commands (issue 14): each test pins one defect that an operator
//! met, run against the built binary. Config errors name the key and say
//! what is wrong; `up` points at real log files.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking

use pgha_testkit::cluster::{config_text, describe, kill_postmaster, run_pgha};
use pgha_testkit::etcd::EtcdGuard;
use pgha_testkit::wait_until;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
/// pattern `<dir>/<member>`. And logs written to a file or a pipe carry no
/// ANSI colour codes: `up`'s own stderr here is a pipe, the agent's is
/// agent.log.
#[test]
fn up_timeout_names_the_real_log_files_which_have_no_colour_codes() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let cfg = tmp.path().join("input.toml");
    std::fs::write(&cfg, config_text(1, "")).expect("write config");
    let dir = tmp.path().join("cluster");
    let _down = DownOnDrop {
        dir: dir.clone(),
        data_dirs: vec![dir.join("node1/data")],
    };
    let out = std::process::Command::new(bin())
        .args(["up", "--dir", &dir.display().to_string()])
        .args(["--config", &cfg.display().to_string(), "--timeout", "0"])
        .env("RUST_LOG", "info")
        .output()
        .expect("run pgha up");
    assert!(!out.status.success(), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("<dir>"), "{err}");
    // Failed partway: it says what it left running and how to stop it.
    assert!(err.contains("left running: etcd (pid"), "{err}");
    assert!(
        err.contains(&format!("pgha down --dir {}", dir.display())),
        "{err}"
    );
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
    let agent_log = wait_until("the agent logs", Duration::from_secs(30), || {
        std::fs::read_to_string(&agent_log)
            .ok()
            .filter(|t| t.contains("agent started"))
    })
    .expect("agent.log");
    assert!(
        !agent_log.contains('\x1b'),
        "escape codes in agent.log: {agent_log:?}"
    );
    assert!(
        !err.contains('\x1b'),
        "escape codes in up's stderr: {err:?}"
    );
}

/// `pgha status | head -1`: a reader that goes away is not a crash. The
/// pipe's read end is closed before status writes, so every write fails
/// with EPIPE; status must exit 0 without a panic.
#[test]
fn status_into_a_closed_pipe_exits_cleanly() {
    let etcd = EtcdGuard::start().expect("etcd");
    let tmp = tempfile::tempdir().expect("temp dir");
    let cfg = tmp.path().join("cluster.toml");
    std::fs::write(
        &cfg,
        format!(
            "[dcs]\nendpoints = [\"{}\"]\n[[members]]\nname = \"node1\"\nport = {}\napi_port = {}\n",
            etcd.client_url,
            pgha_testkit::free_port(),
            pgha_testkit::free_port()
        ),
    )
    .expect("write config");
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = std::process::Command::new(bin())
        .args(["status", "--config", &cfg.display().to_string()])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run pgha status");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
}

/// An error caused by a missing file names its cause once, not
/// `(os error 2): No such file or directory (os error 2)`.
#[test]
fn a_missing_file_names_its_cause_once() {
    let out = run_pgha(
        bin(),
        &["status", "--config", "/nonexistent/pgha/cluster.toml"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/pgha/cluster.toml"), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

/// Two `pgha up` at once on a new directory: the second is refused at once
/// with a clear message instead of racing the first into an opaque error.
#[test]
fn a_second_up_on_the_same_directory_is_refused() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let cfg = tmp.path().join("input.toml");
    std::fs::write(&cfg, config_text(1, "")).expect("write config");
    let dir = tmp.path().join("cluster");
    let _down = DownOnDrop {
        dir: dir.clone(),
        data_dirs: vec![dir.join("node1/data")],
    };
    let up = |timeout: &str| {
        let mut cmd = std::process::Command::new(bin());
        cmd.args(["up", "--dir", &dir.display().to_string()])
            .args(["--config", &cfg.display().to_string(), "--timeout", timeout])
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd
    };
    let first = up("60").spawn().expect("first up");
    // The first is under way once it has adopted the config.
    wait_until(
        "the first up adopts the config",
        Duration::from_secs(30),
        || dir.join("cluster.toml").exists().then_some(()),
    )
    .expect("cluster.toml");
    let second = up("60").output().expect("second up");
    let first = first.wait_with_output().expect("first up ends");
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{}", describe(&second));
    assert!(
        err.contains("is in use by another `pgha up`"),
        "{}",
        describe(&second)
    );
    assert!(first.status.success(), "{}", describe(&first));
}
