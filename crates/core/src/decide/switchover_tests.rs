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

// --- the hand-over record: the leader names its target, then its end of WAL

fn handoff_record(to: &str, final_position: Option<crate::lsn::WalPos>) -> crate::view::SyncRecord {
    crate::view::SyncRecord {
        term: 5,
        leader: "node1".into(),
        set: set(&["node2", "node3"], 1),
        handoff: Some(crate::view::Handoff {
            to: to.into(),
            final_position,
        }),
    }
}

fn handoff_write(to: &str, final_position: Option<crate::lsn::WalPos>) -> Action {
    Action::WriteSyncKey(handoff_record(to, final_position))
}

/// The final record and the release of the leader key, as one DCS write.
fn hand_over(to: &str, final_position: crate::lsn::WalPos) -> Action {
    Action::HandOver(handoff_record(to, Some(final_position)))
}

/// Before it shuts down, the leader records whom it hands over to.
#[test]
fn records_the_target_before_shutting_down() {
    let d = run(leader(10_000), switching().build(), 10_100);
    let steps = d.steps();
    let w = steps
        .iter()
        .position(|a| **a == handoff_write("node2", None));
    let s = steps
        .iter()
        .position(|a| **a == Action::Demote(DemoteKind::Graceful));
    assert!(matches!((w, s), (Some(w), Some(s)) if w < s), "{steps:?}");
}

/// The best synchronous standby is the recorded target when none was named.
#[test]
fn records_the_best_standby_when_no_target_was_named() {
    let view = switching().switchover(Some("node1"), None).build();
    let d = run(leader(10_000), view, 10_100);
    assert!(
        d.steps().contains(&&handoff_write("node2", None)),
        "{:?}",
        d.steps()
    );
}

fn stopped_leader(clean: bool) -> Node {
    Node::new("node1")
        .stopped(crate::local::DataDir::Standby, pos(1, 1001))
        .lease(10_000)
        .edit(|l| l.pg.clean_shutdown = clean)
}

/// After a clean shutdown the leader records where its WAL ends and
/// releases the key in one DCS write (not a `/sync` write, then a release
/// the target would see one loop later).
#[test]
fn after_a_clean_shutdown_records_the_final_position_and_releases_at_once() {
    let view = switching().handoff("node2", None).build();
    let d = run(stopped_leader(true), view, 10_100);
    assert_eq!(
        d.steps(),
        vec![&Action::RenewLeader, &hand_over("node2", pos(1, 1001))],
        "{}",
        d.reason
    );
    assert_eq!(d.wake_in, Millis::ZERO, "{}", d.reason);
}

/// The member record follows the hand-over: published first it would wake
/// the target one loop before the leader key is free.
#[test]
fn the_member_record_is_published_after_the_hand_over() {
    let view = switching().handoff("node2", None).build();
    let d = run(exiting_leader(), view, 10_100);
    let kinds: Vec<&Action> = d.actions.iter().collect();
    assert!(
        matches!(
            kinds[..],
            [
                Action::RenewLeader,
                Action::HandOver(_),
                Action::PublishMember(_)
            ]
        ),
        "{kinds:?}"
    );
    let d = run(leader(10_000), switching().build(), 10_100);
    assert!(
        matches!(d.actions[0], Action::PublishMember(_)),
        "first otherwise: {:?}",
        d.actions
    );
}

/// Without a clean shutdown (or a recorded target) there is no final
/// position to give: release only, the ordinary promotion rule applies.
#[test]
fn an_unclean_stop_releases_without_a_final_position() {
    let view = switching().handoff("node2", None).build();
    let d = run(stopped_leader(false), view, 10_100);
    assert_eq!(
        d.steps(),
        vec![&Action::RenewLeader, &Action::ReleaseLeader]
    );
    let d = run(stopped_leader(true), switching().build(), 10_100);
    assert_eq!(
        d.steps(),
        vec![&Action::RenewLeader, &Action::ReleaseLeader]
    );
}

fn exiting_leader() -> Node {
    Node::new("node1").exiting(pos(1, 1001)).lease(10_000)
}

