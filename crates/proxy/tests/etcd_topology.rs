//! The etcd topology source against a real etcd: leader and member keys
//! become a topology, and a leader change is followed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking

use pgha_core::{ConnInfo, MemberState, Role};
use pgha_dcs::{ClusterKeys, Dcs, DcsSettings, EtcdDcs};
use pgha_testkit::etcd::EtcdGuard;
use std::sync::Arc;
use std::time::Duration;

fn member(name: &str, role: Role, port: u16) -> Vec<u8> {
    let m = MemberState {
        name: name.into(),
        role,
        pg_running: true,
        conn: ConnInfo {
            host: "127.0.0.1".into(),
            port,
        },
        ..Default::default()
    };
    serde_json::to_vec(&m).expect("member JSON")
}

/// A real etcd with member `a` (primary, port 5001) of cluster `cluster`
/// written once etcd serves requests (it may accept TCP a moment before).
async fn etcd_with_primary_a(
    cluster: &str,
) -> anyhow::Result<(EtcdGuard, Arc<EtcdDcs>, ClusterKeys)> {
    let etcd = tokio::task::spawn_blocking(EtcdGuard::start).await??;
    let dcs = Arc::new(EtcdDcs::new(DcsSettings::with_endpoints([etcd
        .client_url
        .clone()]))?);
    let keys = ClusterKeys::new("/pgha", cluster)?;
    pgha_testkit::wait_until_async("etcd to serve requests", Duration::from_secs(20), || {
        let (dcs, key) = (dcs.clone(), keys.member("a"));
        async move {
            dcs.put(&key, &member("a", Role::Primary, 5001), None)
                .await
                .ok()
        }
    })
    .await?;
    Ok((etcd, dcs, keys))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_leader_and_members() -> anyhow::Result<()> {
    let (_etcd, dcs, keys) = etcd_with_primary_a("proxytest").await?;
    dcs.put(&keys.member("b"), &member("b", Role::Standby, 5002), None)
        .await?;
    dcs.put(&keys.leader(), b"a", None).await?;
    let (mut rx, _task) = pgha_proxy::topology::etcd::spawn(dcs.clone(), keys.clone());
    let t = tokio::time::timeout(
        Duration::from_secs(10),
        rx.wait_for(|t| t.primary.is_some()),
    )
    .await??
    .clone();
    assert_eq!(t.primary.as_ref().map(|n| n.port), Some(5001));
    assert_eq!(
        t.standbys.iter().map(|n| n.port).collect::<Vec<_>>(),
        [5002]
    );

    // Failover: a loses the key, b is promoted and takes it.
    dcs.delete(&keys.leader()).await?;
    tokio::time::timeout(
        Duration::from_secs(10),
        rx.wait_for(|t| t.primary.is_none()),
    )
    .await??;
    dcs.put(&keys.member("b"), &member("b", Role::Primary, 5002), None)
        .await?;
    dcs.put(&keys.member("a"), &member("a", Role::Standby, 5001), None)
        .await?;
    dcs.put(&keys.leader(), b"b", None).await?;
    let t = tokio::time::timeout(
        Duration::from_secs(10),
        rx.wait_for(|t| t.primary.as_ref().is_some_and(|p| p.name == "b")),
    )
    .await??
    .clone();
    assert_eq!(
        t.standbys
            .iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>(),
        ["a"]
    );

    // A switchover request pauses new transactions until it is cleared.
    dcs.put(&keys.switchover(), b"{}", None).await?;
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|t| t.paused)).await??;
    dcs.delete(&keys.switchover()).await?;
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|t| !t.paused)).await??;
    Ok(())
}

/// A garbage `/switchover` value is no request (the agents skip it too, so
/// no leader would ever clear it): the proxy keeps the primary and never
/// pauses, whether the garbage is there when it starts or overwrites a
/// valid pending request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unparseable_switchover_never_pauses_writes() -> anyhow::Result<()> {
    let (_etcd, dcs, keys) = etcd_with_primary_a("garbage").await?;
    dcs.put(&keys.leader(), b"a", None).await?;
    dcs.put(&keys.switchover(), b"not json at all", None)
        .await?;
    let (mut rx, _task) = pgha_proxy::topology::etcd::spawn(dcs.clone(), keys.clone());
    let t = tokio::time::timeout(
        Duration::from_secs(10),
        rx.wait_for(|t| t.primary.is_some()),
    )
    .await??
    .clone();
    assert!(!t.paused, "garbage at start-up paused writes: {t:?}");

    // A valid request pauses; garbage over it is no request any more.
    dcs.put(&keys.switchover(), br#"{"from":"a"}"#, None)
        .await?;
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|t| t.paused)).await??;
    dcs.put(&keys.switchover(), br#"{"from": 42}"#, None)
        .await?;
    let t = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|t| !t.paused))
        .await
        .map_err(|_| anyhow::anyhow!("still paused 10 s after garbage replaced the request"))??
        .clone();
    assert_eq!(t.primary.as_ref().map(|n| n.name.as_str()), Some("a"));
    Ok(())
}

/// etcd dies (failsafe mode keeps the primary writable meanwhile): the
/// proxy keeps routing to the last known primary for the whole outage
/// instead of dropping it, and follows the cluster again once etcd is
/// back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_the_primary_while_etcd_is_down() -> anyhow::Result<()> {
    let (mut etcd, dcs, keys) = etcd_with_primary_a("outage").await?;
    dcs.put(&keys.member("b"), &member("b", Role::Standby, 5002), None)
        .await?;
    dcs.put(&keys.leader(), b"a", None).await?;
    let (mut rx, _task) = pgha_proxy::topology::etcd::spawn(dcs.clone(), keys.clone());
    tokio::time::timeout(
        Duration::from_secs(10),
        rx.wait_for(|t| t.primary.is_some() && !t.standbys.is_empty()),
    )
    .await??;
    etcd.kill();
    // Several failed re-reads (the source backs off up to 2 s between
    // them): the topology must not lose its primary or standbys.
    let dropped = tokio::time::timeout(
        Duration::from_secs(6),
        rx.wait_for(|t| t.primary.is_none() || t.standbys.is_empty()),
    )
    .await
    .map(|r| r.map(|t| t.clone()));
    assert!(dropped.is_err(), "dropped during the outage: {dropped:?}");
    assert_eq!(rx.borrow().primary.as_ref().map(|n| n.port), Some(5001));
    let _etcd = tokio::task::spawn_blocking(move || etcd.restart().map(|()| etcd)).await??;
    // Back: a change is followed again (b takes over).
    pgha_testkit::wait_until_async("etcd back", Duration::from_secs(20), || {
        let dcs = dcs.clone();
        let keys = keys.clone();
        async move {
            dcs.put(&keys.member("b"), &member("b", Role::Primary, 5002), None)
                .await
                .ok()?;
            dcs.put(&keys.leader(), b"b", None).await.ok()
        }
    })
    .await?;
    tokio::time::timeout(
        Duration::from_secs(15),
        rx.wait_for(|t| t.primary.as_ref().is_some_and(|p| p.name == "b")),
    )
    .await??;
    Ok(())
}
