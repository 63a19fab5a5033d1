//! `pgha agent --config FILE [--member NAME]`: run the HA agent of one
//! member in the foreground: the loop and the REST API, until SIGTERM or
//! SIGINT (then PostgreSQL is stopped and the leader key released). If the
//! loop or the API ends on its own, the agent exits non-zero: an agent that
//! cannot do its job must not look alive.

use anyhow::Context;
use pgha_agent::Agent;
use pgha_dcs::EtcdDcs;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

#[derive(clap::Args)]
pub struct Args {
    /// The cluster config file.
    #[arg(long)]
    pub config: PathBuf,
    /// Which member this agent runs (default: the file's `member` key).
    #[arg(long)]
    pub member: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the async runtime")?;
    rt.block_on(agent(args))
}

async fn agent(args: Args) -> anyhow::Result<ExitCode> {
    let cfg = pgha_config::load(&args.config)?;
    let member = args
        .member
        .or_else(|| cfg.member.clone())
        .context("no member given: pass --member NAME or set `member` in the config file")?;
    let me = cfg
        .member(&member)
        .cloned()
        .with_context(|| format!("member {member:?} is not in {}", args.config.display()))?;
    if cfg.dcs.username.is_none() {
        tracing::warn!(
            "no [dcs] username: connecting to etcd anonymously; with etcd's authentication off \
             anyone who reaches it can steer the cluster (docs/security.md)"
        );
    }
    let dcs = Arc::new(EtcdDcs::new(cfg.dcs.clone())?);
    let bin = std::env::current_exe().context("find the pgha executable")?;
    let cfg_schedule = cfg.file.backup.schedule;
    let args_config = std::fs::canonicalize(&args.config).unwrap_or(args.config.clone());
    let bin_path = bin.clone();
    let (mut agent, status) = Agent::new(cfg, &member, dcs, bin)?;
    let listener = tokio::net::TcpListener::bind((me.host.as_str(), me.api_port))
        .await
        .with_context(|| format!("bind the REST API on {}:{}", me.host, me.api_port))?;
    let cancel = CancellationToken::new();
    let (cmd_tx, cmd_rx) = tokio::sync::mpsc::channel(8);
    // Supervised with the agent's other tasks: if the API ends, the agent
    // says why and exits non-zero (its supervisor restarts it).
    let api = pgha_agent::api::serve_agent(
        listener,
        status,
        cmd_tx,
        agent.api_token(),
        Some(agent.failsafe()),
        agent.metrics(),
        cancel.clone().cancelled_owned(),
    );
    agent.supervise("REST API", api);
    if let Some(every) = cfg_schedule {
        agent.supervise(
            "backup schedule",
            backup_schedule(
                args_config.clone(),
                every,
                member.clone(),
                bin_path.clone(),
                cancel.clone(),
            ),
        );
    }
    let signals = tokio::spawn(wait_for_signal(cancel.clone()));
    tracing::info!(member = %member, api = %me.api_url(), "agent started");
    agent.run(cmd_rx, cancel.clone()).await;
    signals.abort();
    let failed_early = !cancel.is_cancelled();
    cancel.cancel();
    Ok(if failed_early {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `[backup] schedule`: the leader's agent runs `pgha backup` when the
/// newest backup is older than the schedule. `pgha backup` takes the
/// cluster-wide lock in etcd, so at most one runs at a time, whoever
/// started it. Failures are logged and tried again at the next check.
async fn backup_schedule(
    config: PathBuf,
    every: Duration,
    member: String,
    bin: PathBuf,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let check = (every / 4).clamp(Duration::from_secs(10), Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep(check) => {}
        }
        if let Err(e) = schedule_once(&config, every, &member, &bin).await {
            tracing::warn!("backup schedule: {e:#}");
        }
    }
}

async fn schedule_once(
    config: &std::path::Path,
    every: Duration,
    member: &str,
    bin: &std::path::Path,
) -> anyhow::Result<()> {
    use pgha_dcs::Dcs;
    let target = crate::target::Target::resolve(&crate::target::TargetArgs {
        dir: PathBuf::from("pgha-data"),
        config: Some(config.to_path_buf()),
    })?;
    let leader = target
        .dcs_with(Duration::from_secs(2))?
        .get(&target.keys.leader())
        .await?
        .kv
        .map(|kv| kv.value_str().into_owned());
    if leader.as_deref() != Some(member) {
        return Ok(());
    }
    let newest = crate::cmd::backup::store_of(&target)?
        .backups()
        .await?
        .last()
        .and_then(|b| crate::cmd::restore::parse_utc(&b.end_time).ok());
    if !backup_due(newest, every, SystemTime::now()) {
        return Ok(());
    }
    tracing::info!(
        "backup schedule: no backup in the last {}: running pgha backup",
        humantime::format_duration(every)
    );
    let status = tokio::process::Command::new(bin)
        .arg("backup")
        .arg("--config")
        .arg(config)
        .stdin(std::process::Stdio::null())
        .status()
        .await
        .context("run pgha backup")?;
    if !status.success() {
        anyhow::bail!("pgha backup failed ({status}); see its output above");
    }
    Ok(())
}

/// A backup is due when there is none, or the newest ended `every` ago.
pub fn backup_due(newest_end: Option<SystemTime>, every: Duration, now: SystemTime) -> bool {
    match newest_end {
        None => true,
        Some(end) => now.duration_since(end).is_ok_and(|age| age >= every),
    }
}

async fn wait_for_signal(cancel: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("signal received: shutting down");
    cancel.cancel();
}

#[cfg(test)]
mod tests {
    use super::backup_due;
    use std::time::{Duration, SystemTime};

    #[test]
    fn a_backup_is_due_when_none_is_recent() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let hour = Duration::from_secs(3600);
        assert!(backup_due(None, hour, now));
        assert!(backup_due(Some(now - 2 * hour), hour, now));
        assert!(backup_due(Some(now - hour), hour, now));
        assert!(!backup_due(Some(now - hour / 2), hour, now));
        // A backup "from the future" (clock skew) is not overdue.
        assert!(!backup_due(Some(now + hour), hour, now));
    }
}
