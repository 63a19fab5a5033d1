use super::render::{chart_svg, esc, members_svg, page};
use super::*;
use crate::cmd::status::{MemberStatus, SyncStatus};
use pgha_core::event::EventKind;

fn member(name: &str, role: &str, leader: bool, lag: Option<u64>) -> MemberStatus {
    MemberStatus {
        name: name.into(),
        host: "127.0.0.1".into(),
        port: 5432,
        role: role.into(),
        last_role: None,
        writable: (role == "primary").then_some(true),
        state: "running".into(),
        timeline: Some(2),
        lsn: None,
        receive_lsn: None,
        replay_lsn: None,
        lag_bytes: lag,
        sync_state: (role == "standby").then(|| "quorum".into()),
        slot_active: None,
        leader,
        agent: "up".into(),
        in_dcs: Some(true),
        api_url: String::new(),
    }
}

fn status() -> Status {
    Status {
        cluster: "main".into(),
        dir: "d".into(),
        leader: Some("node2".into()),
        paused: Some(false),
        etcd: "ok".into(),
        etcd_error: None,
        sync: Some(SyncStatus {
            members: vec!["node1".into(), "node3".into()],
            quorum: 1,
            term: 7,
        }),
        switchover: None,
        failover: None,
        decisions: Vec::new(),
        members: vec![
            member("node1", "standby", false, Some(4 << 20)),
            member("node2", "primary", true, None),
            member("node3", "standby", false, Some(0)),
        ],
        proxy: None,
        archive: Some(serde_json::json!({
            "state": "failing",
            "last_failure_reason": "refusing to overwrite <x>",
            "corrupt": [],
        })),
        fetch_failures: Vec::new(),
    }
}

fn snapshot() -> Snapshot {
    Snapshot {
        taken_at_unix_ms: 1_000_000,
        status: status(),
        events: vec![Event {
            at_unix_ms: 999_000,
            kind: EventKind::Failover,
            member: "node2".into(),
            reason: "leader node1 gone".into(),
            duration_ms: Some(2100),
            detail: String::new(),
            ok: true,
        }],
        proxy: Some(ProxySplit {
            primary: 30.0,
            standby: 70.0,
            clients_active: 4.0,
            clients_waiting: 0.0,
        }),
        history: vec![
            Point {
                at_unix_ms: 990_000,
                max_lag_bytes: 1 << 20,
                writable: false,
            },
            Point {
                at_unix_ms: 998_000,
                max_lag_bytes: 0,
                writable: true,
            },
        ],
    }
}

/// The page names the leader (in the body's data attribute and the text),
/// draws every member, and shows routing, archive health and events.
#[test]
fn the_page_shows_leader_members_routing_archive_and_events() {
    let html = page(&snapshot());
    assert!(html.contains("<body data-leader=\"node2\">"));
    assert!(html.contains("leader <b id=\"leader\">node2</b>"));
    for m in ["node1", "node2", "node3"] {
        assert!(html.contains(&format!("data-member=\"{m}\"")), "{m}");
    }
    assert!(html.contains("★ node2"));
    assert!(html.contains("sync quorum <b>1</b> of {node1, node3}"));
    assert!(html.contains("70% offloaded"));
    assert!(html.contains("refusing to overwrite &lt;x&gt;"), "escaped");
    assert!(html.contains("<td>failover</td>") || html.contains(">failover<"));
    assert!(html.contains("leader node1 gone"));
    assert!(html.contains("<script>"));
}

#[test]
fn lag_bars_scale_to_at_least_16_mb() {
    let svg = members_svg(&status().members, None);
    // 4 MB of 16 MB: a quarter of the 180-pixel bar.
    assert!(svg.contains("width=\"45.0\""), "{svg}");
    assert!(svg.contains("lag 4.0 MB"));
}

#[test]
fn the_chart_marks_refused_writes_red() {
    let svg = chart_svg(&snapshot().history, 1_000_000);
    assert!(svg.contains("#e53935") && svg.contains("#43a047"));
    assert!(svg.contains("1 of 2 samples refused"));
}

#[test]
fn writable_needs_a_running_unfenced_leader() {
    let mut s = status();
    assert!(writable(&s));
    s.members[1].writable = Some(false);
    assert!(!writable(&s));
    s.members[1].writable = Some(true);
    s.leader = None;
    assert!(!writable(&s));
}

#[test]
fn proxy_counters_are_summed_by_target() {
    let text = "# HELP x\npgha_proxy_statements_total{target=\"primary\",reason=\"write\"} 3\n\
                pgha_proxy_statements_total{target=\"primary\",reason=\"transaction\"} 2\n\
                pgha_proxy_statements_total{target=\"standby\",reason=\"read_only\"} 5\n\
                pgha_proxy_clients{listener=\"rw\",state=\"active\"} 2\n\
                pgha_proxy_clients_waiting{listener=\"rw\"} 1\n";
    let s = parse_split(text);
    assert_eq!((s.primary, s.standby, s.clients_active), (5.0, 5.0, 2.0));
    assert_eq!(s.clients_waiting, 1.0);
}

#[test]
fn text_is_escaped() {
    assert_eq!(
        esc("<a href=\"x\">&'"),
        "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
    );
}
