//! `pgha switchover [--to NODE] [--wait SECONDS]`: ask the leader to hand
//! over. The request goes into the `/switchover` key (SwitchoverRequest
//! JSON, `from` = the current leader); the leader makes sure the target
//! holds every acknowledged commit, shuts down, and the target takes the
//! lease. This command then waits until the leader key names another member
//! (the target, if one was given).
//!
//! Before writing an immediate request it runs a CHECKPOINT on the leader
//! (best effort, superuser password from the secrets directory): the
//! proxies pause as soon as the request appears, and the leader's clean
//! shutdown then has little left to write, which keeps that pause short.
//!
//! With `--at TIME` the request is only submitted: the leader acts when the
//! time comes (the request shows in `pgha status` until then).
//!
//! Refused up front, without waiting: no leader, `--to` the leader, a
//! paused cluster (the leader does not act on requests in maintenance mode).
//!
//! Exit codes: 0 done (or submitted, with `--wait 0` or `--at`); 1 not done within
//! the wait (the request is withdrawn), another member than `--to` took
//! over, or refused up front.
//!
//! Also holds the waiting and explaining helpers `failover` shares.
//!
//! Hazard: withdrawing on timeout uses delete-if-equals, so a request that
//! the leader already took (and rewrote or cleared) is left alone.

use crate::target::{Target, TargetArgs};
use anyhow::{bail, Context};
use pgha_agent::api::client;
use pgha_core::SwitchoverRequest;
use pgha_dcs::{Dcs, EtcdDcs};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// How often the leader key is polled while waiting.
const POLL: Duration = Duration::from_millis(200);
/// How long an agent has to answer before it counts as not running.
const AGENT_CHECK: Duration = Duration::from_secs(3);
/// Bound on the CHECKPOINT asked of the leader before the request.
const CHECKPOINT_WAIT: Duration = Duration::from_secs(30);

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: TargetArgs,
    /// The member to hand over to (default: the best synchronous standby).
    #[arg(long, value_name = "NODE")]
    pub to: Option<String>,
    /// Seconds to wait for the new leader; 0 submits and returns at once.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub wait: u64,
    /// Not before this time (RFC 3339, e.g. 2026-11-26T02:00:00Z): submit
    /// the request and return; the leader hands over when the time comes.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub at: Option<u64>,
}

/// An RFC 3339 time as Unix milliseconds.
fn parse_time(text: &str) -> Result<u64, String> {
    let t = humantime::parse_rfc3339_weak(text)
        .map_err(|e| format!("{text:?}: {e} (expected e.g. 2026-11-26T02:00:00Z)"))?;
    let ms = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| format!("{text:?} is before 1970"))?
        .as_millis();
    u64::try_from(ms).map_err(|_| format!("{text:?} is too far away"))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let target = Target::resolve(&args.target)?;
    if let Some(to) = &args.to {
        target.member(to)?;
    }
    let rt = tokio::runtime::Runtime::new().context("start the async runtime")?;
    let wait = match args.at {
        Some(_) => Duration::ZERO,
        None => Duration::from_secs(args.wait),
    };
    rt.block_on(switchover(&target, args.to, args.at, wait))
}

