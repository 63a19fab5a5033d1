//! Scripted scenarios for the behaviours the issue names: node crash
//! failover time, a dead standby not blocking writes, both standbys down,
//! switchover without rewind, etcd down, a hung primary agent. The same
//! invariant checks run after every step as in the random scenarios.

use crate::world::{World, STEP};
use pgha_core::DynamicConfig;

const NEVER: u64 = u64::MAX / 4;

/// A healthy cluster: bootstrapped, every standby streaming and in S.
pub fn boot(seed: u64, nodes: usize) -> World {
    let mut w = World::new(seed, nodes, DynamicConfig::default());
    w.verbose = std::env::var("PGHA_SIM_VERBOSE").is_ok();
    let healthy = |w: &World| {
        w.writable_primary().is_some()
            && w.dcs
                .sync
                .as_ref()
                .is_some_and(|s| s.set.members.len() == nodes - 1)
            && w.nodes.iter().filter(|n| n.pg.streaming).count() == nodes - 1
    };
    for _ in 0..300 {
        if healthy(&w) {
            break;
        }
        w.step();
    }
    assert!(
        healthy(&w),
        "seed {seed}: cluster did not become healthy\n{}",
        w.dump()
    );
    run(&mut w, 2000);
    w
}

pub fn run(w: &mut World, ms: u64) {
    for _ in 0..ms / STEP {
        w.step();
    }
    if let Some(v) = &w.violation {
        let log: Vec<&str> = w.log.iter().map(String::as_str).collect();
        panic!("{v}\n{}\n{}", w.dump(), log.join("\n"));
    }
}

/// Run until `done`, at most `limit` ms; the elapsed time if it happened.
pub fn run_until(w: &mut World, limit: u64, done: impl Fn(&World) -> bool) -> Option<u64> {
    let start = w.t;
    while w.t - start <= limit {
        if done(w) {
            return Some(w.t - start);
        }
        run(w, STEP);
    }
    None
}

pub fn primary(w: &World) -> usize {
    w.writable_primary().expect("a writable primary")
}

/// The primary's node dies for good: time to a new writable primary that
/// acknowledged a commit, over many seeds.
#[test]
fn node_crash_fails_over_within_ttl_plus_a_small_bound() {
    let mut times = Vec::new();
    for seed in 0..200 {
        let mut w = boot(seed, 3);
        let old = primary(&w);
        w.nodes[old].pg.stop();
        w.nodes[old].crash_agent(NEVER);
        let acked = w.acked.len();
        let t = run_until(&mut w, 10_000, |w| {
            w.writable_primary().is_some_and(|p| p != old) && w.acked.len() > acked
        });
        times.push(t.unwrap_or_else(|| panic!("seed {seed}: no failover\n{}", w.dump())));
    }
    times.sort();
    let (median, max) = (times[times.len() / 2], times[times.len() - 1]);
    println!("node crash -> first acknowledged commit on the new primary: median {median} ms, max {max} ms");
    let ttl = DynamicConfig::default().ttl.0;
    assert!(max <= ttl + 1500, "max {max} ms");
}

/// k = 1, S = {a, b}: one standby dies, commits keep being acknowledged and
/// it leaves S; when it returns it is added back.
#[test]
fn dead_standby_does_not_block_writes_and_returns_to_the_set() {
    for seed in 0..20 {
        let mut w = boot(seed, 3);
        let p = primary(&w);
        let dead = (p + 1) % 3;
        w.nodes[dead].pg.stop();
        w.nodes[dead].crash_agent(w.t + 8000);
        let before = w.acked.len();
        run(&mut w, 1000);
        assert!(
            w.acked.len() >= before + 3,
            "seed {seed}: writes blocked by one dead standby"
        );
        let name = w.nodes[dead].name.clone();
        let dropped = run_until(&mut w, 3000, |w| {
            w.dcs
                .sync
                .as_ref()
                .is_some_and(|s| !s.set.members.contains(&name))
        });
        assert!(
            dropped.is_some(),
            "seed {seed}: {name} never left S\n{}",
            w.dump()
        );
        let back = run_until(&mut w, 15_000, |w| {
            w.dcs
                .sync
                .as_ref()
                .is_some_and(|s| s.set.members.contains(&name))
        });
        assert!(
            back.is_some(),
            "seed {seed}: {name} never came back to S\n{}",
            w.dump()
        );
    }
}

