//! One behaviour per test, through the public `decide`.

use super::testutil::*;
use crate::action::{Action, Decision, DemoteKind};
use crate::decide;
use crate::local::{DataDir, SyncInDoubt};
use crate::member::Detached;
use crate::sync::{SyncSet, SyncStandbyNames};
use crate::time::Millis;
use crate::view::{DcsView, DynamicConfig, SyncRecord};

fn run(node: Node, view: DcsView, now: u64) -> Decision {
    decide(&node.0, &view, Millis(now))
}

fn steps(d: &Decision) -> Vec<Action> {
    d.steps().into_iter().cloned().collect()
}

fn unknown() -> DcsView {
    DcsView::Unknown {
        error: "timeout".into(),
        last_config: DynamicConfig::default(),
    }
}

/// A three-node cluster led by node1 (term 5), S = {node2, node3}, k = 1.
fn cluster() -> View {
    View::new()
        .established("node1", 5, &["node2", "node3"], 1)
        .primary("node1", pos(1, 1000))
        .standby("node2", Some("node1"), pos(1, 1000))
        .standby("node3", Some("node1"), pos(1, 990))
}

/// The same cluster after node1's lease expired.
fn leaderless() -> View {
    View::new().sync(5, "node1", &["node2", "node3"], 1)
}

fn leader_node() -> Node {
    Node::new("node1")
        .running_primary(pos(1, 1000))
        .lease(10_000)
        .replicas(&[("node2", 1000), ("node3", 990)])
        .names(quorum(&["node2", "node3"], 1), Some(900))
}

#[test]
fn every_known_view_decision_publishes_first() {
    let d = run(leader_node(), cluster().build(), 10_100);
    assert!(matches!(d.actions[0], Action::PublishMember(ref m) if m.name == "node1"));
}

#[test]
fn dcs_unknown_primary_with_fresh_lease_keeps_writing() {
    let d = run(leader_node(), unknown(), 10_500);
    assert_eq!(d.actions, vec![Action::RenewLeader], "{}", d.reason);
}

#[test]
fn dcs_unknown_primary_fences_before_the_lease_can_expire() {
    // lease renewed at 10_000, ttl 2 s, margin 0.5 s: fence from 11_500 on
    let d = run(leader_node(), unknown(), 11_500);
    assert_eq!(
        d.actions,
        vec![Action::Fence, Action::RenewLeader],
        "{}",
        d.reason
    );
    assert!(d.reason.contains("refusing writes"));
}

#[test]
fn dcs_unknown_standby_keeps_serving() {
    let n = Node::new("node2").running_standby(Some("node1"), pos(1, 10));
    assert!(run(n, unknown(), 0).actions.is_empty());
}

#[test]
fn leader_wakes_up_in_time_to_fence() {
    let d = run(leader_node(), cluster().build(), 11_300);
    assert_eq!(d.wake_in, Millis(200));
}

#[test]
fn paused_leader_only_renews() {
    let view = cluster().config(|c| c.paused = true).build();
    let d = run(leader_node(), view, 10_100);
    assert_eq!(steps(&d), vec![Action::RenewLeader]);
}

#[test]
fn paused_standby_does_not_promote() {
    let view = leaderless()
        .detached("node3", 5, pos(1, 990))
        .config(|c| c.paused = true)
        .build();
    let n = Node::new("node2")
        .running_standby(None, pos(1, 1000))
        .detached(5);
    assert!(steps(&run(n, view, 0)).is_empty());
}

#[test]
fn uninitialized_empty_node_races_for_initialize() {
    let n = Node::new("node1");
    let d = run(n, View::uninitialized().build(), 0);
    assert_eq!(steps(&d), vec![Action::AcquireInitialize]);
}

#[test]
fn initialize_winner_bootstraps_then_takes_the_lease_then_starts() {
    let view = View::new(); // initialize = node1
    let d = run(Node::new("node1"), view.build(), 0);
    assert_eq!(steps(&d), vec![Action::Bootstrap]);
    let n = Node::new("node1").stopped(DataDir::Primary, pos(1, 10));
    assert_eq!(
        steps(&run(n, View::new().build(), 0)),
        vec![Action::AcquireLeader]
    );
    let n = Node::new("node1")
        .stopped(DataDir::Primary, pos(1, 10))
        .lease(0);
    let d = run(n, View::new().leader("node1", 7).build(), 100);
    let claim = Action::WriteSyncKey(SyncRecord {
        term: 7,
        leader: "node1".into(),
        set: SyncSet::no_promotion(),
        handoff: None,
    });
    let start = Action::StartAsPrimary {
        sync_names: SyncStandbyNames::AnyStandby,
    };
    assert_eq!(steps(&d), vec![Action::RenewLeader, claim, start]);
}

