//! Is the WAL a restore needs all in the archive? Walks the segments from a
//! backup's start, timeline by timeline as the history files say recovery
//! will, and names the first segment that is missing or fails its checksum.
//!
//! Why: PostgreSQL cannot tell "not in the archive" from "corrupt" (both are
//! a failed `restore_command`), and in archive recovery without a target it
//! ends recovery at the first such hole and promotes, silently losing every
//! commit after it. A restore checks the chain first and refuses instead.
//!
//! Hazards: segment positions depend on `wal_segment_size`, which the
//! archive does not know; callers pass it (it is recorded with each backup).
//! A segment is looked for on every timeline of the path that covers it,
//! newest first, as PostgreSQL does; a segment where a timeline switched is
//! found on the new timeline (the old one's is only a `.partial`).

use crate::error::Result;
use crate::name::{SegPos, WalKind, WalName};
use crate::Archive;
use std::collections::BTreeMap;

/// One entry of a timeline's history: timeline `tli` was left at `end`
/// (an LSN) for the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimelineSpan {
    pub tli: u32,
    /// The LSN where this timeline ends; `None` for the target timeline.
    pub end: Option<u64>,
}

/// Parse a `.history` file: lines `parentTLI switchpoint reason`, oldest
/// first. Returns the ancestors of `tli` followed by `tli` itself.
pub fn parse_history(tli: u32, text: &str) -> Vec<TimelineSpan> {
    let mut spans = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(parent), Some(lsn)) = (fields.next(), fields.next()) else {
            continue;
        };
        let (Ok(parent), Some(end)) = (parent.parse::<u32>(), parse_lsn(lsn)) else {
            continue;
        };
        spans.push(TimelineSpan {
            tli: parent,
            end: Some(end),
        });
    }
    spans.push(TimelineSpan { tli, end: None });
    spans
}

/// `X/Y` in hex to a u64.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    (hi <= u32::MAX as u64 && lo <= u32::MAX as u64).then_some((hi << 32) | lo)
}

/// The segment position of `lsn` for segments of `seg_size` bytes.
pub fn seg_of(lsn: u64, seg_size: u64) -> SegPos {
    let per_log = 0x1_0000_0000u64 / seg_size.max(1);
    let segno = lsn / seg_size.max(1);
    SegPos {
        log: (segno / per_log) as u32,
        seg: (segno % per_log) as u32,
    }
}

fn segno(pos: SegPos, seg_size: u64) -> u64 {
    let per_log = 0x1_0000_0000u64 / seg_size.max(1);
    pos.log as u64 * per_log + pos.seg as u64
}

fn pos_of(segno: u64, seg_size: u64) -> SegPos {
    seg_of(segno * seg_size, seg_size)
}

/// The newest timeline with a history file among `entries`, or 1.
pub fn newest_timeline(entries: &[crate::Entry]) -> u32 {
    entries
        .iter()
        .filter(|e| e.name.kind() == WalKind::History && e.header.is_ok())
        .map(|e| e.name.timeline())
        .max()
        .unwrap_or(1)
}

/// A segment the restore needs that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainProblem {
    /// Not in the archive under any timeline that covers it.
    Missing { name: String },
    /// In the archive, but it fails its checks.
    Corrupt { name: String, reason: String },
}

impl ChainProblem {
    pub fn name(&self) -> &str {
        match self {
            ChainProblem::Missing { name } | ChainProblem::Corrupt { name, .. } => name,
        }
    }
}

impl std::fmt::Display for ChainProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainProblem::Missing { name } => {
                write!(f, "WAL segment {name} is missing from the archive")
            }
            ChainProblem::Corrupt { name, reason } => {
                write!(f, "WAL segment {name} in the archive is corrupt: {reason}")
            }
        }
    }
}

/// What [`Archive::check_chain`] found.
#[derive(Debug, Clone, Default)]
pub struct ChainReport {
    /// Segments checked, in order.
    pub checked: Vec<String>,
    /// The first unusable segment, if any: recovery cannot go past it.
    pub problem: Option<ChainProblem>,
    /// The newest segment of the path found in the archive.
    pub last: Option<String>,
}

impl Archive {
    /// The timeline path recovery follows to `target_tli` (its history file
    /// from the archive; timeline 1 has none).
    pub fn timeline_path(&self, target_tli: u32) -> Result<Vec<TimelineSpan>> {
        if target_tli <= 1 {
            return Ok(vec![TimelineSpan { tli: 1, end: None }]);
        }
        let name = WalName::parse(&format!("{target_tli:08X}.history"))?;
        let mut text = Vec::new();
        self.read_into(&name, &mut text)?;
        Ok(parse_history(target_tli, &String::from_utf8_lossy(&text)))
    }

    /// The newest timeline with a history file, or 1.
    pub fn newest_timeline(&self) -> Result<u32> {
        Ok(newest_timeline(&self.list()?))
    }

