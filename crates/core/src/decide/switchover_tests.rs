//! The leader's wait for the proxies during a planned switchover: it shuts
//! down only when every live proxy drained for this request, or when
//! `switchover_drain_timeout` has passed since the request became due.

use super::testutil::*;
use crate::action::{Action, Decision, DemoteKind};
use crate::decide;
use crate::local::SwitchoverSeen;
use crate::time::Millis;
use crate::view::{ClusterView, DcsView, SwitchoverRequest};

fn run(node: Node, view: DcsView, now: u64) -> Decision {
    decide(&node.0, &view, Millis(now))
}

fn demotes(d: &Decision) -> bool {
    d.steps()
        .into_iter()
        .any(|a| *a == Action::Demote(DemoteKind::Graceful))
}

/// node1 leads (term 5), node2 and node3 stream and are synchronous; a
/// switchover to node2 is pending (revision 77, see `View::switchover`).
fn switching() -> View {
    View::new()
        .established("node1", 5, &["node2", "node3"], 1)
        .primary("node1", pos(1, 1000))
        .standby("node2", Some("node1"), pos(1, 1000))
        .standby("node3", Some("node1"), pos(1, 990))
        .switchover(Some("node1"), Some("node2"))
}

/// The leader, which first saw the request due at `seen_at`.
fn leader(seen_at: u64) -> Node {
    Node::new("node1")
        .running_primary(pos(1, 1000))
        .lease(10_000)
        .replicas(&[("node2", 1000), ("node3", 990)])
        .names(quorum(&["node2", "node3"], 1), Some(900))
        .edit(|l| {
            l.switchover_seen = Some(SwitchoverSeen {
                revision: 77,
                at: Millis(seen_at),
            })
        })
}

#[test]
fn without_proxies_the_switchover_goes_ahead() {
    let d = run(leader(10_000), switching().build(), 10_100);
    assert!(demotes(&d), "{}", d.reason);
    assert!(d.reason.contains("no proxy registered"), "{}", d.reason);
}

#[test]
fn waits_while_a_proxy_has_transactions_in_flight() {
    let view = switching()
        .proxy("px1", 0, Some(77))
        .proxy("px2", 3, None)
        .build();
    let d = run(leader(10_000), view, 10_100);
    assert!(!demotes(&d), "{}", d.reason);
    assert!(d.reason.contains("px2 (3 in flight)"), "{}", d.reason);
    assert!(!d.reason.contains("px1"), "{}", d.reason);
    assert!(
        d.wake_in < Millis(500),
        "checks again soon: {:?}",
        d.wake_in
    );
}

#[test]
fn demotes_once_every_proxy_drained_for_this_request() {
    let view = switching()
        .proxy("px1", 0, Some(77))
        .proxy("px2", 0, Some(77))
        .build();
    let d = run(leader(10_000), view, 10_100);
    assert!(demotes(&d), "{}", d.reason);
    assert!(d.reason.contains("2 of 2 proxies drained"), "{}", d.reason);
}

#[test]
fn a_report_for_an_older_request_does_not_count() {
    let view = switching().proxy("px1", 0, Some(76)).build();
    let d = run(leader(10_000), view, 10_100);
    assert!(!demotes(&d), "{}", d.reason);
}

#[test]
fn goes_ahead_when_the_drain_timeout_passed() {
    let view = switching()
        .proxy("px1", 1, None)
        .config(|c| c.switchover_drain_timeout = Millis(2000))
        .build();
    let d = run(leader(10_000).lease(11_900), view.clone(), 11_999);
    assert!(!demotes(&d), "{}", d.reason);
    let d = run(leader(10_000).lease(11_900), view, 12_000);
    assert!(demotes(&d), "{}", d.reason);
    assert!(d.reason.contains("not drained after"), "{}", d.reason);
}

#[test]
fn a_forgotten_start_restarts_the_wait_instead_of_skipping_it() {
    // Agent restarted: no memory of when the request became due.
    let view = switching().proxy("px1", 1, None).build();
    let d = run(leader(0).edit(|l| l.switchover_seen = None), view, 50_000);
    assert!(!demotes(&d), "{}", d.reason);
}

#[test]
fn the_target_must_be_ready_before_the_drain_matters() {
    let view = switching().proxy("px1", 0, Some(77)).build();
    let n = leader(10_000).replicas(&[("node2", 0), ("node3", 990)]);
    let n = n.edit(|l| l.pg.position = pos(1, 100 << 20));
    let d = run(n, view, 10_100);
    assert!(d.reason.contains("catch up"), "{}", d.reason);
    assert!(!demotes(&d));
}

#[test]
fn switchover_seen_tracks_one_due_request() {
    let mut v = ClusterView {
        switchover: Some(SwitchoverRequest {
            scheduled_at_unix_ms: Some(5_000),
            ..Default::default()
        }),
        switchover_revision: 9,
        ..Default::default()
    };
    let t = |prev, unix, now| SwitchoverSeen::track(prev, &v, unix, Millis(now));
    assert_eq!(t(None, 4_999, 100), None, "not due yet");
    let first = t(None, 5_000, 200);
    assert_eq!(first.map(|s| s.at), Some(Millis(200)));
    assert_eq!(
        t(first, 6_000, 900),
        first,
        "kept while the same request is due"
    );
    v.switchover_revision = 10;
    let t = |prev, unix, now| SwitchoverSeen::track(prev, &v, unix, Millis(now));
    assert_eq!(
        t(first, 6_000, 900).map(|s| s.at),
        Some(Millis(900)),
        "a new request"
    );
    v.switchover = None;
    assert_eq!(SwitchoverSeen::track(first, &v, 6_000, Millis(900)), None);
}
