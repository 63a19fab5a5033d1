//! The dev cluster's background processes (etcd, one agent per member, the
//! proxy): started detached in their own process group with their output in
//! a log file, remembered by PID in `<dir>/run/<name>.pid`, and stopped by
//! that PID only (after checking the process is still the one we started).

use anyhow::Context;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub fn run_dir(cluster_dir: &Path) -> PathBuf {
    cluster_dir.join("run")
}

fn pid_file(cluster_dir: &Path, name: &str) -> PathBuf {
    run_dir(cluster_dir).join(format!("{name}.pid"))
}

/// Start `cmd` detached, output to `log`, and record its PID as `name`.
pub fn spawn(cluster_dir: &Path, name: &str, mut cmd: Command, log: &Path) -> anyhow::Result<u32> {
    std::fs::create_dir_all(run_dir(cluster_dir)).context("create the run directory")?;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("open {}", log.display()))?;
    let err = out.try_clone().context("clone log handle")?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .with_context(|| format!("start {name} ({:?})", cmd.get_program()))?;
    let pid = child.id();
    std::fs::write(pid_file(cluster_dir, name), format!("{pid}\n")).context("write pid file")?;
    // The child outlives us on purpose; it is reaped by init.
    std::mem::forget(child);
    Ok(pid)
}

/// The PID recorded for `name`, if that process is alive and still runs
/// `expect` (a word of its command line), so a recycled PID is never hit.
pub fn running_pid(cluster_dir: &Path, name: &str, expect: &str) -> Option<u32> {
    let text = std::fs::read_to_string(pid_file(cluster_dir, name)).ok()?;
    let pid: u32 = text.trim().parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmdline = String::from_utf8_lossy(&cmdline);
    (kill(Pid::from_raw(pid as i32), None).is_ok() && cmdline.contains(expect)).then_some(pid)
}

/// SIGTERM `name`'s process, wait up to `grace`, then SIGKILL; forget it.
pub fn stop(cluster_dir: &Path, name: &str, expect: &str, grace: Duration) {
    if let Some(pid) = running_pid(cluster_dir, name, expect) {
        let p = Pid::from_raw(pid as i32);
        let _ = kill(p, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && alive(pid) {
            std::thread::sleep(Duration::from_millis(50));
        }
        if alive(pid) {
            tracing::warn!("{name} (pid {pid}) did not stop in {grace:?}; killing it");
            let _ = kill(p, Signal::SIGKILL);
        }
    }
    let _ = std::fs::remove_file(pid_file(cluster_dir, name));
}

fn alive(pid: u32) -> bool {
    // A zombie still answers kill(0); look at its state too.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}
