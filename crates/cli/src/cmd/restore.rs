//! `pgha restore`: a backup from the archive into a new data directory,
//! recovered through the archived WAL to the latest WAL, a time, an LSN, a
//! restore point or a transaction, on any timeline; the server is started,
//! and the command returns once it has promoted at the target (or failed).
//!
//! Never a silent early promotion:
//! - before starting, the WAL chain from the backup's end onwards is
//!   checked segment by segment (present, checksum) along the timeline
//!   path; for `--latest`, and for an LSN or a recorded restore point, a
//!   hole or a corrupt segment the restore needs stops it with an error
//!   that names the segment;
//! - for a time or a transaction the needed range is unknown in advance:
//!   PostgreSQL (13 and later) stops with `FATAL: recovery ended before
//!   configured recovery target was reached` instead of promoting, and the
//!   error names the first unusable segment the check found.
//!
//! Hazard: the restored server gets `archive_mode = off`: it is a new
//! cluster and must not push its new timeline into this cluster's archive.

use crate::cmd::backup::{admin_password, store_of};
use crate::target::{Target, TargetArgs};
use anyhow::{anyhow, bail, Context};
use pgha_archive::chain::parse_lsn;
use pgha_archive::{BackupRecord, ChainProblem, Store, TimelineSpan};
use pgha_postgres::{PgBinaries, ServiceUser};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// The log of the restored server, inside its data directory.
pub const RESTORE_LOG: &str = "pgha-restore.log";

/// First line of the settings `pgha restore` appends to
/// `postgresql.auto.conf` (see [`recovery_conf`]).
pub const SETTINGS_MARKER: &str = "# Written by `pgha restore`";

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("target_point").required(true)
    .args(["latest", "time", "lsn", "name", "xid"])))]
pub struct Args {
    #[command(flatten)]
    target: TargetArgs,
    /// The new data directory (must not exist, or be empty).
    #[arg(long, value_name = "DIR")]
    to: PathBuf,
    /// Port of the restored server (listening on 127.0.0.1 only).
    #[arg(long)]
    port: u16,
    #[command(flatten)]
    point: PointArgs,
    /// Give up waiting for recovery after this long.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1h")]
    timeout: Duration,
}

/// Which backup, and where recovery stops: shared by `pgha restore` and
/// `pgha up --from-backup`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct PointArgs {
    /// Restore this backup (default: the newest that ends before the target).
    #[arg(long, value_name = "ID")]
    pub backup: Option<String>,
    /// Recover every archived WAL file (when the cluster's primary answers,
    /// it is first asked to archive its current WAL segment).
    #[arg(long)]
    pub latest: bool,
    /// Recover up to this time (RFC 3339 in UTC, e.g. 2026-12-07T13:05:12.5Z).
    #[arg(long, value_name = "TIME")]
    pub time: Option<String>,
    /// Recover up to this LSN (X/Y).
    #[arg(long, value_name = "LSN")]
    pub lsn: Option<String>,
    /// Recover up to this restore point (`pgha restore-point NAME`).
    #[arg(long, value_name = "RESTORE_POINT")]
    pub name: Option<String>,
    /// Recover up to this transaction id (its commit included).
    #[arg(long, value_name = "XID")]
    pub xid: Option<String>,
    /// Timeline to follow: a number, `latest` (default: the newest in the
    /// archive) or `current` (the backup's).
    #[arg(long, default_value = "latest")]
    pub timeline: String,
}

impl PointArgs {
    /// Whether any recovery target option was given.
    pub fn any_target(&self) -> bool {
        self.latest
            || self.time.is_some()
            || self.lsn.is_some()
            || self.name.is_some()
            || self.xid.is_some()
    }
}

/// Where recovery should stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryTarget {
    Latest,
    Time(SystemTime, String),
    Lsn(u64, String),
    Name(String),
    Xid(String),
}

