//! The chaos checker on hand-built histories: a clean history passes, and
//! each rule catches the one promise a test breaks. Pure data, no cluster.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking

use pgha_testkit::chaos::check::{check, sample_history, to_ranges, CheckReport, SplitBrain};
use pgha_testkit::chaos::history::{
    Fault, FinalState, History, NodeContents, Op, OpKind, Outcome, Route, TimelineSwitch,
    HISTORY_VERSION,
};

fn write(
    client: u32,
    id: i64,
    span: (u64, u64),
    outcome: Outcome,
    at: Option<(&str, u32, &str)>,
) -> Op {
    Op {
        client,
        session: 0,
        kind: OpKind::Write,
        route: Route::Proxy,
        id,
        start_ms: span.0,
        end_ms: span.1,
        outcome,
        node: at.map(|a| a.0.to_string()),
        timeline: at.map(|a| a.1),
        lsn: at.map(|a| a.2.to_string()),
        expect: None,
        saw: None,
    }
}

fn ok(client: u32, id: i64, span: (u64, u64), node: &str, tl: u32, lsn: &str) -> Op {
    write(client, id, span, Outcome::Ok, Some((node, tl, lsn)))
}

fn read(client: u32, span: (u64, u64), expect: i64, saw: bool) -> Op {
    Op {
        kind: OpKind::Read,
        id: 0,
        node: Some("node2".into()),
        timeline: None,
        lsn: None,
        expect: Some(expect),
        saw: Some(saw),
        ..write(client, 0, span, Outcome::Ok, None)
    }
}

fn fault(kind: &str, start_ms: u64, healed_ms: u64) -> Fault {
    Fault {
        kind: kind.into(),
        target: "node1".into(),
        target_role: "primary".into(),
        start_ms,
        healed_ms: Some(healed_ms),
        detail: String::new(),
    }
}

fn contents(node: &str, role: &str, ids: &[i64]) -> NodeContents {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    NodeContents {
        node: node.into(),
        role: role.into(),
        id_ranges: to_ranges(&ids),
        duplicates: Vec::new(),
    }
}

/// node1 primary on timeline 1 until 0/5000000, then node2 on timeline 2.
/// Ids 1-3 acknowledged before the failover, 4 failed, 5 unknown, 6-7
/// acknowledged after. node3 lacks id 7 (one lost write); `clean_fixed`
/// puts it back.
fn clean() -> History {
    let ops = vec![
        ok(0, 1, (0, 10), "node1", 1, "0/3000100"),
        ok(1, 2, (5, 20), "node1", 1, "0/3000200"),
        ok(0, 3, (100, 110), "node1", 1, "0/4000000"),
        write(
            0,
            4,
            (1000, 1500),
            Outcome::Failed("no primary".into()),
            None,
        ),
        write(1, 5, (990, 1200), Outcome::Unknown("reset".into()), None),
        ok(0, 6, (3000, 3010), "node2", 2, "0/5000100"),
        read(0, (3010, 3012), 6, true),
        ok(1, 7, (3005, 3020), "node2", 2, "0/5000200"),
    ];
    let all = [1, 2, 3, 5, 6, 7];
    History {
        version: HISTORY_VERSION,
        seed: 7,
        replay: "replay".into(),
        started_unix_ms: 0,
        duration_ms: 4000,
        nodes: vec!["node1".into(), "node2".into(), "node3".into()],
        network: "loopback".into(),
        ops,
        faults: vec![fault("kill_postgres", 1000, 2000)],
        roles: Vec::new(),
        final_state: Some(FinalState {
            at_ms: 5000,
            primary: "node2".into(),
            timeline_history: vec![TimelineSwitch {
                timeline: 1,
                switch_lsn: "0/5000000".into(),
            }],
            timeline: 2,
            nodes: vec![
                contents("node1", "standby", &all),
                contents("node2", "primary", &all),
                contents("node3", "standby", &all[..5]),
            ],
        }),
    }
}

