//! The dev cluster's directory: where its config, secrets, archive and nodes
//! live, and how to open it. `pgha up` creates it the first time and reuses
//! it afterwards; it never re-initialises a cluster that exists.
//!
//! ```text
//! <dir>/cluster.toml     the cluster config (generated, or copied from --config)
//! <dir>/secrets/         generated passwords and the libpq passfile (0700)
//! <dir>/archive/         the shared WAL archive
//! <dir>/<member>/data    each member's data directory
//! <dir>/<member>/postgresql.log
//! <dir>/up.lock          held by a running `pgha up` (its PID inside)
//! ```

use anyhow::{bail, Context};
use pgha_config::{ClusterConfig, ClusterFile};
use pgha_postgres::{Instance, PgBinaries, Secrets, ServiceUser};
use std::path::{Path, PathBuf};

pub const CONFIG_FILE: &str = "cluster.toml";
/// The file `pgha up` locks for its whole run.
pub const LOCK_FILE: &str = "up.lock";

/// Held by `pgha up` for its whole run, so that a second `up` on the same
/// directory is refused at once instead of racing the first (two `up` on a
/// new directory both wrote the config and the secrets and then failed
/// with an opaque `db error`). An advisory lock (flock) on
/// `<dir>/up.lock`: the kernel drops it when the process ends, however it
/// ends, so a crashed `up` leaves no stale lock.
pub struct DirLock {
    _file: std::fs::File,
    dir: PathBuf,
    /// This `up` created the directory.
    created: bool,
}

impl DirLock {
    /// Lock `dir`, creating it when missing.
    pub fn take(dir: &Path) -> anyhow::Result<DirLock> {
        use std::io::Write;
        let created = !dir.exists();
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let path = dir.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                bail!(
                    "the cluster directory {} is in use by another `pgha up` (pid {}): \
                     wait for it to finish",
                    dir.display(),
                    holder.trim()
                );
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("lock {}", path.display()))
            }
        }
        file.set_len(0)
            .and_then(|()| write!(file, "{}", std::process::id()))
            .with_context(|| format!("write {}", path.display()))?;
        Ok(DirLock {
            _file: file,
            dir: dir.to_path_buf(),
            created,
        })
    }

    /// After a refused config: remove the directory if this `up` created it
    /// and no cluster was adopted, so a bad config leaves nothing behind.
    pub fn discard_if_unused(self) {
        if self.created && !self.dir.join(CONFIG_FILE).exists() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// After a refusal before anything was started in a directory this `up`
    /// created: remove it, config included, so the same command can be
    /// given again once corrected.
    pub fn discard_if_created(self) {
        if self.created {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub struct DevCluster {
    /// Absolute.
    pub dir: PathBuf,
    pub config: ClusterConfig,
    pub user: ServiceUser,
    pub bins: PgBinaries,
}

impl DevCluster {
    /// The members' names, in config order.
    pub fn member_names(&self) -> Vec<String> {
        self.config.members.iter().map(|m| m.name.clone()).collect()
    }

    /// Open the cluster in `dir`; fails when there is none.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join(CONFIG_FILE);
        if !path.is_file() {
            bail!(
                "no pgha cluster in {} (no {CONFIG_FILE}): create one with `pgha up --dir {}`",
                dir.display(),
                dir.display()
            );
        }
        let dir =
            std::fs::canonicalize(dir).with_context(|| format!("resolve {}", dir.display()))?;
        let config = crate::access::load_config(&dir.join(CONFIG_FILE))?;
        let user = ServiceUser::resolve(&config.os_user)?;
        let bins = PgBinaries::locate(config.bin_dir.as_deref())?;
        Ok(DevCluster {
            dir,
            config,
            user,
            bins,
        })
    }

    /// Open the cluster in `dir`, writing its config first when it has none:
    /// a copy of `config_file`, or the dev defaults.
    pub fn create_or_open(
        dir: &Path,
        config_file: Option<&Path>,
        base_port: u16,
        members: usize,
    ) -> anyhow::Result<Self> {
        let path = dir.join(CONFIG_FILE);
        if !path.is_file() {
            let text = match config_file {
                Some(src) => std::fs::read_to_string(src)
                    .with_context(|| format!("read {}", src.display()))?,
                None => {
                    if members == 0 || members > 9 {
                        bail!("--members {members}: choose between 1 and 9");
                    }
                    toml::to_string(&ClusterFile::dev(members, base_port))
                        .context("render the dev config")?
                }
            };
            // Check everything before adopting the file, so that a bad config
            // leaves nothing behind. Relative paths are taken relative to
            // the cluster directory, where the file is kept.
            let abs_dir =
                std::path::absolute(dir).with_context(|| format!("resolve {}", dir.display()))?;
            let config = pgha_config::parse(&text, &abs_dir).map_err(|e| match config_file {
                Some(src) => anyhow::anyhow!("{}: {e}", src.display()),
                None => e.into(),
            })?;
            let user = ServiceUser::resolve(&config.os_user)?;
            PgBinaries::locate(config.bin_dir.as_deref())?;
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
            // It names the secret files: owner and group only.
            user.write_file(&path, text.as_bytes(), crate::access::CONFIG_MODE)?;
        } else if config_file.is_some() {
            tracing::warn!(
                "{} already holds a cluster; --config is ignored",
                dir.display()
            );
        }
        let cluster = Self::open(dir)?;
        cluster.user.give(&cluster.dir)?;
        let config = cluster.dir.join(CONFIG_FILE);
        if let Err(e) = crate::access::restrict(&config, crate::access::CONFIG_MODE) {
            tracing::warn!("{e:#}: other local users may read it");
        }
        Ok(cluster)
    }

    pub fn instances(&self) -> Vec<Instance> {
        self.config
            .members
            .iter()
            .map(|m| Instance::new(m, self.bins.clone(), self.user.clone()))
            .collect()
    }

    pub fn secrets(&self) -> anyhow::Result<Secrets> {
        Ok(Secrets::ensure(
            &self.config.secrets_dir,
            &self.user,
            &self.config.superuser,
            &self.config.replication_user,
        )?)
    }

    /// The pgha binary PostgreSQL runs for archiving: this executable when the
    /// service user can run it, else a copy inside the cluster directory.
    pub async fn pgha_bin(&self) -> anyhow::Result<PathBuf> {
        let exe = std::env::current_exe().context("find the pgha executable")?;
        if self.user.check_reachable(&exe).await.is_ok() {
            return Ok(exe);
        }
        let bin_dir = self.dir.join("bin");
        self.user.make_dir(&bin_dir, 0o755)?;
        let copy = bin_dir.join("pgha");
        std::fs::copy(&exe, &copy)
            .with_context(|| format!("copy {} to {}", exe.display(), copy.display()))?;
        Ok(copy)
    }
}
