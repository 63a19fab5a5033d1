//! `pgha failover --to NODE [--allow-data-loss] [--wait SECONDS]`: a manual
//! failover for when the primary is gone. The request goes into the
//! `/failover` key (FailoverRequest JSON); NODE's agent promotes only if the
//! promotion rule says it holds every acknowledged commit, unless
//! `--allow-data-loss`. This command waits until NODE holds the leader key.
//!
//! When it is to wait, it first checks that NODE's agent answers, and
//! refuses at once if not; `--wait 0` only submits the request.
//!
//! Exit codes: 0 NODE leads (or the request was submitted, with `--wait 0`);
//! 1 it did not happen within the wait (the request is withdrawn and the
//! agent's last decisions are printed), a live leader cleared the request
//! (use switchover), or it was refused up front.

use super::switchover::{current_leader, explain, require_agent, wait_writable};
use crate::target::{Target, TargetArgs};
use anyhow::Context;
use pgha_core::FailoverRequest;
use pgha_dcs::{Dcs, EtcdDcs};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: TargetArgs,
    /// The member to promote.
    #[arg(long, value_name = "NODE")]
    pub to: String,
    /// Promote even if NODE may miss acknowledged commits (data loss!).
    #[arg(long)]
    pub allow_data_loss: bool,
    /// Seconds to wait for NODE to lead; 0 submits and returns at once.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub wait: u64,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let target = Target::resolve(&args.target)?;
    target.member(&args.to)?;
    let rt = tokio::runtime::Runtime::new().context("start the async runtime")?;
    rt.block_on(failover(&target, args))
}

async fn failover(target: &Target, args: Args) -> anyhow::Result<ExitCode> {
    let dcs = target.dcs()?;
    let to = args.to.clone();
    let leader = current_leader(&dcs, target).await?;
    if leader.as_deref() == Some(to.as_str()) {
        crate::outln!("{to} is already the leader");
        return Ok(ExitCode::SUCCESS);
    }
    if args.wait > 0 {
        // Only NODE's agent can promote it: with no agent there, waiting
        // could only time out (and `--allow-data-loss` would not help).
        require_agent(target, &to).await?;
    }
    if let Some(l) = &leader {
        eprintln!(
            "pgha: note: {l} still holds the leader key; {to} can take over only once that \
             lease expires (for a planned change use `pgha switchover --to {to}`)"
        );
    }
    let request = FailoverRequest {
        to: to.clone(),
        allow_data_loss: args.allow_data_loss,
    };
    let key = target.keys.failover();
    let body = serde_json::to_vec(&request).context("render the request")?;
    dcs.put(&key, &body, None)
        .await
        .with_context(|| format!("write {key}"))?;
    crate::outln!(
        "failover requested: promote {to}{}",
        if args.allow_data_loss {
            " (data loss allowed)"
        } else {
            ""
        }
    );
    let wait = Duration::from_secs(args.wait);
    if wait.is_zero() {
        return Ok(ExitCode::SUCCESS);
    }
    let started = Instant::now();
    let outcome = wait_outcome(&dcs, target, &to, &key, wait).await;
    match outcome {
        Outcome::Leads => {
            let writable = wait_writable(target, &to, started + wait).await;
            crate::outln!(
                "failover done: {to} is the leader after {:.1}s{}",
                started.elapsed().as_secs_f64(),
                if writable { " (accepting writes)" } else { "" }
            );
            Ok(ExitCode::SUCCESS)
        }
        Outcome::Ignored(leader) => {
            eprintln!(
                "pgha: {leader} is alive and leading, and cleared the request: a manual failover \
                 is for a dead primary; use `pgha switchover --to {to}`"
            );
            Ok(ExitCode::FAILURE)
        }
        Outcome::TimedOut => {
            let withdrawn = dcs.delete_if_equals(&key, &body).await.unwrap_or(false);
            let now = current_leader(&dcs, target).await.ok().flatten();
            eprintln!(
                "pgha: {to} did not become the leader within {}s (leader now: {}){}",
                wait.as_secs(),
                now.as_deref().unwrap_or("none"),
                if withdrawn {
                    "; the request was withdrawn"
                } else {
                    ""
                }
            );
            explain(target, Some(&to)).await;
            if !args.allow_data_loss {
                eprintln!(
                    "pgha: if {to} was refused because it may miss acknowledged commits, \
                     --allow-data-loss overrides that (and loses them)"
                );
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

enum Outcome {
    /// `to` holds the leader key.
    Leads,
    /// The request disappeared while this (other) member kept leading: a
    /// live leader clears a failover request it will not act on.
    Ignored(String),
    TimedOut,
}

/// Poll the leader key and the request until one of the outcomes.
async fn wait_outcome(
    dcs: &EtcdDcs,
    target: &Target,
    to: &str,
    key: &str,
    wait: Duration,
) -> Outcome {
    let deadline = Instant::now() + wait;
    loop {
        let leader = current_leader(dcs, target).await.ok().flatten();
        if leader.as_deref() == Some(to) {
            return Outcome::Leads;
        }
        let pending = dcs.get(key).await.map(|g| g.kv.is_some()).ok();
        if let (Some(l), Some(false)) = (leader, pending) {
            return Outcome::Ignored(l);
        }
        if Instant::now() >= deadline {
            return Outcome::TimedOut;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