/// Both standbys down: nothing is acknowledged (strict default); writes
/// resume when one comes back.
#[test]
fn both_standbys_down_blocks_writes_until_one_returns() {
    for seed in 0..20 {
        let mut w = boot(seed, 3);
        let p = primary(&w);
        for k in 1..3 {
            let s = (p + k) % 3;
            w.nodes[s].pg.stop();
            w.nodes[s].crash_agent(w.t + 6000);
        }
        run(&mut w, STEP);
        let frozen = w.acked.len();
        run(&mut w, 5000);
        assert_eq!(
            w.acked.len(),
            frozen,
            "seed {seed}: acknowledged without a standby"
        );
        let resumed = run_until(&mut w, 10_000, |w| w.acked.len() > frozen);
        assert!(
            resumed.is_some(),
            "seed {seed}: writes never resumed\n{}",
            w.dump()
        );
    }
}

/// A planned switchover: the target leads, nothing is lost, and the old
/// primary rejoins without pg_rewind.
#[test]
fn switchover_hands_over_without_rewind() {
    for seed in 0..20 {
        let mut w = boot(seed, 3);
        let old = primary(&w);
        let target = (old + 1) % 3;
        let (from, to) = (w.nodes[old].name.clone(), w.nodes[target].name.clone());
        let req = pgha_core::SwitchoverRequest {
            from: Some(from.clone()),
            to: Some(to.clone()),
            scheduled_at_unix_ms: None,
        };
        w.dcs.request_switchover(req, w.t);
        let done = run_until(&mut w, 10_000, |w| w.writable_primary() == Some(target));
        assert!(done.is_some(), "seed {seed}: no switchover\n{}", w.dump());
        let rejoined = run_until(&mut w, 10_000, |w| {
            w.nodes[old].pg.streaming && w.dcs.switchover.is_none()
        });
        assert!(
            rejoined.is_some(),
            "seed {seed}: old primary did not rejoin\n{}",
            w.dump()
        );
        let rewound = w
            .log
            .iter()
            .any(|l| l.contains(&format!("{from}: [rewind")));
        assert!(!rewound, "seed {seed}: switchover needed a rewind");
    }
}

/// etcd unreachable for everyone with failsafe mode off: the primary
/// fences before its lease can expire, nobody is promoted, writes resume
/// afterwards on the same node.
#[test]
fn etcd_outage_fences_the_primary_without_failsafe_and_recovers() {
    for seed in 0..20 {
        let mut w = boot(seed, 3);
        w.dcs.config.failsafe_mode = false;
        run(&mut w, 1000);
        let p = primary(&w);
        let until = w.t + 5000;
        w.dcs_outage(until, seed % 2 == 0);
        let fenced = run_until(&mut w, 2000, |w| fenced(w, p));
        assert!(
            fenced.is_some(),
            "seed {seed}: primary not fenced\n{}",
            w.dump()
        );
        let failovers = w.failovers;
        run(&mut w, 4000);
        let back = run_until(&mut w, 6000, |w| w.writable_primary().is_some());
        assert!(
            back.is_some(),
            "seed {seed}: no writable primary after etcd returned"
        );
        assert_eq!(
            w.failovers, failovers,
            "seed {seed}: promotion while etcd was down"
        );
    }
}

fn fenced(w: &World, i: usize) -> bool {
    w.nodes[i].pg.data.as_ref().is_some_and(|d| d.fenced)
}

