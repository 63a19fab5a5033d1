//! One chaos run end to end: start the lab, start the clients, inject the
//! seeded faults one at a time (each held, healed, then the cluster must be
//! healthy again before the next), heal everything, wait until the cluster
//! settles (one primary, standbys streaming and caught up), collect every
//! node's contents and the final primary's timeline history, and write
//! `history.json` (plus the lab's logs) to the output directory.
//!
//! Hazard: the lab is dropped (everything it started stopped and removed)
//! on every path out of [`run`], including cancellation (Ctrl-C) and
//! errors; a panic unwinds through it too.

use super::clients::{self, Recorder};
use super::faults::{self, FaultKind};
use super::history::{Fault, FinalState, History, NodeContents, TimelineSwitch, HISTORY_VERSION};
use super::lab::{Lab, LabOptions};
use super::schedule::Schedule;
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug)]
pub struct RunOptions {
    pub seed: u64,
    /// Length of the fault phase (the fault in progress finishes).
    pub duration: Duration,
    /// Go on past `duration` until this many complete rounds (every
    /// enabled kind once per round) were injected.
    pub min_rounds: usize,
    /// Enabled fault kinds (those the lab cannot do are skipped, logged).
    pub kinds: Vec<FaultKind>,
    pub clients: u32,
    /// Where history.json and the logs go.
    pub out: PathBuf,
    pub lab: LabOptions,
    /// Range of fault durations.
    pub hold: (Duration, Duration),
    /// How long the cluster may take to be healthy after a fault is healed.
    pub recover_within: Duration,
    /// The command line that replays this run (stored in the history).
    pub replay: String,
    /// Cancelled on Ctrl-C: the run stops injecting, heals and writes what it has.
    pub cancel: CancellationToken,
}

impl RunOptions {
    /// Defaults for `seed` and `duration`: every fault kind, 4 clients.
    pub fn new(seed: u64, duration: Duration, out: PathBuf, pgha_bin: PathBuf) -> Self {
        RunOptions {
            seed,
            duration,
            min_rounds: 0,
            kinds: FaultKind::ALL.to_vec(),
            clients: 4,
            out,
            lab: LabOptions {
                pgha_bin,
                keep: false,
                loopback: false,
            },
            hold: (Duration::from_secs(2), Duration::from_secs(8)),
            recover_within: Duration::from_secs(90),
            replay: String::new(),
            cancel: CancellationToken::new(),
        }
    }
}

pub struct RunResult {
    pub history: History,
    pub path: PathBuf,
    /// Kinds that could not run here, with the reason.
    pub skipped: Vec<(String, String)>,
    /// Things that went wrong with recovery (cluster not healthy in time,
    /// processes that exited on their own).
    pub problems: Vec<String>,
}

/// Find the `pgha` binary: `$PGHA_BIN`, else next to the current
/// executable or in its parent directory (tests live in `deps/`).
pub fn find_pgha() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("PGHA_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("find the current executable")?;
    let dir = exe.parent().context("executable dir")?;
    for d in [Some(dir), dir.parent()].into_iter().flatten() {
        let p = d.join("pgha");
        if p.is_file() {
            return Ok(p);
        }
    }
    anyhow::bail!(
        "no pgha binary next to {} (build it: `cargo build -p pgha-cli` with the same profile, \
         or set PGHA_BIN)",
        exe.display()
    )
}

/// Run one experiment.
pub async fn run(opts: RunOptions) -> anyhow::Result<RunResult> {
    std::fs::create_dir_all(&opts.out).context("create the output directory")?;
    let mut lab = Lab::start(&opts.lab).await.context("start the chaos lab")?;
    tracing::info!(dir = %lab.dir.display(), network = lab.net.mode(), "lab is up");
    let result = experiment(&mut lab, &opts).await;
    save_logs(&lab, &opts.out);
    result
}

