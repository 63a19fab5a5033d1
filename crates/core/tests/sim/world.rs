//! The simulated cluster: nodes, the fake DCS, links, a workload that
//! commits on every writable primary, seeded faults, and the invariant
//! checks of DESIGN.md after every step.
//!
//! Invariants: (1) a node that becomes primary holds every acknowledged
//! commit; (2) a commit acknowledged anywhere is held by the owner of the
//! newest timeline (so two primaries can never both acknowledge: the older
//! one's acknowledgements would be missing from the newer history);
//! (3) after faults heal, a writable primary exists and acknowledges a
//! commit within a bound.

use crate::dcs::Dcs;
use crate::node::Node;
use crate::rng::Rng;
use pgha_core::{decide, Action, DcsView, DynamicConfig, SyncInDoubt, SyncStandbyNames};
use std::collections::{BTreeMap, VecDeque};

pub const STEP: u64 = 100;
const LOG_LINES: usize = 400;

pub struct World {
    pub t: u64,
    pub rng: Rng,
    pub dcs: Dcs,
    pub nodes: Vec<Node>,
    /// Links (i < j) cut until a global time.
    pub cut: BTreeMap<(usize, usize), u64>,
    /// Links (i < j) slow until a global time.
    pub slow: BTreeMap<(usize, usize), u64>,
    next_id: u64,
    pub max_tl: u32,
    pub tl_owner: Option<usize>,
    /// Acknowledged commits: (record id, LSN).
    pub acked: Vec<(u64, usize)>,
    pub failovers: u64,
    pub log: VecDeque<String>,
    pub violation: Option<String>,
    pub verbose: bool,
    view_cache: Option<((u64, bool), DcsView)>,
    pub proxies: Vec<crate::proxy::SimProxy>,
    pub proxy_rng: Rng,
    /// Switchover shutdowns that found every proxy drained.
    pub drained_shutdowns: u64,
    /// Draws the faults added after the first fault set (clock jumps,
    /// late `/sync` writes), so that the original faults of every seed
    /// stay what they were.
    pub extra_rng: Rng,
    /// `/sync` writes held in the network; the DCS checks their guard when
    /// they land.
    pub late: Vec<LateWrite>,
    /// Whether a late write may land while its sender's term still runs
    /// (on in the random runs; then only `/sync`'s own mod revision can
    /// refuse it). Off, it is held until its term ended, which checks the
    /// term guard alone.
    pub late_within_term: bool,
    /// Late `/sync` writes the DCS refused (a count for the summary).
    pub late_refused: u64,
}

/// A `/sync` write (`WriteSyncKey` or `HandOver`) held in the network.
pub struct LateWrite {
    pub from: usize,
    pub action: Action,
    /// The `/sync` mod revision it is conditional on.
    pub expected: u64,
    /// How long it stays held (after its term ended, unless
    /// `World::late_within_term`).
    pub delay: u64,
    /// Global time it lands, once known.
    pub due: Option<u64>,
}

impl LateWrite {
    fn term(&self) -> Option<u64> {
        match &self.action {
            Action::WriteSyncKey(r) | Action::HandOver(r) => Some(r.term),
            _ => None,
        }
    }
}

impl World {
    pub fn new(seed: u64, names: usize, config: DynamicConfig) -> World {
        let nodes = (1..=names)
            .map(|k| Node::new(format!("node{k}"), (1, 1)))
            .collect();
        World {
            t: 0,
            rng: Rng::new(seed),
            dcs: Dcs::new(config),
            nodes,
            cut: BTreeMap::new(),
            slow: BTreeMap::new(),
            next_id: 0,
            max_tl: 1,
            tl_owner: None,
            acked: Vec::new(),
            failovers: 0,
            log: VecDeque::new(),
            violation: None,
            verbose: false,
            view_cache: None,
            proxies: Vec::new(),
            proxy_rng: Rng::new(seed ^ 0x5052_4f58_5921),
            drained_shutdowns: 0,
            extra_rng: Rng::new(seed ^ 0xC10C_4A11_5EED),
            late: Vec::new(),
            late_within_term: true,
            late_refused: 0,
        }
    }