impl RecoveryTarget {
    /// The target the options name; `--latest` when none is given.
    pub fn from_args(a: &PointArgs) -> anyhow::Result<RecoveryTarget> {
        if let Some(t) = &a.time {
            let at = parse_utc(t).map_err(|e| {
                anyhow!("--time {t:?}: {e}; give a UTC time like 2026-12-07T13:05:12.5Z")
            })?;
            return Ok(RecoveryTarget::Time(at, t.clone()));
        }
        if let Some(l) = &a.lsn {
            let v =
                parse_lsn(l).ok_or_else(|| anyhow!("--lsn {l:?} is not an LSN like 0/3000060"))?;
            return Ok(RecoveryTarget::Lsn(v, l.clone()));
        }
        if let Some(n) = &a.name {
            pgha_archive::backups::check_restore_point_name(n).map_err(|e| anyhow!(e))?;
            return Ok(RecoveryTarget::Name(n.clone()));
        }
        if let Some(x) = &a.xid {
            if x.is_empty() || !x.bytes().all(|b| b.is_ascii_digit()) {
                bail!("--xid {x:?} is not a transaction id (a number)");
            }
            return Ok(RecoveryTarget::Xid(x.clone()));
        }
        Ok(RecoveryTarget::Latest)
    }

    pub fn describe(&self) -> String {
        match self {
            RecoveryTarget::Latest => "the end of the archived WAL".into(),
            RecoveryTarget::Time(_, t) => format!("time {t}"),
            RecoveryTarget::Lsn(_, l) => format!("LSN {l}"),
            RecoveryTarget::Name(n) => format!("restore point {n}"),
            RecoveryTarget::Xid(x) => format!("transaction {x}"),
        }
    }
}

/// A UTC time: RFC 3339 with `Z`, `+00` or `+00:00`, or without a zone.
pub fn parse_utc(t: &str) -> Result<SystemTime, humantime::TimestampError> {
    let bare = ["Z", "z", "+00:00", "+00"]
        .iter()
        .find_map(|s| t.strip_suffix(s))
        .unwrap_or(t);
    humantime::parse_rfc3339_weak(bare)
}

/// A time as PostgreSQL's recovery_target_time takes it: it refuses zone
/// abbreviations such as `Z`, so the offset is numeric.
pub fn postgres_time(at: SystemTime) -> String {
    let s = humantime::format_rfc3339_micros(at).to_string();
    format!("{}+00", s.trim_end_matches('Z').replace('T', " "))
}

/// The newest backup that can reach `target` (`stop_lsn`: the LSN a restore
/// point or LSN target stands for, when known).
pub fn choose_backup<'a>(
    backups: &'a [BackupRecord],
    target: &RecoveryTarget,
    stop_lsn: Option<u64>,
) -> anyhow::Result<&'a BackupRecord> {
    let fits = |b: &&BackupRecord| match (target, stop_lsn) {
        (_, Some(lsn)) => b.end_lsn_u64().is_some_and(|e| e <= lsn),
        (RecoveryTarget::Time(at, _), None) => parse_utc(&b.end_time).is_ok_and(|end| end < *at),
        _ => true,
    };
    if backups.is_empty() {
        bail!("the archive holds no backup; take one with `pgha backup`");
    }
    backups.iter().rev().find(fits).ok_or_else(|| {
        anyhow!(
            "no backup ends before {}: the oldest backup, {}, ends at {} ({}); \
             a restore cannot stop before the end of its backup",
            target.describe(),
            backups[0].id,
            backups[0].end_time,
            backups[0].end_lsn
        )
    })
}

/// The settings appended to `postgresql.auto.conf` of the restored copy.
pub fn recovery_conf(
    target: &RecoveryTarget,
    timeline: u32,
    restore_command: &str,
    port: u16,
    backup_id: &str,
) -> String {
    let q = pgha_postgres::conf::quote;
    let mut out = format!(
        "\n{SETTINGS_MARKER} of backup {backup_id}.\n\
         port = {port}\n\
         listen_addresses = '127.0.0.1'\n\
         unix_socket_directories = ''\n\
         archive_mode = off\n\
         synchronous_standby_names = ''\n\
         primary_conninfo = ''\n\
         primary_slot_name = ''\n\
         cluster_name = 'restore'\n\
         restore_command = {}\n\
         recovery_target_timeline = '{timeline}'\n",
        q(restore_command)
    );
    let line = match target {
        RecoveryTarget::Latest => None,
        RecoveryTarget::Time(at, _) => {
            Some(format!("recovery_target_time = {}", q(&postgres_time(*at))))
        }
        RecoveryTarget::Lsn(_, l) => Some(format!("recovery_target_lsn = {}", q(l))),
        RecoveryTarget::Name(n) => Some(format!("recovery_target_name = {}", q(n))),
        RecoveryTarget::Xid(x) => Some(format!("recovery_target_xid = {}", q(x))),
    };
    if let Some(line) = line {
        out.push_str(&line);
        out.push_str("\nrecovery_target_inclusive = on\nrecovery_target_action = 'promote'\n");
    }
    out
}

