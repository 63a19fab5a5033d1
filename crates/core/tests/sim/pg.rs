//! A fake PostgreSQL: WAL as a list of (record id, timeline), a standby
//! flag (`standby.signal`), `primary_conninfo`, `synchronous_standby_names`
//! and a fence flag, all persisted in the "data directory"; plus whether the
//! server runs and the commits waiting for synchronous acknowledgement.
//!
//! Record ids are globally unique, so two WALs share a prefix of length n
//! exactly when their n-th records are equal.

use pgha_core::{Lsn, Role, SyncStandbyNames, Timeline, WalPos};

#[derive(Clone, Debug)]
pub struct Data {
    pub wal: Vec<(u64, u32)>,
    pub standby_signal: bool,
    pub upstream: Option<String>,
    pub names: SyncStandbyNames,
    pub fenced: bool,
}

impl Data {
    pub fn position(&self) -> WalPos {
        let tl = self.wal.last().map_or(1, |(_, tl)| *tl);
        WalPos {
            timeline: Timeline(tl),
            lsn: Lsn(self.wal.len() as u64),
        }
    }

    /// `self` is a prefix of `other` (same history so far).
    pub fn is_prefix_of(&self, other: &Data) -> bool {
        let n = self.wal.len();
        n <= other.wal.len() && (n == 0 || self.wal[n - 1] == other.wal[n - 1])
    }

    pub fn contains(&self, id: u64, lsn: usize) -> bool {
        lsn >= 1 && self.wal.len() >= lsn && self.wal[lsn - 1].0 == id
    }

    /// Length of the common prefix with `other`.
    pub fn common_prefix(&self, other: &Data) -> usize {
        let max = self.wal.len().min(other.wal.len());
        // histories share a prefix then differ for good: binary search
        let (mut lo, mut hi) = (0, max);
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if self.wal[mid - 1] == other.wal[mid - 1] {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        lo
    }
}

/// A commit waiting for acknowledgement: record id and its LSN (1-based).
#[derive(Clone, Copy, Debug)]
pub struct Pending {
    pub id: u64,
    pub lsn: usize,
}

#[derive(Clone, Debug, Default)]
pub struct Pg {
    pub data: Option<Data>,
    pub running: bool,
    pub pending: Vec<Pending>,
    /// Computed each step: the WAL receiver streams from `upstream`.
    pub streaming: bool,
    /// Stopped by a graceful demote (a primary's clean shutdown), not a
    /// crash: the WAL ends with the shutdown checkpoint.
    pub clean: bool,
    /// Shut down cleanly (the control file says so) but the postmaster has
    /// not exited: `running` stays true, it takes no connections (role
    /// unknown) and its walsenders keep sending the rest of its WAL; it
    /// exits once its standbys have everything, or at any step after a
    /// timeout (see `World::step`).
    pub exiting: bool,
    /// Frozen (SIGSTOP, a stalled disk) until this global time: it answers
    /// no probe, sends and receives no WAL, acknowledges nothing, and only
    /// a kill ends it early.
    pub stalled_until: u64,
}

impl Pg {
    pub fn stalled(&self, t: u64) -> bool {
        self.running && t < self.stalled_until
    }

    pub fn role(&self) -> Role {
        match (&self.data, self.running) {
            _ if self.exiting => Role::Unknown,
            (Some(d), true) if d.standby_signal => Role::Standby,
            (Some(_), true) => Role::Primary,
            _ => Role::Unknown,
        }
    }

    pub fn is_primary(&self) -> bool {
        self.role() == Role::Primary
    }

    pub fn is_standby(&self) -> bool {
        self.role() == Role::Standby
    }

    /// Crash or stop: waiting commits are never acknowledged.
    pub fn stop(&mut self) {
        self.stalled_until = 0;
        self.running = false;
        self.clean = false;
        self.exiting = false;
        self.streaming = false;
        self.pending.clear();
    }

    /// The exiting postmaster of a clean shutdown exits.
    pub fn exit(&mut self) {
        self.running = false;
        self.exiting = false;
        self.streaming = false;
    }

    pub fn position(&self) -> WalPos {
        self.data
            .as_ref()
            .map_or_else(WalPos::default, Data::position)
    }
}
