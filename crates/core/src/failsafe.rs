//! Failsafe mode: a primary keeps taking writes while the DCS is
//! unreachable, as long as it can show that no other member can be
//! promoted meanwhile.
//!
//! # The rule
//!
//! Let (S, k) be the `/sync` record of the term this primary leads, as it
//! last read it. Past the point where its lease could expire, the primary
//! stays writable only while **at least k members of S hold an unexpired
//! promise to it** (k = 0, an asynchronous `/sync`, needs no promise: no
//! automatic promotion is possible then). As soon as fewer do, it fences
//! itself as without failsafe mode; when k promise again it lifts the fence.
//!
//! A promise is granted by a member M to leader P (over the agents' API,
//! token-authenticated; [`grant`]) only when M runs as a standby configured
//! to stream from P, has not detached (has reported no final LSN), and
//! either cannot read the DCS itself or reads P as the leader-key holder.
//! For [`promise_duration`] from receiving the request, M does not detach,
//! does not take the leader key, does not promote and does not follow
//! anyone else, whatever the DCS says ([`promised`]). P counts it from the
//! time it *sent* the request, for the duration less `fence_margin`
//! ([`Confirmations::record`]), so P's count runs out first.
//!
//! # Why no other member can be promoted
//!
//! Every automatic promotion needs the final LSN of |S| - k + 1 members of
//! S, each detached from P for P's term (`promotion.rs`). While k members of
//! S hold a promise, at most |S| - k members can have detached, one short:
//! no candidate can pass. The last established leader is P itself, and a
//! hand-over needs P to write `/sync`, which it cannot without the DCS. So
//! P's writes are never a dead end that a new timeline discards.
//!
//! Acknowledged commits were never at risk (that is the promotion rule's
//! job, with or without this mode: once |S| - k + 1 members of S detached,
//! P cannot gather k acknowledgements), and the promises cost no
//! availability the synchronous replication would not already cost: P can
//! only acknowledge commits while k members of S stream from it anyway.
//! Patroni's failsafe mode, by comparison, demands an answer from every
//! member in its `/failsafe` list, so one dead replica during a DCS outage
//! demotes the primary.
//!
//! Not covered: `pgha failover --allow-data-loss`, an operator's explicit
//! override of the promotion rule. A member holding a promise refuses it
//! until the promise expires; a member that promised nothing does not know
//! about the primary's failsafe state (stop the old primary first, as for
//! any forced failover).

use crate::local::LocalState;
use crate::sync::{brace_list, SyncSet};
use crate::time::Millis;
use crate::view::{DcsView, DynamicConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How long a member keeps a promise from the moment it receives the
/// request: `ttl - fence_margin` (1.5 s by default), less than the TTL so
/// that a primary that dies with promises out is not waited for longer
/// than its lease.
pub fn promise_duration(cfg: &DynamicConfig) -> Millis {
    cfg.ttl - cfg.fence_margin
}

/// What the leader asks for (the body of `POST /failsafe`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromiseRequest {
    /// The asking leader's member name.
    pub leader: String,
    /// Its term (the `/sync` term it leads).
    pub term: u64,
}

/// A promise a member holds (runtime memory of the standby's agent).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promise {
    pub leader: String,
    pub term: u64,
    /// Local time at which it was granted.
    #[serde(default)]
    pub granted_at: Millis,
    /// Local time until which the promise binds.
    pub until: Millis,
}

impl Promise {
    /// Binds at `now`: granted no later than `now` and not expired. A clock
    /// that went back past the grant voids it rather than stretching it (a
    /// promise only guards the leader's writes from being a dead end; the
    /// promotion rule guards acknowledged commits without it).
    pub fn active(&self, now: Millis) -> bool {
        self.granted_at <= now && now < self.until
    }
}

/// Decide a promise request on the member that receives it (see the module
/// docs for the conditions). `Err` says why not, for the leader's log.
pub fn grant(
    local: &LocalState,
    dcs: &DcsView,
    req: &PromiseRequest,
    now: Millis,
) -> Result<Promise, String> {
    let cfg = match dcs {
        DcsView::Unknown { last_config, .. } => last_config,
        DcsView::Known(v) => &v.config,
    };
    if !cfg.failsafe_mode {
        return Err("failsafe_mode is off in the cluster config".into());
    }
    if let Some(p) = local.promise.as_ref().filter(|p| p.active(now)) {
        if p.leader != req.leader {
            return Err(format!("I promised {} until {}", p.leader, p.until));
        }
    }
    let pg = &local.pg;
    if !pg.is_running_standby() {
        return Err("I do not run as a standby".into());
    }
    if pg.upstream.as_deref() != Some(req.leader.as_str()) {
        let up = pg.upstream.as_deref().unwrap_or("nobody");
        return Err(format!("I follow {up}, not {}", req.leader));
    }
    if let Some(d) = local.detached {
        return Err(format!(
            "I detached after term {} and may have reported my final LSN",
            d.after_term
        ));
    }
    if let DcsView::Known(v) = dcs {
        match &v.leader {
            Some(l) if l.holder == req.leader && l.term == req.term => {}
            Some(l) => {
                return Err(format!(
                    "the DCS is up for me and {} holds the leader key (term {})",
                    l.holder, l.term
                ))
            }
            None => return Err("the DCS is up for me and the leader key is free".into()),
        }
    }
    Ok(Promise {
        leader: req.leader.clone(),
        term: req.term,
        granted_at: now,
        until: now + promise_duration(cfg),
    })
}