/// How pgha reaches the restored server while it recovers.
pub enum Access {
    /// TCP on 127.0.0.1 with a password the restored data knows (the
    /// source cluster's admin password).
    Password { user: String, password: String },
    /// Only a Unix socket in `dir` (a directory only the service user and
    /// root can enter), with `trust` authentication and no TCP listener:
    /// needs no password of the source cluster. `user` must be a role of
    /// the restored data.
    PrivateSocket { dir: PathBuf, user: String },
}

impl Access {
    /// Host (or socket directory), user and password to connect with.
    pub fn login(&self) -> (String, &str, &str) {
        match self {
            Access::Password { user, password } => ("127.0.0.1".into(), user, password),
            Access::PrivateSocket { dir, user } => (dir.display().to_string(), user, ""),
        }
    }
}

/// What to restore where: the parts `pgha restore` and `pgha up
/// --from-backup` share.
pub struct Request {
    pub access: Access,
    pub point: RecoveryTarget,
    pub backup: Option<String>,
    pub timeline: String,
    /// The new data directory (absent or empty).
    pub to: PathBuf,
    /// Port of the restored server, on 127.0.0.1.
    pub port: u16,
    pub timeout: Duration,
}

/// A restored server: running, promoted at its target.
pub struct Restored {
    pub data: PathBuf,
    /// Its WAL position and timeline after the promotion.
    pub lsn: String,
    pub timeline: i32,
    pub backup_id: String,
}

/// Runs on the unpacked, verified data directory before the server starts
/// (after pgha's recovery settings are written).
pub type BeforeStart<'a> = &'a (dyn Fn(&Path) -> anyhow::Result<()> + Sync);

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Runtime::new().context("start the async runtime")?;
    rt.block_on(restore(args))
}

