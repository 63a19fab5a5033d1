//! `pgha wal-push` (archive_command), `pgha wal-fetch` (restore_command) and
//! `pgha archive list|clean`: thin wrappers over `pgha_archive`.
//!
//! Exit codes are part of the PostgreSQL contract:
//! - wal-push: 0 only when the file is durably archived (or an identical
//!   copy already was); 1 otherwise, and PostgreSQL retries.
//! - wal-fetch: 0 restored; 1 quietly when the file is not in the archive
//!   (PostgreSQL asks for files that do not exist); 2 with a message for
//!   anything else (corrupt file, unusable archive). Never above 125: that
//!   would make PostgreSQL abort recovery instead of trying streaming.
//!
//! Hazard: whatever these commands print lands in the PostgreSQL server log.

use anyhow::Context;
use pgha_archive::health::{self, Op};
use pgha_archive::{
    Archive, Compression, Entry, PushOptions, PushOutcome, Retention, Store, WalName,
};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Clone, Copy, clap::ValueEnum)]
enum CompressArg {
    None,
    Zstd,
}

#[derive(clap::Args)]
pub struct PushArgs {
    /// Archive directory shared by all members (must exist).
    #[arg(long, env = "PGHA_ARCHIVE", value_name = "DIR")]
    archive: PathBuf,
    /// How to store the copy; wal-fetch detects it by itself.
    #[arg(long, value_enum, default_value = "none")]
    compress: CompressArg,
    /// Object-store settings file (with --archive s3://bucket/prefix).
    #[arg(long, env = "PGHA_S3_CONFIG", value_name = "FILE")]
    s3_config: Option<PathBuf>,
    /// Object store: also upload up to N-1 other WAL files PostgreSQL has
    /// marked ready, at the same time.
    #[arg(long, value_name = "N", default_value_t = 4)]
    parallel: usize,
    /// The WAL file to archive: PostgreSQL's %p (relative to the data dir).
    #[arg(value_name = "PATH")]
    path: PathBuf,
}

#[derive(clap::Args)]
pub struct FetchArgs {
    /// Archive directory shared by all members.
    #[arg(long, env = "PGHA_ARCHIVE", value_name = "DIR")]
    archive: PathBuf,
    /// Name of the file wanted: PostgreSQL's %f.
    #[arg(value_name = "NAME")]
    name: String,
    /// Where to put it: PostgreSQL's %p (relative to the data dir).
    #[arg(value_name = "DEST")]
    dest: PathBuf,
    /// Object-store settings file (with --archive s3://bucket/prefix).
    #[arg(long, env = "PGHA_S3_CONFIG", value_name = "FILE")]
    s3_config: Option<PathBuf>,
    /// Object store: fetch the next N segments ahead, into
    /// `.pgha-prefetch/` beside DEST, for the next calls.
    #[arg(long, value_name = "N", default_value_t = 8)]
    prefetch: usize,
}

#[derive(clap::Args)]
pub struct ArchiveArgs {
    #[command(subcommand)]
    command: ArchiveCommand,
}

#[derive(clap::Subcommand)]
enum ArchiveCommand {
    /// List archived files (with --verify, check every checksum).
    List(ListArgs),
    /// Delete old WAL from the archive: the only command that deletes.
    Clean(CleanArgs),
}

#[derive(clap::Args)]
struct ListArgs {
    /// Archive directory.
    #[arg(long, env = "PGHA_ARCHIVE", value_name = "DIR")]
    archive: PathBuf,
    /// Read every file completely and check length and SHA-256.
    #[arg(long)]
    verify: bool,
    /// Object-store settings file (with --archive s3://bucket/prefix).
    #[arg(long, env = "PGHA_S3_CONFIG", value_name = "FILE")]
    s3_config: Option<PathBuf>,
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("retention").args(["keep", "before"])))]
struct CleanArgs {
    /// Archive directory (with --keep or --before).
    #[arg(long, env = "PGHA_ARCHIVE", value_name = "DIR")]
    archive: Option<PathBuf>,
    /// Keep the newest N segment positions of the newest timeline's history
    /// (and everything after them); delete older segments, .partial and
    /// .backup files. Timeline .history files are never deleted.
    #[arg(long, value_name = "N")]
    keep: Option<u32>,
    /// Delete segments, .partial and .backup files before this WAL file
    /// (e.g. the .backup file of your oldest base backup), any timeline.
    #[arg(long, value_name = "WALFILE")]
    before: Option<String>,
    /// Print what would be deleted, delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// Object-store settings file (with --archive s3://bucket/prefix).
    #[arg(long, env = "PGHA_S3_CONFIG", value_name = "FILE")]
    s3_config: Option<PathBuf>,
    /// Without --keep or --before: clean by the cluster's backups and
    /// members (the cluster named by --dir or --config). Keep this many
    /// backups (default: `[backup] keep`, else every backup).
    #[arg(long, value_name = "N", conflicts_with_all = ["keep", "before"])]
    keep_backups: Option<u32>,
    #[command(flatten)]
    target: crate::target::TargetArgs,
}

