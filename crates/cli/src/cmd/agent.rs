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
