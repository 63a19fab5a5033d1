//! The leader's sync-set manager: one safe step at a time from the current
//! (`/sync`, `synchronous_standby_names`) pair toward the set of healthy
//! standbys, obeying the ordering rules of DESIGN.md:
//!
//! * a change that makes promotion harder goes to `/sync` first, then to
//!   `synchronous_standby_names`;
//! * a change that makes promotion easier goes to `synchronous_standby_names`
//!   first; `/sync` follows only once the members the new rule relies on
//!   have flushed past the primary's LSN at the moment of the change
//!   (`SyncNamesState::applied_at`).
//!
//! Hazard: every step keeps `acks_cover(names, /sync)` true; the one
//! exception is repairing a pair found unsafe (agent restart with a stale
//! config), which is done first and immediately.

use crate::local::{ReplicaStatus, SyncNamesState};
use crate::lsn::Lsn;
use crate::sync::{acks_cover, at_least_as_strict, flushed_cover, SyncSet, SyncStandbyNames};
use crate::view::DynamicConfig;
use std::collections::BTreeSet;

/// One step of the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncStep {
    /// Nothing to change.
    Idle(String),
    /// Change `synchronous_standby_names`.
    SetNames(SyncStandbyNames, String),
    /// Write `/sync` with this set.
    WriteSync(SyncSet, String),
    /// A step is needed but not yet allowed.
    Wait(String),
    /// A step waits only for streaming standbys to flush past an LSN, which
    /// they normally do within milliseconds: check again soon.
    WaitFlush(String),
}

/// Inputs of the planner.
#[derive(Clone, Debug)]
pub struct SyncInputs<'a> {
    /// The primary (this node).
    pub me: &'a str,
    /// What `/sync` says (normalized).
    pub recorded: &'a SyncSet,
    pub names: &'a SyncNamesState,
    /// Where to go; `None` = keep the current set (strict mode with no
    /// healthy standby).
    pub target: Option<SyncSet>,
    pub replicas: &'a [ReplicaStatus],
    pub allow_async_fallback: bool,
}

/// The target set: every healthy standby with k = min(sync_quorum, n);
/// with none, asynchronous if allowed, else `None` (keep blocking).
pub fn target_set(healthy: BTreeSet<String>, cfg: &DynamicConfig) -> Option<SyncSet> {
    if healthy.is_empty() {
        return cfg.allow_async_fallback.then(SyncSet::no_promotion);
    }
    let k = cfg.sync_quorum.max(1).min(healthy.len() as u32);
    Some(SyncSet {
        members: healthy,
        quorum: k,
    })
}

/// The `synchronous_standby_names` a new primary starts with: safe under
/// the recorded set (which may still name the new primary itself).
pub fn initial_names(recorded: &SyncSet, me: &str, allow_async: bool) -> SyncStandbyNames {
    let others: BTreeSet<String> = recorded
        .members
        .iter()
        .filter(|m| *m != me)
        .cloned()
        .collect();
    let k = recorded.quorum as usize;
    let names = if k >= 1 && others.len() >= k {
        SyncStandbyNames::Quorum(SyncSet::new(others, k as u32))
    } else if k >= 2 {
        // others.len() == k - 1 and we are in S ourselves
        SyncStandbyNames::Quorum(SyncSet::new(others, k as u32 - 1))
    } else if allow_async {
        SyncStandbyNames::Async
    } else {
        SyncStandbyNames::AnyStandby
    };
    debug_assert!(acks_cover(&names, recorded, me));
    names
}

fn names_quorum(names: &SyncStandbyNames) -> (BTreeSet<String>, u32) {
    match names {
        SyncStandbyNames::Async => (BTreeSet::new(), 0),
        SyncStandbyNames::AnyStandby => (BTreeSet::new(), 1),
        SyncStandbyNames::Quorum(s) => (s.members.clone(), s.quorum),
    }
}

