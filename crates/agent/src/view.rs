//! Reading the cluster's state from the DCS in one snapshot and turning it
//! into the core's [`ClusterView`]. A value that does not parse is logged and
//! read as absent, the same way the proxy reads it (`pgha_dcs::value`): one
//! bad member record must not blind the whole cluster, and a garbage
//! `/switchover` is no request at all. A failed read is
//! [`DcsView::Unknown`], never an empty view.

use pgha_core::{
    ClusterView, DcsView, DynamicConfig, FailoverRequest, LeaderKey, MemberState, ProxyState,
    SwitchoverRequest, SyncRecord,
};
use pgha_dcs::{ClusterKey, ClusterKeys, Dcs, KeyValue, LeaseId};

/// What one snapshot read gives besides the view: the leader key's lease,
/// so an agent restarted while leading can adopt it.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub view: Option<ClusterView>,
    pub leader_lease: Option<LeaseId>,
    pub config_revision: Option<i64>,
    pub error: Option<String>,
}

impl Snapshot {
    /// The core's view: `Known`, or `Unknown` with the last good config.
    pub fn dcs_view(&self, last_config: &DynamicConfig) -> DcsView {
        match (&self.view, &self.error) {
            (Some(v), _) => DcsView::Known(v.clone()),
            (None, e) => DcsView::Unknown {
                error: e.clone().unwrap_or_else(|| "no snapshot".into()),
                last_config: last_config.clone(),
            },
        }
    }
}

/// Read everything under the cluster prefix. `default_config` applies when
/// the /config key does not exist yet.
pub async fn read(dcs: &dyn Dcs, keys: &ClusterKeys, default_config: &DynamicConfig) -> Snapshot {
    let range = match dcs.get_prefix(keys.prefix()).await {
        Ok(r) => r,
        Err(e) => {
            return Snapshot {
                error: Some(format!("{e:#}")),
                ..Snapshot::default()
            }
        }
    };
    let mut view = ClusterView {
        config: default_config.clone(),
        ..ClusterView::default()
    };
    let mut snap = Snapshot::default();
    for kv in &range.kvs {
        let Some(key) = keys.parse(&kv.key) else {
            continue;
        };
        match key {
            ClusterKey::Leader => {
                view.leader = Some(LeaderKey {
                    holder: kv.value_str().into_owned(),
                    term: kv.create_revision as u64,
                });
                snap.leader_lease = kv.lease;
            }
            ClusterKey::Member(name) => {
                if let Some(m) = parse::<MemberState>(kv) {
                    view.members.insert(name.to_string(), m);
                }
            }
            ClusterKey::Sync => {
                view.sync = parse::<SyncRecord>(kv);
                view.sync_revision = kv.mod_revision as u64;
            }
            ClusterKey::Config => {
                if let Some(c) = parse::<DynamicConfig>(kv) {
                    view.config = c;
                    snap.config_revision = Some(kv.mod_revision);
                }
            }
            ClusterKey::Initialize => view.initialize = Some(kv.value_str().into_owned()),
            ClusterKey::Switchover => {
                view.switchover = parse::<SwitchoverRequest>(kv);
                view.switchover_revision = kv.mod_revision as u64;
            }
            ClusterKey::Failover => view.failover = parse::<FailoverRequest>(kv),
            ClusterKey::Proxy(name) => {
                if let Some(p) = parse::<ProxyState>(kv) {
                    view.proxies.insert(name.to_string(), p);
                }
            }
            ClusterKey::History => {}
        }
    }
    snap.view = Some(view);
    snap
}

/// The one parse every DCS reader shares (`pgha_dcs::value`): garbage is
/// warned about and read as absent.
fn parse<T: serde::de::DeserializeOwned>(kv: &KeyValue) -> Option<T> {
    kv.parse_json()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgha_dcs::MemoryDcs;

    #[tokio::test]
    async fn reads_leader_term_members_and_default_config() {
        let dcs = MemoryDcs::new();
        let keys = ClusterKeys::new("/pgha", "c").unwrap();
        let lease = dcs.grant_lease(5).await.unwrap();
        dcs.create_if_absent(&keys.leader(), b"node1", Some(lease.id))
            .await
            .unwrap();
        dcs.put(&keys.member("node2"), b"{not json", None)
            .await
            .unwrap();
        let snap = read(&dcs, &keys, &DynamicConfig::default()).await;
        let view = snap.view.unwrap();
        let leader = view.leader.unwrap();
        assert_eq!(leader.holder, "node1");
        assert!(leader.term > 0);
        assert_eq!(snap.leader_lease, Some(lease.id));
        assert!(view.members.is_empty(), "a bad record is skipped");
        assert_eq!(view.config, DynamicConfig::default());
    }

    #[tokio::test]
    async fn reads_proxy_records_and_names_the_switchover_by_its_revision() {
        let dcs = MemoryDcs::new();
        let keys = ClusterKeys::new("/pgha", "c").unwrap();
        let rev = dcs
            .put(&keys.switchover(), br#"{"from":"node1"}"#, None)
            .await
            .unwrap();
        let state = br#"{"paused":true,"in_flight":0,"drained_for":7}"#;
        dcs.put(&keys.proxy("px1"), state, None).await.unwrap();
        dcs.put(&keys.proxy("px2"), b"garbage", None).await.unwrap();
        let view = read(&dcs, &keys, &DynamicConfig::default())
            .await
            .view
            .unwrap();
        assert_eq!(view.switchover_revision, rev as u64);
        assert_eq!(view.proxies.len(), 1, "{:?}", view.proxies);
        assert_eq!(view.proxies["px1"].drained_for, Some(7));
    }

    /// An unparseable request is no request: the core sees no switchover or
    /// failover to act on (and the proxy, reading it the same way, no pause).
    #[tokio::test]
    async fn garbage_requests_are_read_as_absent() {
        let dcs = MemoryDcs::new();
        let keys = ClusterKeys::new("/pgha", "c").unwrap();
        for value in [&b"garbage"[..], b"", br#"{"from": 7}"#] {
            dcs.put(&keys.switchover(), value, None).await.unwrap();
            dcs.put(&keys.failover(), value, None).await.unwrap();
            dcs.put(&keys.sync(), value, None).await.unwrap();
            let view = read(&dcs, &keys, &DynamicConfig::default())
                .await
                .view
                .unwrap();
            assert_eq!(view.switchover, None, "{value:?}");
            assert_eq!(view.failover, None, "{value:?}");
            assert_eq!(view.sync, None, "{value:?}");
        }
    }
}
