//! Whether the local PostgreSQL answers (the runtime side of
//! `pgha_core::hung`): the probe deadline, the stall memory, the progress
//! that needs no answer (WAL files in `pg_wal` changing), and the kill of a
//! hung server.
//!
//! During a stall shorter than `hung_timeout` (or a busy one) the node
//! reports the last observation that had an answer, so that nobody counts
//! it out for a hiccup (no flapping); once hung it reports role unknown,
//! which takes it out of the synchronous set and the proxies' read set.
//!
//! Hazard: a query on a frozen server never returns; every call here and
//! every probe runs under a deadline, and the connection a late probe used
//! is dropped (it may still have a query in flight).

use pgha_core::hung::{self, Unanswered};
use pgha_core::{DynamicConfig, Millis, PgState, Role};
use pgha_postgres::Instance;
use std::time::{Duration, SystemTime};

/// The probe's deadline: connect and status query together. A third of
/// `hung_timeout`, at most 2 s, at least 200 ms.
pub fn probe_deadline(cfg: &DynamicConfig) -> Duration {
    Duration::from_millis((cfg.hung_timeout.0 / 3).clamp(200, 2_000))
}

/// What the runtime remembers about answers between loops.
#[derive(Debug, Default)]
pub struct Responsiveness {
    unanswered: Option<Unanswered>,
    last_good: Option<PgState>,
    wal_signature: Option<WalSignature>,
}

/// The newest file in `pg_wal`: name, size, modification time.
type WalSignature = (String, u64, SystemTime);

impl Responsiveness {
    /// The probe at `sent` got an answer: `pg` is the observation.
    pub fn answered(&mut self, pg: &PgState) -> PgState {
        self.unanswered = None;
        self.wal_signature = None;
        if pg.running && pg.role != Role::Unknown {
            self.last_good = Some(pg.clone());
        }
        pg.clone()
    }

    /// The server runs but the probe sent at `sent` got no answer in time.
    /// Returns what to report: the last answered observation while stalled
    /// or busy, role unknown once hung (`hung::judge`).
    pub fn no_answer(
        &mut self,
        inst: &Instance,
        sent: Millis,
        now: Millis,
        cfg: &DynamicConfig,
        fallback: PgState,
    ) -> PgState {
        let u = self.unanswered.get_or_insert(Unanswered {
            since: sent,
            progress_at: sent,
        });
        let sig = wal_signature(inst);
        if sig.is_some() && self.wal_signature.is_some() && sig != self.wal_signature {
            u.progress_at = now;
        }
        if sig.is_some() {
            self.wal_signature = sig;
        }
        let mut pg = self.last_good.clone().unwrap_or(fallback);
        pg.running = true;
        pg.unanswered = Some(*u);
        let verdict = hung::judge(&pg, cfg, now);
        if verdict.is_hung() {
            pg.role = Role::Unknown;
            pg.replicas.clear();
            pg.sync_names = None;
            pg.streaming = false;
        }
        tracing::debug!(%verdict, "PostgreSQL did not answer the probe in time");
        pg
    }

    /// The server stopped (or was killed): nothing to remember.
    pub fn reset(&mut self) {
        *self = Responsiveness::default();
    }
}

/// The newest WAL file's name, size and modification time; `None` when
/// `pg_wal` cannot be read (then no progress is ever seen).
fn wal_signature(inst: &Instance) -> Option<WalSignature> {
    let dir = std::fs::read_dir(inst.data_dir.join("pg_wal")).ok()?;
    dir.flatten()
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.len() == 24 && n.chars().all(|c| c.is_ascii_hexdigit())
        })
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((
                e.file_name().to_string_lossy().into_owned(),
                m.len(),
                m.modified().ok()?,
            ))
        })
        .max_by(|a, b| a.2.cmp(&b.2).then_with(|| a.0.cmp(&b.0)))
}

/// Kill a hung server: the immediate-stop signal, then, if the postmaster
/// still lives after `grace`, SIGKILL to it and every process whose parent
/// it is (a frozen process cannot act on a signal it could catch). Returns
/// once every one of them is gone, or fails after `limit`.
pub async fn kill_server(inst: &Instance, grace: Duration, limit: Duration) -> anyhow::Result<()> {
    let Some(pid) = inst.pid() else {
        return Ok(());
    };
    let children = children_of(pid);
    let _ = inst.signal_stop(pgha_postgres::StopMode::Immediate);
    let deadline = std::time::Instant::now() + limit;
    let quick = tokio::time::timeout(grace, pgha_postgres::wait_for_exit(pid as i32, POLL)).await;
    if quick.is_err() {
        tracing::warn!(
            pid,
            children = children.len(),
            "the postmaster did not stop: SIGKILL to it and its children"
        );
        for p in children.iter().copied().chain([pid]) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    for p in children.iter().copied().chain([pid]) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if tokio::time::timeout(left, pgha_postgres::wait_for_exit(p as i32, POLL))
            .await
            .is_err()
        {
            anyhow::bail!("process {p} of the hung PostgreSQL did not exit after SIGKILL");
        }
    }
    // The killed postmaster may stay a zombie until init reaps it, and
    // PostgreSQL (pg_rewind's crash recovery, a start) refuses to run over
    // its lock file meanwhile.
    inst.remove_stale_lock_files();
    Ok(())
}

const POLL: Duration = Duration::from_millis(20);

/// Processes whose parent is `pid` (from `/proc/*/stat`).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| parent_of(*p) == Some(pid))
        .collect()
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_of_this_process_is_found() {
        let me = std::process::id();
        assert_eq!(parent_of(me), Some(std::os::unix::process::parent_id()));
        assert!(children_of(std::os::unix::process::parent_id()).contains(&me));
    }

    #[test]
    fn the_deadline_is_a_third_of_hung_timeout_within_bounds() {
        let cfg = |ms| DynamicConfig {
            hung_timeout: Millis(ms),
            ..Default::default()
        };
        assert_eq!(probe_deadline(&cfg(6000)), Duration::from_secs(2));
        assert_eq!(probe_deadline(&cfg(3000)), Duration::from_secs(1));
        assert_eq!(probe_deadline(&cfg(100)), Duration::from_millis(200));
    }
}
