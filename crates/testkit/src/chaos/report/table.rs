//! The markdown summary: verdict, one table of counts, one table per fault
//! kind (RTO p50/p95/max, unavailability), then the first few findings of
//! each broken rule. Markdown tables read fine in a terminal as they are.
//!
//! Hazard: findings can be huge (a split brain may involve thousands of
//! writes); every list here is cut to a few entries with a count of the rest.

use std::fmt::Write as _;

use super::human_ms;
use crate::chaos::check::{CheckReport, NodeIds, SplitBrain, WriteRef};
use crate::chaos::history::{History, OpKind};

/// Entries shown per finding list.
const SHOW: usize = 10;

/// The whole summary, ending in a newline.
pub fn summary_markdown(h: &History, r: &CheckReport) -> String {
    let mut s = String::new();
    let verdict = if r.ok() { "PASS" } else { "FAIL" };
    let _ = writeln!(s, "## Chaos run, seed {}: {verdict}\n", r.seed);
    let _ = writeln!(s, "Replay: `{}`\n", r.replay);
    let _ = writeln!(
        s,
        "Nodes: {}; network: {}; fault phase: {}; faults injected: {}.\n",
        r.nodes.join(", "),
        h.network,
        human_ms(r.duration_ms),
        h.faults.len()
    );
    counts_table(&mut s, h, r);
    kinds_table(&mut s, r);
    findings(&mut s, r);
    s
}

