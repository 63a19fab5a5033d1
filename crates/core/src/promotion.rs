//! The promotion rule of DESIGN.md: a candidate may promote only with the
//! final LSN of at least |S| - k + 1 members of S (from `/sync`), each of
//! which has detached from the old primary for the current term, and with
//! no member it heard from ahead of it.
//!
//! A planned hand-over is the other way to know the candidate holds every
//! acknowledged commit: the last established leader shut down cleanly and
//! recorded in `/sync` where its WAL ends and whom it hands over to (see
//! [`crate::Handoff`]); that member may promote once its WAL reaches that
//! point, without the others' reports.
//!
//! Why it is safe: every acknowledged commit is on k members of S (the
//! leader keeps `synchronous_standby_names` and `/sync` in step, see
//! `sync.rs`), and any |S| - k + 1 members of S include one of them; a
//! detached member acknowledges nothing more, so once enough of them have
//! detached the old primary can no longer acknowledge anything. Hazard: the
//! check is only as good as the term comparison; a report is counted only
//! if `after_term` equals the current `/sync` term.

use crate::lsn::WalPos;
use crate::member::{Detached, MemberState};
use crate::view::ClusterView;

/// The candidate being checked.
#[derive(Clone, Copy, Debug)]
pub struct Candidate<'a> {
    pub name: &'a str,
    pub position: WalPos,
    pub detached: Option<Detached>,
}

/// Why a candidate may not promote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not enough final LSNs (or replication was asynchronous): nobody can
    /// promote safely right now; waiting may help.
    NotEnoughReports(String),
    /// Someone else is ahead: this candidate must step aside.
    Behind(String),
}

impl Refusal {
    pub fn reason(&self) -> &str {
        match self {
            Refusal::NotEnoughReports(r) | Refusal::Behind(r) => r,
        }
    }
}

/// The last established leader handed over to `cand` and `cand`'s WAL
/// reaches the final position it recorded (same timeline). Such a
/// candidate needs nobody's report, its own detach included: the old
/// leader's WAL ends at its shutdown checkpoint and it cannot write again
/// without the key, so the candidate's WAL cannot fall short of any
/// acknowledged commit whether or not it still streams from it.
pub fn handoff_reached(cand: Candidate<'_>, view: &ClusterView) -> bool {
    view.sync
        .as_ref()
        .and_then(|s| s.handoff_to(cand.name))
        .is_some_and(|fin| cand.position.timeline == fin.timeline && cand.position.lsn >= fin.lsn)
}

/// Check the promotion rule for `cand` against `view`. `Ok` carries the
/// explanation ("have the final LSN of ...").
pub fn check_promotion(cand: Candidate<'_>, view: &ClusterView) -> Result<String, Refusal> {
    let set = view.sync_set();
    let term = view.sync_term();
    if view.sync.as_ref().is_some_and(|s| s.leader == cand.name) {
        // No other leader was established after us: our WAL is the last
        // primary's (or that of a candidate that already passed this check).
        return Ok(format!(
            "I was the last established leader (term {term}): my WAL holds every \
             acknowledged commit"
        ));
    }
    if let Some(fin) = view.sync.as_ref().and_then(|s| s.handoff_to(cand.name)) {
        let old = view.sync.as_ref().map_or("", |s| s.leader.as_str());
        if handoff_reached(cand, view) {
            check_nobody_ahead(cand, view, term)?;
            return Ok(format!(
                "{old} handed over to me after a clean shutdown at {fin} (switchover): \
                 my {} holds all of its WAL",
                cand.position
            ));
        }
    }
    let Some(need) = set.promotion_quorum() else {
        return Err(Refusal::NotEnoughReports(
            "no safe candidate: /sync allows no promotion (replication was asynchronous or \
             the cluster never had a synchronous standby); use `pgha failover --allow-data-loss`"
                .to_string(),
        ));
    };
    // Count only reports at or behind us: any |S| - k + 1 of them include a
    // holder of every acknowledged commit, which we then hold too. A report
    // ahead of us makes us step aside if its member can promote, and is
    // otherwise (nofailover) just not counted.
    let mut have: Vec<(&str, WalPos)> = Vec::new();
    let mut missing: Vec<String> = Vec::new();
    for m in &set.members {
        match report(m, cand, view, term) {
            Ok(pos) if pos <= cand.position => have.push((m, pos)),
            Ok(pos) => missing.push(format!("{m} (nofailover) is ahead at {pos}")),
            Err(why) => missing.push(why),
        }
    }
    if have.len() < need {
        check_nobody_ahead(cand, view, term)?;
        return Err(Refusal::NotEnoughReports(format!(
            "no safe candidate: need the final LSN of {need} of {}, {}",
            set.names(),
            missing.join(", ")
        )));
    }
    check_nobody_ahead(cand, view, term)?;
    check_lag(cand, view)?;
    let list: Vec<String> = have.iter().map(|(n, p)| format!("{n} {p}")).collect();
    Ok(format!(
        "safe to promote: final LSNs of {} ({need} of {} needed), none ahead of my {}",
        list.join(", "),
        set.names(),
        cand.position
    ))
}

