//! Rules while nobody holds the leader key.
//!
//! Standbys first detach (stop streaming, persistently) and publish their
//! final position for the current term; a standby that then passes the
//! promotion rule races for the key. A running primary re-takes the key
//! only if it was the last established leader. A stopped node starts
//! read-only so that it can take part; an uninitialized cluster races for
//! the initialize key and bootstraps.
//!
//! Hazard: acquiring the key is only a reservation; the holder re-checks on
//! a fresh view and claims the term before it promotes (`leader.rs`).

use super::Ctx;
use crate::action::{Action, Decision, DemoteKind};
use crate::local::DataDir;
use crate::member::Detached;
use crate::promotion::{check_promotion, handoff_reached, Candidate};

pub(crate) fn decide(ctx: &Ctx<'_>) -> Decision {
    let pg = &ctx.local.pg;
    let view = ctx.view;
    let led_last = view.sync.as_ref().is_some_and(|s| s.leader == ctx.me());
    let bootstrapper = view.sync.is_none() && view.initialize.as_deref() == Some(ctx.me());
    if pg.is_running_primary() {
        if led_last || bootstrapper {
            let mut actions = Vec::new();
            // Promises from k of S still hold: nobody can promote, so the
            // key is ours to re-take without a pause in writes.
            if !pg.fenced && !super::failsafe_ok(ctx.local, ctx.cfg(), ctx.now) {
                actions.push(Action::Fence);
            }
            actions.push(Action::AcquireLeader);
            return ctx.decision_now(
                actions,
                "my leader lease expired and nobody took over: re-taking it (writes paused meanwhile)",
            );
        }
        return ctx.decision_now(
            vec![Action::Demote(DemoteKind::Immediate)],
            "I run a primary but another node led after me: stopping it",
        );
    }
    if pg.is_running_standby() {
        return standby(ctx);
    }
    if pg.running {
        return ctx.decision(vec![], "no leader; PostgreSQL runs but its role is unknown");
    }
    stopped(ctx, bootstrapper)
}

fn standby(ctx: &Ctx<'_>) -> Decision {
    let view = ctx.view;
    let term = view.sync_term();
    if let Some(why) = receiving_handoff(ctx) {
        return ctx.decision_now(vec![], why);
    }
    // A completed hand-over to us needs no detach first (see
    // `handoff_reached`): take the key at once.
    if !ctx.local.tags.nofailover && handoff_reached(ctx.candidate(), view) {
        if let Ok(why) = check_promotion(ctx.candidate(), view) {
            return ctx.decision_now(vec![Action::AcquireLeader], format!("candidate: {why}"));
        }
    }
    if ctx.local.detached.is_none_or(|d| d.after_term != term) {
        return ctx.decision_now(
            vec![Action::DetachFromPrimary { after_term: term }],
            format!(
                "no leader: detaching from the old primary to report my final LSN (term {term})"
            ),
        );
    }
    if ctx.local.tags.nofailover {
        return ctx.decision(vec![], "no leader; I am tagged nofailover, not a candidate");
    }
    // A completed hand-over names the member that takes over; it waits for
    // nobody else (a later request naming another target would otherwise
    // make the two wait for each other).
    let handed_to = view
        .sync
        .as_ref()
        .and_then(|s| s.handoff.as_ref())
        .filter(|h| h.final_position.is_some())
        .map(|h| h.to.as_str());
    let handed_to_me = handed_to == Some(ctx.me());
    if let Some(to) = handed_to.filter(|t| *t != ctx.me()) {
        if safe_candidate(ctx, to) {
            return ctx.decision_soon(
                vec![],
                format!("no leader; {to} takes over: the old leader handed over to it"),
            );
        }
    }
    if let Some(f) = view.failover.as_ref().filter(|_| !handed_to_me) {
        if f.to == ctx.me() && f.allow_data_loss {
            return ctx.decision_now(
                vec![Action::AcquireLeader],
                "manual failover to me with --allow-data-loss: taking the leader key",
            );
        }
        if f.to != ctx.me() && safe_candidate(ctx, &f.to) {
            return ctx.decision(
                vec![],
                format!("no leader; waiting for failover target {}", f.to),
            );
        }
    }
    if let Some(s) = view.switchover.as_ref().filter(|_| !handed_to_me) {
        if s.from.as_deref() == Some(ctx.me()) && someone_else_safe(ctx) {
            return ctx.decision(
                vec![],
                "no leader; I handed over in a switchover, not a candidate",
            );
        }
        if let Some(to) = s.to.as_deref().filter(|t| *t != ctx.me()) {
            if safe_candidate(ctx, to) {
                return ctx.decision(
                    vec![],
                    format!("no leader; waiting for switchover target {to}"),
                );
            }
        }
    }
    match check_promotion(ctx.candidate(), view) {
        Ok(why) => ctx.decision_now(vec![Action::AcquireLeader], format!("candidate: {why}")),
        Err(refusal) => ctx.decision_soon(vec![], format!("no leader; {}", refusal.reason())),
    }
}