/// The next step toward the target.
pub fn next_step(inp: &SyncInputs<'_>) -> SyncStep {
    let (me, r, p) = (inp.me, inp.recorded, &inp.names.names);
    if !acks_cover(p, r, me) {
        let fix = initial_names(r, me, inp.allow_async_fallback);
        let why = format!("synchronous_standby_names {p} is not covered by /sync {r}; repairing");
        return SyncStep::SetNames(fix, why);
    }
    let Some(t) = inp.target.clone() else {
        return SyncStep::Idle(format!(
            "no healthy synchronous standby: keeping /sync {r} and names {p}; \
             writes wait until a standby catches up (allow_async_fallback is off)"
        ));
    };
    let t_names = SyncStandbyNames::for_set(&t);
    if *r == t && *p == t_names {
        if t.promotion_quorum().is_none() {
            return SyncStep::Idle(
                "WARNING: replication is ASYNCHRONOUS (no healthy standby, \
                 allow_async_fallback): acknowledged commits can be lost on failover"
                    .into(),
            );
        }
        return SyncStep::Idle(format!("synchronous replication in place: {t}"));
    }
    let async_note = if t.promotion_quorum().is_none() {
        "WARNING: no healthy standby, falling back to ASYNCHRONOUS replication \
         (allow_async_fallback): commits acknowledged from now on can be lost on failover; "
    } else {
        ""
    };
    if *r != t && acks_cover(p, &t, me) && at_least_as_strict(&t, r) {
        let why = format!("{async_note}recording {t} in /sync first (promotion gets no easier)");
        return SyncStep::WriteSync(t, why);
    }
    if *p != t_names && acks_cover(&t_names, r, me) {
        let why = format!("{async_note}setting synchronous_standby_names to {t_names} for {t}");
        return SyncStep::SetNames(t_names, why);
    }
    if *r != t && acks_cover(p, &t, me) {
        return easier_record(inp, t);
    }
    union_step(inp, &t)
}

/// `/sync` → `t` makes promotion easier: allowed once the members `t`
/// relies on flushed past the LSN at which the current names took effect.
fn easier_record(inp: &SyncInputs<'_>, t: SyncSet) -> SyncStep {
    let Some(at) = inp.names.applied_at else {
        return SyncStep::SetNames(
            inp.names.names.clone(),
            "re-applying synchronous_standby_names to learn the LSN it took effect at".into(),
        );
    };
    let flushed = flushed_past(inp.replicas, at);
    if flushed_cover(&t, &flushed, inp.me) {
        let why = format!("{} flushed past {at}: recording {t} in /sync", t.names());
        return SyncStep::WriteSync(t, why);
    }
    let why = format!(
        "waiting for members of {} to flush past {at} before recording {t} in /sync",
        t.names()
    );
    let streaming = inp
        .replicas
        .iter()
        .any(|r| t.members.contains(&r.name) && !flushed.contains(&r.name));
    if streaming {
        SyncStep::WaitFlush(why)
    } else {
        SyncStep::Wait(why)
    }
}

/// Neither direct step is safe (e.g. one member replaced by another): record
/// the union of everything with k = 1 (every member must report: the
/// strictest rule), from which the target's names are always safe.
fn union_step(inp: &SyncInputs<'_>, t: &SyncSet) -> SyncStep {
    let (r, p) = (inp.recorded, &inp.names.names);
    let (p_members, _) = names_quorum(p);
    let mut members = r.members.clone();
    members.extend(t.members.iter().cloned());
    members.extend(p_members);
    let u = SyncSet { members, quorum: 1 };
    if u != *r && acks_cover(p, &u, inp.me) && at_least_as_strict(&u, r) {
        let why = format!("recording the union {u} in /sync on the way to {t}");
        return SyncStep::WriteSync(u, why);
    }
    SyncStep::Wait(format!(
        "no safe step from /sync {r} with names {p} to {t} yet"
    ))
}

fn flushed_past(replicas: &[ReplicaStatus], at: Lsn) -> BTreeSet<String> {
    replicas
        .iter()
        .filter(|r| r.flush_lsn >= at)
        .map(|r| r.name.clone())
        .collect()
}

#[cfg(test)]
#[path = "sync_plan_tests.rs"]
mod tests;
