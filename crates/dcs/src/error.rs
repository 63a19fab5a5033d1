//! The DCS error type. Callers branch on it, so the variants are few and
//! mean one thing each.
//!
//! Hazard: `Unavailable` covers timeouts. A timed-out write may still have
//! been applied by etcd; callers must re-read before acting on its outcome.

use crate::api::LeaseId;

/// Boxed source error kept for logs (`{e:#}`).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result alias for DCS operations.
pub type DcsResult<T> = Result<T, DcsError>;

/// What went wrong talking to the DCS.
#[derive(Debug, thiserror::Error)]
pub enum DcsError {
    /// The DCS could not be reached, did not answer within the request
    /// timeout, or has no quorum. The state of the cluster and the outcome
    /// of this operation are UNKNOWN.
    #[error("DCS unavailable during {op}")]
    Unavailable {
        /// The operation that failed, e.g. `"put"`.
        op: &'static str,
        #[source]
        source: BoxError,
    },
    /// The lease does not exist (it expired, was revoked, or was never
    /// granted). Keys attached to it are gone.
    #[error("lease {0} expired or not found")]
    LeaseExpired(LeaseId),
    /// A named object the operation requires does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// Authentication or authorisation: the client's credentials could not
    /// be read, etcd refused them or requires them, or the etcd user may
    /// not touch the key. Says what to do; retrying does not help.
    #[error("{0}")]
    Denied(String),
    /// Anything else: bad arguments, an unexpected answer.
    #[error("DCS error during {op}")]
    Other {
        op: &'static str,
        #[source]
        source: BoxError,
    },
}

impl DcsError {
    /// True when the caller must treat the cluster state as unknown.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, DcsError::Unavailable { .. })
    }

    /// True when the lease named in the request no longer exists.
    pub fn is_lease_expired(&self) -> bool {
        matches!(self, DcsError::LeaseExpired(_))
    }

    /// True when etcd (or the file system) refused the credentials.
    pub fn is_denied(&self) -> bool {
        matches!(self, DcsError::Denied(_))
    }

    pub(crate) fn unavailable(op: &'static str, source: impl Into<BoxError>) -> Self {
        DcsError::Unavailable {
            op,
            source: source.into(),
        }
    }

    pub(crate) fn other(op: &'static str, source: impl Into<BoxError>) -> Self {
        DcsError::Other {
            op,
            source: source.into(),
        }
    }
}
