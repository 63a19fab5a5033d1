//! Mapping etcd-client values and errors to ours.
//!
//! Error classification decides whether the agent treats the cluster state
//! as unknown, so it errs towards `Unavailable` for anything that smells of
//! transport, timeout or quorum loss.

use crate::api::{KeyValue, LeaseId, Revision};
use crate::error::DcsError;
use etcd_client::{Error as EtcdError, ResponseHeader};
use tonic::Code;

/// Our key-value from etcd's (keys are UTF-8 in our layout; lossy otherwise).
pub(crate) fn kv_from(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        lease: (kv.lease() != 0).then_some(LeaseId(kv.lease())),
    }
}

pub(crate) fn header_revision(h: Option<&ResponseHeader>) -> Revision {
    h.map_or(0, |h| h.revision())
}

/// Classify an etcd-client error; `lease` is the lease the request used.
pub(crate) fn classify(op: &'static str, e: EtcdError, lease: Option<LeaseId>) -> DcsError {
    match &e {
        EtcdError::GRpcStatus(s) => match s.code() {
            Code::NotFound if s.message().contains("lease not found") => {
                DcsError::LeaseExpired(lease.unwrap_or(LeaseId(0)))
            }
            Code::NotFound => DcsError::NotFound(s.message().to_string()),
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Unknown
            | Code::Aborted
            | Code::ResourceExhausted
            | Code::Internal => DcsError::unavailable(op, e),
            _ => DcsError::other(op, e),
        },
        EtcdError::LeaseKeepAliveError(m) if m.contains("lease not found") => {
            DcsError::LeaseExpired(lease.unwrap_or(LeaseId(0)))
        }
        EtcdError::TransportError(_)
        | EtcdError::IoError(_)
        | EtcdError::WatchError(_)
        | EtcdError::LeaseKeepAliveError(_) => DcsError::unavailable(op, e),
        _ => DcsError::other(op, e),
    }
}
