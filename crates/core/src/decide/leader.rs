//! Rules for the node that holds the leader key.
//!
//! A fresh holder first *claims* the term: it re-checks that taking over is
//! safe on a fresh view, writes `/sync` with its key's term, and only then
//! promotes or starts as primary (in that order, in one decision). An
//! established leader keeps its lease, fences when the lease is in doubt,
//! runs the sync-set manager and performs switchovers.
//!
//! Hazard: a primary must never accept writes before its term is recorded
//! in `/sync`; otherwise a later candidate could count a stale "detached"
//! report from a member that acknowledged this primary's commits.

use super::{leader_wake, Ctx};
use crate::action::{Action, Decision, DemoteKind};
use crate::local::DataDir;
use crate::promotion::{check_promotion, handoff_reached, Refusal};
use crate::sync::{SyncSet, SyncStandbyNames};
use crate::sync_plan::{initial_names, next_step, target_set, SyncInputs, SyncStep};
use crate::time::Millis;
use crate::view::{Handoff, SwitchoverRequest, SyncRecord};
use std::collections::BTreeSet;

pub(crate) fn decide(ctx: &Ctx<'_>, term: u64) -> Decision {
    let pg = &ctx.local.pg;
    let mut d = if ctx.view.established_leader().is_none() {
        claim(ctx, term)
    } else if let Some(d) = confirm_sync(ctx) {
        d
    } else if pg.is_running_primary() {
        primary(ctx)
    } else if pg.is_running_standby() {
        let names = initial_names(
            &ctx.view.sync_set(),
            ctx.me(),
            ctx.cfg().allow_async_fallback,
        );
        ctx.decision_now(
            vec![Action::Promote { sync_names: names }],
            "established leader still in recovery: promoting",
        )
    } else if pg.running && !pg.exiting {
        ctx.decision(
            vec![],
            "PostgreSQL runs but its role is unknown: waiting for a probe",
        )
    } else {
        stopped(ctx)
    };
    clear_handoff_before_writes(ctx, &mut d.actions);
    // Renew after any Fence: a failed renew stops the remaining actions,
    // and the fence must not depend on the DCS answering.
    let at = d
        .actions
        .iter()
        .position(|a| *a == Action::Fence)
        .map_or(0, |i| i + 1);
    d.actions.insert(at, Action::RenewLeader);
    if d.wake_in > Millis::ZERO {
        d.wake_in = d.wake_in.min(leader_wake(ctx.local, ctx.cfg(), ctx.now));
    }
    d
}

/// A `/sync` write of ours with an unknown outcome may still land (its
/// guard still holds in this view): `/sync` may change under us at any
/// moment, so nothing that relies on it may proceed (no change to
/// `synchronous_standby_names`, no other `/sync` write, no start or
/// promotion). Rewrite the record as read, conditional on its revision:
/// if that lands, the delayed write can never land; if it is refused, the
/// delayed write landed; either way the next view shows what is there.
/// A claim needs no such step: it writes `/sync` (so guarded) first anyway.
fn confirm_sync(ctx: &Ctx<'_>) -> Option<Decision> {
    let doubt = ctx
        .local
        .sync_in_doubt
        .filter(|d| d.may_still_land(ctx.view, ctx.me()))?;
    let rec = ctx.view.sync.clone()?;
    let pg = &ctx.local.pg;
    let mut actions = Vec::new();
    if pg.is_running_primary() && !pg.fenced && !ctx.lease_ok() {
        actions.push(Action::Fence);
    }
    actions.push(Action::WriteSyncKey(rec));
    Some(ctx.decision_now(
        actions,
        format!(
            "a /sync write of term {} timed out and may still land: rewriting /sync \
             as read (revision {}) before relying on it",
            doubt.term, doubt.revision
        ),
    ))
}

