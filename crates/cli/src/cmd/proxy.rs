//! `pgha proxy --config proxy.toml`: runs the proxy until SIGINT/SIGTERM.
//!
//! The topology comes from `[topology]`: `kind = "etcd"` follows the
//! cluster's leader and member keys, `kind = "static"` uses a fixed list.
//! Hazard: with a static list nothing follows a failover.

use anyhow::Context;
use pgha_proxy::config::TopologySettings;
use pgha_proxy::{Proxy, ProxySettings, StaticTopology, Topology};
use std::path::PathBuf;
use std::process::ExitCode;
use tokio::sync::watch;

#[derive(clap::Args)]
pub struct Args {
    /// Path of the proxy config file (TOML).
    #[arg(long, default_value = "proxy.toml")]
    pub config: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let settings = ProxySettings::load(&args.config).context("load proxy config")?;
    let password = settings
        .monitor_password()
        .context("read monitor password file")?;
    // Sessions run on their own threads (`session_threads`); the monitor,
    // the topology watch and the accept loops need one thread. With
    // `session_threads = 0` the sessions share this runtime: multi-threaded.
    let rt = if settings.session_threads == 0 {
        tokio::runtime::Runtime::new()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    }
    .context("start tokio runtime")?;
    rt.block_on(async move {
        let (topology, _keep) = topology_source(&settings.topology)?;
        let mut handle = Proxy::start(settings, password, topology)
            .await
            .context("start proxy")?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("install SIGTERM handler")?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = handle.wait() => anyhow::bail!("a proxy task ended unexpectedly"),
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Keeps a topology source alive for as long as it is held.
enum SourceGuard {
    /// Held only so the static source lives as long as the proxy.
    Static {
        _source: StaticTopology,
    },
    Etcd(tokio::task::JoinHandle<()>),
}

impl Drop for SourceGuard {
    fn drop(&mut self) {
        if let SourceGuard::Etcd(task) = self {
            task.abort();
        }
    }
}

fn topology_source(
    settings: &TopologySettings,
) -> anyhow::Result<(watch::Receiver<Topology>, SourceGuard)> {
    match settings {
        TopologySettings::Static { .. } => {
            let source = StaticTopology::new(settings.initial());
            Ok((source.subscribe(), SourceGuard::Static { _source: source }))
        }
        TopologySettings::Etcd { cluster, dcs } => {
            let (rx, task) = pgha_proxy::topology::etcd::spawn_etcd(cluster, dcs)
                .context("start the etcd topology source")?;
            Ok((rx, SourceGuard::Etcd(task)))
        }
    }
}
