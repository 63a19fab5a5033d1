//! `pgha reinit NODE [--no-wait] [--wait SECONDS]`: ask NODE's agent
//! (`POST /reinit`, with the API token) to throw away its data directory and
//! clone it again from the leader, then wait until NODE streams from the
//! leader again. The agent refuses on the leader.
//!
//! The agent answers the request as soon as it has noted it; the clone runs
//! in its next loop. So the command follows the agent's documents: the
//! `re-clone from ...` decision (newer than any decision before the request)
//! marks the clone, a running PostgreSQL whose WAL receiver streams, in a
//! document newer than that decision, marks the end. A second `re-clone`
//! decision means the first clone failed (the agent retries on its next
//! loop): the command stops and says so. Each phase prints one line when it
//! is seen. While the base backup runs, its progress on the leader
//! (`pg_stat_progress_basebackup`) shows on stderr (`crate::progress`): a
//! line updated in place on a terminal, a plain line every few seconds
//! otherwise.
//!
//! Exit codes: 0 NODE streams again (or, with `--no-wait`, the agent took
//! the request); 1 refused, the clone failed, the agent is unreachable, or
//! NODE did not stream again within `--wait`.

use crate::target::{Target, TargetArgs};
use anyhow::{bail, Context};
use pgha_agent::api::client;
use serde_json::Value;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// How often the agent's documents are read while waiting.
const POLL: Duration = Duration::from_millis(200);
/// Bound on one read of an agent document.
const DOC_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: TargetArgs,
    /// The standby to re-clone.
    pub node: String,
    /// Return once the agent has taken the request, without waiting for
    /// the clone.
    #[arg(long)]
    pub no_wait: bool,
    /// Seconds to wait until NODE streams again.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub wait: u64,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let target = Target::resolve(&args.target)?;
    let api = target.member(&args.node)?.api_url();
    let rt = tokio::runtime::Runtime::new().context("start the async runtime")?;
    let before = rt.block_on(newest_decision(&api));
    let started = Instant::now();
    let code = super::restart::post_control(&args.target, &args.node, "reinit", false)?;
    if code != ExitCode::SUCCESS {
        return Ok(code);
    }
    if args.no_wait {
        crate::outln!(
            "{}: reinit requested (not waiting for the clone)",
            args.node
        );
        return Ok(ExitCode::SUCCESS);
    }
    crate::outln!("{}: reinit requested; waiting for the clone", args.node);
    let deadline = started + Duration::from_secs(args.wait);
    rt.block_on(follow(&target, &args.node, &api, before, started, deadline))
}

