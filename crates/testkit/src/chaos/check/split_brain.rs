//! Rule 3: no two nodes acknowledged writes on diverging histories.
//!
//! Three checks on the acknowledged (`Ok`) writes:
//! - off history: a write on timeline T at LSN l is on the final primary's
//!   history only if T is the final timeline, or T is an ancestor whose
//!   switch LSN is greater than l (WAL at or past the switch point on T
//!   was cut off by the promotion that ended T);
//! - concurrent primaries: a write acknowledged on timeline T that began
//!   after some write on a later timeline T' > T had already been
//!   acknowledged. Real time then says the old primary took a write after
//!   the new one did, while the history puts all of T before T': two
//!   primaries were accepting writes at once. (Merely overlapping client
//!   intervals prove nothing: a write sent through the proxy while it waits
//!   for the new primary spans the whole failover.);
//! - shared timeline: one timeline with writes from two nodes. Every
//!   timeline is created by exactly one promotion, so this is two nodes
//!   promoting to the same timeline number: a split brain that the LSN test
//!   cannot see.
//!
//! Hazard: findings are grouped (per node and timeline, per pair of
//! primaries) so a long split brain yields a few entries, not thousands,
//! and one bad write can appear in more than one finding: count findings,
//! not writes.

use std::collections::BTreeMap;

use pgha_core::Lsn;
use serde::{Deserialize, Serialize};

use super::CheckReport;
use crate::chaos::history::{History, Op, OpKind, Outcome};

/// One acknowledged write, as the checker cites it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteRef {
    pub id: i64,
    pub client: u32,
    pub node: String,
    pub timeline: u32,
    pub lsn: String,
    pub start_ms: u64,
    pub end_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "rule")]
pub enum SplitBrain {
    /// Writes acknowledged by `node` on `timeline` that the final history
    /// does not contain.
    OffHistory {
        node: String,
        timeline: u32,
        /// Where the final history left `timeline`, if it passed through it.
        switch_lsn: Option<String>,
        final_timeline: u32,
        writes: Vec<WriteRef>,
    },
    /// `second`, on an earlier timeline, began after `first`, on a later
    /// timeline, had been acknowledged (the earliest such pair); `pairs`
    /// counts the writes like `second` between these two (node, timeline)s.
    ConcurrentPrimaries {
        first: WriteRef,
        second: WriteRef,
        pairs: u64,
    },
    /// Writes acknowledged on one timeline by more than one node.
    SharedTimeline {
        timeline: u32,
        /// Per node: how many writes it acknowledged on this timeline, and
        /// its first one; the node with the most writes first (most likely
        /// the timeline's rightful owner).
        nodes: Vec<(String, u64, WriteRef)>,
    },
}

/// Acknowledged writes that say where they committed; the others are
/// reported as problems (they cannot be placed on any history).
fn placed_writes(h: &History, r: &mut CheckReport) -> Vec<(WriteRef, Lsn)> {
    let mut out = Vec::new();
    let (mut unplaced, mut bad_lsn) = (Vec::new(), Vec::new());
    let acked = h
        .ops
        .iter()
        .filter(|o| o.kind == OpKind::Write && o.outcome == Outcome::Ok);
    for op in acked {
        match place(op) {
            Some((w, Some(lsn))) => out.push((w, lsn)),
            Some((w, None)) => bad_lsn.push(w.id),
            None => unplaced.push(op.id),
        }
    }
    if !unplaced.is_empty() {
        r.problems.push(format!(
            "{} acknowledged writes lack node, timeline or LSN (first ids: {:?})",
            unplaced.len(),
            &unplaced[..unplaced.len().min(5)]
        ));
    }
    if !bad_lsn.is_empty() {
        r.problems.push(format!(
            "{} acknowledged writes have an unparsable LSN (first ids: {:?})",
            bad_lsn.len(),
            &bad_lsn[..bad_lsn.len().min(5)]
        ));
    }
    out.sort_by_key(|(w, _)| (w.start_ms, w.end_ms, w.id));
    out
}

fn place(op: &Op) -> Option<(WriteRef, Option<Lsn>)> {
    let (node, timeline, lsn) = (op.node.as_ref()?, op.timeline?, op.lsn.as_ref()?);
    let w = WriteRef {
        id: op.id,
        client: op.client,
        node: node.clone(),
        timeline,
        lsn: lsn.clone(),
        start_ms: op.start_ms,
        end_ms: op.end_ms,
    };
    Some((w, lsn.parse().ok()))
}

