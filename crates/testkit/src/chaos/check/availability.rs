//! Rule 5 (informational, never fails the check): how long writes were
//! unavailable.
//!
//! - RTO of a fault: from its start to the earliest acknowledgement of a
//!   write that *started* at or after it (a write already in flight when
//!   the fault hit proves nothing about recovery).
//! - Unavailability: the acknowledgement times of all clients merged into
//!   one sorted series; every gap between consecutive acknowledgements
//!   longer than the threshold counts, and is attributed to the latest
//!   fault that started before the gap ended. Time before the first
//!   acknowledgement and after the last one counts too when writes were
//!   being attempted then (`open` gaps).
//!
//! Hazard: with no acknowledged write at all every RTO is `None`; the
//! table shows that as "never", not as zero.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::chaos::history::{History, OpKind, Outcome};

/// Gaps between acknowledgements shorter than this are normal latency.
pub const DEFAULT_GAP_MS: u64 = 200;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Availability {
    pub gap_threshold_ms: u64,
    /// One entry per fault, in the history's order.
    pub faults: Vec<FaultRto>,
    pub gaps: Vec<Gap>,
    /// Sum of all gaps.
    pub unavailable_ms: u64,
    /// Sorted by kind.
    pub per_kind: Vec<KindStats>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRto {
    /// Index into `History::faults`.
    pub index: usize,
    pub kind: String,
    pub target: String,
    pub start_ms: u64,
    pub healed_ms: Option<u64>,
    /// `None`: no write that started after the fault was ever acknowledged.
    pub rto_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    pub from_ms: u64,
    pub to_ms: u64,
    /// Index into `History::faults` of the fault it is attributed to.
    pub fault: Option<usize>,
    pub kind: Option<String>,
    /// True when one side is not an acknowledgement (start or end of the run).
    pub open: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindStats {
    pub kind: String,
    pub injected: u64,
    /// Faults followed by an acknowledged write.
    pub recovered: u64,
    pub rto_p50_ms: Option<u64>,
    pub rto_p95_ms: Option<u64>,
    pub rto_max_ms: Option<u64>,
    pub unavailable_ms: u64,
}

pub(super) fn measure(h: &History, threshold_ms: u64) -> Availability {
    let faults = rtos(h);
    let gaps = gaps(h, threshold_ms);
    let unavailable_ms = gaps.iter().map(|g| g.to_ms - g.from_ms).sum();
    let per_kind = per_kind(&faults, &gaps);
    Availability {
        gap_threshold_ms: threshold_ms,
        faults,
        gaps,
        unavailable_ms,
        per_kind,
    }
}

/// (start, end) of every acknowledged write, sorted by start.
fn acked(h: &History) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = h
        .ops
        .iter()
        .filter(|o| o.kind == OpKind::Write && o.outcome == Outcome::Ok)
        .map(|o| (o.start_ms, o.end_ms))
        .collect();
    v.sort_unstable();
    v
}

fn rtos(h: &History) -> Vec<FaultRto> {
    let acked = acked(h);
    // earliest[i] = the earliest acknowledgement among acked[i..].
    let mut earliest = vec![u64::MAX; acked.len() + 1];
    for i in (0..acked.len()).rev() {
        earliest[i] = earliest[i + 1].min(acked[i].1);
    }
    h.faults
        .iter()
        .enumerate()
        .map(|(index, f)| {
            let i = acked.partition_point(|&(s, _)| s < f.start_ms);
            let ack = earliest[i];
            FaultRto {
                index,
                kind: f.kind.clone(),
                target: f.target.clone(),
                start_ms: f.start_ms,
                healed_ms: f.healed_ms,
                rto_ms: (ack != u64::MAX).then(|| ack.saturating_sub(f.start_ms)),
            }
        })
        .collect()
}

fn gaps(h: &History, threshold_ms: u64) -> Vec<Gap> {
    let writes = || h.ops.iter().filter(|o| o.kind == OpKind::Write);
    let (Some(first_try), Some(last_try)) = (
        writes().map(|o| o.start_ms).min(),
        writes().map(|o| o.end_ms).max(),
    ) else {
        return Vec::new();
    };
    let mut acks: Vec<u64> = acked(h).into_iter().map(|(_, e)| e).collect();
    acks.sort_unstable();
    // Spans without an acknowledgement: (from, to, open).
    let mut spans = Vec::new();
    match (acks.first(), acks.last()) {
        (Some(&first), Some(&last)) => {
            spans.push((first_try, first, true));
            spans.extend(acks.windows(2).map(|w| (w[0], w[1], false)));
            spans.push((last, last_try, true));
        }
        _ => spans.push((first_try, last_try, true)),
    }
    spans
        .into_iter()
        .filter(|&(a, b, _)| b > a && b - a > threshold_ms)
        .map(|(from_ms, to_ms, open)| {
            let fault = h
                .faults
                .iter()
                .enumerate()
                .filter(|(_, f)| f.start_ms <= to_ms)
                .max_by_key(|(i, f)| (f.start_ms, *i))
                .map(|(i, _)| i);
            Gap {
                from_ms,
                to_ms,
                fault,
                kind: fault.and_then(|i| h.faults.get(i)).map(|f| f.kind.clone()),
                open,
            }
        })
        .collect()
}

fn per_kind(faults: &[FaultRto], gaps: &[Gap]) -> Vec<KindStats> {
    let mut m: BTreeMap<&str, (KindStats, Vec<u64>)> = BTreeMap::new();
    for f in faults {
        let e = m.entry(&f.kind).or_insert_with(|| {
            let stats = KindStats {
                kind: f.kind.clone(),
                ..KindStats::default()
            };
            (stats, Vec::new())
        });
        e.0.injected += 1;
        if let Some(rto) = f.rto_ms {
            e.0.recovered += 1;
            e.1.push(rto);
        }
    }
    for g in gaps {
        if let Some(e) = g.kind.as_deref().and_then(|k| m.get_mut(k)) {
            e.0.unavailable_ms += g.to_ms - g.from_ms;
        }
    }
    m.into_values()
        .map(|(mut s, mut rtos)| {
            rtos.sort_unstable();
            s.rto_p50_ms = percentile(&rtos, 50);
            s.rto_p95_ms = percentile(&rtos, 95);
            s.rto_max_ms = rtos.last().copied();
            s
        })
        .collect()
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[u64], p: u32) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (sorted.len() * p as usize).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank() {
        assert_eq!(percentile(&[], 50), None);
        assert_eq!(percentile(&[7], 95), Some(7));
        let v: Vec<u64> = (1..=20).collect();
        assert_eq!(percentile(&v, 50), Some(10));
        assert_eq!(percentile(&v, 95), Some(19));
        assert_eq!(percentile(&v, 100), Some(20));
    }
}
