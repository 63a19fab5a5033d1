//! `pgha up --from-backup` (a dev cluster) and `pgha bootstrap-from-backup`
//! (a cluster on several hosts): a new HA cluster whose data comes from a
//! backup of another cluster (the source): its first member is restored
//! from the source's archive to the chosen point (as `pgha restore` does),
//! then handed to its agent as the bootstrapped primary; the other members
//! clone from it as in any new cluster.
//!
//! The restored first member becomes an ordinary member of the new cluster:
//! - its pgha.conf and pg_hba.conf are the new cluster's, written before the
//!   restore starts (the backup's name the source's certificates and hosts);
//! - its superuser gets the new cluster's admin password (the replication
//!   and monitoring roles get theirs when the agent starts it as primary);
//! - the settings `pgha restore` added for the recovery are removed after a
//!   clean shutdown, so the agent's own configuration applies;
//! - the timeline history files of the restore are queued for archiving, so
//!   the new archive can serve a later restore of the new timeline;
//! - the new cluster's `initialize` key names the first member: its agent
//!   takes the leader key for the data it finds instead of running initdb,
//!   and no other member may bootstrap a cluster of its own.
//!
//! The source is a cluster (its directory or config file: the archive
//! location is read from it, and a live primary is asked to archive its
//! current WAL for `--latest`) or only its archive (a directory or an
//! `s3://` URL), when the cluster is gone. No password of the source is
//! needed: while it recovers the restored server listens on a Unix socket
//! in the member's private directory only, with `trust` (no TCP listener),
//! and the new cluster's pg_hba.conf is put back once it is stopped.
//!
//! Hazards: the new cluster must not share the source's archive or etcd keys
//! (a restored timeline pushed into the source's archive, or two clusters
//! electing under one leader key, would each corrupt the source); both are
//! refused.

use crate::cmd::restore::{self, Access, PointArgs, RecoveryTarget, Request};
use crate::dev::DevCluster;
use crate::target::{Target, TargetArgs};
use anyhow::{anyhow, bail, Context};
use pgha_config::ClusterConfig;
use pgha_core::SyncStandbyNames;
use pgha_dcs::{ClusterKeys, Dcs, EtcdDcs};
use pgha_postgres::seed::SeedContext;
use pgha_postgres::{probe, Instance, Secrets, StopMode};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long the restore of the first member may take.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(3600);

/// What `--from-backup` names: a cluster (its directory or config file),
/// or only its archive (a directory or an `s3://` URL) when the cluster is
/// gone.
pub enum SourceArg {
    Cluster(Box<Target>),
    Archive(String),
}

impl SourceArg {
    pub fn parse(path: &Path) -> anyhow::Result<SourceArg> {
        let text = path.display().to_string();
        if text.starts_with("s3://") {
            return Ok(SourceArg::Archive(text));
        }
        if path.join(crate::dev::CONFIG_FILE).is_file() {
            let args = TargetArgs {
                dir: path.to_path_buf(),
                config: None,
            };
            return Ok(SourceArg::Cluster(Box::new(Target::resolve(&args)?)));
        }
        if path.is_file() {
            let args = TargetArgs {
                dir: PathBuf::from("."),
                config: Some(path.to_path_buf()),
            };
            return Ok(SourceArg::Cluster(Box::new(Target::resolve(&args)?)));
        }
        if path.join(pgha_archive::backups::BACKUPS_DIR).is_dir() {
            let abs =
                std::path::absolute(path).with_context(|| format!("resolve {}", path.display()))?;
            return Ok(SourceArg::Archive(abs.display().to_string()));
        }
        // A backup id (20261207T130512Z) where the source belongs.
        let looks_like_id = text.len() == 16
            && text.as_bytes()[8] == b'T'
            && text.ends_with('Z')
            && text[..8].bytes().all(|b| b.is_ascii_digit());
        bail!(
            "--from-backup {}: not a cluster directory (holding {}), a cluster config file, an \
             archive directory (holding backups/) or an s3:// archive URL{}",
            path.display(),
            crate::dev::CONFIG_FILE,
            if looks_like_id {
                "; to choose a backup, name where it is with --from-backup and the backup with \
                 --backup ID (`pgha backup list`)"
            } else {
                ""
            }
        );
    }

    /// The cluster to restore from, as the restore code takes it. For a bare
    /// archive: the new cluster's settings (binaries, OS user, superuser
    /// name, S3 credentials) with that archive and no members (there is no
    /// primary to ask anything).
    pub fn into_target(self, new: &ClusterConfig) -> anyhow::Result<Target> {
        match self {
            SourceArg::Cluster(t) => Ok(*t),
            SourceArg::Archive(location) => {
                let mut config = new.clone();
                config.members.clear();
                if location.starts_with("s3://") {
                    config.archive_url = Some(location.clone());
                } else {
                    config.archive_url = None;
                    config.archive_dir = PathBuf::from(&location);
                }
                Target::from_config(config, PathBuf::from(location), None)
            }
        }
    }
}

