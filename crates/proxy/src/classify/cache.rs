//! A bounded text -> analysis cache with two generations ("hot" and "cold"):
//! inserts go to hot; when hot is full it becomes cold and the old cold is
//! dropped; a hit in cold is promoted back to hot. That keeps what is used
//! and evicts in O(1) without per-hit bookkeeping, so a hit in hot is a read
//! lock, a hash lookup and an `Arc` clone.
//!
//! Hazard: every entry carries the catalogue generation it was computed
//! with; an entry from an older generation is a miss (user function
//! volatility may have changed).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::Analysis;

/// Texts longer than this are parsed every time rather than cached.
pub const MAX_KEY_BYTES: usize = 64 * 1024;

#[derive(Clone)]
struct Entry {
    generation: u64,
    analysis: Arc<Analysis>,
}

#[derive(Default)]
struct Generations {
    hot: HashMap<Box<str>, Entry>,
    hot_bytes: usize,
    cold: HashMap<Box<str>, Entry>,
}

/// See the module documentation.
pub struct TextCache {
    inner: RwLock<Generations>,
    max_entries: usize,
    max_bytes: usize,
}

impl TextCache {
    /// At most `max_entries` entries and about `max_bytes` of keys per
    /// generation (so at most twice that in all).
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        TextCache {
            inner: RwLock::new(Generations::default()),
            max_entries,
            max_bytes,
        }
    }

    pub fn get(&self, key: &str, generation: u64) -> Option<Arc<Analysis>> {
        let cold_hit = {
            let g = self.inner.read().unwrap_or_else(|p| p.into_inner());
            if let Some(e) = g.hot.get(key) {
                return (e.generation == generation).then(|| e.analysis.clone());
            }
            g.cold
                .get(key)
                .filter(|e| e.generation == generation)
                .cloned()
        }?;
        let analysis = cold_hit.analysis.clone();
        self.insert_entry(key, cold_hit);
        Some(analysis)
    }

    pub fn insert(&self, key: &str, generation: u64, analysis: Arc<Analysis>) {
        if key.len() <= MAX_KEY_BYTES {
            self.insert_entry(
                key,
                Entry {
                    generation,
                    analysis,
                },
            );
        }
    }

    fn insert_entry(&self, key: &str, entry: Entry) {
        let mut g = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if g.hot.len() >= self.max_entries || g.hot_bytes >= self.max_bytes {
            let hot = std::mem::take(&mut g.hot);
            g.cold = hot;
            g.hot_bytes = 0;
        }
        g.hot_bytes += key.len();
        g.hot.insert(key.into(), entry);
    }

    /// Forget `key` (both generations).
    pub fn remove(&self, key: &str) {
        let mut g = self.inner.write().unwrap_or_else(|p| p.into_inner());
        g.hot.remove(key);
        g.cold.remove(key);
    }

    /// Number of entries (both generations; an entry may be counted twice).
    pub fn len(&self) -> usize {
        let g = self.inner.read().unwrap_or_else(|p| p.into_inner());
        g.hot.len() + g.cold.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::TxEffect;

    fn a() -> Arc<Analysis> {
        Arc::new(Analysis {
            read_only: true,
            tx: TxEffect::None,
            session: Vec::new(),
            chain: false,
        })
    }

    #[test]
    fn bounded_and_keeps_recent() {
        let c = TextCache::new(2, 1 << 20);
        c.insert("a", 0, a());
        c.insert("b", 0, a());
        c.insert("c", 0, a()); // rotates: cold = {a, b}, hot = {c}
        assert!(c.get("a", 0).is_some()); // promoted
        c.insert("d", 0, a()); // rotates: cold = {c, a}, hot = {d}
        assert!(c.get("b", 0).is_none());
        assert!(c.get("a", 0).is_some());
        assert!(c.len() <= 4);
    }

    #[test]
    fn generation_mismatch_is_a_miss() {
        let c = TextCache::new(10, 1 << 20);
        c.insert("a", 1, a());
        assert!(c.get("a", 2).is_none());
        assert!(c.get("a", 1).is_some());
    }
}
