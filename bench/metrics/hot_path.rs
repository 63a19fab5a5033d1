//! What the proxy's metrics cost per unit of client work: the same
//! operations `ProxyMetrics` does per statement (one counter when the unit
//! is sent, two clock reads, a histogram observation and a transaction
//! counter at its ReadyForQuery), on one thread and on N threads sharing
//! the counters as the proxy's session threads do. A measurement, not a
//! test:
//!
//!     cargo run --release -p pgha-metrics --example hot_path [-- THREADS]
//!
//! Results in docs/BENCHMARKS.md ("Metrics on the proxy's hot path").

use pgha_metrics::{Counter, Histogram, LATENCY_BUCKETS};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Shared {
    statements: Counter,
    transactions: Counter,
    latency: Histogram,
}

const UNITS: u64 = 5_000_000;

fn unit(m: &Shared) {
    m.statements.inc();
    let sent = Instant::now();
    std::hint::black_box(&sent);
    m.latency.observe(sent.elapsed());
    m.transactions.inc();
}

/// CPU time of this process so far (utime + stime from /proc, 10 ms
/// ticks): the machine may be loaded, so wall time would measure the
/// scheduler, not the code.
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // Fields 14 and 15 of stat(5), counted after the ")" from field 3.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn run(threads: usize) -> Duration {
    let m = Arc::new(Shared {
        statements: Counter::new(),
        transactions: Counter::new(),
        latency: Histogram::new(LATENCY_BUCKETS),
    });
    let start = cpu();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let m = m.clone();
            std::thread::spawn(move || {
                for _ in 0..UNITS {
                    unit(&m);
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    assert_eq!(m.transactions.get(), UNITS * threads as u64);
    cpu() - start
}

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2);
    for n in [1, threads] {
        let took = run(n);
        let per = took.as_nanos() as f64 / (UNITS * n as u64) as f64;
        println!("{n} thread(s): {per:.1} ns of CPU per unit of client work");
    }
}
