//! `decide`: one observation in, one [`Decision`] out.
//!
//! The rules are split by who holds the leader key: this node
//! (`leader.rs`), another node (`follower.rs`), or nobody (`election.rs`).
//! Before that, two cases override everything: the DCS could not be read
//! (fence a primary whose lease is running out, otherwise do nothing) and
//! paused mode (publish and keep the lease, nothing else).
//!
//! Hazard: `decide` must stay pure and total: no clock, no I/O, no panics
//! on any input. The simulator calls it millions of times.

mod election;
mod follower;
mod leader;

use crate::failsafe;
use crate::hung::{self, Verdict};

use crate::action::{Action, Decision, DemoteKind, Upstream};
use crate::local::LocalState;
use crate::member::{MemberState, Role};
use crate::promotion::Candidate;
use crate::time::Millis;
use crate::view::{ClusterView, DcsView, DynamicConfig};

/// Decide what this node does now. See the crate docs for the loop.
pub fn decide(local: &LocalState, dcs: &DcsView, now: Millis) -> Decision {
    match dcs {
        DcsView::Unknown { error, last_config } => dcs_unknown(local, error, last_config, now),
        DcsView::Known(view) => {
            let ctx = Ctx { local, view, now };
            let mut d = if let Some(hold) = keep_promise(&ctx) {
                hold
            } else if let Some(d) = not_answering(&ctx) {
                d
            } else if view.config.paused {
                paused(&ctx)
            } else {
                match &view.leader {
                    Some(l) if l.holder == local.name => leader::decide(&ctx, l.term),
                    Some(l) => follower::decide(&ctx, &l.holder),
                    None => election::decide(&ctx),
                }
            };
            // First, so that everyone sees this node's state before what it
            // does next; except at a hand-over: there the record (now
            // "exiting") would wake the target one loop before the key is
            // free, so it follows the hand-over (if that fails, the record
            // waits for the next loop).
            let publish = Action::PublishMember(member_record(local));
            if d.actions.iter().any(|a| matches!(a, Action::HandOver(_))) {
                d.actions.push(publish);
            } else {
                d.actions.insert(0, publish);
            }
            d
        }
    }
}

/// The member record this node publishes, built from its observation.
pub fn member_record(local: &LocalState) -> MemberState {
    let pg = &local.pg;
    MemberState {
        name: local.name.clone(),
        role: if pg.running { pg.role } else { Role::Unknown },
        pg_running: pg.running,
        timeline: pg.position.timeline,
        flush_lsn: pg.position.lsn,
        replay_lsn: pg.replay_lsn,
        streaming_from: pg.upstream.clone().filter(|_| pg.streaming),
        detached: local.detached,
        fenced: pg.fenced,
        api_url: local.api_url.clone(),
        conn: local.conn.clone(),
        tags: local.tags.clone(),
    }
}

/// What every rule module gets.
pub(crate) struct Ctx<'a> {
    pub local: &'a LocalState,
    pub view: &'a ClusterView,
    pub now: Millis,
}

impl<'a> Ctx<'a> {
    pub fn me(&self) -> &'a str {
        &self.local.name
    }

    pub fn cfg(&self) -> &'a DynamicConfig {
        &self.view.config
    }

    /// Our lease is safely alive until the next loop: see [`lease_ok`].
    pub fn lease_ok(&self) -> bool {
        lease_ok(self.local, self.cfg(), self.now)
    }

    /// Where to reach member `name`, if it published a record.
    pub fn upstream(&self, name: &str) -> Option<Upstream> {
        self.view.members.get(name).map(|m| Upstream {
            name: name.to_string(),
            conn: m.conn.clone(),
        })
    }

    /// This node as a promotion candidate.
    pub fn candidate(&self) -> Candidate<'a> {
        Candidate {
            name: &self.local.name,
            position: self.local.pg.position,
            detached: self.local.detached,
        }
    }

    pub fn decision(&self, actions: Vec<Action>, reason: impl Into<String>) -> Decision {
        Decision {
            actions,
            reason: reason.into(),
            wake_in: self.cfg().loop_wait,
        }
    }

    /// Like `decision`, but checks again soon (a quarter of the loop): used
    /// while a failover is in progress and other nodes' next step is
    /// expected within milliseconds.
    pub fn decision_soon(&self, actions: Vec<Action>, reason: impl Into<String>) -> Decision {
        Decision {
            actions,
            reason: reason.into(),
            wake_in: Millis(self.cfg().loop_wait.0 / 4),
        }
    }

    /// Like `decision`, but asks to decide again at once: the next step
    /// depends on the outcome of these actions.
    pub fn decision_now(&self, actions: Vec<Action>, reason: impl Into<String>) -> Decision {
        Decision {
            actions,
            reason: reason.into(),
            wake_in: Millis::ZERO,
        }
    }
}

