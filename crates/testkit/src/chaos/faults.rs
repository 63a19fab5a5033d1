//! What can be done to the lab, and how each fault is healed.
//!
//! Process faults work everywhere; partitions and link latency need the
//! netns lab; the full archive needs the archive tmpfs (root). `inject`
//! returns an [`Active`] fault that remembers exactly what to undo; `heal`
//! undoes it (restart a killed agent, which restarts PostgreSQL; SIGCONT;
//! flush the namespace's iptables rules; restart etcd members; remove the
//! filler file). [`heal_everything`] is the blunt version used at the end
//! and after a fault that left the cluster unhealthy.

use super::lab::{signal_pid, Lab};
use super::schedule::Plan;
use anyhow::Context;
use nix::sys::signal::Signal;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    KillPostgres,
    KillAgent,
    NodeCrash,
    PauseAgent,
    PausePostgres,
    PrimaryFromEtcd,
    PrimaryFromStandbys,
    IsolateStandby,
    KillEtcdMember,
    EtcdMajorityLost,
    Switchover,
    ArchiveFull,
    LinkLatency,
    /// Every etcd member killed at once (failsafe mode's case).
    EtcdOutage,
}

impl FaultKind {
    pub const ALL: [FaultKind; 14] = [
        FaultKind::KillPostgres,
        FaultKind::KillAgent,
        FaultKind::NodeCrash,
        FaultKind::PauseAgent,
        FaultKind::PausePostgres,
        FaultKind::PrimaryFromEtcd,
        FaultKind::PrimaryFromStandbys,
        FaultKind::IsolateStandby,
        FaultKind::KillEtcdMember,
        FaultKind::EtcdMajorityLost,
        FaultKind::Switchover,
        FaultKind::ArchiveFull,
        FaultKind::LinkLatency,
        FaultKind::EtcdOutage,
    ];

    /// The name used in history.json and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillPostgres => "kill_postgres",
            FaultKind::KillAgent => "kill_agent",
            FaultKind::NodeCrash => "node_crash",
            FaultKind::PauseAgent => "pause_agent",
            FaultKind::PausePostgres => "pause_postgres",
            FaultKind::PrimaryFromEtcd => "primary_from_etcd",
            FaultKind::PrimaryFromStandbys => "primary_from_standbys",
            FaultKind::IsolateStandby => "isolate_standby",
            FaultKind::KillEtcdMember => "kill_etcd_member",
            FaultKind::EtcdMajorityLost => "etcd_majority_lost",
            FaultKind::Switchover => "switchover",
            FaultKind::ArchiveFull => "archive_full",
            FaultKind::LinkLatency => "link_latency",
            FaultKind::EtcdOutage => "etcd_outage",
        }
    }

    pub fn parse(name: &str) -> Option<FaultKind> {
        Self::ALL.into_iter().find(|k| k.name() == name.trim())
    }

    /// Why this kind cannot run in `lab`, if it cannot.
    pub fn unavailable(self, lab: &Lab) -> Option<String> {
        let netns = lab.net.index.is_some();
        match self {
            FaultKind::PrimaryFromEtcd
            | FaultKind::PrimaryFromStandbys
            | FaultKind::IsolateStandby
                if !netns =>
            {
                Some(
                    "partitions need the netns lab (run as root with iproute2 and iptables)".into(),
                )
            }
            FaultKind::LinkLatency => lab.netem_missing.clone(),
            FaultKind::ArchiveFull if lab.archive_mount.is_none() => {
                Some("no archive tmpfs (mounting needs root)".into())
            }
            _ => None,
        }
    }
}

/// An injected fault and what undoes it.
#[derive(Debug)]
pub struct Active {
    pub kind: FaultKind,
    pub target: String,
    pub target_role: String,
    pub detail: String,
    undo: Undo,
}

#[derive(Debug)]
enum Undo {
    Nothing,
    StartAgent(usize),
    Resume(Vec<u32>),
    Unblock(String),
    RestartEtcd(Vec<usize>),
    RemoveFile(PathBuf),
    RemoveQdisc(String),
}

/// Node index: the primary when `pick` is even (or `primary_only`), else a
/// standby chosen by `pick`.
fn choose_node(lab: &Lab, leader: Option<usize>, pick: u64, who: Who) -> usize {
    let n = lab.nodes.len();
    let primary = leader.unwrap_or(0);
    let standbys: Vec<usize> = (0..n).filter(|i| *i != primary).collect();
    let want_primary = match who {
        Who::Primary => true,
        Who::Standby => false,
        Who::Any => pick.is_multiple_of(2),
    };
    if want_primary || standbys.is_empty() {
        primary
    } else {
        standbys[((pick / 2) as usize) % standbys.len()]
    }
}

