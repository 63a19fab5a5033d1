//! etcd authentication against a real etcd: `etcd::auth::enable` turns it
//! on; afterwards anonymous requests and wrong passwords are refused, the
//! cluster's user works inside its key prefix and nowhere else, running the
//! setup again converges (a new password replaces the old one), and a
//! client keeps working across an etcd restart (which forgets every login
//! token) and, with three etcd members, when the member it used dies
//! (login tokens are per member).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking

use pgha_dcs::etcd::auth::{self, AuthOutcome, AuthPlan};
use pgha_dcs::{Dcs, DcsSettings, EtcdDcs, WatchEvent};
use pgha_testkit::etcd::{EtcdCluster, EtcdGuard};
use pgha_testkit::wait_until_async;
use std::time::Duration;

/// Generous: tests run in parallel on a small, shared machine.
const TIMEOUT: Duration = Duration::from_secs(5);
const PREFIX: &str = "/pgha/c1/";

fn client(url: &str, login: Option<(&str, &str)>) -> EtcdDcs {
    let settings = DcsSettings {
        request_timeout: TIMEOUT,
        username: login.map(|(u, _)| u.to_string()),
        password: login.map(|(_, p)| p.to_string()),
        ..DcsSettings::with_endpoints([url])
    };
    EtcdDcs::new(settings).expect("valid settings")
}

async fn enable(url: &str, root: &str, password: &str) -> AuthOutcome {
    let endpoints = vec![url.to_string()];
    let plan = AuthPlan {
        endpoints: &endpoints,
        timeout: TIMEOUT,
        root_password: root,
        user: "pgha",
        password,
        prefix: PREFIX,
    };
    auth::enable(&plan).await.expect("enable etcd auth")
}

