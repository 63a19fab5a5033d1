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

/// etcd refused the request because it no longer knows the client's auth
/// token (etcd restarted, the token expired unused, or the auth store
/// changed since it was issued). Nothing was applied; logging in again
/// and repeating the request is safe.
pub(crate) fn is_stale_token(e: &EtcdError) -> bool {
    match e {
        EtcdError::GRpcStatus(s) => {
            s.code() == Code::Unauthenticated
                || s.message().contains("invalid auth token")
                || s.message().contains("revision of auth store is old")
        }
        _ => false,
    }
}

/// Our message for etcd's authentication and permission refusals, or
/// `None` for other errors.
fn denied(op: &'static str, s: &tonic::Status) -> Option<String> {
    let m = s.message();
    if m.contains("user name is empty") {
        return Some(
            "etcd requires authentication and this client presents no credentials: \
             set [dcs] username and password_file (docs/dcs.md)"
                .into(),
        );
    }
    if m.contains("authentication failed") {
        return Some(
            "etcd refused the user name or password ([dcs] username / password_file): \
             authentication failed, invalid user ID or password"
                .into(),
        );
    }
    if m.contains("authentication is not enabled") {
        return Some(
            "[dcs] username is set but etcd has authentication turned off: \
             turn it on (`pgha etcd-auth`, docs/dcs.md) or remove dcs.username"
                .into(),
        );
    }
    if s.code() == Code::PermissionDenied {
        return Some(format!(
            "etcd denied {op}: the etcd user may not access this key \
             (its role must grant readwrite on the cluster's key prefix; docs/dcs.md)"
        ));
    }
    None
}

/// Classify an etcd-client error; `lease` is the lease the request used.
pub(crate) fn classify(op: &'static str, e: EtcdError, lease: Option<LeaseId>) -> DcsError {
    if is_stale_token(&e) {
        return DcsError::unavailable(op, e);
    }
    if let EtcdError::GRpcStatus(s) = &e {
        if let Some(msg) = denied(op, s) {
            return DcsError::Denied(msg);
        }
    }
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