async fn experiment(lab: &mut Lab, opts: &RunOptions) -> anyhow::Result<RunResult> {
    let mut problems = Vec::new();
    let mut skipped = Vec::new();
    let mut kinds = Vec::new();
    for k in &opts.kinds {
        match k.unavailable(lab) {
            Some(why) => {
                tracing::warn!("skipping {}: {why}", k.name());
                skipped.push((k.name().to_string(), why));
            }
            None => kinds.push(*k),
        }
    }
    let leader = lab.health(false).await.map_err(anyhow::Error::msg)?;
    let li = lab.node_index(&leader).context("leader index")?;
    clients::create_table(&lab.connect(li).await?).await?;
    let started_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let rec = Recorder::new();
    let stop_clients = CancellationToken::new();
    let tasks = clients::start(
        opts.clients,
        lab.endpoints(),
        rec.clone(),
        stop_clients.clone(),
    );
    let warm = crate::wait_until_async(
        "first acknowledged writes",
        Duration::from_secs(60),
        || async { (rec.acked_writes() >= 10).then_some(()) },
    )
    .await;
    if let Err(e) = warm {
        problems.push(format!("warm-up: {e:#}"));
    }
    let faults = inject_all(lab, opts, &kinds, &rec, &mut problems).await;
    stop_clients.cancel();
    for t in tasks {
        let _ = t.await;
    }
    problems.extend(faults::heal_everything(lab));
    let final_state = settle(lab, &rec, &mut problems).await;
    let history = History {
        version: HISTORY_VERSION,
        seed: opts.seed,
        replay: opts.replay.clone(),
        started_unix_ms,
        duration_ms: opts.duration.as_millis() as u64,
        nodes: lab.nodes.iter().map(|n| n.member.name.clone()).collect(),
        network: lab.net.mode().into(),
        ops: std::mem::take(&mut *rec.ops.lock().map_err(|_| anyhow::anyhow!("ops lock"))?),
        faults,
        roles: std::mem::take(
            &mut *rec
                .roles
                .lock()
                .map_err(|_| anyhow::anyhow!("roles lock"))?,
        ),
        final_state,
    };
    let path = opts.out.join("history.json");
    let json = serde_json::to_vec(&history).context("serialize the history")?;
    std::fs::write(&path, json).with_context(|| format!("write {}", path.display()))?;
    Ok(RunResult {
        history,
        path,
        skipped,
        problems,
    })
}

/// The fault phase: plans from the seeded schedule until the duration is over.
async fn inject_all(
    lab: &mut Lab,
    opts: &RunOptions,
    kinds: &[FaultKind],
    rec: &Arc<Recorder>,
    problems: &mut Vec<String>,
) -> Vec<Fault> {
    let mut schedule = Schedule::new(opts.seed, kinds, opts.hold);
    let mut out = Vec::new();
    let begin = Instant::now();
    while (begin.elapsed() < opts.duration || schedule.rounds_done() < opts.min_rounds)
        && !opts.cancel.is_cancelled()
    {
        let Some(plan) = schedule.next_plan() else {
            faults::hold(opts.duration.saturating_sub(begin.elapsed()), &opts.cancel).await;
            break;
        };
        let start_ms = rec.now_ms();
        tracing::info!(kind = plan.kind.name(), hold = ?plan.hold, "injecting");
        let active = match faults::inject(lab, &plan).await {
            Ok(a) => a,
            Err(e) => {
                problems.push(format!("{} could not be injected: {e:#}", plan.kind.name()));
                continue;
            }
        };
        if plan.kind != FaultKind::Switchover {
            faults::hold(plan.hold, &opts.cancel).await;
        }
        let mut detail = active.detail.clone();
        if let Err(e) = faults::heal(lab, &active) {
            detail.push_str(&format!("; heal failed: {e:#}"));
        }
        let healed_ms = rec.now_ms();
        tracing::info!(kind = plan.kind.name(), target = %active.target, "{detail}");
        if let Err(why) = recover(lab, opts).await {
            let msg = format!(
                "after {} on {} (t={start_ms}ms): cluster not healthy within {:?}: {why}",
                plan.kind.name(),
                active.target,
                opts.recover_within
            );
            tracing::error!("{msg}");
            problems.push(msg);
            detail.push_str("; NOT HEALTHY in time");
            problems.extend(faults::heal_everything(lab));
        }
        out.push(Fault {
            kind: plan.kind.name().into(),
            target: active.target,
            target_role: active.target_role,
            start_ms,
            healed_ms: Some(healed_ms),
            detail,
        });
        faults::hold(plan.gap, &opts.cancel).await;
    }
    out
}

