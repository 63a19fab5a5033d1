//! Simulated proxies: each publishes a record, runs client transactions on
//! the primary while not paused, pauses while a switchover request is
//! pending and reports "drained for" that request once its in-flight
//! transactions have ended. A *stuck* proxy never drains, so the leader's
//! `switchover_drain_timeout` is what lets the switchover go ahead.
//!
//! The proxies draw from their own random stream, so adding them leaves
//! the faults of an existing seed unchanged.

use crate::world::World;
use pgha_core::ProxyState;

const NEVER: u64 = u64::MAX / 4;

#[derive(Clone, Debug)]
pub struct SimProxy {
    pub name: String,
    /// Global end times of the transactions in flight on the primary.
    pub in_flight: Vec<u64>,
    pub stuck: bool,
}

impl World {
    /// Add a proxy (`stuck`: its transactions never end).
    pub fn add_proxy(&mut self, stuck: bool) {
        let name = format!("proxy{}", self.proxies.len() + 1);
        self.proxies.push(SimProxy {
            name,
            in_flight: Vec::new(),
            stuck,
        });
    }

    /// One step of every proxy: transactions end or start, then the
    /// record is published.
    pub fn step_proxies(&mut self) {
        let t = self.t;
        let paused_for = self
            .dcs
            .switchover
            .as_ref()
            .map(|_| self.dcs.switchover_revision);
        for k in 0..self.proxies.len() {
            let p = &mut self.proxies[k];
            p.in_flight.retain(|end| *end > t);
            if paused_for.is_none() && self.proxy_rng.chance(300) {
                let end = if p.stuck {
                    NEVER
                } else {
                    t + self.proxy_rng.range(100, 3000)
                };
                p.in_flight.push(end);
            }
            let state = ProxyState {
                paused: paused_for.is_some(),
                in_flight: if paused_for.is_some() {
                    p.in_flight.len() as u64
                } else {
                    0
                },
                drained_for: paused_for.filter(|_| p.in_flight.is_empty()),
            };
            let name = p.name.clone();
            self.dcs.publish_proxy(&name, state);
        }
    }

    /// Check at a graceful (switchover) shutdown of node `i`: every proxy
    /// drained for the request, or the drain timeout has passed (counted
    /// on the fastest clock a node may have, 3/2). Not checked when the
    /// node's clock jumped forward since the request: the drain timeout
    /// runs on that clock, so the jump legitimately ends it early (a
    /// transaction still in flight then fails; nothing acknowledged is lost).
    pub fn check_drain(&mut self, i: usize) {
        if self.dcs.switchover.is_none() {
            return;
        }
        if self.nodes[i]
            .jumped_forward_at
            .is_some_and(|at| at >= self.dcs.switchover_at)
        {
            let line = format!(
                "t={} {}: drain not checked, its clock jumped forward during it",
                self.t, self.nodes[i].name
            );
            self.note(line);
            return;
        }
        let rev = self.dcs.switchover_revision;
        let waited = self.t - self.dcs.switchover_at;
        let bound = self.dcs.config.switchover_drain_timeout.0 * 2 / 3;
        let pending: Vec<String> = self
            .proxies
            .iter()
            .filter(|p| {
                self.dcs
                    .proxies
                    .get(&p.name)
                    .is_none_or(|s| s.drained_for != Some(rev))
            })
            .map(|p| p.name.clone())
            .collect();
        if !pending.is_empty() && waited < bound {
            let what = format!(
                "{} shut down for a switchover {waited} ms after the request while {pending:?} had not drained",
                self.nodes[i].name
            );
            self.violate(what);
        }
        self.drained_shutdowns += u64::from(pending.is_empty());
    }
}
