//! `pgha etcd-auth --config FILE` (or `--dir DIR`): turn on etcd
//! authentication for the cluster. `pgha up` does the same for the etcd it
//! starts; the Docker environment runs it as a one-shot service; on other
//! deployments an operator runs it once against the cluster's etcd (or sets
//! up users the same way with etcdctl, docs/dcs.md).
//!
//! Needs `[dcs] username` and `password_file` in the config. Creates, when
//! missing, the cluster user's password (`password_file`) and etcd's root
//! password (`<secrets_dir>/etcd-root.password`), mode 0600, owned by the
//! cluster's OS user; then creates etcd user `root`, a role named after the
//! cluster's user with readwrite on the cluster's key prefix only, that
//! user, and enables authentication (see `pgha_dcs::etcd::auth`). Safe to
//! run again: it converges and says what it found.

use crate::target::{Target, TargetArgs};
use anyhow::{bail, Context};
use pgha_config::{ClusterConfig, ETCD_ROOT_PASSWORD_FILE};
use pgha_dcs::etcd::auth::{self, AuthOutcome, AuthPlan};
use pgha_dcs::ClusterKeys;
use pgha_postgres::ServiceUser;
use rand::distributions::Alphanumeric;
use rand::Rng;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: TargetArgs,
    /// How long to wait for etcd to answer (it may still be starting).
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let target = Target::resolve(&args.target)?;
    let user = ServiceUser::resolve(&target.config.os_user)?;
    let rt = tokio::runtime::Runtime::new().context("start the async runtime")?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let outcome = rt.block_on(ensure(&target.config, &user, deadline))?;
    let what = match outcome {
        AuthOutcome::Enabled => "enabled",
        AuthOutcome::AlreadyEnabled => "already enabled (users and role checked)",
    };
    crate::outln!(
        "etcd authentication {what} on {}: user {:?} may read and write {} only; root's password in {}",
        target.config.dcs.endpoints.join(","),
        target.config.dcs.username.as_deref().unwrap_or_default(),
        prefix(&target.config)?,
        root_password_file(&target.config).display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The `pgha up` hook, after it started etcd: for a config that names an
/// etcd user, authentication on in that etcd (when `up` runs it, `ours`);
/// without one, a warning that any local user can steer the cluster.
pub async fn for_dev_etcd(
    config: &ClusterConfig,
    user: &ServiceUser,
    ours: bool,
    deadline: Instant,
) -> anyhow::Result<()> {
    if config.dcs.username.is_none() {
        tracing::warn!(
            "etcd runs without authentication: anyone who reaches {} can steer the cluster \
             (new dev clusters get it; docs/security.md says how to turn it on)",
            config.dcs.endpoints.join(",")
        );
        return Ok(());
    }
    if ours {
        ensure(config, user, deadline).await?;
    }
    Ok(())
}

/// Generate the missing passwords and set up etcd (see the module doc),
/// retrying while etcd is unavailable until `deadline`.
pub async fn ensure(
    config: &ClusterConfig,
    user: &ServiceUser,
    deadline: Instant,
) -> anyhow::Result<AuthOutcome> {
    let dcs = &config.dcs;
    let Some(username) = &dcs.username else {
        bail!(
            "the config names no etcd user: set [dcs] username = \"pgha\" and \
             password_file = \"secrets/etcd.password\" (docs/dcs.md)"
        );
    };
    let password = match (&dcs.password, &dcs.password_file) {
        (Some(p), _) => p.clone(),
        (None, Some(path)) => read_or_generate(path, user)?,
        (None, None) => bail!("[dcs] username needs password_file (docs/dcs.md)"),
    };
    let root_password = read_or_generate(&root_password_file(config), user)?;
    let prefix = prefix(config)?;
    let plan = AuthPlan {
        endpoints: &dcs.endpoints,
        timeout: dcs.request_timeout.max(Duration::from_secs(5)),
        root_password: &root_password,
        user: username,
        password: &password,
        prefix: &prefix,
    };
    loop {
        match auth::enable(&plan).await {
            Ok(outcome) => {
                tracing::info!(?outcome, user = %username, %prefix, "etcd authentication");
                return Ok(outcome);
            }
            Err(e) if e.is_unavailable() && Instant::now() < deadline => {
                tracing::debug!(error = %format!("{e:#}"), "etcd not ready for the auth setup");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("turn on authentication in etcd {}", dcs.endpoints.join(","))
                })
            }
        }
    }
}

/// Where etcd's root password is kept: `<secrets_dir>/etcd-root.password`.
pub fn root_password_file(config: &ClusterConfig) -> PathBuf {
    config.secrets_dir.join(ETCD_ROOT_PASSWORD_FILE)
}

/// The cluster's key prefix, `<namespace>/<cluster>/`.
fn prefix(config: &ClusterConfig) -> anyhow::Result<String> {
    let keys = ClusterKeys::new(&config.dcs.namespace, &config.name)
        .map_err(|e| anyhow::anyhow!("cluster name: {e}"))?;
    Ok(keys.prefix().to_string())
}

/// The password in `path` (first line), or a new random one written there
/// (0600, owned by the cluster's OS user) when the file is missing or empty.
fn read_or_generate(path: &Path, user: &ServiceUser) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(s) => {
            let line = s.lines().next().unwrap_or("").trim();
            if !line.is_empty() {
                return Ok(line.to_string());
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => bail!(pgha_dcs::credentials::unreadable(path, &e)),
    }
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            user.make_dir(dir, 0o700)?;
        }
    }
    let pw: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect();
    user.write_file(path, format!("{pw}\n").as_bytes(), 0o600)?;
    tracing::info!(file = %path.display(), "generated an etcd password");
    Ok(pw)
}

/// The `[topology.dcs]` table of the dev proxy's config: the cluster's
/// etcd settings, credentials included (a path to the password file).
pub fn proxy_dcs_table(config: &ClusterConfig) -> anyhow::Result<String> {
    toml::to_string(&config.dcs).context("render the proxy's [topology.dcs]")
}

/// One line for `pgha up`'s summary: who etcd lets in, and where the
/// passwords are (None without etcd authentication).
pub fn summary(cluster: &crate::dev::DevCluster) -> Option<String> {
    let dcs = &cluster.config.dcs;
    let user = dcs.username.as_deref()?;
    let file = dcs.password_file.as_ref().map_or_else(
        || "in cluster.toml".to_string(),
        |p| p.display().to_string(),
    );
    Some(format!(
        "authentication on: user {user} (password {file}), root ({})",
        root_password_file(&cluster.config).display()
    ))
}