fn node<'a>(h: &'a mut History, name: &str) -> &'a mut NodeContents {
    let fs = h.final_state.as_mut().unwrap();
    fs.nodes.iter_mut().find(|n| n.node == name).unwrap()
}

/// `clean()` without its lost write: every promise kept.
fn clean_fixed() -> History {
    let mut h = clean();
    node(&mut h, "node3").id_ranges = to_ranges(&[1, 2, 3, 6, 7]);
    h
}

#[test]
fn clean_history_passes() {
    let r = check(&clean_fixed());
    assert!(r.ok(), "{:#?}", r.violations());
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    assert_eq!(
        (
            r.writes.total,
            r.writes.ok,
            r.writes.failed,
            r.writes.unknown
        ),
        (7, 5, 1, 1)
    );
    assert_eq!((r.reads.total, r.reads.ok), (1, 1));
}

#[test]
fn unknown_writes_may_be_present_or_absent() {
    // clean_fixed has id 5 on node1/node2, absent on node3.
    assert!(check(&clean_fixed()).ok());
}

#[test]
fn lost_write_on_a_standby_is_caught() {
    // clean() lacks id 7 on node3.
    let r = check(&clean());
    assert!(!r.ok());
    assert_eq!(r.lost_count(), 1);
    assert_eq!(r.lost.len(), 1);
    assert_eq!(
        (r.lost[0].node.as_str(), r.lost[0].ids.as_slice()),
        ("node3", &[7][..])
    );
}

#[test]
fn lost_write_on_the_primary_is_caught() {
    let mut h = clean_fixed();
    node(&mut h, "node2").id_ranges = to_ranges(&[2, 3, 5, 6, 7]);
    let r = check(&h);
    assert!(!r.ok());
    assert_eq!(r.lost[0].node, "node2");
    assert_eq!(r.lost[0].ids, vec![1]);
}

#[test]
fn failed_write_present_is_a_phantom() {
    let mut h = clean_fixed();
    node(&mut h, "node1").id_ranges = to_ranges(&[1, 2, 3, 4, 5, 6, 7]);
    let r = check(&h);
    assert!(!r.ok());
    assert_eq!(r.phantom_count(), 1);
    assert_eq!(r.phantom[0].node, "node1");
    assert_eq!(r.lost_count(), 0);
}

#[test]
fn duplicates_are_caught() {
    let mut h = clean_fixed();
    node(&mut h, "node3").duplicates = vec![6, 6];
    let r = check(&h);
    assert!(!r.ok());
    assert_eq!(r.duplicated_count(), 1);
    assert_eq!(r.duplicated[0].ids, vec![6]);
}

#[test]
fn write_past_the_switch_point_is_off_history() {
    let mut h = clean_fixed();
    // Acknowledged by node1 on timeline 1 after the point where node2 forked.
    h.ops.push(ok(2, 8, (1000, 1010), "node1", 1, "0/5000010"));
    for n in ["node1", "node2", "node3"] {
        node(&mut h, n).id_ranges = to_ranges(&[1, 2, 3, 5, 6, 7, 8]);
    }
    let r = check(&h);
    assert!(!r.ok());
    assert_eq!(r.lost_count(), 0);
    match r.split_brain.as_slice() {
        [SplitBrain::OffHistory {
            node,
            timeline,
            writes,
            ..
        }] => {
            assert_eq!((node.as_str(), *timeline, writes.len()), ("node1", 1, 1));
            assert_eq!(writes[0].id, 8);
        }
        other => panic!("{other:#?}"),
    }
}

#[test]
fn write_at_exactly_the_switch_lsn_is_off_history() {
    let mut h = clean_fixed();
    h.ops[2].lsn = Some("0/5000000".into());
    assert_eq!(check(&h).split_brain_count(), 1);
}

