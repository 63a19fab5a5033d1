//! `pgha down`: stop every member of the dev cluster cleanly, the primary
//! first (a fast shutdown of a primary sends all its WAL to the connected
//! standbys before it exits), then the standbys.

use crate::dev::DevCluster;
use anyhow::Context;
use pgha_postgres::{Instance, StopMode};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// Cluster directory.
    #[arg(long, default_value = "pgha-data")]
    pub dir: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Runtime::new().context("start the async runtime")?;
    rt.block_on(async {
        let cluster = DevCluster::open(&args.dir)?;
        stop_all(&cluster).await?;
        println!("pgha: cluster in {} stopped", cluster.dir.display());
        Ok(ExitCode::SUCCESS)
    })
}

/// Stop every running member: primaries first, then standbys.
pub async fn stop_all(cluster: &DevCluster) -> anyhow::Result<()> {
    let mut instances = cluster.instances();
    let mut order = Vec::with_capacity(instances.len());
    for inst in instances.drain(..) {
        let standby = match inst.controldata().await {
            Ok(cd) => cd.state.was_standby(),
            Err(_) => true,
        };
        order.push((standby, inst));
    }
    order.sort_by_key(|(standby, _)| *standby);
    for (_, inst) in order {
        stop_one(&inst).await?;
    }
    Ok(())
}

async fn stop_one(inst: &Instance) -> anyhow::Result<()> {
    if !inst.is_running() {
        return Ok(());
    }
    if let Err(e) = inst.stop(StopMode::Fast, Duration::from_secs(30)).await {
        tracing::warn!(member = %inst.name, "fast shutdown failed ({e:#}); stopping immediately");
        inst.stop(StopMode::Immediate, Duration::from_secs(10))
            .await
            .with_context(|| format!("stop {}", inst.name))?;
    }
    Ok(())
}
