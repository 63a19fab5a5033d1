//! Which cluster a CLI verb talks to: `--dir DIR` (a dev cluster directory
//! holding `cluster.toml`, default `pgha-data`) or `--config FILE` (a cluster
//! config file on a real host). Both give the validated config, the etcd
//! client settings, the cluster's key layout, the members' API URLs and the
//! API token.
//!
//! Hazard: nothing here connects to anything. [`Target::dcs`] builds a lazy
//! etcd client; the first call on it is the first I/O, and every call is
//! bounded by `dcs.request_timeout`.

use crate::dev::CONFIG_FILE;
use anyhow::{anyhow, bail, Context};
use pgha_config::{ClusterConfig, Member};
use pgha_dcs::{ClusterKeys, EtcdDcs};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Minimum etcd request timeout of the verbs that change the cluster.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// The file in `secrets_dir` holding the agents' REST API token.
pub const API_TOKEN_FILE: &str = "api.token";

/// The `--dir` / `--config` options every cluster verb takes.
#[derive(clap::Args, Clone, Debug)]
pub struct TargetArgs {
    /// Dev cluster directory (holds cluster.toml).
    #[arg(long, default_value = "pgha-data")]
    pub dir: PathBuf,
    /// Cluster config file on a real host; overrides --dir.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// A resolved cluster.
pub struct Target {
    pub config: ClusterConfig,
    /// The dev cluster directory, when addressed by `--dir`.
    pub dev_dir: Option<PathBuf>,
    /// Where the config came from (for messages).
    pub source: PathBuf,
    pub keys: ClusterKeys,
}

impl Target {
    /// Load the config named by `args`.
    pub fn resolve(args: &TargetArgs) -> anyhow::Result<Target> {
        let (source, dev_dir) = match &args.config {
            Some(file) => (file.clone(), None),
            None => {
                let path = args.dir.join(CONFIG_FILE);
                if let Err(e) = std::fs::metadata(&path) {
                    if e.kind() == std::io::ErrorKind::PermissionDenied {
                        bail!(pgha_dcs::credentials::unreadable(&path, &e));
                    }
                }
                if !path.is_file() {
                    bail!(
                        "no pgha cluster in {} (no {CONFIG_FILE}): create one with `pgha up --dir {}`, \
                         or name a cluster config with --config FILE",
                        args.dir.display(),
                        args.dir.display()
                    );
                }
                let dir = std::fs::canonicalize(&args.dir)
                    .with_context(|| format!("resolve {}", args.dir.display()))?;
                (dir.join(CONFIG_FILE), Some(dir))
            }
        };
        let config = crate::access::load_config(&source)?;
        Self::from_config(config, source, dev_dir)
    }

    /// A target for an already loaded config.
    pub fn from_config(
        config: ClusterConfig,
        source: PathBuf,
        dev_dir: Option<PathBuf>,
    ) -> anyhow::Result<Target> {
        let keys = ClusterKeys::new(&config.dcs.namespace, &config.name)
            .map_err(|e| anyhow!("cluster name: {e}"))?;
        Ok(Target {
            config,
            dev_dir,
            source,
            keys,
        })
    }

    /// A lazy etcd client (no I/O until the first call) whose request
    /// timeout is at least `min_timeout`: the agents need a short timeout
    /// to notice a dead etcd in time, an operator's command rather needs to
    /// get through on a loaded machine.
    pub fn dcs_with(&self, min_timeout: Duration) -> anyhow::Result<EtcdDcs> {
        let mut settings = self.config.dcs.clone();
        settings.request_timeout = settings.request_timeout.max(min_timeout);
        EtcdDcs::new(settings).map_err(|e| match e {
            // Already says what is wrong and what to do.
            pgha_dcs::DcsError::Denied(msg) => anyhow!(msg),
            other => anyhow::Error::new(other).context("configure the etcd client"),
        })
    }

    /// [`Target::dcs_with`] with [`WRITE_TIMEOUT`], for the verbs that
    /// change the cluster.
    pub fn dcs(&self) -> anyhow::Result<EtcdDcs> {
        self.dcs_with(WRITE_TIMEOUT)
    }

    /// The member called `name`, or an error listing the members.
    pub fn member(&self, name: &str) -> anyhow::Result<&Member> {
        self.config.member(name).ok_or_else(|| {
            let names: Vec<&str> = self
                .config
                .members
                .iter()
                .map(|m| m.name.as_str())
                .collect();
            anyhow!(
                "no member {name:?} in cluster {} (members: {})",
                self.config.name,
                names.join(", ")
            )
        })
    }

    /// Each member's name and agent API base URL, in config order.
    pub fn api_urls(&self) -> Vec<(String, String)> {
        self.config
            .members
            .iter()
            .map(|m| (m.name.clone(), m.api_url()))
            .collect()
    }

    /// The API token from `<secrets_dir>/api.token`.
    pub fn api_token(&self) -> anyhow::Result<String> {
        read_token(&self.config.secrets_dir)
    }
}

/// Read the API token from `dir/api.token`.
pub fn read_token(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join(API_TOKEN_FILE);
    let token = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            bail!(pgha_dcs::credentials::unreadable(&path, &e))
        }
        Err(e) => {
            return Err(e).with_context(|| format!("read the API token from {}", path.display()))
        }
    };
    let token = token.trim().to_string();
    if token.is_empty() {
        bail!("the API token file {} is empty", path.display());
    }
    Ok(token)
}
