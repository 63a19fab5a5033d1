//! What one `Classifier::analyze` costs on an exact-text cache hit, a shape
//! hit (same statement, other literal) and a miss (new text that must be
//! parsed). A measurement, not a test: it asserts nothing, so it lives here
//! rather than in `cargo test` (docs/routing.md, "Cost").
//!
//! `cargo run --release -p pgha-proxy --example analyze_cost`
//!
//! Hazard: wall-clock timings on a shared machine; run it several times and
//! take the best.

use pgha_proxy::classify::{Classifier, FunctionCatalog};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Mean time per call of `f` over `items`.
fn per_call<T>(items: &[T], f: impl Fn(&T)) -> Duration {
    let t = Instant::now();
    for item in items {
        f(item);
    }
    t.elapsed() / items.len().max(1) as u32
}

fn main() {
    let c = Classifier::new(Arc::new(FunctionCatalog::new()));
    let n = 20_000;

    let hit_sql = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
    c.analyze(hit_sql);
    let hits = vec![hit_sql; n];
    let hit = per_call(&hits, |s| {
        black_box(c.analyze(black_box(s)));
    });

    let shapes: Vec<String> = (0..n)
        .map(|i| format!("SELECT abalance FROM pgbench_accounts WHERE aid = {i}"))
        .collect();
    let shape_hit = per_call(&shapes, |s| {
        black_box(c.analyze(s));
    });

    let misses: Vec<String> = (0..2_000)
        .map(|i| format!("SELECT a{i}, b FROM t{i} JOIN u ON u.id = t{i}.uid WHERE t{i}.x = $1"))
        .collect();
    let miss = per_call(&misses, |s| {
        black_box(c.analyze(s));
    });

    println!("analyze cost: exact hit {hit:?}, shape hit {shape_hit:?}, miss (parse) {miss:?}");
}
