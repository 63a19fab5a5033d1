//! The CI chaos run: a short seeded experiment on a real three-node
//! cluster (network namespaces, three etcd members, the proxy) that injects
//! every fault kind the machine allows at least once, then asserts that the
//! checker found no lost acknowledged write, no split brain and no stale
//! read. Needs root, iproute2 and iptables (scripts/install-deps) and the
//! `pgha` binary built with the same profile (`cargo build -p pgha-cli`).
//!
//! `PGHA_CHAOS_SEED` and `PGHA_CHAOS_SECS` override the seed (default 42)
//! and the length of the fault phase (default 90 s; the run goes on until
//! every kind was injected once, a few minutes on a loaded machine);
//! `PGHA_CHAOS_FAULTS` (comma-separated kinds) narrows the kinds, e.g. to
//! replay a CI run whose machine had no `tc netem`. On failure the
//! history and logs stay in the printed directory.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking

use pgha_testkit::chaos::check;
use pgha_testkit::chaos::run::{self, RunOptions};
use std::time::Duration;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Fail with the tool and the installer named when the lab cannot be built.
fn require_tools() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "the chaos CI run needs root (network namespaces, iptables, tmpfs)"
    );
    for tool in ["ip", "iptables"] {
        let ok = std::process::Command::new(tool)
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            ok,
            "{tool} is missing: run scripts/install-deps (iproute2, iptables)"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn short_seeded_chaos_run_loses_nothing() {
    require_tools();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "pgha_testkit=info".into()),
        )
        .with_test_writer()
        .try_init();
    let bin = run::find_pgha().unwrap_or_else(|e| panic!("{e:#}"));
    let seed = env_or("PGHA_CHAOS_SEED", 42);
    let secs = env_or("PGHA_CHAOS_SECS", 90);
    let out = std::env::temp_dir().join(format!("pgha-chaos-ci-{seed}-{}", std::process::id()));
    let mut opts = RunOptions::new(seed, Duration::from_secs(secs), out.clone(), bin);
    opts.hold = (Duration::from_secs(1), Duration::from_secs(4));
    opts.min_rounds = 1;
    if let Ok(list) = std::env::var("PGHA_CHAOS_FAULTS") {
        opts.kinds = list
            .split(',')
            .map(|f| {
                pgha_testkit::chaos::faults::FaultKind::parse(f)
                    .unwrap_or_else(|| panic!("PGHA_CHAOS_FAULTS: unknown fault kind {f:?}"))
            })
            .collect();
    }
    opts.replay = format!(
        "PGHA_CHAOS_SEED={seed} PGHA_CHAOS_SECS={secs} cargo test -p pgha-testkit --test chaos_ci \
         (or: cargo run -p pgha-testkit --release -- chaos --seed {seed} --duration {secs}s --rounds 1)"
    );
    let result = run::run(opts).await.unwrap_or_else(|e| {
        panic!(
            "chaos run failed (seed {seed}, logs in {}): {e:#}",
            out.display()
        )
    });
    let report = check::check(&result.history);
    let kinds: std::collections::BTreeSet<&str> = result
        .history
        .faults
        .iter()
        .map(|f| f.kind.as_str())
        .collect();
    eprintln!(
        "chaos CI: seed {seed}, {} faults ({} kinds: {kinds:?}), skipped {:?}, {} writes ok",
        result.history.faults.len(),
        kinds.len(),
        result.skipped,
        report.writes.ok
    );
    for p in &result.problems {
        eprintln!("chaos CI: recovery problem: {p}");
    }
    let ctx = format!("seed {seed}; history in {}", result.path.display());
    assert!(report.writes.ok > 0, "no write was acknowledged ({ctx})");
    assert_eq!(
        report.lost_count(),
        0,
        "lost acknowledged writes ({ctx}): {:?}\n{}",
        report.lost,
        lost_detail(&result.history, &report)
    );
    assert_eq!(
        report.split_brain_count(),
        0,
        "split brain ({ctx}): {:?}",
        report.split_brain
    );
    assert!(
        report.stale_reads.is_empty(),
        "stale reads ({ctx}): {:?}",
        report.stale_reads
    );
    assert!(
        report.problems.is_empty(),
        "unjudgeable history ({ctx}): {:?}",
        report.problems
    );
    let _ = std::fs::remove_dir_all(&out);
}

/// The operations of a lost write's session around it and the faults near
/// it, so that a CI log alone says where to look.
fn lost_detail(
    h: &pgha_testkit::chaos::history::History,
    report: &pgha_testkit::chaos::check::CheckReport,
) -> String {
    let ids: std::collections::BTreeSet<i64> = report
        .lost
        .iter()
        .flat_map(|n| n.ids.iter().copied())
        .take(3)
        .collect();
    let mut out = String::new();
    for id in ids {
        let Some(w) = h.ops.iter().find(|o| o.id == id) else {
            continue;
        };
        out.push_str(&format!("lost id {id}:\n"));
        for o in h.ops.iter().filter(|o| {
            o.client == w.client
                && o.session == w.session
                && o.start_ms + 300 >= w.start_ms
                && o.start_ms <= w.end_ms + 300
        }) {
            out.push_str(&format!(
                "  {}-{} ms client {} {:?} {:?} id {} {:?} node {:?} tl {:?} lsn {:?} saw {:?}\n",
                o.start_ms,
                o.end_ms,
                o.client,
                o.route,
                o.kind,
                o.id,
                o.outcome,
                o.node,
                o.timeline,
                o.lsn,
                o.saw
            ));
        }
        for f in h.faults.iter().filter(|f| {
            f.start_ms <= w.end_ms + 1000 && f.healed_ms.unwrap_or(u64::MAX) + 5000 >= w.start_ms
        }) {
            out.push_str(&format!(
                "  fault {} on {} ({}) {}-{:?} ms: {}\n",
                f.kind, f.target, f.target_role, f.start_ms, f.healed_ms, f.detail
            ));
        }
    }
    out
}
