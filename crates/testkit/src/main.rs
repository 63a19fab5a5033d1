//! `pgha-testkit`: the fault-injection harness on the command line.
//!
//! ```text
//! cargo run -p pgha-testkit --release -- chaos --seed 42 --duration 10m [--out DIR]
//!     [--faults kill_postgres,switchover] [--clients 4] [--keep] [--loopback]
//! cargo run -p pgha-testkit --release -- check chaos-out/history.json
//! cargo run -p pgha-testkit --release -- forward --upstream 127.0.0.1:5432
//!     [--listen 127.0.0.1:6000] [--mode threads|epoll] [--runtimes 2]
//! ```
//!
//! `chaos` runs one seeded experiment, writes `<out>/history.json` and the
//! lab's logs, checks the history and exits non-zero on any violation. The
//! first Ctrl-C stops injecting, heals and still writes the history; a
//! second one abandons the run (the lab is still torn down). `check`
//! re-runs the checker offline on a written history. `forward` is the null
//! TCP forwarder the proxy benchmark uses as the floor of any proxy
//! (see `forward.rs`).

// Test support: a broken expectation here is a failed test, said by the panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod forward;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use pgha_testkit::chaos::check;
use pgha_testkit::chaos::faults::FaultKind;
use pgha_testkit::chaos::history::History;
use pgha_testkit::chaos::run::{self, RunOptions};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "pgha-testkit", about = "pgha fault-injection harness")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a seeded chaos experiment against a real three-node cluster.
    Chaos(ChaosArgs),
    /// Check a written history.json again, offline.
    Check {
        /// The history file.
        history: PathBuf,
    },
    /// Copy bytes between each client and a fixed upstream, nothing else
    /// (a benchmark baseline for proxies).
    Forward(forward::ForwardArgs),
}

#[derive(clap::Args)]
struct ChaosArgs {
    /// Seed of the fault schedule (random when not given; always printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Length of the fault phase: 90s, 10m, 1h.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    duration: Duration,
    /// Output directory for history.json, the report and the logs.
    #[arg(long, default_value = "chaos-out")]
    out: PathBuf,
    /// Comma-separated fault kinds (default: all).
    #[arg(long, value_delimiter = ',')]
    faults: Vec<String>,
    /// Number of clients (even ones through the proxy, odd ones direct).
    #[arg(long, default_value_t = 4)]
    clients: u32,
    /// Go on past --duration until every enabled fault kind was injected
    /// this many times.
    #[arg(long, default_value_t = 0)]
    rounds: usize,
    /// Keep the lab directory (data dirs, logs) after the run.
    #[arg(long)]
    keep: bool,
    /// Use loopback even when network namespaces work (process faults only).
    #[arg(long)]
    loopback: bool,
}

/// "90", "90s", "10m", "1h".
fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{text:?}: expected e.g. 90s, 10m, 1h"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("{text:?}: unit must be s, m or h")),
    };
    Ok(Duration::from_secs(secs))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Chaos(args) => chaos(args),
        Cmd::Check { history } => check_file(&history),
        Cmd::Forward(args) => forward::run(&args).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pgha-testkit: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn replay_command(args: &ChaosArgs, seed: u64) -> String {
    let mut cmd = format!(
        "cargo run -p pgha-testkit --release -- chaos --seed {seed} --duration {}s --clients {}",
        args.duration.as_secs(),
        args.clients
    );
    if !args.faults.is_empty() {
        cmd.push_str(&format!(" --faults {}", args.faults.join(",")));
    }
    if args.rounds > 0 {
        cmd.push_str(&format!(" --rounds {}", args.rounds));
    }
    if args.loopback {
        cmd.push_str(" --loopback");
    }
    cmd
}

fn chaos(args: ChaosArgs) -> anyhow::Result<ExitCode> {
    let seed = args.seed.unwrap_or_else(rand::random);
    let mut kinds = Vec::new();
    for f in &args.faults {
        match FaultKind::parse(f) {
            Some(k) => kinds.push(k),
            None => bail!(
                "unknown fault kind {f:?}; known: {}",
                FaultKind::ALL.map(|k| k.name()).join(",")
            ),
        }
    }
    let mut opts = RunOptions::new(seed, args.duration, args.out.clone(), run::find_pgha()?);
    if !kinds.is_empty() {
        opts.kinds = kinds;
    }
    opts.clients = args.clients.max(1);
    opts.min_rounds = args.rounds;
    opts.lab.keep = args.keep;
    opts.lab.loopback = args.loopback;
    opts.replay = replay_command(&args, seed);
    eprintln!("chaos: seed {seed}; replay with: {}", opts.replay);
    let rt = tokio::runtime::Runtime::new().context("start the async runtime")?;
    let cancel = opts.cancel.clone();
    let replay = opts.replay.clone();
    let result = rt.block_on(async move {
        let ctrl_c = async {
            let _ = tokio::signal::ctrl_c().await;
            eprintln!("chaos: Ctrl-C: healing and writing the history (Ctrl-C again to abandon)");
            cancel.cancel();
            let _ = tokio::signal::ctrl_c().await;
        };
        tokio::select! {
            r = run::run(opts) => Some(r),
            _ = ctrl_c => None,
        }
    });
    let Some(result) = result else {
        eprintln!("chaos: abandoned; seed {seed}; replay with: {replay}");
        return Ok(ExitCode::from(130));
    };
    let result = result?;
    for (kind, why) in &result.skipped {
        eprintln!("chaos: skipped {kind}: {why}");
    }
    for p in &result.problems {
        eprintln!("chaos: recovery problem: {p}");
    }
    println!("history: {}", result.path.display());
    let verdict = verdict(&result.history, &args.out)?;
    println!("seed {seed}; replay with: {replay}");
    Ok(verdict)
}

fn check_file(path: &PathBuf) -> anyhow::Result<ExitCode> {
    let text = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    let history: History =
        serde_json::from_slice(&text).with_context(|| format!("parse {}", path.display()))?;
    let out = path.parent().map(PathBuf::from).unwrap_or_default();
    let code = verdict(&history, &out)?;
    println!("seed {}; replay with: {}", history.seed, history.replay);
    Ok(code)
}

/// Check the history, print the verdict; failure exit code on a violation.
fn verdict(history: &History, out: &std::path::Path) -> anyhow::Result<ExitCode> {
    let report = check::check(history);
    match pgha_testkit::chaos::report::write_all(out, history, &report) {
        Ok(w) => {
            println!(
                "report: {} {} {}",
                w.report_json.display(),
                w.summary.display(),
                w.svg.display()
            );
            if let Ok(text) = std::fs::read_to_string(&w.summary) {
                println!("{text}");
            }
        }
        Err(e) => eprintln!("pgha-testkit: writing the report failed: {e:#}"),
    }
    println!(
        "writes: {} ({} ok, {} failed, {} unknown); reads: {} ({} ok); faults: {}",
        report.writes.total,
        report.writes.ok,
        report.writes.failed,
        report.writes.unknown,
        report.reads.total,
        report.reads.ok,
        history.faults.len()
    );
    println!(
        "lost: {}  duplicated: {}  split-brain: {}  stale reads: {}",
        report.lost_count(),
        report.duplicated_count(),
        report.split_brain_count(),
        report.stale_reads.len()
    );
    for sb in report.split_brain.iter().take(5) {
        println!("split brain: {sb:?}");
    }
    for w in &report.warnings {
        println!("warning: {w}");
    }
    let violations = report.violations();
    for v in &violations {
        println!("VIOLATION: {v}");
    }
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