/// The old leader handed over to us and recorded its final position as
/// soon as its shutdown checkpoint was durable, while its walsenders still
/// send the rest: as long as we stream from it and our WAL does not reach
/// that position yet, wait for it rather than detach (a detached target
/// short of the final position gets no shortcut). The wait ends when the
/// WAL arrives or the old postmaster exits (streaming stops).
fn receiving_handoff(ctx: &Ctx<'_>) -> Option<String> {
    let pg = &ctx.local.pg;
    let sync = ctx.view.sync.as_ref()?;
    let fin = sync.handoff_to(ctx.me())?;
    let from_old = pg.streaming && pg.upstream.as_deref() == Some(sync.leader.as_str());
    let short = pg.position.timeline == fin.timeline && pg.position.lsn < fin.lsn;
    (from_old && short && ctx.local.detached.is_none()).then(|| {
        format!(
            "no leader; {} handed over to me at {fin}: receiving the rest of its WAL (at {})",
            sync.leader, pg.position
        )
    })
}

/// Another member could pass the promotion rule once the standbys that are
/// alive have detached (so stepping aside cannot leave the cluster without
/// a leader).
fn someone_else_safe(ctx: &Ctx<'_>) -> bool {
    ctx.view
        .members
        .keys()
        .any(|m| m != ctx.me() && safe_candidate(ctx, m))
}

/// `name` is a running, failover-eligible standby at least as far as we
/// are, and passes the promotion rule in our view once every running
/// standby has detached (which they do within a loop when there is no
/// leader). Members that are unreachable stay missing.
fn safe_candidate(ctx: &Ctx<'_>, name: &str) -> bool {
    let Some(m) = ctx.view.members.get(name) else {
        return false;
    };
    if !m.is_running_standby() || m.tags.nofailover || m.position() < ctx.local.pg.position {
        return false;
    }
    let term = ctx.view.sync_term();
    let mut soon = ctx.view.clone();
    for rec in soon.members.values_mut() {
        if rec.is_running_standby() {
            rec.detached = Some(Detached { after_term: term });
        }
    }
    let cand = Candidate {
        name,
        position: m.position(),
        detached: Some(Detached { after_term: term }),
    };
    check_promotion(cand, &soon).is_ok()
}

/// Another running, failover-eligible standby passes the promotion rule in
/// our view once the running standbys have detached. Unlike
/// `safe_candidate`, our own position does not count: this node is a
/// stopped former primary whose unacknowledged tail a rewind removes.
fn another_candidate(ctx: &Ctx<'_>) -> bool {
    let term = ctx.view.sync_term();
    let mut soon = ctx.view.clone();
    for rec in soon.members.values_mut() {
        if rec.is_running_standby() {
            rec.detached = Some(Detached { after_term: term });
        }
    }
    ctx.view.members.values().any(|m| {
        m.name != ctx.me()
            && m.is_running_standby()
            && !m.tags.nofailover
            && check_promotion(
                Candidate {
                    name: &m.name,
                    position: m.position(),
                    detached: Some(Detached { after_term: term }),
                },
                &soon,
            )
            .is_ok()
    })
}

fn stopped(ctx: &Ctx<'_>, bootstrapper: bool) -> Decision {
    let view = ctx.view;
    // We killed our hung primary and gave up the key: let the others elect
    // a leader first (a server started here again at once would win as the
    // last leader), as long as one of them could pass the promotion rule.
    // Bounded, so a cluster with nobody else still recovers.
    if let Some(at) = ctx.local.gave_up_hung_at {
        let waited = ctx.now - at;
        let limit = ctx.cfg().hung_timeout;
        if waited < limit && ctx.local.pg.data_dir == DataDir::Primary && another_candidate(ctx) {
            return ctx.decision(
                vec![],
                format!(
                    "no leader; my PostgreSQL hung and I gave up the key: waiting up to \
                     {limit} for another member to take over"
                ),
            );
        }
    }
    match ctx.local.pg.data_dir {
        DataDir::Empty => match view.initialize.as_deref() {
            None if ctx.local.tags.nofailover => ctx.decision(
                vec![],
                "cluster not initialized; I am tagged nofailover, so another member bootstraps",
            ),
            None => ctx.decision_now(
                vec![Action::AcquireInitialize],
                "cluster not initialized: racing for the initialize key",
            ),
            Some(me) if me == ctx.me() => ctx.decision_now(
                vec![Action::Bootstrap],
                "I won the initialize race: bootstrapping (initdb)",
            ),
            Some(other) => ctx.decision(
                vec![],
                format!("no leader to clone from yet (cluster initialized by {other})"),
            ),
        },
        DataDir::Primary if bootstrapper => ctx.decision_now(
            vec![Action::AcquireLeader],
            "bootstrapped: taking the leader key to start as the first primary",
        ),
        _ => ctx.decision_now(
            vec![Action::StartAsStandby { upstream: None }],
            "no leader: starting read-only (in recovery, no upstream) to take part in the election",
        ),
    }
}