/// A hand-over we recorded is off once we run a primary again in the same
/// term (e.g. the switchover request was withdrawn after the shutdown):
/// its final position would no longer be the end of our WAL. Clear it
/// before any action that makes this node writable; if the write fails,
/// that action does not run.
fn clear_handoff_before_writes(ctx: &Ctx<'_>, actions: &mut Vec<Action>) {
    let Some(sync) = ctx.view.sync.as_ref().filter(|s| s.handoff.is_some()) else {
        return;
    };
    if ctx.view.established_leader().is_none() {
        return; // a claim writes a fresh record first anyway
    }
    let at = actions
        .iter()
        .position(|a| matches!(a, Action::Promote { .. } | Action::StartAsPrimary { .. }));
    if let Some(at) = at {
        let mut rec = sync.clone();
        rec.handoff = None;
        actions.insert(at, Action::WriteSyncKey(rec));
    }
}

/// The `/sync` record that claims `term` for this node with set `set`.
pub(crate) fn claim_record(ctx: &Ctx<'_>, term: u64, set: SyncSet) -> Action {
    Action::WriteSyncKey(SyncRecord {
        term,
        leader: ctx.me().to_string(),
        set,
        handoff: None,
    })
}

/// The current `/sync` record with `handoff`: the established leader
/// records whom it hands over to (before it shuts down) and where its WAL
/// ended (after a clean shutdown). `None` without a record.
fn handoff_record(ctx: &Ctx<'_>, handoff: Handoff) -> Option<Action> {
    let mut rec = ctx.view.sync.clone()?;
    rec.handoff = Some(handoff);
    Some(Action::WriteSyncKey(rec))
}

/// We hold the key but have not claimed the term yet.
fn claim(ctx: &Ctx<'_>, term: u64) -> Decision {
    let pg = &ctx.local.pg;
    let view = ctx.view;
    let set = view.sync_set();
    let names = initial_names(&set, ctx.me(), ctx.cfg().allow_async_fallback);
    let led_last = view.sync.as_ref().is_some_and(|s| s.leader == ctx.me());
    let bootstrap = view.sync.is_none() && view.initialize.as_deref() == Some(ctx.me());
    if pg.is_running_primary() {
        if led_last || bootstrap {
            let mut actions = vec![claim_record(ctx, term, set)];
            if pg.fenced && ctx.lease_ok() {
                actions.push(Action::Unfence);
            }
            return ctx.decision_now(
                actions,
                format!("re-established my leadership (term {term})"),
            );
        }
        return ctx.decision_now(
            vec![Action::ReleaseLeader, Action::Demote(DemoteKind::Immediate)],
            "I hold the leader key but another leader was established after my primary; stepping down",
        );
    }
    if pg.is_running_standby() {
        return claim_as_standby(ctx, term, set, names);
    }
    if bootstrap && pg.data_dir == DataDir::Primary {
        return ctx.decision_now(
            vec![
                claim_record(ctx, term, set),
                Action::StartAsPrimary { sync_names: names },
            ],
            format!("bootstrapped the cluster; starting as its first primary (term {term})"),
        );
    }
    ctx.decision_now(
        vec![Action::ReleaseLeader],
        "I hold the leader key but my PostgreSQL is not running; releasing it",
    )
}

fn claim_as_standby(ctx: &Ctx<'_>, term: u64, set: SyncSet, names: SyncStandbyNames) -> Decision {
    let sync_term = ctx.view.sync_term();
    // A completed hand-over to us needs no detach first (see
    // `handoff_reached`).
    let handed_over = handoff_reached(ctx.candidate(), ctx.view)
        && check_promotion(ctx.candidate(), ctx.view).is_ok();
    if !handed_over && ctx.local.detached.is_none_or(|d| d.after_term != sync_term) {
        // e.g. the agent restarted and forgot its promise: make it again
        return ctx.decision_now(
            vec![Action::DetachFromPrimary {
                after_term: sync_term,
            }],
            format!("holding the leader key: detaching first (term {sync_term})"),
        );
    }
    let forced = ctx
        .view
        .failover
        .as_ref()
        .is_some_and(|f| f.to == ctx.me() && f.allow_data_loss);
    let verdict = if forced {
        Ok("manual failover with --allow-data-loss: promoting without the quorum check".into())
    } else {
        check_promotion(ctx.candidate(), ctx.view)
    };
    match verdict {
        Ok(why) => ctx.decision_now(
            vec![
                claim_record(ctx, term, set),
                Action::Promote { sync_names: names },
            ],
            format!("promoting (term {term}): {why}"),
        ),
        Err(Refusal::Behind(why)) => ctx.decision_now(
            vec![Action::ReleaseLeader],
            format!("releasing the leader key: {why}"),
        ),
        Err(Refusal::NotEnoughReports(why)) => ctx.decision(
            vec![],
            format!("holding the leader key, not promoting yet: {why}"),
        ),
    }
}