/// etcd out for 20 s with failsafe mode on (the default): the primary is
/// never fenced and keeps acknowledging commits, with leases frozen (etcd
/// restarted) or run out (etcd lost them); nobody is promoted.
#[test]
fn etcd_outage_with_failsafe_keeps_writes_going() {
    for seed in 0..20 {
        let mut w = boot(seed, 3);
        let p = primary(&w);
        let failovers = w.failovers;
        let acked = w.acked.len();
        let end = w.t + 20_000;
        w.dcs_outage(end, seed % 2 == 0);
        while w.t < end + 3000 {
            run(&mut w, STEP);
            assert!(
                !fenced(&w, p),
                "seed {seed}: fenced at t={}\n{}",
                w.t,
                w.dump()
            );
        }
        assert!(
            w.acked.len() > acked + 10,
            "seed {seed}: only {} commits acknowledged",
            w.acked.len() - acked
        );
        assert_eq!(
            w.failovers, failovers,
            "seed {seed}: promotion during the outage"
        );
        assert_eq!(w.writable_primary(), Some(p), "seed {seed}\n{}", w.dump());
    }
}

/// During the outage one standby is cut off from the primary: with k = 1
/// the other's promise is enough (the cut one cannot gather the reports it
/// would need), so writes go on. Then the second is cut too: the primary
/// fences within the promise time, and after the outage the cluster heals
/// without a lost commit (the invariants checked on every step).
#[test]
fn etcd_outage_with_standbys_cut_off() {
    for seed in 0..20 {
        let mut w = boot(seed, 3);
        let p = primary(&w);
        let (a, b) = ((p + 1) % 3, (p + 2) % 3);
        let end = w.t + 20_000;
        w.dcs_outage(end, seed % 2 == 0);
        run(&mut w, 1000);
        w.cut.insert((p.min(a), p.max(a)), end);
        let acked = w.acked.len();
        run(&mut w, 5000);
        assert!(
            !fenced(&w, p),
            "seed {seed}: fenced with one promise\n{}",
            w.dump()
        );
        assert!(
            w.acked.len() > acked,
            "seed {seed}: no commit with one standby cut"
        );
        w.cut.insert((p.min(b), p.max(b)), end);
        let t = run_until(&mut w, 2000, |w| fenced(w, p));
        assert!(
            t.is_some(),
            "seed {seed}: not fenced without promises\n{}",
            w.dump()
        );
        let left = end - w.t;
        run(&mut w, left);
        w.heal();
        let back = run_until(&mut w, 15_000, |w| w.writable_primary().is_some());
        assert!(
            back.is_some(),
            "seed {seed}: no primary after healing\n{}",
            w.dump()
        );
    }
}

/// The primary's agent hangs (SIGSTOP) while PostgreSQL keeps running:
/// a standby is promoted and the old primary acknowledges nothing after
/// that (checked by the invariants on every acknowledgement).
#[test]
fn hung_primary_agent_is_replaced_without_losing_commits() {
    for seed in 0..20 {
        let mut w = boot(seed, 3);
        let old = primary(&w);
        w.nodes[old].hung_until = w.t + 8000;
        let t = run_until(&mut w, 6000, |w| {
            w.writable_primary().is_some_and(|p| p != old)
        });
        assert!(t.is_some(), "seed {seed}: no promotion\n{}", w.dump());
        run(&mut w, 10_000);
        assert!(
            w.nodes[old].pg.is_standby(),
            "seed {seed}: old primary did not rejoin\n{}",
            w.dump()
        );
    }
}

/// Node `i` shut down: its postmaster has exited, or the control file
/// says a clean shutdown while it exits.
fn shut_down(w: &World, i: usize) -> bool {
    !w.nodes[i].pg.running || w.nodes[i].pg.exiting
}

/// Switch over from the current primary to the next node; returns (old, target).
fn request_switchover(w: &mut World) -> (usize, usize) {
    let old = primary(w);
    let target = (old + 1) % w.nodes.len();
    let req = pgha_core::SwitchoverRequest {
        from: Some(w.nodes[old].name.clone()),
        to: Some(w.nodes[target].name.clone()),
        scheduled_at_unix_ms: None,
    };
    w.dcs.request_switchover(req, w.t);
    (old, target)
}

