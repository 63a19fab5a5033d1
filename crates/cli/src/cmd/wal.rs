//! `pgha wal-push`, `pgha wal-fetch`, `pgha archive ...` (placeholder).

use std::process::ExitCode;

#[derive(clap::Args)]
pub struct PushArgs {}
#[derive(clap::Args)]
pub struct FetchArgs {}
#[derive(clap::Args)]
pub struct ArchiveArgs {}

pub fn push(_args: PushArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
pub fn fetch(_args: FetchArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
pub fn archive(_args: ArchiveArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