/// Established leader, PostgreSQL not running, or shut down and exiting.
fn stopped(ctx: &Ctx<'_>) -> Decision {
    let pg = &ctx.local.pg;
    if switchover_from_me(ctx).is_some() {
        // After a clean shutdown, tell the target where our WAL ends: it
        // may then promote without waiting for the other standbys' reports.
        // This needs the shutdown checkpoint durable, not the postmaster
        // gone: while it exits, its walsenders still send the rest, and the
        // target promotes only once its own WAL reaches that position.
        // The record and the release are one DCS transaction (`HandOver`):
        // the target sees the position and the free key in one revision.
        let chosen = ctx.view.sync.as_ref().and_then(|s| s.handoff.as_ref());
        let handoff = chosen
            .filter(|_| pg.clean_shutdown && pg.data_dir == DataDir::Standby)
            .and_then(|h| {
                let mut rec = ctx.view.sync.clone()?;
                rec.handoff = Some(Handoff {
                    to: h.to.clone(),
                    final_position: Some(pg.position),
                });
                Some(rec)
            });
        return match handoff {
            Some(rec) => {
                let reason = format!(
                    "PostgreSQL is shut down cleanly for the switchover at {}: handing over to {} and releasing the leader key",
                    pg.position,
                    rec.handoff.as_ref().map_or("", |h| h.to.as_str())
                );
                ctx.decision_now(vec![Action::HandOver(rec)], reason)
            }
            None => ctx.decision_now(
                vec![Action::ReleaseLeader],
                "PostgreSQL is shut down for the switchover: releasing the leader key",
            ),
        };
    }
    if pg.exiting {
        // e.g. the switchover request was withdrawn during the shutdown:
        // whatever comes next starts PostgreSQL, which must wait for the
        // old postmaster (the runtime wakes us when it exits).
        return ctx.decision_soon(
            vec![],
            "PostgreSQL shut down cleanly; waiting for its postmaster to exit",
        );
    }
    let names = initial_names(
        &ctx.view.sync_set(),
        ctx.me(),
        ctx.cfg().allow_async_fallback,
    );
    match pg.data_dir {
        DataDir::Empty => ctx.decision_now(
            vec![Action::ReleaseLeader],
            "my data directory is empty; releasing the leader key",
        ),
        DataDir::Standby => ctx.decision_now(
            vec![Action::StartAsStandby { upstream: None }],
            "established leader with a standby data directory: starting it to promote",
        ),
        DataDir::Primary => {
            let down = pg.stopped_since.map_or(Millis::ZERO, |t| ctx.now - t);
            if down >= ctx.cfg().primary_start_timeout {
                return ctx.decision_now(
                    vec![Action::ReleaseLeader],
                    format!("PostgreSQL has been down for {down}: handing over the leader key"),
                );
            }
            ctx.decision_now(
                vec![Action::StartAsPrimary { sync_names: names }],
                format!("PostgreSQL is down ({down}) on the leader: restarting it in place"),
            )
        }
    }
}

/// The switchover request that asks this leader to hand over, if any.
fn switchover_from_me<'a>(ctx: &Ctx<'a>) -> Option<&'a SwitchoverRequest> {
    let req = ctx.view.switchover.as_ref()?;
    let from_me = req.from.as_deref().is_none_or(|f| f == ctx.me());
    let to_other = req.to.as_deref() != Some(ctx.me());
    (from_me && to_other).then_some(req)
}