#[derive(Clone, Copy)]
enum Who {
    Primary,
    Standby,
    Any,
}

/// Inject the fault `plan` describes.
pub async fn inject(lab: &mut Lab, plan: &Plan) -> anyhow::Result<Active> {
    let leader = match lab.leader().await {
        Some(l) => lab.node_index(&l),
        None => None,
    };
    let who = match plan.kind {
        FaultKind::PrimaryFromEtcd
        | FaultKind::PrimaryFromStandbys
        | FaultKind::Switchover
        | FaultKind::ArchiveFull => Who::Primary,
        FaultKind::IsolateStandby => Who::Standby,
        _ => Who::Any,
    };
    let i = choose_node(lab, leader, plan.pick, who);
    let name = lab.nodes[i].member.name.clone();
    let role = if Some(i) == leader {
        "primary"
    } else {
        "standby"
    };
    let mut a = Active {
        kind: plan.kind,
        target: name.clone(),
        target_role: role.into(),
        detail: String::new(),
        undo: Undo::Nothing,
    };
    match plan.kind {
        FaultKind::KillPostgres => {
            let pids = lab.postgres_pids(i);
            for p in &pids {
                signal_pid(*p, Signal::SIGKILL);
            }
            a.detail = format!(
                "SIGKILL to PostgreSQL (postmaster and children, {} processes)",
                pids.len()
            );
        }
        FaultKind::KillAgent => {
            lab.nodes[i].agent.kill();
            a.detail = "SIGKILL to the agent".into();
            a.undo = Undo::StartAgent(i);
        }
        FaultKind::NodeCrash => {
            lab.nodes[i].agent.kill();
            for p in lab.postgres_pids(i) {
                signal_pid(p, Signal::SIGKILL);
            }
            a.detail = "SIGKILL to the agent and PostgreSQL at once".into();
            a.undo = Undo::StartAgent(i);
        }
        FaultKind::PauseAgent => {
            lab.nodes[i].agent.signal(Signal::SIGSTOP);
            a.detail = "SIGSTOP to the agent".into();
            a.undo = Undo::Resume(lab.nodes[i].agent.pid().into_iter().collect());
        }
        FaultKind::PausePostgres => {
            let pids = lab.postgres_pids(i);
            for p in &pids {
                signal_pid(*p, Signal::SIGSTOP);
            }
            a.detail = format!("SIGSTOP to PostgreSQL ({} processes)", pids.len());
            a.undo = Undo::Resume(pids);
        }
        FaultKind::PrimaryFromEtcd => {
            lab.block(&name, &lab.etcd_addrs(), plan.direction)?;
            a.detail = format!(
                "iptables DROP between {name} and every etcd member, {}",
                plan.direction.name()
            );
            a.undo = Undo::Unblock(name);
        }
        FaultKind::PrimaryFromStandbys => {
            let peers: Vec<String> = lab
                .nodes
                .iter()
                .filter(|n| n.member.name != name)
                .map(|n| n.host.addr.clone())
                .collect();
            lab.block(&name, &peers, plan.direction)?;
            a.detail = format!(
                "iptables DROP between {name} and the standbys, {}",
                plan.direction.name()
            );
            a.undo = Undo::Unblock(name);
        }
        FaultKind::IsolateStandby => {
            lab.block(&name, &lab.others(&name), plan.direction)?;
            a.detail = format!(
                "iptables DROP between {name} and every other host, {}",
                plan.direction.name()
            );
            a.undo = Undo::Unblock(name);
        }
        FaultKind::KillEtcdMember | FaultKind::EtcdMajorityLost | FaultKind::EtcdOutage => {
            etcd_fault(lab, plan, &mut a)
        }
        FaultKind::Switchover => switchover(lab, &mut a).await,
        FaultKind::ArchiveFull => archive_full(lab, &mut a)?,
        FaultKind::LinkLatency => latency(lab, plan, &name, &mut a)?,
    }
    Ok(a)
}

fn etcd_fault(lab: &mut Lab, plan: &Plan, a: &mut Active) {
    let n = lab.etcd.len();
    let count = match plan.kind {
        FaultKind::EtcdMajorityLost => n / 2 + 1,
        FaultKind::EtcdOutage => n,
        _ => 1,
    };
    let first = (plan.pick as usize) % n;
    let victims: Vec<usize> = (0..count).map(|k| (first + k) % n).collect();
    let names: Vec<String> = victims
        .iter()
        .map(|v| lab.etcd[*v].host.name.clone())
        .collect();
    for v in &victims {
        lab.kill_etcd(*v);
    }
    a.target = names.join(",");
    a.target_role = "etcd".into();
    a.detail = format!("SIGKILL to {} of {n} etcd members", victims.len());
    a.undo = Undo::RestartEtcd(victims);
}

