//! The chaos lab: the hosts (network namespaces on a bridge of the lab's
//! own, or plain loopback) and the processes on them: a three-member etcd,
//! three nodes (a `pgha agent` each, which runs PostgreSQL) and the proxy.
//!
//! Network: with `ip netns` (root), the lab claims a free /24 in
//! 10.213.0.0/16 by creating the bridge `pgchaos<N>` (the name is the lock,
//! so parallel labs never share a subnet), gives the harness 10.213.N.1 on
//! it, and puts every node and etcd member in its own namespace with its own
//! veth and address. Partitions are iptables DROP rules inside a host's
//! namespace; they vanish with the namespace. Without netns the lab runs on
//! loopback and only process faults are possible.
//!
//! Hazards: every process is started in its own process group and stopped
//! by PID (never by name). Dropping the lab stops everything it started,
//! unmounts the archive tmpfs, deletes namespaces, veths and the bridge, and
//! removes its directory unless `keep` is set; it must therefore be dropped
//! on every path (Ctrl-C, error, panic). A lab killed with SIGKILL leaves
//! `pgchaos<N>` links and namespaces behind: `ip netns list | grep pgchaos`.

use super::clients::Endpoints;
use anyhow::{bail, Context};
use nix::sys::signal::Signal;
use pgha_config::ClusterConfig;
use pgha_dcs::{ClusterKeys, Dcs, EtcdDcs};
use pgha_postgres::{probe, ServiceUser};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod net;
use net::{alive, loopback_host, parent_pid, spawn_on};
pub use net::{ip, run_tool, signal_pid, Direction, Host, Net, Proc};

/// Size of the tmpfs that holds the WAL archive (the archive_full fault
/// fills what is left of it).
const ARCHIVE_TMPFS: &str = "size=2g,mode=0700";
/// The whole lab lives on a tmpfs when it can (root): etcd's and
/// PostgreSQL's fsyncs then do not stall on a disk shared with other work,
/// which on a loaded machine makes etcd miss its deadlines. The faults are
/// process and network faults, never a machine crash, so nothing a tmpfs
/// loses matters.
const LAB_TMPFS: &str = "size=6g,mode=0755";

#[derive(Clone, Debug)]
pub struct LabOptions {
    /// The `pgha` binary (copied into the lab so a rebuild cannot change it).
    pub pgha_bin: PathBuf,
    /// Keep the lab directory (data, logs) after the run.
    pub keep: bool,
    /// Use loopback even when network namespaces would work.
    pub loopback: bool,
}

/// An etcd member of the lab.
pub struct EtcdMember {
    pub host: Host,
    pub proc: Proc,
    dir: PathBuf,
    initial_cluster: String,
}

/// A node: its host, its member entry and its agent.
pub struct Node {
    pub host: Host,
    pub member: pgha_config::Member,
    pub agent: Proc,
}

/// The running lab.
pub struct Lab {
    pub dir: PathBuf,
    pub keep: bool,
    pub config: ClusterConfig,
    pub config_path: PathBuf,
    pub password: String,
    pub bin: PathBuf,
    pub user: ServiceUser,
    pub nodes: Vec<Node>,
    pub etcd: Vec<EtcdMember>,
    pub proxy: Option<Proc>,
    pub proxy_rw: (String, u16),
    /// The archive's tmpfs mount, when there is one.
    pub archive_mount: Option<PathBuf>,
    /// The lab directory's own tmpfs, when there is one.
    pub lab_mount: Option<PathBuf>,
    /// Why link latency cannot be injected, if it cannot.
    pub netem_missing: Option<String>,
    pub net: Net,
}

pub const NODES: [&str; 3] = ["node1", "node2", "node3"];
const ETCDS: [&str; 3] = ["etcd1", "etcd2", "etcd3"];

