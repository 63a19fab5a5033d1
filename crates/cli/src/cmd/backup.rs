//! `pgha backup` (a verified base backup into the archive), `pgha backup
//! list`, and `pgha restore-point NAME`.
//!
//! A backup: pg_basebackup (plain format, WAL streamed, with its manifest)
//! from a streaming standby, or from the primary on request, into a staging
//! directory inside the archive; `pg_verifybackup` checks every file
//! against the manifest and parses the WAL; only then is it packed into one
//! zstd tar with a SHA-256 (the archive's file format) and renamed into
//! place with its record. A backup that fails any step never counts.
//!
//! Hazard: the staging copy is uncompressed, so the archive needs room for
//! one whole data directory while a backup runs.

use crate::target::{Target, TargetArgs};
use anyhow::{anyhow, bail, Context};
use pgha_archive::backups::{check_restore_point_name, MANIFEST_FILE, PAYLOAD_FILE};
use pgha_archive::{BackupRecord, RestorePoint, Store};
use pgha_config::Member;
use pgha_postgres::probe::{self, ServerStatus};
use pgha_postgres::{PgBinaries, ServiceUser};
use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, SystemTime};
use tokio::io::AsyncReadExt;
use tokio_postgres::Client;

const PG_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<BackupCommand>,
    #[command(flatten)]
    take: TakeArgs,
}

#[derive(clap::Subcommand)]
enum BackupCommand {
    /// List the backups in the archive: id, state, timeline, LSNs, times, sizes.
    List(ListArgs),
}

#[derive(clap::Args)]
struct TakeArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Take the backup from the primary (default: a streaming standby, so
    /// the primary is spared; the primary only when no standby streams).
    #[arg(long)]
    from_primary: bool,
    /// Take the backup from this member.
    #[arg(long, value_name = "NAME", conflicts_with = "from_primary")]
    member: Option<String>,
}

#[derive(clap::Args)]
struct ListArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Print JSON (one array of records).
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct RestorePointArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// The restore point's name (restore to it with `pgha restore --name`).
    #[arg(value_name = "NAME")]
    name: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Some(BackupCommand::List(a)) => list(a),
        None => {
            let rt = tokio::runtime::Runtime::new().context("start the async runtime")?;
            rt.block_on(async {
                let target = Target::resolve(&args.take.target)?;
                let choice = match (&args.take.member, args.take.from_primary) {
                    (Some(m), _) => Source::Member(m.clone()),
                    (None, true) => Source::Primary,
                    (None, false) if target.config.file.backup.from_primary => Source::Primary,
                    (None, false) => Source::Standby,
                };
                take(&target, choice).await?;
                Ok(ExitCode::SUCCESS)
            })
        }
    }
}

fn print_taken(record: &BackupRecord) {
    crate::outln!(
        "backup {} verified and stored: timeline {}, {} .. {}, {} bytes ({} stored)",
        record.id,
        record.timeline,
        record.start_lsn,
        record.end_lsn,
        record.original_bytes,
        record.stored_bytes
    );
}

/// Which member to copy.
#[derive(Debug, Clone)]
pub enum Source {
    Standby,
    Primary,
    Member(String),
}

/// A member that answered, with what it said.
pub struct Probed<'a> {
    pub member: &'a Member,
    pub client: Client,
    pub status: ServerStatus,
}

/// The admin password from the secrets directory.
pub fn admin_password(target: &Target) -> anyhow::Result<String> {
    let path = target
        .config
        .secrets_dir
        .join(pgha_postgres::secrets::ADMIN_FILE);
    let pw = std::fs::read_to_string(&path)
        .with_context(|| format!("read the admin password from {}", path.display()))?;
    Ok(pw.trim().to_string())
}

/// Connect to every member that answers.
pub async fn probe_members(target: &Target) -> anyhow::Result<Vec<Probed<'_>>> {
    let cfg = &target.config;
    let password = admin_password(target)?;
    let mut out = Vec::new();
    for m in &cfg.members {
        let Ok(client) =
            probe::connect(&m.host, m.port, &cfg.superuser, &password, PG_TIMEOUT).await
        else {
            continue;
        };
        if let Ok(status) = probe::server_status(&client).await {
            out.push(Probed {
                member: m,
                client,
                status,
            });
        }
    }
    Ok(out)
}