async fn switchover(lab: &Lab, a: &mut Active) {
    let out = tokio::process::Command::new(&lab.bin)
        .arg("switchover")
        .arg("--config")
        .arg(&lab.config_path)
        .args(["--wait", "60"])
        .env("RUST_LOG", "warn")
        .output()
        .await;
    a.detail = match out {
        Ok(o) => format!(
            "pgha switchover: {} {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
                .trim()
                .chars()
                .take(300)
                .collect::<String>()
        ),
        Err(e) => format!("pgha switchover could not run: {e}"),
    };
}

/// Fill what is left of the archive tmpfs with one preallocated file.
fn archive_full(lab: &Lab, a: &mut Active) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd;
    let dir = &lab.config.archive_dir;
    let path = dir.join("chaos-filler");
    let st = nix::sys::statvfs::statvfs(dir).context("statvfs the archive")?;
    let free = st.blocks_available() as i64 * st.fragment_size() as i64;
    let f = std::fs::File::create(&path).context("create the filler file")?;
    let r = nix::fcntl::posix_fallocate(f.as_raw_fd(), 0, free);
    a.target = "archive".into();
    a.target_role = "archive".into();
    a.detail = format!(
        "archive tmpfs filled ({} MiB filler{})",
        free >> 20,
        r.err()
            .map(|e| format!(", fallocate: {e}"))
            .unwrap_or_default()
    );
    a.undo = Undo::RemoveFile(path);
    Ok(())
}

fn latency(lab: &Lab, plan: &Plan, name: &str, a: &mut Active) -> anyhow::Result<()> {
    let ns = lab
        .net
        .host(name)
        .and_then(|h| h.ns.clone())
        .context("latency needs the netns lab")?;
    let ms = format!("{}ms", 20 + plan.pick % 180);
    super::lab::ip(&[
        "netns", "exec", &ns, "tc", "qdisc", "add", "dev", "eth0", "root", "netem", "delay", &ms,
    ])?;
    a.detail = format!("netem delay {ms} on {name}'s link");
    a.undo = Undo::RemoveQdisc(ns);
    Ok(())
}

/// Undo `a`.
pub fn heal(lab: &mut Lab, a: &Active) -> anyhow::Result<()> {
    match &a.undo {
        Undo::Nothing => Ok(()),
        Undo::StartAgent(i) => lab.start_agent(*i),
        Undo::Resume(pids) => {
            for p in pids {
                signal_pid(*p, Signal::SIGCONT);
            }
            Ok(())
        }
        Undo::Unblock(host) => lab.unblock(host),
        Undo::RestartEtcd(v) => {
            for i in v {
                lab.restart_etcd(*i)?;
            }
            Ok(())
        }
        Undo::RemoveFile(p) => std::fs::remove_file(p).context("remove the filler file"),
        Undo::RemoveQdisc(ns) => super::lab::ip(&[
            "netns", "exec", ns, "tc", "qdisc", "del", "dev", "eth0", "root",
        ]),
    }
}

/// Undo anything that may still be in effect: resume paused processes,
/// flush partitions, restart etcd members and agents that are down.
pub fn heal_everything(lab: &mut Lab) -> Vec<String> {
    let mut notes = Vec::new();
    for i in 0..lab.nodes.len() {
        for p in lab.postgres_pids(i) {
            signal_pid(p, Signal::SIGCONT);
        }
        lab.nodes[i].agent.signal(Signal::SIGCONT);
        let name = lab.nodes[i].member.name.clone();
        if let Err(e) = lab.unblock(&name) {
            notes.push(format!("unblock {name}: {e:#}"));
        }
        if !lab.nodes[i].agent.running() {
            notes.push(format!("{name}'s agent was not running: started it"));
            if let Err(e) = lab.start_agent(i) {
                notes.push(format!("start {name}'s agent: {e:#}"));
            }
        }
    }
    for i in 0..lab.etcd.len() {
        if !lab.etcd[i].proc.running() {
            notes.push(format!(
                "{} was not running: started it",
                lab.etcd[i].host.name
            ));
            if let Err(e) = lab.restart_etcd(i) {
                notes.push(format!("restart etcd: {e:#}"));
            }
        }
    }
    let _ = std::fs::remove_file(lab.config.archive_dir.join("chaos-filler"));
    notes
}

/// A bounded pause that ends early on `cancel`.
pub async fn hold(d: Duration, cancel: &tokio_util::sync::CancellationToken) {
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}
