//! One lazily connected client per etcd endpoint, and the rule for moving
//! between them.
//!
//! Why not one client balancing over all endpoints: etcd-client's balanced
//! channel keeps routing some requests to a dead member (connection
//! refused) and cannot tell a partitioned member from a slow one. Here a
//! call goes to the preferred endpoint; an endpoint that fails as
//! `Unavailable` is dropped (reconnected on next use) and the preference
//! moves on, so one dead or hung member costs at most one failed call.
//!
//! Retrying on the next endpoint within the same call is only done when it
//! cannot double-apply anything: for idempotent requests (reads,
//! keep-alive) on any `Unavailable`, and for writes only when the request
//! provably never left (the TCP connect was refused).
//!
//! Hazard: "provably never left" is recognised from the transport error's
//! text (`tcp connect error`), which tonic does not expose as a type.

use super::convert::{classify, is_stale_token};
use crate::api::LeaseId;
use crate::credentials::Credentials;
use crate::error::{DcsError, DcsResult};
use crate::settings::DcsSettings;
use etcd_client::{Client, ConnectOptions};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// May a failed attempt be repeated on another endpoint?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Repeating is harmless: retry on any `Unavailable`; the deadline is
    /// split across the endpoints left so a hung member cannot eat it all.
    Idempotent,
    /// A write: retry only if the request never reached etcd; each
    /// attempt may use the whole remaining deadline.
    IfNotSent,
}

pub(crate) struct Pool {
    settings: DcsSettings,
    /// Presented on every connect; `None` for anonymous access.
    credentials: Option<Credentials>,
    slots: Vec<Mutex<Option<Client>>>,
    preferred: AtomicUsize,
}

impl Pool {
    pub(crate) fn new(settings: DcsSettings, credentials: Option<Credentials>) -> Self {
        let slots = settings
            .endpoints
            .iter()
            .map(|_| Mutex::new(None))
            .collect();
        Pool {
            settings,
            credentials,
            slots,
            preferred: AtomicUsize::new(0),
        }
    }

    pub(crate) fn settings(&self) -> &DcsSettings {
        &self.settings
    }

    /// Endpoint indexes to try, the preferred one first.
    pub(crate) fn order(&self) -> Vec<usize> {
        let n = self.slots.len();
        let first = self.preferred.load(Ordering::Relaxed) % n;
        (0..n).map(|i| (first + i) % n).collect()
    }

    /// The client for endpoint `idx`, connecting if needed.
    pub(crate) async fn client(&self, idx: usize) -> DcsResult<Client> {
        let mut slot = self.slots[idx].lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = connect(
            &self.settings,
            self.credentials.as_ref(),
            &self.settings.endpoints[idx],
        )
        .await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Forget endpoint `idx`'s client and prefer the next endpoint.
    pub(crate) async fn failed(&self, idx: usize) {
        *self.slots[idx].lock().await = None;
        let next = (idx + 1) % self.slots.len();
        let _ = self
            .preferred
            .compare_exchange(idx, next, Ordering::Relaxed, Ordering::Relaxed);
    }

    pub(crate) fn succeeded(&self, idx: usize) {
        self.preferred.store(idx, Ordering::Relaxed);
    }

    /// Run one request, moving between endpoints as `retry` allows, all
    /// within the request timeout.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        op: &'static str,
        lease: Option<LeaseId>,
        retry: Retry,
        f: F,
    ) -> DcsResult<T>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = Instant::now() + self.settings.request_timeout;
        let order = self.order();
        let mut last = None;
        for (n, &idx) in order.iter().enumerate() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let budget = match retry {
                Retry::Idempotent => left / (order.len() - n) as u32,
                Retry::IfNotSent => left,
            };
            match self.attempt(op, lease, idx, budget, &f).await {
                Ok(v) => {
                    self.succeeded(idx);
                    return Ok(v);
                }
                Err((e, not_sent)) => {
                    let unavailable = e.is_unavailable();
                    if unavailable {
                        tracing::debug!(op, endpoint = %self.settings.endpoints[idx], error = %format!("{e:#}"), "etcd endpoint failed");
                        self.failed(idx).await;
                    }
                    let again = unavailable && (retry == Retry::Idempotent || not_sent);
                    last = Some(e);
                    if !again {
                        break;
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| DcsError::unavailable(op, "request timeout elapsed")))
    }

    /// One attempt on endpoint `idx`; the error says whether the request
    /// certainly never reached etcd.
    async fn attempt<T, F, Fut>(
        &self,
        op: &'static str,
        lease: Option<LeaseId>,
        idx: usize,
        budget: Duration,
        f: &F,
    ) -> Result<T, (DcsError, bool)>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let run = async {
            let client = self.client(idx).await.map_err(|e| (e, true))?;
            let first = match f(client).await {
                Err(e) if is_stale_token(&e) => e,
                other => {
                    return other.map_err(|e| {
                        let not_sent = never_sent(&e);
                        (classify(op, e, lease), not_sent)
                    })
                }
            };
            // etcd forgot the auth token (it restarted, or the token sat
            // unused past its TTL) and refused the request without applying
            // it: log in again and repeat once.
            tracing::debug!(op, error = %first, "etcd auth token refused; logging in again");
            *self.slots[idx].lock().await = None;
            let client = self.client(idx).await.map_err(|e| (e, true))?;
            f(client).await.map_err(|e| {
                let not_sent = never_sent(&e);
                (classify(op, e, lease), not_sent)
            })
        };
        match tokio::time::timeout(budget, run).await {
            Ok(res) => res,
            Err(elapsed) => Err((DcsError::unavailable(op, elapsed), false)),
        }
    }
}

/// Did the request fail before any byte could reach etcd?
fn never_sent(e: &etcd_client::Error) -> bool {
    let text = format!("{e:?}");
    text.contains("tcp connect error") || text.contains("ConnectionRefused")
}

/// Build a client for one endpoint; without credentials this does no
/// network I/O (the channel connects on first use), with them it logs in
/// (etcd's Authenticate) and fails as `Denied` when etcd refuses them.
pub(crate) async fn connect(
    s: &DcsSettings,
    credentials: Option<&Credentials>,
    endpoint: &str,
) -> DcsResult<Client> {
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(s.request_timeout)
        .with_keep_alive(
            Duration::from_secs(10),
            s.request_timeout.max(Duration::from_secs(1)),
        );
    if let Some(c) = credentials {
        opts = opts.with_user(c.user.clone(), c.password.clone());
    }
    let connecting = Client::connect([endpoint], Some(opts));
    match tokio::time::timeout(s.request_timeout, connecting).await {
        Ok(res) => res.map_err(|e| classify("connect", e, None)),
        Err(elapsed) => Err(DcsError::unavailable("connect", elapsed)),
    }
}
