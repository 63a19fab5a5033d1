//! `pgha reinit NODE`: ask NODE's agent (`POST /reinit`, with the API token)
//! to throw away its data directory and clone it again from the leader.
//! The agent refuses on the leader. Exit codes as `pgha restart`.

use crate::target::TargetArgs;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: TargetArgs,
    /// The standby to re-clone.
    pub node: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::restart::post_control(&args.target, &args.node, "reinit")
}
