//! Failsafe mode in the simulator: the leader asks the members of its
//! `/sync` set for promises while it cannot read the DCS (as the agent's
//! `POST /failsafe` does), and the whole-DCS outage fault.
//!
//! A promise request reaches member j only over an intact link to a
//! running agent; j answers by the core's own `failsafe::grant` on its own
//! observation and its own view of the DCS (unknown when it is cut off
//! too). The leader counts a promise from its send time, on its own clock.

use crate::world::World;
use pgha_core::failsafe::grant;
use pgha_core::{Confirmations, DcsView, PromiseRequest};
use std::sync::atomic::{AtomicU64, Ordering};

/// Loops in which a primary past its lease kept taking writes by the
/// failsafe rule, over all seeds run in this process (for the summary).
pub static FAILSAFE_LOOPS: AtomicU64 = AtomicU64::new(0);

impl World {
    /// Keep node `i`'s failsafe target in step with a view it read: the
    /// `/sync` set of the term it leads (or led last, while nobody else
    /// holds the key); nothing otherwise.
    pub fn track_failsafe(&mut self, i: usize, view: &DcsView) {
        let DcsView::Known(v) = view else {
            return;
        };
        let me = self.nodes[i].name.clone();
        let led_last = v.sync.as_ref().is_some_and(|s| s.leader == me);
        let key_ok = v.leader.as_ref().is_none_or(|l| l.holder == me);
        let n = &mut self.nodes[i];
        if !(led_last && key_ok) {
            n.mem.failsafe = None;
            return;
        }
        let set = v.sync_set();
        let term = v.sync_term();
        if n.mem.failsafe.as_ref().map(|c| &c.set) != Some(&set) || n.mem.failsafe_term != term {
            n.mem.failsafe = Some(Confirmations::new(set));
            n.mem.failsafe_term = term;
        }
    }

    /// One round of promise requests from node `i` (a primary that cannot
    /// read the DCS) to the members of its set.
    pub fn ask_promises(&mut self, i: usize) {
        let t = self.t;
        let Some(conf) = self.nodes[i].mem.failsafe.clone() else {
            return;
        };
        let cfg = self.nodes[i].mem.last_config.clone();
        if !self.nodes[i].pg.is_primary() || !cfg.failsafe_mode {
            return;
        }
        let req = PromiseRequest {
            leader: self.nodes[i].name.clone(),
            term: self.nodes[i].mem.failsafe_term,
        };
        let sent = self.nodes[i].local_now(t);
        for m in &conf.set.members {
            let Some(j) = self.index(m).filter(|j| *j != i) else {
                continue;
            };
            if !self.link_up(i, j) || !self.nodes[j].runnable(t) {
                continue;
            }
            let view = if self.nodes[j].dcs_cut(t) {
                DcsView::Unknown {
                    error: "partitioned".into(),
                    last_config: self.nodes[j].mem.last_config.clone(),
                }
            } else {
                DcsView::Known(self.dcs.view())
            };
            let local = self.observe(j, &view);
            let now_j = self.nodes[j].local_now(t);
            match grant(&local, &view, &req, now_j) {
                Ok(p) => {
                    self.nodes[j].mem.promise = Some(p);
                    if let Some(c) = self.nodes[i].mem.failsafe.as_mut() {
                        c.record(m, sent, &cfg);
                    }
                }
                Err(why) if self.verbose => {
                    self.note(format!(
                        "t={t} {m} refuses a promise to {}: {why}",
                        req.leader
                    ));
                }
                Err(_) => {}
            }
        }
    }

    /// Count a loop that kept writes going by the failsafe rule.
    pub fn note_failsafe_loop(&self, reason: &str) {
        if reason.contains("failsafe:") && reason.contains("accepting writes") {
            FAILSAFE_LOOPS.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The whole DCS is unreachable for every agent until `until` (on top
    /// of any single-node cut). With `frozen`, the DCS's own clock stops
    /// meanwhile and every lease gets a full TTL back when it returns, as
    /// etcd does on restart; otherwise leases run out during the outage
    /// (an etcd that lost them).
    pub fn dcs_outage(&mut self, until: u64, frozen: bool) {
        for n in self.nodes.iter_mut() {
            n.dcs_cut_until = n.dcs_cut_until.max(until);
        }
        if frozen {
            self.dcs.frozen_until = until;
        }
    }
}
