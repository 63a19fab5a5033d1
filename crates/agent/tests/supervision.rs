//! The agent's background tasks are one supervised set: when one of them
//! ends, the agent logs which one and why, stops PostgreSQL and returns
//! `Exit::TaskEnded` (on which `pgha agent` exits non-zero so its supervisor
//! restarts it). Against a real PostgreSQL the agent bootstraps first; the
//! injected task then fails through [`Agent::supervise`], the same path the
//! REST API takes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking

use pgha_agent::{Agent, Exit};
use pgha_dcs::MemoryDcs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Everything the agent logs, for the assertions.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

/// Stops a postmaster left running by a failed test, by the PID in its
/// lock file.
struct StopPostmaster(pgha_postgres::Instance);

impl Drop for StopPostmaster {
    fn drop(&mut self) {
        let Some(pid) = self.0.pid() else { return };
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGQUIT);
        let deadline = Instant::now() + Duration::from_secs(20);
        while pgha_postgres::process_alive(pid.as_raw()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_ends_stops_the_agent_naming_it() {
    let logs = Logs::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let text = format!(
        "name = \"sup\"\n[dcs]\nendpoints = [\"http://127.0.0.1:1\"]\n\
         [[members]]\nname = \"node1\"\nport = {}\napi_port = {}\n",
        free_port(),
        free_port()
    );
    let cfg = pgha_config::parse(&text, tmp.path()).expect("config");
    let member = cfg.member("node1").cloned().expect("member");
    let (mut agent, _status) = Agent::new(
        cfg,
        "node1",
        Arc::new(MemoryDcs::new()),
        PathBuf::from("/bin/true"),
    )
    .expect("agent");
    let inst = pgha_postgres::Instance::new(
        &member,
        pgha_postgres::PgBinaries::locate(None).expect("PostgreSQL"),
        pgha_postgres::ServiceUser::resolve("postgres").expect("OS user postgres"),
    );
    let _stop = StopPostmaster(inst.clone());

    let (fail_tx, fail_rx) = tokio::sync::oneshot::channel::<()>();
    agent.supervise("injected task", async move {
        let _ = fail_rx.await;
        anyhow::bail!("injected failure")
    });
    let (_cmd_tx, cmd_rx) = tokio::sync::mpsc::channel(1);
    let cancel = CancellationToken::new();
    let run = tokio::spawn(agent.run(cmd_rx, cancel.clone()));

    // Fail the task once PostgreSQL runs: the agent must notice on its own.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !inst.is_running() {
        assert!(
            Instant::now() < deadline,
            "the agent never started PostgreSQL"
        );
        assert!(!run.is_finished(), "the agent stopped before failing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fail_tx.send(()).expect("the task waits");
    let exit = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("the agent kept running after one of its tasks ended")
        .expect("agent task");
    match exit {
        Exit::TaskEnded(ended) => {
            assert_eq!(ended.name, "injected task");
            assert!(ended.why.contains("injected failure"), "{ended}");
        }
        other => panic!("unexpected exit: {other:?}"),
    }
    assert!(!cancel.is_cancelled());
    let log = logs.text();
    assert!(
        log.lines().any(|l| l.contains("ERROR")
            && l.contains(r#"agent task "injected task" ended: it failed: injected failure"#)),
        "no ERROR line naming the task in the log:\n{log}"
    );
    assert!(!inst.is_running(), "PostgreSQL is stopped on the way out");
}
