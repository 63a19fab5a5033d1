//! pgha-metrics: Prometheus' text exposition format (version 0.0.4) and the
//! two lock-free instruments the hot paths update: [`Counter`] and
//! [`Histogram`].
//!
//! Why not a crate: what the agents and the proxy need is a writer of a few
//! dozen lines of text per scrape and atomics on the hot path. The proxy's
//! CPU per transaction is a tracked benchmark, so its counters are plain
//! `AtomicU64`s in structs it owns (no registry, no label-set hashing per
//! update); labelled families are rendered at scrape time from arrays
//! indexed by enums. `prometheus-client` would add a registry, `Arc`ed
//! families with a lock per label lookup, and a dependency tree, for a
//! format that fits in this file.
//!
//! Conventions (docs/observability.md): every name starts `pgha_`, base
//! units (seconds, bytes), counters end `_total`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The `Content-Type` of a scrape answer.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A scrape answer being written: families in order, each announced once
/// with `# HELP` and `# TYPE` before its samples.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    pub fn new() -> Self {
        Exposition::default()
    }

    /// Announce a family; its samples follow.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Self {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.name());
        self
    }

    /// One sample of the family announced last (or of its `_bucket`,
    /// `_sum`, `_count` series).
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.out.push_str(name);
        write_labels(&mut self.out, labels, None);
        self.out.push(' ');
        write_value(&mut self.out, value);
        self.out.push('\n');
        self
    }

    /// A family with one sample and no labels.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: f64) -> &mut Self {
        self.family(name, kind, help).sample(name, &[], value)
    }

    /// The samples of one histogram series (`name` without a suffix).
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) -> &mut Self {
        let mut cumulative = 0u64;
        for (i, bound) in h.bounds.iter().enumerate() {
            cumulative += h.buckets[i].load(Ordering::Relaxed);
            self.bucket(name, labels, &format_value(*bound), cumulative);
        }
        let count = h.count.load(Ordering::Relaxed);
        self.bucket(name, labels, "+Inf", count);
        let sum = h.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        self.sample(&format!("{name}_sum"), labels, sum);
        self.sample(&format!("{name}_count"), labels, count as f64)
    }

    fn bucket(&mut self, name: &str, labels: &[(&str, &str)], le: &str, value: u64) {
        self.out.push_str(name);
        self.out.push_str("_bucket");
        write_labels(&mut self.out, labels, Some(le));
        let _ = writeln!(self.out, " {value}");
    }

    /// The text to answer a scrape with.
    pub fn finish(self) -> String {
        self.out
    }
}

fn write_labels(out: &mut String, labels: &[(&str, &str)], le: Option<&str>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    let le = le.map(|v| ("le", v));
    for (k, v) in labels.iter().copied().chain(le) {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
}

fn write_value(out: &mut String, v: f64) {
    out.push_str(&format_value(v));
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Self {
        Counter(AtomicU64::new(0))
    }

    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A gauge that goes up and down (connections, waiters).
#[derive(Debug, Default)]
pub struct Gauge(std::sync::atomic::AtomicI64);

impl Gauge {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Bucket bounds in seconds for request latencies: 100 µs to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Bucket bounds in seconds for failovers, switchovers and waits: 50 ms
/// to 2 min.
pub const EVENT_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0,
];

/// A histogram of durations: one atomic per bucket (not cumulative; the
/// exposition sums them), a count and a sum in nanoseconds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_samples_and_escaped_labels() {
        let mut e = Exposition::new();
        e.family("pgha_x_total", Kind::Counter, "A count.\nSecond line.")
            .sample("pgha_x_total", &[("member", "a\"b\\c\nd")], 3.0)
            .single("pgha_up", Kind::Gauge, "Up.", 0.5);
        assert_eq!(
            e.finish(),
            "# HELP pgha_x_total A count.\\nSecond line.\n# TYPE pgha_x_total counter\n\
             pgha_x_total{member=\"a\\\"b\\\\c\\nd\"} 3\n\
             # HELP pgha_up Up.\n# TYPE pgha_up gauge\npgha_up 0.5\n"
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative_with_inf_sum_and_count() {
        let h = Histogram::new(&[0.001, 0.01]);
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_secs(1));
        let mut e = Exposition::new();
        e.histogram("pgha_h_seconds", &[("target", "primary")], &h);
        let text = e.finish();
        assert!(text.contains("pgha_h_seconds_bucket{target=\"primary\",le=\"0.001\"} 1\n"));
        assert!(text.contains("pgha_h_seconds_bucket{target=\"primary\",le=\"0.01\"} 2\n"));
        assert!(text.contains("pgha_h_seconds_bucket{target=\"primary\",le=\"+Inf\"} 3\n"));
        assert!(text.contains("pgha_h_seconds_count{target=\"primary\"} 3\n"));
        assert!(
            text.contains("pgha_h_seconds_sum{target=\"primary\"} 1.0055"),
            "{text}"
        );
    }

    #[test]
    fn values_render_as_integers_when_whole() {
        assert_eq!(format_value(42.0), "42");
        assert_eq!(format_value(0.25), "0.25");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NAN), "NaN");
    }
}
