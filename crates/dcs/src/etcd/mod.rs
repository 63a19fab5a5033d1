//! `EtcdDcs`: the [`Dcs`] trait over etcd v3 (the `etcd-client` crate).
//!
//! Connection: lazy, one client per endpoint (see `pool`). The first call
//! connects to the first endpoint; an endpoint that fails as `Unavailable`
//! is dropped and reconnected on its next use, and calls move on to the
//! next endpoint. So an etcd restart or a dead member needs nothing from
//! the caller but to keep calling.
//!
//! Every call, including connecting, runs under `request_timeout`; on
//! expiry it returns `Unavailable` and the outcome is unknown.
//!
//! Watches run in a background task per watch; see `watch` for
//! reconnection.
//!
//! Hazard: etcd renews every lease to its full TTL when a new etcd leader
//! is elected or etcd restarts, so a lease can outlive its TTL measured
//! from the last keep-alive. Never infer "the leader is gone" from the
//! clock alone; read the key.

pub mod auth;
mod convert;
mod pool;
mod watch;

use crate::api::{Dcs, GetResponse, Lease, LeaseId, RangeResponse, Revision, Watch};
use crate::error::{DcsError, DcsResult};
use crate::memory::store::check_ttl;
use crate::settings::DcsSettings;
use async_trait::async_trait;
use convert::{header_revision, kv_from};
use etcd_client::{Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp};
use pool::{Pool, Retry};
use std::sync::Arc;

/// The etcd-backed DCS. Cheap to clone; clones share the connections.
#[derive(Clone)]
pub struct EtcdDcs {
    pool: Arc<Pool>,
}

impl EtcdDcs {
    /// A client for `settings` (validated here). Reads the password file
    /// when the settings name one (so an unreadable one fails here, with a
    /// message saying who may read it); no network I/O: connections are
    /// made by the first calls.
    pub fn new(settings: DcsSettings) -> DcsResult<Self> {
        settings
            .validate()
            .map_err(|msg| DcsError::other("configure etcd client", msg))?;
        let credentials = settings.credentials()?;
        Ok(EtcdDcs {
            pool: Arc::new(Pool::new(settings, credentials)),
        })
    }

    /// The settings this client was built with.
    pub fn settings(&self) -> &DcsSettings {
        self.pool.settings()
    }

