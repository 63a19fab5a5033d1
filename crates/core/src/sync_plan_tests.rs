//! Tests of the sync-set planner: single rules, then an exhaustive walk over
//! every small (/sync, names, target) triple checking safety at each step
//! and that the target is reached.

use super::*;
use crate::sync::flushed_cover;

fn set(members: &[&str], k: u32) -> SyncSet {
    SyncSet::new(members.iter().copied(), k)
}

fn names(members: &[&str], k: u32) -> SyncStandbyNames {
    SyncStandbyNames::Quorum(set(members, k))
}

fn replicas(flushed: &[(&str, u64)]) -> Vec<ReplicaStatus> {
    flushed
        .iter()
        .map(|(n, l)| ReplicaStatus {
            name: n.to_string(),
            flush_lsn: Lsn(*l),
        })
        .collect()
}

fn step(r: &SyncSet, p: &SyncStandbyNames, t: Option<SyncSet>, reps: &[ReplicaStatus]) -> SyncStep {
    let st = SyncNamesState {
        names: p.clone(),
        applied_at: Some(Lsn(100)),
    };
    next_step(&SyncInputs {
        me: "a",
        recorded: r,
        names: &st,
        target: t,
        replicas: reps,
        allow_async_fallback: false,
    })
}

/// Adding a member: /sync first.
#[test]
fn adding_a_member_writes_sync_first() {
    let s = step(
        &set(&["b"], 1),
        &names(&["b"], 1),
        Some(set(&["b", "c"], 1)),
        &[],
    );
    assert!(
        matches!(s, SyncStep::WriteSync(ref t, _) if *t == set(&["b", "c"], 1)),
        "{s:?}"
    );
}

/// Removing a member: names first, then /sync once the rest flushed.
#[test]
fn removing_a_member_changes_names_first_then_waits_for_flush() {
    let bc = set(&["b", "c"], 1);
    let s = step(&bc, &names(&["b", "c"], 1), Some(set(&["b"], 1)), &[]);
    assert!(
        matches!(s, SyncStep::SetNames(ref n, _) if *n == names(&["b"], 1)),
        "{s:?}"
    );
    let lagging = replicas(&[("b", 99)]);
    let s = step(&bc, &names(&["b"], 1), Some(set(&["b"], 1)), &lagging);
    assert!(
        matches!(s, SyncStep::WaitFlush(ref w) if w.contains("flush past 0/64")),
        "{s:?}"
    );
    let caught_up = replicas(&[("b", 100)]);
    let s = step(&bc, &names(&["b"], 1), Some(set(&["b"], 1)), &caught_up);
    assert!(
        matches!(s, SyncStep::WriteSync(ref t, _) if *t == set(&["b"], 1)),
        "{s:?}"
    );
}

/// With no healthy standby and no fallback, keep everything (writes block).
#[test]
fn no_target_keeps_the_set() {
    let s = step(&set(&["b"], 1), &names(&["b"], 1), None, &[]);
    assert!(
        matches!(s, SyncStep::Idle(ref w) if w.contains("writes wait")),
        "{s:?}"
    );
}

/// Async fallback: /sync to "no promotion" first, then names to ''.
#[test]
fn async_fallback_records_no_promotion_first() {
    let s = step(
        &set(&["b"], 1),
        &names(&["b"], 1),
        Some(SyncSet::no_promotion()),
        &[],
    );
    assert!(
        matches!(s, SyncStep::WriteSync(ref t, ref w)
        if *t == SyncSet::no_promotion() && w.contains("ASYNCHRONOUS")),
        "{s:?}"
    );
    let s = step(
        &SyncSet::no_promotion(),
        &names(&["b"], 1),
        Some(SyncSet::no_promotion()),
        &[],
    );
    assert!(
        matches!(s, SyncStep::SetNames(SyncStandbyNames::Async, _)),
        "{s:?}"
    );
}

/// Unsafe pair found (e.g. stale config after restart): repaired at once.
#[test]
fn unsafe_pair_is_repaired_first() {
    let s = step(
        &set(&["b"], 1),
        &SyncStandbyNames::Async,
        Some(set(&["b"], 1)),
        &[],
    );
    assert!(
        matches!(s, SyncStep::SetNames(ref n, _) if *n == names(&["b"], 1)),
        "{s:?}"
    );
}

/// Unknown applied_at: re-apply the same names to learn it.
#[test]
fn unknown_checkpoint_reapplies_names() {
    let st = SyncNamesState {
        names: names(&["b"], 1),
        applied_at: None,
    };
    let r = set(&["b", "c"], 1);
    let s = next_step(&SyncInputs {
        me: "a",
        recorded: &r,
        names: &st,
        target: Some(set(&["b"], 1)),
        replicas: &[],
        allow_async_fallback: false,
    });
    assert!(
        matches!(s, SyncStep::SetNames(ref n, _) if *n == names(&["b"], 1)),
        "{s:?}"
    );
}