    pub fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub fn index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    pub fn link_up(&self, i: usize, j: usize) -> bool {
        let key = (i.min(j), i.max(j));
        self.cut.get(&key).is_none_or(|until| self.t >= *until)
    }

    fn link_slow(&self, i: usize, j: usize) -> bool {
        let key = (i.min(j), i.max(j));
        self.slow.get(&key).is_some_and(|until| self.t < *until)
    }

    pub fn note(&mut self, line: String) {
        if self.verbose {
            println!("{line}");
        }
        if self.log.len() == LOG_LINES {
            self.log.pop_front();
        }
        self.log.push_back(line);
    }

    pub fn violate(&mut self, what: String) {
        if self.violation.is_none() {
            self.note(format!("t={} VIOLATION: {what}", self.t));
            self.violation = Some(what);
        }
    }

    pub fn note_timeline(&mut self, i: usize, tl: u32) {
        if tl >= self.max_tl || self.tl_owner.is_none() {
            self.max_tl = self.max_tl.max(tl);
            self.tl_owner = Some(i);
        }
    }

    /// Invariant 1: a new primary holds every acknowledged commit.
    pub fn check_new_primary(&mut self, i: usize, how: &str) {
        let Some(d) = self.nodes[i].pg.data.as_ref() else {
            return;
        };
        if let Some((id, lsn)) = self.acked.iter().find(|(id, lsn)| !d.contains(*id, *lsn)) {
            let what = format!(
                "{} {how} without acknowledged commit {id} (LSN {lsn})",
                self.nodes[i].name
            );
            self.violate(what);
        }
    }

    /// One simulated step: time, replication, workload, agents, checks.
    pub fn step(&mut self) {
        self.t += STEP;
        self.dcs.expire(self.t);
        self.deliver_late_writes();
        for n in self.nodes.iter_mut() {
            if !n.agent_up && self.t >= n.restart_at {
                n.agent_up = true;
                n.next_tick = self.t;
            }
        }
        self.replicate();
        self.finish_exits();
        self.workload();
        self.step_proxies();
        let k = self.nodes.len();
        let start = self.rng.below(k as u64) as usize;
        for r in 0..k {
            let i = (start + r) % k;
            if self.nodes[i].runnable(self.t) && self.t >= self.nodes[i].next_tick {
                self.tick(i);
            }
        }
    }

    /// Hold a `/sync` write of node `i` in the network.
    pub fn hold_late(&mut self, i: usize, action: &Action, expected: u64, delay: u64) {
        let due = self.late_within_term.then_some(self.t + delay);
        self.late.push(LateWrite {
            from: i,
            action: action.clone(),
            expected,
            delay,
            due,
        });
    }

    /// `/sync` writes held in the network land when due, guarded by what
    /// the DCS holds then.
    fn deliver_late_writes(&mut self) {
        let t = self.t;
        let term = self.dcs.leader.as_ref().map(|(k, _)| k.term);
        for w in self.late.iter_mut() {
            if w.due.is_none() && term != w.term() {
                w.due = Some(t + w.delay);
            }
        }
        let (due, kept) = std::mem::take(&mut self.late)
            .into_iter()
            .partition(|w| w.due.is_some_and(|at| at <= t));
        self.late = kept;
        for w in due {
            let name = self.nodes[w.from].name.clone();
            let term_now = self.dcs.leader.as_ref().map(|(k, _)| k.term);
            let sync_now = self.dcs.sync_revision;
            let landed = match &w.action {
                Action::WriteSyncKey(r) => self.dcs.write_sync(r.clone(), &name, w.expected),
                Action::HandOver(r) => self.dcs.hand_over(r.clone(), &name, w.expected),
                _ => false,
            };
            self.late_refused += u64::from(!landed);
            let outcome = if landed { "landed" } else { "refused" };
            self.note(format!(
                "t={t} late write from {name} {outcome}: {}",
                w.action
            ));
            if landed && (term_now != w.term() || sync_now != w.expected) {
                self.violate(format!(
                    "a /sync write from {name} landed though its term {:?} ended or /sync \
                     moved past revision {}: {}",
                    w.term(),
                    w.expected,
                    w.action
                ));
            }
        }
    }

