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
//! ```

use anyhow::{bail, Context};
use pgha_config::{ClusterConfig, ClusterFile};
use pgha_postgres::{Instance, PgBinaries, Secrets, ServiceUser};
use std::path::{Path, PathBuf};

pub const CONFIG_FILE: &str = "cluster.toml";

pub struct DevCluster {
    /// Absolute.
    pub dir: PathBuf,
    pub config: ClusterConfig,
    pub user: ServiceUser,
    pub bins: PgBinaries,
}

impl DevCluster {
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
        let config = pgha_config::load(&dir.join(CONFIG_FILE))?;
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
            ServiceUser::resolve(&config.os_user)?;
            PgBinaries::locate(config.bin_dir.as_deref())?;
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
            std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
        } else if config_file.is_some() {
            tracing::warn!(
                "{} already holds a cluster; --config is ignored",
                dir.display()
            );
        }
        let cluster = Self::open(dir)?;
        cluster.user.give(&cluster.dir)?;
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
