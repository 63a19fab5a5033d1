//! A node's ids as sorted, merged inclusive ranges, queried by binary
//! search. Hazard: the ranges come from disk; reversed or overlapping ones
//! are normalized here, and nothing ever expands a range into its ids.

/// Sorted ids to inclusive ranges of consecutive ids, the form
/// `NodeContents::id_ranges` takes (duplicates collapse).
pub fn to_ranges(sorted: &[i64]) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = Vec::new();
    for &id in sorted {
        match out.last_mut() {
            Some(r) if id == r.1.saturating_add(1) => r.1 = id,
            Some(r) if id == r.1 => {}
            _ => out.push((id, id)),
        }
    }
    out
}

/// Sorted, disjoint, non-adjacent inclusive ranges.
pub(crate) struct IdSet {
    ranges: Vec<(i64, i64)>,
}

impl IdSet {
    pub(crate) fn from_ranges(raw: &[(i64, i64)]) -> IdSet {
        let mut sorted: Vec<(i64, i64)> = raw
            .iter()
            .map(|&(a, b)| if a <= b { (a, b) } else { (b, a) })
            .collect();
        sorted.sort_unstable();
        let mut ranges: Vec<(i64, i64)> = Vec::with_capacity(sorted.len());
        for (a, b) in sorted {
            match ranges.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => ranges.push((a, b)),
            }
        }
        IdSet { ranges }
    }

    pub(crate) fn contains(&self, id: i64) -> bool {
        let i = self.ranges.partition_point(|&(_, hi)| hi < id);
        self.ranges.get(i).is_some_and(|&(lo, _)| lo <= id)
    }

    /// How many ids the set holds.
    pub(crate) fn len(&self) -> u64 {
        self.ranges.iter().fold(0u64, |n, &(a, b)| {
            let width = u64::try_from(b as i128 - a as i128 + 1).unwrap_or(u64::MAX);
            n.saturating_add(width)
        })
    }

    /// The given ids that are not in the set (order kept).
    pub(crate) fn missing(&self, ids: &[i64]) -> Vec<i64> {
        ids.iter().copied().filter(|&i| !self.contains(i)).collect()
    }

    /// The given ids that are in the set (order kept).
    pub(crate) fn present(&self, ids: &[i64]) -> Vec<i64> {
        ids.iter().copied().filter(|&i| self.contains(i)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_and_searches() {
        let s = IdSet::from_ranges(&[(10, 12), (1, 3), (4, 5), (20, 20), (11, 15), (30, 25)]);
        assert_eq!(s.ranges, vec![(1, 5), (10, 15), (20, 20), (25, 30)]);
        assert_eq!(s.len(), 5 + 6 + 1 + 6);
        assert!(s.contains(1) && s.contains(5) && s.contains(20) && s.contains(27));
        assert!(!s.contains(0) && !s.contains(6) && !s.contains(16) && !s.contains(31));
        assert_eq!(s.missing(&[1, 6, 20, 21]), vec![6, 21]);
        assert_eq!(s.present(&[1, 6, 20, 21]), vec![1, 20]);
    }

    #[test]
    fn ranges_from_ids() {
        assert_eq!(to_ranges(&[]), vec![]);
        assert_eq!(
            to_ranges(&[1, 2, 2, 3, 5, 7, 8]),
            vec![(1, 3), (5, 5), (7, 8)]
        );
    }

    #[test]
    fn empty_and_extreme() {
        let s = IdSet::from_ranges(&[]);
        assert!(!s.contains(0));
        assert_eq!(s.len(), 0);
        let s = IdSet::from_ranges(&[(i64::MIN, i64::MAX)]);
        assert!(s.contains(0));
        assert_eq!(s.len(), u64::MAX);
    }
}