#[test]
fn timeline_missing_from_history_or_later_is_off_history() {
    let mut h = clean_fixed();
    h.ops[5].timeline = Some(3);
    h.ops[7].timeline = Some(3);
    let r = check(&h);
    assert!(!r.ok());
    assert!(matches!(
        r.split_brain[0],
        SplitBrain::OffHistory { timeline: 3, .. }
    ));

    let mut h = clean_fixed();
    let fs = h.final_state.as_mut().unwrap();
    fs.timeline = 3;
    fs.timeline_history.push(TimelineSwitch {
        timeline: 1,
        switch_lsn: "0/6000000".into(),
    });
    fs.timeline_history.remove(0);
    // Timeline 2 is not an ancestor of timeline 3 here.
    let r = check(&h);
    assert!(matches!(
        &r.split_brain[0],
        SplitBrain::OffHistory {
            timeline: 2,
            switch_lsn: None,
            ..
        }
    ));
}

#[test]
fn an_old_primary_acknowledging_after_the_new_one_is_caught() {
    let mut h = clean_fixed();
    // node1's write on timeline 1 begins after node2 acknowledged id 6 on
    // timeline 2 (3000..3050 in `clean`), yet lies before the switch point.
    h.ops[2] = ok(0, 3, (3060, 3070), "node1", 1, "0/4000000");
    let r = check(&h);
    assert!(!r.ok());
    match r.split_brain.as_slice() {
        [SplitBrain::ConcurrentPrimaries {
            first,
            second,
            pairs,
        }] => {
            assert_eq!((first.id, second.id, *pairs), (6, 3, 1));
        }
        other => panic!("{other:#?}"),
    }
}

#[test]
fn overlapping_intervals_alone_are_not_split_brain() {
    let mut h = clean_fixed();
    // node1's write is in flight across node2's first acknowledgement, as a
    // write held by the proxy during a failover is: no violation.
    h.ops[2] = ok(0, 3, (100, 3050), "node1", 1, "0/4000000");
    assert!(check(&h).ok());
}

#[test]
fn two_nodes_on_one_timeline_name_the_majority_first() {
    let mut h = clean_fixed();
    // node3 acknowledges one write on node1's timeline 1 (which node1 used
    // three times), before the switch point: only the shared-timeline rule
    // can see it.
    h.ops[1].node = Some("node3".into());
    let r = check(&h);
    assert!(!r.ok());
    assert_eq!(r.split_brain_count(), 1);
    match &r.split_brain[0] {
        SplitBrain::SharedTimeline { timeline: 1, nodes } => {
            let who: Vec<(&str, u64)> = nodes.iter().map(|(n, c, _)| (n.as_str(), *c)).collect();
            assert_eq!(who, vec![("node1", 2), ("node3", 1)]);
        }
        other => panic!("{other:#?}"),
    }
}

#[test]
fn two_nodes_on_one_timeline_are_caught() {
    let mut h = clean_fixed();
    h.ops[7].node = Some("node3".into());
    let r = check(&h);
    assert!(!r.ok());
    assert!(
        matches!(&r.split_brain[0], SplitBrain::SharedTimeline { timeline: 2, nodes } if nodes.len() == 2)
    );
}

#[test]
fn stale_read_is_caught() {
    let mut h = clean_fixed();
    h.ops[6].saw = Some(false);
    let r = check(&h);
    assert!(!r.ok());
    assert_eq!(r.stale_reads.len(), 1);
    assert_eq!(r.stale_reads[0].expect, Some(6));
}

#[test]
fn history_without_final_state_fails() {
    let mut h = clean_fixed();
    h.final_state = None;
    let r = check(&h);
    assert!(!r.ok());
    assert!(r.problems[0].contains("no final state"));
}

#[test]
fn unplaceable_acknowledged_write_fails() {
    let mut h = clean_fixed();
    h.ops[0].lsn = None;
    h.ops[1].lsn = Some("nonsense".into());
    let r = check(&h);
    assert!(!r.ok());
    assert_eq!(r.problems.len(), 2, "{:?}", r.problems);
}

