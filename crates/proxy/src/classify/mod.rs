//! SQL classifier for the `rw` listener: decides whether a statement text is
//! provably read-only, what it does to transaction state and what session
//! state it creates.
//!
//! Hazard: every answer here changes where a client's statement runs. When in
//! doubt the answer must be "primary" (`read_only: false`).
//!
//! (Interface stub: everything currently routes to the primary.)

use std::sync::Arc;

/// What the proxy must know about one statement text (possibly several
/// statements in one simple query).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Analysis {
    /// Provably read-only: may run on a standby outside an explicit transaction.
    pub read_only: bool,
    /// Effect on transaction state.
    pub tx: TxEffect,
    /// Effects on session state the proxy must track, in statement order.
    pub session: Vec<SessionEffect>,
}

/// Effect of a statement on transaction state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxEffect {
    None,
    Begin { read_only: bool },
    SetTransactionReadOnly,
    Commit,
    Rollback,
}

/// Effect of a statement on session state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEffect {
    /// Non-LOCAL SET: replay `statement` on every other backend the session uses.
    Set { name: String, statement: String },
    /// RESET name.
    Reset { name: String, statement: String },
    /// RESET ALL / DISCARD ALL.
    ResetAll,
    /// The session stays on the primary from now on.
    Pin { reason: &'static str },
}

/// Volatility of user functions, filled from pg_proc by a refresh task.
#[derive(Debug, Default)]
pub struct FunctionCatalog {}

impl FunctionCatalog {
    pub fn new() -> Self {
        Self {}
    }

    /// Reload user function volatility from `pg_proc`.
    pub async fn refresh(
        &self,
        _client: &tokio_postgres::Client,
    ) -> Result<(), tokio_postgres::Error> {
        Ok(())
    }
}

/// Parses and classifies statement texts, caching by exact text.
#[derive(Debug)]
pub struct Classifier {
    _catalog: Arc<FunctionCatalog>,
}

impl Classifier {
    pub fn new(catalog: Arc<FunctionCatalog>) -> Self {
        Self { _catalog: catalog }
    }

    /// Parse once per distinct text (cached); never panics on bad SQL
    /// (unparseable -> primary).
    pub fn analyze(&self, _sql: &str) -> Arc<Analysis> {
        Arc::new(Analysis {
            read_only: false,
            tx: TxEffect::None,
            session: Vec::new(),
        })
    }

    /// A standby answered SQLSTATE 25006 for this autocommit text: route it to
    /// the primary from now on.
    pub fn learn_writes(&self, _sql: &str) {}
}
