//! A manual throughput comparison (ignored by default; the benchmark issue
//! owns real targets): pgbench select-only directly against the primary and
//! through the rw listener, in each query mode.
//! Run: `cargo test -p pgha-proxy --release --test throughput -- --ignored --nocapture`

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking

mod common;

use common::*;
use std::process::Command;

fn tps(addr: std::net::SocketAddr, mode: &str) -> anyhow::Result<f64> {
    let out = Command::new(pgha_testkit::pg::pg_bin("pgbench"))
        .env("PGPASSWORD", ALICE_PW)
        .args([
            "-h",
            &addr.ip().to_string(),
            "-p",
            &addr.port().to_string(),
            "-U",
            "alice",
            "-n",
            "-S",
        ])
        .args(["-M", mode, "-c", "4", "-j", "2", "-T", "5", "postgres"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "pgbench failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("tps"))
        .unwrap_or_default();
    Ok(line
        .split_whitespace()
        .nth(2)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn select_only_direct_vs_proxy() -> anyhow::Result<()> {
    let c = start(false, "").await?;
    let direct = std::net::SocketAddr::from(([127, 0, 0, 1], c.primary.port));
    let rw = c.rw();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut init = Command::new(pgha_testkit::pg::pg_bin("pgbench"));
        init.env("PGPASSWORD", ALICE_PW).args([
            "-h",
            "127.0.0.1",
            "-p",
            &direct.port().to_string(),
            "-U",
            "alice",
            "-i",
            "-q",
            "postgres",
        ]);
        anyhow::ensure!(init.output()?.status.success(), "pgbench -i failed");
        for mode in ["simple", "extended", "prepared"] {
            let d = tps(direct, mode)?;
            let p = tps(rw, mode)?;
            println!(
                "{mode:>9}: direct {d:>9.0} tps, through rw {p:>9.0} tps, ratio {:.2}",
                p / d
            );
        }
        Ok(())
    })
    .await??;
    Ok(())
}