#[test]
fn others_wait_for_the_bootstrapper() {
    let d = run(Node::new("node2"), View::new().build(), 0);
    assert!(steps(&d).is_empty());
    assert!(d.reason.contains("initialized by node1"), "{}", d.reason);
}

#[test]
fn no_leader_standby_detaches_first() {
    let n = Node::new("node2").running_standby(Some("node1"), pos(1, 1000));
    let d = run(n, leaderless().build(), 0);
    assert_eq!(steps(&d), vec![Action::DetachFromPrimary { after_term: 5 }]);
    assert_eq!(d.wake_in, Millis::ZERO);
}

#[test]
fn no_safe_candidate_names_the_missing_member() {
    let n = Node::new("node2")
        .running_standby(None, pos(1, 1000))
        .detached(5);
    let d = run(n, leaderless().build(), 0);
    assert!(steps(&d).is_empty());
    assert!(
        d.reason.contains(
            "no safe candidate: need the final LSN of 2 of {node2, node3}, node3 unreachable"
        ),
        "{}",
        d.reason
    );
}

#[test]
fn candidate_with_quorum_of_reports_races_for_the_key() {
    let view = leaderless().detached("node3", 5, pos(1, 990)).build();
    let n = Node::new("node2")
        .running_standby(None, pos(1, 1000))
        .detached(5);
    let d = run(n, view, 0);
    assert_eq!(steps(&d), vec![Action::AcquireLeader], "{}", d.reason);
}

#[test]
fn candidate_steps_aside_for_a_member_ahead() {
    let view = leaderless().detached("node3", 5, pos(1, 1010)).build();
    let n = Node::new("node2")
        .running_standby(None, pos(1, 1000))
        .detached(5);
    let d = run(n, view, 0);
    assert!(steps(&d).is_empty());
    assert!(d.reason.contains("node3 is at"), "{}", d.reason);
}

#[test]
fn report_for_an_older_term_does_not_count() {
    let view = leaderless().detached("node3", 4, pos(1, 990)).build();
    let n = Node::new("node2")
        .running_standby(None, pos(1, 1000))
        .detached(5);
    let d = run(n, view, 0);
    assert!(steps(&d).is_empty());
    assert!(
        d.reason.contains("node3 detached for term 4"),
        "{}",
        d.reason
    );
}

#[test]
fn member_still_streaming_does_not_count() {
    let view = leaderless()
        .standby("node3", Some("node1"), pos(1, 990))
        .build();
    let n = Node::new("node2")
        .running_standby(None, pos(1, 1000))
        .detached(5);
    let d = run(n, view, 0);
    assert!(
        d.reason.contains("node3 still streaming from node1"),
        "{}",
        d.reason
    );
}

#[test]
fn candidate_outside_s_may_promote_with_reports_of_s() {
    let view = View::new()
        .sync(5, "node1", &["node3"], 1)
        .detached("node3", 5, pos(1, 990))
        .build();
    let n = Node::new("node2")
        .running_standby(None, pos(1, 995))
        .detached(5);
    assert_eq!(steps(&run(n, view, 0)), vec![Action::AcquireLeader]);
}

#[test]
fn async_record_allows_no_automatic_promotion() {
    let view = View::new().sync(5, "node1", &[], 0).build();
    let n = Node::new("node2")
        .running_standby(None, pos(1, 995))
        .detached(5);
    let d = run(n, view, 0);
    assert!(steps(&d).is_empty());
    assert!(d.reason.contains("allows no promotion"), "{}", d.reason);
}

#[test]
fn nofailover_member_is_never_a_candidate() {
    let view = leaderless().detached("node3", 5, pos(1, 990)).build();
    let n = Node::new("node2")
        .running_standby(None, pos(1, 1000))
        .detached(5)
        .edit(|l| l.tags.nofailover = true);
    assert!(steps(&run(n, view, 0)).is_empty());
}

#[test]
fn new_holder_rechecks_claims_term_then_promotes() {
    let view = leaderless()
        .leader("node2", 9)
        .detached("node3", 5, pos(1, 990))
        .build();
    let n = Node::new("node2")
        .running_standby(None, pos(1, 1000))
        .detached(5)
        .lease(0);
    let d = run(n, view, 100);
    let claim = Action::WriteSyncKey(SyncRecord {
        term: 9,
        leader: "node2".into(),
        set: set(&["node2", "node3"], 1),
        handoff: None,
    });
    let promote = Action::Promote {
        sync_names: quorum(&["node3"], 1),
    };
    assert_eq!(
        steps(&d),
        vec![Action::RenewLeader, claim, promote],
        "{}",
        d.reason
    );
}