fn counts_table(s: &mut String, h: &History, r: &CheckReport) {
    let (w, rd, a) = (&r.writes, &r.reads, &r.availability);
    // The share of the time during which clients were writing.
    let writes = h.ops.iter().filter(|o| o.kind == OpKind::Write);
    let first = writes.clone().map(|o| o.start_ms).min().unwrap_or(0);
    let last = writes.map(|o| o.end_ms).max().unwrap_or(0);
    let span = last.saturating_sub(first).max(1);
    let rows: [(&str, String); 11] = [
        (
            "operations",
            format!(
                "{} ({} writes, {} reads)",
                w.total + rd.total,
                w.total,
                rd.total
            ),
        ),
        ("writes acknowledged", w.ok.to_string()),
        (
            "writes failed / unknown",
            format!("{} / {}", w.failed, w.unknown),
        ),
        (
            "reads ok / failed / unknown",
            format!("{} / {} / {}", rd.ok, rd.failed, rd.unknown),
        ),
        ("**lost** acknowledged writes", r.lost_count().to_string()),
        (
            "phantom writes (failed, yet present)",
            r.phantom_count().to_string(),
        ),
        ("duplicated ids", r.duplicated_count().to_string()),
        (
            "**split brain** (writes on diverging histories)",
            r.split_brain_count().to_string(),
        ),
        ("**stale reads**", r.stale_reads.len().to_string()),
        (
            "writes unavailable",
            format!(
                "{} ({:.1} % of the writing time) in {} gaps over {} ms",
                human_ms(a.unavailable_ms),
                a.unavailable_ms as f64 * 100.0 / span as f64,
                a.gaps.len(),
                a.gap_threshold_ms
            ),
        ),
        (
            "problems / warnings",
            format!("{} / {}", r.problems.len(), r.warnings.len()),
        ),
    ];
    let _ = writeln!(s, "| | |\n|---|---:|");
    for (k, v) in rows {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    s.push('\n');
}

fn kinds_table(s: &mut String, r: &CheckReport) {
    let kinds = &r.availability.per_kind;
    if kinds.is_empty() {
        s.push_str("No faults were injected.\n\n");
        return;
    }
    let _ = writeln!(
        s,
        "| fault kind | injected | recovered | RTO p50 | RTO p95 | RTO max | writes unavailable |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
    let opt = |v: Option<u64>| v.map_or_else(|| "never".to_string(), human_ms);
    for k in kinds {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            k.kind,
            k.injected,
            k.recovered,
            opt(k.rto_p50_ms),
            opt(k.rto_p95_ms),
            opt(k.rto_max_ms),
            human_ms(k.unavailable_ms)
        );
    }
    let unattributed: u64 = r
        .availability
        .gaps
        .iter()
        .filter(|g| g.kind.is_none())
        .map(|g| g.to_ms - g.from_ms)
        .sum();
    let total: u64 = kinds.iter().map(|k| k.injected).sum();
    let _ = writeln!(
        s,
        "| **all** | {total} | {} | | | | {} |\n",
        kinds.iter().map(|k| k.recovered).sum::<u64>(),
        human_ms(r.availability.unavailable_ms)
    );
    if unattributed > 0 {
        let _ = writeln!(
            s,
            "Unavailable before any fault: {}.\n",
            human_ms(unattributed)
        );
    }
    s.push_str(
        "RTO: from the fault's start to the first acknowledgement of a write that \
         started after it. Unavailable: gaps between consecutive acknowledgements \
         (all clients) above the threshold, charged to the latest fault begun before \
         the gap ended.\n\n",
    );
}

fn findings(s: &mut String, r: &CheckReport) {
    node_ids(s, "Lost acknowledged writes", &r.lost);
    node_ids(s, "Phantom writes (reported failed, present)", &r.phantom);
    node_ids(s, "Duplicated ids", &r.duplicated);
    if !r.split_brain.is_empty() {
        s.push_str("### Split brain\n\n");
        for f in r.split_brain.iter().take(SHOW) {
            let _ = writeln!(s, "- {}", split_brain_line(f));
        }
        more(s, r.split_brain.len());
    }
    if !r.stale_reads.is_empty() {
        s.push_str("### Stale reads\n\n");
        for sr in r.stale_reads.iter().take(SHOW) {
            let _ = writeln!(
                s,
                "- client {} session {} at {} ms on {}: did not see its own id {}",
                sr.client,
                sr.session,
                sr.start_ms,
                sr.node.as_deref().unwrap_or("?"),
                sr.expect.map_or_else(|| "?".into(), |e| e.to_string())
            );
        }
        more(s, r.stale_reads.len());
    }
    for (title, list) in [("Problems", &r.problems), ("Warnings", &r.warnings)] {
        if !list.is_empty() {
            let _ = writeln!(s, "### {title}\n");
            for p in list {
                let _ = writeln!(s, "- {p}");
            }
            s.push('\n');
        }
    }
}

fn node_ids(s: &mut String, title: &str, list: &[NodeIds]) {
    if list.is_empty() {
        return;
    }
    let _ = writeln!(s, "### {title}\n");
    for n in list {
        let shown: Vec<String> = n.ids.iter().take(SHOW).map(|i| i.to_string()).collect();
        let rest = n.ids.len().saturating_sub(SHOW);
        let tail = if rest > 0 {
            format!(" and {rest} more")
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "- {}: {} ids: {}{tail}",
            n.node,
            n.ids.len(),
            shown.join(", ")
        );
    }
    s.push('\n');
}

fn more(s: &mut String, n: usize) {
    if n > SHOW {
        let _ = writeln!(s, "- ... and {} more", n - SHOW);
    }
    s.push('\n');
}

fn write_ref(w: &WriteRef) -> String {
    format!(
        "id {} by {} on timeline {} at {} ({}..{} ms)",
        w.id, w.node, w.timeline, w.lsn, w.start_ms, w.end_ms
    )
}

fn split_brain_line(f: &SplitBrain) -> String {
    match f {
        SplitBrain::OffHistory {
            node,
            timeline,
            switch_lsn,
            final_timeline,
            writes,
        } => {
            let why = match switch_lsn {
                Some(sw) => format!("at or past the switch point {sw} of timeline {timeline}"),
                None => format!("timeline {timeline} is not in the final history (final timeline {final_timeline})"),
            };
            let first = writes.first().map(write_ref).unwrap_or_default();
            format!("{} writes by {node} on timeline {timeline} are off the final history: {why}; first: {first}", writes.len())
        }
        SplitBrain::ConcurrentPrimaries {
            first,
            second,
            pairs,
        } => format!(
            "{} writes acknowledged on an older timeline after a newer one had acknowledged {}; first: {}",
            pairs,
            write_ref(first),
            write_ref(second)
        ),
        SplitBrain::SharedTimeline { timeline, nodes } => {
            let who: Vec<String> = nodes
                .iter()
                .map(|(n, c, w)| format!("{n} ({c} writes, first {})", write_ref(w)))
                .collect();
            format!(
                "timeline {timeline} acknowledged writes from several nodes: {}",
                who.join("; ")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::check::{check, sample_history};

    #[test]
    fn clean_summary_has_the_tables() {
        let h = sample_history(21);
        let md = summary_markdown(&h, &check(&h));
        assert!(md.starts_with("## Chaos run, seed 21: PASS"));
        assert!(md.contains(&h.replay));
        assert!(md.contains("| **lost** acknowledged writes | 0 |"));
        assert!(md.contains("| fault kind | injected | recovered | RTO p50 | RTO p95 | RTO max |"));
        for f in &h.faults {
            assert!(md.contains(&format!("| {} |", f.kind)), "{}", f.kind);
        }
        assert!(!md.contains("### "), "no findings expected:\n{md}");
    }

    #[test]
    fn failing_summary_lists_findings_briefly() {
        let mut h = sample_history(22);
        let fs = h.final_state.as_mut().unwrap();
        // Every node loses everything: thousands of lost ids, ten shown.
        for n in &mut fs.nodes {
            n.id_ranges.clear();
        }
        let r = check(&h);
        let md = summary_markdown(&h, &r);
        assert!(md.starts_with("## Chaos run, seed 22: FAIL"));
        assert!(md.contains("### Lost acknowledged writes"));
        assert!(md.contains(" more\n"));
        assert!(md.len() < 20_000, "{} bytes", md.len());
    }
}