#[test]
fn initial_names_after_failover_exclude_the_new_primary() {
    assert_eq!(
        initial_names(&set(&["a", "c"], 1), "a", false),
        names(&["c"], 1)
    );
    assert_eq!(
        initial_names(&set(&["a"], 1), "a", false),
        SyncStandbyNames::AnyStandby
    );
    assert_eq!(
        initial_names(&set(&["a"], 1), "a", true),
        SyncStandbyNames::Async
    );
    assert_eq!(
        initial_names(&set(&["a", "c"], 2), "a", false),
        names(&["c"], 1)
    );
    assert_eq!(
        initial_names(&SyncSet::no_promotion(), "a", false),
        SyncStandbyNames::AnyStandby
    );
}

#[test]
fn target_is_all_healthy_with_clamped_quorum() {
    let cfg = DynamicConfig {
        sync_quorum: 2,
        ..Default::default()
    };
    let healthy: BTreeSet<String> = ["b".to_string()].into();
    assert_eq!(target_set(healthy, &cfg), Some(set(&["b"], 1)));
    assert_eq!(target_set(BTreeSet::new(), &cfg), None);
    let fallback = DynamicConfig {
        allow_async_fallback: true,
        ..Default::default()
    };
    assert_eq!(
        target_set(BTreeSet::new(), &fallback),
        Some(SyncSet::no_promotion())
    );
}

fn subsets(universe: &[&str]) -> Vec<Vec<String>> {
    (0..1u32 << universe.len())
        .map(|bits| {
            (0..universe.len())
                .filter(|i| bits & (1 << i) != 0)
                .map(|i| universe[i].to_string())
                .collect()
        })
        .collect()
}

fn all_sets(universe: &[&str]) -> Vec<SyncSet> {
    let mut out = vec![SyncSet::no_promotion()];
    for s in subsets(universe) {
        for k in 1..=s.len() as u32 {
            out.push(SyncSet::new(s.clone(), k));
        }
    }
    out
}

fn all_names() -> Vec<SyncStandbyNames> {
    let mut out = vec![SyncStandbyNames::Async, SyncStandbyNames::AnyStandby];
    for s in all_sets(&["b", "c", "d"]) {
        if s.promotion_quorum().is_some() {
            out.push(SyncStandbyNames::Quorum(s));
        }
    }
    out
}

/// Walk the planner from every safe state to every target with all
/// replicas flushed (liveness), and with none flushed (every /sync write
/// must then be stricter or covered by the primary itself).
#[test]
fn exhaustive_walk_is_safe_and_reaches_every_target() {
    let all_flushed = replicas(&[("b", 100), ("c", 100), ("d", 100)]);
    let mut targets: Vec<Option<SyncSet>> = vec![None];
    targets.extend(all_sets(&["b", "c", "d"]).into_iter().map(Some));
    for r0 in all_sets(&["a", "b", "c", "d"]) {
        for p0 in all_names() {
            if !acks_cover(&p0, &r0, "a") {
                continue;
            }
            for t in &targets {
                walk(&r0, &p0, t, &all_flushed, true);
                walk(&r0, &p0, t, &[], false);
            }
        }
    }
}

fn walk(
    r0: &SyncSet,
    p0: &SyncStandbyNames,
    t: &Option<SyncSet>,
    reps: &[ReplicaStatus],
    live: bool,
) {
    let (mut r, mut p) = (r0.clone(), p0.clone());
    for _ in 0..6 {
        match step(&r, &p, t.clone(), reps) {
            SyncStep::Idle(_) => {
                if let Some(t) = t {
                    assert_eq!((&r, &p), (t, &SyncStandbyNames::for_set(t)));
                }
                return;
            }
            SyncStep::Wait(w) | SyncStep::WaitFlush(w) => {
                assert!(!live, "stuck from {r0}/{p0} to {t:?} at {r}/{p}: {w}");
                return;
            }
            SyncStep::SetNames(n, _) => p = n,
            SyncStep::WriteSync(new, _) => {
                let flushed = reps.iter().map(|r| r.name.clone()).collect();
                assert!(
                    at_least_as_strict(&new, &r) || flushed_cover(&new, &flushed, "a"),
                    "easier /sync {new} written over {r} without flush cover"
                );
                r = new;
            }
        }
        assert!(
            acks_cover(&p, &r, "a"),
            "unsafe state {r}/{p} from {r0}/{p0} to {t:?}"
        );
    }
    assert!(!live, "no convergence from {r0}/{p0} to {t:?}, at {r}/{p}");
}

/// In asynchronous fallback every loop says so, loudly.
#[test]
fn async_in_place_warns_every_loop() {
    let none = SyncSet::no_promotion();
    let s = step(&none, &SyncStandbyNames::Async, Some(none.clone()), &[]);
    assert!(
        matches!(s, SyncStep::Idle(ref w) if w.starts_with("WARNING")),
        "{s:?}"
    );
}