#[test]
fn new_holder_behind_someone_releases_the_key() {
    let view = leaderless()
        .leader("node2", 9)
        .detached("node3", 5, pos(1, 1010))
        .build();
    let n = Node::new("node2")
        .running_standby(None, pos(1, 1000))
        .detached(5)
        .lease(0);
    let d = run(n, view, 100);
    assert_eq!(steps(&d), vec![Action::RenewLeader, Action::ReleaseLeader]);
}

#[test]
fn primary_with_expired_lease_retakes_it_when_it_led_last() {
    let n = leader_node();
    let d = run(n, leaderless().build(), 20_000);
    assert_eq!(steps(&d), vec![Action::Fence, Action::AcquireLeader]);
}

#[test]
fn primary_superseded_by_a_later_leader_stops() {
    let view = View::new().sync(6, "node2", &["node3"], 1).build();
    let d = run(leader_node(), view, 20_000);
    assert_eq!(steps(&d), vec![Action::Demote(DemoteKind::Immediate)]);
}

#[test]
fn primary_stops_when_another_node_holds_the_key() {
    let view = View::new().established("node2", 9, &["node3"], 1).build();
    let d = run(leader_node(), view, 20_000);
    assert_eq!(steps(&d), vec![Action::Demote(DemoteKind::Immediate)]);
}

fn new_leader_view() -> View {
    View::new()
        .established("node2", 9, &["node2", "node3"], 1)
        .primary("node2", pos(2, 1100))
}

#[test]
fn standby_follows_an_established_running_leader() {
    let n = Node::new("node3")
        .running_standby(None, pos(1, 990))
        .detached(5);
    let d = run(n, new_leader_view().build(), 0);
    assert!(matches!(steps(&d)[..], [Action::FollowLeader(ref u)] if u.name == "node2"));
}

#[test]
fn standby_does_not_follow_a_leader_that_has_not_claimed_its_term() {
    let view = leaderless()
        .leader("node2", 9)
        .standby("node2", None, pos(1, 1000))
        .build();
    let n = Node::new("node3")
        .running_standby(None, pos(1, 990))
        .detached(5);
    assert!(steps(&run(n, view, 0)).is_empty());
}

/// A leader that claimed its term but still promotes is followed at once by
/// a running standby (cascading until it is a primary); a stopped node
/// still waits for a running primary to rejoin from.
#[test]
fn standby_follows_a_claimed_leader_while_it_promotes() {
    let view = || {
        View::new()
            .established("node2", 9, &["node2", "node3"], 1)
            .standby("node2", None, pos(1, 1000))
            .build()
    };
    let n = Node::new("node3")
        .running_standby(None, pos(1, 990))
        .detached(5);
    let d = run(n, view(), 0);
    assert!(
        matches!(steps(&d)[..], [Action::FollowLeader(ref u)] if u.name == "node2"),
        "{}",
        d.reason
    );
    let n = Node::new("node3").running_standby(Some("node2"), pos(1, 990));
    assert!(steps(&run(n, view(), 0)).is_empty());
    let n = Node::new("node1").stopped(DataDir::Primary, pos(1, 1200));
    assert!(steps(&run(n, view(), 0)).is_empty());
}

#[test]
fn standby_of_the_old_primary_detaches_when_a_new_holder_appears() {
    let view = leaderless().leader("node2", 9).build();
    let n = Node::new("node3").running_standby(Some("node1"), pos(1, 990));
    let d = run(n, view, 0);
    assert_eq!(steps(&d), vec![Action::DetachFromPrimary { after_term: 5 }]);
}

#[test]
fn former_primary_rewinds_and_recloned_when_rewind_failed() {
    let n = Node::new("node1").stopped(DataDir::Primary, pos(1, 1200));
    let d = run(n, new_leader_view().build(), 0);
    assert!(matches!(steps(&d)[..], [Action::Rewind(ref u)] if u.name == "node2"));
    let n = Node::new("node1")
        .stopped(DataDir::Primary, pos(1, 1200))
        .edit(|l| l.pg.rewind_failed = true);
    let d = run(n, new_leader_view().build(), 0);
    assert!(matches!(steps(&d)[..], [Action::Reclone(_)]));
}