/// The promise that binds this member now, if any: while it holds, the
/// member takes no step that could let anyone but the promised leader
/// promote (no detach, no leader key, no promotion, no other upstream).
pub fn promised(local: &LocalState, now: Millis) -> Option<&Promise> {
    local.promise.as_ref().filter(|p| p.active(now))
}

/// The leader's side: the sync set it must hear from and the promises it
/// holds, member -> local time until which it counts that member's promise.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmations {
    /// (S, k) of the `/sync` record of the leader's term, as last read.
    pub set: SyncSet,
    pub until: BTreeMap<String, Millis>,
}

impl Confirmations {
    pub fn new(set: SyncSet) -> Confirmations {
        Confirmations {
            set,
            until: BTreeMap::new(),
        }
    }

    /// `member` granted the promise asked for at local time `sent`.
    pub fn record(&mut self, member: &str, sent: Millis, cfg: &DynamicConfig) {
        let until = sent + promise_duration(cfg) - cfg.fence_margin;
        let e = self.until.entry(member.to_string()).or_insert(until);
        *e = (*e).max(until);
    }

    /// Members of S whose promise counts at `now`.
    pub fn holding(&self, now: Millis) -> Vec<&String> {
        self.set
            .members
            .iter()
            .filter(|m| self.until.get(*m).is_some_and(|u| now < *u))
            .collect()
    }

    /// When the rule stops holding unless promises are renewed: the k-th
    /// latest expiry among the promises that count. `None` when it does
    /// not hold now or needs no promise.
    pub fn runs_out_at(&self, now: Millis) -> Option<Millis> {
        let need = self.needed();
        let mut untils: Vec<Millis> = self.holding(now).iter().map(|m| self.until[*m]).collect();
        untils.sort_unstable_by(|a, b| b.cmp(a));
        need.checked_sub(1).and_then(|i| untils.get(i).copied())
    }

    /// How many promises the rule needs: k, or 0 when `/sync` allows no
    /// promotion.
    pub fn needed(&self) -> usize {
        self.set
            .promotion_quorum()
            .map_or(0, |_| self.set.quorum as usize)
    }
}

