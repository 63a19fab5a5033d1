//! `pgha secrets init --dir DIR [--user NAME]`: create the cluster's
//! generated credentials (superuser, replication and monitor passwords, the
//! agents' API token, the libpq passfile) once, before any agent starts, so
//! that every node that mounts DIR uses the same ones. The Docker
//! environment runs it as a one-shot service ahead of the agents.
//!
//! Safe to run again: a secret that exists (non-empty) is kept, only missing
//! ones are generated; the passfile is rewritten from the stored passwords,
//! so its content only changes when a role name changes. Nothing secret is
//! printed, only which files were created and which were kept.
//!
//! Hazard: two runs at the same moment on an empty DIR could each generate a
//! different password for the same file (the last rename wins, and the
//! loser's process may already have read its own value). Run it once, before
//! the agents; the agents themselves only generate what is still missing.

use anyhow::Context;
use pgha_postgres::secrets::{ADMIN_FILE, API_TOKEN_FILE, MONITOR_FILE, REPLICATION_FILE};
use pgha_postgres::{Secrets, ServiceUser};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: SecretsCommand,
}

#[derive(clap::Subcommand)]
enum SecretsCommand {
    /// Create every missing secret in DIR (keeps existing ones).
    Init(InitArgs),
}

#[derive(clap::Args)]
struct InitArgs {
    /// The secrets directory (the cluster config's `secrets_dir`).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// OS user that owns the files when run as root (the config's
    /// `postgres.os_user`); otherwise the files belong to the current user.
    #[arg(long, value_name = "NAME", default_value = "postgres")]
    user: String,
    /// PostgreSQL superuser named in the passfile (`postgres.superuser`).
    #[arg(long, value_name = "ROLE", default_value = "postgres")]
    superuser: String,
    /// Replication role named in the passfile (`replication.user`).
    #[arg(long, value_name = "ROLE", default_value = "replicator")]
    replication_user: String,
}

/// The generated files, in the order they are reported.
const FILES: [&str; 4] = [ADMIN_FILE, REPLICATION_FILE, MONITOR_FILE, API_TOKEN_FILE];

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        SecretsCommand::Init(a) => init(a),
    }
}

fn init(args: InitArgs) -> anyhow::Result<ExitCode> {
    let user = ServiceUser::resolve(&args.user).context("resolve the service user")?;
    let before: Vec<bool> = FILES.iter().map(|f| present(&args.dir, f)).collect();
    let secrets = Secrets::ensure(&args.dir, &user, &args.superuser, &args.replication_user)
        .with_context(|| format!("create the secrets in {}", args.dir.display()))?;
    let (kept, created): (Vec<_>, Vec<_>) = FILES.iter().zip(before).partition(|(_, b)| *b);
    let names = |v: Vec<(&&str, bool)>| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.iter().map(|(f, _)| **f).collect::<Vec<_>>().join(", ")
        }
    };
    crate::outln!(
        "secrets in {} (owner {}): created {}; kept {}; passfile {}",
        args.dir.display(),
        user.name,
        names(created),
        names(kept),
        secrets.passfile().display()
    );
    Ok(ExitCode::SUCCESS)
}

/// True when `dir/name` exists with non-blank content (what `Secrets::ensure`
/// keeps). An unreadable file counts as present: ensure will report it.
fn present(dir: &Path, name: &str) -> bool {
    match std::fs::read_to_string(dir.join(name)) {
        Ok(s) => !s.trim().is_empty(),
        Err(e) => e.kind() != std::io::ErrorKind::NotFound,
    }
}
