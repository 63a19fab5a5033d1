//! The synchronous standby set S with quorum k, the value of
//! `synchronous_standby_names`, and the quorum arithmetic that keeps every
//! acknowledged commit reachable by every possible promotion.
//!
//! Two sets matter at every instant: `/sync` (S_r, k_r), which decides who
//! may be promoted (any |S_r| - k_r + 1 members of S_r must report), and
//! `synchronous_standby_names` (S_p, k_p), which decides who acknowledges
//! (any k_p of S_p). Safety is: every promotion set meets every
//! acknowledgement set. Hazard: the functions here treat the primary itself
//! as holding every commit; a name in S that is the primary counts as
//! "has it".

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;

/// A member set with a quorum: S and k.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SyncSet {
    pub members: BTreeSet<String>,
    pub quorum: u32,
}

impl SyncSet {
    pub fn new<I, S>(members: I, quorum: u32) -> SyncSet
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        SyncSet {
            members: members.into_iter().map(Into::into).collect(),
            quorum,
        }
    }

    /// The empty set with k = 0: asynchronous replication, under which no
    /// standby is known to hold the acknowledged commits, so no automatic
    /// promotion is possible.
    pub fn no_promotion() -> SyncSet {
        SyncSet::default()
    }

    /// |S| - k + 1, the number of members whose final LSN a candidate
    /// needs; `None` when no promotion is possible (k = 0 or k > |S|).
    pub fn promotion_quorum(&self) -> Option<usize> {
        let k = self.quorum as usize;
        (k >= 1 && k <= self.members.len()).then(|| self.members.len() - k + 1)
    }

    /// Member names as `{a, b}`.
    pub fn names(&self) -> String {
        brace_list(self.members.iter())
    }
}

impl fmt::Display for SyncSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.promotion_quorum().is_none() {
            write!(f, "async (no promotion possible)")
        } else {
            write!(f, "ANY {} of {}", self.quorum, self.names())
        }
    }
}

/// `{a, b, c}`.
pub(crate) fn brace_list<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let list: Vec<&str> = names.map(String::as_str).collect();
    format!("{{{}}}", list.join(", "))
}

/// The value of `synchronous_standby_names` on the primary.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncStandbyNames {
    /// `''`: commits are acknowledged without any standby.
    Async,
    /// `'ANY 1 (*)'`: one acknowledgement from any standby at all. Used by a
    /// new primary that has no named standby to wait for, in strict mode.
    AnyStandby,
    /// `'ANY k (m1, m2, ...)'` by `application_name` (= member name).
    Quorum(SyncSet),
}

impl SyncStandbyNames {
    /// The names for a set: `Async` when the set allows no promotion.
    pub fn for_set(set: &SyncSet) -> SyncStandbyNames {
        if set.promotion_quorum().is_none() {
            SyncStandbyNames::Async
        } else {
            SyncStandbyNames::Quorum(set.clone())
        }
    }

    /// The text to put into `synchronous_standby_names`.
    pub fn to_postgres(&self) -> String {
        match self {
            SyncStandbyNames::Async => String::new(),
            SyncStandbyNames::AnyStandby => "ANY 1 (*)".to_string(),
            SyncStandbyNames::Quorum(set) => {
                let quoted: Vec<String> = set
                    .members
                    .iter()
                    .map(|m| format!("\"{}\"", m.replace('"', "\"\"")))
                    .collect();
                format!("ANY {} ({})", set.quorum, quoted.join(", "))
            }
        }
    }
}

impl fmt::Display for SyncStandbyNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncStandbyNames::Async => write!(f, "'' (asynchronous)"),
            other => write!(f, "'{}'", other.to_postgres()),
        }
    }
}

/// Whether every commit acknowledged under `names` on `primary` is held by
/// at least one member of every promotion set of `recorded`.
///
/// A promotion set P (|P| = |S_r| - k_r + 1) misses an ack set A exactly
/// when |A ∩ S_r| < k_r, so the rule is: every ack set holds at least k_r
/// members of S_r, counting the primary (which holds every commit).
pub fn acks_cover(names: &SyncStandbyNames, recorded: &SyncSet, primary: &str) -> bool {
    if recorded.promotion_quorum().is_none() {
        return true;
    }
    let min_inside = match names {
        SyncStandbyNames::Async | SyncStandbyNames::AnyStandby => 0,
        SyncStandbyNames::Quorum(p) => {
            let k_p = p.quorum as usize;
            if k_p > p.members.len() {
                return true; // nothing can ever be acknowledged
            }
            let outside = p
                .members
                .iter()
                .filter(|m| *m == primary || !recorded.members.contains(*m))
                .count();
            k_p.saturating_sub(outside)
        }
    };
    let primary_inside = usize::from(recorded.members.contains(primary));
    min_inside + primary_inside >= recorded.quorum as usize
}

