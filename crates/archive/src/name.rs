//! WAL file names as PostgreSQL writes them, and their order.
//!
//! The archive stores files under exactly the name PostgreSQL passes as `%f`:
//! a segment `TTTTTTTTXXXXXXXXYYYYYYYY` (timeline, log, segment, upper-case
//! hex), `<segment>.partial` (the last, incomplete segment of an old timeline,
//! archived at promotion), `TTTTTTTT.history` (timeline history) and
//! `<segment>.XXXXXXXX.backup` (backup history).
//!
//! Hazard: nothing here knows the segment size. Ordering compares
//! `(log, seg)` as numbers, which is the WAL order for any `wal_segment_size`,
//! so nothing assumes 16 MB segments.

use crate::error::ArchiveError;
use std::cmp::Ordering;
use std::fmt;

/// What kind of file a WAL name denotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WalKind {
    /// A complete WAL segment.
    Segment,
    /// The incomplete last segment of a timeline (`.partial`).
    Partial,
    /// A timeline history file (`.history`).
    History,
    /// A backup history file (`.backup`).
    Backup,
}

impl fmt::Display for WalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WalKind::Segment => "segment",
            WalKind::Partial => "partial",
            WalKind::History => "history",
            WalKind::Backup => "backup",
        })
    }
}

/// A position in the WAL stream at segment granularity, independent of the
/// timeline: `(log, seg)` from the file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegPos {
    pub log: u32,
    pub seg: u32,
}

/// A validated WAL file name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WalName {
    name: String,
    kind: WalKind,
    timeline: u32,
    /// `None` for history files, which have no position.
    pos: Option<SegPos>,
}

impl WalName {
    /// Parse a bare file name (no directory part).
    pub fn parse(name: &str) -> Result<WalName, ArchiveError> {
        parse_inner(name).ok_or_else(|| ArchiveError::InvalidName {
            name: name.to_string(),
        })
    }

    /// The file name.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> WalKind {
        self.kind
    }

    pub fn timeline(&self) -> u32 {
        self.timeline
    }

    /// The segment position; `None` for `.history` files.
    pub fn pos(&self) -> Option<SegPos> {
        self.pos
    }
}

impl fmt::Display for WalName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl PartialOrd for WalName {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for WalName {
    /// History files first (by timeline), then by position, timeline, name.
    fn cmp(&self, other: &Self) -> Ordering {
        (self.pos, self.timeline, &self.name).cmp(&(other.pos, other.timeline, &other.name))
    }
}

fn parse_inner(name: &str) -> Option<WalName> {
    let make = |kind, seg: &str| {
        let (timeline, pos) = parse_segment(seg)?;
        Some(WalName {
            name: name.to_string(),
            kind,
            timeline,
            pos: Some(pos),
        })
    };
    if let Some(tli) = name.strip_suffix(".history") {
        return Some(WalName {
            name: name.to_string(),
            kind: WalKind::History,
            timeline: hex8(tli)?,
            pos: None,
        });
    }
    if let Some(seg) = name.strip_suffix(".partial") {
        return make(WalKind::Partial, seg);
    }
    if let Some(rest) = name.strip_suffix(".backup") {
        let (seg, offset) = rest.split_once('.')?;
        hex8(offset)?;
        return make(WalKind::Backup, seg);
    }
    make(WalKind::Segment, name)
}

/// `TTTTTTTTXXXXXXXXYYYYYYYY` -> (timeline, position).
fn parse_segment(s: &str) -> Option<(u32, SegPos)> {
    if s.len() != 24 {
        return None;
    }
    let timeline = hex8(&s[0..8])?;
    let log = hex8(&s[8..16])?;
    let seg = hex8(&s[16..24])?;
    Some((timeline, SegPos { log, seg }))
}

/// Exactly eight upper-case hex digits, as PostgreSQL prints them.
fn hex8(s: &str) -> Option<u32> {
    let ok = s.len() == 8
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b));
    if !ok {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind() {
        let s = WalName::parse("000000010000000000000003").unwrap();
        assert_eq!(s.kind(), WalKind::Segment);
        assert_eq!(s.timeline(), 1);
        assert_eq!(s.pos(), Some(SegPos { log: 0, seg: 3 }));

        let p = WalName::parse("00000001000000000000000A.partial").unwrap();
        assert_eq!(p.kind(), WalKind::Partial);
        assert_eq!(p.pos(), Some(SegPos { log: 0, seg: 10 }));

        let h = WalName::parse("0000000A.history").unwrap();
        assert_eq!(h.kind(), WalKind::History);
        assert_eq!(h.timeline(), 10);
        assert_eq!(h.pos(), None);

        let b = WalName::parse("000000010000000000000002.00000028.backup").unwrap();
        assert_eq!(b.kind(), WalKind::Backup);
        assert_eq!(b.pos(), Some(SegPos { log: 0, seg: 2 }));
    }

    #[test]
    fn rejects_non_wal_names() {
        for bad in [
            "",
            "RECOVERYXLOG",
            "00000001000000000000000",
            "0000000100000000000000003",
            "00000001000000000000000a",
            "../00000001000000000000000",
            "pg_wal/000000010000000000000003",
            "00000001.history.tmp",
            "0000001.history",
            "000000010000000000000002.backup",
            ".000000010000000000000003",
        ] {
            assert!(WalName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn orders_by_position_not_timeline() {
        let mut names: Vec<WalName> = [
            "000000020000000100000000",
            "000000010000000000000001",
            "00000002.history",
            "0000000100000000000000FF",
        ]
        .iter()
        .map(|n| WalName::parse(n).unwrap())
        .collect();
        names.sort();
        let got: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
        assert_eq!(
            got,
            [
                "00000002.history",
                "000000010000000000000001",
                "0000000100000000000000FF",
                "000000020000000100000000"
            ]
        );
    }
}