#[test]
fn ids_nobody_wrote_and_a_second_primary_fail() {
    let mut h = clean_fixed();
    node(&mut h, "node1").id_ranges.push((100, 101));
    node(&mut h, "node3").role = "primary".into();
    let r = check(&h);
    assert!(!r.ok());
    assert_eq!(r.problems.len(), 2, "{:?}", r.problems);
}

#[test]
fn down_node_is_a_warning_not_a_violation() {
    let mut h = clean_fixed();
    node(&mut h, "node3").role = "down".into();
    node(&mut h, "node3").id_ranges.clear();
    let r = check(&h);
    assert!(r.ok(), "{:?}", r.violations());
    assert_eq!(r.warnings.len(), 1);
}

#[test]
fn availability_measures_rto_and_gaps() {
    let r = check(&clean_fixed());
    let a = &r.availability;
    // First write started at or after 1000 and acknowledged: id 6 at 3010.
    assert_eq!(a.faults[0].rto_ms, Some(2010));
    // Acks: 10, 20, 110, 3010, 3020; the one gap is 110..3010.
    assert_eq!(a.gaps.len(), 1);
    assert_eq!((a.gaps[0].from_ms, a.gaps[0].to_ms), (110, 3010));
    assert_eq!(a.gaps[0].kind.as_deref(), Some("kill_postgres"));
    assert_eq!(a.unavailable_ms, 2900);
    let k = &a.per_kind[0];
    assert_eq!(
        (k.injected, k.recovered, k.rto_max_ms, k.unavailable_ms),
        (1, 1, Some(2010), 2900)
    );
}

#[test]
fn fault_never_recovered_has_no_rto() {
    let mut h = clean_fixed();
    h.faults.push(fault("etcd_majority_lost", 3500, 3900));
    h.ops.push(write(
        0,
        9,
        (3600, 3900),
        Outcome::Failed("fenced".into()),
        None,
    ));
    let r = check(&h);
    assert!(r.ok());
    let a = &r.availability;
    assert_eq!(a.faults[1].rto_ms, None);
    // The tail from the last ack (3020) to the last attempt (3900) is open.
    let tail = a.gaps.last().unwrap();
    assert!(tail.open && tail.to_ms == 3900 && tail.kind.as_deref() == Some("etcd_majority_lost"));
}

#[test]
fn synthetic_histories_pass() {
    for seed in [1, 42, 4242] {
        let r = check(&sample_history(seed));
        assert!(r.ok(), "seed {seed}: {:?}", r.violations());
        assert!(r.writes.ok > 1000 && r.writes.failed > 0);
        assert!(!r.availability.per_kind.is_empty());
    }
}

/// The offline re-check sees exactly what the run saw.
#[test]
fn history_and_report_round_trip_through_json() {
    let h = sample_history(3);
    let r = check(&h);
    let back: History = serde_json::from_str(&serde_json::to_string(&h).unwrap()).unwrap();
    let again = check(&back);
    assert_eq!(
        serde_json::to_value(&again).unwrap(),
        serde_json::to_value(&r).unwrap()
    );
    let report: CheckReport = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(report.ok(), r.ok());
}

#[test]
fn synthetic_history_with_a_lost_write_fails() {
    let mut h = sample_history(9);
    let id = h
        .ops
        .iter()
        .find(|o| o.kind == OpKind::Write && o.outcome == Outcome::Ok)
        .unwrap()
        .id;
    let n = node(&mut h, "node3");
    let mut ids: Vec<i64> = n
        .id_ranges
        .iter()
        .flat_map(|&(a, b)| a..=b)
        .filter(|&i| i != id)
        .collect();
    ids.sort_unstable();
    n.id_ranges = to_ranges(&ids);
    let r = check(&h);
    assert_eq!(r.lost_count(), 1);
    assert!(!r.ok());
}