/// The lease is alive past `now + fence_margin` (on our clock, counted from
/// the send time of the last successful renew). When this turns false a
/// writable primary fences: the DCS may expire the lease within the margin.
pub(crate) fn lease_ok(local: &LocalState, cfg: &DynamicConfig, now: Millis) -> bool {
    local
        .lease
        .is_some_and(|l| now + cfg.fence_margin < l.expires_at())
}

/// Loop interval for a leader: wake up in time for the fence point.
pub(crate) fn leader_wake(local: &LocalState, cfg: &DynamicConfig, now: Millis) -> Millis {
    match local.lease {
        Some(l) => {
            let fence_at = l.expires_at() - cfg.fence_margin;
            cfg.loop_wait.min(fence_at - now)
        }
        None => cfg.loop_wait,
    }
}

/// The failsafe rule holds for this leader now (`failsafe.rs`): it may
/// take writes past its lease.
pub(crate) fn failsafe_ok(local: &LocalState, cfg: &DynamicConfig, now: Millis) -> bool {
    failsafe::writes_may_continue(local.failsafe.as_ref(), cfg, now).is_ok()
}

/// A standby bound by a failsafe promise takes no step that could let
/// anyone but the promised leader promote: no detach, no leader key, no
/// promotion, no other upstream (`failsafe::promised`). `None` when no
/// promise binds or the decision keeps it anyway.
fn keep_promise(ctx: &Ctx<'_>) -> Option<Decision> {
    let p = failsafe::promised(ctx.local, ctx.now)?;
    let leads = ctx
        .view
        .leader
        .as_ref()
        .is_some_and(|l| l.holder == p.leader);
    if leads {
        let d = follower::decide(ctx, &p.leader);
        let keeps = d.actions.iter().all(|a| match a {
            Action::FollowLeader(up) => up.name == p.leader,
            Action::PublishMember(_) => true,
            _ => false,
        });
        if keeps {
            return None;
        }
    }
    let left = p.until - ctx.now;
    Some(Decision {
        actions: vec![],
        reason: format!(
            "failsafe: I promised {} (term {}) not to detach or promote for {left} more; \
             following it meanwhile",
            p.leader, p.term
        ),
        wake_in: ctx.cfg().loop_wait.min(left),
    })
}

