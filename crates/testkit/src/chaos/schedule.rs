//! Seeded fault schedules. Faults come in rounds: every round holds each
//! enabled kind once, in an order shuffled by the seeded RNG, so even a
//! short run covers every kind as soon as it lasts one round. Each planned
//! fault also carries its seeded knobs: how long it is held, which target
//! (`pick`, resolved against the cluster at injection time), the direction
//! of a partition and the quiet gap after recovery.
//!
//! Hazard: the same seed gives the same sequence of plans, but the target a
//! `pick` resolves to depends on who is primary at that moment, so a replay
//! is faithful in kinds and timings, not necessarily in targets.

use super::faults::FaultKind;
use super::lab::Direction;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::time::Duration;

/// One planned fault.
#[derive(Clone, Debug)]
pub struct Plan {
    pub kind: FaultKind,
    /// Resolves the target (see `faults::inject`).
    pub pick: u64,
    /// How long the fault lasts before it is healed.
    pub hold: Duration,
    pub direction: Direction,
    /// Quiet time after the cluster recovered, before the next fault.
    pub gap: Duration,
}

pub struct Schedule {
    rng: StdRng,
    kinds: Vec<FaultKind>,
    round: Vec<FaultKind>,
    hold: (Duration, Duration),
    handed_out: usize,
}

impl Schedule {
    /// `kinds` in any order (they are sorted first, so only the seed
    /// decides the order); `hold` is the range of fault durations.
    pub fn new(seed: u64, kinds: &[FaultKind], hold: (Duration, Duration)) -> Self {
        let mut kinds = kinds.to_vec();
        kinds.sort();
        kinds.dedup();
        Schedule {
            rng: StdRng::seed_from_u64(seed),
            kinds,
            round: Vec::new(),
            hold,
            handed_out: 0,
        }
    }

    /// Complete rounds handed out so far (every kind once per round).
    pub fn rounds_done(&self) -> usize {
        self.handed_out.checked_div(self.kinds.len()).unwrap_or(0)
    }

    /// The next fault; None when no kind is enabled.
    pub fn next_plan(&mut self) -> Option<Plan> {
        if self.round.is_empty() {
            self.round = self.kinds.clone();
            self.round.shuffle(&mut self.rng);
            self.round.reverse();
        }
        let kind = self.round.pop()?;
        self.handed_out += 1;
        let (lo, hi) = (
            self.hold.0.as_millis() as u64,
            self.hold.1.as_millis() as u64,
        );
        let hold = Duration::from_millis(self.rng.gen_range(lo..=hi.max(lo)));
        let direction = match self.rng.gen_range(0..4) {
            0 => Direction::In,
            1 => Direction::Out,
            _ => Direction::Both,
        };
        Some(Plan {
            kind,
            pick: self.rng.gen(),
            hold,
            direction,
            gap: Duration::from_millis(self.rng.gen_range(500..=2500)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_covers_every_kind_and_the_seed_fixes_the_order() {
        let hold = (Duration::from_secs(1), Duration::from_secs(3));
        let mut a = Schedule::new(42, &FaultKind::ALL, hold);
        let mut b = Schedule::new(42, &FaultKind::ALL, hold);
        let first: Vec<FaultKind> = (0..FaultKind::ALL.len())
            .filter_map(|_| a.next_plan())
            .map(|p| p.kind)
            .collect();
        let again: Vec<FaultKind> = (0..FaultKind::ALL.len())
            .filter_map(|_| b.next_plan())
            .map(|p| p.kind)
            .collect();
        assert_eq!(first, again);
        let mut sorted = first.clone();
        sorted.sort();
        assert_eq!(sorted, FaultKind::ALL.to_vec());
        let other: Vec<FaultKind> = {
            let mut c = Schedule::new(7, &FaultKind::ALL, hold);
            (0..FaultKind::ALL.len())
                .filter_map(|_| c.next_plan())
                .map(|p| p.kind)
                .collect()
        };
        assert_ne!(first, other, "another seed, another order");
    }
}
