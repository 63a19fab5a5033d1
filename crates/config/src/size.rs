//! Byte sizes written the way PostgreSQL writes them ("512MB", "1GB", "0").

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// A size in bytes, parsed from PostgreSQL-style text: a number with an
/// optional unit kB, MB, GB or TB (powers of 1024), or plain bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const fn mb(n: u64) -> Self {
        ByteSize(n * 1024 * 1024)
    }

    /// The value in whole megabytes, as PostgreSQL's `MB` unit expects.
    pub fn as_mb(self) -> u64 {
        self.0 / (1024 * 1024)
    }
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{s:?} is not a size such as \"512MB\" or \"1GB\""))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "kB" | "KB" => 1024,
            "MB" => 1024 * 1024,
            "GB" => 1024 * 1024 * 1024,
            "TB" => 1024 * 1024 * 1024 * 1024,
            other => {
                return Err(format!(
                    "unknown unit {other:?} in {s:?} (use kB, MB, GB or TB)"
                ))
            }
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("{s:?} is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [
            ("TB", 1 << 40),
            ("GB", 1 << 30),
            ("MB", 1 << 20),
            ("kB", 1 << 10),
        ];
        for (unit, size) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{unit}", self.0 / size);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_postgres_units() {
        assert_eq!("0".parse::<ByteSize>().unwrap(), ByteSize(0));
        assert_eq!("512MB".parse::<ByteSize>().unwrap(), ByteSize::mb(512));
        assert_eq!("1GB".parse::<ByteSize>().unwrap(), ByteSize::mb(1024));
        assert_eq!("64kB".parse::<ByteSize>().unwrap(), ByteSize(64 * 1024));
        assert!("12 parsecs".parse::<ByteSize>().is_err());
        assert!("MB".parse::<ByteSize>().is_err());
    }

    #[test]
    fn displays_largest_exact_unit() {
        assert_eq!(ByteSize::mb(1024).to_string(), "1GB");
        assert_eq!(ByteSize::mb(1536).to_string(), "1536MB");
        assert_eq!(ByteSize(100).to_string(), "100");
    }
}
