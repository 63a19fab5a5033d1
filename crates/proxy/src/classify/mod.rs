//! SQL classifier for the `rw` listener: decides whether a statement text is
//! provably read-only, what it does to transaction state and what session
//! state it creates. See docs/routing.md ("The classifier") for the rules.
//!
//! Hot path: [`Classifier::analyze`] is a read lock, one hash lookup and an
//! `Arc` clone when the exact text was seen before. Texts that differ only in
//! literal values share a *shape* entry (see `normalize`), so literal-inlining
//! clients (pgbench `-M simple`, ORMs) parse once per shape, not per text.
//!
//! Hazards:
//! - Every answer here changes where a client's statement runs. When in doubt
//!   the answer is "primary" (`read_only: false`): unparseable text, unknown
//!   functions, anything not positively recognised.
//! - Cached answers depend on the function catalogue: entries carry the
//!   catalogue generation and are ignored once it moves on.

mod cache;
mod functions;
mod normalize;
mod parser;
mod stmt;
mod walk;

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

pub use functions::{FunctionCatalog, UserFunction, Volatility};

use cache::TextCache;
use normalize::Shape;

/// What the proxy must know about one statement text (possibly several
/// statements in one simple query).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Analysis {
    /// Provably read-only: may run on a standby outside an explicit
    /// transaction. For several statements: every one of them is. An empty
    /// text (or comments only) is read-only.
    pub read_only: bool,
    /// Effect on transaction state. For several statements: the effect of
    /// the last transaction-control statement.
    pub tx: TxEffect,
    /// Effects on session state the proxy must track, in statement order.
    pub session: Vec<SessionEffect>,
    /// The `tx` effect is `COMMIT AND CHAIN` / `ROLLBACK AND CHAIN`: a new
    /// transaction with the same characteristics starts at once, on the same
    /// backend.
    pub chain: bool,
    /// The statement may run inside a READ ONLY transaction on a hot
    /// standby with exactly the outcome it would have there on the primary.
    pub standby_in_tx: bool,
    /// Why the statement needs the primary beyond "it may write".
    pub primary_reason: Option<&'static str>,
    /// The text begins or sets a SERIALIZABLE transaction.
    pub serializable: bool,
}

/// Effect of a statement on transaction state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxEffect {
    None,
    /// BEGIN / START TRANSACTION; `read_only` when READ ONLY was given
    /// (the session default is for the caller to apply).
    Begin {
        read_only: bool,
    },
    /// SET TRANSACTION READ ONLY, or `SET [LOCAL] transaction_read_only = on`.
    SetTransactionReadOnly,
    /// COMMIT / END (also PREPARE TRANSACTION, which ends the session's
    /// transaction).
    Commit,
    /// ROLLBACK / ABORT.
    Rollback,
}

/// Effect of a statement on session state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEffect {
    /// Non-LOCAL SET: replay `statement` on every other backend the session
    /// uses. `name` is the setting's name as PostgreSQL reports it
    /// (`SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY` gives
    /// `default_transaction_read_only`; `SET TIME ZONE` gives `timezone`).
    Set { name: String, statement: String },
    /// `RESET name` or `SET name TO DEFAULT`: replay `statement`.
    Reset { name: String, statement: String },
    /// RESET ALL / DISCARD ALL.
    ResetAll,
    /// SQL `DEALLOCATE name` (`Some`), `DEALLOCATE ALL` / `DISCARD ALL`
    /// (`None`): prepared statements (the client's protocol-level ones
    /// included) are removed on the backend that runs it, at once and even if
    /// its transaction rolls back.
    Deallocate { name: Option<String> },
    /// The session stays on the primary from now on.
    Pin { reason: &'static str },
}

impl SessionEffect {
    /// For a `Set` of `default_transaction_read_only`: the value it sets, when
    /// it is a constant PostgreSQL reads as a boolean. (Re-parses the
    /// statement: not for the hot path; the backend's ParameterStatus reports
    /// the same value.)
    pub fn default_read_only(&self) -> Option<bool> {
        match self {
            SessionEffect::Set { name, statement } if name == "default_transaction_read_only" => {
                stmt::default_read_only_value(statement)
            }
            _ => None,
        }
    }

    /// For a `Set` of `default_transaction_isolation`: whether the value it
    /// sets is serializable, when it is a constant. (Interim: by text.)
    pub fn default_serializable(&self) -> Option<bool> {
        match self {
            SessionEffect::Set { name, statement } if name == "default_transaction_isolation" => {
                Some(statement.to_ascii_lowercase().contains("serializable"))
            }
            _ => None,
        }
    }
}