    /// Check every segment from `start_lsn` up to the newest one of `path`
    /// in the archive (or up to `until_lsn`): present and, with `verify`,
    /// passing its checksum. Stops at the first problem.
    pub fn check_chain(
        &self,
        path: &[TimelineSpan],
        start_lsn: u64,
        until_lsn: Option<u64>,
        seg_size: u64,
        verify: bool,
    ) -> Result<ChainReport> {
        let plan = chain_plan(&self.list()?, path, start_lsn, until_lsn, seg_size);
        let mut corrupt = None;
        if verify {
            for (i, name) in plan.present.iter().enumerate() {
                if let Err(e) = self.verify(name) {
                    corrupt = Some((i, e.to_string()));
                    break;
                }
            }
        }
        Ok(plan.into_report(corrupt))
    }
}

/// The segments a restore needs, in order, up to the first missing one.
#[derive(Debug, Clone, Default)]
pub struct ChainPlan {
    /// Present segments, in WAL order, before the first missing one.
    pub present: Vec<WalName>,
    /// The first missing segment, named on the timeline that should hold it.
    pub missing: Option<String>,
}

impl ChainPlan {
    /// The report of this plan once its present segments were checked:
    /// `corrupt` is the index in `present` of the first one that failed
    /// its checksum, with the reason (recovery cannot go past it), or none.
    pub fn into_report(self, corrupt: Option<(usize, String)>) -> ChainReport {
        let (usable, problem) = match corrupt {
            Some((i, reason)) => (
                i,
                Some(ChainProblem::Corrupt {
                    name: self.present[i].to_string(),
                    reason,
                }),
            ),
            None => (
                self.present.len(),
                self.missing.map(|name| ChainProblem::Missing { name }),
            ),
        };
        let checked: Vec<String> = self.present[..usable]
            .iter()
            .map(|n| n.to_string())
            .collect();
        ChainReport {
            last: checked.last().cloned(),
            checked,
            problem,
        }
    }
}

/// Which archived segments recovery from `start_lsn` along `path` reads,
/// up to the newest one of the path in `entries` (or up to `until_lsn`).
pub fn chain_plan(
    entries: &[crate::Entry],
    path: &[TimelineSpan],
    start_lsn: u64,
    until_lsn: Option<u64>,
    seg_size: u64,
) -> ChainPlan {
    // For each timeline of the path, the range of segments it covers.
    let mut ranges: Vec<(u32, u64, Option<u64>)> = Vec::new();
    let mut begin = 0u64;
    for span in path {
        let end = span.end.map(|e| segno(seg_of(e, seg_size), seg_size));
        ranges.push((span.tli, begin, end));
        if let Some(e) = end {
            begin = e;
        }
    }
    let mut present: BTreeMap<(u32, u64), WalName> = BTreeMap::new();
    for e in entries {
        if e.name.kind() == WalKind::Segment {
            if let Some(pos) = e.name.pos() {
                present.insert((e.name.timeline(), segno(pos, seg_size)), e.name.clone());
            }
        }
    }
    let covering = |n: u64| -> Vec<u32> {
        ranges
            .iter()
            .rev()
            .filter(|(_, b, e)| *b <= n && e.is_none_or(|e| n <= e))
            .map(|(t, _, _)| *t)
            .collect()
    };
    let newest = present
        .keys()
        .filter(|(tli, n)| covering(*n).contains(tli))
        .map(|(_, n)| *n)
        .max();
    let first = segno(seg_of(start_lsn, seg_size), seg_size);
    let last = match until_lsn {
        Some(u) => segno(seg_of(u, seg_size), seg_size),
        None => newest.unwrap_or(first),
    };
    let mut plan = ChainPlan::default();
    for n in first..=last {
        let found = covering(n)
            .into_iter()
            .find_map(|tli| present.get(&(tli, n)).cloned());
        match found {
            Some(name) => plan.present.push(name),
            None => {
                let tli = covering(n).first().copied().unwrap_or(1);
                let pos = pos_of(n, seg_size);
                plan.missing = Some(format!("{tli:08X}{:08X}{:08X}", pos.log, pos.seg));
                return plan;
            }
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_lists_ancestors_then_target() {
        let text = "1\t0/3000000\tno recovery target specified\n\n2\t0/5000A8\tbefore 2000-01-01\n";
        let spans = parse_history(3, text);
        assert_eq!(
            spans,
            vec![
                TimelineSpan {
                    tli: 1,
                    end: Some(0x300_0000)
                },
                TimelineSpan {
                    tli: 2,
                    end: Some(0x50_00A8)
                },
                TimelineSpan { tli: 3, end: None },
            ]
        );
    }

    #[test]
    fn segment_positions_follow_the_segment_size() {
        let mb16 = 16 * 1024 * 1024;
        assert_eq!(seg_of(0x1_0300_0028, mb16), SegPos { log: 1, seg: 3 });
        assert_eq!(seg_of(0xFF00_0000, mb16), SegPos { log: 0, seg: 0xFF });
        assert_eq!(parse_lsn("1/3000028"), Some(0x1_0300_0028));
        assert_eq!(parse_lsn("nonsense"), None);
    }
}
