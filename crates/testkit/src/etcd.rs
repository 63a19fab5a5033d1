//! Real etcd for tests, in temp dirs on free loopback ports: a single
//! member ([`EtcdGuard`]) or a cluster of several ([`EtcdCluster`]).
//!
//! A member can be stopped and started again on the same ports and data
//! dir, to test clients across an etcd restart. Dropping a guard stops the
//! process by PID and removes its data.

use crate::{free_port, wait_until, ProcessGuard};
use anyhow::Context;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A running etcd member; dropping it stops the process and removes its data.
pub struct EtcdGuard {
    pub client_url: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub process: ProcessGuard,
    name: String,
    initial_cluster: String,
    _dir: tempfile::TempDir,
}

/// Path of the etcd binary: `$PGHA_ETCD_BIN`, else `etcd` on PATH.
pub fn etcd_binary() -> PathBuf {
    std::env::var_os("PGHA_ETCD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("etcd"))
}

/// Ports and names of one member before it starts.
struct Plan {
    name: String,
    client_port: u16,
    peer_port: u16,
}

impl Plan {
    fn new(name: &str) -> Self {
        Plan {
            name: name.to_string(),
            client_port: free_port(),
            peer_port: free_port(),
        }
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }
}

impl EtcdGuard {
    /// Start a single-member etcd and wait until its client port accepts
    /// connections.
    pub fn start() -> anyhow::Result<Self> {
        let plan = Plan::new("test");
        let initial_cluster = format!("test={}", plan.peer_url());
        let guard = Self::launch(plan, initial_cluster)?;
        guard.wait_ready()?;
        Ok(guard)
    }

    /// Create the data dir and spawn the member (does not wait).
    fn launch(plan: Plan, initial_cluster: String) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("create etcd temp dir")?;
        let process = spawn(dir.path(), &plan, &initial_cluster)?;
        Ok(EtcdGuard {
            client_url: format!("http://127.0.0.1:{}", plan.client_port),
            client_port: plan.client_port,
            peer_port: plan.peer_port,
            process,
            name: plan.name,
            initial_cluster,
            _dir: dir,
        })
    }

    fn wait_ready(&self) -> anyhow::Result<()> {
        let port = self.client_port;
        wait_until("etcd client port", Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        })
        .map(|_| ())
    }

    /// The member's data and log directory.
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    /// Stop the member (SIGTERM, then SIGKILL after 5 s); data is kept.
    pub fn stop(&mut self) {
        self.process.stop(Duration::from_secs(5));
    }

    /// SIGKILL the member now; data is kept.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Start the member again on the same ports and data dir, and wait for
    /// its client port.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let plan = Plan {
            name: self.name.clone(),
            client_port: self.client_port,
            peer_port: self.peer_port,
        };
        self.process = spawn(self._dir.path(), &plan, &self.initial_cluster)?;
        self.wait_ready()
    }
}

/// Spawn etcd for `plan` with its data under `dir`.
fn spawn(dir: &Path, plan: &Plan, initial_cluster: &str) -> anyhow::Result<ProcessGuard> {
    let client_url = format!("http://127.0.0.1:{}", plan.client_port);
    let peer_url = plan.peer_url();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("etcd.log"))
        .context("open etcd log")?;
    let child = Command::new(etcd_binary())
        .arg(format!("--name={}", plan.name))
        .arg(format!("--data-dir={}", dir.join("data").display()))
        .arg(format!("--listen-client-urls={client_url}"))
        .arg(format!("--advertise-client-urls={client_url}"))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--initial-cluster={initial_cluster}"))
        .arg("--initial-cluster-token=pgha-test")
        // As `pgha up` runs it: cheap logins for tests with authentication.
        .arg("--bcrypt-cost=4")
        .arg("--log-level=warn")
        .env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("start etcd (install Debian's etcd-server package)")?;
    Ok(ProcessGuard::new(
        format!("etcd {}", plan.name),
        child,
        false,
    ))
}

/// Several etcd members forming one cluster (3 for quorum tests).
pub struct EtcdCluster {
    pub members: Vec<EtcdGuard>,
}

impl EtcdCluster {
    /// Start `n` members named `m0..m{n-1}` and wait for every client port.
    /// The cluster elects a leader shortly after; clients should retry.
    pub fn start(n: usize) -> anyhow::Result<Self> {
        let plans: Vec<Plan> = (0..n).map(|i| Plan::new(&format!("m{i}"))).collect();
        let initial_cluster = plans
            .iter()
            .map(|p| format!("{}={}", p.name, p.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::with_capacity(n);
        for plan in plans {
            members.push(EtcdGuard::launch(plan, initial_cluster.clone())?);
        }
        for m in &members {
            m.wait_ready()?;
        }
        Ok(EtcdCluster { members })
    }

    /// Every member's client URL, for a client's endpoint list.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }
}
