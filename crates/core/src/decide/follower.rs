//! Rules for a node while another node holds the leader key.
//!
//! A running primary here has lost its lease and stops at once. A standby
//! follows the leader only once the leader is established (has claimed its
//! term in `/sync`) and runs as a primary; until then it stays detached so
//! that the new leader can count its final LSN. A stopped node rejoins:
//! clone when empty, rewind when it was a primary or diverged, re-clone
//! when rewind failed.
//!
//! Hazard: following a leader that has not claimed its term would let this
//! node acknowledge commits while an older "detached" report of it is still
//! counted by some candidate.

use super::Ctx;
use crate::action::{Action, Decision, DemoteKind, Upstream};
use crate::local::DataDir;

pub(crate) fn decide(ctx: &Ctx<'_>, leader: &str) -> Decision {
    let pg = &ctx.local.pg;
    if pg.is_running_primary() {
        return ctx.decision_now(
            vec![Action::Demote(DemoteKind::Immediate)],
            format!(
                "{leader} holds the leader lease: stopping my primary, it will rejoin as a standby"
            ),
        );
    }
    let established = ctx.view.established_leader().is_some();
    let rec = ctx.view.members.get(leader);
    let ready = established && rec.is_some_and(|m| m.is_running_primary());
    // The leader has claimed its term and is promoting: a running standby
    // points at it already (streaming from it as a cascade until it runs as
    // a primary), so its WAL receiver reconnects as soon as the new primary
    // takes connections instead of after this agent's next look at the
    // leader's record. Nothing else (clone, rewind, start) uses a leader
    // that is not a primary yet.
    let promoting = established && rec.is_some_and(|m| m.is_running_standby());
    if promoting && !ready && pg.is_running_standby() && !ctx.local.reinit_requested {
        if let Some(up) = ctx.upstream(leader) {
            return follow_promoting(ctx, up);
        }
    }
    let upstream = ctx.upstream(leader).filter(|_| ready);
    match upstream {
        None => not_ready(ctx, leader),
        Some(up) if pg.is_running_standby() => running_standby(ctx, up),
        Some(up) if pg.running => ctx.decision(
            vec![],
            format!(
                "PostgreSQL runs but its role is unknown; waiting before following {}",
                up.name
            ),
        ),
        Some(up) => rejoin(ctx, up),
    }
}

/// The established leader still runs in recovery (promoting): follow it now.
fn follow_promoting(ctx: &Ctx<'_>, up: Upstream) -> Decision {
    let pg = &ctx.local.pg;
    let name = up.name.clone();
    if pg.upstream.as_deref() != Some(name.as_str()) || ctx.local.detached.is_some() {
        return ctx.decision_now(
            vec![Action::FollowLeader(up)],
            format!("following the leader {name} while it promotes"),
        );
    }
    ctx.decision_soon(
        vec![],
        format!("waiting for {name} to finish taking over (following it already)"),
    )
}

/// The leader is not established or not a running primary yet.
fn not_ready(ctx: &Ctx<'_>, leader: &str) -> Decision {
    let pg = &ctx.local.pg;
    let term = ctx.view.sync_term();
    let detached_now = ctx.local.detached.is_some_and(|d| d.after_term == term);
    // Once the holder has claimed its term, `term` is *its* term: a promise
    // "detached after term" would then cover the very leader we are about
    // to follow, and a stale copy of it could be counted later (pinned seed
    // 18899). The holder already had its quorum of reports; just wait.
    let claimed = ctx.view.established_leader().is_some();
    if pg.is_running_standby() {
        let from_old = pg.upstream.as_deref().is_some_and(|u| u != leader);
        if (from_old || pg.upstream.is_none()) && !detached_now && !claimed {
            return ctx.decision_now(
                vec![Action::DetachFromPrimary { after_term: term }],
                format!("{leader} is taking over: detaching from the old primary to report my final LSN"),
            );
        }
        return ctx.decision_soon(
            vec![],
            format!("waiting for {leader} to finish taking over"),
        );
    }
    if !pg.running && pg.data_dir == DataDir::Standby {
        return ctx.decision_now(
            vec![Action::StartAsStandby { upstream: None }],
            format!("{leader} is taking over: starting read-only without upstream meanwhile"),
        );
    }
    ctx.decision(
        vec![],
        format!("waiting for leader {leader} to run as an established primary"),
    )
}

fn running_standby(ctx: &Ctx<'_>, up: Upstream) -> Decision {
    let (local, pg) = (ctx.local, &ctx.local.pg);
    if local.reinit_requested {
        return ctx.decision_now(vec![Action::Reclone(up)], "re-initializing on request");
    }
    if pg.diverged {
        return repair(ctx, up, "my WAL diverged from the leader's timeline");
    }
    if pg.upstream.as_deref() != Some(up.name.as_str()) || local.detached.is_some() {
        let name = up.name.clone();
        return ctx.decision_now(
            vec![Action::FollowLeader(up)],
            format!("following the leader {name}"),
        );
    }
    let state = if pg.streaming {
        "streaming"
    } else {
        "configured, not streaming yet"
    };
    ctx.decision(vec![], format!("standby of {}: {state}", up.name))
}

/// Stopped node with a ready leader.
fn rejoin(ctx: &Ctx<'_>, up: Upstream) -> Decision {
    let pg = &ctx.local.pg;
    if ctx.local.reinit_requested && pg.data_dir != DataDir::Empty {
        return ctx.decision_now(vec![Action::Reclone(up)], "re-initializing on request");
    }
    match pg.data_dir {
        DataDir::Empty => {
            let name = up.name.clone();
            ctx.decision_now(
                vec![Action::CloneFromLeader(up)],
                format!("cloning from the leader {name}"),
            )
        }
        DataDir::Primary => repair(ctx, up, "former primary rejoining"),
        DataDir::Standby if pg.diverged => {
            repair(ctx, up, "my WAL diverged from the leader's timeline")
        }
        DataDir::Standby => {
            let name = up.name.clone();
            ctx.decision_now(
                vec![Action::StartAsStandby { upstream: Some(up) }],
                format!("starting as a standby of {name}"),
            )
        }
    }
}

/// Rewind from the leader, or re-clone when a rewind already failed.
fn repair(ctx: &Ctx<'_>, up: Upstream, why: &str) -> Decision {
    let name = up.name.clone();
    if ctx.local.pg.rewind_failed {
        return ctx.decision_now(
            vec![Action::Reclone(up)],
            format!("{why}; pg_rewind failed before: re-cloning from {name}"),
        );
    }
    ctx.decision_now(
        vec![Action::Rewind(up)],
        format!("{why}: rewinding from {name}"),
    )
}
