//! The offline checker: reads a [`History`] and decides whether the run kept
//! pgha's promises. Pure: no I/O, no clock, so `pgha-testkit check
//! history.json` gives exactly the verdict the run itself printed.
//!
//! Rules (docs/reliability.md explains each one):
//! 1. lost: every acknowledged (`Ok`) write is on the final primary and on
//!    every standby; a `Failed` write found on any node is a *phantom*;
//!    `Unknown` writes may be present or absent.
//! 2. duplicated: no id is stored twice on any node.
//! 3. split brain: every `Ok` write's (timeline, lsn) lies on the final
//!    primary's timeline history, and no two nodes acknowledged writes at
//!    overlapping times on different timelines.
//! 4. stale reads: a session always sees its own last acknowledged write.
//! 5. availability: time to the next acknowledged write after each fault
//!    (RTO), and gaps without any acknowledged write (informational).
//!
//! Hazards: the history is input from disk, so nothing here may panic on
//! it; a history the checker cannot judge (no final state, an `Ok` write
//! without its node/timeline/LSN, an unparsable LSN) is reported under
//! `problems`, which fails the check: a proof with a hole is no proof.
//! Id sets are kept as ranges and binary-searched, never expanded, so a
//! bogus range cannot blow up memory.

mod availability;
mod ids;
mod sample;
mod split_brain;

use std::collections::{BTreeSet, HashSet};

use serde::{Deserialize, Serialize};

use super::history::{History, OpKind, Outcome};
pub use availability::{Availability, FaultRto, Gap, KindStats, DEFAULT_GAP_MS};
pub use ids::to_ranges;
use ids::IdSet;
pub use sample::{sample_history, sample_history_for};
pub use split_brain::{SplitBrain, WriteRef};

/// Everything the checker found. `ok()` is the verdict.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CheckReport {
    pub seed: u64,
    /// The command that replays the run (copied from the history).
    pub replay: String,
    pub nodes: Vec<String>,
    pub duration_ms: u64,
    pub writes: OutcomeCounts,
    pub reads: OutcomeCounts,
    /// Per node: acknowledged ids missing from it.
    pub lost: Vec<NodeIds>,
    /// Per node: ids of writes reported `Failed` that exist on it anyway.
    pub phantom: Vec<NodeIds>,
    /// Per node: ids stored more than once.
    pub duplicated: Vec<NodeIds>,
    pub split_brain: Vec<SplitBrain>,
    pub stale_reads: Vec<StaleRead>,
    pub availability: Availability,
    /// The history cannot be fully judged; fails the check.
    pub problems: Vec<String>,
    /// Worth a look, but not a broken promise.
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeCounts {
    pub total: u64,
    pub ok: u64,
    pub failed: u64,
    pub unknown: u64,
}

/// Ids (sorted) that break a rule on one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIds {
    pub node: String,
    pub ids: Vec<i64>,
}

/// A read that did not see its session's last acknowledged write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaleRead {
    pub client: u32,
    pub session: u32,
    pub start_ms: u64,
    pub end_ms: u64,
    pub node: Option<String>,
    /// The id the session had written last and did not see.
    pub expect: Option<i64>,
}

impl CheckReport {
    /// True when no promise was broken and the history could be judged.
    pub fn ok(&self) -> bool {
        self.lost_count() == 0
            && self.phantom.is_empty()
            && self.duplicated.is_empty()
            && self.split_brain.is_empty()
            && self.stale_reads.is_empty()
            && self.problems.is_empty()
    }

    /// Distinct acknowledged ids missing from at least one node.
    pub fn lost_count(&self) -> usize {
        distinct(&self.lost)
    }

    /// Distinct failed ids found on at least one node.
    pub fn phantom_count(&self) -> usize {
        distinct(&self.phantom)
    }

    /// Distinct ids stored twice on at least one node.
    pub fn duplicated_count(&self) -> usize {
        distinct(&self.duplicated)
    }

    /// Split-brain findings (each names the writes or the first pair
    /// involved; one finding may cover many writes).
    pub fn split_brain_count(&self) -> usize {
        self.split_brain.len()
    }

    /// One line per broken rule, empty when `ok()`.
    pub fn violations(&self) -> Vec<String> {
        let mut out = Vec::new();
        let counts = [
            ("acknowledged writes lost", self.lost_count()),
            ("failed writes present (phantom)", self.phantom_count()),
            ("ids duplicated", self.duplicated_count()),
            ("split-brain findings", self.split_brain_count()),
            ("stale reads", self.stale_reads.len()),
        ];
        for (what, n) in counts {
            if n > 0 {
                out.push(format!("{n} {what}"));
            }
        }
        out.extend(self.problems.iter().map(|p| format!("problem: {p}")));
        out
    }
}

fn distinct(per_node: &[NodeIds]) -> usize {
    let all: BTreeSet<i64> = per_node
        .iter()
        .flat_map(|n| n.ids.iter().copied())
        .collect();
    all.len()
}