async fn restore(args: Args) -> anyhow::Result<ExitCode> {
    let target = Target::resolve(&args.target)?;
    // Before anything is fetched or unpacked: the server would fail to
    // listen only after that.
    crate::cmd::up::ensure_free(
        "127.0.0.1",
        &[args.port],
        "the restored server (--port)",
        "choose another --port",
    )?;
    let request = Request {
        access: Access::Password {
            user: target.config.superuser.clone(),
            password: admin_password(&target)?,
        },
        point: RecoveryTarget::from_args(&args.point)?,
        backup: args.point.backup.clone(),
        timeline: args.point.timeline.clone(),
        to: args.to.clone(),
        port: args.port,
        timeout: args.timeout,
    };
    let restored = restore_to(&target, &request, &|_| Ok(())).await?;
    let bins = PgBinaries::locate(target.config.bin_dir.as_deref())?;
    let user = ServiceUser::resolve(&target.config.os_user)?;
    crate::outln!(
        "restored server: 127.0.0.1:{}, timeline {}, WAL at {}, data directory {}",
        request.port,
        restored.timeline,
        restored.lsn,
        restored.data.display()
    );
    // PostgreSQL's programs refuse to run as root.
    let as_user = match user.switch {
        true => format!("runuser -u {} -- ", user.name),
        false => String::new(),
    };
    crate::outln!(
        "stop it with: {as_user}{} -D {} stop",
        bins.path("pg_ctl").display(),
        restored.data.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Restore a backup from the archive of the cluster `target` as `req` says
/// and start it; returns once the server has promoted at the target.
/// `before_start` may adjust the data directory first.
pub async fn restore_to(
    target: &Target,
    req: &Request,
    before_start: BeforeStart<'_>,
) -> anyhow::Result<Restored> {
    let target_point = &req.point;
    let cfg = &target.config;
    let archive = store_of(target)?;
    let bins = PgBinaries::locate(cfg.bin_dir.as_deref())?;
    let user = ServiceUser::resolve(&cfg.os_user)?;

    let point_lsn = match target_point {
        RecoveryTarget::Lsn(l, _) => Some(*l),
        RecoveryTarget::Name(n) => archive
            .restore_point(n)
            .await?
            .and_then(|p| parse_lsn(&p.lsn)),
        _ => None,
    };
    let backups = archive.backups().await.context("list backups")?;
    let backup = match &req.backup {
        Some(id) => backups.iter().find(|b| &b.id == id).ok_or_else(|| {
            anyhow!("no verified backup {id} in the archive (see `pgha backup list`)")
        })?,
        None => choose_backup(&backups, target_point, point_lsn)?,
    };
    if *target_point == RecoveryTarget::Latest {
        archive_current_wal(target).await?;
    }
    let path = timeline_path(&archive, &req.timeline, backup).await?;
    let tli = path.last().map(|s| s.tli).unwrap_or(backup.timeline);
    crate::outln!(
        "restoring backup {} (timeline {}, {} .. {}, taken {}) to {} on timeline {tli}",
        backup.id,
        backup.timeline,
        backup.start_lsn,
        backup.end_lsn,
        backup.end_time,
        target_point.describe()
    );

    // The WAL after the backup: present and sound up to where we must go.
    let end = backup.end_lsn_u64().unwrap_or(0);
    let until = point_lsn.filter(|l| *l > end);
    let chain = if point_lsn.is_some() && until.is_none() {
        pgha_archive::ChainReport::default()
    } else {
        archive
            .check_chain(&path, end, until, backup.wal_segment_size, true)
            .await?
    };
    let mut chain = chain;
    if *target_point == RecoveryTarget::Latest && chain.problem.is_none() {
        // The archive alone cannot tell that its newest segments are gone;
        // the primary knows what it archived last.
        match last_archived(target).await {
            Some((name, lsn)) => {
                crate::outln!("the primary reports {name} as the last WAL segment it archived");
                let reached = chain.last.as_deref().is_some_and(|l| l[8..] >= name[8..]);
                if lsn + backup.wal_segment_size > end && !reached {
                    chain.problem = Some(ChainProblem::Missing {
                        name: next_segment(chain.last.as_deref(), backup),
                    });
                }
            }
            None => crate::outln!(
                "no primary answers: the end of the archived WAL is the newest segment found in the archive"
            ),
        }
    }
    let must_reach = matches!(target_point, RecoveryTarget::Latest) || until.is_some();
    if let (true, Some(problem)) = (must_reach, &chain.problem) {
        bail!(
            "cannot restore to {}: {problem}. Recovery would stop there{}. \
             Put the segment back into the archive (from a member's pg_wal, if one still has it), \
             or restore to a point before it",
            target_point.describe(),
            if matches!(target_point, RecoveryTarget::Latest) {
                " and promote without the WAL after it"
            } else {
                ""
            }
        );
    }
    crate::outln!(
        "WAL after the backup: {} archived segments checked{}",
        chain.checked.len(),
        chain
            .last
            .as_ref()
            .map(|l| format!(", up to {l}"))
            .unwrap_or_default()
    );

    let created = prepare_dir(&req.to, &user)?;
    let job = Job {
        req,
        target,
        archive: &archive,
        bins: &bins,
        user: &user,
        backup,
        tli,
        problem: chain.problem.as_ref(),
    };
    let result = restore_into(&job, before_start).await;
    if result.is_err() && created && !req.to.join("PG_VERSION").exists() {
        let _ = std::fs::remove_dir_all(&req.to);
    }
    result
}

/// The segment after `last` (same timeline), or the backup's end segment.
fn next_segment(last: Option<&str>, backup: &BackupRecord) -> String {
    let seg_size = backup.wal_segment_size.max(1);
    let per_log = 0x1_0000_0000u64 / seg_size;
    let (tli, segno) = match last.and_then(|l| pgha_archive::WalName::parse(l).ok()) {
        Some(w) => {
            let p = w.pos().unwrap_or(pgha_archive::SegPos { log: 0, seg: 0 });
            (w.timeline(), p.log as u64 * per_log + p.seg as u64 + 1)
        }
        None => (
            backup.timeline,
            backup.end_lsn_u64().unwrap_or(0) / seg_size,
        ),
    };
    format!("{tli:08X}{:08X}{:08X}", segno / per_log, segno % per_log)
}

/// How long `--latest` waits for the primary to archive its current WAL.
const ARCHIVE_NOW_TIMEOUT: Duration = Duration::from_secs(60);

/// For `--latest` from a cluster whose primary answers: end its current
/// WAL segment (`pg_switch_wal()`) and wait until it is archived, so that
/// every commit acknowledged before the restore began is in the archive
/// (else the newest commits, still only in the primary's pg_wal, would be
/// missing). No primary: nothing to do, the archive is all there is. A
/// primary that cannot archive stops the restore, naming the segment.
async fn archive_current_wal(target: &Target) -> anyhow::Result<()> {
    let Ok(probed) = crate::cmd::backup::probe_members(target).await else {
        return Ok(());
    };
    let Some(p) = crate::cmd::backup::primary(&probed) else {
        return Ok(());
    };
    // The segment holding the last WAL written: pg_switch_wal() returns the
    // end of the segment it completed plus one, or the start of the current
    // one when nothing was written since the last switch (then the segment
    // before it holds the newest WAL).
    let segment: String = p
        .client
        .query_one("SELECT pg_walfile_name(pg_switch_wal() - 1)", &[])
        .await
        .with_context(|| {
            format!(
                "end the current WAL segment on the primary {}",
                p.member.name
            )
        })?
        .get(0);
    crate::outln!(
        "asked the primary {} to archive its current WAL (segment {segment})",
        p.member.name
    );
    let deadline = Instant::now() + ARCHIVE_NOW_TIMEOUT;
    loop {
        let row = p
            .client
            .query_one(
                "SELECT coalesce(last_archived_wal, ''), coalesce(last_failed_wal, '') \
                 FROM pg_stat_archiver",
                &[],
            )
            .await
            .with_context(|| format!("read pg_stat_archiver on {}", p.member.name))?;
        let (archived, failed): (String, String) = (row.get(0), row.get(1));
        if archived.len() >= 24 && archived[..24] >= *segment.as_str() {
            return Ok(());
        }
        if Instant::now() > deadline {
            let why = if failed.is_empty() {
                "its archiver is behind".to_string()
            } else {
                format!("its last failed push was {failed}")
            };
            bail!(
                "the primary {} did not archive {segment} within {}s ({why}; see its server log): \
                 restoring --latest now would miss the commits in it. Repair the archive, or \
                 restore to a --time or --lsn before it",
                p.member.name,
                ARCHIVE_NOW_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The primary's last archived segment and the LSN where it starts.
async fn last_archived(target: &Target) -> Option<(String, u64)> {
    let probed = crate::cmd::backup::probe_members(target).await.ok()?;
    let p = crate::cmd::backup::primary(&probed)?;
    let row = p
        .client
        .query_one(
            "SELECT last_archived_wal, setting::bigint FROM pg_stat_archiver, pg_settings \
             WHERE name = 'wal_segment_size'",
            &[],
        )
        .await
        .ok()?;
    let name: Option<String> = row.get(0);
    let seg_size: i64 = row.get(1);
    let wal = pgha_archive::WalName::parse(&name?).ok()?;
    let pos = wal
        .pos()
        .filter(|_| wal.kind() == pgha_archive::WalKind::Segment)?;
    let per_log = 0x1_0000_0000u64 / seg_size as u64;
    let lsn = (pos.log as u64 * per_log + pos.seg as u64) * seg_size as u64;
    Some((wal.to_string(), lsn))
}

/// The path recovery follows.
async fn timeline_path(
    archive: &Store,
    wanted: &str,
    backup: &BackupRecord,
) -> anyhow::Result<Vec<TimelineSpan>> {
    let tli = match wanted {
        "latest" => archive.newest_timeline().await?.max(backup.timeline),
        "current" => backup.timeline,
        n => n
            .parse::<u32>()
            .map_err(|_| anyhow!("--timeline {n:?}: give a number, `latest` or `current`"))?,
    };
    let path = archive
        .timeline_path(tli)
        .await
        .with_context(|| format!("read the history of timeline {tli} from the archive"))?;
    let start = backup.start_lsn_u64().unwrap_or(0);
    let on_path = path
        .iter()
        .any(|s| s.tli == backup.timeline && s.end.is_none_or(|e| start < e));
    if !on_path {
        bail!(
            "timeline {tli} does not descend from backup {}'s timeline {} at {}; \
             choose another --timeline or --backup",
            backup.id,
            backup.timeline,
            backup.start_lsn
        );
    }
    Ok(path)
}

/// Create the data directory (or accept an empty one). True if created.
fn prepare_dir(dir: &Path, user: &ServiceUser) -> anyhow::Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "{} is not empty; restore into a new or empty directory",
                    dir.display()
                );
            }
            user.make_dir(dir, 0o700)?;
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            user.make_dir(dir, 0o700)?;
            Ok(true)
        }
        Err(e) => Err(e).with_context(|| format!("inspect {}", dir.display())),
    }
}

/// A restore decided on: what [`restore_into`] works with.
struct Job<'a> {
    req: &'a Request,
    target: &'a Target,
    archive: &'a Store,
    bins: &'a PgBinaries,
    user: &'a ServiceUser,
    backup: &'a BackupRecord,
    /// The timeline recovery follows.
    tli: u32,
    /// The first unusable WAL segment after the backup, if any.
    problem: Option<&'a ChainProblem>,
}

