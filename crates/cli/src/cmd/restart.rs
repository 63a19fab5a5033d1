//! `pgha restart NODE`: ask NODE's agent (REST API, `POST /restart`, bearer
//! token from `<secrets_dir>/api.token`) to restart its PostgreSQL in its
//! current role, and print the answer.
//!
//! Also holds [`post_control`], which `pgha reinit` shares.
//!
//! Exit codes: 0 done; 1 refused, failed, or the agent is unreachable;
//! 3 accepted but still in progress when the agent stopped waiting.

use crate::target::{Target, TargetArgs};
use anyhow::{bail, Context};
use pgha_agent::api::client;
use std::process::ExitCode;
use std::time::Duration;

/// The agent waits up to 60 s for its loop; allow for that plus transfer.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(75);

/// Exit code for "accepted, still in progress".
pub const IN_PROGRESS: u8 = 3;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: TargetArgs,
    /// The member whose PostgreSQL to restart.
    pub node: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    post_control(&args.target, &args.node, "restart", true)
}

/// POST `/<action>` to `node`'s agent and report the answer. `done_means_done`:
/// the agent's 200 means the action is complete (restart), so say "done";
/// otherwise (reinit: the agent only took the request) the caller reports.
pub fn post_control(
    target: &TargetArgs,
    node: &str,
    action: &str,
    done_means_done: bool,
) -> anyhow::Result<ExitCode> {
    let target = Target::resolve(target)?;
    let member = target.member(node)?;
    let token = target.api_token()?;
    let url = format!("{}/{action}", member.api_url());
    let rt = tokio::runtime::Runtime::new().context("start the async runtime")?;
    let auth = format!("Bearer {token}");
    let resp = rt
        .block_on(client::request(
            "POST",
            &url,
            &[("Authorization", auth.as_str())],
            &[],
            CONTROL_TIMEOUT,
        ))
        .with_context(|| format!("ask {node}'s agent to {action}"))?;
    let body = resp.json().ok();
    let message = body
        .as_ref()
        .and_then(|b| b["error"].as_str().or(b["message"].as_str()))
        .map(str::to_string)
        .unwrap_or_else(|| resp.text());
    match resp.status {
        200 => {
            if done_means_done {
                crate::outln!("{node}: {action} done");
            }
            Ok(ExitCode::SUCCESS)
        }
        202 => {
            crate::outln!("{node}: {action} accepted, still in progress: {message}");
            Ok(ExitCode::from(IN_PROGRESS))
        }
        401 => bail!(
            "{node}'s agent refused the API token (is {} current?)",
            target
                .config
                .secrets_dir
                .join(crate::target::API_TOKEN_FILE)
                .display()
        ),
        code => bail!("{node}: {action} failed (HTTP {code}): {message}"),
    }
}
