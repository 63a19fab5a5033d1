//! A real single-member etcd for tests, in a temp dir on free loopback ports.

use crate::{free_port, wait_until, ProcessGuard};
use anyhow::Context;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A running etcd; dropping it stops the process and removes its data.
pub struct EtcdGuard {
    pub client_url: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub process: ProcessGuard,
    _dir: tempfile::TempDir,
}

/// Path of the etcd binary: `$PGHA_ETCD_BIN`, else `etcd` on PATH.
pub fn etcd_binary() -> PathBuf {
    std::env::var_os("PGHA_ETCD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("etcd"))
}

impl EtcdGuard {
    /// Start etcd and wait until its client port accepts connections.
    pub fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("create etcd temp dir")?;
        let client_port = free_port();
        let peer_port = free_port();
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let log = std::fs::File::create(dir.path().join("etcd.log")).context("create etcd log")?;
        let child = Command::new(etcd_binary())
            .arg("--name=test")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=test={peer_url}"))
            .arg("--log-level=warn")
            .env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("start etcd (install Debian's etcd-server package)")?;
        let process = ProcessGuard::new("etcd", child, false);
        wait_until("etcd client port", Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", client_port)).ok()
        })?;
        Ok(EtcdGuard {
            client_url,
            client_port,
            peer_port,
            process,
            _dir: dir,
        })
    }
}