async fn switchover(
    target: &Target,
    to: Option<String>,
    at: Option<u64>,
    wait: Duration,
) -> anyhow::Result<ExitCode> {
    let dcs = target.dcs()?;
    let Some(from) = current_leader(&dcs, target).await? else {
        bail!(
            "cluster {} has no leader: nothing to switch over from (use `pgha failover --to NODE`)",
            target.config.name
        );
    };
    if to.as_deref() == Some(from.as_str()) {
        bail!("{from} is already the leader");
    }
    if is_paused(&dcs, target).await? {
        bail!(
            "cluster {} is paused (maintenance mode): the leader does not act on a switchover \
             while paused; run `pgha resume` first",
            target.config.name
        );
    }
    if at.is_none() && !wait.is_zero() {
        checkpoint_first(target, &from).await;
    }
    let request = SwitchoverRequest {
        from: Some(from.clone()),
        to: to.clone(),
        scheduled_at_unix_ms: at,
    };
    let key = target.keys.switchover();
    let body = serde_json::to_vec(&request).context("render the request")?;
    if !dcs
        .create_if_absent(&key, &body, None)
        .await
        .with_context(|| format!("write {key}"))?
    {
        let pending = dcs.get(&key).await.ok().and_then(|g| g.kv);
        let text = pending
            .map(|kv| kv.value_str().into_owned())
            .unwrap_or_default();
        bail!("a switchover is already pending ({text}); wait for it, or remove it with `etcdctl del {key}`");
    }
    let dest = to.as_deref().unwrap_or("the best synchronous standby");
    match at {
        Some(ms) => crate::outln!(
            "switchover scheduled: {from} -> {dest} at {} (watch `pgha status`)",
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms))
        ),
        None => crate::outln!("switchover requested: {from} -> {dest}"),
    }
    if wait.is_zero() {
        return Ok(ExitCode::SUCCESS);
    }
    let started = Instant::now();
    let outcome = wait_for_leader(&dcs, target, wait, |l| l != from).await;
    match outcome {
        Some(new) if to.as_deref().is_some_and(|t| t != new) => {
            eprintln!(
                "pgha: the leader changed from {from} to {new}, not to the requested {}",
                to.as_deref().unwrap_or_default()
            );
            explain(target, Some(&new)).await;
            Ok(ExitCode::FAILURE)
        }
        Some(new) => {
            let writable = wait_writable(target, &new, started + wait).await;
            crate::outln!(
                "switchover done: {from} -> {new} in {:.1}s{}",
                started.elapsed().as_secs_f64(),
                if writable { " (accepting writes)" } else { "" }
            );
            Ok(ExitCode::SUCCESS)
        }
        None => {
            let withdrawn = dcs.delete_if_equals(&key, &body).await.unwrap_or(false);
            let leader = current_leader(&dcs, target).await.ok().flatten();
            eprintln!(
                "pgha: switchover did not complete within {}s (leader now: {}){}",
                wait.as_secs(),
                leader.as_deref().unwrap_or("none"),
                if withdrawn {
                    "; the request was withdrawn"
                } else {
                    ""
                }
            );
            explain(target, to.as_deref().or(Some(from.as_str()))).await;
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Run a CHECKPOINT on `leader` before the switchover pauses the proxies
/// (superuser password from the secrets directory). Best effort: a failure
/// only means a longer pause.
async fn checkpoint_first(target: &Target, leader: &str) {
    let Some(m) = target.config.member(leader) else {
        return;
    };
    let started = Instant::now();
    let result = async {
        let secrets = pgha_postgres::Secrets::load(&target.config.secrets_dir)
            .context("read the superuser password")?;
        let client = pgha_postgres::probe::connect_tls(
            &m.host,
            m.port,
            &target.config.superuser,
            &secrets.admin_password,
            Duration::from_secs(5),
            target.config.tls_ca(),
        )
        .await
        .with_context(|| format!("connect to {leader}"))?;
        tokio::time::timeout(CHECKPOINT_WAIT, client.batch_execute("CHECKPOINT"))
            .await
            .context("timed out")?
            .context("CHECKPOINT")?;
        anyhow::Ok(())
    }
    .await;
    match result {
        Ok(()) => crate::outln!(
            "checkpoint on {leader} done in {:.1}s",
            started.elapsed().as_secs_f64()
        ),
        Err(e) => eprintln!("pgha: checkpoint on {leader} not done ({e:#}); going ahead"),
    }
}

/// The cluster is in maintenance mode (`/config` says `paused`); false when
/// `/config` does not exist yet.
pub async fn is_paused(dcs: &EtcdDcs, target: &Target) -> anyhow::Result<bool> {
    let key = target.keys.config();
    let got = dcs
        .get(&key)
        .await
        .with_context(|| format!("read {key} from etcd {:?}", target.config.dcs.endpoints))?;
    match got.kv {
        Some(kv) => {
            let c: pgha_core::DynamicConfig = serde_json::from_slice(&kv.value)
                .with_context(|| format!("parse {key} ({})", kv.value_str()))?;
            Ok(c.paused)
        }
        None => Ok(false),
    }
}

/// Refuse at once when `member`'s agent does not answer on its REST API:
/// only the agent can act on a request, so waiting would only time out.
pub async fn require_agent(target: &Target, member: &str) -> anyhow::Result<()> {
    let m = target.member(member)?;
    let url = format!("{}/liveness", m.api_url());
    match client::get(&url, AGENT_CHECK).await {
        Ok(_) => Ok(()),
        Err(e) => bail!(
            "{member}'s agent is not running (no answer at {url}: {e}); \
             start it (`pgha up` for a dev cluster) before asking it to take over"
        ),
    }
}

/// The leader key's holder, if any.
pub async fn current_leader(dcs: &EtcdDcs, target: &Target) -> anyhow::Result<Option<String>> {
    let key = target.keys.leader();
    let got = dcs
        .get(&key)
        .await
        .with_context(|| format!("read {key} from etcd {:?}", target.config.dcs.endpoints))?;
    Ok(got.kv.map(|kv| kv.value_str().into_owned()))
}

/// Poll the leader key until `done(holder)` or `wait` passes; returns the
/// holder that satisfied it. Read errors count as "not yet".
pub async fn wait_for_leader(
    dcs: &EtcdDcs,
    target: &Target,
    wait: Duration,
    done: impl Fn(&str) -> bool,
) -> Option<String> {
    let deadline = Instant::now() + wait;
    loop {
        if let Ok(Some(l)) = current_leader(dcs, target).await {
            if done(&l) {
                return Some(l);
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Wait until `member`'s agent answers 200 on `/primary` (it holds the
/// lease and its PostgreSQL accepts writes), at most until `deadline`;
/// false at once when the agent cannot be reached.
pub async fn wait_writable(target: &Target, member: &str, deadline: Instant) -> bool {
    let Some(m) = target.config.member(member) else {
        return false;
    };
    let url = format!("{}/primary", m.api_url());
    loop {
        match client::get(&url, Duration::from_secs(1)).await {
            Ok(r) if r.status == 200 => return true,
            // No agent to ask: do not wait for an answer that cannot come.
            Err(client::ClientError::Connect { .. }) => return false,
            _ => {}
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Print the last decisions of `member`'s agent (why it did or did not
/// act), if it answers.
pub async fn explain(target: &Target, member: Option<&str>) {
    let Some(m) = member.and_then(|m| target.config.member(m)) else {
        return;
    };
    let url = format!("{}/cluster", m.api_url());
    let Ok(doc) = client::get(&url, Duration::from_secs(2))
        .await
        .map(|r| r.json())
    else {
        eprintln!("pgha: the agent of {} does not answer at {url}", m.name);
        return;
    };
    let Ok(doc) = doc else { return };
    let reasons: Vec<&str> = doc["decisions"]
        .as_array()
        .map(|a| {
            a.iter()
                .rev()
                .take(3)
                .filter_map(|d| d["reason"].as_str())
                .collect()
        })
        .unwrap_or_default();
    for r in reasons {
        eprintln!("pgha: {}'s agent last decided: {r}", m.name);
    }
}