#[test]
fn empty_node_clones_and_standby_data_starts_following() {
    let d = run(Node::new("node3"), new_leader_view().build(), 0);
    assert!(matches!(steps(&d)[..], [Action::CloneFromLeader(_)]));
    let n = Node::new("node3").stopped(DataDir::Standby, pos(1, 10));
    let d = run(n, new_leader_view().build(), 0);
    assert!(
        matches!(steps(&d)[..], [Action::StartAsStandby { upstream: Some(ref u) }] if u.name == "node2")
    );
}

#[test]
fn diverged_standby_rewinds() {
    let n = Node::new("node3")
        .running_standby(Some("node2"), pos(1, 990))
        .edit(|l| l.pg.diverged = true);
    let d = run(n, new_leader_view().build(), 0);
    assert!(matches!(steps(&d)[..], [Action::Rewind(_)]));
}

#[test]
fn leader_fences_when_renewals_fail_and_unfences_after() {
    let d = run(leader_node(), cluster().build(), 11_600);
    assert_eq!(steps(&d), vec![Action::Fence, Action::RenewLeader]);
    let fenced = leader_node().edit(|l| l.pg.fenced = true);
    let d = run(fenced, cluster().build(), 10_100);
    assert_eq!(steps(&d)[..2], [Action::RenewLeader, Action::Unfence]);
}

#[test]
fn leader_drops_a_dead_standby_from_the_names_first() {
    let n = leader_node().replicas(&[("node2", 1000)]);
    let d = run(n, cluster().build(), 10_100);
    let set_names = Action::SetSyncStandbyNames(quorum(&["node2"], 1));
    assert_eq!(
        steps(&d),
        vec![Action::RenewLeader, set_names],
        "{}",
        d.reason
    );
}

#[test]
fn leader_records_the_smaller_set_once_the_rest_flushed() {
    let n = leader_node()
        .replicas(&[("node2", 1000)])
        .names(quorum(&["node2"], 1), Some(1000));
    let d = run(n, cluster().build(), 10_100);
    let write = Action::WriteSyncKey(SyncRecord {
        term: 5,
        leader: "node1".into(),
        set: set(&["node2"], 1),
        handoff: None,
    });
    assert_eq!(steps(&d), vec![Action::RenewLeader, write], "{}", d.reason);
}

/// A `/sync` write whose outcome is unknown may still land while its
/// guard holds (key ours in its term, `/sync` at the revision it expects):
/// the leader relies on nothing in `/sync` (here: it does not drop node3
/// from the names) and first rewrites `/sync` as read, guarded by that
/// revision. Once `/sync` moved on, the doubt is over.
#[test]
fn leader_confirms_sync_after_a_write_with_unknown_outcome() {
    let n = || {
        leader_node().replicas(&[("node2", 1000)]).edit(|l| {
            l.sync_in_doubt = Some(SyncInDoubt {
                term: 5,
                revision: 40,
            })
        })
    };
    let at = |rev: u64| match cluster().build() {
        DcsView::Known(mut v) => {
            v.sync_revision = rev;
            DcsView::Known(v)
        }
        other => other,
    };
    let d = run(n(), at(40), 10_100);
    let as_read = Action::WriteSyncKey(SyncRecord {
        term: 5,
        leader: "node1".into(),
        set: set(&["node2", "node3"], 1),
        handoff: None,
    });
    assert_eq!(
        steps(&d),
        vec![Action::RenewLeader, as_read],
        "{}",
        d.reason
    );
    assert!(d.reason.contains("may still land"), "{}", d.reason);
    // /sync moved on (the write landed, or the confirmation did): the
    // leader goes on with its sync plan.
    let d = run(n(), at(41), 10_100);
    let set_names = Action::SetSyncStandbyNames(quorum(&["node2"], 1));
    assert_eq!(
        steps(&d),
        vec![Action::RenewLeader, set_names],
        "{}",
        d.reason
    );
    // Another term: that write can never land.
    let d = run(
        n().edit(|l| {
            l.sync_in_doubt = Some(SyncInDoubt {
                term: 4,
                revision: 40,
            })
        }),
        at(40),
        10_100,
    );
    assert!(!d.reason.contains("may still land"), "{}", d.reason);
}

#[test]
fn leader_with_no_standby_keeps_blocking_by_default() {
    let n = leader_node().replicas(&[]);
    let d = run(n, cluster().build(), 10_100);
    assert_eq!(steps(&d), vec![Action::RenewLeader]);
    assert!(d.reason.contains("writes wait"), "{}", d.reason);
}