/// Wait until the cluster is healthy; Err(last reason) at the deadline.
async fn recover(lab: &mut Lab, opts: &RunOptions) -> Result<String, String> {
    let deadline = Instant::now() + opts.recover_within;
    loop {
        match lab.health(false).await {
            Ok(p) => return Ok(p),
            Err(why) if Instant::now() > deadline || opts.cancel.is_cancelled() => return Err(why),
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Wait for a settled cluster and read every node's contents.
async fn settle(lab: &mut Lab, rec: &Recorder, problems: &mut Vec<String>) -> Option<FinalState> {
    let deadline = Instant::now() + Duration::from_secs(180);
    let primary = loop {
        match lab.health(true).await {
            Ok(p) => break p,
            Err(why) if Instant::now() > deadline => {
                problems.push(format!("the cluster did not settle within 180s: {why}"));
                break lab.leader().await?;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    };
    match final_state(lab, &primary, rec.now_ms()).await {
        Ok(f) => Some(f),
        Err(e) => {
            problems.push(format!("final state: {e:#}"));
            None
        }
    }
}

async fn final_state(lab: &Lab, primary: &str, at_ms: u64) -> anyhow::Result<FinalState> {
    let pi = lab.node_index(primary).context("primary index")?;
    let c = lab.connect(pi).await?;
    let row = c
        .query_one(
            "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)",
            &[],
        )
        .await?;
    let timeline = u32::from_str_radix(&row.get::<_, String>(0), 16).context("timeline")?;
    let timeline_history = if timeline > 1 {
        let file = format!("pg_wal/{timeline:08X}.history");
        let text: String = c
            .query_one("SELECT pg_read_file($1)", &[&file])
            .await
            .with_context(|| format!("read {file}"))?
            .get(0);
        parse_history(&text)
    } else {
        Vec::new()
    };
    let mut nodes = Vec::new();
    for (i, n) in lab.nodes.iter().enumerate() {
        let name = &n.member.name;
        let what = format!("{name}'s contents");
        let read = crate::wait_until_async(&what, Duration::from_secs(30), || async {
            let c = lab.connect(i).await.ok()?;
            contents(&c, name).await.ok()
        });
        nodes.push(read.await?);
    }
    Ok(FinalState {
        at_ms,
        primary: primary.to_string(),
        timeline_history,
        timeline,
        nodes,
    })
}

/// The lines of a `.history` file: `parent_tli <tab> switch_lsn <tab> reason`.
pub fn parse_history(text: &str) -> Vec<TimelineSwitch> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let timeline = f.next()?.parse().ok()?;
            let switch_lsn = f.next()?.to_string();
            Some(TimelineSwitch {
                timeline,
                switch_lsn,
            })
        })
        .collect()
}

/// A node's ids as ranges (gaps and islands in SQL) and its duplicates.
async fn contents(c: &tokio_postgres::Client, node: &str) -> anyhow::Result<NodeContents> {
    let standby: bool = c.query_one("SELECT pg_is_in_recovery()", &[]).await?.get(0);
    let ranges = c
        .query(
            "SELECT min(id), max(id) FROM (SELECT id, id - row_number() OVER (ORDER BY id) AS g \
             FROM (SELECT DISTINCT id FROM chaos_ids) d) s GROUP BY g ORDER BY 1",
            &[],
        )
        .await
        .with_context(|| format!("read {node}'s ids"))?;
    let dups = c
        .query(
            "SELECT id FROM chaos_ids GROUP BY id HAVING count(*) > 1 ORDER BY id",
            &[],
        )
        .await?;
    Ok(NodeContents {
        node: node.to_string(),
        role: if standby { "standby" } else { "primary" }.into(),
        id_ranges: ranges.iter().map(|r| (r.get(0), r.get(1))).collect(),
        duplicates: dups.iter().map(|r| r.get(0)).collect(),
    })
}

/// Copy the lab's logs to `<out>/logs` so they survive the lab.
fn save_logs(lab: &Lab, out: &Path) {
    let dest = out.join("logs");
    let _ = std::fs::create_dir_all(&dest);
    for (i, n) in lab.nodes.iter().enumerate() {
        let dir = lab.node_dir(i);
        for f in ["agent.log", "postgresql.log"] {
            let _ = std::fs::copy(dir.join(f), dest.join(format!("{}-{f}", n.member.name)));
        }
    }
    for m in &lab.etcd {
        let src = lab.dir.join(&m.host.name).join("etcd.log");
        let _ = std::fs::copy(src, dest.join(format!("{}.log", m.host.name)));
    }
    let _ = std::fs::copy(lab.dir.join("proxy.log"), dest.join("proxy.log"));
}
