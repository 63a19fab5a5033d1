//! `pgha up --prometheus`: a Prometheus server for the dev cluster, with a
//! generated scrape config naming every member's agent API and the proxy's
//! HTTP listener (docs/observability.md). Its data lives in
//! `<dir>/prometheus/`, its log in `<dir>/prometheus.log`; it runs under the
//! dev cluster's supervision (PID in `<dir>/run/prometheus.pid`) and `pgha
//! down` stops it by that PID.

use crate::dev::DevCluster;
use crate::supervise;
use anyhow::{bail, Context};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The default port: the proxy's HTTP port + 1 when there is one (the dev
/// layout puts it at base + 14), else Prometheus' own default.
pub fn default_port(cluster: &DevCluster) -> u16 {
    cluster
        .config
        .proxy
        .as_ref()
        .and_then(|p| p.http_port)
        .and_then(|p| p.checked_add(1))
        .unwrap_or(9090)
}

/// The scrape config: one job for the agents (their samples carry
/// `member`), one for the proxy. A 2 s interval: a laptop cluster, where a
/// failover takes a few seconds and should show up in the graphs.
pub fn scrape_config(cluster: &DevCluster) -> String {
    let c = &cluster.config;
    let mut text = String::from(
        "# Written by `pgha up --prometheus`; changes here are overwritten.\n\
         global:\n  scrape_interval: 2s\n  scrape_timeout: 2s\n\
         scrape_configs:\n  - job_name: pgha-agents\n    static_configs:\n",
    );
    for m in &c.members {
        text.push_str(&format!("      - targets: ['{}:{}']\n", m.host, m.api_port));
    }
    if let Some(port) = c.proxy.as_ref().and_then(|p| p.http_port) {
        let host = c
            .proxy
            .as_ref()
            .map(|p| p.host.as_str())
            .unwrap_or("127.0.0.1");
        text.push_str(&format!(
            "  - job_name: pgha-proxy\n    static_configs:\n      - targets: ['{host}:{port}']\n"
        ));
    }
    text
}

/// Start Prometheus on 127.0.0.1:`port` unless it runs; wait until it is
/// ready. Returns its URL.
pub fn start(cluster: &DevCluster, port: u16) -> anyhow::Result<String> {
    let url = format!("http://127.0.0.1:{port}");
    if supervise::running_pid(&cluster.dir, "prometheus", "prometheus").is_some() {
        return Ok(url);
    }
    super::up::ensure_free(
        "127.0.0.1",
        &[port],
        "Prometheus",
        "pass another --prometheus-port",
    )?;
    let bin = super::up::which("prometheus").context(
        "prometheus not found: install it (Debian: apt-get install prometheus), or start without --prometheus",
    )?;
    let dir = cluster.dir.join("prometheus");
    std::fs::create_dir_all(dir.join("data")).context("create the prometheus directory")?;
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, scrape_config(cluster))
        .with_context(|| format!("write {}", config.display()))?;
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--storage.tsdb.retention.time=2d")
        .arg("--log.level=warn");
    let log = cluster.dir.join("prometheus.log");
    supervise::spawn(&cluster.dir, "prometheus", cmd, &log)?;
    wait_ready(port, &log)?;
    Ok(url)
}

fn wait_ready(port: u16, log: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if ready(port) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "Prometheus did not become ready on 127.0.0.1:{port}: see {}",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `GET /-/ready` answers 200.
fn ready(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET /-/ready HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    let mut head = [0u8; 12];
    s.write_all(req.as_bytes()).is_ok() && s.read_exact(&mut head).is_ok() && head.ends_with(b"200")
}
