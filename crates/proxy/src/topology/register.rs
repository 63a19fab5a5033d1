//! The proxy's own record in the DCS: `<ns>/<cluster>/proxies/<name>`, a
//! JSON `pgha_core::ProxyState` under a lease of its own, rewritten when the
//! state changes and kept alive every second. A leader handling a
//! switchover waits (bounded) until every record says "drained for" it.
//!
//! Hazards: a write that fails is retried from scratch (new lease) after a
//! pause; while the DCS is unreachable the record may be stale or expired,
//! which only makes the leader wait up to its drain timeout. The name must
//! be unique per proxy process: two proxies sharing a record would hide one
//! another's in-flight transactions.

use pgha_core::ProxyState;
use pgha_dcs::{Dcs, DcsError, LeaseId};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// Lease TTL of the record (whole seconds, etcd's unit).
const TTL_SECS: i64 = 3;
const KEEP_ALIVE: Duration = Duration::from_secs(1);

/// A name for this proxy: `<host>-<pid>-<n>`, valid as a DCS key segment.
pub(super) fn proxy_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        .take(40)
        .collect();
    let host = if host.is_empty() || host == "." || host == ".." {
        "proxy".to_string()
    } else {
        host
    };
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{host}-{}-{n}", std::process::id())
}

/// Keeps `key` holding the latest value of `state` until the sender is gone.
pub(super) async fn keep_registered<D: Dcs + ?Sized>(
    dcs: &D,
    key: &str,
    mut state: watch::Receiver<ProxyState>,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match registered(dcs, key, &mut state).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(%key, "keeping the proxy record in the DCS: {e}; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
        if state.has_changed().is_err() {
            return;
        }
    }
}

/// One lease's life: Ok when the state sender is gone (record revoked).
async fn registered<D: Dcs + ?Sized>(
    dcs: &D,
    key: &str,
    state: &mut watch::Receiver<ProxyState>,
) -> Result<(), DcsError> {
    let lease = dcs.grant_lease(TTL_SECS).await?;
    let result = serve_lease(dcs, key, lease.id, state).await;
    if result.is_ok() {
        let _ = dcs.revoke_lease(lease.id).await;
    }
    result
}

async fn serve_lease<D: Dcs + ?Sized>(
    dcs: &D,
    key: &str,
    lease: LeaseId,
    state: &mut watch::Receiver<ProxyState>,
) -> Result<(), DcsError> {
    let mut tick = tokio::time::interval(KEEP_ALIVE);
    tick.tick().await;
    loop {
        let value = state.borrow_and_update().clone();
        let json = serde_json::to_vec(&value).unwrap_or_default();
        dcs.put(key, &json, Some(lease)).await?;
        loop {
            tokio::select! {
                changed = state.changed() => match changed {
                    Ok(()) => break,
                    Err(_) => return Ok(()),
                },
                _ = tick.tick() => {
                    dcs.keep_alive(lease).await?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgha_dcs::MemoryDcs;

    async fn record(dcs: &MemoryDcs, key: &str) -> Option<ProxyState> {
        let kv = dcs.get(key).await.ok()?.kv?;
        assert!(kv.lease.is_some(), "the record is leased");
        serde_json::from_slice(&kv.value).ok()
    }

    #[tokio::test]
    async fn the_record_follows_the_state_and_goes_with_the_sender() {
        let dcs = std::sync::Arc::new(MemoryDcs::new());
        let (tx, rx) = watch::channel(ProxyState::default());
        let task = {
            let dcs = dcs.clone();
            tokio::spawn(async move { keep_registered(&*dcs, "/pgha/c/proxies/p1", rx).await })
        };
        let wait_for = |want: ProxyState| {
            let dcs = dcs.clone();
            async move {
                for _ in 0..200 {
                    if record(&dcs, "/pgha/c/proxies/p1").await == Some(want.clone()) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                panic!("record never became {want:?}");
            }
        };
        wait_for(ProxyState::default()).await;
        let drained = ProxyState {
            paused: true,
            in_flight: 0,
            drained_for: Some(5),
        };
        tx.send_replace(drained.clone());
        wait_for(drained).await;
        drop(tx);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("ends with the sender")
            .expect("no panic");
        assert_eq!(record(&dcs, "/pgha/c/proxies/p1").await, None, "revoked");
    }

    #[test]
    fn generated_names_are_valid_and_distinct() {
        let (a, b) = (proxy_name(), proxy_name());
        assert_ne!(a, b);
        pgha_dcs::keys::validate_name(&a).expect("valid key segment");
    }
}
