//! Typed errors of instance operations: callers branch on them (a missing
//! binary is fatal, a timeout may be retried, a failed command shows stderr).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("PostgreSQL binary {path} not found: install PostgreSQL 15 (Debian: apt-get install postgresql-15) or set postgres.bin_dir")]
    MissingBinary { path: PathBuf },
    #[error("no PostgreSQL installation found under /usr/lib/postgresql/*/bin: install it (Debian: apt-get install postgresql-15) or set postgres.bin_dir")]
    NoInstallation,
    #[error("OS user {user:?} does not exist; PostgreSQL refuses to run as root, so pgha runs it as that user: create it (useradd --system --create-home --shell /bin/bash {user}) or set postgres.os_user")]
    NoServiceUser { user: String },
    #[error("{path} is not reachable by OS user {user:?} (PostgreSQL runs as that user): choose a directory it can reach, for example under /var/tmp, or grant search permission on every parent directory")]
    Unreachable { path: PathBuf, user: String },
    #[error("{what} failed ({status}): {stderr}")]
    Command {
        what: String,
        status: String,
        stderr: String,
    },
    // The cause is formatted into the message and therefore not chained as
    // a `source` too: `{e:#}` would print it twice.
    #[error("{what}: {error}")]
    Io { what: String, error: std::io::Error },
    #[error("{what}: {error}")]
    Sql {
        what: String,
        error: tokio_postgres::Error,
    },
    #[error("timed out after {seconds}s waiting for {what}")]
    Timeout { what: String, seconds: u64 },
    #[error("unexpected answer from PostgreSQL while {what}: {detail}")]
    Unexpected { what: String, detail: String },
    #[error(transparent)]
    Tls(#[from] pgha_tls::TlsError),
    /// A certificate or key `[tls]` names is missing and pgha may not (or
    /// cannot) make it.
    #[error("{path} ({key}) does not exist: {remedy}")]
    MissingTlsFile {
        path: PathBuf,
        key: String,
        remedy: String,
    },
    #[error("TLS key {path} cannot be used: {problem}")]
    UnusableTlsKey { path: PathBuf, problem: String },
}

impl PgError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> PgError {
        let what = what.into();
        move |error| PgError::Io { what, error }
    }

    pub(crate) fn sql(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> PgError {
        let what = what.into();
        move |error| PgError::Sql { what, error }
    }

    /// True when the server could not be reached at all (not running, still
    /// starting, network): the caller should treat its state as unknown.
    pub fn is_connection_failure(&self) -> bool {
        match self {
            PgError::Sql { error, .. } => error.as_db_error().is_none(),
            PgError::Timeout { .. } => true,
            _ => false,
        }
    }
}
