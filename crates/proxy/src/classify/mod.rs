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

mod builtin;
mod cache;
mod functions;
mod normalize;
mod parser;
pub mod plain;
mod startup;
mod stmt;
mod walk;

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

pub use functions::{
    allowed_builtins, builtin_server_local_views, builtin_session_settings, CatalogContent,
    CatalogRelation, FunctionCatalog, RelationKind, SqlBody, UserFunction, ViewDefinition,
    Volatility,
};
pub use startup::startup_options_serializable;

/// The values of [`Analysis::primary_reason`].
pub mod reason {
    /// Statistics, activity, replication, locks, prepared transactions,
    /// recovery state, server settings and identity, sizes on disk: the
    /// answer is the state of the server that runs the statement.
    pub const SERVER_LOCAL: &str = "server-local state";
    /// Advisory locks (session or transaction level, try variants, unlocks).
    pub const ADVISORY_LOCK: &str = "advisory lock";
    /// `txid_current()`, `pg_current_xact_id()` and their `_if_assigned`.
    pub const TRANSACTION_ID: &str = "transaction id";
    /// LISTEN, UNLISTEN, NOTIFY, `pg_notify`.
    pub const LISTEN_NOTIFY: &str = "LISTEN/NOTIFY";
    /// `DECLARE ... WITH HOLD`: the cursor outlives the transaction.
    pub const WITH_HOLD: &str = "WITH HOLD cursor";
    /// Sequence functions, or reading a sequence relation (a standby shows
    /// a value up to 32 ahead).
    pub const SEQUENCE: &str = "sequence";
    /// Unlogged tables cannot be read during recovery.
    pub const UNLOGGED: &str = "unlogged table";
    /// A SERIALIZABLE transaction cannot run on a hot standby.
    pub const SERIALIZABLE: &str = "serializable";
    /// Temporary relations live on the backend that made them.
    pub const TEMPORARY: &str = "temporary relation";
}

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
    /// The statement may run inside a READ ONLY transaction on a hot standby and
    /// give exactly the outcome it would inside a READ ONLY transaction on the
    /// primary at the same WAL position: read-only statements, transaction control
    /// (BEGIN/START/COMMIT/END/ROLLBACK/ABORT, SAVEPOINT, RELEASE, ROLLBACK TO; not
    /// PREPARE TRANSACTION nor COMMIT/ROLLBACK PREPARED), SET LOCAL, SET TRANSACTION
    /// (not to SERIALIZABLE), non-LOCAL SET/RESET of ordinary settings, DECLARE
    /// without HOLD of a read-only query, FETCH, MOVE, CLOSE. False for everything
    /// else (when in doubt, false). For several statements: every one is.
    pub standby_in_tx: bool,
    /// Why this statement needs the primary beyond "it may write", when that is
    /// the reason: "server-local state" (statistics/activity/replication/locks/
    /// prepared xacts/recovery state/settings views and functions), "advisory lock",
    /// "transaction id", "LISTEN/NOTIFY", "WITH HOLD cursor", "sequence",
    /// "unlogged table", "serializable"... (see [`reason`]). `None` for read-only
    /// statements and plain writes. For several statements: "serializable" if
    /// any, else the first statement's reason.
    pub primary_reason: Option<&'static str>,
    /// The text begins or sets a SERIALIZABLE transaction: BEGIN / START TRANSACTION
    /// ISOLATION LEVEL SERIALIZABLE (any option order, last one wins as in PostgreSQL),
    /// SET TRANSACTION ISOLATION LEVEL SERIALIZABLE, SET [LOCAL] transaction_isolation = serializable
    /// (also `set_config('transaction_isolation', 'serializable', ...)`, and
    /// `RESET transaction_isolation` / `SET transaction_isolation TO DEFAULT`,
    /// whose value is the session default, unknown here).
    pub serializable: bool,
}

impl Analysis {
    /// What a text nothing is known about gets: the primary, no effects.
    pub fn primary() -> Self {
        stmt::primary()
    }
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
    /// SQL `PREPARE name ... AS ...` (`statement`: that statement's text):
    /// the session has a statement `name` from now on (until DEALLOCATE),
    /// prepared again with `statement` on a backend that lacks it.
    Prepare { name: String, statement: String },
    /// SQL `EXECUTE name` (also in EXPLAIN and CREATE TABLE AS): runs the
    /// session's statement `name`, which the backend must have as the
    /// client's (or not at all, for PostgreSQL's own error).
    Execute { name: String },
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

    /// For a `Set` of `default_transaction_isolation` (`SET
    /// default_transaction_isolation`, `SET SESSION CHARACTERISTICS AS
    /// TRANSACTION ISOLATION LEVEL ...`, `SELECT set_config(...)`): whether
    /// the constant value it sets is `serializable`; `None` for anything
    /// else. (Re-parses the statement: not for the hot path.)
    pub fn default_serializable(&self) -> Option<bool> {
        match self {
            SessionEffect::Set { name, statement } if name == "default_transaction_isolation" => {
                stmt::default_isolation_value(statement).map(|v| v == "serializable")
            }
            _ => None,
        }
    }
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
            analysis.standby_in_tx = false;
        }
        // A read-only text is also `standby_in_tx`; a learned text was
        // read-only.
        if analysis.read_only && self.is_learned(shape.as_deref().unwrap_or(sql)) {
            analysis.read_only = false;
            analysis.standby_in_tx = false;
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