/// The final position is recorded as soon as the control file says "shut
/// down", while the postmaster still waits for its walsenders and archiver:
/// the target promotes only once its own WAL reaches that position.
#[test]
fn while_the_postmaster_exits_records_the_final_position_and_releases() {
    let view = switching().handoff("node2", None).build();
    let d = run(exiting_leader(), view, 10_100);
    assert_eq!(
        d.steps(),
        vec![&Action::RenewLeader, &hand_over("node2", pos(1, 1001))],
        "{}",
        d.reason
    );
    assert!(
        !d.steps()
            .iter()
            .any(|a| matches!(a, Action::WriteSyncKey(_) | Action::ReleaseLeader)),
        "no separate write or release: {:?}",
        d.steps()
    );
    assert_eq!(d.wake_in, Millis::ZERO, "{}", d.reason);
}

/// A running postmaster whose role is unknown is not a shutdown: no final
/// position without the control file's word.
#[test]
fn an_unknown_role_is_not_a_clean_shutdown() {
    let view = switching().handoff("node2", None).build();
    let node1 = exiting_leader().edit(|l| l.pg.exiting = false);
    let d = run(node1, view, 10_100);
    assert_eq!(d.steps(), vec![&Action::RenewLeader], "{}", d.reason);
    assert!(d.reason.contains("role is unknown"), "{}", d.reason);
}

/// Without a switchover (withdrawn during the shutdown) an exiting leader
/// starts nothing: it waits for the postmaster to exit, then decides.
#[test]
fn without_a_switchover_an_exiting_leader_waits_for_the_exit() {
    let view = View::new()
        .established("node1", 5, &["node2", "node3"], 1)
        .handoff("node2", None)
        .standby("node2", Some("node1"), pos(1, 1001))
        .standby("node3", Some("node1"), pos(1, 1001))
        .build();
    let d = run(exiting_leader(), view, 10_100);
    assert_eq!(d.steps(), vec![&Action::RenewLeader], "{}", d.reason);
    assert!(
        d.reason.contains("waiting for its postmaster"),
        "{}",
        d.reason
    );
    assert!(d.wake_in < Millis(500), "{:?}", d.wake_in);
}

/// Once it released the key, the exiting former leader starts nothing
/// either (no leader, or the target leads): it waits for the exit.
#[test]
fn after_the_release_the_exiting_node_starts_nothing() {
    let node1 = || Node::new("node1").exiting(pos(1, 1001));
    let d = run(node1(), handed_over(1010).build(), 10_100);
    assert!(d.steps().is_empty(), "{}", d.reason);
    let view = handed_over(1010).leader("node2", 6).build();
    let d = run(node1(), view, 10_100);
    assert!(d.steps().is_empty(), "{}", d.reason);
}

/// node1 shut down cleanly at 1001 and handed over to node2; node3 has
/// not reported yet (still shown streaming).
fn handed_over(target_at: u64) -> View {
    View::new()
        .sync(5, "node1", &["node2", "node3"], 1)
        .handoff("node2", Some(pos(1, 1001)))
        .detached("node2", 5, pos(1, target_at))
        .standby("node3", Some("node1"), pos(1, target_at))
}

/// The target promotes on the hand-over alone, without node3's report.
#[test]
fn the_target_takes_the_key_without_the_other_reports() {
    let node2 = Node::new("node2")
        .running_standby(None, pos(1, 1010))
        .detached(5);
    let d = run(node2, handed_over(1010).build(), 10_100);
    assert_eq!(d.steps(), vec![&Action::AcquireLeader], "{}", d.reason);
    assert!(d.reason.contains("handed over to me"), "{}", d.reason);
}

/// The final position is recorded while the old postmaster still sends the
/// rest: a target that streams from it and is short of that position waits
/// for the WAL instead of detaching; once streaming stops it detaches.
#[test]
fn the_target_waits_for_the_rest_of_the_wal_while_it_streams() {
    let view = || {
        View::new()
            .sync(5, "node1", &["node2", "node3"], 1)
            .handoff("node2", Some(pos(1, 1001)))
            .standby("node2", Some("node1"), pos(1, 1000))
            .standby("node3", Some("node1"), pos(1, 1000))
            .build()
    };
    let node2 = Node::new("node2").running_standby(Some("node1"), pos(1, 1000));
    let d = run(node2, view(), 10_100);
    assert!(d.steps().is_empty(), "{}", d.reason);
    assert!(d.reason.contains("receiving the rest"), "{}", d.reason);
    assert_eq!(d.wake_in, Millis::ZERO);

    let node2 = Node::new("node2")
        .running_standby(Some("node1"), pos(1, 1000))
        .edit(|l| l.pg.streaming = false);
    let d = run(node2, view(), 10_100);
    assert!(
        matches!(d.steps()[..], [Action::DetachFromPrimary { after_term: 5 }]),
        "{}",
        d.reason
    );

    // Once the WAL is there it takes the key without detaching first.
    let node2 = Node::new("node2").running_standby(Some("node1"), pos(1, 1001));
    let d = run(node2, view(), 10_100);
    assert_eq!(d.steps(), vec![&Action::AcquireLeader], "{}", d.reason);
}