/// With proxies registered, the old primary shuts down only once every
/// proxy has drained (here: a transaction that runs 1.5 s past the
/// request), and the new primary takes writes afterwards.
#[test]
fn switchover_waits_for_the_proxies_to_drain() {
    for seed in 0..20 {
        let mut w = boot(seed, 3);
        w.add_proxy(false);
        w.add_proxy(false);
        run(&mut w, 500);
        let start = w.t;
        w.proxies[0].in_flight.push(start + 1500);
        let (old, target) = request_switchover(&mut w);
        let stopped = run_until(&mut w, 10_000, |w| shut_down(w, old));
        assert!(stopped.is_some(), "seed {seed}: no shutdown\n{}", w.dump());
        assert!(
            w.t >= start + 1500,
            "seed {seed}: shut down before the proxy drained"
        );
        assert_eq!(w.drained_shutdowns, 1, "seed {seed}");
        let done = run_until(&mut w, 10_000, |w| w.writable_primary() == Some(target));
        assert!(done.is_some(), "seed {seed}: no new primary\n{}", w.dump());
    }
}

/// A proxy that never drains delays the switchover by the drain timeout
/// (5 s by default), not forever.
#[test]
fn a_stuck_proxy_delays_the_switchover_by_the_drain_timeout_only() {
    for seed in 0..20 {
        let mut w = boot(seed, 3);
        w.add_proxy(true);
        run(&mut w, 500);
        w.proxies[0].in_flight.push(NEVER);
        let timeout = w.dcs.config.switchover_drain_timeout.0;
        let (old, target) = request_switchover(&mut w);
        let stopped = run_until(&mut w, 3 * timeout, |w| shut_down(w, old));
        let waited = stopped.expect("the switchover went ahead after the timeout");
        assert!(
            waited >= timeout,
            "seed {seed}: went ahead after {waited} ms"
        );
        assert!(waited <= timeout + 1500, "seed {seed}: waited {waited} ms");
        let done = run_until(&mut w, 10_000, |w| w.writable_primary() == Some(target));
        assert!(done.is_some(), "seed {seed}: no new primary\n{}", w.dump());
    }
}

/// PostgreSQL on the primary stalls for less than hung_timeout (6 s): no
/// failover, the same primary acknowledges again afterwards.
#[test]
fn a_short_stall_of_the_primary_changes_nothing() {
    for seed in 0..20 {
        let mut w = boot(seed, 3);
        let p = primary(&w);
        let failovers = w.failovers;
        w.nodes[p].pg.stalled_until = w.t + 4000;
        run(&mut w, 6000);
        assert_eq!(
            w.failovers, failovers,
            "seed {seed}: failover after a 4 s stall"
        );
        let acked = w.acked.len();
        let more = run_until(&mut w, 5000, |w| w.acked.len() > acked);
        assert!(
            more.is_some(),
            "seed {seed}: no commit after the stall\n{}",
            w.dump()
        );
        assert_eq!(w.writable_primary(), Some(p), "seed {seed}");
    }
}

/// PostgreSQL on the primary freezes for 30 s: after hung_timeout its
/// agent kills it and hands over; a standby takes over within hung_timeout
/// plus a normal failover, no acknowledged commit is lost (invariants), and
/// the old primary rejoins as a standby.
#[test]
fn a_hung_primary_is_failed_over_and_rejoins() {
    for seed in 0..20 {
        let mut w = boot(seed, 3);
        let p = primary(&w);
        w.nodes[p].pg.stalled_until = w.t + 30_000;
        let took = run_until(&mut w, 15_000, |w| {
            w.writable_primary().is_some_and(|q| q != p)
        });
        let took = took.unwrap_or_else(|| panic!("seed {seed}: no failover\n{}", w.dump()));
        assert!(
            took >= 6000,
            "seed {seed}: failed over after {took} ms, before hung_timeout"
        );
        let acked = w.acked.len();
        let more = run_until(&mut w, 5000, |w| w.acked.len() > acked);
        assert!(more.is_some(), "seed {seed}: no commit on the new primary");
        let back = run_until(&mut w, 20_000, |w| {
            w.nodes[p].pg.is_standby() && w.nodes[p].pg.streaming
        });
        assert!(
            back.is_some(),
            "seed {seed}: old primary did not rejoin\n{}",
            w.dump()
        );
    }
}