/// Established leader with a running primary.
fn primary(ctx: &Ctx<'_>) -> Decision {
    let pg = &ctx.local.pg;
    // Back from a DCS outage survived in failsafe mode: the promises still
    // hold, so keep writing while the renew (first in this decision) runs.
    if !ctx.lease_ok() && !super::failsafe_ok(ctx.local, ctx.cfg(), ctx.now) {
        let actions = if pg.fenced {
            vec![]
        } else {
            vec![Action::Fence]
        };
        return ctx.decision(
            actions,
            "leader lease not renewed in time: refusing writes until a renew succeeds",
        );
    }
    let mut actions = Vec::new();
    let mut notes = Vec::new();
    let mut soon = false;
    if pg.fenced {
        actions.push(Action::Unfence);
        notes.push("lease renewed: accepting writes again".to_string());
    }
    if let Some(f) = &ctx.view.failover {
        actions.push(Action::ClearFailover);
        notes.push(if f.to == ctx.me() {
            "manual failover done".to_string()
        } else {
            format!(
                "ignoring failover to {}: the primary is alive (use switchover)",
                f.to
            )
        });
    }
    if let Some(req) = &ctx.view.switchover {
        match switchover(ctx, req) {
            Switch::Demote(target, why) => {
                // Record the chosen target first: only it runs for the
                // key once we are down (the others wait for it).
                let chosen = Handoff {
                    to: target,
                    final_position: None,
                };
                actions.extend(handoff_record(ctx, chosen));
                actions.push(Action::Demote(DemoteKind::Graceful));
                return ctx.decision_now(actions, why);
            }
            Switch::Clear(why) => {
                actions.push(Action::ClearSwitchover);
                notes.push(why);
            }
            Switch::Wait(why) => notes.push(why),
            Switch::Drain(why) => {
                soon = true;
                notes.push(why);
            }
        }
    }
    let step = sync_step(ctx);
    match step {
        SyncStep::SetNames(n, why) => {
            // The next step (recording /sync) needs the standbys to flush
            // past the LSN the names take effect at: milliseconds away.
            soon = true;
            actions.push(Action::SetSyncStandbyNames(n));
            notes.push(why);
        }
        SyncStep::WriteSync(set, why) => {
            actions.push(claim_record(ctx, ctx.view.sync_term(), set));
            notes.push(why);
        }
        SyncStep::Idle(why) | SyncStep::Wait(why) => notes.push(why),
        SyncStep::WaitFlush(why) => {
            soon = true;
            notes.push(why);
        }
    }
    let reason = format!("leader: {}", notes.join("; "));
    if soon {
        ctx.decision_soon(actions, reason)
    } else {
        ctx.decision(actions, reason)
    }
}

/// The sync-set manager's next step for this primary.
fn sync_step(ctx: &Ctx<'_>) -> SyncStep {
    let pg = &ctx.local.pg;
    let recorded = ctx.view.sync_set();
    let allow_async = ctx.cfg().allow_async_fallback;
    let Some(names) = pg.sync_names.clone() else {
        let n = initial_names(&recorded, ctx.me(), allow_async);
        return SyncStep::SetNames(n, "synchronous_standby_names unknown; setting it".into());
    };
    let healthy: BTreeSet<String> = pg
        .replicas
        .iter()
        .filter(|r| {
            r.name != ctx.me()
                && ctx
                    .view
                    .members
                    .get(&r.name)
                    // A standby whose server runs but answers no probe for
                    // hung_timeout says "role unknown" (`hung.rs`): out,
                    // although its walsender may still look streaming.
                    .is_some_and(|m| !m.tags.nosync && !m.runs_unanswering())
        })
        .map(|r| r.name.clone())
        .collect();
    next_step(&SyncInputs {
        me: ctx.me(),
        recorded: &recorded,
        names: &names,
        target: target_set(healthy, ctx.cfg()),
        replicas: &pg.replicas,
        allow_async_fallback: allow_async,
    })
}

enum Switch {
    /// Shut down for the hand-over to this member.
    Demote(String, String),
    Clear(String),
    Wait(String),
    /// Waiting for the proxies: check again soon.
    Drain(String),
}