#[test]
fn leader_with_no_standby_falls_back_to_async_loudly_when_allowed() {
    let n = Node::new("node1")
        .running_primary(pos(1, 1000))
        .lease(10_000)
        .names(quorum(&["node2"], 1), Some(900));
    let view = View::new()
        .established("node1", 5, &["node2"], 1)
        .config(|c| c.allow_async_fallback = true)
        .build();
    let d = run(n, view, 10_100);
    assert!(d.reason.contains("ASYNCHRONOUS"), "{}", d.reason);
    assert!(
        matches!(steps(&d)[1], Action::WriteSyncKey(ref r) if r.set == SyncSet::no_promotion())
    );
}

#[test]
fn switchover_demotes_gracefully_when_target_is_sync_and_caught_up() {
    let view = cluster().switchover(Some("node1"), Some("node2")).build();
    let d = run(leader_node(), view, 10_100);
    let s = steps(&d);
    assert_eq!(s.len(), 3, "{s:?}");
    assert_eq!(s[0], Action::RenewLeader);
    assert!(
        matches!(&s[1], Action::WriteSyncKey(r)
            if r.handoff.as_ref().is_some_and(|h| h.to == "node2" && h.final_position.is_none())),
        "the target is recorded first: {s:?}"
    );
    assert_eq!(s[2], Action::Demote(DemoteKind::Graceful));
}

#[test]
fn switchover_waits_for_a_lagging_target() {
    let view = cluster().switchover(Some("node1"), Some("node3")).build();
    let n = leader_node().replicas(&[("node2", 1000), ("node3", 0)]);
    let n = n.edit(|l| l.pg.position = pos(1, 100 << 20));
    let d = run(n, view, 10_100);
    assert!(d.reason.contains("catch up"), "{}", d.reason);
}

#[test]
fn leader_releases_the_key_after_the_switchover_shutdown() {
    let view = cluster().switchover(Some("node1"), Some("node2")).build();
    let n = Node::new("node1")
        .stopped(DataDir::Standby, pos(1, 1000))
        .lease(10_000);
    let d = run(n, view, 10_100);
    assert_eq!(steps(&d), vec![Action::RenewLeader, Action::ReleaseLeader]);
}

#[test]
fn others_wait_for_the_switchover_target_and_the_old_primary_abstains() {
    let view = leaderless()
        .switchover(Some("node1"), Some("node2"))
        .detached("node2", 5, pos(1, 1000))
        .detached("node3", 5, pos(1, 1000))
        .build();
    let n3 = Node::new("node3")
        .running_standby(None, pos(1, 1000))
        .detached(5);
    let d = run(n3, view.clone(), 0);
    assert!(
        d.reason.contains("waiting for switchover target node2"),
        "{}",
        d.reason
    );
    let n1 = Node::new("node1")
        .running_standby(None, pos(1, 1000))
        .detached(5);
    let d = run(n1, view, 0);
    assert!(d.reason.contains("handed over"), "{}", d.reason);
}

#[test]
fn new_leader_clears_a_finished_switchover() {
    let view = new_leader_view()
        .switchover(Some("node1"), Some("node2"))
        .build();
    let n = Node::new("node2")
        .running_primary(pos(2, 1100))
        .lease(0)
        .names(quorum(&["node3"], 1), Some(1100));
    let d = run(n, view, 100);
    assert!(steps(&d).contains(&Action::ClearSwitchover), "{}", d.reason);
}

#[test]
fn leader_restarts_its_crashed_postgres_then_hands_over_after_timeout() {
    let n = Node::new("node1")
        .stopped(DataDir::Primary, pos(1, 1000))
        .lease(10_000)
        .edit(|l| l.pg.stopped_since = Some(Millis(10_000)));
    let d = run(n.edit(|_| ()), cluster().build(), 10_100);
    assert!(
        matches!(steps(&d)[1], Action::StartAsPrimary { .. }),
        "{}",
        d.reason
    );
    let n = Node::new("node1")
        .stopped(DataDir::Primary, pos(1, 1000))
        .lease(15_000)
        .edit(|l| l.pg.stopped_since = Some(Millis(10_000)));
    let d = run(n, cluster().build(), 15_100);
    assert_eq!(steps(&d), vec![Action::RenewLeader, Action::ReleaseLeader]);
}

