//! The JSON documents the API serves: the node status (`/`, `/patroni`) and
//! the cluster view (`/cluster`), both built from one [`AgentStatus`].
//!
//! [`view_json`] fixes the shape of [`AgentStatus::view`]: the agent loop
//! should fill it with `view_json(&cluster_view)`. [`cluster_doc`] reads it
//! back tolerantly (a missing or differently shaped part becomes empty),
//! because the API must answer even when the loop has not read the DCS yet.
//!
//! Hazard: these documents are read by `pgha status` and by operators'
//! scripts; add fields, never rename them.

use crate::status::AgentStatus;
use pgha_core::{ClusterView, Lsn, MemberState, Role};
use serde::Serialize;
use serde_json::{json, Value};

/// The DCS view as JSON, for [`AgentStatus::view`]:
/// `{"leader": {holder, term}|null, "members": {name: MemberState},
/// "sync": SyncRecord|null, "config": DynamicConfig, "switchover": ..,
/// "failover": .., "initialize": ..}`.
pub fn view_json(view: &ClusterView) -> Value {
    json!({
        "leader": view.leader,
        "members": view.members,
        "sync": view.sync,
        "config": view.config,
        "switchover": view.switchover,
        "failover": view.failover,
        "initialize": view.initialize,
    })
}

/// The role of `GET /` and `GET /patroni`: Patroni calls a standby
/// "replica"; keep its role names in the node document so that scripts
/// written for Patroni read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum PatroniRole {
    Primary,
    Replica,
    Unknown,
}

impl From<Role> for PatroniRole {
    fn from(r: Role) -> Self {
        match r {
            Role::Primary => PatroniRole::Primary,
            Role::Standby => PatroniRole::Replica,
            Role::Unknown => PatroniRole::Unknown,
        }
    }
}

/// A member's role in `/cluster`: the lease and the sync set first, then
/// what PostgreSQL says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum ClusterRole {
    /// Holds the leader key.
    Leader,
    /// In the synchronous standby set recorded in /sync.
    SyncStandby,
    Standby,
    /// A primary that does not hold the lease.
    Primary,
    Unknown,
}

impl ClusterRole {
    fn of(m: &MemberState, leader: Option<&str>, sync: &[String]) -> Self {
        if Some(m.name.as_str()) == leader {
            ClusterRole::Leader
        } else if sync.contains(&m.name) {
            ClusterRole::SyncStandby
        } else {
            match m.role {
                Role::Primary => ClusterRole::Primary,
                Role::Standby => ClusterRole::Standby,
                Role::Unknown => ClusterRole::Unknown,
            }
        }
    }
}

/// The node document of `GET /` and `GET /patroni`.
pub fn node_doc(s: &AgentStatus) -> Value {
    json!({
        "state": if s.pg_running { "running" } else { "stopped" },
        "role": PatroniRole::from(s.role),
        "timeline": s.timeline,
        "xlog": {
            "location": s.lsn,
            "replayed_location": s.replay_lsn,
        },
        "patroni": {
            "name": s.member,
            "scope": s.cluster,
            "version": env!("CARGO_PKG_VERSION"),
        },
        "pause": s.paused,
        "cluster_unlocked": s.leader.is_none() && !s.dcs_unavailable,
        "dcs_last_seen_ok": !s.dcs_unavailable,
        "member": s.member,
        "cluster": s.cluster,
        "pg_role": s.role,
        "pg_running": s.pg_running,
        "is_leader": s.is_leader,
        "writable": s.writable,
        "streaming": s.streaming,
        "lsn": s.lsn,
        "replay_lsn": s.replay_lsn,
        "lag_bytes": s.lag_bytes,
        "in_sync_set": s.in_sync_set,
        "paused": s.paused,
        "dcs_unavailable": s.dcs_unavailable,
        "leader": s.leader,
    })
}

/// One member as `/cluster` lists it.
#[derive(Debug, Serialize)]
struct ClusterMember {
    name: String,
    role: ClusterRole,
    /// What PostgreSQL says: "primary", "standby", "unknown".
    pg_role: Role,
    /// "running" or "stopped".
    state: &'static str,
    host: String,
    port: u16,
    api_url: String,
    timeline: u32,
    lsn: Lsn,
    replay_lsn: Option<Lsn>,
    /// Bytes behind the leader's published position.
    lag_bytes: Option<u64>,
    streaming_from: Option<String>,
    fenced: bool,
    detached: bool,
    nofailover: bool,
    nosync: bool,
}

