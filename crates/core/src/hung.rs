//! A PostgreSQL that runs but does not answer: stalled, busy or hung.
//!
//! The agent probes its server every loop with a deadline (connect and the
//! status query). A probe that gets no answer in time starts a *stall*
//! ([`Unanswered`]); any answer ends it. During a stall the runtime also
//! watches for progress that needs no answer from the server: the newest
//! WAL file in `pg_wal` changing (name, size or modification time).
//!
//! The rule ([`judge`]), with T = `hung_timeout`:
//!
//! * no stall: **answering**;
//! * a stall shorter than T: **stalled**: the node keeps its role and
//!   everyone keeps counting it as it was (no flapping below T), and the
//!   agent takes no step that needs the server;
//! * a stall of T or more with WAL progress within the last T: **busy**:
//!   slow but working, keeps its role (said so in the reason);
//! * a stall of T or more without progress for T: **hung**: treated as
//!   failed. A primary is killed (immediate stop, SIGKILL to the postmaster
//!   and every child if that does not end them at once) and only then
//!   releases the leader key; a standby leaves the synchronous set and the
//!   proxies' read set (its record says role unknown).
//!
//! Why it cannot cause a split brain: the hung primary gives up the key
//! only after its processes are gone, so nothing of it can acknowledge a
//! commit once another member could be promoted; and the promotion itself
//! runs the usual rule (final LSNs of |S| - k + 1 members of S). If the
//! agent is frozen with its server, it cannot release anything: its lease
//! runs out as before.

use crate::local::PgState;
use crate::time::Millis;
use crate::view::DynamicConfig;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Runtime memory: the server has not answered a probe since `since`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unanswered {
    /// Local time the first probe that got no answer was sent.
    pub since: Millis,
    /// Last local time the runtime saw progress without an answer (WAL
    /// written); `since` until it sees any.
    pub progress_at: Millis,
}

/// What [`judge`] makes of the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Answering,
    /// Unanswered for less than `hung_timeout`.
    Stalled {
        for_: Millis,
    },
    /// Unanswered for `hung_timeout` or more, but WAL moved `progress_ago`.
    Busy {
        for_: Millis,
        progress_ago: Millis,
    },
    /// Unanswered and no progress for `hung_timeout` or more.
    Hung {
        for_: Millis,
    },
}

impl Verdict {
    /// The server is treated as failed.
    pub fn is_hung(self) -> bool {
        matches!(self, Verdict::Hung { .. })
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Answering => write!(f, "answering"),
            Verdict::Stalled { for_ } => write!(f, "stalled: no answer to probes for {for_}"),
            Verdict::Busy { for_, progress_ago } => write!(
                f,
                "busy: no answer to probes for {for_}, but WAL was written {progress_ago} ago"
            ),
            Verdict::Hung { for_ } => {
                write!(f, "hung: no answer to probes and no WAL written for {for_}")
            }
        }
    }
}

/// Judge the server by the rule in the module docs.
pub fn judge(pg: &PgState, cfg: &DynamicConfig, now: Millis) -> Verdict {
    let Some(u) = pg.unanswered.filter(|_| pg.running) else {
        return Verdict::Answering;
    };
    let for_ = now - u.since;
    let progress_ago = now - u.progress_at.max(u.since);
    if for_ < cfg.hung_timeout {
        Verdict::Stalled { for_ }
    } else if u.progress_at > u.since && progress_ago < cfg.hung_timeout {
        Verdict::Busy { for_, progress_ago }
    } else {
        Verdict::Hung { for_ }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg(since: u64, progress_at: u64) -> PgState {
        PgState {
            running: true,
            unanswered: Some(Unanswered {
                since: Millis(since),
                progress_at: Millis(progress_at),
            }),
            ..Default::default()
        }
    }

    /// hung_timeout 6 s by default; one row per case.
    #[test]
    fn judge_table() {
        let cfg = DynamicConfig::default();
        assert_eq!(cfg.hung_timeout, Millis(6000));
        let cases: Vec<(&str, PgState, u64, &str)> = vec![
            ("answers", PgState::default(), 10_000, "answering"),
            ("short stall", pg(1000, 1000), 6999, "stalled"),
            ("no progress for T", pg(1000, 1000), 7000, "hung"),
            ("WAL moved 1 s ago", pg(1000, 7000), 8000, "busy"),
            ("WAL moved T ago", pg(1000, 2000), 8000, "hung"),
            (
                "not running: nothing to judge",
                PgState {
                    running: false,
                    ..pg(0, 0)
                },
                60_000,
                "answering",
            ),
        ];
        for (what, state, now, want) in cases {
            let v = judge(&state, &cfg, Millis(now));
            assert!(v.to_string().starts_with(want), "{what}: {v}");
        }
    }
}