/// PostgreSQL runs but does not answer (`hung.rs`). Stalled or busy: keep
/// the role and take no step that needs the server (the leader keeps its
/// lease). Hung: the leader kills its server and only then gives up the
/// key; anyone else waits, out of the sets by its record (role unknown).
fn not_answering(ctx: &Ctx<'_>) -> Option<Decision> {
    let v = hung::judge(&ctx.local.pg, ctx.cfg(), ctx.now);
    let leads = ctx
        .view
        .leader
        .as_ref()
        .is_some_and(|l| l.holder == ctx.me());
    let t = ctx.cfg().hung_timeout;
    match v {
        Verdict::Answering => None,
        Verdict::Hung { .. } if leads => Some(ctx.decision_now(
            vec![Action::Demote(DemoteKind::Kill), Action::ReleaseLeader],
            format!(
                "PostgreSQL {v} (hung_timeout {t}): killing it, then handing over the leader key"
            ),
        )),
        Verdict::Hung { .. } => Some(ctx.decision(
            vec![],
            format!("PostgreSQL {v}: out of the synchronous and read sets until it answers"),
        )),
        Verdict::Stalled { for_ } => {
            let actions = if leads {
                vec![Action::RenewLeader]
            } else {
                vec![]
            };
            let left = t - for_;
            Some(Decision {
                actions,
                reason: format!("PostgreSQL {v}, hung after {t}: keeping my role meanwhile"),
                wake_in: ctx.cfg().loop_wait.min(left),
            })
        }
        Verdict::Busy { .. } => {
            let actions = if leads {
                vec![Action::RenewLeader]
            } else {
                vec![]
            };
            Some(ctx.decision(
                actions,
                format!("PostgreSQL {v}: not hung, keeping my role"),
            ))
        }
    }
}

/// The DCS could not be read. A primary keeps going while its lease is
/// safely alive, or past it while the failsafe rule holds, and otherwise
/// fences itself before the lease can expire; everyone else keeps doing
/// what it does (standbys keep serving reads).
fn dcs_unknown(local: &LocalState, error: &str, cfg: &DynamicConfig, now: Millis) -> Decision {
    let pg = &local.pg;
    let mut actions = Vec::new();
    let failsafe = failsafe::writes_may_continue(local.failsafe.as_ref(), cfg, now);
    let reason = if !pg.is_running_primary() {
        format!("DCS unreachable ({error}); keeping the current state")
    } else if lease_ok(local, cfg, now) {
        actions.push(Action::RenewLeader);
        let left = local.lease.map_or(Millis::ZERO, |l| l.expires_at() - now);
        format!("DCS unreachable ({error}); lease still valid for {left}, retrying renew")
    } else if let (Ok(why), Some(_)) = (&failsafe, local.lease) {
        if pg.fenced {
            actions.push(Action::Unfence);
        }
        actions.push(Action::RenewLeader);
        let wake = local
            .failsafe
            .as_ref()
            .and_then(|c| c.runs_out_at(now))
            .map_or(cfg.loop_wait, |at| cfg.loop_wait.min(at - now));
        return Decision {
            actions,
            reason: format!("DCS unreachable ({error}); {why}: accepting writes"),
            wake_in: wake,
        };
    } else {
        if !pg.fenced {
            actions.push(Action::Fence);
        }
        actions.push(Action::RenewLeader);
        let why = failsafe.err().unwrap_or_default();
        format!(
            "DCS unreachable ({error}) and the leader lease may expire: refusing writes ({why})"
        )
    };
    Decision {
        actions,
        reason,
        wake_in: leader_wake(local, cfg, now),
    }
}

/// Paused: publish (done by the caller) and keep the lease; no automatic
/// actions. A running primary that led last may re-take and claim the key,
/// which is bookkeeping, not a change of roles.
fn paused(ctx: &Ctx<'_>) -> Decision {
    let pg = &ctx.local.pg;
    let led_last = ctx.view.sync.as_ref().is_some_and(|s| s.leader == ctx.me());
    match &ctx.view.leader {
        Some(l) if l.holder == ctx.me() => {
            let mut actions = vec![Action::RenewLeader];
            if ctx.view.established_leader().is_none() && led_last && pg.is_running_primary() {
                actions.push(leader::claim_record(ctx, l.term, ctx.view.sync_set()));
            }
            ctx.decision(actions, "paused: renewing the leader lease only")
        }
        None if led_last && pg.is_running_primary() => ctx.decision(
            vec![Action::AcquireLeader],
            "paused: re-taking the leader key for my running primary",
        ),
        _ => ctx.decision(vec![], "paused: no automatic actions"),
    }
}

#[cfg(test)]
mod switchover_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testutil;