/// The writable primary among `probed`.
pub fn primary<'p, 'a>(probed: &'p [Probed<'a>]) -> Option<&'p Probed<'a>> {
    probed
        .iter()
        .find(|p| !p.status.in_recovery && !p.status.read_only_default)
        .or_else(|| probed.iter().find(|p| !p.status.in_recovery))
}

fn choose<'p, 'a>(probed: &'p [Probed<'a>], source: &Source) -> anyhow::Result<&'p Probed<'a>> {
    match source {
        Source::Member(name) => probed
            .iter()
            .find(|p| &p.member.name == name)
            .ok_or_else(|| anyhow!("member {name} does not answer (or is not in the cluster)")),
        Source::Primary => primary(probed)
            .ok_or_else(|| anyhow!("no primary answers; `pgha status` shows the cluster's state")),
        Source::Standby => {
            let standby = probed
                .iter()
                .filter(|p| {
                    p.status.in_recovery && p.status.wal_receiver.as_deref() == Some("streaming")
                })
                .max_by_key(|p| p.status.replay_lsn);
            match standby {
                Some(s) => Ok(s),
                None => {
                    let p = primary(probed).ok_or_else(|| {
                        anyhow!("no member answers; `pgha status` shows the cluster's state")
                    })?;
                    crate::outln!(
                        "no streaming standby answers; taking the backup from the primary {}",
                        p.member.name
                    );
                    Ok(p)
                }
            }
        }
    }
}

/// The cluster's archive: its directory or its object store.
pub fn store_of(target: &Target) -> anyhow::Result<Store> {
    let cfg = &target.config;
    Store::open(&cfg.archive_location(), cfg.archive_s3_config.as_deref())
        .context("open the archive")
}

/// Where backups for an object store are staged: `backup-staging` beside
/// the cluster config (a directory of its own, never the system temp dir).
pub fn local_staging_root(target: &Target) -> std::path::PathBuf {
    target
        .source
        .parent()
        .unwrap_or(Path::new("."))
        .join("backup-staging")
}

/// A backup id: the UTC start time, which also orders backups.
fn backup_id(now: SystemTime) -> String {
    humantime::format_rfc3339_seconds(now)
        .to_string()
        .replace(['-', ':'], "")
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// TTL of the backup lock's lease; renewed every third of it while the
/// backup runs, so a killed backup frees the lock within this time.
const LOCK_TTL_SECS: i64 = 30;

/// The etcd key that makes backups one at a time in the cluster.
pub fn lock_key(target: &Target) -> String {
    format!("{}backup-lock", target.keys.prefix())
}

/// The cluster-wide backup lock: an etcd key on a lease that a background
/// task keeps alive until [`BackupLock::release`] (or the process dies and
/// the lease expires).
pub struct BackupLock {
    dcs: pgha_dcs::EtcdDcs,
    lease: pgha_dcs::LeaseId,
    keeper: tokio::task::JoinHandle<()>,
}

impl BackupLock {
    pub async fn acquire(target: &Target) -> anyhow::Result<BackupLock> {
        use pgha_dcs::Dcs;
        let dcs = target.dcs()?;
        let key = lock_key(target);
        let lease = dcs
            .grant_lease(LOCK_TTL_SECS)
            .await
            .context("take the cluster-wide backup lock in etcd")?;
        let holder = format!(
            "pid {} on {}",
            std::process::id(),
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default()
        );
        let won = dcs
            .create_if_absent(&key, holder.as_bytes(), Some(lease.id))
            .await
            .context("take the cluster-wide backup lock in etcd")?;
        if !won {
            let _ = dcs.revoke_lease(lease.id).await;
            let who = dcs
                .get(&key)
                .await
                .ok()
                .and_then(|r| r.kv)
                .map(|kv| kv.value_str().into_owned())
                .unwrap_or_else(|| "?".into());
            bail!("another backup is running ({who}); only one runs at a time in the cluster");
        }
        let keeper = {
            let dcs = dcs.clone();
            let id = lease.id;
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(LOCK_TTL_SECS as u64 / 3)).await;
                    if let Err(e) = dcs.keep_alive(id).await {
                        tracing::warn!("renewing the backup lock: {e}");
                    }
                }
            })
        };
        Ok(BackupLock {
            dcs,
            lease: lease.id,
            keeper,
        })
    }

    pub async fn release(self) {
        use pgha_dcs::Dcs;
        self.keeper.abort();
        let _ = self.dcs.revoke_lease(self.lease).await;
    }
}