#[test]
fn manual_failover_with_data_loss_skips_the_quorum() {
    let view = leaderless().failover("node3", true).build();
    let n = Node::new("node3")
        .running_standby(None, pos(1, 900))
        .detached(5);
    assert_eq!(steps(&run(n, view, 0)), vec![Action::AcquireLeader]);
}

#[test]
fn manual_failover_without_data_loss_still_needs_the_quorum() {
    let view = leaderless().failover("node3", false).build();
    let n = Node::new("node3")
        .running_standby(None, pos(1, 900))
        .detached(5);
    let d = run(n, view, 0);
    assert!(steps(&d).is_empty());
    assert!(d.reason.contains("no safe candidate"), "{}", d.reason);
}

#[test]
fn other_nodes_wait_for_the_failover_target() {
    let view = leaderless()
        .failover("node3", false)
        .detached("node3", 5, pos(1, 1000))
        .detached("node2", 5, pos(1, 1000))
        .build();
    let n = Node::new("node2")
        .running_standby(None, pos(1, 1000))
        .detached(5);
    let d = run(n, view, 0);
    assert!(d.reason.contains("failover target node3"), "{}", d.reason);
}

#[test]
fn published_record_reflects_the_detach_promise() {
    let n = Node::new("node2")
        .running_standby(None, pos(1, 1000))
        .detached(5);
    let d = run(n, leaderless().build(), 0);
    let m = d.published().unwrap();
    assert_eq!(m.detached, Some(Detached { after_term: 5 }));
    assert_eq!(m.streaming_from, None);
}

#[test]
fn last_leader_restarted_as_standby_is_a_candidate_without_reports() {
    let n = Node::new("node1")
        .running_standby(None, pos(1, 1200))
        .detached(5);
    let d = run(n, leaderless().build(), 0);
    assert_eq!(steps(&d), vec![Action::AcquireLeader], "{}", d.reason);
    assert!(d.reason.contains("last established leader"), "{}", d.reason);
}

#[test]
fn others_do_not_wait_for_a_target_that_cannot_promote() {
    // node3 is the switchover target but its report is for an older term,
    // so it cannot pass the rule: node2 does not defer to it (it is then
    // held back only by the rule itself).
    let view = leaderless()
        .switchover(Some("node1"), Some("node3"))
        .detached("node3", 4, pos(1, 1000))
        .build();
    let n = Node::new("node2")
        .running_standby(None, pos(1, 1000))
        .detached(5);
    let d = run(n, view, 0);
    assert!(
        !d.reason.contains("waiting for switchover target"),
        "{}",
        d.reason
    );
}

#[test]
fn new_holder_that_forgot_its_detach_detaches_again() {
    let view = leaderless()
        .leader("node2", 9)
        .detached("node3", 5, pos(1, 990))
        .build();
    let n = Node::new("node2")
        .running_standby(None, pos(1, 1000))
        .lease(0);
    let d = run(n, view, 100);
    let detach = Action::DetachFromPrimary { after_term: 5 };
    assert_eq!(steps(&d), vec![Action::RenewLeader, detach], "{}", d.reason);
}

#[test]
fn leader_with_unknown_role_does_not_restart_a_running_server() {
    let n = leader_node().edit(|l| l.pg.role = crate::member::Role::Unknown);
    let d = run(n, cluster().build(), 10_100);
    assert_eq!(steps(&d), vec![Action::RenewLeader], "{}", d.reason);
}

/// The promise "detached after term T" must never name the term of a leader
/// we will follow: once the holder claimed its term, standbys do not detach
/// (they follow it, even while it still promotes).
#[test]
fn standby_does_not_detach_for_the_term_of_a_claimed_leader() {
    let view = View::new()
        .established("node2", 9, &["node2", "node3"], 1)
        .standby("node2", None, pos(1, 1000))
        .build();
    let n = Node::new("node3").running_standby(Some("node1"), pos(1, 990));
    let d = run(n, view, 0);
    assert!(
        !d.steps()
            .iter()
            .any(|a| matches!(a, Action::DetachFromPrimary { .. })),
        "{:?}",
        d.actions
    );
}

/// A nofailover member ahead of everyone must not block failover when the
/// other reports suffice (here it is not even in S).
#[test]
fn nofailover_member_ahead_outside_s_does_not_block() {
    let view = View::new()
        .sync(5, "node1", &["node2"], 1)
        .detached("node4", 5, pos(1, 2000))
        .edit_member("node4", |m| m.tags.nofailover = true)
        .build();
    let n = Node::new("node2")
        .running_standby(None, pos(1, 1000))
        .detached(5);
    assert_eq!(steps(&run(n, view, 0)), vec![Action::AcquireLeader]);
}

