//! `pgha status`: each member's role, state, timeline, WAL positions, lag,
//! the sync state the primary reports for it, and whether its slot is
//! active; a table for people, `--json` for programs.

use crate::dev::DevCluster;
use anyhow::Context;
use pgha_core::Lsn;
use pgha_postgres::probe::{self, ReplicationRow, ServerStatus, SlotRow};
use pgha_postgres::{Instance, Secrets};
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// Cluster directory.
    #[arg(long, default_value = "pgha-data")]
    pub dir: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct Status {
    pub cluster: String,
    pub dir: String,
    pub members: Vec<MemberStatus>,
}

#[derive(Debug, Serialize)]
pub struct MemberStatus {
    pub name: String,
    pub host: String,
    pub port: u16,
    /// "primary", "standby" or "unknown".
    pub role: String,
    /// "running", "starting" or "stopped".
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
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Runtime::new().context("start the async runtime")?;
    rt.block_on(async {
        let cluster = DevCluster::open(&args.dir)?;
        let status = collect(&cluster).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&status)?);
        } else {
            print_table(&status);
        }
        Ok(ExitCode::SUCCESS)
    })
}

struct Observed {
    inst: Instance,
    state: &'static str,
    server: Option<ServerStatus>,
    was_standby: Option<bool>,
}

pub async fn collect(cluster: &DevCluster) -> anyhow::Result<Status> {
    let secrets = Secrets::load(&cluster.config.secrets_dir)?;
    let mut observed = Vec::new();
    let mut replication: Vec<ReplicationRow> = Vec::new();
    let mut slots: Vec<SlotRow> = Vec::new();
    let mut primary_lsn: Option<Lsn> = None;
    for inst in cluster.instances() {
        let was_standby = inst
            .controldata()
            .await
            .ok()
            .map(|cd| cd.state.was_standby());
        let client = if inst.is_running() {
            probe::connect(
                &inst.host,
                inst.port,
                &cluster.config.superuser,
                &secrets.admin_password,
                Duration::from_secs(2),
            )
            .await
            .ok()
        } else {
            None
        };
        let server = match &client {
            Some(c) => probe::server_status(c).await.ok(),
            None => None,
        };
        if let (Some(c), Some(s)) = (&client, &server) {
            if !s.in_recovery {
                primary_lsn = s.current_lsn;
                replication = probe::replication(c).await.unwrap_or_default();
                slots = probe::slots(c).await.unwrap_or_default();
            }
        }
        let state = match (&server, inst.is_running()) {
            (Some(_), _) => "running",
            (None, true) => "starting",
            (None, false) => "stopped",
        };
        observed.push(Observed {
            inst,
            state,
            server,
            was_standby,
        });
    }
    let members = observed
        .into_iter()
        .map(|o| member_status(o, primary_lsn, &replication, &slots))
        .collect();
    Ok(Status {
        cluster: cluster.config.name.clone(),
        dir: cluster.dir.display().to_string(),
        members,
    })
}

fn member_status(
    o: Observed,
    primary_lsn: Option<Lsn>,
    repl: &[ReplicationRow],
    slots: &[SlotRow],
) -> MemberStatus {
    let name = o.inst.name.clone();
    let role = match (&o.server, o.was_standby) {
        (Some(s), _) if s.in_recovery => "standby",
        (Some(_), _) => "primary",
        (None, Some(true)) => "standby",
        (None, Some(false)) => "primary",
        (None, None) => "unknown",
    };
    let s = o.server.clone().unwrap_or_default();
    let position = if role == "primary" {
        s.current_lsn
    } else {
        s.replay_lsn
    };
    let lag_bytes = match (o.server.is_some(), primary_lsn, position) {
        (true, Some(p), Some(mine)) => Some(p.bytes_after(mine)),
        _ => None,
    };
    let row = repl.iter().find(|r| r.application_name == name);
    MemberStatus {
        host: o.inst.host.clone(),
        port: o.inst.port,
        role: role.to_string(),
        state: o.state.to_string(),
        timeline: s.timeline.map(|t| t.0),
        lsn: s.current_lsn.map(|l| l.to_string()),
        receive_lsn: s.receive_lsn.map(|l| l.to_string()),
        replay_lsn: s.replay_lsn.map(|l| l.to_string()),
        lag_bytes,
        sync_state: row.map(|r| r.sync_state.clone()),
        slot_active: slots.iter().find(|sl| sl.name == name).map(|sl| sl.active),
        name,
    }
}

fn print_table(status: &Status) {
    println!("cluster {} ({})", status.cluster, status.dir);
    println!(
        "{:<8} {:<16} {:<8} {:<8} {:<3} {:<12} {:<12} {:<12} {:>10} {:<9} {:<4}",
        "MEMBER",
        "HOST:PORT",
        "ROLE",
        "STATE",
        "TL",
        "LSN",
        "RECEIVED",
        "REPLAYED",
        "LAG",
        "SYNC",
        "SLOT"
    );
    let dash = || "-".to_string();
    for m in &status.members {
        println!(
            "{:<8} {:<16} {:<8} {:<8} {:<3} {:<12} {:<12} {:<12} {:>10} {:<9} {:<4}",
            m.name,
            format!("{}:{}", m.host, m.port),
            m.role,
            m.state,
            m.timeline.map(|t| t.to_string()).unwrap_or_else(dash),
            m.lsn.clone().unwrap_or_else(dash),
            m.receive_lsn.clone().unwrap_or_else(dash),
            m.replay_lsn.clone().unwrap_or_else(dash),
            m.lag_bytes.map(|b| b.to_string()).unwrap_or_else(dash),
            m.sync_state.clone().unwrap_or_else(dash),
            match m.slot_active {
                Some(true) => "on",
                Some(false) => "off",
                None => "-",
            },
        );
    }
}