/// Judge one history.
pub fn check(h: &History) -> CheckReport {
    let mut r = CheckReport {
        seed: h.seed,
        replay: h.replay.clone(),
        nodes: h.nodes.clone(),
        duration_ms: h.duration_ms,
        writes: count(h, OpKind::Write),
        reads: count(h, OpKind::Read),
        ..CheckReport::default()
    };
    check_unique_ids(h, &mut r);
    check_contents(h, &mut r);
    split_brain::check(h, &mut r);
    r.stale_reads = stale_reads(h);
    r.availability = availability::measure(h, DEFAULT_GAP_MS);
    r
}

fn count(h: &History, kind: OpKind) -> OutcomeCounts {
    let mut c = OutcomeCounts::default();
    for op in h.ops.iter().filter(|o| o.kind == kind) {
        c.total += 1;
        match op.outcome {
            Outcome::Ok => c.ok += 1,
            Outcome::Failed(_) => c.failed += 1,
            Outcome::Unknown(_) => c.unknown += 1,
        }
    }
    c
}

/// Two write ops with one id would make every other rule ambiguous.
fn check_unique_ids(h: &History, r: &mut CheckReport) {
    let mut seen = HashSet::new();
    let mut reused = BTreeSet::new();
    for op in h.ops.iter().filter(|o| o.kind == OpKind::Write) {
        if !seen.insert(op.id) {
            reused.insert(op.id);
        }
    }
    if !reused.is_empty() {
        r.problems.push(format!(
            "{} ids were written by more than one operation (first: {:?})",
            reused.len(),
            reused.iter().take(5).collect::<Vec<_>>()
        ));
    }
}

/// Rules 1 and 2 against the final contents of every node.
fn check_contents(h: &History, r: &mut CheckReport) {
    let Some(fs) = &h.final_state else {
        r.problems
            .push("no final state: the run ended before the cluster settled".into());
        return;
    };
    let acked: Vec<i64> = write_ids(h, |o| matches!(o, Outcome::Ok));
    let failed: Vec<i64> = write_ids(h, |o| matches!(o, Outcome::Failed(_)));
    let mut attempted: Vec<i64> = h
        .ops
        .iter()
        .filter(|o| o.kind == OpKind::Write)
        .map(|o| o.id)
        .collect();
    attempted.sort_unstable();
    attempted.dedup();

    if !fs.nodes.iter().any(|n| n.node == fs.primary) {
        r.problems.push(format!(
            "the final primary {} has no recorded contents",
            fs.primary
        ));
    }
    for name in &h.nodes {
        if !fs.nodes.iter().any(|n| &n.node == name) {
            r.warnings
                .push(format!("{name}: contents not collected at the end"));
        }
    }
    for n in &fs.nodes {
        let is_final_primary = n.node == fs.primary;
        if n.role == "primary" && !is_final_primary {
            r.problems.push(format!(
                "{} reports itself primary at the end, but {} is the final primary",
                n.node, fs.primary
            ));
        }
        if !is_final_primary && n.role != "standby" {
            r.warnings.push(format!(
                "{}: role {:?} at the end, its contents were not checked",
                n.node, n.role
            ));
            continue;
        }
        let set = IdSet::from_ranges(&n.id_ranges);
        push_nonempty(&mut r.lost, &n.node, set.missing(&acked));
        push_nonempty(&mut r.phantom, &n.node, set.present(&failed));
        let mut dups = n.duplicates.clone();
        dups.sort_unstable();
        dups.dedup();
        push_nonempty(&mut r.duplicated, &n.node, dups);
        let foreign = set
            .len()
            .saturating_sub(set.present(&attempted).len() as u64);
        if foreign > 0 {
            r.problems.push(format!(
                "{}: {foreign} ids present that no client ever wrote",
                n.node
            ));
        }
    }
}

fn write_ids(h: &History, pick: impl Fn(&Outcome) -> bool) -> Vec<i64> {
    let mut ids: Vec<i64> = h
        .ops
        .iter()
        .filter(|o| o.kind == OpKind::Write && pick(&o.outcome))
        .map(|o| o.id)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

fn push_nonempty(out: &mut Vec<NodeIds>, node: &str, ids: Vec<i64>) {
    if !ids.is_empty() {
        out.push(NodeIds {
            node: node.to_string(),
            ids,
        });
    }
}

/// Rule 4: an acknowledged read that did not see the session's last write.
fn stale_reads(h: &History) -> Vec<StaleRead> {
    h.ops
        .iter()
        .filter(|o| o.kind == OpKind::Read && o.outcome == Outcome::Ok && o.saw == Some(false))
        .map(|o| StaleRead {
            client: o.client,
            session: o.session,
            start_ms: o.start_ms,
            end_ms: o.end_ms,
            node: o.node.clone(),
            expect: o.expect,
        })
        .collect()
}
