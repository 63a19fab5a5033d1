//! The cluster's event history: failovers, switchovers, fences, rewinds,
//! re-clones and synchronous-set changes, each with its time, member,
//! reason and duration. Agents append them to one bounded list in the DCS
//! (`<ns>/<cluster>/events`, see `pgha_agent::events`); `pgha events`, the
//! status page and the metrics read it. Pure data and the bounded append.

use serde::{Deserialize, Serialize};

/// How many events the list keeps (the oldest go first). The list lives
/// under the cluster prefix, which every agent reads on every loop: 50
/// events of at most [`TEXT_KEPT`] characters of reason and detail keep it
/// under about 25 KB.
pub const EVENTS_KEPT: usize = 50;

/// The longest reason or detail kept (in characters; longer ones are cut
/// and end with `…`).
pub const TEXT_KEPT: usize = 240;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A standby was promoted after the leader was lost.
    Failover,
    /// A standby was promoted at a planned switchover.
    Switchover,
    /// A primary stopped being one (switchover hand-over, lost lease).
    Demote,
    /// A primary refused writes (it could not renew its lease).
    Fence,
    /// The fence was lifted.
    Unfence,
    /// A former primary was rewound onto the new timeline.
    Rewind,
    /// A member's data directory was cloned again from the leader.
    Reclone,
    /// The synchronous standby set or quorum in `/sync` changed.
    SyncSet,
}

impl EventKind {
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Failover => "failover",
            EventKind::Switchover => "switchover",
            EventKind::Demote => "demote",
            EventKind::Fence => "fence",
            EventKind::Unfence => "unfence",
            EventKind::Rewind => "rewind",
            EventKind::Reclone => "reclone",
            EventKind::SyncSet => "sync_set",
        }
    }
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unix time in milliseconds, when it ended.
    pub at_unix_ms: u64,
    pub kind: EventKind,
    /// The member it happened to (the promoted one, the fenced one...).
    pub member: String,
    /// The decision's reason, as the agent logged it.
    pub reason: String,
    /// How long it took (failover: from the leader key seen gone; the
    /// others: the action itself), when known.
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// What changed: the new sync set, the upstream, an error.
    #[serde(default)]
    pub detail: String,
    /// `false` when the action failed (a rewind that did not work...).
    #[serde(default = "yes")]
    pub ok: bool,
}

fn yes() -> bool {
    true
}

/// `list` with `event` appended (its texts cut to [`TEXT_KEPT`]), keeping
/// the newest [`EVENTS_KEPT`].
pub fn append(mut list: Vec<Event>, mut event: Event) -> Vec<Event> {
    event.reason = cut(event.reason);
    event.detail = cut(event.detail);
    list.push(event);
    let excess = list.len().saturating_sub(EVENTS_KEPT);
    list.drain(..excess);
    list
}

fn cut(s: String) -> String {
    if s.chars().count() <= TEXT_KEPT {
        return s;
    }
    let mut short: String = s.chars().take(TEXT_KEPT - 1).collect();
    short.push('…');
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(i: u64) -> Event {
        Event {
            at_unix_ms: i,
            kind: EventKind::Fence,
            member: "n1".into(),
            reason: "r".into(),
            duration_ms: None,
            detail: String::new(),
            ok: true,
        }
    }

    #[test]
    fn append_keeps_the_newest_events_in_order() {
        let mut list = Vec::new();
        for i in 0..(EVENTS_KEPT as u64 + 5) {
            list = append(list, ev(i));
        }
        assert_eq!(list.len(), EVENTS_KEPT);
        assert_eq!(list[0].at_unix_ms, 5);
        assert_eq!(list.last().unwrap().at_unix_ms, EVENTS_KEPT as u64 + 4);
    }

    #[test]
    fn long_texts_are_cut() {
        let mut e = ev(1);
        e.reason = "é".repeat(TEXT_KEPT + 10);
        let list = append(Vec::new(), e);
        assert_eq!(list[0].reason.chars().count(), TEXT_KEPT);
        assert!(list[0].reason.ends_with('…'));
    }

    #[test]
    fn json_names_are_snake_case_and_old_records_parse() {
        let text = r#"{"at_unix_ms":1,"kind":"sync_set","member":"n1","reason":"r"}"#;
        let e: Event = serde_json::from_str(text).unwrap();
        assert_eq!(e.kind, EventKind::SyncSet);
        assert!(e.ok);
        assert_eq!(e.duration_ms, None);
    }
}