/// Whether every promotion set of `new` contains a promotion set of `old`:
/// switching `/sync` from `old` to `new` never lets a smaller group promote.
pub fn at_least_as_strict(new: &SyncSet, old: &SyncSet) -> bool {
    let Some(p_new) = new.promotion_quorum() else {
        return true;
    };
    let Some(p_old) = old.promotion_quorum() else {
        return false;
    };
    let outside = new.members.difference(&old.members).count();
    p_new.saturating_sub(outside) >= p_old
}

/// Whether every promotion set of `set` contains a member of `flushed` or
/// the primary itself: then any promotion under `set` sees all WAL up to the
/// LSN that `flushed` have flushed past.
pub fn flushed_cover(set: &SyncSet, flushed: &BTreeSet<String>, primary: &str) -> bool {
    let Some(p) = set.promotion_quorum() else {
        return true;
    };
    let missing = set
        .members
        .iter()
        .filter(|m| *m != primary && !flushed.contains(*m))
        .count();
    missing < p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(members: &[&str], k: u32) -> SyncSet {
        SyncSet::new(members.iter().copied(), k)
    }

    fn q(members: &[&str], k: u32) -> SyncStandbyNames {
        SyncStandbyNames::Quorum(set(members, k))
    }

    #[test]
    fn promotion_quorum_is_size_minus_k_plus_one() {
        assert_eq!(set(&["a", "b"], 1).promotion_quorum(), Some(2));
        assert_eq!(set(&["a", "b", "c"], 2).promotion_quorum(), Some(2));
        assert_eq!(set(&["a"], 0).promotion_quorum(), None);
        assert_eq!(set(&["a"], 2).promotion_quorum(), None);
    }

    #[test]
    fn renders_postgres_values() {
        assert_eq!(q(&["n2", "n3"], 1).to_postgres(), r#"ANY 1 ("n2", "n3")"#);
        assert_eq!(SyncStandbyNames::Async.to_postgres(), "");
        assert_eq!(SyncStandbyNames::AnyStandby.to_postgres(), "ANY 1 (*)");
    }

    /// Same set on both sides is always safe.
    #[test]
    fn same_set_covers() {
        assert!(acks_cover(&q(&["b", "c"], 1), &set(&["b", "c"], 1), "a"));
        assert!(acks_cover(&q(&["b", "c"], 2), &set(&["b", "c"], 2), "a"));
    }

    /// Acks from a member outside /sync are not seen by promotion.
    #[test]
    fn member_outside_record_breaks_cover() {
        assert!(!acks_cover(&q(&["b", "c"], 1), &set(&["b"], 1), "a"));
        // ...unless the quorum forces an ack from inside as well
        assert!(acks_cover(&q(&["b", "c"], 2), &set(&["b"], 1), "a"));
    }

    /// A higher k in /sync than in the names lets single members promote.
    #[test]
    fn record_quorum_above_names_quorum_breaks_cover() {
        assert!(!acks_cover(&q(&["b", "c"], 1), &set(&["b", "c"], 2), "a"));
    }

    /// The primary in S counts as holding everything (just after failover).
    #[test]
    fn primary_in_record_counts() {
        assert!(acks_cover(&q(&["c"], 1), &set(&["a", "c"], 1), "a"));
        assert!(acks_cover(
            &SyncStandbyNames::AnyStandby,
            &set(&["a"], 1),
            "a"
        ));
        assert!(!acks_cover(&SyncStandbyNames::Async, &set(&["b"], 1), "a"));
        assert!(acks_cover(
            &SyncStandbyNames::Async,
            &SyncSet::no_promotion(),
            "a"
        ));
    }

    #[test]
    fn strictness_of_set_changes() {
        let bc = set(&["b", "c"], 1);
        let b = set(&["b"], 1);
        assert!(at_least_as_strict(&bc, &b), "adding a member is harder");
        assert!(!at_least_as_strict(&b, &bc), "removing a member is easier");
        assert!(at_least_as_strict(
            &set(&["b", "c"], 1),
            &set(&["b", "c"], 2)
        ));
        assert!(!at_least_as_strict(
            &set(&["b", "c"], 2),
            &set(&["b", "c"], 1)
        ));
        assert!(at_least_as_strict(&SyncSet::no_promotion(), &b));
        assert!(!at_least_as_strict(&b, &SyncSet::no_promotion()));
        assert!(
            !at_least_as_strict(&set(&["c"], 1), &b),
            "replacing is easier"
        );
    }

    #[test]
    fn flushed_cover_needs_one_flushed_member_per_promotion_set() {
        let bc = set(&["b", "c"], 1);
        let flushed = |names: &[&str]| names.iter().map(|s| s.to_string()).collect();
        assert!(flushed_cover(&bc, &flushed(&["b"]), "a"));
        assert!(!flushed_cover(&set(&["b", "c"], 2), &flushed(&["b"]), "a"));
        assert!(!flushed_cover(&set(&["a", "c"], 2), &flushed(&[]), "a"));
        assert!(flushed_cover(&set(&["a", "c"], 1), &flushed(&[]), "a"));
    }
}
