//! Time as a plain value: milliseconds on one node's monotonic clock.
//!
//! The core never reads a clock. The agent passes `now` (e.g. milliseconds
//! since the agent started, from `Instant`) and the simulator passes its own
//! skewed clocks. Hazard: values from two different nodes' clocks must never
//! be compared; only differences on the same clock mean anything. Lease
//! expiry in the DCS runs on the DCS's own clock, which is why safety never
//! depends on these values (see `docs/failover.md`, "Fencing").

use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::{Add, Sub};

/// Milliseconds: a point on one node's monotonic clock, or a duration.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Millis(pub u64);

impl Millis {
    pub const ZERO: Millis = Millis(0);

    pub const fn from_secs(secs: u64) -> Millis {
        Millis(secs * 1000)
    }

    /// `self - earlier`, zero if `earlier` is later.
    pub fn since(self, earlier: Millis) -> Millis {
        Millis(self.0.saturating_sub(earlier.0))
    }
}

impl Add for Millis {
    type Output = Millis;
    fn add(self, rhs: Millis) -> Millis {
        Millis(self.0.saturating_add(rhs.0))
    }
}

impl Sub for Millis {
    type Output = Millis;
    /// Saturating: a duration is never negative.
    fn sub(self, rhs: Millis) -> Millis {
        self.since(rhs)
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 >= 1000 && self.0.is_multiple_of(100) {
            write!(f, "{}s", self.0 as f64 / 1000.0)
        } else {
            write!(f, "{}ms", self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(Millis(5) - Millis(7), Millis::ZERO);
        assert_eq!(Millis(u64::MAX) + Millis(1), Millis(u64::MAX));
        assert_eq!(Millis(7).since(Millis(5)), Millis(2));
    }

    #[test]
    fn displays_readably() {
        assert_eq!(Millis(2500).to_string(), "2.5s");
        assert_eq!(Millis(250).to_string(), "250ms");
        assert_eq!(Millis::from_secs(2).to_string(), "2s");
    }
}