async fn restore_into(job: &Job<'_>, before_start: BeforeStart<'_>) -> anyhow::Result<Restored> {
    let Job {
        req,
        target,
        archive,
        bins,
        user,
        backup,
        tli,
        problem,
    } = *job;
    let point = &req.point;
    let data =
        std::fs::canonicalize(&req.to).with_context(|| format!("resolve {}", req.to.display()))?;
    let scratch = data
        .parent()
        .unwrap_or(Path::new("/"))
        .join(format!(".pgha-restore-{}.download", backup.id));
    let _ = std::fs::remove_file(&scratch);
    if let Store::S3(s3) = archive {
        crate::outln!("downloading backup {} from {}", backup.id, s3.url());
    }
    let payload = archive
        .payload_file(&backup.id, &scratch)
        .await
        .with_context(|| format!("fetch backup {}", backup.id))?;
    crate::outln!("unpacking backup {} into {}", backup.id, data.display());
    let unpacked = {
        let payload = payload.clone();
        let id = backup.id.clone();
        let data = data.clone();
        let user = user.clone();
        tokio::task::spawn_blocking(move || unpack(&payload, &id, &data, &user))
            .await
            .context("unpack task")?
    };
    let _ = std::fs::remove_file(&scratch);
    unpacked?;
    crate::outln!("verifying the restored files with pg_verifybackup");
    if let Err(why) = crate::cmd::backup::verify_backup(bins, user, &data).await? {
        bail!(
            "the restored copy of backup {} fails pg_verifybackup: {why}",
            backup.id
        );
    }
    // RESTORE_LOG: a backup of a cluster made by `pgha up --from-backup`
    // may carry the log of that restore; this one starts its own.
    for f in [
        "standby.signal",
        "recovery.signal",
        "postmaster.pid",
        RESTORE_LOG,
    ] {
        let _ = std::fs::remove_file(data.join(f));
    }
    let pgha = std::env::current_exe().context("locate the pgha binary")?;
    let mut restore_command = format!(
        "{} wal-fetch --archive {}",
        sh_quote(&pgha.display().to_string()),
        sh_quote(&target.config.archive_location())
    );
    if let Some(f) = &target.config.archive_s3_config {
        restore_command.push_str(&format!(
            " --s3-config {}",
            sh_quote(&f.display().to_string())
        ));
    }
    restore_command.push_str(" %f %p");
    let mut conf = recovery_conf(point, tli, &restore_command, req.port, &backup.id);
    if let Access::PrivateSocket { dir, .. } = &req.access {
        // hot_standby off: this mode restores under another cluster's
        // settings (`pgha up --from-backup`), and a hot standby refuses to
        // recover when max_connections, max_wal_senders and the like are
        // below the source's ("recovery aborted because of insufficient
        // parameter settings"). The server then answers only once promoted.
        conf.push_str(&format!(
            "listen_addresses = ''\nunix_socket_directories = {}\nhot_standby = off\n",
            pgha_postgres::conf::quote(&dir.display().to_string())
        ));
    }
    let auto = data.join("postgresql.auto.conf");
    let mut text = std::fs::read_to_string(&auto).unwrap_or_default();
    text.push_str(&conf);
    user.write_file(&auto, text.as_bytes(), 0o600)?;
    user.write_file(&data.join("recovery.signal"), b"", 0o600)?;
    before_start(&data)?;
    let listening = match &req.access {
        Access::Password { .. } => format!("on port {}", req.port),
        Access::PrivateSocket { dir, .. } => {
            // Last, over whatever before_start wrote: the socket is the
            // only way in while it recovers.
            user.write_file(
                &data.join("pg_hba.conf"),
                b"# Written by `pgha restore` for the recovery only.\nlocal all all trust\n",
                0o600,
            )?;
            format!("on a private socket in {}", dir.display())
        }
    };

    let log = data.join(RESTORE_LOG);
    crate::outln!("starting PostgreSQL {listening} (log: {})", log.display());
    let status = user
        .command(bins.path("pg_ctl"))
        .arg("-D")
        .arg(&data)
        .arg("-l")
        .arg(&log)
        .args(["-W", "start"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .await
        .context("run pg_ctl start")?;
    if !status.status.success() {
        bail!(
            "pg_ctl start failed: {}",
            String::from_utf8_lossy(&status.stderr).trim()
        );
    }
    let outcome = wait_recovery(&data, &req.access, req.port, req.timeout).await;
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    match outcome {
        Ok((lsn, timeline)) => {
            crate::outln!(
                "recovery reached {} and the server promoted",
                point.describe()
            );
            for line in recovery_lines(&log_text) {
                crate::outln!("  {line}");
            }
            Ok(Restored {
                data,
                lsn,
                timeline,
                backup_id: backup.id.clone(),
            })
        }
        Err(why) => {
            // A server still recovering would promote later on its own.
            let _ = user
                .command(bins.path("pg_ctl"))
                .arg("-D")
                .arg(&data)
                .args(["-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await;
            let fatal: Vec<&str> = log_text
                .lines()
                .filter(|l| l.contains("FATAL") || l.contains("PANIC") || l.contains("pgha: error"))
                // Our own connection attempts while it starts.
                .filter(|l| !l.contains("the database system is"))
                .collect();
            let hole = match problem {
                Some(p) => format!(" The archive's first unusable WAL after the backup: {p}."),
                None => String::new(),
            };
            bail!(
                "the restore did not reach {}: {why}.{hole} PostgreSQL said: {}. \
                 Nothing was promoted; the data directory {} is left for inspection (remove it before trying again)",
                point.describe(),
                if fatal.is_empty() { "nothing fatal".to_string() } else { fatal.join(" | ") },
                data.display()
            )
        }
    }
}

/// `postgresql.auto.conf` without the settings [`recovery_conf`] added
/// (everything from [`SETTINGS_MARKER`] on), for a restored data directory
/// that is to serve as something else than the restored copy.
pub fn without_recovery_settings(auto_conf: &str) -> &str {
    match auto_conf.find(&format!("\n{SETTINGS_MARKER}")) {
        Some(at) => &auto_conf[..at],
        None => auto_conf,
    }
}

/// Quote `s` for /bin/sh with single quotes.
fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-=:%+,".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Decode the backup (checksum checked) into `tar -x` run as the service user.
fn unpack(payload: &Path, id: &str, data: &Path, user: &ServiceUser) -> anyhow::Result<()> {
    let mut cmd = std::process::Command::new("tar");
    cmd.arg("-C")
        .arg(data)
        .args(["-xf", "-", "--no-same-owner"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if user.switch {
        cmd.uid(user.uid).gid(user.gid);
    }
    let mut child = cmd.spawn().context("run tar (install GNU tar)")?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("tar has no stdin"))?;
    let read = pgha_archive::backups::read_payload_file(payload, &mut stdin);
    let _ = stdin.flush();
    drop(stdin);
    let out = child.wait_with_output().context("wait for tar")?;
    read.with_context(|| format!("read backup {id}"))?;
    if !out.status.success() {
        bail!(
            "tar -x into {} failed: {}",
            data.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Wait until the server has promoted (Ok: its LSN and timeline) or died.
async fn wait_recovery(
    data: &Path,
    access: &Access,
    port: u16,
    timeout: Duration,
) -> Result<(String, i32), String> {
    let (host, superuser, password) = access.login();
    let deadline = Instant::now() + timeout;
    let mut seen_pid = false;
    let started = Instant::now();
    loop {
        if Instant::now() > deadline {
            return Err(format!(
                "still recovering after {}",
                humantime::format_duration(timeout)
            ));
        }
        let pid = std::fs::read_to_string(data.join("postmaster.pid"))
            .ok()
            .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<i32>().ok()));
        match pid {
            Some(p) if pgha_postgres::process_alive(p) => seen_pid = true,
            _ if seen_pid
                || started.elapsed() > Duration::from_secs(30)
                || log_says_fatal(data) =>
            {
                return Err("the server stopped during recovery".into());
            }
            _ => {}
        }
        let connected =
            pgha_postgres::probe::connect(&host, port, superuser, password, Duration::from_secs(2))
                .await;
        if let Err(e) = &connected {
            // Waiting would not help: the login itself is wrong.
            let why = format!("{e:#}");
            if why.contains("does not exist") || why.contains("authentication failed") {
                return Err(format!("cannot log in to the restored server: {why}"));
            }
        }
        if let Ok(c) = connected {
            if let Ok(row) = c
                .query_one(
                    "SELECT pg_is_in_recovery(), \
                     CASE WHEN pg_is_in_recovery() THEN '' ELSE pg_current_wal_lsn()::text END, \
                     (SELECT timeline_id FROM pg_control_checkpoint())",
                    &[],
                )
                .await
            {
                let in_recovery: bool = row.get(0);
                if !in_recovery {
                    // The checkpoint's timeline lags a promotion; ask the WAL.
                    let tli: i32 = c
                        .query_one(
                            "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int",
                            &[],
                        )
                        .await
                        .map(|r| r.get(0))
                        .unwrap_or(row.get(2));
                    return Ok((row.get(1), tli));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether the server log reports a fatal error of the server itself (our
/// connection attempts while it starts are refused with FATAL too).
fn log_says_fatal(data: &Path) -> bool {
    std::fs::read_to_string(data.join(RESTORE_LOG)).is_ok_and(|log| {
        log.lines().any(|l| {
            (l.contains("FATAL:") || l.contains("PANIC:")) && !l.contains("the database system is")
        })
    })
}

/// The lines of the server log that say where recovery stopped.
pub fn recovery_lines(log: &str) -> Vec<String> {
    const KEYS: [&str; 6] = [
        "recovery stopping",
        "redo done at",
        "last completed transaction",
        "selected new timeline ID",
        "archive recovery complete",
        "consistent recovery state reached",
    ];
    log.lines()
        .filter(|l| KEYS.iter().any(|k| l.contains(k)))
        .map(|l| l.trim().to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, end_lsn: &str, end_time: &str) -> BackupRecord {
        BackupRecord {
            id: id.into(),
            state: "verified".into(),
            source: "node2".into(),
            source_role: "standby".into(),
            timeline: 1,
            start_lsn: "0/2000028".into(),
            end_lsn: end_lsn.into(),
            start_time: end_time.into(),
            end_time: end_time.into(),
            wal_segment_size: 16 << 20,
            original_bytes: 1,
            stored_bytes: 1,
            sha256: String::new(),
            pg_version: "15".into(),
        }
    }

    #[test]
    fn the_newest_backup_that_ends_before_the_target() {
        let b = vec![
            rec("a", "0/3000000", "2026-12-07T10:00:00.000Z"),
            rec("b", "0/5000000", "2026-12-07T11:00:00.000Z"),
        ];
        let at =
            |t: &str| RecoveryTarget::Time(humantime::parse_rfc3339_weak(t).unwrap(), t.into());
        assert_eq!(
            choose_backup(&b, &at("2026-12-07T10:30:00"), None)
                .unwrap()
                .id,
            "a"
        );
        assert_eq!(
            choose_backup(&b, &at("2026-12-07T12:00:00"), None)
                .unwrap()
                .id,
            "b"
        );
        let err = choose_backup(&b, &at("2026-12-07T09:00:00"), None).unwrap_err();
        assert!(err.to_string().contains("no backup ends before"), "{err}");
        let lsn = RecoveryTarget::Lsn(0x400_0000, "0/4000000".into());
        assert_eq!(choose_backup(&b, &lsn, Some(0x400_0000)).unwrap().id, "a");
        assert_eq!(
            choose_backup(&b, &RecoveryTarget::Latest, None).unwrap().id,
            "b"
        );
        assert!(choose_backup(&[], &RecoveryTarget::Latest, None).is_err());
    }

    #[test]
    fn only_a_target_promotes_on_reaching_it() {
        let latest = recovery_conf(&RecoveryTarget::Latest, 2, "x %f %p", 5999, "id");
        assert!(latest.contains("recovery_target_timeline = '2'"));
        assert!(latest.contains("archive_mode = off"));
        assert!(!latest.contains("recovery_target_action"));
        let name = recovery_conf(
            &RecoveryTarget::Name("before_drop".into()),
            1,
            "x",
            5999,
            "id",
        );
        assert!(name.contains("recovery_target_name = 'before_drop'"));
        assert!(name.contains("recovery_target_action = 'promote'"));
        let original = "# Do not edit this file manually!\nwork_mem = '8MB'\n";
        assert_eq!(
            without_recovery_settings(&format!("{original}{name}")),
            original
        );
        assert_eq!(without_recovery_settings(original), original);
        let at = parse_utc("2026-12-07T12:57:17.298738Z").unwrap();
        assert_eq!(postgres_time(at), "2026-12-07 12:57:17.298738+00");
        assert_eq!(parse_utc("2026-12-07 12:57:17.298738+00").unwrap(), at);
    }
}