/// Take, verify and store one backup under the cluster-wide lock.
pub async fn take(target: &Target, source: Source) -> anyhow::Result<BackupRecord> {
    let lock = BackupLock::acquire(target).await?;
    let result = take_unlocked(target, source).await;
    let result = match result {
        Ok(record) => {
            print_taken(&record);
            crate::cmd::retention::after_backup(target)
                .await
                .map(|()| record)
        }
        Err(e) => Err(e),
    };
    lock.release().await;
    result
}

async fn take_unlocked(target: &Target, source: Source) -> anyhow::Result<BackupRecord> {
    let cfg = &target.config;
    let store = store_of(target)?;
    let bins = PgBinaries::locate(cfg.bin_dir.as_deref())?;
    let user = ServiceUser::resolve(&cfg.os_user)?;
    let probed = probe_members(target).await?;
    let src = choose(&probed, &source)?;
    let role = if src.status.in_recovery {
        "standby"
    } else {
        "primary"
    };
    let seg_size: i64 = src
        .client
        .query_one(
            "SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'",
            &[],
        )
        .await
        .context("read wal_segment_size")?
        .get(0);
    let pg_version: String = src
        .client
        .query_one("SELECT current_setting('server_version')", &[])
        .await
        .context("read server_version")?
        .get(0);

    let started = SystemTime::now();
    let id = backup_id(started);
    let root = local_staging_root(target);
    match &store {
        Store::Dir(a) => {
            user.make_dir(&a.backups_dir(), 0o700)?;
            user.make_dir(a.backup_staging(&id).parent().unwrap_or(&root), 0o700)?;
        }
        Store::S3(_) => user.make_dir(&root, 0o700)?,
    }
    store.sweep_staging(&root)?;
    let staging = store.staging_dir(&id, &root);
    user.make_dir(&staging, 0o700)?;
    std::fs::write(staging.join("pid"), std::process::id().to_string())
        .context("write the staging pid file")?;
    let result = take_into(
        target,
        &store,
        &bins,
        &user,
        src,
        &staging,
        &id,
        started,
        seg_size,
        &pg_version,
        role,
    )
    .await;
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn take_into(
    target: &Target,
    store: &Store,
    bins: &PgBinaries,
    user: &ServiceUser,
    src: &Probed<'_>,
    staging: &Path,
    id: &str,
    started: SystemTime,
    seg_size: i64,
    pg_version: &str,
    role: &str,
) -> anyhow::Result<BackupRecord> {
    let cfg = &target.config;
    let data = staging.join("data");
    crate::outln!(
        "backup {id}: copying {} ({role}) with pg_basebackup into {}",
        src.member.name,
        staging.display()
    );
    let mut cmd = user.command(bins.path("pg_basebackup"));
    cmd.env(
        "PGPASSFILE",
        cfg.secrets_dir.join(pgha_postgres::secrets::PASSFILE),
    )
    .arg("-D")
    .arg(&data)
    .args([
        "-h",
        &src.member.host,
        "-p",
        &src.member.port.to_string(),
        "-U",
        &cfg.replication_user,
        "-X",
        "stream",
        "-c",
        "fast",
        "--no-password",
        "--progress",
        "--manifest-checksums=CRC32C",
    ]);
    run_with_progress("pg_basebackup", cmd).await?;
    let end_time = SystemTime::now();

    // Verification and packing read the same copy: at once, on separate
    // cores. The packed file counts only once the verification passed.
    crate::outln!("backup {id}: verifying with pg_verifybackup while packing (tar, zstd, sha256)");
    let payload = staging.join(PAYLOAD_FILE);
    let packing = {
        let payload = payload.clone();
        let data = data.clone();
        tokio::task::spawn_blocking(move || pack(&payload, &data))
    };
    let (verified, packed) = tokio::join!(verify_backup(bins, user, &data), packing);
    let packed = packed.context("packing task").and_then(|r| r);
    if let Err(why) = verified? {
        let _ = std::fs::remove_file(&payload);
        bail!("the backup failed verification, so it was not kept: pg_verifybackup: {why}");
    }
    let header = packed?;

    let manifest_text = std::fs::read_to_string(data.join(MANIFEST_FILE))
        .with_context(|| format!("read {}", data.join(MANIFEST_FILE).display()))?;
    let wal = wal_ranges(&manifest_text)?;

    std::fs::copy(data.join(MANIFEST_FILE), staging.join(MANIFEST_FILE))
        .context("copy backup_manifest")?;
    user.give(&staging.join(MANIFEST_FILE))?;
    std::fs::remove_dir_all(&data).context("remove the staging copy")?;
    let _ = std::fs::remove_file(staging.join("pid"));
    let record = BackupRecord {
        id: id.to_string(),
        state: "verified".into(),
        source: src.member.name.clone(),
        source_role: role.to_string(),
        timeline: wal.end_tli,
        start_lsn: wal.start_lsn,
        end_lsn: wal.end_lsn,
        start_time: humantime::format_rfc3339_millis(started).to_string(),
        end_time: humantime::format_rfc3339_millis(end_time).to_string(),
        wal_segment_size: seg_size as u64,
        original_bytes: header.original_len,
        stored_bytes: header.stored_len + pgha_archive::format::HEADER_LEN as u64,
        sha256: header.sha256_hex(),
        pg_version: pg_version.to_string(),
    };
    if let Store::S3(s3) = store {
        crate::outln!("backup {id}: uploading to {}", s3.url());
    }
    store
        .commit_backup(&record, staging)
        .await
        .context("store the backup")?;
    Ok(record)
}

/// Tar the directory into the staged payload (tar runs as the current
/// user: root or the service user can read the copy).
fn pack(payload: &Path, data: &Path) -> anyhow::Result<pgha_archive::Header> {
    let mut child = std::process::Command::new("tar")
        .arg("-C")
        .arg(data)
        .args(["-cf", "-", "."])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("run tar (install GNU tar)")?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("tar has no stdout"))?;
    let header = pgha_archive::backups::write_payload_file(payload, stdout);
    let out = child.wait_with_output().context("wait for tar")?;
    if !out.status.success() {
        bail!(
            "tar of {} failed: {}",
            data.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(header?)
}

/// Run a PostgreSQL tool and relay its stderr lines (progress) to stdout.
pub async fn run_with_progress(what: &str, mut cmd: tokio::process::Command) -> anyhow::Result<()> {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("run {what}"))?;
    let mut stderr = child
        .stderr
        .take()
        .ok_or_else(|| anyhow!("{what} has no stderr"))?;
    let mut all = String::new();
    let mut buf = [0u8; 4096];
    let mut line = Vec::new();
    loop {
        let n = stderr.read(&mut buf).await.context("read progress")?;
        if n == 0 {
            break;
        }
        for &b in &buf[..n] {
            if b == b'\n' || b == b'\r' {
                let text = String::from_utf8_lossy(&line).trim().to_string();
                if !text.is_empty() {
                    crate::outln!("  {what}: {text}");
                    all.push_str(&text);
                    all.push('\n');
                }
                line.clear();
            } else {
                line.push(b);
            }
        }
    }
    let status = child
        .wait()
        .await
        .with_context(|| format!("wait for {what}"))?;
    if !status.success() {
        let tail: Vec<&str> = all.lines().rev().take(5).collect();
        bail!(
            "{what} failed ({status}): {}",
            tail.into_iter().rev().collect::<Vec<_>>().join("; ")
        );
    }
    Ok(())
}

struct WalRange {
    start_lsn: String,
    end_lsn: String,
    end_tli: u32,
}

/// Start and end of the WAL a backup needs, from its manifest.
fn wal_ranges(manifest: &str) -> anyhow::Result<WalRange> {
    let v: serde_json::Value = serde_json::from_str(manifest).context("parse backup_manifest")?;
    let ranges = v["WAL-Ranges"]
        .as_array()
        .ok_or_else(|| anyhow!("backup_manifest has no WAL-Ranges"))?;
    let parsed: Vec<(u32, u64, u64, String, String)> = ranges
        .iter()
        .filter_map(|r| {
            let tli = r["Timeline"].as_u64()? as u32;
            let s = r["Start-LSN"].as_str()?.to_string();
            let e = r["End-LSN"].as_str()?.to_string();
            Some((
                tli,
                pgha_archive::chain::parse_lsn(&s)?,
                pgha_archive::chain::parse_lsn(&e)?,
                s,
                e,
            ))
        })
        .collect();
    let start = parsed
        .iter()
        .min_by_key(|r| r.1)
        .ok_or_else(|| anyhow!("backup_manifest has no usable WAL range"))?;
    let end = parsed
        .iter()
        .max_by_key(|r| r.2)
        .ok_or_else(|| anyhow!("backup_manifest has no usable WAL range"))?;
    Ok(WalRange {
        start_lsn: start.3.clone(),
        end_lsn: end.4.clone(),
        end_tli: end.0,
    })
}

fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let target = Target::resolve(&args.target)?;
    let store = store_of(&target)?;
    let rt = tokio::runtime::Runtime::new().context("start the async runtime")?;
    let entries = rt.block_on(store.list_backups()).context("list backups")?;
    if args.json {
        let records: Vec<serde_json::Value> = entries
            .iter()
            .map(|e| match &e.record {
                Ok(r) => serde_json::to_value(r).unwrap_or_default(),
                Err(why) => serde_json::json!({"id": e.id, "state": "unusable", "error": why}),
            })
            .collect();
        crate::outln!("{}", serde_json::to_string_pretty(&records)?);
        return Ok(ExitCode::SUCCESS);
    }
    crate::outln!(
        "{:<18} {:<10} {:<4} {:<12} {:<12} {:<25} {:<25} {:>12} {:>12}  SOURCE",
        "ID",
        "STATE",
        "TLI",
        "START LSN",
        "END LSN",
        "START",
        "END",
        "SIZE",
        "STORED"
    );
    for e in &entries {
        match &e.record {
            Ok(r) => crate::outln!(
                "{:<18} {:<10} {:<4} {:<12} {:<12} {:<25} {:<25} {:>12} {:>12}  {} ({})",
                r.id,
                r.state,
                r.timeline,
                r.start_lsn,
                r.end_lsn,
                r.start_time,
                r.end_time,
                r.original_bytes,
                r.stored_bytes,
                r.source,
                r.source_role
            ),
            Err(why) => crate::outln!("{:<18} {:<10} {why}", e.id, "unusable"),
        }
    }
    crate::outln!("{} backups", entries.len());
    Ok(ExitCode::SUCCESS)
}

