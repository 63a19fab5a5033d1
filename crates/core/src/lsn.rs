//! Write-ahead-log positions and timelines as newtypes, so that an LSN is never
//! confused with a byte count or a term.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// A PostgreSQL log sequence number (`pg_lsn`), printed as `X/Y` in hex.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    pub const ZERO: Lsn = Lsn(0);

    /// Bytes from `other` up to `self`, zero when `other` is ahead.
    pub fn bytes_after(self, other: Lsn) -> u64 {
        self.0.saturating_sub(other.0)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

/// Why a string is not an LSN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseLsnError(pub String);

impl fmt::Display for ParseLsnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is not an LSN of the form X/Y (hex)", self.0)
    }
}

impl std::error::Error for ParseLsnError {}

impl FromStr for Lsn {
    type Err = ParseLsnError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseLsnError(s.to_string());
        let (hi, lo) = s.split_once('/').ok_or_else(err)?;
        let hi = u32::from_str_radix(hi, 16).map_err(|_| err())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| err())?;
        Ok(Lsn(((hi as u64) << 32) | lo as u64))
    }
}

/// Serialized as the `X/Y` text PostgreSQL prints, so that JSON in the DCS
/// reads like `pg_current_wal_lsn()` output.
impl Serialize for Lsn {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A PostgreSQL timeline id. Each promotion starts a new one.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timeline(pub u32);

/// A position in WAL history: the timeline the WAL at `lsn` belongs to, and
/// the LSN. Ordered by timeline first, then LSN: a node on a later timeline
/// is "ahead" whatever its LSN, because every promotion that created that
/// timeline kept all acknowledged commits of the earlier ones (the promotion
/// rule), while WAL past a fork on an older timeline was never acknowledged.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct WalPos {
    pub timeline: Timeline,
    pub lsn: Lsn,
}

impl WalPos {
    pub fn new(timeline: u32, lsn: u64) -> WalPos {
        WalPos {
            timeline: Timeline(timeline),
            lsn: Lsn(lsn),
        }
    }
}

impl fmt::Display for WalPos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@tl{}", self.lsn, self.timeline)
    }
}

impl fmt::Display for Timeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_round_trips_through_text() {
        for text in ["0/0", "0/3000060", "16/B374D848", "FFFFFFFF/FFFFFFFF"] {
            let lsn: Lsn = text.parse().unwrap();
            assert_eq!(lsn.to_string(), text);
        }
        assert_eq!("1/0".parse::<Lsn>().unwrap(), Lsn(1 << 32));
    }

    #[test]
    fn lsn_rejects_garbage() {
        for text in ["", "12", "x/1", "1/", "/1", "1/2/3", "100000000/0"] {
            assert!(text.parse::<Lsn>().is_err(), "{text} parsed");
        }
    }

    #[test]
    fn lsn_serializes_as_text() {
        let json = serde_json::to_string(&Lsn(0x1_0000_0060)).unwrap();
        assert_eq!(json, "\"1/60\"");
        assert_eq!(
            serde_json::from_str::<Lsn>(&json).unwrap(),
            Lsn(0x1_0000_0060)
        );
        assert!(serde_json::from_str::<Lsn>("\"zz\"").is_err());
    }

    #[test]
    fn wal_positions_order_by_timeline_first() {
        assert!(WalPos::new(2, 10) > WalPos::new(1, 1000));
        assert!(WalPos::new(2, 10) < WalPos::new(2, 11));
    }

    #[test]
    fn bytes_after_saturates() {
        assert_eq!(Lsn(10).bytes_after(Lsn(4)), 6);
        assert_eq!(Lsn(4).bytes_after(Lsn(10)), 0);
    }
}
