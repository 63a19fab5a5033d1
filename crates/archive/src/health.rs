//! The last failure of `wal-push` or `wal-fetch`, kept where the agent can
//! read it: PostgreSQL runs `archive_command` and `restore_command` in the
//! data directory and only logs their output, so the reason a push fails
//! (archive full, another cluster's history, a corrupt copy) would
//! otherwise reach nobody but `postgresql.log`. The note is one small file
//! in the data directory ([`FAILURE_FILE`]); a later success of the same
//! operation removes it. Writing it is best effort: a failure to write
//! never changes the command's exit code.

use std::path::Path;

/// The note's file name, in the data directory.
pub const FAILURE_FILE: &str = "pgha_archive_failure";

/// Which command failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Push,
    Fetch,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Push => "push",
            Op::Fetch => "fetch",
        }
    }
}

/// One failure.
#[derive(Debug, Clone, PartialEq)]
pub struct FailureNote {
    pub op: Op,
    /// The WAL file it was about.
    pub wal: String,
    /// Unix seconds.
    pub at_unix: f64,
    /// The error, on one line.
    pub reason: String,
}

/// Record a failure of `op` in `dir` (best effort).
pub fn record_failure(dir: &Path, op: Op, wal: &str, reason: &str) {
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let one_line = |s: &str| s.replace(['\n', '\r'], " ");
    let text = format!(
        "{}\n{}\n{at}\n{}\n",
        op.name(),
        one_line(wal),
        one_line(reason)
    );
    let tmp = dir.join(format!("{FAILURE_FILE}.tmp"));
    if std::fs::write(&tmp, text).is_ok() {
        let _ = std::fs::rename(&tmp, dir.join(FAILURE_FILE));
    }
}

/// Forget a failure of `op` after a success (best effort).
pub fn clear_failure(dir: &Path, op: Op) {
    if read_failure(dir).is_some_and(|f| f.op == op) {
        let _ = std::fs::remove_file(dir.join(FAILURE_FILE));
    }
}

/// The recorded failure, if any.
pub fn read_failure(dir: &Path) -> Option<FailureNote> {
    let text = std::fs::read_to_string(dir.join(FAILURE_FILE)).ok()?;
    let mut lines = text.lines();
    let op = match lines.next()? {
        "push" => Op::Push,
        "fetch" => Op::Fetch,
        _ => return None,
    };
    let wal = lines.next()?.to_string();
    let at_unix = lines.next()?.parse().ok()?;
    let reason = lines.next()?.to_string();
    Some(FailureNote {
        op,
        wal,
        at_unix,
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_recorded_read_and_cleared_by_a_success_of_the_same_op() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_failure(dir.path()), None);
        record_failure(
            dir.path(),
            Op::Push,
            "000000010000000000000003",
            "disk\nfull",
        );
        let f = read_failure(dir.path()).unwrap();
        assert_eq!(
            (f.op, f.wal.as_str()),
            (Op::Push, "000000010000000000000003")
        );
        assert_eq!(f.reason, "disk full");
        assert!(f.at_unix > 0.0);
        clear_failure(dir.path(), Op::Fetch);
        assert!(
            read_failure(dir.path()).is_some(),
            "a fetch success keeps a push failure"
        );
        clear_failure(dir.path(), Op::Push);
        assert_eq!(read_failure(dir.path()), None);
    }
}