/// The cluster document of `GET /cluster`.
pub fn cluster_doc(s: &AgentStatus) -> Value {
    let view = &s.view;
    let members = parse_members(view.get("members"));
    let leader_name = s.leader.clone().or_else(|| {
        view.pointer("/leader/holder")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    let sync_members: Vec<String> = view
        .pointer("/sync/members")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let leader_lsn = leader_name
        .as_ref()
        .and_then(|l| members.iter().find(|m| &m.name == l))
        .map(|m| m.flush_lsn);
    let listed: Vec<ClusterMember> = members
        .iter()
        .map(|m| cluster_member(m, leader_name.as_deref(), &sync_members, leader_lsn))
        .collect();
    json!({
        "cluster": s.cluster,
        "reported_by": s.member,
        "leader": leader_name,
        "term": view.pointer("/leader/term"),
        "paused": s.paused,
        "dcs_unavailable": s.dcs_unavailable,
        "sync": {
            "members": sync_members,
            "quorum": view.pointer("/sync/quorum"),
            "term": view.pointer("/sync/term"),
        },
        "config": view.get("config"),
        "switchover": view.get("switchover"),
        "failover": view.get("failover"),
        "members": listed,
        "decisions": s.decisions,
    })
}

fn parse_members(v: Option<&Value>) -> Vec<MemberState> {
    let parse = |v: &Value| serde_json::from_value::<MemberState>(v.clone()).ok();
    match v {
        Some(Value::Object(map)) => map.values().filter_map(parse).collect(),
        Some(Value::Array(list)) => list.iter().filter_map(parse).collect(),
        _ => Vec::new(),
    }
}

fn cluster_member(
    m: &MemberState,
    leader: Option<&str>,
    sync: &[String],
    leader_lsn: Option<Lsn>,
) -> ClusterMember {
    let is_leader = Some(m.name.as_str()) == leader;
    ClusterMember {
        name: m.name.clone(),
        role: ClusterRole::of(m, leader, sync),
        pg_role: m.role,
        state: if m.pg_running { "running" } else { "stopped" },
        host: m.conn.host.clone(),
        port: m.conn.port,
        api_url: m.api_url.clone(),
        timeline: m.timeline.0,
        lsn: m.flush_lsn,
        replay_lsn: m.replay_lsn,
        lag_bytes: match (is_leader, leader_lsn) {
            (false, Some(l)) => Some(l.bytes_after(m.replay_lsn.unwrap_or(m.flush_lsn))),
            _ => None,
        },
        streaming_from: m.streaming_from.clone(),
        fenced: m.fenced,
        detached: m.detached.is_some(),
        nofailover: m.tags.nofailover,
        nosync: m.tags.nosync,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgha_core::{ConnInfo, LeaderKey, Role, SyncRecord, SyncSet, Timeline};

    fn member(name: &str, role: Role, lsn: u64) -> MemberState {
        MemberState {
            name: name.into(),
            role,
            pg_running: true,
            timeline: Timeline(2),
            flush_lsn: Lsn(lsn),
            replay_lsn: (role == Role::Standby).then_some(Lsn(lsn)),
            api_url: format!("http://127.0.0.1/{name}"),
            conn: ConnInfo {
                host: "127.0.0.1".into(),
                port: 5432,
            },
            ..Default::default()
        }
    }

    #[test]
    fn cluster_doc_lists_roles_lag_and_sync_set() {
        let mut view = ClusterView {
            leader: Some(LeaderKey {
                holder: "n1".into(),
                term: 7,
            }),
            sync: Some(SyncRecord {
                term: 7,
                leader: "n1".into(),
                set: SyncSet::new(["n2"], 1),
                handoff: None,
            }),
            ..Default::default()
        };
        for m in [
            member("n1", Role::Primary, 1000),
            member("n2", Role::Standby, 1000),
            member("n3", Role::Standby, 400),
        ] {
            view.members.insert(m.name.clone(), m);
        }
        let s = AgentStatus {
            member: "n2".into(),
            cluster: "c".into(),
            view: view_json(&view),
            ..Default::default()
        };
        let doc = cluster_doc(&s);
        assert_eq!(doc["leader"], "n1");
        assert_eq!(doc["term"], 7);
        assert_eq!(doc["sync"]["members"], json!(["n2"]));
        let ms = doc["members"].as_array().expect("members");
        assert_eq!(ms.len(), 3);
        assert_eq!(ms[0]["role"], "leader");
        assert_eq!(ms[1]["role"], "sync_standby");
        assert_eq!(ms[2]["role"], "standby");
        assert_eq!(ms[2]["lag_bytes"], 600);
        assert_eq!(ms[0]["lsn"], "0/3E8");
    }

    #[test]
    fn cluster_doc_survives_an_empty_view() {
        let doc = cluster_doc(&AgentStatus::default());
        assert_eq!(doc["members"], json!([]));
        assert_eq!(doc["leader"], Value::Null);
    }

    /// The typed roles render the names scripts and `pgha status` read.
    #[test]
    fn role_names_in_the_json_are_unchanged() {
        for (role, patroni, pg_role) in [
            (Role::Primary, "primary", "primary"),
            (Role::Standby, "replica", "standby"),
            (Role::Unknown, "unknown", "unknown"),
        ] {
            let doc = node_doc(&AgentStatus {
                role,
                ..AgentStatus::default()
            });
            assert_eq!(
                (doc["role"].as_str(), doc["pg_role"].as_str()),
                (Some(patroni), Some(pg_role))
            );
        }
        for (role, name) in [
            (ClusterRole::Leader, "leader"),
            (ClusterRole::SyncStandby, "sync_standby"),
            (ClusterRole::Standby, "standby"),
            (ClusterRole::Primary, "primary"),
            (ClusterRole::Unknown, "unknown"),
        ] {
            assert_eq!(serde_json::to_value(role).unwrap(), name);
        }
    }
}
