//! A [`Dcs`] that counts and times every request of the wrapped one into
//! [`AgentMetrics`] (`pgha_etcd_requests_total`, `_errors_total`,
//! `pgha_etcd_request_duration_seconds`): the agent, its lease keeper and
//! its watch all go through it, so nothing bypasses the count.

use crate::metrics::AgentMetrics;
use async_trait::async_trait;
use pgha_dcs::{Dcs, DcsResult, GetResponse, Lease, LeaseId, RangeResponse, Revision, Watch};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

/// The wrapper.
pub struct InstrumentedDcs {
    inner: Arc<dyn Dcs>,
    metrics: Arc<AgentMetrics>,
}

impl InstrumentedDcs {
    pub fn wrap(inner: Arc<dyn Dcs>, metrics: Arc<AgentMetrics>) -> Arc<dyn Dcs> {
        Arc::new(InstrumentedDcs { inner, metrics })
    }

    async fn timed<T>(
        &self,
        op: &'static str,
        f: impl Future<Output = DcsResult<T>>,
    ) -> DcsResult<T> {
        let c = self.metrics.etcd_op(op);
        let start = Instant::now();
        let r = f.await;
        c.requests.inc();
        c.latency.observe(start.elapsed());
        if r.is_err() {
            c.errors.inc();
        }
        r
    }
}

#[async_trait]
impl Dcs for InstrumentedDcs {
    async fn grant_lease(&self, ttl_secs: i64) -> DcsResult<Lease> {
        self.timed("grant_lease", self.inner.grant_lease(ttl_secs))
            .await
    }

    async fn keep_alive(&self, lease: LeaseId) -> DcsResult<i64> {
        self.timed("keep_alive", self.inner.keep_alive(lease)).await
    }

    async fn revoke_lease(&self, lease: LeaseId) -> DcsResult<()> {
        self.timed("revoke_lease", self.inner.revoke_lease(lease))
            .await
    }

    async fn get(&self, key: &str) -> DcsResult<GetResponse> {
        self.timed("get", self.inner.get(key)).await
    }

    async fn get_prefix(&self, prefix: &str) -> DcsResult<RangeResponse> {
        self.timed("get_prefix", self.inner.get_prefix(prefix))
            .await
    }

    async fn put(&self, key: &str, value: &[u8], lease: Option<LeaseId>) -> DcsResult<Revision> {
        self.timed("put", self.inner.put(key, value, lease)).await
    }

    async fn delete(&self, key: &str) -> DcsResult<bool> {
        self.timed("delete", self.inner.delete(key)).await
    }

    async fn create_if_absent(
        &self,
        key: &str,
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> DcsResult<bool> {
        let f = self.inner.create_if_absent(key, value, lease);
        self.timed("create_if_absent", f).await
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        value: &[u8],
        expected: Revision,
        lease: Option<LeaseId>,
    ) -> DcsResult<bool> {
        let f = self.inner.compare_and_swap(key, value, expected, lease);
        self.timed("compare_and_swap", f).await
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
        let f = self.inner.put_if_key_equals(
            key,
            value,
            guard_key,
            guard_value,
            guard_created,
            expected,
        );
        self.timed("put_if_key_equals", f).await
    }

    async fn delete_if_equals(&self, key: &str, value: &[u8]) -> DcsResult<bool> {
        let f = self.inner.delete_if_equals(key, value);
        self.timed("delete_if_equals", f).await
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
        let f = self.inner.put_and_delete_if_equals(
            put_key,
            value,
            del_key,
            expected,
            del_created,
            put_expected,
        );
        self.timed("put_and_delete_if_equals", f).await
    }

    async fn watch_prefix(&self, prefix: &str, start_revision: Revision) -> DcsResult<Watch> {
        let f = self.inner.watch_prefix(prefix, start_revision);
        self.timed("watch_prefix", f).await
    }
}