    /// A postmaster that shut down cleanly exits once every standby
    /// streaming from it has all of its WAL (its walsenders wait for that),
    /// or at any step with a small chance (wal_sender_timeout, a partition).
    fn finish_exits(&mut self) {
        for i in 0..self.nodes.len() {
            if !self.nodes[i].pg.exiting {
                continue;
            }
            let me = &self.nodes[i].name;
            let end = self.nodes[i].pg.data.as_ref().map_or(0, |d| d.wal.len());
            let waiting = self.nodes.iter().any(|s| {
                s.pg.streaming
                    && s.pg.data.as_ref().and_then(|d| d.upstream.as_ref()) == Some(me)
                    && s.pg.data.as_ref().map_or(0, |d| d.wal.len()) < end
            });
            if !waiting || self.rng.chance(50) {
                self.nodes[i].pg.exit();
            }
        }
    }

    /// Streaming: each standby copies from its upstream if their histories
    /// agree and the link is up.
    fn replicate(&mut self) {
        for i in 0..self.nodes.len() {
            let up = self.nodes[i]
                .pg
                .data
                .as_ref()
                .and_then(|d| d.upstream.clone());
            let j = up.and_then(|u| self.index(&u));
            let t = self.t;
            let ok = self.nodes[i].pg.is_standby()
                && !self.nodes[i].pg.stalled(t)
                && j.is_some_and(|j| {
                    j != i
                        && self.link_up(i, j)
                        && self.nodes[j].pg.running
                        && !self.nodes[j].pg.stalled(t)
                });
            let Some(j) = j.filter(|_| ok) else {
                self.nodes[i].pg.streaming = false;
                continue;
            };
            let bw = if self.link_slow(i, j) {
                self.rng.below(2)
            } else {
                self.rng.range(1, 4)
            } as usize;
            let (Some(src), Some(dst)) = (&self.nodes[j].pg.data, &self.nodes[i].pg.data) else {
                continue;
            };
            if !dst.is_prefix_of(src) {
                self.nodes[i].pg.streaming = false;
                continue;
            }
            let from = dst.wal.len();
            let end = (from + bw).min(src.wal.len());
            let chunk = src.wal[from..end].to_vec();
            if let Some(dst) = self.nodes[i].pg.data.as_mut() {
                dst.wal.extend_from_slice(&chunk);
            }
            self.nodes[i].pg.streaming = true;
        }
    }

    /// Clients commit on every running, unfenced primary; commits are
    /// acknowledged per `synchronous_standby_names` (ANY k semantics).
    fn workload(&mut self) {
        for i in 0..self.nodes.len() {
            let n = &self.nodes[i];
            let writable = n.pg.is_primary() && n.pg.data.as_ref().is_some_and(|d| !d.fenced);
            if n.pg.stalled(self.t) {
                continue;
            }
            if writable && self.rng.chance(600) {
                self.write_commit(i);
            }
            self.acknowledge(i);
        }
    }

    fn acknowledge(&mut self, i: usize) {
        if !self.nodes[i].pg.is_primary() || self.nodes[i].pg.pending.is_empty() {
            return;
        }
        let me = self.nodes[i].name.clone();
        let acks: Vec<(String, usize)> = self
            .nodes
            .iter()
            .filter(|s| {
                s.pg.streaming && s.pg.data.as_ref().and_then(|d| d.upstream.as_ref()) == Some(&me)
            })
            .map(|s| (s.name.clone(), s.pg.position().lsn.0 as usize))
            .collect();
        let names = self.nodes[i].pg.data.as_ref().map(|d| d.names.clone());
        let pending = std::mem::take(&mut self.nodes[i].pg.pending);
        let mut still = Vec::new();
        for p in pending {
            let have = |name: Option<&std::collections::BTreeSet<String>>| {
                acks.iter()
                    .filter(|(n, lsn)| *lsn >= p.lsn && name.is_none_or(|s| s.contains(n)))
                    .count()
            };
            let ok = match &names {
                Some(SyncStandbyNames::Async) => true,
                Some(SyncStandbyNames::AnyStandby) => have(None) >= 1,
                Some(SyncStandbyNames::Quorum(s)) => have(Some(&s.members)) >= s.quorum as usize,
                None => false,
            };
            if ok {
                self.on_ack(i, p.id, p.lsn);
            } else {
                still.push(p);
            }
        }
        self.nodes[i].pg.pending = still;
    }