/// Switchover on the leader: wait until the target is synchronous and
/// caught up and the proxies have drained (bounded), then shut down cleanly
/// (the key is released once stopped).
fn switchover(ctx: &Ctx<'_>, req: &SwitchoverRequest) -> Switch {
    if let Some(at) = req.scheduled_at_unix_ms {
        if at > ctx.local.unix_time_ms {
            let secs = (at - ctx.local.unix_time_ms) / 1000;
            return Switch::Wait(format!("switchover scheduled in {secs}s"));
        }
    }
    if switchover_from_me(ctx).is_none() {
        return Switch::Clear("switchover request done or not for me: clearing it".into());
    }
    let target = match &req.to {
        Some(t) => t.clone(),
        None => match best_sync_standby(ctx) {
            Some(t) => t,
            None => {
                return Switch::Wait("switchover: no synchronous standby to hand over to".into())
            }
        },
    };
    let Some(rec) = ctx.view.members.get(&target) else {
        return Switch::Clear(format!(
            "switchover target {target} is not a member: clearing"
        ));
    };
    if rec.tags.nofailover {
        return Switch::Clear(format!(
            "switchover target {target} has nofailover: clearing"
        ));
    }
    let recorded = ctx.view.sync_set();
    let in_names = matches!(&ctx.local.pg.sync_names, Some(s)
        if matches!(&s.names, SyncStandbyNames::Quorum(q) if q.members.contains(&target)));
    if !recorded.members.contains(&target) || !in_names {
        return Switch::Wait(format!(
            "switchover: waiting for {target} to become synchronous"
        ));
    }
    let Some(rep) = ctx.local.pg.replicas.iter().find(|r| r.name == target) else {
        return Switch::Wait(format!("switchover: {target} is not streaming from me"));
    };
    let lag = ctx.local.pg.position.lsn.bytes_after(rep.flush_lsn);
    if lag > ctx.cfg().switchover_max_lag {
        return Switch::Wait(format!(
            "switchover: waiting for {target} to catch up ({lag} bytes behind)"
        ));
    }
    match proxies_drained(ctx) {
        Ok(drained) => Switch::Demote(target.clone(), format!(
            "switchover to {target} ({lag} bytes behind, synchronous; {drained}): shutting down cleanly"
        )),
        Err(why) => Switch::Drain(why),
    }
}

/// Whether the proxies let the switchover go ahead: `Ok(note)` when every
/// live proxy reported "drained for this request" (paused, nothing in
/// flight on this primary) or `switchover_drain_timeout` has passed since
/// the request became due; `Err(why)` to wait.
fn proxies_drained(ctx: &Ctx<'_>) -> Result<String, String> {
    let rev = ctx.view.switchover_revision;
    let proxies = &ctx.view.proxies;
    let pending: Vec<String> = proxies
        .iter()
        .filter(|(_, p)| p.drained_for != Some(rev))
        .map(|(name, p)| match (p.paused, p.in_flight) {
            (false, _) => format!("{name} (not paused yet)"),
            (true, n) => format!("{name} ({n} in flight)"),
        })
        .collect();
    if pending.is_empty() {
        return Ok(match proxies.len() {
            0 => "no proxy registered".to_string(),
            n => format!("{n} of {n} proxies drained"),
        });
    }
    let since = ctx
        .local
        .switchover_seen
        .filter(|s| s.revision == rev)
        .map_or(ctx.now, |s| s.at);
    let waited = ctx.now - since;
    let limit = ctx.cfg().switchover_drain_timeout;
    let list = pending.join(", ");
    if waited >= limit {
        return Ok(format!(
            "proxies not drained after {waited}, going ahead: {list}"
        ));
    }
    Err(format!(
        "switchover: waiting for proxies to drain ({waited} of {limit}): {list}"
    ))
}

/// The synchronous standby that flushed the most, failover-eligible.
fn best_sync_standby(ctx: &Ctx<'_>) -> Option<String> {
    let recorded = ctx.view.sync_set();
    ctx.local
        .pg
        .replicas
        .iter()
        .filter(|r| recorded.members.contains(&r.name))
        .filter(|r| {
            ctx.view
                .members
                .get(&r.name)
                .is_some_and(|m| !m.tags.nofailover)
        })
        .max_by_key(|r| r.flush_lsn)
        .map(|r| r.name.clone())
}