/// The rule for the primary: `Ok` with the explanation when it may keep
/// (or resume) taking writes past its lease, `Err` with why not.
pub fn writes_may_continue(
    conf: Option<&Confirmations>,
    cfg: &DynamicConfig,
    now: Millis,
) -> Result<String, String> {
    if !cfg.failsafe_mode {
        return Err("failsafe_mode is off".into());
    }
    let Some(c) = conf else {
        return Err("no /sync record of my term to check promises against".into());
    };
    let need = c.needed();
    let have = c.holding(now);
    if need == 0 {
        return Ok("failsafe: /sync allows no automatic promotion, nobody can take over".into());
    }
    let names = brace_list(have.iter().copied());
    if have.len() >= need {
        Ok(format!(
            "failsafe: {names} promised not to promote ({need} of {} needed): nobody can take over",
            c.set.names()
        ))
    } else {
        Err(format!(
            "failsafe: only {} of {} promised ({names}), {need} needed",
            have.len(),
            c.set.names()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::testutil::*;

    fn unknown() -> DcsView {
        DcsView::Unknown {
            error: "down".into(),
            last_config: DynamicConfig::default(),
        }
    }

    fn req() -> PromiseRequest {
        PromiseRequest {
            leader: "node1".into(),
            term: 5,
        }
    }

    fn standby() -> Node {
        Node::new("node2").running_standby(Some("node1"), pos(1, 100))
    }

    /// Who grants a promise to node1 (term 5), one row per case.
    #[test]
    fn grant_table() {
        let up = |v: View| v.build();
        let cases: Vec<(&str, Node, DcsView, bool)> = vec![
            ("DCS down, following node1", standby(), unknown(), true),
            (
                "DCS up, node1 holds the key",
                standby(),
                up(View::new().leader("node1", 5)),
                true,
            ),
            ("DCS up, key free", standby(), up(View::new()), false),
            (
                "DCS up, key held by another term",
                standby(),
                up(View::new().leader("node1", 9)),
                false,
            ),
            (
                "DCS up, node3 holds the key",
                standby(),
                up(View::new().leader("node3", 9)),
                false,
            ),
            (
                "follows someone else",
                Node::new("node2").running_standby(Some("node3"), pos(1, 100)),
                unknown(),
                false,
            ),
            ("detached", standby().detached(5), unknown(), false),
            (
                "runs as primary",
                Node::new("node2").running_primary(pos(1, 100)),
                unknown(),
                false,
            ),
            (
                "PostgreSQL stopped",
                Node::new("node2").stopped(crate::DataDir::Standby, pos(1, 100)),
                unknown(),
                false,
            ),
            (
                "failsafe_mode off",
                standby(),
                DcsView::Unknown {
                    error: "down".into(),
                    last_config: DynamicConfig {
                        failsafe_mode: false,
                        ..Default::default()
                    },
                },
                false,
            ),
            (
                "promised another leader",
                standby().edit(|l| {
                    l.promise = Some(Promise {
                        leader: "node3".into(),
                        term: 9,
                        granted_at: Millis(0),
                        until: Millis(2000),
                    })
                }),
                unknown(),
                false,
            ),
            (
                "expired promise to another leader",
                standby().edit(|l| {
                    l.promise = Some(Promise {
                        leader: "node3".into(),
                        term: 9,
                        granted_at: Millis(0),
                        until: Millis(1000),
                    })
                }),
                unknown(),
                true,
            ),
        ];
        for (what, node, view, ok) in cases {
            let r = grant(&node.0, &view, &req(), Millis(1000));
            assert_eq!(r.is_ok(), ok, "{what}: {r:?}");
            if let Ok(p) = r {
                assert_eq!(p.until, Millis(2500), "{what}: 1.5 s from receipt");
            }
        }
    }

    fn conf(members: &[&str], k: u32, promised: &[(&str, u64)]) -> Confirmations {
        let mut c = Confirmations::new(set(members, k));
        for (m, sent) in promised {
            c.record(m, Millis(*sent), &DynamicConfig::default());
        }
        c
    }

    /// When the primary may write past its lease: k of S promised, counted
    /// for 1 s from the send time (1.5 s promise less the 0.5 s margin).
    #[test]
    fn writes_may_continue_table() {
        let cfg = DynamicConfig::default();
        let cases: Vec<(&str, Confirmations, u64, bool)> = vec![
            (
                "k=1 of 2, one promise",
                conf(&["b", "c"], 1, &[("b", 0)]),
                999,
                true,
            ),
            (
                "k=1 of 2, promise ran out",
                conf(&["b", "c"], 1, &[("b", 0)]),
                1000,
                false,
            ),
            ("k=1 of 2, none", conf(&["b", "c"], 1, &[]), 10, false),
            (
                "k=2 of 3, one",
                conf(&["b", "c", "d"], 2, &[("b", 0)]),
                10,
                false,
            ),
            (
                "k=2 of 3, two",
                conf(&["b", "c", "d"], 2, &[("b", 0), ("d", 500)]),
                900,
                true,
            ),
            (
                "k=2 of 3, the older one ran out",
                conf(&["b", "c", "d"], 2, &[("b", 0), ("d", 500)]),
                1000,
                false,
            ),
            (
                "async /sync: nobody can promote",
                conf(&[], 0, &[]),
                10,
                true,
            ),
            (
                "a promise from outside S does not count",
                conf(&["b"], 1, &[("x", 0)]),
                10,
                false,
            ),
        ];
        for (what, c, now, ok) in cases {
            let r = writes_may_continue(Some(&c), &cfg, Millis(now));
            assert_eq!(r.is_ok(), ok, "{what}: {r:?}");
        }
        let off = DynamicConfig {
            failsafe_mode: false,
            ..Default::default()
        };
        let c = conf(&["b"], 1, &[("b", 0)]);
        assert!(writes_may_continue(Some(&c), &off, Millis(10)).is_err());
        assert!(writes_may_continue(None, &cfg, Millis(10)).is_err());
    }

    /// The member's promise outlasts the leader's count of it by the
    /// margin, whatever the delivery delay.
    #[test]
    fn the_leader_counts_a_promise_for_less_than_it_binds() {
        let cfg = DynamicConfig::default();
        for delay in [0, 1, 400] {
            let mut c = Confirmations::new(set(&["node2"], 1));
            c.record("node2", Millis(1000), &cfg);
            let p = grant(&standby().0, &unknown(), &req(), Millis(1000 + delay)).unwrap();
            assert!(c.until["node2"] + cfg.fence_margin <= p.until);
        }
    }
}