pub fn restore_point(args: RestorePointArgs) -> anyhow::Result<ExitCode> {
    check_restore_point_name(&args.name).map_err(|e| anyhow!(e))?;
    let rt = tokio::runtime::Runtime::new().context("start the async runtime")?;
    rt.block_on(async {
        let target = Target::resolve(&args.target)?;
        let store = store_of(&target)?;
        if store.restore_point(&args.name).await?.is_some() {
            bail!(
                "a restore point named {} exists already; choose another name",
                args.name
            );
        }
        let probed = probe_members(&target).await?;
        let p = primary(&probed)
            .ok_or_else(|| anyhow!("no primary answers; a restore point is made on the primary"))?;
        let row = p
            .client
            .query_one(
                "SELECT pg_create_restore_point($1)::text, \
                 ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int",
                &[&args.name],
            )
            .await
            .context("pg_create_restore_point")?;
        let lsn: String = row.get(0);
        let tli: i32 = row.get(1);
        // Archive the segment now rather than at archive_timeout.
        p.client
            .execute("SELECT pg_switch_wal()", &[])
            .await
            .context("pg_switch_wal")?;
        let point = RestorePoint {
            name: args.name.clone(),
            lsn: lsn.clone(),
            timeline: tli as u32,
            time: now_rfc3339(),
        };
        store.save_restore_point(&point).await?;
        crate::outln!(
            "restore point {} at {lsn} on timeline {tli} (primary {}); restore with `pgha restore --name {}`",
            args.name,
            p.member.name,
            args.name
        );
        Ok(ExitCode::SUCCESS)
    })
}

/// Runs `pg_verifybackup --quiet` on the data directory `data` (with its
/// `backup_manifest`): `Ok(Err(what it printed))` when the files do not match
/// the manifest, `Err` when it could not run.
pub(crate) async fn verify_backup(
    bins: &PgBinaries,
    user: &ServiceUser,
    data: &Path,
) -> anyhow::Result<Result<(), String>> {
    let out = user
        .command(bins.path("pg_verifybackup"))
        .arg("--quiet")
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .context("run pg_verifybackup")?;
    if out.status.success() {
        return Ok(Ok(()));
    }
    Ok(Err(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}