/// The target holding the key claims and promotes on the hand-over without
/// detaching first; without a hand-over it detaches first as before.
#[test]
fn the_target_claims_without_detaching_on_a_completed_handoff() {
    let view = |handoff: bool| {
        let v = View::new()
            .sync(5, "node1", &["node2", "node3"], 1)
            .leader("node2", 6)
            .standby("node2", Some("node1"), pos(1, 1010))
            .standby("node3", Some("node1"), pos(1, 1010));
        if handoff {
            v.handoff("node2", Some(pos(1, 1001))).build()
        } else {
            v.build()
        }
    };
    let node2 = || {
        Node::new("node2")
            .running_standby(Some("node1"), pos(1, 1010))
            .lease(10_000)
    };
    let d = run(node2(), view(true), 10_100);
    let steps = d.steps();
    let claim = steps.iter().position(|a| {
        matches!(a, Action::WriteSyncKey(r) if r.term == 6 && r.leader == "node2" && r.handoff.is_none())
    });
    let promote = steps
        .iter()
        .position(|a| matches!(a, Action::Promote { .. }));
    assert!(
        matches!((claim, promote), (Some(c), Some(p)) if c < p),
        "{steps:?}: {}",
        d.reason
    );
    let d = run(node2(), view(false), 10_100);
    assert!(
        d.steps()
            .iter()
            .any(|a| matches!(a, Action::DetachFromPrimary { after_term: 5 })),
        "{:?}: {}",
        d.steps(),
        d.reason
    );
}

/// A target whose WAL does not reach the final position gets no shortcut.
#[test]
fn a_target_short_of_the_final_position_needs_the_reports() {
    let node2 = Node::new("node2")
        .running_standby(None, pos(1, 1000))
        .detached(5);
    let d = run(node2, handed_over(1000).build(), 10_100);
    assert!(d.steps().is_empty(), "{}", d.reason);
    assert!(d.reason.contains("no safe candidate"), "{}", d.reason);
}

/// The other standbys leave the key to the target.
#[test]
fn the_others_wait_for_the_target() {
    let node3 = Node::new("node3")
        .running_standby(None, pos(1, 1010))
        .detached(5);
    let view = handed_over(1010).detached("node3", 5, pos(1, 1010)).build();
    let d = run(node3, view, 10_100);
    assert!(d.steps().is_empty(), "{}", d.reason);
    assert!(d.reason.contains("node2 takes over"), "{}", d.reason);
}

/// A leader that runs a primary again in its own term (the request was
/// withdrawn after the shutdown) first clears its hand-over record: its
/// final position would no longer be the end of its WAL.
#[test]
fn a_leader_becoming_writable_again_clears_its_handoff_first() {
    let view = View::new()
        .established("node1", 5, &["node2", "node3"], 1)
        .handoff("node2", Some(pos(1, 1001)))
        .standby("node2", None, pos(1, 1001))
        .standby("node3", None, pos(1, 1001))
        .build();
    let node1 = Node::new("node1")
        .running_standby(None, pos(1, 1001))
        .lease(10_000);
    let d = run(node1, view, 10_100);
    let cleared = Action::WriteSyncKey(crate::view::SyncRecord {
        term: 5,
        leader: "node1".into(),
        set: set(&["node2", "node3"], 1),
        handoff: None,
    });
    let steps = d.steps();
    let c = steps.iter().position(|a| **a == cleared);
    let p = steps
        .iter()
        .position(|a| matches!(a, Action::Promote { .. }));
    assert!(matches!((c, p), (Some(c), Some(p)) if c < p), "{steps:?}");
}