async fn start_etcd() -> EtcdGuard {
    tokio::task::spawn_blocking(EtcdGuard::start)
        .await
        .expect("join")
        .expect("start etcd")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_and_wrong_password_are_refused_the_user_is_confined_to_its_prefix() {
    let etcd = start_etcd().await;
    let url = etcd.client_url.as_str();
    // Before: anyone may write.
    client(url, None)
        .put("/pgha/c1/before", b"x", None)
        .await
        .expect("anonymous put before auth");
    assert_eq!(enable(url, "rootpw", "userpw").await, AuthOutcome::Enabled);

    // Anonymous: refused, with a message that says what to configure.
    let err = client(url, None)
        .put("/pgha/c1/switchover", b"{}", None)
        .await
        .expect_err("anonymous write after auth");
    assert!(err.is_denied(), "{err:?}");
    assert!(err.to_string().contains("[dcs] username"), "{err}");
    let err = client(url, None)
        .get("/pgha/c1/before")
        .await
        .expect_err("anonymous read");
    assert!(err.is_denied(), "{err:?}");

    // Wrong password: refused at login.
    let err = client(url, Some(("pgha", "wrong")))
        .put("/pgha/c1/switchover", b"{}", None)
        .await
        .expect_err("wrong password");
    assert!(err.is_denied(), "{err:?}");
    assert!(err.to_string().contains("authentication failed"), "{err}");

    // The cluster's user: everything it needs inside its prefix.
    let dcs = client(url, Some(("pgha", "userpw")));
    assert!(
        dcs.get("/pgha/c1/switchover")
            .await
            .expect("get")
            .kv
            .is_none(),
        "a refused write left a value"
    );
    let lease = dcs.grant_lease(5).await.expect("grant lease");
    assert!(dcs
        .create_if_absent("/pgha/c1/leader", b"node1", Some(lease.id))
        .await
        .expect("create"));
    dcs.keep_alive(lease.id).await.expect("keep alive");
    let mut watch = dcs.watch_prefix(PREFIX, 0).await.expect("watch");
    dcs.put("/pgha/c1/config", b"{}", None).await.expect("put");
    match tokio::time::timeout(TIMEOUT, watch.next()).await {
        Ok(Some(WatchEvent::Put(kv))) => assert_eq!(kv.key, "/pgha/c1/config"),
        other => panic!("expected the put event, got {other:?}"),
    }
    assert_eq!(dcs.get_prefix(PREFIX).await.expect("range").kvs.len(), 3);
    dcs.revoke_lease(lease.id).await.expect("revoke");

    // ... and nothing outside it: not another cluster whose name starts
    // with this one's, not the namespace itself.
    for key in ["/pgha/c10/leader", "/pgha/c2/leader", "/other"] {
        let err = dcs.put(key, b"x", None).await.expect_err(key);
        assert!(err.is_denied(), "{key}: {err:?}");
        assert!(err.to_string().contains("may not access"), "{err}");
    }
    let err = dcs.get_prefix("/pgha/").await.expect_err("namespace range");
    assert!(err.is_denied(), "{err:?}");
    // Root still sees everything.
    let root = client(url, Some(("root", "rootpw")));
    assert!(root.get("/pgha/c2/leader").await.expect("get").kv.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_again_converges_and_clients_survive_an_etcd_restart() {
    let mut etcd = start_etcd().await;
    let url = etcd.client_url.clone();
    assert_eq!(enable(&url, "r1", "p1").await, AuthOutcome::Enabled);
    // Again, with the same passwords: nothing to do but check.
    assert_eq!(enable(&url, "r1", "p1").await, AuthOutcome::AlreadyEnabled);
    // A new password for the user (the file in secrets/ changed): the old
    // one is refused from now on.
    assert_eq!(enable(&url, "r1", "p2").await, AuthOutcome::AlreadyEnabled);
    let err = client(&url, Some(("pgha", "p1")))
        .get("/pgha/c1/x")
        .await
        .expect_err("old password");
    assert!(err.is_denied(), "{err:?}");

    let dcs = client(&url, Some(("pgha", "p2")));
    dcs.put("/pgha/c1/x", b"1", None).await.expect("put");
    // etcd forgets its login tokens when it restarts; the client logs in
    // again by itself.
    let _etcd = tokio::task::spawn_blocking(move || {
        etcd.restart().expect("restart etcd");
        etcd
    })
    .await
    .expect("join");
    wait_until_async("a write after the restart", Duration::from_secs(30), || {
        let dcs = dcs.clone();
        async move { dcs.put("/pgha/c1/x", b"2", None).await.ok() }
    })
    .await
    .expect("the client works again after etcd restarted");
    let kv = dcs.get("/pgha/c1/x").await.expect("get").kv.expect("kv");
    assert_eq!(kv.value, b"2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_a_client_logs_in_to_the_next_when_one_dies() {
    let mut etcd = tokio::task::spawn_blocking(|| EtcdCluster::start(3))
        .await
        .expect("join")
        .expect("start 3 etcd members");
    let endpoints = etcd.endpoints();
    let plan = AuthPlan {
        endpoints: &endpoints,
        timeout: TIMEOUT,
        root_password: "r",
        user: "pgha",
        password: "p",
        prefix: PREFIX,
    };
    // The members elect a leader first.
    wait_until_async("auth enabled", Duration::from_secs(30), || async {
        auth::enable(&plan).await.ok()
    })
    .await
    .expect("enable etcd auth on 3 members");
    for url in &endpoints {
        let err = client(url, None)
            .put("/pgha/c1/x", b"1", None)
            .await
            .expect_err("anonymous on every member");
        assert!(err.is_denied(), "{url}: {err:?}");
    }
    let settings = DcsSettings {
        request_timeout: TIMEOUT,
        username: Some("pgha".into()),
        password: Some("p".into()),
        ..DcsSettings::with_endpoints(endpoints.clone())
    };
    let dcs = EtcdDcs::new(settings).expect("client");
    dcs.put("/pgha/c1/x", b"1", None).await.expect("put");
    etcd.members[0].kill();
    wait_until_async(
        "a write with member 0 dead",
        Duration::from_secs(30),
        || {
            let dcs = dcs.clone();
            async move { dcs.put("/pgha/c1/x", b"2", None).await.ok() }
        },
    )
    .await
    .expect("the client moves to a live member and logs in there");
}