/// Refuse a new cluster that would share the source's archive or etcd keys.
pub fn check_separate(new: &ClusterConfig, source: &Target) -> anyhow::Result<()> {
    let (a, b) = (new, &source.config);
    if same_archive(&a.archive_location(), &b.archive_location()) {
        bail!(
            "the new cluster's archive ({}) is the source cluster's: the restored cluster would \
             push its own timeline into it. Give the new cluster an archive of its own ([archive] \
             in its config)",
            a.archive_location()
        );
    }
    // A bare archive (no members) has no etcd keys of its own.
    let shared_etcd =
        !b.members.is_empty() && a.dcs.endpoints.iter().any(|e| b.dcs.endpoints.contains(e));
    if shared_etcd && a.dcs.namespace == b.dcs.namespace && a.name == b.name {
        bail!(
            "the new cluster would use the source cluster's etcd keys ({}/{} on {}): give it \
             another cluster name or namespace",
            a.dcs.namespace,
            a.name,
            a.dcs.endpoints.join(",")
        );
    }
    Ok(())
}

/// Whether two archive locations are one: URLs up to a trailing `/`,
/// directories after resolving links.
fn same_archive(a: &str, b: &str) -> bool {
    let norm = |l: &str| -> String {
        if l.starts_with("s3://") {
            l.trim_end_matches('/').to_string()
        } else {
            std::fs::canonicalize(l)
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| l.trim_end_matches('/').to_string())
        }
    };
    norm(a) == norm(b)
}

/// The member of a new cluster that a restore makes, and how its messages
/// talk about it.
pub struct NewMember<'a> {
    pub config: &'a ClusterConfig,
    pub inst: Instance,
    /// What starts it afterwards, for the messages (`pgha up: node1`).
    pub label: String,
    /// What to do before trying again after a failed restore.
    pub retry_hint: String,
}

impl<'a> NewMember<'a> {
    /// The first member of a dev cluster, for `pgha up --from-backup`.
    pub fn first_of(new: &'a DevCluster) -> anyhow::Result<Self> {
        let inst = new
            .instances()
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("the new cluster has no members"))?;
        Ok(NewMember {
            config: &new.config,
            label: format!("pgha up: {}", inst.name),
            inst: inst.with_tls_ca(new.config.tls_ca()),
            retry_hint: format!(
                "The new cluster directory {d} is left as it is: remove it with `pgha destroy \
                 --dir {d} --yes` before trying again",
                d = new.dir.display()
            ),
        })
    }
}

/// Restore `new`'s member from `source`'s archive and leave it shut down
/// cleanly, ready for its agent.
pub async fn restore_member(
    new: &NewMember<'_>,
    secrets: &Secrets,
    pgha_bin: &Path,
    source: &Target,
    point: &PointArgs,
) -> anyhow::Result<()> {
    let inst = &new.inst;
    let member = new
        .config
        .member(&inst.name)
        .ok_or_else(|| anyhow!("no member {} in the new cluster's config", inst.name))?;
    // Its agent will listen there: better said before the restore than after.
    super::up::ensure_free(
        &member.host,
        &[member.port],
        &format!("member {}", member.name),
        "stop what uses it, or give the member another port in the new cluster's config",
    )?;
    inst.prepare_node_dir().await?;
    // Through the member's own socket directory only (trust, no TCP), as
    // the source's superuser (for a bare archive: the new config's, which
    // must then be a role of the restored data).
    let access = Access::PrivateSocket {
        dir: inst.socket_dir(),
        user: source.config.superuser.clone(),
    };
    let request = Request {
        access,
        point: RecoveryTarget::from_args(point)?,
        backup: point.backup.clone(),
        timeline: point.timeline.clone(),
        to: inst.data_dir.clone(),
        port: member.port,
        timeout: RESTORE_TIMEOUT,
    };
    crate::outln!(
        "{}: restoring from the archive of cluster {:?} ({})",
        new.label,
        source.config.name,
        source.config.archive_location()
    );
    let seed = SeedContext {
        cluster: new.config,
        secrets,
        pgha_bin,
    };
    // The new cluster's pgha.conf and pg_hba.conf from the start: the
    // backup's name the source's certificates, hosts and archive.
    let configure = |_: &Path| -> anyhow::Result<()> {
        seed.configure(inst, None, &SyncStandbyNames::Async)
            .context("write the new cluster's configuration into the restored data directory")
    };
    let restored = match restore::restore_to(source, &request, &configure).await {
        Ok(r) => r,
        Err(e) => {
            // A server still recovering would hold the member's port.
            let _ = inst
                .stop(StopMode::Immediate, Duration::from_secs(60))
                .await;
            if inst.data_dir.join("PG_VERSION").exists() {
                let _ = configure(&inst.data_dir);
            }
            bail!("{}\n{}", crate::output::render_error(&e), new.retry_hint);
        }
    };
    let adopted = adopt(new.config, inst, secrets, source, member.port).await;
    // Stopped whatever happened: a restored server left running would hold
    // the member's port. Then the new cluster's pg_hba.conf again, in place
    // of the recovery's `trust`.
    let stopped = inst
        .stop(StopMode::Fast, Duration::from_secs(120))
        .await
        .with_context(|| format!("stop the restored server of {}", member.name));
    let locked = configure(&inst.data_dir);
    adopted?;
    stopped?;
    locked?;
    forget_recovery_settings(inst)?;
    keep_restore_log(inst)?;
    queue_history_files(inst)?;
    crate::outln!(
        "{}: restored backup {} (timeline {}, WAL at {}); its agent starts it as the new \
         cluster's primary",
        new.label,
        restored.backup_id,
        restored.timeline,
        restored.lsn
    );
    Ok(())
}

