//! Retention: the only code that deletes archived files.
//!
//! `KeepNewest(n)`: let H be the newest position on the newest timeline that
//! has a complete segment. Among the distinct positions of segment and
//! .partial files at or before H (any timeline), the n newest are kept; the
//! cutoff is the oldest of them. `Before(name)`: the cutoff is the position
//! of `name` (as `pg_archivecleanup` does). Then every segment, .partial and
//! .backup file *before* the cutoff is deleted, on every timeline; files at
//! or after the cutoff are all kept, and `.history` files are never deleted
//! (they are tiny and recovery with `recovery_target_timeline=latest` needs
//! every one of them).
//!
//! Hazards: positions are compared as `(log, seg)`, so no segment size is
//! assumed; holes in the archive make `KeepNewest` reach further back (it
//! keeps more, never less); a file whose header is not ours is never
//! deleted, so pointing `clean` at the wrong directory deletes nothing.

use crate::error::{ArchiveError, Result};
use crate::fsutil::{self, STALE_AFTER};
use crate::inspect::Entry;
use crate::name::{SegPos, WalKind, WalName};
use crate::Archive;
use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::PathBuf;

/// What to keep.
#[derive(Debug, Clone)]
pub enum Retention {
    /// Keep the newest N segment positions of the newest timeline's history.
    KeepNewest(u32),
    /// Keep `name`'s position and everything after it.
    Before(WalName),
}

/// What `clean` did (or, with `dry_run`, would do).
#[derive(Debug, Default)]
pub struct CleanReport {
    /// The oldest kept position, as a segment name on the newest timeline;
    /// `None` when nothing qualified for deletion.
    pub cutoff: Option<String>,
    /// Deleted archive files, oldest first, with their sizes on disk.
    pub deleted: Vec<(String, u64)>,
    /// Archive files kept.
    pub kept: usize,
    /// Files with WAL names whose header is not ours: left alone.
    pub skipped: Vec<(String, String)>,
    /// Stale temp files of killed pushes removed.
    pub stale_temps: Vec<PathBuf>,
}

impl Archive {
    /// Apply `retention`; with `dry_run`, only report.
    pub fn clean(&self, retention: &Retention, dry_run: bool) -> Result<CleanReport> {
        let mut report = clean_plan(self.list()?, retention)?;
        for (name, _) in &report.deleted {
            self.delete(&WalName::parse(name)?, dry_run)?;
        }
        if !dry_run && !report.deleted.is_empty() {
            fsutil::fsync_dir(self.dir())?;
        }
        report.stale_temps = fsutil::sweep_stale_temps(&self.temp_dir(), STALE_AFTER, dry_run)?;
        Ok(report)
    }

    fn delete(&self, name: &WalName, dry_run: bool) -> Result<()> {
        if dry_run {
            return Ok(());
        }
        let path = self.path_of(name);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ArchiveError::io("deleting archive file", &path, e)),
        }
    }
}

/// What `retention` deletes from `entries` (nothing is deleted here):
/// `deleted` lists the doomed files.
pub fn clean_plan(entries: Vec<Entry>, retention: &Retention) -> Result<CleanReport> {
    let cutoff = cutoff(&entries, retention)?;
    let mut report = CleanReport {
        cutoff: cutoff.map(|(tli, pos)| segment_name(tli, pos)),
        ..CleanReport::default()
    };
    for entry in entries {
        let doomed = match (cutoff, entry.name.pos()) {
            (Some((_, cut)), Some(pos)) => pos < cut,
            _ => false,
        };
        if !doomed {
            report.kept += 1;
        } else if let Err(reason) = &entry.header {
            report
                .skipped
                .push((entry.name.to_string(), reason.clone()));
        } else {
            report
                .deleted
                .push((entry.name.to_string(), entry.stored_size));
        }
    }
    Ok(report)
}

/// The cutoff `(timeline, position)`: files before the position go.
fn cutoff(entries: &[Entry], retention: &Retention) -> Result<Option<(u32, SegPos)>> {
    match retention {
        Retention::KeepNewest(0) => Err(ArchiveError::InvalidRetention(
            "--keep 0 would delete every WAL segment; keep at least 1 (and in practice \
             everything since the oldest base backup you may restore)"
                .into(),
        )),
        Retention::KeepNewest(n) => Ok(keep_newest(entries, *n as usize)),
        Retention::Before(name) => match name.pos() {
            Some(pos) if name.kind() != WalKind::History => Ok(Some((name.timeline(), pos))),
            _ => Err(ArchiveError::InvalidRetention(format!(
                "{name} is a timeline history file; --before needs a segment or .backup name"
            ))),
        },
    }
}

/// Only readable files of ours count: a foreign or damaged file must not
/// move the cutoff.
fn keep_newest(entries: &[Entry], n: usize) -> Option<(u32, SegPos)> {
    let ours: Vec<&Entry> = entries.iter().filter(|e| e.header.is_ok()).collect();
    let is_wal = |e: &&&Entry| matches!(e.name.kind(), WalKind::Segment | WalKind::Partial);
    let newest_tli = ours
        .iter()
        .filter(|e| e.name.kind() == WalKind::Segment)
        .map(|e| e.name.timeline())
        .max()?;
    let head = ours
        .iter()
        .filter(|e| e.name.kind() == WalKind::Segment && e.name.timeline() == newest_tli)
        .filter_map(|e| e.name.pos())
        .max()?;
    let positions: BTreeSet<SegPos> = ours
        .iter()
        .filter(is_wal)
        .filter_map(|e| e.name.pos())
        .filter(|p| *p <= head)
        .collect();
    let cut = positions.iter().rev().nth(n.checked_sub(1)?)?;
    Some((newest_tli, *cut))
}

fn segment_name(tli: u32, pos: SegPos) -> String {
    format!("{tli:08X}{:08X}{:08X}", pos.log, pos.seg)
}