    /// Invariant 2: the acknowledged commit is in the newest history.
    fn on_ack(&mut self, i: usize, id: u64, lsn: usize) {
        self.acked.push((id, lsn));
        let Some(o) = self.tl_owner.filter(|o| *o != i) else {
            return;
        };
        let held = self.nodes[o]
            .pg
            .data
            .as_ref()
            .is_some_and(|d| d.contains(id, lsn));
        if !held {
            let what = format!(
                "{} acknowledged commit {id} (LSN {lsn}) that the newest timeline {} (by {}) lacks",
                self.nodes[i].name, self.max_tl, self.nodes[o].name
            );
            self.violate(what);
        }
    }

    /// One agent loop on node `i`.
    fn tick(&mut self, i: usize) {
        let view = if self.nodes[i].dcs_cut(self.t) {
            DcsView::Unknown {
                error: "partitioned".into(),
                last_config: self.nodes[i].mem.last_config.clone(),
            }
        } else {
            self.nodes[i].mem.last_config = self.dcs.config.clone();
            self.cached_view()
        };
        self.track_failsafe(i, &view);
        if matches!(view, DcsView::Unknown { .. }) {
            self.ask_promises(i);
        }
        if let DcsView::Known(v) = &view {
            let n = &mut self.nodes[i];
            n.mem.sync_revision = v.sync_revision;
            if !n.mem.viewed {
                n.mem.viewed = true;
                n.mem.sync_in_doubt = SyncInDoubt::after_restart(v, &n.name);
            }
        }
        let local = self.observe(i, &view);
        let now = self.nodes[i].local_now(self.t);
        let d = decide(&local, &view, now);
        self.note_failsafe_loop(&d.reason);
        let routine = matches!(d.steps()[..], [] | [Action::RenewLeader]);
        if !routine || self.verbose {
            let steps: Vec<String> = d.steps().iter().map(|a| a.to_string()).collect();
            let line = format!(
                "t={} {}: [{}] {}",
                self.t,
                local.name,
                steps.join(", "),
                d.reason
            );
            self.note(line);
        }
        for a in &d.actions {
            if let Err(e) = self.execute(i, a) {
                let line = format!("t={} {}: {a} failed: {e}", self.t, local.name);
                self.note(line);
                break;
            }
        }
        let wait = self.nodes[i].to_global(d.wake_in).max(STEP);
        let jitter = self.rng.below(2) * STEP;
        self.nodes[i].next_tick = self.t + wait + jitter;
    }

    /// The DCS view, rebuilt only when the store changed.
    fn cached_view(&mut self) -> DcsView {
        let key = (self.dcs.revision, self.dcs.config.paused);
        match &self.view_cache {
            Some((k, v)) if *k == key => v.clone(),
            _ => {
                let v = DcsView::Known(self.dcs.view());
                self.view_cache = Some((key, v.clone()));
                v
            }
        }
    }

    /// A node whose primary holds the lease, has claimed its term and takes
    /// writes.
    pub fn writable_primary(&self) -> Option<usize> {
        let holder = self.dcs.holder()?;
        let sync_ok = self.dcs.sync.as_ref().is_some_and(|s| s.leader == holder);
        let i = self.index(holder)?;
        let n = &self.nodes[i];
        let ok = sync_ok && n.pg.is_primary() && n.pg.data.as_ref().is_some_and(|d| !d.fenced);
        ok.then_some(i)
    }

    pub fn dump(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            let d = n.pg.data.as_ref();
            out.push_str(&format!(
                "  {}: agent_up={} running={} role={:?} pos={} upstream={:?} streaming={} names={:?} lease={:?} detached={:?}\n",
                n.name, n.agent_up, n.pg.running, n.pg.role(), n.pg.position(),
                d.and_then(|d| d.upstream.clone()), n.pg.streaming, d.map(|d| d.names.to_postgres()),
                n.mem.lease, n.mem.detached,
            ));
        }
        out.push_str(&format!(
            "  dcs leader={:?} sync={:?}\n",
            self.dcs.leader, self.dcs.sync
        ));
        out
    }
}