/// The restored server takes the new cluster's superuser and its password.
async fn adopt(
    new: &ClusterConfig,
    inst: &Instance,
    secrets: &Secrets,
    source: &Target,
    port: u16,
) -> anyhow::Result<()> {
    let client = probe::connect(
        &inst.socket_dir().display().to_string(),
        port,
        &source.config.superuser,
        "",
        Duration::from_secs(10),
    )
    .await
    .with_context(|| format!("connect to the restored server of {}", inst.name))?;
    let su = &new.superuser;
    let exists = client
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[su])
        .await
        .context("look up the new cluster's superuser")?
        .is_some();
    let sql = format!(
        "BEGIN;\nSET LOCAL synchronous_commit TO local;\n{} ROLE {} WITH SUPERUSER LOGIN PASSWORD {};\nCOMMIT;",
        if exists { "ALTER" } else { "CREATE" },
        probe::quote_ident(su),
        probe::quote_literal(&secrets.admin_password)
    );
    client
        .batch_execute(&sql)
        .await
        .with_context(|| format!("give the superuser {su:?} the new cluster's password"))
}

/// Remove the recovery settings `pgha restore` wrote into
/// postgresql.auto.conf: from now on the agent configures the server.
fn forget_recovery_settings(inst: &Instance) -> anyhow::Result<()> {
    let path = inst.data_dir.join("postgresql.auto.conf");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let kept = restore::without_recovery_settings(&text);
    inst.user().write_file(&path, kept.as_bytes(), 0o600)?;
    Ok(())
}

/// Move the restore's server log out of the data directory (next to the
/// member's other logs), so that base backups and clones do not carry it.
fn keep_restore_log(inst: &Instance) -> anyhow::Result<()> {
    let from = inst.data_dir.join(restore::RESTORE_LOG);
    let to = inst.node_dir().join(restore::RESTORE_LOG);
    match std::fs::rename(&from, &to) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("move {} to {}", from.display(), to.display()))
        }
        _ => Ok(()),
    }
}

/// Mark every timeline history file in pg_wal as ready for archiving: the
/// restore ran with archive_mode off, so PostgreSQL queued none, and a later
/// restore from the new archive needs the history of its timeline.
fn queue_history_files(inst: &Instance) -> anyhow::Result<()> {
    let wal = inst.data_dir.join("pg_wal");
    let status = wal.join("archive_status");
    for entry in std::fs::read_dir(&wal).with_context(|| format!("list {}", wal.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".history") || status.join(format!("{name}.done")).exists() {
            continue;
        }
        inst.user()
            .write_file(&status.join(format!("{name}.ready")), b"", 0o600)?;
    }
    Ok(())
}

/// Name `first` as the member that initialised the cluster (its data), so
/// its agent takes the leader key for that data and no other member runs
/// initdb. When the key already names another member: an error if `strict`
/// (a restored cluster must have keys of its own), else left as it is (an
/// existing cluster whose other members' data is gone).
pub async fn claim_initialize(
    dcs: &EtcdDcs,
    keys: &ClusterKeys,
    first: &str,
    strict: bool,
) -> anyhow::Result<()> {
    let key = keys.initialize();
    if dcs
        .create_if_absent(&key, first.as_bytes(), None)
        .await
        .with_context(|| format!("write {key} in etcd"))?
    {
        return Ok(());
    }
    let holder = dcs
        .get(&key)
        .await
        .with_context(|| format!("read {key} from etcd"))?
        .kv
        .map(|kv| kv.value_str().into_owned())
        .unwrap_or_default();
    if strict && holder != first {
        bail!(
            "etcd already holds a cluster initialised by {holder:?} under {key}: the restored \
             cluster needs keys of its own (another cluster name or namespace)"
        );
    }
    Ok(())
}

