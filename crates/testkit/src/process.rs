//! A guard that ends a child process (and its process group) by PID when it
//! is dropped, so that a failing test does not leave servers behind.

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use std::process::Child;
use std::time::{Duration, Instant};

/// Owns a started process; Drop sends SIGTERM, waits up to 5 s, then SIGKILL.
///
/// When the child was started in its own process group (`process_group(0)`),
/// the whole group is signalled, which reaches the grandchildren it spawned.
pub struct ProcessGuard {
    name: String,
    child: Option<Child>,
    group: bool,
}

impl ProcessGuard {
    /// Guard a child. `group` says whether it leads its own process group.
    pub fn new(name: impl Into<String>, child: Child, group: bool) -> Self {
        ProcessGuard {
            name: name.into(),
            child: Some(child),
            group,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Send a signal to the process (or its group).
    pub fn signal(&self, sig: Signal) {
        if let Some(child) = &self.child {
            let pid = Pid::from_raw(child.id() as i32);
            let _ = if self.group {
                killpg(pid, sig)
            } else {
                kill(pid, sig)
            };
        }
    }

    /// SIGSTOP, then wait until every thread of the process has stopped
    /// (state `T` in `/proc/<pid>/task/*/stat`). `kill` returns before a busy
    /// multi-threaded process has stopped, and a request sent in between
    /// can still be answered (a flaky "hung server" test).
    pub fn stop_and_wait(&self, timeout: Duration) -> anyhow::Result<()> {
        self.signal(Signal::SIGSTOP);
        let pid = self.pid();
        crate::wait_until(
            &format!("{} (pid {pid}) to stop", self.name),
            timeout,
            || all_threads_stopped(pid).then_some(()),
        )
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILL now and reap.
    pub fn kill(&mut self) {
        self.signal(Signal::SIGKILL);
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = Pid::from_raw(child.id() as i32);
        let send = |sig| {
            let _ = if self.group {
                killpg(pid, sig)
            } else {
                kill(pid, sig)
            };
        };
        send(Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        send(Signal::SIGKILL);
        let _ = child.wait();
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// Every thread of `pid` is stopped by a signal (`T`) or traced (`t`).
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    let mut any = false;
    for t in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            return false;
        };
        // "tid (comm) S ...": the state follows the last ')'.
        let state = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].trim_start().chars().next());
        if !matches!(state, Some('T' | 't')) {
            return false;
        }
        any = true;
    }
    any
}