pub(super) fn check(h: &History, r: &mut CheckReport) {
    let writes = placed_writes(h, r);
    off_history(h, &writes, r);
    concurrent_primaries(&writes, r);
    shared_timelines(&writes, r);
}

fn off_history(h: &History, writes: &[(WriteRef, Lsn)], r: &mut CheckReport) {
    // Without a final state the contents check has already said so.
    let Some(fs) = &h.final_state else { return };
    let mut switches: BTreeMap<u32, (Lsn, String)> = BTreeMap::new();
    for sw in &fs.timeline_history {
        match sw.switch_lsn.parse::<Lsn>() {
            Ok(lsn) => {
                switches.insert(sw.timeline, (lsn, sw.switch_lsn.clone()));
            }
            Err(e) => r.problems.push(format!("final timeline history: {e}")),
        }
    }
    let mut groups: BTreeMap<(String, u32), Vec<WriteRef>> = BTreeMap::new();
    for (w, lsn) in writes {
        let on_history = w.timeline == fs.timeline
            || (w.timeline < fs.timeline
                && switches.get(&w.timeline).is_some_and(|(sw, _)| sw > lsn));
        if !on_history {
            let key = (w.node.clone(), w.timeline);
            groups.entry(key).or_default().push(w.clone());
        }
    }
    for ((node, timeline), writes) in groups {
        r.split_brain.push(SplitBrain::OffHistory {
            node,
            timeline,
            switch_lsn: switches.get(&timeline).map(|(_, s)| s.clone()),
            final_timeline: fs.timeline,
            writes,
        });
    }
}

/// For each timeline, the earliest acknowledgement on any later timeline;
/// a write on the earlier timeline that began after it is out of order.
fn concurrent_primaries(writes: &[(WriteRef, Lsn)], r: &mut CheckReport) {
    type Key = (String, u32, String, u32);
    let mut by_tl: BTreeMap<u32, Vec<&WriteRef>> = BTreeMap::new();
    for (w, _) in writes {
        by_tl.entry(w.timeline).or_default().push(w);
    }
    let mut groups: BTreeMap<Key, (WriteRef, WriteRef, u64)> = BTreeMap::new();
    // The earliest-acknowledged write on the timelines seen so far (all later).
    let mut newer: Option<&WriteRef> = None;
    for ws in by_tl.values().rev() {
        if let Some(first) = newer {
            for w in ws.iter().filter(|w| w.start_ms > first.end_ms) {
                let key = (
                    first.node.clone(),
                    first.timeline,
                    w.node.clone(),
                    w.timeline,
                );
                let g = groups
                    .entry(key)
                    .or_insert_with(|| (first.clone(), (*w).clone(), 0));
                if w.start_ms < g.1.start_ms {
                    g.1 = (*w).clone();
                }
                g.2 += 1;
            }
        }
        if let Some(e) = ws.iter().min_by_key(|w| (w.end_ms, w.id)) {
            if newer.is_none_or(|n| e.end_ms < n.end_ms) {
                newer = Some(e);
            }
        }
    }
    let mut found: Vec<_> = groups.into_values().collect();
    found.sort_by_key(|(a, b, _)| (b.start_ms, a.end_ms));
    for (first, second, pairs) in found {
        r.split_brain.push(SplitBrain::ConcurrentPrimaries {
            first,
            second,
            pairs,
        });
    }
}

fn shared_timelines(writes: &[(WriteRef, Lsn)], r: &mut CheckReport) {
    let mut by_tl: BTreeMap<u32, BTreeMap<String, (u64, WriteRef)>> = BTreeMap::new();
    for (w, _) in writes {
        by_tl
            .entry(w.timeline)
            .or_default()
            .entry(w.node.clone())
            .or_insert_with(|| (0, w.clone()))
            .0 += 1;
    }
    for (timeline, nodes) in by_tl {
        if nodes.len() > 1 {
            let mut nodes: Vec<_> = nodes.into_iter().map(|(n, (c, w))| (n, c, w)).collect();
            nodes.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            r.split_brain
                .push(SplitBrain::SharedTimeline { timeline, nodes });
        }
    }
}
