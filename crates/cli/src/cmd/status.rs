//! `pgha status`: the cluster as three sources see it, merged per member:
//! PostgreSQL itself (role, timeline, WAL positions, lag, the sync state the
//! primary reports, slots), etcd (leader key, member keys, sync set, pause)
//! and the agents' REST APIs (up or down, the last decisions and why). A
//! table for people, `--json` for programs.
//!
//! A member is "down" when etcd answered and holds no member key for it, its
//! agent does not answer, and its PostgreSQL does not either. Each source
//! may be missing: with etcd unreachable the PostgreSQL view is still shown
//! (and the output says so); with no agents at all (a dev cluster started
//! without them) the PostgreSQL view is all there is.
//!
//! Hazard: scripts and tests parse the JSON. Add fields; never rename or
//! remove them.

use crate::target::{Target, TargetArgs};
use anyhow::Context;
use pgha_agent::api::client;
use pgha_agent::status::DecisionRecord;
use pgha_core::{ClusterView, Lsn, MemberState, Role};
use pgha_postgres::probe::{self, ReplicationRow, ServerStatus, SlotRow};
use pgha_postgres::{Instance, PgBinaries, ServiceUser};
use serde::Serialize;
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

/// How long to wait for one agent's `/cluster`.
const AGENT_TIMEOUT: Duration = Duration::from_millis(1500);
/// Minimum etcd request timeout (the configured one may be tighter than a
/// loaded machine allows for a one-off read).
const DCS_TIMEOUT: Duration = Duration::from_secs(2);
/// How long to wait for one PostgreSQL connection.
const PG_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub cluster: String,
    /// The dev cluster directory, or the config file given with --config.
    pub dir: String,
    /// The leader key's holder (null: no leader, or etcd unreachable).
    pub leader: Option<String>,
    /// Maintenance mode (null when etcd is unreachable).
    pub paused: Option<bool>,
    /// "ok" or "unreachable".
    pub etcd: String,
    /// Why etcd could not be read.
    pub etcd_error: Option<String>,
    /// The synchronous standby set recorded in /sync.
    pub sync: Option<SyncStatus>,
    /// A pending planned switchover or manual failover request.
    pub switchover: Option<serde_json::Value>,
    pub failover: Option<serde_json::Value>,
    /// The last decisions of the leader's agent (or of any agent that
    /// answered), oldest first.
    pub decisions: Vec<DecisionRecord>,
    pub members: Vec<MemberStatus>,
    /// The dev cluster's proxy: host, rw, ro, primary ports and state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<serde_json::Value>,
    /// The WAL archive's health as the leader's agent (or any agent that
    /// answered) reports it: `state` (ok, failing, corrupt, fetch_failing,
    /// unknown), the last archived file and its age, the last failure's
    /// reason, size, oldest segment, corrupt files (docs/observability.md).
    pub archive: Option<serde_json::Value>,
    /// Members whose last `wal-fetch` failed (not "not archived"): member,
    /// wal, reason.
    pub fetch_failures: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SyncStatus {
    pub members: Vec<String>,
    pub quorum: u32,
    pub term: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemberStatus {
    pub name: String,
    pub host: String,
    pub port: u16,
    /// "primary", "standby" or "unknown"; "unknown" when its PostgreSQL is
    /// not running (a dead node is no primary): see `last_role`.
    pub role: String,
    /// For a member whose PostgreSQL is not running: the role its data
    /// directory or its last record shows.
    pub last_role: Option<String>,
    /// For a running primary: whether it accepts writes (false: fenced,
    /// `default_transaction_read_only` on, e.g. because it could not renew
    /// its leader lease while etcd was unreachable).
    pub writable: Option<bool>,
    /// "running", "starting", "stopped" or "down" (see the module doc).
    pub state: String,
    pub timeline: Option<u32>,
    /// Current WAL position on a primary.
    pub lsn: Option<String>,
    pub receive_lsn: Option<String>,
    pub replay_lsn: Option<String>,
    /// Bytes the member's replay position is behind the primary's current one.
    pub lag_bytes: Option<u64>,
    /// What pg_stat_replication on the primary says: sync, quorum, potential, async.
    pub sync_state: Option<String>,
    pub slot_active: Option<bool>,
    /// Holds the leader key.
    pub leader: bool,
    /// "up" when its agent's REST API answered, else "down".
    pub agent: String,
    /// Whether etcd holds its member key (null when etcd is unreachable).
    pub in_dcs: Option<bool>,
    pub api_url: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Runtime::new().context("start the async runtime")?;
    rt.block_on(async {
        let target = Target::resolve(&args.target)?;
        let status = collect(&target).await?;
        if args.json {
            crate::outln!("{}", serde_json::to_string_pretty(&status)?);
        } else {
            print_table(&status);
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// What PostgreSQL said about one member.
struct Probed {
    name: String,
    host: String,
    port: u16,
    api_url: String,
    /// The postmaster process runs on this host (None: not a local member).
    local_running: Option<bool>,
    server: Option<ServerStatus>,
    was_standby: Option<bool>,
}

/// What the agents' `/cluster` documents said.
struct Agents {
    up: BTreeMap<String, bool>,
    decisions: Vec<DecisionRecord>,
    /// The picked agent's `archive` document.
    archive: Option<serde_json::Value>,
    fetch_failures: Vec<serde_json::Value>,
}

/// Gather all three views and merge them.
pub async fn collect(target: &Target) -> anyhow::Result<Status> {
    let leader_hint = async {
        let view = read_dcs(target).await;
        let agents = ask_agents(target, view.as_ref().ok()).await;
        (view, agents)
    };
    let pg = probe_postgres(target);
    let ((view, agents), (probed, primaries)) = tokio::join!(leader_hint, pg);
    let (view, etcd_error) = match view {
        Ok(v) => (Some(v), None),
        Err(e) => (None, Some(e)),
    };
    let leader = view
        .as_ref()
        .and_then(|v| v.leader.as_ref())
        .map(|l| l.holder.clone());
    let primary_lsn = primary_lsn(&probed, leader.as_deref(), view.as_ref());
    // Two primaries (an old one not yet demoted): the leader's view wins.
    let (repl, slots) = primaries
        .iter()
        .find(|p| Some(p.0.as_str()) == leader.as_deref())
        .or(primaries.first())
        .map(|(_, r, s)| (r.clone(), s.clone()))
        .unwrap_or_default();
    let members = probed
        .into_iter()
        .map(|p| {
            let record = view.as_ref().and_then(|v| v.members.get(&p.name));
            let ctx = MergeCtx {
                primary_lsn,
                repl: &repl,
                slots: &slots,
                dcs_read: view.is_some(),
                record,
                agent_up: agents.up.get(&p.name).copied().unwrap_or(false),
                leader: leader.as_deref(),
            };
            member_status(p, &ctx)
        })
        .collect();
    Ok(Status {
        cluster: target.config.name.clone(),
        dir: match &target.dev_dir {
            Some(d) => d.display().to_string(),
            None => target.source.display().to_string(),
        },
        leader,
        paused: view.as_ref().map(|v| v.config.paused),
        etcd: if view.is_some() { "ok" } else { "unreachable" }.into(),
        etcd_error,
        sync: view
            .as_ref()
            .and_then(|v| v.sync.as_ref())
            .map(|s| SyncStatus {
                members: s.set.members.iter().cloned().collect(),
                quorum: s.set.quorum,
                term: s.term,
            }),
        switchover: view
            .as_ref()
            .and_then(|v| v.switchover.as_ref())
            .and_then(|r| serde_json::to_value(r).ok()),
        failover: view
            .as_ref()
            .and_then(|v| v.failover.as_ref())
            .and_then(|r| serde_json::to_value(r).ok()),
        decisions: agents.decisions,
        members,
        proxy: proxy_status(&target.config),
        archive: agents.archive,
        fetch_failures: agents.fetch_failures,
    })
}

/// The dev cluster's proxy ports (`[proxy]` in cluster.toml) and whether
/// its rw listener accepts connections.
fn proxy_status(config: &pgha_config::ClusterConfig) -> Option<serde_json::Value> {
    let p = config.proxy.as_ref()?;
    let up = std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::new(p.host.parse().ok()?, p.rw_port),
        std::time::Duration::from_millis(500),
    )
    .is_ok();
    Some(serde_json::json!({
        "host": p.host,
        "rw": p.rw_port,
        "ro": p.ro_port,
        "primary": p.primary_port,
        "state": if up { "running" } else { "stopped" },
    }))
}

/// One snapshot of the cluster's keys, or why it could not be read.
async fn read_dcs(target: &Target) -> Result<ClusterView, String> {
    let dcs = target.dcs_with(DCS_TIMEOUT).map_err(|e| format!("{e:#}"))?;
    let defaults = pgha_agent::initial_config(&target.config);
    let snap = pgha_agent::view::read(&dcs, &target.keys, &defaults).await;
    match (snap.view, snap.error) {
        (Some(v), _) => Ok(v),
        (None, e) => Err(e.unwrap_or_else(|| "no answer".into())),
    }
}

/// Ask every agent for `/cluster` at once; keep the leader's decisions.
async fn ask_agents(target: &Target, view: Option<&ClusterView>) -> Agents {
    let mut urls: Vec<(String, String)> = target.api_urls();
    // An agent publishes its API URL in its member key; prefer that one.
    for (name, url) in urls.iter_mut() {
        if let Some(m) = view.and_then(|v| v.members.get(name.as_str())) {
            if !m.api_url.is_empty() {
                *url = m.api_url.clone();
            }
        }
    }
    let mut set = tokio::task::JoinSet::new();
    for (i, (_, url)) in urls.iter().enumerate() {
        let url = format!("{url}/cluster");
        set.spawn(async move {
            let doc = client::get(&url, AGENT_TIMEOUT).await;
            (i, doc.ok().and_then(|r| r.json().ok()))
        });
    }
    let mut answers: Vec<(String, Option<serde_json::Value>)> =
        urls.iter().map(|(n, _)| (n.clone(), None)).collect();
    while let Some(joined) = set.join_next().await {
        if let Ok((i, doc)) = joined {
            answers[i].1 = doc;
        }
    }
    let leader = view
        .and_then(|v| v.leader.as_ref())
        .map(|l| l.holder.as_str());
    let mut up = BTreeMap::new();
    let mut decisions = Vec::new();
    for (name, doc) in &answers {
        up.insert(name.clone(), doc.is_some());
    }
    let pick = answers
        .iter()
        .find(|(n, d)| Some(n.as_str()) == leader && d.is_some())
        .or_else(|| answers.iter().find(|(_, d)| d.is_some()));
    let mut archive = None;
    if let Some((_, Some(doc))) = pick {
        if let Some(list) = doc.get("decisions") {
            decisions = serde_json::from_value(list.clone()).unwrap_or_default();
        }
        archive = doc.get("archive").cloned();
    }
    let fetch_failures = answers
        .iter()
        .filter_map(|(name, doc)| {
            let f = doc.as_ref()?.pointer("/archive/fetch_failure")?;
            let mut f = f.as_object()?.clone();
            f.insert("member".into(), name.clone().into());
            Some(serde_json::Value::Object(f))
        })
        .collect();
    Agents {
        up,
        decisions,
        archive,
        fetch_failures,
    }
}

/// A primary's name, pg_stat_replication and slots.
type PrimaryRows = (String, Vec<ReplicationRow>, Vec<SlotRow>);

/// Probe each member's PostgreSQL; also read pg_stat_replication and the
/// slots from every primary found.
async fn probe_postgres(target: &Target) -> (Vec<Probed>, Vec<PrimaryRows>) {
    let cfg = &target.config;
    // Only the admin password is needed; a cluster made before other
    // secrets existed must still be probed.
    let password =
        std::fs::read_to_string(cfg.secrets_dir.join(pgha_postgres::secrets::ADMIN_FILE))
            .ok()
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty());
    let local = match (
        PgBinaries::locate(cfg.bin_dir.as_deref()),
        ServiceUser::resolve(&cfg.os_user),
    ) {
        (Ok(b), Ok(u)) => Some((b, u)),
        _ => None,
    };
    let mut probed = Vec::new();
    let mut primaries: Vec<PrimaryRows> = Vec::new();
    for m in &cfg.members {
        let inst = local
            .as_ref()
            .map(|(b, u)| Instance::new(m, b.clone(), u.clone()))
            .filter(|i| i.data_dir.exists());
        let was_standby = match &inst {
            Some(i) => i.controldata().await.ok().map(|cd| cd.state.was_standby()),
            None => None,
        };
        let local_running = inst.as_ref().map(Instance::is_running);
        let client = match (&password, local_running) {
            (Some(pw), None | Some(true)) => probe::connect_tls(
                &m.host,
                m.port,
                &cfg.superuser,
                pw,
                PG_TIMEOUT,
                cfg.tls_ca(),
            )
            .await
            .ok(),
            _ => None,
        };
        let server = match &client {
            Some(c) => probe::server_status(c).await.ok(),
            None => None,
        };
        if let (Some(c), Some(s)) = (&client, &server) {
            if !s.in_recovery {
                let repl = probe::replication(c).await.unwrap_or_default();
                let slots = probe::slots(c).await.unwrap_or_default();
                primaries.push((m.name.clone(), repl, slots));
            }
        }
        probed.push(Probed {
            name: m.name.clone(),
            host: m.host.clone(),
            port: m.port,
            api_url: m.api_url(),
            local_running,
            server,
            was_standby,
        });
    }
    (probed, primaries)
}

/// The primary's current LSN: from the leader's probe, else from any
/// primary probed, else from the leader's member record.
fn primary_lsn(probed: &[Probed], leader: Option<&str>, view: Option<&ClusterView>) -> Option<Lsn> {
    let live = |p: &Probed| {
        p.server
            .as_ref()
            .filter(|s| !s.in_recovery)
            .and_then(|s| s.current_lsn)
    };
    probed
        .iter()
        .find(|p| Some(p.name.as_str()) == leader)
        .and_then(live)
        .or_else(|| probed.iter().find_map(live))
        .or_else(|| {
            let rec = view?.members.get(leader?)?;
            rec.is_running_primary().then_some(rec.flush_lsn)
        })
}

struct MergeCtx<'a> {
    primary_lsn: Option<Lsn>,
    repl: &'a [ReplicationRow],
    slots: &'a [SlotRow],
    dcs_read: bool,
    record: Option<&'a MemberState>,
    agent_up: bool,
    leader: Option<&'a str>,
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Primary => "primary",
        Role::Standby => "standby",
        Role::Unknown => "unknown",
    }
}

fn member_status(p: Probed, ctx: &MergeCtx<'_>) -> MemberStatus {
    let name = p.name.clone();
    let rec = ctx.record;
    let role = match (&p.server, p.was_standby, rec) {
        (Some(s), _, _) if s.in_recovery => "standby",
        (Some(_), _, _) => "primary",
        (None, Some(true), _) => "standby",
        (None, Some(false), _) => "primary",
        (None, None, Some(r)) => role_name(r.role),
        (None, None, None) => "unknown",
    };
    let state = member_state(&p, ctx);
    let alive = matches!(state, "running" | "starting");
    let (role, last_role) = if alive || role == "unknown" {
        (role, None)
    } else {
        ("unknown", Some(role.to_string()))
    };
    let writable = p
        .server
        .as_ref()
        .filter(|s| !s.in_recovery)
        .map(|s| !s.read_only_default);
    let s = p.server.clone().unwrap_or_default();
    // A member on another host that could not be probed: fall back to what
    // it published. (For a local one, a silent server means the record is
    // stale.)
    let from_rec =
        p.server.is_none() && p.local_running.is_none() && rec.is_some_and(|r| r.pg_running);
    let lsn = match (s.current_lsn, rec) {
        (Some(l), _) => Some(l),
        (None, Some(r)) if from_rec && r.role == Role::Primary => Some(r.flush_lsn),
        _ => None,
    };
    let replay = s
        .replay_lsn
        .or(rec.filter(|_| from_rec).and_then(|r| r.replay_lsn));
    let position = if role == "primary" { lsn } else { replay };
    let lag_bytes = match (p.server.is_some() || from_rec, ctx.primary_lsn, position) {
        (true, Some(primary), Some(mine)) => Some(primary.bytes_after(mine)),
        _ => None,
    };
    let timeline = s
        .timeline
        .map(|t| t.0)
        .or(rec.filter(|_| from_rec).map(|r| r.timeline.0));
    let row = ctx.repl.iter().find(|r| r.application_name == name);
    MemberStatus {
        host: p.host.clone(),
        port: p.port,
        role: role.to_string(),
        last_role,
        writable,
        state: state.to_string(),
        timeline,
        lsn: lsn.map(|l| l.to_string()),
        // A promoted primary still reports its last positions as a standby.
        receive_lsn: s
            .receive_lsn
            .filter(|_| role != "primary")
            .map(|l| l.to_string()),
        replay_lsn: replay.filter(|_| role != "primary").map(|l| l.to_string()),
        lag_bytes,
        sync_state: row.map(|r| r.sync_state.clone()),
        slot_active: ctx
            .slots
            .iter()
            .find(|sl| sl.name == name)
            .map(|sl| sl.active),
        leader: ctx.leader == Some(name.as_str()),
        agent: if ctx.agent_up { "up" } else { "down" }.into(),
        in_dcs: ctx.dcs_read.then_some(rec.is_some()),
        api_url: rec
            .map(|r| r.api_url.clone())
            .filter(|u| !u.is_empty())
            .unwrap_or(p.api_url),
        name,
    }
}

/// running / starting / stopped / down, from the strongest evidence.
fn member_state(p: &Probed, ctx: &MergeCtx<'_>) -> &'static str {
    if p.server.is_some() {
        return "running";
    }
    if p.local_running == Some(true) {
        return "starting";
    }
    if ctx.dcs_read && ctx.record.is_none() && !ctx.agent_up {
        return "down";
    }
    match (p.local_running, ctx.record) {
        // Not on this host: believe the member's own record.
        (None, Some(r)) if r.pg_running => "running",
        _ => "stopped",
    }
}

fn print_table(status: &Status) {
    crate::outln!("cluster {} ({})", status.cluster, status.dir);
    match &status.etcd_error {
        None => crate::outln!(
            "leader: {}   paused: {}",
            status.leader.as_deref().unwrap_or("none"),
            if status.paused == Some(true) {
                "yes"
            } else {
                "no"
            }
        ),
        Some(e) => crate::outln!("etcd unreachable ({e}): showing what PostgreSQL reports"),
    }
    if let Some(s) = &status.sync {
        crate::outln!(
            "sync set: {{{}}} quorum {} (term {})",
            s.members.join(", "),
            s.quorum,
            s.term
        );
    }
    if let Some(r) = &status.switchover {
        crate::outln!("pending switchover: {r}");
    }
    if let Some(r) = &status.failover {
        crate::outln!("pending failover: {r}");
    }
    if let Some(p) = &status.proxy {
        crate::outln!(
            "proxy: rw {}:{}  ro :{}  primary :{}  ({})",
            p["host"].as_str().unwrap_or("?"),
            p["rw"],
            p["ro"],
            p["primary"],
            p["state"].as_str().unwrap_or("?")
        );
    }
    print_members(status);
    for note in notes(status) {
        crate::outln!("{note}");
    }
    for line in archive_lines(status) {
        crate::outln!("{line}");
    }
    let recent = status.decisions.iter().rev().take(3).collect::<Vec<_>>();
    if !recent.is_empty() {
        crate::outln!("last decisions (newest first):");
        for d in recent {
            crate::outln!("  {}", d.reason);
        }
    }
}

/// What the table alone would not say: primaries that refuse writes.
fn notes(status: &Status) -> Vec<String> {
    status
        .members
        .iter()
        .filter(|m| m.writable == Some(false))
        .map(|m| {
            let why = if status.etcd_error.is_some() {
                "it cannot renew its leader lease while etcd is unreachable"
            } else {
                "it does not hold a current leader lease"
            };
            format!(
                "writes refused: {} is fenced (default_transaction_read_only = on): {why}",
                m.name
            )
        })
        .collect()
}

/// The archive's health in a line, plus one per problem.
fn archive_lines(status: &Status) -> Vec<String> {
    let Some(a) = &status.archive else {
        return vec!["archive: unknown (no agent answered)".into()];
    };
    let state = a["state"].as_str().unwrap_or("unknown");
    let mut head = format!("archive: {state}");
    if let Some(wal) = a["last_archived_wal"].as_str() {
        let age = a["last_archived_age_seconds"].as_f64().unwrap_or(0.0);
        head.push_str(&format!(", last archived {wal} {age:.0}s ago"));
    }
    if let (Some(files), Some(bytes)) = (a["files"].as_u64(), a["bytes"].as_u64()) {
        head.push_str(&format!(", {files} files, {} MB", bytes / (1024 * 1024)));
    }
    if let Some(oldest) = a["oldest_segment"].as_str() {
        head.push_str(&format!(", oldest segment {oldest}"));
    }
    let mut lines = vec![head];
    if let Some(reason) = a["last_failure_reason"].as_str() {
        let wal = a["last_failed_wal"].as_str().unwrap_or("?");
        lines.push(format!("  archiving FAILS ({wal}): {reason}"));
    }
    for c in a["corrupt"].as_array().into_iter().flatten() {
        lines.push(format!(
            "  corrupt archived file {}: {}",
            c["file"].as_str().unwrap_or("?"),
            c["reason"].as_str().unwrap_or("?")
        ));
    }
    for f in &status.fetch_failures {
        lines.push(format!(
            "  {} cannot restore {} from the archive: {}",
            f["member"].as_str().unwrap_or("?"),
            f["wal"].as_str().unwrap_or("?"),
            f["reason"].as_str().unwrap_or("?")
        ));
    }
    lines
}

fn print_members(status: &Status) {
    let line = |cols: [&str; 13]| {
        crate::outln!(
            "{:<1}{:<8} {:<16} {:<8} {:<8} {:<5} {:<3} {:<12} {:<12} {:<12} {:>10} {:<9} {:<4}",
            cols[0],
            cols[1],
            cols[2],
            cols[3],
            cols[4],
            cols[5],
            cols[6],
            cols[7],
            cols[8],
            cols[9],
            cols[10],
            cols[11],
            cols[12]
        )
    };
    line([
        " ",
        "MEMBER",
        "HOST:PORT",
        "ROLE",
        "STATE",
        "AGENT",
        "TL",
        "LSN",
        "RECEIVED",
        "REPLAYED",
        "LAG",
        "SYNC",
        "SLOT",
    ]);
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    for m in &status.members {
        let slot = match m.slot_active {
            Some(true) => "on",
            Some(false) => "off",
            None => "-",
        };
        let state = if m.writable == Some(false) {
            "fenced"
        } else {
            m.state.as_str()
        };
        line([
            if m.leader { "*" } else { " " },
            &m.name,
            &format!("{}:{}", m.host, m.port),
            &m.role,
            state,
            &m.agent,
            &opt(&m.timeline.map(|t| t.to_string())),
            &opt(&m.lsn),
            &opt(&m.receive_lsn),
            &opt(&m.replay_lsn),
            &opt(&m.lag_bytes.map(|b| b.to_string())),
            &opt(&m.sync_state),
            slot,
        ]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probed(server: bool, local_running: Option<bool>) -> Probed {
        Probed {
            name: "n".into(),
            host: "h".into(),
            port: 1,
            api_url: "http://h:2".into(),
            local_running,
            server: server.then(ServerStatus::default),
            was_standby: Some(true),
        }
    }

    fn ctx<'a>(dcs_read: bool, record: Option<&'a MemberState>, agent_up: bool) -> MergeCtx<'a> {
        MergeCtx {
            primary_lsn: None,
            repl: &[],
            slots: &[],
            dcs_read,
            record,
            agent_up,
            leader: None,
        }
    }

    /// "down" needs all three sources to agree; anything less is "stopped".
    #[test]
    fn down_only_when_etcd_agent_and_postgres_all_say_so() {
        let rec = MemberState {
            pg_running: true,
            ..Default::default()
        };
        let stopped = probed(false, Some(false));
        assert_eq!(member_state(&stopped, &ctx(true, None, false)), "down");
        assert_eq!(member_state(&stopped, &ctx(false, None, false)), "stopped");
        assert_eq!(
            member_state(&stopped, &ctx(true, Some(&rec), false)),
            "stopped"
        );
        assert_eq!(member_state(&stopped, &ctx(true, None, true)), "stopped");
        assert_eq!(
            member_state(&probed(true, None), &ctx(true, None, false)),
            "running"
        );
        assert_eq!(
            member_state(&probed(false, Some(true)), &ctx(true, None, false)),
            "starting"
        );
        // On another host only the member's record can tell.
        assert_eq!(
            member_state(&probed(false, None), &ctx(true, Some(&rec), true)),
            "running"
        );
    }

    /// A dead node does not keep the role primary; a running primary with
    /// the fence on is reported as refusing writes, and the table says why.
    #[test]
    fn dead_primary_has_no_role_and_a_fenced_primary_refuses_writes() {
        let mut dead = probed(false, Some(false));
        dead.was_standby = Some(false);
        let m = member_status(dead, &ctx(false, None, false));
        assert_eq!(m.state, "stopped");
        assert_eq!(m.role, "unknown");
        assert_eq!(m.last_role.as_deref(), Some("primary"));

        let mut fenced = probed(true, Some(true));
        fenced.server = Some(ServerStatus {
            in_recovery: false,
            read_only_default: true,
            ..ServerStatus::default()
        });
        let m = member_status(fenced, &ctx(false, None, false));
        assert_eq!((m.role.as_str(), m.writable), ("primary", Some(false)));
        let status = Status {
            cluster: "c".into(),
            dir: "d".into(),
            leader: None,
            paused: None,
            etcd: "unreachable".into(),
            etcd_error: Some("timed out".into()),
            sync: None,
            switchover: None,
            failover: None,
            decisions: Vec::new(),
            members: vec![m],
            proxy: None,
            archive: None,
            fetch_failures: Vec::new(),
        };
        let mut status = status;
        assert_eq!(
            archive_lines(&status),
            ["archive: unknown (no agent answered)"]
        );
        status.archive = Some(serde_json::json!({
            "state": "failing",
            "last_archived_wal": "000000010000000000000004",
            "last_archived_age_seconds": 42.0,
            "files": 3, "bytes": 50331648u64,
            "oldest_segment": "000000010000000000000001",
            "last_failed_wal": "000000010000000000000005",
            "last_failure_reason": "disk full",
            "corrupt": [{"file": "000000010000000000000002", "reason": "sha256 mismatch"}],
        }));
        status.fetch_failures = vec![serde_json::json!({
            "member": "n2", "wal": "000000010000000000000002", "reason": "corrupt",
        })];
        assert_eq!(
            archive_lines(&status),
            [
                "archive: failing, last archived 000000010000000000000004 42s ago, 3 files, 48 MB, \
                 oldest segment 000000010000000000000001",
                "  archiving FAILS (000000010000000000000005): disk full",
                "  corrupt archived file 000000010000000000000002: sha256 mismatch",
                "  n2 cannot restore 000000010000000000000002 from the archive: corrupt",
            ]
        );
        let notes = notes(&status);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].starts_with("writes refused: n is fenced"),
            "{notes:?}"
        );
        assert!(notes[0].contains("etcd is unreachable"), "{notes:?}");

        let mut standby = probed(true, Some(true));
        standby.server = Some(ServerStatus {
            in_recovery: true,
            ..ServerStatus::default()
        });
        let m = member_status(standby, &ctx(true, None, true));
        assert_eq!((m.role.as_str(), m.writable), ("standby", None));
        let m = member_status(probed(true, Some(true)), &ctx(true, None, true));
        assert_eq!((m.role.as_str(), m.writable), ("primary", Some(true)));
    }
}