impl Lab {
    /// Build the network, start etcd, the nodes (node1 bootstraps) and the
    /// proxy, and wait until both standbys stream.
    pub async fn start(opts: &LabOptions) -> anyhow::Result<Lab> {
        let tmp = tempfile::Builder::new()
            .prefix("pgha-chaos")
            .tempdir()
            .context("create the lab directory")?;
        let names: Vec<String> = NODES
            .iter()
            .chain(ETCDS.iter())
            .map(|s| s.to_string())
            .collect();
        let net = Net::create(opts.loopback, &names).context("set up the lab network")?;
        let lab_mount = mount_tmpfs(tmp.path(), LAB_TMPFS);
        let user = ServiceUser::resolve("postgres").context("resolve the postgres OS user")?;
        user.give(tmp.path())?;
        let config_path = tmp.path().join("cluster.toml");
        let proxy_rw = (net.harness_addr(), crate::free_port());
        std::fs::write(&config_path, config_text(&net)).context("write cluster.toml")?;
        let config = pgha_config::load(&config_path).context("load the lab's cluster.toml")?;
        let mut lab = Lab {
            dir: tmp.keep(),
            keep: opts.keep,
            config,
            config_path,
            password: String::new(),
            bin: PathBuf::new(),
            user,
            nodes: Vec::new(),
            etcd: Vec::new(),
            proxy: None,
            proxy_rw,
            archive_mount: None,
            lab_mount,
            netem_missing: None,
            net,
        };
        lab.bin = lab.dir.join("bin").join("pgha");
        lab.prepare(opts)?;
        let started = match lab.start_etcd() {
            Ok(()) => match lab.start_nodes().await {
                Ok(()) => lab.start_proxy(),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        if let Err(e) = started {
            // Keep the logs the error points to.
            lab.keep = true;
            return Err(e);
        }
        Ok(lab)
    }
}

/// The lab's cluster.toml: three members on their hosts, etcd everywhere.
fn config_text(net: &Net) -> String {
    let endpoints: Vec<String> = ETCDS
        .iter()
        .filter_map(|e| net.host(e))
        .map(|h| format!("\"http://{}:{}\"", h.addr, h.ports.0))
        .collect();
    let mut text = format!(
        "name = \"chaos\"\n\n[archive]\ndir = \"archive\"\n\n[dcs]\nendpoints = [{}]\n",
        endpoints.join(", ")
    );
    for n in NODES {
        if let Some(h) = net.host(n) {
            text.push_str(&format!(
                "\n[[members]]\nname = \"{n}\"\nhost = \"{}\"\nport = {}\napi_port = {}\n",
                h.addr, h.ports.0, h.ports.1
            ));
        }
    }
    text
}

impl Lab {
    /// Copy the binary, mount the archive tmpfs, create secrets and node dirs.
    fn prepare(&mut self, opts: &LabOptions) -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let bin_dir = self.dir.join("bin");
        std::fs::create_dir_all(&bin_dir).context("create bin dir")?;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o755))
            .context("open the lab dir to the service user")?;
        std::fs::copy(&opts.pgha_bin, &self.bin)
            .with_context(|| format!("copy {}", opts.pgha_bin.display()))?;
        std::fs::set_permissions(&self.bin, std::fs::Permissions::from_mode(0o755))
            .context("chmod pgha")?;
        let archive = self.config.archive_dir.clone();
        self.user.make_dir(&archive, 0o700)?;
        if nix::unistd::Uid::effective().is_root() {
            self.archive_mount = mount_tmpfs(&archive, ARCHIVE_TMPFS);
            self.user.make_dir(&archive, 0o700)?;
        }
        let secrets = pgha_postgres::Secrets::ensure(
            &self.config.secrets_dir,
            &self.user,
            &self.config.superuser,
            &self.config.replication_user,
        )?;
        self.password = secrets.admin_password.clone();
        for m in &self.config.members {
            if let Some(node_dir) = m.data_dir.parent() {
                self.user.make_dir(node_dir, 0o700)?;
            }
        }
        self.netem_missing = self.check_netem();
        Ok(())
    }

    /// None when `tc netem` works in a namespace; else why not.
    fn check_netem(&self) -> Option<String> {
        let Some(ns) = self.net.host(NODES[0]).and_then(|h| h.ns.clone()) else {
            return Some("loopback lab: no links to delay".into());
        };
        let add = [
            "netns", "exec", &ns, "tc", "qdisc", "add", "dev", "eth0", "root",
        ];
        let mut args: Vec<&str> = add.to_vec();
        args.extend(["netem", "delay", "1ms"]);
        match ip(&args) {
            Ok(()) => {
                let _ = ip(&[
                    "netns", "exec", &ns, "tc", "qdisc", "del", "dev", "eth0", "root",
                ]);
                None
            }
            Err(e) => Some(format!("tc netem unavailable ({e:#})")),
        }
    }

    fn start_etcd(&mut self) -> anyhow::Result<()> {
        let hosts: Vec<Host> = ETCDS
            .iter()
            .filter_map(|e| self.net.host(e).cloned())
            .collect();
        let initial_cluster = hosts
            .iter()
            .map(|h| format!("{}=http://{}:{}", h.name, h.addr, h.ports.1))
            .collect::<Vec<_>>()
            .join(",");
        for h in hosts {
            let dir = self.dir.join(&h.name);
            std::fs::create_dir_all(&dir).context("create etcd dir")?;
            let mut m = EtcdMember {
                host: h,
                proc: Proc {
                    name: String::new(),
                    child: None,
                },
                dir,
                initial_cluster: initial_cluster.clone(),
            };
            self.spawn_etcd(&mut m)?;
            self.etcd.push(m);
        }
        for m in &self.etcd {
            wait_port(&m.host.addr, m.host.ports.0, Duration::from_secs(30))
                .with_context(|| format!("{} did not listen", m.host.name))?;
        }
        Ok(())
    }

    fn spawn_etcd(&self, m: &mut EtcdMember) -> anyhow::Result<()> {
        let h = &m.host;
        let client = format!("http://{}:{}", h.addr, h.ports.0);
        let peer = format!("http://{}:{}", h.addr, h.ports.1);
        let args = vec![
            format!("--name={}", h.name),
            format!("--data-dir={}", m.dir.join("data").display()),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster={}", m.initial_cluster),
            format!("--initial-cluster-token=pgha-chaos-{}", std::process::id()),
            "--log-level=warn".into(),
        ];
        m.proc = spawn_on(
            h,
            &h.name,
            &crate::etcd::etcd_binary(),
            &args,
            &m.dir.join("etcd.log"),
            &[("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH)],
        )?;
        Ok(())
    }

    /// Kill etcd member `i` (SIGKILL); its data stays.
    pub fn kill_etcd(&mut self, i: usize) {
        if let Some(m) = self.etcd.get_mut(i) {
            m.proc.kill();
        }
    }

    /// Start etcd member `i` again if it is not running.
    pub fn restart_etcd(&mut self, i: usize) -> anyhow::Result<()> {
        let Some(mut m) = (i < self.etcd.len()).then(|| self.etcd.remove(i)) else {
            return Ok(());
        };
        let r = if m.proc.running() {
            Ok(())
        } else {
            self.spawn_etcd(&mut m)
        };
        self.etcd.insert(i, m);
        r
    }

    async fn start_nodes(&mut self) -> anyhow::Result<()> {
        for m in self.config.members.clone() {
            let host = self.net.host(&m.name).cloned().context("node host")?;
            self.nodes.push(Node {
                host,
                member: m,
                agent: Proc {
                    name: String::new(),
                    child: None,
                },
            });
        }
        let deadline = Instant::now() + Duration::from_secs(180);
        self.start_agent(0)?;
        while self.leader().await.as_deref() != Some(NODES[0]) {
            if Instant::now() > deadline {
                bail!(
                    "node1 did not bootstrap: see {}/node1/agent.log",
                    self.dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for i in 1..self.nodes.len() {
            self.start_agent(i)?;
        }
        loop {
            match self.health(false).await {
                Ok(_) => return Ok(()),
                Err(why) if Instant::now() > deadline => {
                    bail!(
                        "the lab cluster did not come up: {why} (logs in {})",
                        self.dir.display()
                    )
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Start node `i`'s agent unless it runs.
    pub fn start_agent(&mut self, i: usize) -> anyhow::Result<()> {
        let args = vec![
            "agent".to_string(),
            "--config".into(),
            self.config_path.display().to_string(),
            "--member".into(),
            self.config.members[i].name.clone(),
        ];
        let (bin, log) = (self.bin.clone(), self.node_dir(i).join("agent.log"));
        let n = &mut self.nodes[i];
        if n.agent.running() {
            return Ok(());
        }
        n.agent = spawn_on(
            &n.host,
            &n.host.name,
            &bin,
            &args,
            &log,
            &[("RUST_LOG", "info")],
        )?;
        Ok(())
    }

    pub fn node_dir(&self, i: usize) -> PathBuf {
        let d = &self.config.members[i].data_dir;
        d.parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| d.clone())
    }

    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.member.name == name)
    }

    fn start_proxy(&mut self) -> anyhow::Result<()> {
        let (host, rw) = self.proxy_rw.clone();
        let endpoints: Vec<String> = self
            .config
            .dcs
            .endpoints
            .iter()
            .map(|e| format!("{e:?}"))
            .collect();
        let text = format!(
            "listen_rw = \"{host}:{rw}\"\nlisten_ro = \"{host}:{ro}\"\nlisten_primary = \"{host}:{pr}\"\n\
             monitor_password_file = {mon:?}\n\n[topology]\nkind = \"etcd\"\ncluster = {name:?}\n\n\
             [topology.dcs]\nendpoints = [{eps}]\nnamespace = {ns:?}\n",
            ro = crate::free_port(),
            pr = crate::free_port(),
            mon = self
                .config
                .secrets_dir
                .join(pgha_postgres::secrets::MONITOR_FILE)
                .display()
                .to_string(),
            name = self.config.name,
            eps = endpoints.join(", "),
            ns = self.config.dcs.namespace,
        );
        let path = self.dir.join("proxy.toml");
        std::fs::write(&path, text).context("write proxy.toml")?;
        let root = loopback_host("proxy", (rw, 0));
        let args = vec![
            "proxy".into(),
            "--config".into(),
            path.display().to_string(),
        ];
        let log = self.dir.join("proxy.log");
        self.proxy = Some(spawn_on(
            &root,
            "proxy",
            &self.bin,
            &args,
            &log,
            &[("RUST_LOG", "info")],
        )?);
        wait_port(&host, rw, Duration::from_secs(30)).context("the proxy did not listen")
    }

    /// What clients need to reach the proxy and the nodes.
    pub fn endpoints(&self) -> Endpoints {
        Endpoints {
            proxy: self.proxy_rw.clone(),
            nodes: self
                .nodes
                .iter()
                .map(|n| (n.member.name.clone(), n.member.host.clone(), n.member.port))
                .collect(),
            user: self.config.superuser.clone(),
            password: self.password.clone(),
        }
    }

    /// The member holding the leader key.
    pub async fn leader(&self) -> Option<String> {
        let dcs = EtcdDcs::new(self.config.dcs.clone()).ok()?;
        let keys = ClusterKeys::new(&self.config.dcs.namespace, &self.config.name).ok()?;
        let r = tokio::time::timeout(Duration::from_secs(3), dcs.get(&keys.leader()))
            .await
            .ok()?
            .ok()?;
        r.kv.map(|kv| kv.value_str().into_owned())
    }

    /// Connect to node `i` as the superuser.
    pub async fn connect(&self, i: usize) -> anyhow::Result<tokio_postgres::Client> {
        let m = &self.config.members[i];
        Ok(probe::connect(
            &m.host,
            m.port,
            &self.config.superuser,
            &self.password,
            Duration::from_secs(3),
        )
        .await?)
    }
}

/// Wait until `addr:port` accepts TCP connections.
pub fn wait_port(addr: &str, port: u16, timeout: Duration) -> anyhow::Result<()> {
    let sa: std::net::SocketAddr = format!("{addr}:{port}").parse().context("address")?;
    crate::wait_until(&format!("{addr}:{port}"), timeout, || {
        std::net::TcpStream::connect_timeout(&sa, Duration::from_millis(500)).ok()
    })
    .map(|_| ())
}

impl Lab {
    /// The PID of node `i`'s postmaster, if it runs.
    pub fn postmaster_pid(&self, i: usize) -> Option<u32> {
        let m = &self.config.members[i];
        let text = std::fs::read_to_string(m.data_dir.join("postmaster.pid")).ok()?;
        let pid: u32 = text.lines().next()?.trim().parse().ok()?;
        alive(pid).then_some(pid)
    }

    /// Node `i`'s postmaster and all its children.
    pub fn postgres_pids(&self, i: usize) -> Vec<u32> {
        let Some(pm) = self.postmaster_pid(i) else {
            return Vec::new();
        };
        let mut pids = vec![pm];
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for e in entries.flatten() {
                let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                    continue;
                };
                if parent_pid(pid) == Some(pm) {
                    pids.push(pid);
                }
            }
        }
        pids
    }

    /// Drop traffic between `host` and `peers` (addresses), inside `host`'s
    /// namespace.
    pub fn block(&self, host: &str, peers: &[String], dir: Direction) -> anyhow::Result<()> {
        let ns = self
            .net
            .host(host)
            .and_then(|h| h.ns.clone())
            .context("partitions need network namespaces")?;
        for p in peers {
            if dir != Direction::Out {
                ip(&[
                    "netns", "exec", &ns, "iptables", "-A", "INPUT", "-s", p, "-j", "DROP",
                ])?;
            }
            if dir != Direction::In {
                ip(&[
                    "netns", "exec", &ns, "iptables", "-A", "OUTPUT", "-d", p, "-j", "DROP",
                ])?;
            }
        }
        Ok(())
    }

    /// Remove every rule of `host`'s namespace (they are all ours).
    pub fn unblock(&self, host: &str) -> anyhow::Result<()> {
        match self.net.host(host).and_then(|h| h.ns.clone()) {
            Some(ns) => ip(&["netns", "exec", &ns, "iptables", "-F"]),
            None => Ok(()),
        }
    }

    /// Addresses of every other host and the harness, as seen from `host`.
    pub fn others(&self, host: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .net
            .hosts
            .iter()
            .filter(|h| h.name != host)
            .map(|h| h.addr.clone())
            .collect();
        v.push(self.net.harness_addr());
        v
    }

    pub fn etcd_addrs(&self) -> Vec<String> {
        self.etcd.iter().map(|m| m.host.addr.clone()).collect()
    }

    /// Is the cluster healthy? One leader whose PostgreSQL is a writable
    /// primary, every other node a standby streaming from it (caught up to
    /// the primary's current LSN when `caught_up`), every agent, etcd
    /// member and the proxy running. Ok(primary) or Err(why not).
    pub async fn health(&mut self, caught_up: bool) -> Result<String, String> {
        for n in &mut self.nodes {
            if !n.agent.running() {
                return Err(format!("{}'s agent is not running", n.member.name));
            }
        }
        for m in &mut self.etcd {
            if !m.proc.running() {
                return Err(format!("{} is not running", m.host.name));
            }
        }
        if self.proxy.as_mut().is_some_and(|p| !p.running()) {
            return Err("the proxy is not running".into());
        }
        let leader = self.leader().await.ok_or("no leader key")?;
        let li = self.node_index(&leader).ok_or("leader is no member")?;
        let c = self
            .connect(li)
            .await
            .map_err(|e| format!("leader {leader}: {e}"))?;
        let st = probe::server_status(&c)
            .await
            .map_err(|e| format!("leader {leader}: {e}"))?;
        if st.in_recovery || st.read_only_default {
            return Err(format!("leader {leader} is not a writable primary"));
        }
        let rows = probe::replication(&c)
            .await
            .map_err(|e| format!("leader {leader}: {e}"))?;
        for n in &self.nodes {
            let name = &n.member.name;
            if *name == leader {
                continue;
            }
            let Some(r) = rows
                .iter()
                .find(|r| r.application_name == *name && r.state == "streaming")
            else {
                return Err(format!("{name} is not streaming from {leader}"));
            };
            if caught_up && r.replay_lsn.is_none_or(|l| Some(l) < st.current_lsn) {
                return Err(format!("{name} has not replayed up to {leader}'s LSN"));
            }
        }
        Ok(leader)
    }

    /// Stop every process of the lab (agents first, so they stop PostgreSQL).
    fn stop_all(&mut self) {
        for i in 0..self.nodes.len() {
            for pid in self.postgres_pids(i) {
                signal_pid(pid, Signal::SIGCONT);
            }
            self.nodes[i].agent.signal(Signal::SIGCONT);
            self.nodes[i].agent.signal(Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline && self.nodes.iter_mut().any(|n| n.agent.running()) {
            std::thread::sleep(Duration::from_millis(100));
        }
        for i in 0..self.nodes.len() {
            self.nodes[i].agent.kill();
            for pid in self.postgres_pids(i) {
                signal_pid(pid, Signal::SIGKILL);
            }
        }
        if let Some(p) = self.proxy.as_mut() {
            p.stop(Duration::from_secs(5));
        }
        for m in &mut self.etcd {
            m.proc.stop(Duration::from_secs(5));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop_all();
        for mount in [self.archive_mount.take(), self.lab_mount.take()]
            .into_iter()
            .flatten()
        {
            if self.keep && Some(&mount) == Some(&self.dir) {
                eprintln!(
                    "chaos lab kept in {} (a tmpfs: `umount` it when done)",
                    mount.display()
                );
                continue;
            }
            let target = mount.display().to_string();
            if run_tool("umount", &[&target]).is_err() {
                let _ = run_tool("umount", &["-l", &target]);
            }
        }
        if self.keep {
            eprintln!("chaos lab kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Mount a tmpfs on `dir` (root only); Some(dir) when mounted.
fn mount_tmpfs(dir: &Path, options: &str) -> Option<PathBuf> {
    if !nix::unistd::Uid::effective().is_root() {
        return None;
    }
    let target = dir.display().to_string();
    match run_tool(
        "mount",
        &["-t", "tmpfs", "-o", options, "pgha-chaos", &target],
    ) {
        Ok(()) => Some(dir.to_path_buf()),
        Err(e) => {
            tracing::warn!("tmpfs on {target}: {e:#}");
            None
        }
    }
}
