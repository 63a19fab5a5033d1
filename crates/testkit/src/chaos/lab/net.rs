//! The lab's hosts and processes: network namespaces on a bridge of the
//! lab's own (or loopback), starting a program on a host, and stopping it
//! by PID. Hazard: `Net` removes namespaces, veths and the bridge on drop.

use anyhow::{bail, Context};
use nix::sys::signal::Signal;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PG_PORT: u16 = 5432;
const API_PORT: u16 = 8008;
const ETCD_PORT: u16 = 2379;

/// One host of the lab: a node or an etcd member.
#[derive(Clone, Debug)]
pub struct Host {
    pub name: String,
    pub addr: String,
    /// Network namespace, in netns mode.
    pub ns: Option<String>,
    pub(super) veth: Option<String>,
    /// Node: PostgreSQL and API ports. etcd: client and peer ports.
    pub ports: (u16, u16),
}

/// A started process; the `Child` is kept so it is reaped.
pub struct Proc {
    pub name: String,
    pub(super) child: Option<Child>,
}

impl Proc {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn signal(&mut self, sig: Signal) {
        if self.running() {
            if let Some(pid) = self.pid() {
                signal_pid(pid, sig);
            }
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        self.signal(Signal::SIGKILL);
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    /// SIGCONT, SIGTERM, wait up to `grace`, then SIGKILL.
    pub fn stop(&mut self, grace: Duration) {
        self.signal(Signal::SIGCONT);
        self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while self.running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
    }
}

pub fn signal_pid(pid: u32, sig: Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}
/// The network of the lab, removed on drop.
pub struct Net {
    /// Third octet of 10.213.N.0/24, in netns mode.
    pub index: Option<u8>,
    pub(super) hosts: Vec<Host>,
}

impl Net {
    pub fn mode(&self) -> &'static str {
        if self.index.is_some() {
            "netns"
        } else {
            "loopback"
        }
    }

    fn bridge(index: u8) -> String {
        format!("pgchaos{index}")
    }

    /// Claim a free subnet by creating its bridge; None when netns cannot be used.
    fn claim() -> Option<u8> {
        if !nix::unistd::Uid::effective().is_root() {
            tracing::warn!("not root: the lab runs on loopback (process faults only)");
            return None;
        }
        let used = String::from_utf8_lossy(
            &Command::new("ip")
                .args(["-o", "addr"])
                .output()
                .ok()?
                .stdout,
        )
        .into_owned();
        let start = (std::process::id() % 200) as u16;
        for k in 0..250u16 {
            let index = ((start + k) % 250 + 1) as u8;
            if used.contains(&format!("10.213.{index}.")) {
                continue;
            }
            if ip(&["link", "add", &Self::bridge(index), "type", "bridge"]).is_ok() {
                return Some(index);
            }
        }
        tracing::warn!("no free 10.213.N.0/24 subnet: the lab runs on loopback");
        None
    }

    /// Set up the network: bridge and one namespace per host name.
    pub(super) fn create(loopback: bool, names: &[String]) -> anyhow::Result<Net> {
        let index = if loopback { None } else { Self::claim() };
        let mut net = Net {
            index,
            hosts: Vec::new(),
        };
        let Some(index) = index else {
            net.hosts = names
                .iter()
                .map(|n| loopback_host(n, (crate::free_port(), crate::free_port())))
                .collect();
            return Ok(net);
        };
        let br = Self::bridge(index);
        ip(&["addr", "add", &format!("10.213.{index}.1/24"), "dev", &br])?;
        ip(&["link", "set", &br, "up"])?;
        for (i, name) in names.iter().enumerate() {
            let ns = format!("pgchaos{index}-{name}");
            let veth = format!("pgc{index}v{i}");
            let addr = format!("10.213.{index}.{}", 11 + i);
            // A namespace of this name can only be left over from a lab that
            // was killed: its bridge (our lock) is gone, so it is stale.
            let _ = ip(&["netns", "del", &ns]);
            ip(&["netns", "add", &ns])?;
            net.hosts.push(Host {
                name: name.clone(),
                addr: addr.clone(),
                ns: Some(ns.clone()),
                veth: Some(veth.clone()),
                ports: if name.starts_with("etcd") {
                    (ETCD_PORT, ETCD_PORT + 1)
                } else {
                    (PG_PORT, API_PORT)
                },
            });
            ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            ip(&["link", "set", &veth, "master", &br, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    /// The harness's own address (where the proxy and clients live).
    pub fn harness_addr(&self) -> String {
        match self.index {
            Some(i) => format!("10.213.{i}.1"),
            None => "127.0.0.1".into(),
        }
    }

    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let Some(index) = self.index else { return };
        for h in &self.hosts {
            if let Some(ns) = &h.ns {
                kill_namespace_pids(ns);
                let _ = ip(&["netns", "del", ns]);
            }
            if let Some(v) = &h.veth {
                let _ = ip(&["link", "del", v]);
            }
        }
        let _ = ip(&["link", "del", &Self::bridge(index)]);
    }
}

pub(super) fn loopback_host(name: &str, ports: (u16, u16)) -> Host {
    Host {
        name: name.to_string(),
        addr: "127.0.0.1".into(),
        ns: None,
        veth: None,
        ports,
    }
}

/// SIGKILL whatever still runs in namespace `ns`.
fn kill_namespace_pids(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<u32>() {
                signal_pid(pid, Signal::SIGKILL);
            }
        }
    }
}

/// Run `ip ARGS`; an error carries its stderr.
pub fn ip(args: &[&str]) -> anyhow::Result<()> {
    run_tool("ip", args)
}

pub fn run_tool(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("run {program} (install it: scripts/install-deps)"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Start `program args` on `host` (inside its namespace), own process group,
/// output appended to `log`.
pub(super) fn spawn_on(
    host: &Host,
    name: &str,
    program: &Path,
    args: &[String],
    log: &Path,
    env: &[(&str, &str)],
) -> anyhow::Result<Proc> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("open {}", log.display()))?;
    let err = out.try_clone().context("clone log handle")?;
    let mut cmd = match &host.ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(program);
            c
        }
        None => Command::new(program),
    };
    cmd.args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    let child = cmd
        .spawn()
        .with_context(|| format!("start {name} ({})", program.display()))?;
    Ok(Proc {
        name: name.to_string(),
        child: Some(child),
    })
}

/// Which packets a partition drops, seen from the cut-off host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Both,
    /// Only packets coming in from the peers.
    In,
    /// Only packets going out to the peers.
    Out,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Direction::Both => "both directions",
            Direction::In => "inbound only",
            Direction::Out => "outbound only",
        }
    }
}

pub(super) fn alive(pid: u32) -> bool {
    pgha_postgres::process_alive(pid as i32)
}

pub(super) fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}
