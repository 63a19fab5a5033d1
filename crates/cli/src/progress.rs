//! Progress of long commands (`up`, `reinit`) on stderr: on a terminal one
//! line rewritten in place (bytes, percentage and rate of each base backup
//! under way); otherwise plain lines, one per phase and at most one per
//! base backup every [`PLAIN_EVERY`], so logs and CI output stay readable.
//!
//! Base backups are watched on the primary they copy from:
//! `pg_stat_progress_basebackup` joined with `pg_stat_activity`, where the
//! agent's `pg_basebackup` names itself `pgha_clone_<member>` (see
//! `Instance::clone_from`).

use pgha_postgres::seed::PgClient as Client;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How often a plain (non-terminal) progress line repeats.
pub const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// The `application_name` prefix of the agents' base backups.
pub const CLONE_APP_PREFIX: &str = "pgha_clone_";

/// One base backup under way, as the source reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseBackup {
    pub member: String,
    /// `pg_stat_progress_basebackup.phase` ("streaming database files", ...).
    pub phase: String,
    pub streamed: u64,
    /// Unknown until PostgreSQL has estimated it.
    pub total: Option<u64>,
}

/// The base backups `client`'s server is sending to pgha members.
pub async fn base_backups(client: &Client) -> Vec<BaseBackup> {
    let rows = client
        .query(
            "SELECT a.application_name, p.phase, p.backup_streamed, p.backup_total
             FROM pg_stat_progress_basebackup p JOIN pg_stat_activity a ON a.pid = p.pid
             ORDER BY a.application_name",
            &[],
        )
        .await
        .unwrap_or_default();
    rows.iter()
        .filter_map(|r| {
            let app: String = r.get(0);
            let member = app.strip_prefix(CLONE_APP_PREFIX)?.to_string();
            Some(BaseBackup {
                member,
                phase: r.get(1),
                streamed: r.get::<_, i64>(2).max(0) as u64,
                total: r.get::<_, Option<i64>>(3).map(|t| t.max(0) as u64),
            })
        })
        .collect()
}

/// The progress reporter.
pub struct Progress {
    tty: bool,
    /// Something is on the current terminal line.
    line_open: bool,
    /// Per member: the previous sample (for the rate) and when a plain line
    /// was last printed.
    seen: BTreeMap<String, Seen>,
}

struct Seen {
    at: Instant,
    bytes: u64,
    rate: f64,
    printed: Option<Instant>,
}

impl Progress {
    /// A terminal line when stderr is a terminal, plain lines otherwise.
    pub fn new() -> Self {
        Progress::with_tty(std::io::stderr().is_terminal())
    }

    pub fn with_tty(tty: bool) -> Self {
        Progress {
            tty,
            line_open: false,
            seen: BTreeMap::new(),
        }
    }

    /// A phase: one line, always.
    pub fn phase(&mut self, text: &str) {
        self.clear_line();
        eprintln!("{text}");
    }

    /// The base backups under way now; returns what was printed (tests).
    pub fn base_backups(&mut self, now: Instant, backups: &[BaseBackup]) -> Vec<String> {
        let mut out = Vec::new();
        let mut parts = Vec::new();
        for b in backups {
            let s = self.seen.entry(b.member.clone()).or_insert(Seen {
                at: now,
                bytes: b.streamed,
                rate: 0.0,
                printed: None,
            });
            let dt = now.saturating_duration_since(s.at).as_secs_f64();
            if dt >= 0.5 {
                let r = b.streamed.saturating_sub(s.bytes) as f64 / dt;
                s.rate = if s.rate == 0.0 {
                    r
                } else {
                    0.5 * s.rate + 0.5 * r
                };
                s.at = now;
                s.bytes = b.streamed;
            }
            let text = describe(b, s.rate);
            if self.tty {
                parts.push(text);
            } else if s
                .printed
                .is_none_or(|p| now.saturating_duration_since(p) >= PLAIN_EVERY)
            {
                s.printed = Some(now);
                out.push(text);
            }
        }
        if self.tty && !parts.is_empty() {
            let line = parts.join("  |  ");
            let mut err = std::io::stderr();
            let _ = write!(err, "\r{line}\x1b[K");
            let _ = err.flush();
            self.line_open = true;
            out.push(line);
        } else {
            for line in &out {
                eprintln!("{line}");
            }
        }
        out
    }

    /// End the terminal line, if one is open.
    pub fn clear_line(&mut self) {
        if self.line_open {
            eprint!("\r\x1b[K");
            self.line_open = false;
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear_line();
    }
}

/// `node2: base backup 45.2 MB of 120.0 MB (37%) at 12.3 MB/s (streaming database files)`.
pub fn describe(b: &BaseBackup, rate: f64) -> String {
    let mb = |n: f64| n / (1024.0 * 1024.0);
    let of = match b.total {
        Some(t) if t > 0 => format!(
            " of {:.1} MB ({:.0}%)",
            mb(t as f64),
            100.0 * b.streamed as f64 / t as f64
        ),
        _ => String::new(),
    };
    format!(
        "{}: base backup {:.1} MB{of} at {:.1} MB/s ({})",
        b.member,
        mb(b.streamed as f64),
        mb(rate),
        b.phase
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bb(streamed: u64) -> BaseBackup {
        BaseBackup {
            member: "node2".into(),
            phase: "streaming database files".into(),
            streamed,
            total: Some(100 << 20),
        }
    }

    #[test]
    fn a_line_has_bytes_percentage_rate_and_phase() {
        assert_eq!(
            describe(&bb(25 << 20), 5.0 * 1024.0 * 1024.0),
            "node2: base backup 25.0 MB of 100.0 MB (25%) at 5.0 MB/s (streaming database files)"
        );
    }

    /// Without a terminal a backup's line repeats only every PLAIN_EVERY,
    /// and the rate comes from the bytes between samples.
    #[test]
    fn plain_lines_are_rate_limited_and_carry_the_rate() {
        let mut p = Progress::with_tty(false);
        let t0 = Instant::now();
        assert_eq!(p.base_backups(t0, &[bb(0)]).len(), 1);
        let one = p.base_backups(t0 + Duration::from_secs(1), &[bb(10 << 20)]);
        assert!(one.is_empty(), "{one:?}");
        let later = p.base_backups(t0 + Duration::from_secs(6), &[bb(60 << 20)]);
        assert_eq!(later.len(), 1);
        assert!(later[0].contains("60.0 MB of 100.0 MB (60%)"), "{later:?}");
        assert!(later[0].contains("at 10.0 MB/s"), "{later:?}");
    }
}