/// A nofailover member of S that is ahead and whose report is needed: its
/// extra WAL may hold acknowledged commits, so nobody promotes.
#[test]
fn needed_nofailover_report_ahead_blocks_promotion() {
    let view = leaderless()
        .detached("node3", 5, pos(1, 2000))
        .edit_member("node3", |m| m.tags.nofailover = true)
        .build();
    let n = Node::new("node2")
        .running_standby(None, pos(1, 1000))
        .detached(5);
    let d = run(n, view, 0);
    assert!(steps(&d).is_empty());
    assert!(
        d.reason.contains("node3 (nofailover) is ahead"),
        "{}",
        d.reason
    );
}

#[test]
fn nofailover_node_does_not_bootstrap() {
    let n = Node::new("node1").edit(|l| l.tags.nofailover = true);
    let d = run(n, View::uninitialized().build(), 0);
    assert!(steps(&d).is_empty(), "{}", d.reason);
}

fn promises(members: &[&str], k: u32, from: &[(&str, u64)]) -> crate::failsafe::Confirmations {
    let mut c = crate::failsafe::Confirmations::new(set(members, k));
    for (m, sent) in from {
        c.record(m, Millis(*sent), &DynamicConfig::default());
    }
    c
}

/// Failsafe: past the fence point, k of S promised: writes go on (and a
/// fence put up earlier is lifted); without them, the fence as before.
#[test]
fn dcs_unknown_primary_past_its_lease_by_failsafe_rule() {
    type Case<'a> = (&'a str, Vec<(&'a str, u64)>, bool, Vec<Action>);
    let cases: Vec<Case> = vec![
        (
            "node2 promised",
            vec![("node2", 11_200)],
            false,
            vec![Action::RenewLeader],
        ),
        (
            "promise back after a fence",
            vec![("node3", 11_200)],
            true,
            vec![Action::Unfence, Action::RenewLeader],
        ),
        (
            "promise ran out",
            vec![("node2", 10_000)],
            false,
            vec![Action::Fence, Action::RenewLeader],
        ),
        (
            "no promise",
            vec![],
            false,
            vec![Action::Fence, Action::RenewLeader],
        ),
    ];
    for (what, from, fenced, want) in cases {
        let n = leader_node().edit(|l| {
            l.failsafe = Some(promises(&["node2", "node3"], 1, &from));
            l.pg.fenced = fenced;
        });
        let d = run(n, unknown(), 11_600);
        assert_eq!(d.actions, want, "{what}: {}", d.reason);
        assert!(d.reason.contains("failsafe"), "{what}: {}", d.reason);
    }
}

/// The knob off: the fence as without failsafe mode, promises or not.
#[test]
fn dcs_unknown_primary_fences_with_failsafe_mode_off() {
    let n = leader_node()
        .edit(|l| l.failsafe = Some(promises(&["node2", "node3"], 1, &[("node2", 11_200)])));
    let off = DcsView::Unknown {
        error: "timeout".into(),
        last_config: DynamicConfig {
            failsafe_mode: false,
            ..Default::default()
        },
    };
    let d = run(n, off, 11_600);
    assert_eq!(
        d.actions,
        vec![Action::Fence, Action::RenewLeader],
        "{}",
        d.reason
    );
}

/// A standby bound by a promise to node1 neither detaches nor races when it
/// reads the DCS and finds the key free, nor follows another leader; once
/// the promise ran out it detaches as usual.
#[test]
fn a_promised_standby_stays_with_its_leader() {
    let node = || {
        Node::new("node2")
            .running_standby(Some("node1"), pos(1, 1000))
            .edit(|l| {
                l.promise = Some(crate::failsafe::Promise {
                    leader: "node1".into(),
                    term: 5,
                    granted_at: Millis(0),
                    until: Millis(2000),
                })
            })
    };
    let free = leaderless()
        .standby("node2", Some("node1"), pos(1, 1000))
        .build();
    let d = run(node(), free.clone(), 1000);
    assert!(steps(&d).is_empty(), "{}", d.reason);
    assert!(d.reason.contains("promised node1"), "{}", d.reason);
    let other = leaderless().leader("node3", 9).build();
    assert!(steps(&run(node(), other, 1000)).is_empty());
    let d = run(node(), free, 2000);
    assert!(
        matches!(steps(&d)[..], [Action::DetachFromPrimary { after_term: 5 }]),
        "{}",
        d.reason
    );
    // with node1 still leading the promise changes nothing
    let d = run(node(), cluster().build(), 1000);
    assert!(steps(&d).is_empty(), "{}", d.reason);
    assert!(d.reason.contains("standby of node1"), "{}", d.reason);
}

/// The old leader finds its key gone after an outage but k of S still
/// promise: it re-takes the key without fencing first.
#[test]
fn leaderless_primary_with_promises_retakes_without_fence() {
    let n = leader_node()
        .edit(|l| l.failsafe = Some(promises(&["node2", "node3"], 1, &[("node2", 11_200)])));
    let d = run(n, leaderless().build(), 11_600);
    assert_eq!(steps(&d), vec![Action::AcquireLeader], "{}", d.reason);
    let d = run(leader_node(), leaderless().build(), 11_600);
    assert_eq!(
        steps(&d),
        vec![Action::Fence, Action::AcquireLeader],
        "{}",
        d.reason
    );
}

fn unanswered(since: u64, progress_at: u64) -> Option<crate::hung::Unanswered> {
    Some(crate::hung::Unanswered {
        since: Millis(since),
        progress_at: Millis(progress_at),
    })
}

/// A leader whose PostgreSQL does not answer: below hung_timeout (6 s) it
/// keeps its role and lease; busy (WAL moving) likewise; hung: kill first,
/// then give up the key. The reason says which.
#[test]
fn leader_stalled_busy_or_hung() {
    let cases: Vec<(&str, u64, u64, Vec<Action>, &str)> = vec![
        (
            "stalled 5.9 s",
            10_000,
            10_000,
            vec![Action::RenewLeader],
            "stalled",
        ),
        ("busy", 4_000, 12_000, vec![Action::RenewLeader], "busy"),
        (
            "hung",
            4_000,
            4_000,
            vec![Action::Demote(DemoteKind::Kill), Action::ReleaseLeader],
            "hung",
        ),
    ];
    for (what, since, progress, want, word) in cases {
        let n = leader_node().edit(|l| l.pg.unanswered = unanswered(since, progress));
        let d = run(n, cluster().build(), 15_900);
        assert_eq!(steps(&d), want, "{what}: {}", d.reason);
        assert!(d.reason.contains(word), "{what}: {}", d.reason);
    }
}

/// A standby whose PostgreSQL hangs takes no step (its record, role
/// unknown, takes it out of the sets); one that stalls briefly neither.
#[test]
fn standby_stalled_or_hung_takes_no_step() {
    for since in [9_000, 1_000] {
        let n = Node::new("node2")
            .running_standby(Some("node1"), pos(1, 1000))
            .edit(|l| l.pg.unanswered = unanswered(since, since));
        let d = run(n, cluster().build(), 10_000);
        assert!(steps(&d).is_empty(), "{}", d.reason);
    }
}

/// After killing its hung primary and giving up the key, a node does not
/// start PostgreSQL again at once (it would win as the last leader); it
/// waits hung_timeout for another member, then takes part again.
#[test]
fn a_node_that_gave_up_a_hung_primary_waits_for_another_leader() {
    let n = || {
        Node::new("node1")
            .stopped(DataDir::Primary, pos(1, 1000))
            .edit(|l| l.gave_up_hung_at = Some(Millis(10_000)))
    };
    let others = || {
        leaderless()
            .standby("node2", Some("node1"), pos(1, 990))
            .standby("node3", Some("node1"), pos(1, 980))
    };
    let d = run(n(), others().build(), 12_000);
    assert!(steps(&d).is_empty(), "{}", d.reason);
    assert!(d.reason.contains("hung"), "{}", d.reason);
    // nobody else could promote: no wait
    let d = run(n(), leaderless().build(), 12_000);
    assert!(!steps(&d).is_empty(), "{}", d.reason);
    let d = run(n(), others().build(), 16_000);
    assert!(
        matches!(steps(&d)[..], [Action::StartAsStandby { upstream: None }]),
        "{}",
        d.reason
    );
}

/// A standby whose record says its server runs with role unknown (hung)
/// leaves the synchronous set, though its walsender still looks streaming.
#[test]
fn a_hung_standby_leaves_the_sync_set() {
    let view = cluster()
        .edit_member("node3", |m| m.role = crate::member::Role::Unknown)
        .build();
    let d = run(leader_node(), view, 10_100);
    assert!(
        steps(&d).iter().any(|a| matches!(
            a,
            Action::SetSyncStandbyNames(SyncStandbyNames::Quorum(s)) if s.members.len() == 1
        )),
        "{}",
        d.reason
    );
}