/// Poll NODE's agent until it streams again after a re-clone, printing each
/// phase once.
///
/// The agent publishes its documents at the end of each loop iteration, with
/// the PostgreSQL state it observed at the start: the iteration that
/// re-clones publishes the `re-clone` decision together with the state from
/// before the clone. Only a document that also holds a newer decision (the
/// next iteration's) describes the new clone; `/patroni` is read after
/// `/cluster`, so it is at least that fresh.
async fn follow(
    target: &Target,
    node: &str,
    api: &str,
    before: u64,
    started: Instant,
    deadline: Instant,
) -> anyhow::Result<ExitCode> {
    let mut progress = crate::progress::Progress::new();
    let mut source = CloneSource::default();
    let mut printed_reclone = false;
    let mut printed_running = false;
    let mut answered = false;
    loop {
        let decisions = get_doc(&format!("{api}/cluster"))
            .await
            .map(|c| c["decisions"].clone());
        let doc = get_doc(&format!("{api}/patroni")).await;
        answered |= doc.is_some();
        let phase = decisions
            .as_ref()
            .map(|d| Phase::of(d, before))
            .unwrap_or(Phase::NotStarted);
        match phase {
            Phase::NotStarted => {
                let leader = doc.as_ref().and_then(|d| d["leader"].as_str());
                let backups = source.base_backups(target, leader).await;
                let mine: Vec<_> = backups.into_iter().filter(|b| b.member == node).collect();
                progress.base_backups(Instant::now(), &mine);
            }
            Phase::Failed => {
                eprintln!(
                    "pgha: {node}: the re-clone failed and the agent is trying again: \
                     see {node}'s agent log (agent.log next to its data directory)"
                );
                return Ok(ExitCode::FAILURE);
            }
            Phase::Cloned { fresh } => {
                progress.clear_line();
                if !printed_reclone {
                    printed_reclone = true;
                    crate::outln!("{node}: data directory re-cloned from the leader");
                }
                let running = doc.as_ref().is_some_and(|d| d["pg_running"] == true);
                let streaming = doc.as_ref().is_some_and(|d| d["streaming"] == true);
                if fresh && running && !printed_running {
                    printed_running = true;
                    crate::outln!("{node}: PostgreSQL running; waiting until it streams");
                }
                if fresh && running && streaming {
                    let leader = doc
                        .as_ref()
                        .and_then(|d| d["leader"].as_str().map(str::to_string))
                        .unwrap_or_else(|| "the leader".into());
                    crate::outln!(
                        "{node}: reinit done: streaming from {leader} after {:.1}s",
                        started.elapsed().as_secs_f64()
                    );
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
        if Instant::now() >= deadline {
            let at = match phase {
                _ if !answered => "its agent does not answer",
                Phase::NotStarted => "the clone has not finished",
                _ => "it does not stream yet",
            };
            bail!(
                "{node} did not stream again within {}s ({at}): see `pgha status` and {node}'s agent log",
                deadline.saturating_duration_since(started).as_secs()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A connection to the leader the clone copies from, to read its
/// `pg_stat_progress_basebackup` (with the admin password; none when it
/// cannot be read: then nothing shows while the backup runs).
#[derive(Default)]
struct CloneSource {
    conn: Option<(String, pgha_postgres::seed::PgClient)>,
}

impl CloneSource {
    async fn base_backups(
        &mut self,
        target: &Target,
        leader: Option<&str>,
    ) -> Vec<crate::progress::BaseBackup> {
        let Some(leader) = leader else {
            return Vec::new();
        };
        let usable = self
            .conn
            .as_ref()
            .is_some_and(|(n, c)| n == leader && !c.is_closed());
        if !usable {
            self.conn = None;
            let cfg = &target.config;
            let file = cfg.secrets_dir.join(pgha_postgres::secrets::ADMIN_FILE);
            let password = std::fs::read_to_string(file).unwrap_or_default();
            if let Some(m) = cfg.member(leader) {
                let c = pgha_postgres::probe::connect(
                    &m.host,
                    m.port,
                    &cfg.superuser,
                    password.trim(),
                    DOC_TIMEOUT,
                )
                .await;
                self.conn = c.ok().map(|c| (leader.to_string(), c));
            }
        }
        match &self.conn {
            Some((_, c)) => crate::progress::base_backups(c).await,
            None => Vec::new(),
        }
    }
}

/// Where the re-clone is, from the agent's decisions newer than the request.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    /// No `re-clone` decision yet (the agent's iteration that clones
    /// publishes it only when the clone is over).
    NotStarted,
    /// One `re-clone`; `fresh`: a later decision exists, so the documents
    /// describe the new clone.
    Cloned { fresh: bool },
    /// More than one `re-clone`: the first failed and the agent retries.
    Failed,
}

impl Phase {
    fn of(decisions: &Value, before: u64) -> Phase {
        let newer: Vec<&Value> = decisions
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|d| d["at_unix_ms"].as_u64().is_some_and(|t| t > before))
                    .collect()
            })
            .unwrap_or_default();
        let is_reclone = |d: &Value| {
            d["actions"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|x| x.as_str().is_some_and(|s| s.starts_with("re-clone from")))
            })
        };
        let reclones: Vec<usize> = (0..newer.len()).filter(|&i| is_reclone(newer[i])).collect();
        match reclones.as_slice() {
            [] => Phase::NotStarted,
            [i] => Phase::Cloned {
                fresh: *i + 1 < newer.len(),
            },
            _ => Phase::Failed,
        }
    }
}

/// A JSON document of an agent, or None when it does not answer.
async fn get_doc(url: &str) -> Option<Value> {
    client::get(url, DOC_TIMEOUT)
        .await
        .ok()
        .and_then(|r| r.json().ok())
}

/// The time of the agent's newest decision (0 when there is none or the
/// agent does not answer): decisions at or before it predate the request.
/// The agent's own clock, so the command's clock does not matter.
async fn newest_decision(api: &str) -> u64 {
    get_doc(&format!("{api}/cluster"))
        .await
        .and_then(|c| {
            c["decisions"]
                .as_array()
                .and_then(|a| a.iter().filter_map(|d| d["at_unix_ms"].as_u64()).max())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::Phase;
    use serde_json::json;

    fn d(at: u64, action: &str) -> serde_json::Value {
        json!({"at_unix_ms": at, "reason": "r", "actions": ["publish member", action]})
    }

    /// Only decisions after the request count; the documents describe the
    /// new clone only once a decision follows the re-clone; two re-clones
    /// mean the first failed.
    #[test]
    fn phases_from_the_decisions() {
        let old = d(10, "re-clone from node1");
        assert_eq!(Phase::of(&json!([old]), 10), Phase::NotStarted);
        assert_eq!(Phase::of(&json!(null), 0), Phase::NotStarted);
        let clone = d(20, "re-clone from node1");
        assert_eq!(
            Phase::of(&json!([old, clone]), 10),
            Phase::Cloned { fresh: false }
        );
        let next = d(30, "follow node1");
        assert_eq!(
            Phase::of(&json!([old, clone, next]), 10),
            Phase::Cloned { fresh: true }
        );
        let again = d(40, "re-clone from node1");
        assert_eq!(Phase::of(&json!([clone, next, again]), 10), Phase::Failed);
    }
}