/// `pgha bootstrap-from-backup`: the same for a cluster on several hosts,
/// run on the host of one member (default: the first) of a new cluster
/// whose agents are not running yet.
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("target_point").multiple(false)
    .args(["latest", "time", "lsn", "name", "xid"])))]
pub struct Args {
    /// The new cluster's config file (its secrets directory must hold the
    /// new cluster's passwords: `pgha secrets init --dir SECRETS_DIR`).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The member to restore on this host (default: the first in the config).
    #[arg(long)]
    member: Option<String>,
    /// Where the backup is: the old cluster's directory or config file, its
    /// archive directory, or an s3:// URL.
    #[arg(long, value_name = "SOURCE")]
    from_backup: PathBuf,
    #[command(flatten)]
    point: PointArgs,
}

pub fn run(args: Args) -> anyhow::Result<std::process::ExitCode> {
    let rt = tokio::runtime::Runtime::new().context("start the async runtime")?;
    rt.block_on(bootstrap(args))
}

async fn bootstrap(args: Args) -> anyhow::Result<std::process::ExitCode> {
    let target = Target::resolve(&TargetArgs {
        dir: PathBuf::from("."),
        config: Some(args.config.clone()),
    })?;
    let config = &target.config;
    let member = match &args.member {
        Some(name) => target.member(name)?,
        None => config
            .members
            .first()
            .ok_or_else(|| anyhow!("{} names no members", args.config.display()))?,
    };
    let bins = pgha_postgres::PgBinaries::locate(config.bin_dir.as_deref())?;
    let user = pgha_postgres::ServiceUser::resolve(&config.os_user)?;
    let inst = Instance::new(member, bins, user).with_tls_ca(config.tls_ca());
    if inst.is_initialized() {
        bail!(
            "member {} already has a data directory ({}): bootstrap-from-backup makes a new \
             member; move that directory away first if it is not needed",
            member.name,
            member.data_dir.display()
        );
    }
    let source = SourceArg::parse(&args.from_backup)?.into_target(config)?;
    check_separate(config, &source)?;
    let dcs = target.dcs()?;
    let key = target.keys.initialize();
    let holder = dcs
        .get(&key)
        .await
        .with_context(|| format!("read {key} from the new cluster's etcd"))?
        .kv
        .map(|kv| kv.value_str().into_owned());
    if let Some(holder) = holder {
        bail!(
            "cluster {:?} is already initialised in etcd (by {holder}): bootstrap-from-backup \
             makes a new cluster; use another cluster name or namespace, or remove the old \
             cluster's keys",
            config.name
        );
    }
    let secrets = Secrets::load(&config.secrets_dir).with_context(|| {
        format!(
            "read the new cluster's passwords (run `pgha secrets init --dir {}` first)",
            config.secrets_dir.display()
        )
    })?;
    let pgha_bin = std::env::current_exe().context("locate the pgha binary")?;
    let new = NewMember {
        config,
        inst,
        label: format!("pgha bootstrap-from-backup: {}", member.name),
        retry_hint: format!(
            "Remove the data directory {} before trying again",
            member.data_dir.display()
        ),
    };
    restore_member(&new, &secrets, &pgha_bin, &source, &args.point).await?;
    claim_initialize(&dcs, &target.keys, &member.name, true).await?;
    crate::outln!(
        "{}: cluster {:?} is initialised by {} in etcd. Start the agents (`pgha agent --config \
         FILE --member NAME` on each host): {} starts as the primary, the others clone from it. \
         The new archive holds no backup yet: take one with `pgha backup --config FILE`",
        new.label,
        config.name,
        member.name,
        member.name
    );
    Ok(std::process::ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::same_archive;

    #[test]
    fn one_archive_however_it_is_written() {
        assert!(same_archive("s3://b/c1", "s3://b/c1/"));
        assert!(!same_archive("s3://b/c1", "s3://b/c2"));
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("archive");
        std::fs::create_dir(&real).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let (r, l) = (real.display().to_string(), link.display().to_string());
        assert!(same_archive(&r, &l));
        assert!(same_archive(&format!("{r}/"), &r));
        assert!(!same_archive(&r, &dir.path().display().to_string()));
    }
}
