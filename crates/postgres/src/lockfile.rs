//! Who a PostgreSQL lock file (`postmaster.pid`, `.s.PGSQL.<port>.lock`)
//! names, and whether that process is still the postgres that wrote it.
//!
//! A PID alone does not say: after a crash or a reboot the PID in a stale
//! lock file may belong to any process, and trusting it kept the agent from
//! starting PostgreSQL (and kept the stale file). The owner is the process
//! with that PID only if it is alive, is a postgres (its `/proc/PID/cmdline`
//! names a `postgres` program, as `pgha up`'s supervisor checks its agents),
//! and started when the file says (line 3, epoch seconds; `/proc/PID/stat`
//! field 22 in clock ticks after boot, plus the boot time).
//!
//! Hazard: the start time comparison is in wall-clock seconds. A clock step
//! of more than [`LATE_SLACK_SECS`] forward after the postmaster started
//! makes the running postmaster look foreign; starting then fails on
//! PostgreSQL's own check that no process still uses the old shared memory,
//! so the mistake is loud, never two postmasters.

use std::path::Path;

/// How much later than the recorded start time the process may appear to
/// have started: `btime` and the file are whole seconds, and the postmaster
/// writes its start time after the fork that `/proc` counts from.
pub const LATE_SLACK_SECS: i64 = 2;
/// How much earlier: the postmaster writes the file within moments of its
/// start, so a process much older than the file is not its writer (a data
/// directory copied with its lock file, another member's postgres).
pub const EARLY_SLACK_SECS: i64 = 600;
/// `/proc` reports times in USER_HZ, 100 on every Linux architecture pgha
/// runs on (it is part of the kernel ABI, independent of the kernel's HZ).
const USER_HZ: i64 = 100;

/// What a lock file records about its writer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockFile {
    pub pid: i32,
    /// Line 3: the writer's start time in seconds since the epoch (absent
    /// in a file cut short by a crash).
    pub started: Option<i64>,
}

impl LockFile {
    pub fn read(path: &Path) -> Option<LockFile> {
        let text = std::fs::read_to_string(path).ok()?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Option<LockFile> {
        let mut lines = text.lines();
        let pid = lines.next()?.trim().parse().ok()?;
        let started = lines.nth(1).and_then(|l| l.trim().parse().ok());
        Some(LockFile { pid, started })
    }

    /// Whether the process the file names is still its writer: alive, a
    /// postgres, started when the file says.
    pub fn owner_runs(&self) -> bool {
        if !crate::process_alive(self.pid) {
            return false;
        }
        if !is_postgres(self.pid) {
            tracing::debug!(
                pid = self.pid,
                "the lock file's PID belongs to a process that is not postgres"
            );
            return false;
        }
        match (self.started, process_start_time(self.pid)) {
            (Some(recorded), Some(actual)) if !same_start(recorded, actual) => {
                tracing::debug!(
                    pid = self.pid,
                    recorded,
                    actual,
                    "the lock file's PID belongs to a postgres started at another time"
                );
                false
            }
            _ => true,
        }
    }
}

/// Whether a process that started at `actual` wrote a lock file saying
/// `recorded` (both epoch seconds).
pub fn same_start(recorded: i64, actual: i64) -> bool {
    (recorded - EARLY_SLACK_SECS..=recorded + LATE_SLACK_SECS).contains(&actual)
}

/// Whether `pid` runs a `postgres` program (the postmaster's command line
/// is the binary's path; a child's retitled one starts with `postgres:`).
/// Without a readable `/proc` there is nothing to check against: yes.
fn is_postgres(pid: i32) -> bool {
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => {
            let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
            let argv0 = String::from_utf8_lossy(argv0);
            let program = argv0.split_whitespace().next().unwrap_or_default();
            let name = program.rsplit('/').next().unwrap_or_default();
            name == "postgres" || name == "postgres:"
        }
        Err(_) => !Path::new("/proc/self").exists(),
    }
}

/// Start time of `pid` in seconds since the epoch, from `/proc`.
fn process_start_time(pid: i32) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (in parentheses, may hold spaces):
    // field 3 (state) is the first, so field 22 (starttime) the 20th.
    let (_, rest) = stat.rsplit_once(')')?;
    let ticks: i64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    Some(boot_time()? + ticks / USER_HZ)
}

/// The `btime` line of `/proc/stat`: boot time in epoch seconds.
fn boot_time() -> Option<i64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pid_and_start_time() {
        let file =
            "4242\n/var/lib/pg/data\n1765000000\n5432\n/tmp\n*\n  5432001     32768\nready   \n";
        assert_eq!(
            LockFile::parse(file),
            Some(LockFile {
                pid: 4242,
                started: Some(1_765_000_000)
            })
        );
        assert_eq!(
            LockFile::parse("4242\n/data\n"),
            Some(LockFile {
                pid: 4242,
                started: None
            })
        );
        assert_eq!(LockFile::parse(""), None);
        assert_eq!(LockFile::parse("x\n"), None);
    }

    #[test]
    fn start_time_window() {
        let t = 1_765_000_000;
        for (actual, same) in [
            (t, true),
            (t - 1, true),
            (t + LATE_SLACK_SECS, true),
            (t + LATE_SLACK_SECS + 1, false),
            (t + 3600, false),
            (t - EARLY_SLACK_SECS, true),
            (t - EARLY_SLACK_SECS - 1, false),
        ] {
            assert_eq!(same_start(t, actual), same, "actual {actual}");
        }
    }

    #[test]
    fn this_process_started_recently_and_is_not_postgres() {
        let me = std::process::id() as i32;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        let started = process_start_time(me).expect("own start time");
        assert!(
            started <= now + 1 && started > now - 3600,
            "{started} vs {now}"
        );
        assert!(!is_postgres(me));
    }
}
