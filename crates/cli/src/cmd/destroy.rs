//! `pgha destroy --yes`: stop the dev cluster and remove its directory.

use crate::dev::DevCluster;
use anyhow::{bail, Context};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Cluster directory.
    #[arg(long, default_value = "pgha-data")]
    pub dir: PathBuf,
    /// Confirm that every member's data and the WAL archive are to be deleted.
    #[arg(long)]
    pub yes: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !args.yes {
        bail!(
            "this deletes every member's data and the WAL archive in {}: run again with --yes",
            args.dir.display()
        );
    }
    let rt = tokio::runtime::Runtime::new().context("start the async runtime")?;
    rt.block_on(async {
        let cluster = DevCluster::open(&args.dir)?;
        super::down::stop_all(&cluster).await?;
        std::fs::remove_dir_all(&cluster.dir)
            .with_context(|| format!("remove {}", cluster.dir.display()))?;
        crate::outln!("pgha: cluster in {} destroyed", cluster.dir.display());
        Ok(ExitCode::SUCCESS)
    })
}
