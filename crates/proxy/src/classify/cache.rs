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
    /// The cache epoch the entry was inserted or last promoted in: the
    /// current one is "hot", the one before "cold", older ones are gone.
    epoch: u64,
}

/// Both generations in one map (the entry's `epoch` tells which), so a
/// lookup hashes the key once (SipHash, keyed at random: the keys are
/// client texts in a long-lived shared map), hit or miss, instead of once
/// per generation.
#[derive(Default)]
struct Generations {
    map: HashMap<Box<[u8]>, Entry>,
    epoch: u64,
    hot_len: usize,
    hot_bytes: usize,
}

impl Generations {
    /// Hot becomes cold; the old cold entries are dropped (a scan of the map
    /// once per `max_entries` inserts; the old two-map version dropped the
    /// old cold map at the same point).
    fn rotate(&mut self) {
        self.epoch += 1;
        self.hot_len = 0;
        self.hot_bytes = 0;
        let cold = self.epoch - 1;
        self.map.retain(|_, e| e.epoch >= cold);
    }
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

    pub fn get(&self, key: &[u8], generation: u64) -> Option<Arc<Analysis>> {
        let analysis = {
            let g = self.inner.read().unwrap_or_else(|p| p.into_inner());
            let e = g.map.get(key)?;
            if e.generation != generation || e.epoch + 1 < g.epoch {
                return None;
            }
            if e.epoch == g.epoch {
                return Some(e.analysis.clone());
            }
            e.analysis.clone()
        };
        // A cold hit: promote it to hot.
        self.insert(key, generation, analysis.clone());
        Some(analysis)
    }

    pub fn insert(&self, key: &[u8], generation: u64, analysis: Arc<Analysis>) {
        if key.len() > MAX_KEY_BYTES {
            return;
        }
        let mut g = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if g.hot_len >= self.max_entries || g.hot_bytes >= self.max_bytes {
            g.rotate();
        }
        let epoch = g.epoch;
        g.hot_len += 1;
        g.hot_bytes += key.len();
        g.map.insert(
            key.into(),
            Entry {
                generation,
                analysis,
                epoch,
            },
        );
    }

    /// Forget `key` (both generations).
    pub fn remove(&self, key: &[u8]) {
        let mut g = self.inner.write().unwrap_or_else(|p| p.into_inner());
        g.map.remove(key);
    }

    /// Number of entries (both generations).
    pub fn len(&self) -> usize {
        let g = self.inner.read().unwrap_or_else(|p| p.into_inner());
        g.map.len()
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
            standby_in_tx: true,
            primary_reason: None,
            serializable: false,
        })
    }

    #[test]
    fn bounded_and_keeps_recent() {
        let c = TextCache::new(2, 1 << 20);
        c.insert(b"a", 0, a());
        c.insert(b"b", 0, a());
        c.insert(b"c", 0, a()); // rotates: cold = {a, b}, hot = {c}
        assert!(c.get(b"a", 0).is_some()); // promoted
        c.insert(b"d", 0, a()); // rotates: cold = {c, a}, hot = {d}
        assert!(c.get(b"b", 0).is_none());
        assert!(c.get(b"a", 0).is_some());
        assert!(c.len() <= 4);
    }

    #[test]
    fn generation_mismatch_is_a_miss() {
        let c = TextCache::new(10, 1 << 20);
        c.insert(b"a", 1, a());
        assert!(c.get(b"a", 2).is_none());
        assert!(c.get(b"a", 1).is_some());
    }
}
