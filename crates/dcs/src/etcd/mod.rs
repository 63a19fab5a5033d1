//! `EtcdDcs`: the [`Dcs`] trait over etcd v3 (the `etcd-client` crate).
//!
//! Connection: lazy. The first call builds a client over every configured
//! endpoint (gRPC balances across them); a call that fails as `Unavailable`
//! drops the client so the next call connects afresh. So an etcd restart,
//! even on new sockets, needs nothing from the caller but to keep calling.
//!
//! Every call, including connecting, runs under `request_timeout`; on
//! expiry it returns `Unavailable` and the outcome is unknown.
//!
//! Watches run in a background task per watch with their own client; see
//! `watch` for reconnection.
//!
//! Hazard: etcd renews every lease to its full TTL when a new etcd leader
//! is elected or etcd restarts, so a lease can outlive its TTL measured
//! from the last keep-alive. Never infer "the leader is gone" from the
//! clock alone; read the key.

mod convert;
mod watch;

use crate::api::{Dcs, GetResponse, Lease, LeaseId, RangeResponse, Revision, Watch};
use crate::error::{DcsError, DcsResult};
use crate::memory::store::check_ttl;
use crate::settings::DcsSettings;
use async_trait::async_trait;
use convert::{classify, header_revision, kv_from};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp,
};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// The etcd-backed DCS. Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct EtcdDcs {
    inner: Arc<Inner>,
}

struct Inner {
    settings: DcsSettings,
    client: Mutex<Option<Client>>,
}

impl EtcdDcs {
    /// A client for `settings` (validated here). Does no I/O: the
    /// connection is made by the first call.
    pub fn new(settings: DcsSettings) -> DcsResult<Self> {
        settings
            .validate()
            .map_err(|msg| DcsError::other("configure etcd client", msg))?;
        Ok(EtcdDcs {
            inner: Arc::new(Inner {
                settings,
                client: Mutex::new(None),
            }),
        })
    }

    /// The settings this client was built with.
    pub fn settings(&self) -> &DcsSettings {
        &self.inner.settings
    }

    fn timeout(&self) -> Duration {
        self.inner.settings.request_timeout
    }

    /// The shared client, connecting if there is none.
    async fn client(&self) -> DcsResult<Client> {
        let mut slot = self.inner.client.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = connect(&self.inner.settings).await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Run one request with a fresh handle to the client, bounded by the
    /// request timeout; an `Unavailable` outcome drops the client.
    async fn call<T, F, Fut>(&self, op: &'static str, lease: Option<LeaseId>, f: F) -> DcsResult<T>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let res = tokio::time::timeout(self.timeout(), async {
            let client = self.client().await?;
            f(client).await.map_err(|e| classify(op, e, lease))
        })
        .await
        .unwrap_or_else(|elapsed| Err(DcsError::unavailable(op, elapsed)));
        if let Err(e) = &res {
            if e.is_unavailable() {
                tracing::debug!(op, error = %format!("{e:#}"), "etcd unavailable; reconnecting on next call");
                *self.inner.client.lock().await = None;
            }
        }
        res
    }

    async fn txn_put(
        &self,
        op: &'static str,
        cmp: Compare,
        key: &str,
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> DcsResult<bool> {
        let txn = Txn::new()
            .when([cmp])
            .and_then([TxnOp::put(key, value, put_options(lease))]);
        self.call(op, lease, |mut c| async move { c.txn(txn).await })
            .await
            .map(|r| r.succeeded())
    }
}

/// Build a client; without authentication this does no network I/O.
pub(crate) async fn connect(s: &DcsSettings) -> DcsResult<Client> {
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(s.request_timeout)
        .with_keep_alive(
            Duration::from_secs(10),
            s.request_timeout.max(Duration::from_secs(1)),
        );
    if let (Some(user), Some(pass)) = (&s.username, &s.password) {
        opts = opts.with_user(user.clone(), pass.clone());
    }
    let connecting = Client::connect(&s.endpoints, Some(opts));
    match tokio::time::timeout(s.request_timeout, connecting).await {
        Ok(res) => res.map_err(|e| classify("connect", e, None)),
        Err(elapsed) => Err(DcsError::unavailable("connect", elapsed)),
    }
}

fn put_options(lease: Option<LeaseId>) -> Option<PutOptions> {
    lease.map(|l| PutOptions::new().with_lease(l.0))
}

#[async_trait]
impl Dcs for EtcdDcs {
    async fn grant_lease(&self, ttl_secs: i64) -> DcsResult<Lease> {
        check_ttl(ttl_secs)?;
        let r = self
            .call("grant_lease", None, |mut c| async move {
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
            .call("keep_alive", Some(lease), |mut c| async move {
                let (mut keeper, mut stream) = c.lease_keep_alive(lease.0).await?;
                keeper.keep_alive().await?;
                stream.message().await
            })
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
        self.call("revoke_lease", Some(lease), |mut c| async move {
            c.lease_revoke(lease.0).await
        })
        .await
        .map(|_| ())
    }

    async fn get(&self, key: &str) -> DcsResult<GetResponse> {
        let r = self
            .call("get", None, |mut c| async move { c.get(key, None).await })
            .await?;
        Ok(GetResponse {
            kv: r.kvs().first().map(kv_from),
            revision: header_revision(r.header()),
        })
    }

    async fn get_prefix(&self, prefix: &str) -> DcsResult<RangeResponse> {
        let opts = GetOptions::new().with_prefix();
        let r = self
            .call("get_prefix", None, |mut c| async move {
                c.get(prefix, Some(opts)).await
            })
            .await?;
        Ok(RangeResponse {
            kvs: r.kvs().iter().map(kv_from).collect(),
            revision: header_revision(r.header()),
        })
    }

    async fn put(&self, key: &str, value: &[u8], lease: Option<LeaseId>) -> DcsResult<Revision> {
        let opts = put_options(lease);
        let r = self
            .call("put", lease, |mut c| async move {
                c.put(key, value, opts).await
            })
            .await?;
        Ok(header_revision(r.header()))
    }

    async fn delete(&self, key: &str) -> DcsResult<bool> {
        let r = self
            .call(
                "delete",
                None,
                |mut c| async move { c.delete(key, None).await },
            )
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
        self.txn_put("create_if_absent", cmp, key, value, lease)
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
        self.txn_put("compare_and_swap", cmp, key, value, lease)
            .await
    }

    async fn put_if_key_equals(
        &self,
        key: &str,
        value: &[u8],
        guard_key: &str,
        guard_value: &[u8],
    ) -> DcsResult<bool> {
        let cmp = Compare::value(guard_key, CompareOp::Equal, guard_value);
        self.txn_put("put_if_key_equals", cmp, key, value, None)
            .await
    }

    async fn delete_if_equals(&self, key: &str, value: &[u8]) -> DcsResult<bool> {
        let txn = Txn::new()
            .when([Compare::value(key, CompareOp::Equal, value)])
            .and_then([TxnOp::delete(key, None::<DeleteOptions>)]);
        self.call(
            "delete_if_equals",
            None,
            |mut c| async move { c.txn(txn).await },
        )
        .await
        .map(|r| r.succeeded())
    }

    async fn watch_prefix(&self, prefix: &str, start_revision: Revision) -> DcsResult<Watch> {
        watch::start(
            self.inner.settings.clone(),
            prefix.to_string(),
            start_revision,
        )
        .await
    }
}