/// Whether a startup packet's `options` value sets
/// `default_transaction_isolation` to serializable (`None`: it does not set
/// it). (Interim: by text.)
pub fn startup_options_serializable(options: &str) -> Option<bool> {
    let o = options.to_ascii_lowercase().replace('-', "_");
    let at = o.rfind("default_transaction_isolation")?;
    Some(o[at..].split_whitespace().next().unwrap_or("").contains("serializable"))
}

/// Entries per cache generation (two generations per cache).
const CACHE_ENTRIES: usize = 8 * 1024;
/// Key bytes per cache generation.
const CACHE_BYTES: usize = 8 * 1024 * 1024;
/// Learned write texts kept; the set is cleared when full.
const LEARNED_MAX: usize = 16 * 1024;

/// Parses and classifies statement texts, caching by exact text and by shape.
/// `Send + Sync`, meant to be shared in an `Arc`.
pub struct Classifier {
    catalog: Arc<FunctionCatalog>,
    /// Texts without literals, texts the lexer could not normalise, and
    /// literal-sensitive results (SET, set_config).
    exact: TextCache,
    /// Normalised shapes of texts with literals.
    shapes: TextCache,
    /// Keys (shape, or exact text) a standby refused with 25006.
    learned: RwLock<HashSet<Box<str>>>,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("exact", &self.exact.len())
            .field("shapes", &self.shapes.len())
            .finish_non_exhaustive()
    }
}

impl Classifier {
    pub fn new(catalog: Arc<FunctionCatalog>) -> Self {
        Classifier {
            catalog,
            exact: TextCache::new(CACHE_ENTRIES, CACHE_BYTES),
            shapes: TextCache::new(CACHE_ENTRIES, CACHE_BYTES),
            learned: RwLock::new(HashSet::new()),
        }
    }

    /// Parse once per distinct text (cached); never panics on bad SQL
    /// (unparseable -> primary).
    ///
    /// Cost (release build): ~40 ns for a text seen before, well under 1 µs
    /// for a text that differs from one seen before only in literals, and a
    /// parse (~0.5 µs per byte, 20-60 µs for typical statements) otherwise.
    /// It runs on the caller's thread and blocks it: a never-seen 1 MiB
    /// SELECT costs about half a second (large pure writes are answered by
    /// the lexer alone, see docs/routing.md).
    pub fn analyze(&self, sql: &str) -> Arc<Analysis> {
        // Read the generation before the snapshot: an entry is never stored
        // under a generation newer than the content it was computed from.
        let generation = self.catalog.generation();
        if let Some(hit) = self.exact.get(sql.as_bytes(), generation) {
            return hit;
        }
        self.analyze_uncached(sql, generation, true)
    }

    /// [`Classifier::analyze`] of a text as the client sent it, with one
    /// cache lookup for most texts: one that likely has a literal
    /// ([`likely_literal`], e.g. `pgbench -M simple`) is lexed at once and
    /// looked up by its shape, the exact cache only asked when that misses;
    /// any other text is looked up as the bytes it arrived in, and only a
    /// miss checks them as UTF-8. (The same answers as `analyze`: a text is
    /// in the exact cache only when its shape is not cached, see
    /// `analyze_uncached`.) Invalid UTF-8 is analysed lossily and never hits
    /// the cache.
    pub fn analyze_bytes(&self, sql: &[u8]) -> Arc<Analysis> {
        let generation = self.catalog.generation();
        let shape_first = likely_literal(sql);
        if !shape_first {
            if let Some(hit) = self.exact.get(sql, generation) {
                return hit;
            }
        }
        match std::str::from_utf8(sql) {
            Ok(text) => self.analyze_uncached(text, generation, !shape_first),
            Err(_) => self.analyze_uncached(&String::from_utf8_lossy(sql), generation, true),
        }
    }

