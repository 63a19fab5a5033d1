//! `pgha down`: stop the dev cluster: the standbys' agents first, the
//! leader's last (so nobody promotes while the cluster shuts down), each
//! stopping its PostgreSQL; then etcd. A PostgreSQL left running by an agent
//! that was killed is stopped directly.

use crate::dev::DevCluster;
use crate::supervise;
use anyhow::Context;
use pgha_dcs::{ClusterKeys, Dcs, EtcdDcs};
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
        crate::outln!("pgha: cluster in {} stopped", cluster.dir.display());
        Ok(ExitCode::SUCCESS)
    })
}

/// Stop everything the dev cluster runs.
pub async fn stop_all(cluster: &DevCluster) -> anyhow::Result<()> {
    supervise::stop(
        &cluster.dir,
        "prometheus",
        "prometheus",
        Duration::from_secs(10),
    );
    supervise::stop(&cluster.dir, "proxy", "proxy", Duration::from_secs(10));
    let leader = current_leader(cluster).await;
    let mut order: Vec<&str> = cluster
        .config
        .members
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    order.sort_by_key(|m| Some(*m) == leader.as_deref());
    for m in order {
        supervise::stop(
            &cluster.dir,
            &format!("agent-{m}"),
            "agent",
            Duration::from_secs(60),
        );
    }
    supervise::stop(&cluster.dir, "etcd", "etcd", Duration::from_secs(10));
    for inst in cluster.instances() {
        stop_one(&inst).await?;
    }
    Ok(())
}

async fn current_leader(cluster: &DevCluster) -> Option<String> {
    let dcs = EtcdDcs::new(cluster.config.dcs.clone()).ok()?;
    let keys = ClusterKeys::new(&cluster.config.dcs.namespace, &cluster.config.name).ok()?;
    let r = dcs.get(&keys.leader()).await.ok()?;
    r.kv.map(|kv| kv.value_str().into_owned())
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