pub fn push(args: PushArgs) -> anyhow::Result<ExitCode> {
    let compression = match args.compress {
        CompressArg::None => Compression::None,
        CompressArg::Zstd => Compression::Zstd,
    };
    let shown = args.path.display();
    let result = if is_s3(&args.archive) {
        let rt = runtime()?;
        rt.block_on(async {
            let Store::S3(s) = open_store(&args.archive, args.s3_config.as_deref())? else {
                anyhow::bail!("not an object store");
            };
            Ok(s.push_many(&args.path, compression, args.parallel).await?)
        })
        .with_context(|| format!("archiving {shown}"))
    } else {
        Archive::open(&args.archive)
            .and_then(|a| a.push(&args.path, PushOptions { compression }))
            .with_context(|| format!("archiving {shown}"))
    };
    let wal = args.path.file_name().unwrap_or_default().to_string_lossy();
    note_outcome(Op::Push, &wal, result.as_ref().err());
    let outcome = result?;
    if let PushOutcome::AlreadyArchived(h) = outcome {
        tracing::info!(
            "{shown} was already archived with identical content (sha256 {}); nothing to do",
            h.sha256_hex()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn fetch(args: FetchArgs) -> anyhow::Result<ExitCode> {
    let result = if is_s3(&args.archive) {
        let rt = runtime()?;
        rt.block_on(async {
            match Store::open(
                &args.archive.display().to_string(),
                args.s3_config.as_deref(),
            )? {
                Store::S3(s) => s.fetch(&args.name, &args.dest, args.prefetch).await,
                Store::Dir(a) => a.fetch(&args.name, &args.dest),
            }
        })
    } else {
        Archive::open(&args.archive).and_then(|a| a.fetch(&args.name, &args.dest))
    };
    match result {
        Ok(_) => {
            note_outcome(Op::Fetch, &args.name, None);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if e.is_not_found() => Ok(ExitCode::from(1)),
        Err(e) => {
            if e.is_corrupt() && !is_s3(&args.archive) {
                health::note_corrupt(&args.archive, &args.name, &e.to_string());
            }
            let reason = anyhow::anyhow!("restoring {}: {e}", args.name);
            note_outcome(Op::Fetch, &args.name, Some(&reason));
            eprintln!("pgha: error: restoring {}: {e}", args.name);
            Ok(ExitCode::from(2))
        }
    }
}

/// Leave the failure (or clear it after a success) where the agent reads
/// it (`pgha_archive::health`): only when run by PostgreSQL, i.e. in a
/// data directory, never in an operator's working directory.
fn note_outcome(op: Op, wal: &str, err: Option<&anyhow::Error>) {
    let dir = std::path::Path::new(".");
    if !dir.join("PG_VERSION").is_file() {
        return;
    }
    match err {
        Some(e) => health::record_failure(dir, op, wal, &format!("{e:#}")),
        None => health::clear_failure(dir, op),
    }
}

pub fn archive(args: ArchiveArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        ArchiveCommand::List(a) => list(a),
        ArchiveCommand::Clean(a) => clean(a),
    }
}

fn is_s3(p: &std::path::Path) -> bool {
    p.to_str().is_some_and(|s| s.starts_with("s3://"))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")
}

fn open_store(
    location: &std::path::Path,
    s3_config: Option<&std::path::Path>,
) -> anyhow::Result<Store> {
    Store::open(&location.display().to_string(), s3_config).context("opening the archive")
}

/// Retention by the cluster's backups and members (docs/backup.md).
fn clean_cluster(args: CleanArgs) -> anyhow::Result<ExitCode> {
    if args.keep_backups == Some(0) {
        anyhow::bail!("--keep-backups 0 would remove the only restorable backup; keep at least 1");
    }
    let target = crate::target::Target::resolve(&args.target)?;
    let b = &target.config.file.backup;
    let keep = args.keep_backups.or(b.keep);
    let rt = tokio::runtime::Runtime::new().context("start the async runtime")?;
    rt.block_on(crate::cmd::retention::clean(
        &target,
        keep,
        b.keep_for,
        args.dry_run,
    ))?;
    Ok(ExitCode::SUCCESS)
}

fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    let store = open_store(&args.archive, args.s3_config.as_deref())?;
    let entries = rt.block_on(store.list()).context("listing the archive")?;
    crate::outln!(
        "{:<42} {:<8} {:<5} {:>12} {:>12}  {:<16} STATUS",
        "NAME",
        "KIND",
        "COMP",
        "SIZE",
        "STORED",
        "SHA256"
    );
    let mut bad = Vec::new();
    for entry in &entries {
        let status = status_of(&rt, &store, entry, args.verify);
        if let Some(reason) = status.strip_prefix("BAD: ") {
            bad.push((entry.name.as_str().to_string(), reason.to_string()));
        }
        crate::outln!("{}", list_line(entry, &status));
    }
    if args.verify && !is_s3(&args.archive) {
        // Where the agents (metrics, REST) and `pgha status` look.
        health::record_verified(&args.archive, &bad);
    }
    let bad = bad.len();
    crate::outln!("{} files, {} bad", entries.len(), bad);
    Ok(if bad > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

fn status_of(rt: &tokio::runtime::Runtime, store: &Store, entry: &Entry, verify: bool) -> String {
    match (&entry.header, verify) {
        (Err(reason), _) => format!("BAD: {reason}"),
        (Ok(_), false) => "-".into(),
        (Ok(_), true) => match rt.block_on(store.verify(&entry.name)) {
            Ok(_) => "ok".into(),
            Err(e) => format!("BAD: {e}"),
        },
    }
}

fn list_line(entry: &Entry, status: &str) -> String {
    let (comp, size, sha) = match &entry.header {
        Ok(h) => (
            h.compression.to_string(),
            h.original_len.to_string(),
            h.sha256_hex()[..16].to_string(),
        ),
        Err(_) => ("?".into(), "?".into(), "?".into()),
    };
    format!(
        "{:<42} {:<8} {:<5} {:>12} {:>12}  {:<16} {status}",
        entry.name.as_str(),
        entry.name.kind().to_string(),
        comp,
        size,
        entry.stored_size,
        sha
    )
}

fn clean(args: CleanArgs) -> anyhow::Result<ExitCode> {
    let retention = match (args.keep, &args.before) {
        (Some(n), None) => Retention::KeepNewest(n),
        (None, Some(name)) => Retention::Before(WalName::parse(name)?),
        (None, None) => return clean_cluster(args),
        _ => anyhow::bail!("give exactly one of --keep N or --before WALFILE"),
    };
    let Some(dir) = &args.archive else {
        anyhow::bail!(
            "--keep and --before need --archive DIR; without them, `pgha archive clean --dir|--config` \
             cleans by the cluster's backups and members"
        );
    };
    let store = open_store(dir, args.s3_config.as_deref())?;
    let report = runtime()?
        .block_on(store.clean(&retention, args.dry_run))
        .context("cleaning the archive")?;
    let verb = if args.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    let mut bytes = 0u64;
    for (name, size) in &report.deleted {
        crate::outln!("{verb} {name} ({size} bytes)");
        bytes += size;
    }
    for (name, reason) in &report.skipped {
        crate::outln!("skipped {name}: {reason} (not deleting a file that is not ours)");
    }
    for path in &report.stale_temps {
        crate::outln!("{verb} stale temp file {}", path.display());
    }
    match &report.cutoff {
        Some(cut) => crate::outln!(
            "kept {} files (everything from {cut} on, and every .history file); {verb} {} files, {bytes} bytes",
            report.kept,
            report.deleted.len()
        ),
        None => crate::outln!("nothing to delete: the archive holds no more than requested ({} files kept)", report.kept),
    }
    Ok(ExitCode::SUCCESS)
}