    /// After a miss in the exact cache (`exact_checked`), or before asking
    /// it. A text is cached either by shape or by exact text, never both (a
    /// literal-sensitive result has the same shape as every text it shares a
    /// shape with, since SET and set_config are recognised by structure), so
    /// the order of the two lookups does not change the answer.
    fn analyze_uncached(&self, sql: &str, generation: u64, exact_checked: bool) -> Arc<Analysis> {
        let lexed = normalize::lex(sql);
        if lexed.bulk_write {
            return Arc::new(stmt::primary());
        }
        let shape = match lexed.shape {
            Shape::Normalized(s) if !lexed.plain_backslash => Some(s),
            _ => None,
        };
        if let Some(s) = &shape {
            if let Some(hit) = self.shapes.get(s.as_bytes(), generation) {
                return hit;
            }
        }
        if !exact_checked {
            if let Some(hit) = self.exact.get(sql.as_bytes(), generation) {
                return hit;
            }
        }
        let outcome = stmt::classify_text(sql, lexed.depth_bound, &self.catalog.snapshot());
        let mut analysis = outcome.analysis;
        if lexed.plain_backslash {
            // Its meaning depends on standard_conforming_strings.
            analysis.read_only = false;
        }
        if analysis.read_only && self.is_learned(shape.as_deref().unwrap_or(sql)) {
            analysis.read_only = false;
        }
        let analysis = Arc::new(analysis);
        match shape {
            Some(s) if !outcome.literal_sensitive => {
                self.shapes
                    .insert(s.as_bytes(), generation, analysis.clone())
            }
            _ => self
                .exact
                .insert(sql.as_bytes(), generation, analysis.clone()),
        }
        analysis
    }

    /// A standby answered SQLSTATE 25006 for this autocommit text: route it to
    /// the primary from now on (and every text of the same shape, i.e. that
    /// differs only in literal values).
    pub fn learn_writes(&self, sql: &str) {
        let shape = match normalize::lex(sql).shape {
            Shape::Normalized(s) => Some(s),
            _ => None,
        };
        let key = shape.as_deref().unwrap_or(sql);
        {
            let mut learned = self.learned.write().unwrap_or_else(|p| p.into_inner());
            if learned.len() >= LEARNED_MAX {
                tracing::warn!("learned-writes set full ({LEARNED_MAX}); clearing it");
                learned.clear();
            }
            learned.insert(key.into());
        }
        self.exact.remove(sql.as_bytes());
        if let Some(s) = &shape {
            self.shapes.remove(s.as_bytes());
        }
        tracing::info!(statement = %truncate(sql, 200), "standby refused a statement as a write; routing it to the primary");
    }

    fn is_learned(&self, key: &str) -> bool {
        self.learned
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(key)
    }

    /// Cached entries (exact and shape caches), for metrics and tests.
    pub fn cached_entries(&self) -> usize {
        self.exact.len() + self.shapes.len()
    }
}

/// Whether `sql` likely holds a literal the shape lexer replaces: a quote,
/// or a digit that does not continue an identifier or a `$n` parameter.
/// Scans from the end, where the constants of a WHERE clause usually are.
/// Only picks which cache is asked first.
fn likely_literal(sql: &[u8]) -> bool {
    let mut i = sql.len();
    while i > 0 {
        i -= 1;
        let b = sql[i];
        if b == b'\'' {
            return true;
        }
        if b.is_ascii_digit() {
            while i > 0 && sql[i - 1].is_ascii_digit() {
                i -= 1;
            }
            let continues = i > 0 && {
                let p = sql[i - 1];
                p.is_ascii_alphabetic() || p == b'_' || p == b'$' || p >= 0x80
            };
            if !continues {
                return true;
            }
        }
    }
    false
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_hint() {
        assert!(likely_literal(b"SELECT a FROM t WHERE id = 12345;"));
        assert!(likely_literal(b"SELECT 'x'"));
        assert!(likely_literal(b"SELECT .5"));
        assert!(!likely_literal(b"SELECT a FROM t1 WHERE id = $1"));
        assert!(!likely_literal(b"SELECT c_2 FROM t"));
        assert!(!likely_literal(b"BEGIN"));
        assert!(!likely_literal(b""));
    }

    /// Either lookup order gives the same answers, cached or not.
    #[test]
    fn bytes_and_text_agree() {
        let texts = [
            "SELECT a FROM t WHERE id = 12345",
            "SELECT a FROM t WHERE id = 6",
            "SET work_mem = '8MB'",
            "SET work_mem = '16MB'",
            "SELECT set_config('a.b', '1', false)",
            "SELECT a FROM t1 WHERE id = $1",
            "INSERT INTO t VALUES (1)",
            "BEGIN",
            "SELECT 'a\\'b'",
            "DISCARD ALL",
        ];
        let c = Classifier::new(Arc::default());
        let fresh = Classifier::new(Arc::default());
        for round in 0..3 {
            for t in texts {
                let a = c.analyze_bytes(t.as_bytes());
                assert_eq!(a, fresh.analyze(t), "{t} (round {round})");
                assert_eq!(a, c.analyze(t), "{t} (round {round})");
            }
        }
        let invalid = b"SELECT 1 \xff";
        assert_eq!(
            c.analyze_bytes(invalid),
            fresh.analyze(&String::from_utf8_lossy(invalid))
        );
    }
}