    /// A one-put transaction under `cmp`; whether every compare held.
    async fn txn_put<const N: usize>(
        &self,
        op: &'static str,
        cmp: [Compare; N],
        key: &str,
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> DcsResult<bool> {
        let txn = Txn::new()
            .when(cmp)
            .and_then([TxnOp::put(key, value, put_options(lease))]);
        let r = self
            .pool
            .call(op, lease, Retry::IfNotSent, |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        Ok(r.succeeded())
    }
}

/// `key` holds `value` and was created at `created` (an absent key has
/// create revision 0, so it fails unless `created` is 0 too; the value
/// compare then fails on the missing key).
/// The guard of a `/sync` write: `key` holds `value` and was created at
/// `created` (the leader key in the writer's term), and `put_key` was last
/// written at `put_expected` (0 = absent), the `/sync` revision the writer
/// knows, so that a delayed write of the same term cannot land over a newer
/// one.
fn held_in_term(
    key: &str,
    value: &[u8],
    created: Revision,
    put_key: &str,
    put_expected: Revision,
) -> [Compare; 3] {
    [
        Compare::value(key, CompareOp::Equal, value),
        Compare::create_revision(key, CompareOp::Equal, created),
        Compare::mod_revision(put_key, CompareOp::Equal, put_expected),
    ]
}

fn put_options(lease: Option<LeaseId>) -> Option<PutOptions> {
    lease.map(|l| PutOptions::new().with_lease(l.0))
}

#[async_trait]
impl Dcs for EtcdDcs {
    async fn grant_lease(&self, ttl_secs: i64) -> DcsResult<Lease> {
        check_ttl(ttl_secs)?;
        // Repeating a grant at worst leaves an unused lease to expire.
        let r = self
            .pool
            .call("grant_lease", None, Retry::Idempotent, |mut c| async move {
                c.lease_grant(ttl_secs, None).await
            })
            .await?;
        Ok(Lease {
            id: LeaseId(r.id()),
            ttl_secs: r.ttl(),
        })
    }

    async fn keep_alive(&self, lease: LeaseId) -> DcsResult<i64> {
        // Opening the stream renews once and fails if the lease is gone; a
        // second round on it reports the TTL granted from now.
        let resp = self
            .pool
            .call(
                "keep_alive",
                Some(lease),
                Retry::Idempotent,
                |mut c| async move {
                    let (mut keeper, mut stream) = c.lease_keep_alive(lease.0).await?;
                    keeper.keep_alive().await?;
                    stream.message().await
                },
            )
            .await?;
        match resp {
            Some(r) if r.ttl() > 0 => Ok(r.ttl()),
            Some(_) => Err(DcsError::LeaseExpired(lease)),
            None => Err(DcsError::unavailable(
                "keep_alive",
                "keep-alive stream closed",
            )),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> DcsResult<()> {
        self.pool
            .call(
                "revoke_lease",
                Some(lease),
                Retry::IfNotSent,
                |mut c| async move { c.lease_revoke(lease.0).await },
            )
            .await
            .map(|_| ())
    }

    async fn get(&self, key: &str) -> DcsResult<GetResponse> {
        let r = self
            .pool
            .call("get", None, Retry::Idempotent, |mut c| async move {
                c.get(key, None).await
            })
            .await?;
        Ok(GetResponse {
            kv: r.kvs().first().map(kv_from),
            revision: header_revision(r.header()),
        })
    }

    async fn get_prefix(&self, prefix: &str) -> DcsResult<RangeResponse> {
        let r = self
            .pool
            .call("get_prefix", None, Retry::Idempotent, |mut c| async move {
                c.get(prefix, Some(GetOptions::new().with_prefix())).await
            })
            .await?;
        Ok(RangeResponse {
            kvs: r.kvs().iter().map(kv_from).collect(),
            revision: header_revision(r.header()),
        })
    }

    async fn put(&self, key: &str, value: &[u8], lease: Option<LeaseId>) -> DcsResult<Revision> {
        // An unconditional put repeated is the same as one put applied a
        // little later, so it may move to another endpoint on any failure.
        let r = self
            .pool
            .call("put", lease, Retry::Idempotent, |mut c| async move {
                c.put(key, value, put_options(lease)).await
            })
            .await?;
        Ok(header_revision(r.header()))
    }

    async fn delete(&self, key: &str) -> DcsResult<bool> {
        let r = self
            .pool
            .call("delete", None, Retry::IfNotSent, |mut c| async move {
                c.delete(key, None).await
            })
            .await?;
        Ok(r.deleted() > 0)
    }

    async fn create_if_absent(
        &self,
        key: &str,
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> DcsResult<bool> {
        let cmp = Compare::create_revision(key, CompareOp::Equal, 0);
        self.txn_put("create_if_absent", [cmp], key, value, lease)
            .await
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        value: &[u8],
        expected: Revision,
        lease: Option<LeaseId>,
    ) -> DcsResult<bool> {
        let cmp = Compare::mod_revision(key, CompareOp::Equal, expected);
        self.txn_put("compare_and_swap", [cmp], key, value, lease)
            .await
    }

    async fn put_if_key_equals(
        &self,
        key: &str,
        value: &[u8],
        guard_key: &str,
        guard_value: &[u8],
        guard_created: Revision,
        expected: Revision,
    ) -> DcsResult<bool> {
        let cmp = held_in_term(guard_key, guard_value, guard_created, key, expected);
        self.txn_put("put_if_key_equals", cmp, key, value, None)
            .await
    }

    async fn delete_if_equals(&self, key: &str, value: &[u8]) -> DcsResult<bool> {
        let txn = Txn::new()
            .when([Compare::value(key, CompareOp::Equal, value)])
            .and_then([TxnOp::delete(key, None::<DeleteOptions>)]);
        let r = self
            .pool
            .call("delete_if_equals", None, Retry::IfNotSent, |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        Ok(r.succeeded())
    }

    async fn put_and_delete_if_equals(
        &self,
        put_key: &str,
        value: &[u8],
        del_key: &str,
        expected: &[u8],
        del_created: Revision,
        put_expected: Revision,
    ) -> DcsResult<bool> {
        let txn = Txn::new()
            .when(held_in_term(
                del_key,
                expected,
                del_created,
                put_key,
                put_expected,
            ))
            .and_then([
                TxnOp::put(put_key, value, None),
                TxnOp::delete(del_key, None::<DeleteOptions>),
            ]);
        let r = self
            .pool
            .call(
                "put_and_delete_if_equals",
                None,
                Retry::IfNotSent,
                |mut c| {
                    let txn = txn.clone();
                    async move { c.txn(txn).await }
                },
            )
            .await?;
        Ok(r.succeeded())
    }

    async fn watch_prefix(&self, prefix: &str, start_revision: Revision) -> DcsResult<Watch> {
        watch::start(self.pool.clone(), prefix.to_string(), start_revision).await
    }
}
