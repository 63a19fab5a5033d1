//! `pgha proxy --config proxy.toml`: runs the proxy until SIGINT/SIGTERM.
//!
//! Hazard: the static topology source is the only one wired here until the
//! etcd source lands; a config without a reachable primary makes every
//! write wait `primary_wait_timeout` and then fail.

use anyhow::Context;
use pgha_proxy::{Proxy, ProxySettings, StaticTopology};
use std::path::PathBuf;
use std::process::ExitCode;

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
    let rt = tokio::runtime::Runtime::new().context("start tokio runtime")?;
    rt.block_on(async move {
        let topology = StaticTopology::new(settings.topology.initial());
        let mut handle = Proxy::start(settings, password, topology.subscribe())
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
