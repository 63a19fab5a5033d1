//! One simulated node: its PostgreSQL, its agent's memory and clock, and
//! the fault timers that apply to it.

use crate::pg::Pg;
use pgha_core::{
    Confirmations, Detached, DynamicConfig, LeaseState, Lsn, Millis, Promise, SwitchoverSeen,
    SyncInDoubt, Tags,
};

/// What the agent process keeps between loops (lost when it crashes).
#[derive(Clone, Debug, Default)]
pub struct Mem {
    pub lease: Option<LeaseState>,
    pub detached: Option<Detached>,
    pub applied_at: Option<Lsn>,
    pub stopped_since: Option<Millis>,
    pub rewind_failed: bool,
    pub last_config: DynamicConfig,
    pub switchover_seen: Option<SwitchoverSeen>,
    /// The `/sync` revision of the view of the current loop (the expected
    /// revision of its `/sync` write).
    pub sync_revision: u64,
    pub sync_in_doubt: Option<SyncInDoubt>,
    /// A view was read since the agent (re)started.
    pub viewed: bool,
    /// Standby: the failsafe promise it gave (lost with the agent).
    pub promise: Option<Promise>,
    /// Leader: the promises it holds, against its `/sync` set, and the term
    /// it asks them for.
    pub failsafe: Option<Confirmations>,
    pub failsafe_term: u64,
    /// The server has not answered since (see `pgha_core::hung`).
    pub unanswered: Option<pgha_core::hung::Unanswered>,
    pub gave_up_hung_at: Option<Millis>,
}

#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub pg: Pg,
    pub tags: Tags,
    pub mem: Mem,
    /// Agent process is running (it may still be hung).
    pub agent_up: bool,
    /// Agent restarts at this global time when down.
    pub restart_at: u64,
    /// Agent is stopped (SIGSTOP) until this global time.
    pub hung_until: u64,
    /// Cut off from the DCS until this global time.
    pub dcs_cut_until: u64,
    /// Local clock = offset + t * rate.0 / rate.1.
    pub rate: (u64, u64),
    pub offset: i64,
    pub next_tick: u64,
    /// Fault: the next `/sync` write (or hand-over) this agent sends is held
    /// in the network this many ms and lands late; the agent sees a timeout.
    pub delay_next_sync: Option<u64>,
    /// Global time of the latest forward jump of the local clock.
    pub jumped_forward_at: Option<u64>,
}

impl Node {
    pub fn new(name: String, rate: (u64, u64)) -> Node {
        Node {
            name,
            pg: Pg::default(),
            tags: Tags::default(),
            mem: Mem::default(),
            agent_up: true,
            restart_at: 0,
            hung_until: 0,
            dcs_cut_until: 0,
            rate,
            offset: 1_000_000,
            next_tick: 0,
            delay_next_sync: None,
            jumped_forward_at: None,
        }
    }

    pub fn local_now(&self, t: u64) -> Millis {
        let scaled = (t * self.rate.0 / self.rate.1) as i64;
        Millis((self.offset + scaled).max(0) as u64)
    }

    /// Change the clock rate without a jump in local time.
    pub fn set_rate(&mut self, t: u64, rate: (u64, u64)) {
        let now = self.local_now(t).0 as i64;
        self.rate = rate;
        self.offset = now - (t * rate.0 / rate.1) as i64;
    }

    /// The local clock jumps by `delta_ms` (forward or backward), keeping
    /// its rate (an NTP step, a VM resumed after a pause). It never goes
    /// below zero.
    pub fn jump(&mut self, t: u64, delta_ms: i64) {
        let now = self.local_now(t).0 as i64;
        self.offset += delta_ms.max(-now);
        if delta_ms > 0 {
            self.jumped_forward_at = Some(t);
        }
    }

    /// Local duration to global.
    pub fn to_global(&self, local: Millis) -> u64 {
        local.0 * self.rate.1 / self.rate.0
    }

    pub fn runnable(&self, t: u64) -> bool {
        self.agent_up && t >= self.hung_until
    }

    pub fn dcs_cut(&self, t: u64) -> bool {
        t < self.dcs_cut_until
    }

    /// The agent process dies: its memory is gone.
    pub fn crash_agent(&mut self, restart_at: u64) {
        self.agent_up = false;
        self.restart_at = restart_at;
        self.hung_until = 0;
        self.mem = Mem::default();
    }
}
