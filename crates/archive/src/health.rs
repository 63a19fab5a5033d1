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

/// The list of archived files found corrupt (by `pgha archive list
/// --verify`, or by a `wal-fetch` that could not use one), in the archive
/// directory itself so that every member and `pgha status` see it. A
/// dot file: never listed as WAL, never cleaned.
pub const CORRUPT_FILE: &str = ".pgha-corrupt";

/// One archived file found corrupt.
#[derive(Debug, Clone, PartialEq)]
pub struct Corrupt {
    pub name: String,
    pub reason: String,
    /// Unix seconds when it was found.
    pub at_unix: f64,
}

/// Replace the archive's corrupt list with what a full verification found
/// (best effort; an empty list removes the file).
pub fn record_verified(archive: &Path, bad: &[(String, String)]) {
    let now = unix_now();
    let list: Vec<Corrupt> = bad
        .iter()
        .map(|(name, reason)| Corrupt {
            name: name.clone(),
            reason: reason.clone(),
            at_unix: now,
        })
        .collect();
    write_corrupt(archive, &list);
}

/// Add `name` to the archive's corrupt list (a fetch found it bad).
pub fn note_corrupt(archive: &Path, name: &str, reason: &str) {
    let mut list = read_corrupt(archive);
    list.retain(|c| c.name != name);
    list.push(Corrupt {
        name: name.to_string(),
        reason: reason.to_string(),
        at_unix: unix_now(),
    });
    write_corrupt(archive, &list);
}

/// The archive's corrupt list (empty when none is known).
pub fn read_corrupt(archive: &Path) -> Vec<Corrupt> {
    let Ok(text) = std::fs::read_to_string(archive.join(CORRUPT_FILE)) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, '\t');
            let name = f.next()?.to_string();
            let at_unix = f.next()?.parse().ok()?;
            let reason = f.next()?.to_string();
            Some(Corrupt {
                name,
                reason,
                at_unix,
            })
        })
        .collect()
}

fn write_corrupt(archive: &Path, list: &[Corrupt]) {
    let path = archive.join(CORRUPT_FILE);
    if list.is_empty() {
        let _ = std::fs::remove_file(path);
        return;
    }
    let clean = |s: &str| s.replace(['\n', '\r', '\t'], " ");
    let text: String = list
        .iter()
        .map(|c| format!("{}\t{}\t{}\n", clean(&c.name), c.at_unix, clean(&c.reason)))
        .collect();
    let tmp = archive.join(format!("{CORRUPT_FILE}.tmp"));
    if std::fs::write(&tmp, text).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Record a failure of `op` in `dir` (best effort).
pub fn record_failure(dir: &Path, op: Op, wal: &str, reason: &str) {
    let at = unix_now();
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
    fn corrupt_files_are_listed_by_verify_and_by_fetch_and_cleared_by_a_clean_verify() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_corrupt(dir.path()).is_empty());
        record_verified(
            dir.path(),
            &[("000000010000000000000002".into(), "sha256\tmismatch".into())],
        );
        note_corrupt(
            dir.path(),
            "000000010000000000000003",
            "zstd stream does not decode",
        );
        let names: Vec<_> = read_corrupt(dir.path())
            .into_iter()
            .map(|c| (c.name, c.reason))
            .collect();
        assert_eq!(
            names,
            [
                (
                    "000000010000000000000002".to_string(),
                    "sha256 mismatch".to_string()
                ),
                (
                    "000000010000000000000003".to_string(),
                    "zstd stream does not decode".to_string()
                )
            ]
        );
        record_verified(dir.path(), &[]);
        assert!(read_corrupt(dir.path()).is_empty());
        assert!(!dir.path().join(CORRUPT_FILE).exists());
    }

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