/// The final position `member` reported for `term`, or why there is none.
fn report(
    member: &str,
    cand: Candidate<'_>,
    view: &ClusterView,
    term: u64,
) -> Result<WalPos, String> {
    if member == cand.name {
        return match cand.detached {
            Some(d) if d.after_term == term => Ok(cand.position),
            _ => Err(format!("{member} (me) has not detached yet")),
        };
    }
    let Some(rec) = view.members.get(member) else {
        return Err(format!("{member} unreachable"));
    };
    match rec.detached {
        Some(d) if d.after_term == term => Ok(rec.position()),
        Some(d) => Err(format!(
            "{member} detached for term {} (current term {term})",
            d.after_term
        )),
        None => match &rec.streaming_from {
            Some(up) => Err(format!("{member} still streaming from {up}")),
            None => Err(format!("{member} has not reported a final LSN")),
        },
    }
}

/// Members whose position counts for "ahead": failover-eligible running
/// standbys and detached members (a stopped former primary's unacknowledged
/// tail does not count, nor does a nofailover member that could never take
/// over: stepping aside for it would leave the cluster without a primary).
fn comparable(rec: &MemberState, term: u64) -> bool {
    !rec.tags.nofailover
        && (rec.is_running_standby() || rec.detached.is_some_and(|d| d.after_term == term))
}

fn check_nobody_ahead(cand: Candidate<'_>, view: &ClusterView, term: u64) -> Result<(), Refusal> {
    let ahead: Vec<String> = view
        .members
        .values()
        .filter(|m| m.name != cand.name && comparable(m, term) && m.position() > cand.position)
        .map(|m| format!("{} is at {}", m.name, m.position()))
        .collect();
    if ahead.is_empty() {
        return Ok(());
    }
    Err(Refusal::Behind(format!(
        "not the best candidate: my {} is behind ({})",
        cand.position,
        ahead.join(", ")
    )))
}

fn check_lag(cand: Candidate<'_>, view: &ClusterView) -> Result<(), Refusal> {
    let (Some(max), Some(sync)) = (view.config.max_lag_on_failover, &view.sync) else {
        return Ok(());
    };
    let Some(old) = view
        .members
        .get(&sync.leader)
        .filter(|m| m.name != cand.name)
    else {
        return Ok(());
    };
    if old.timeline != cand.position.timeline {
        return Ok(());
    }
    let lag = old.flush_lsn.bytes_after(cand.position.lsn);
    if lag > max {
        return Err(Refusal::Behind(format!(
            "lagging {lag} bytes behind the last position {} published, more than \
             max_lag_on_failover ({max})",
            old.name
        )));
    }
    Ok(())
}
