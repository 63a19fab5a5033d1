//! A synthetic but plausible [`History`] for tests and for looking at the
//! report without running a cluster: three nodes, four clients, a seeded
//! schedule of every fault kind with failovers onto new timelines, and a
//! final state in which every acknowledged write survived. The checker
//! must pass it; tests break one promise at a time by editing it.
//!
//! Hazard: this is a model, not a measurement. Its RTOs and throughput are
//! made up; never paste its numbers into docs as results.

use super::to_ranges;
use crate::chaos::history::{
    Fault, FinalState, History, NodeContents, Op, OpKind, Outcome, RoleSample, Route,
    TimelineSwitch, HISTORY_VERSION,
};

const NODES: [&str; 3] = ["node1", "node2", "node3"];
const CLIENTS: u32 = 4;

/// Fault kinds, the role each is aimed at, and what it does to the model.
const KINDS: [(&str, &str, Effect); 14] = [
    ("kill_postgres", "primary", Effect::Failover),
    ("kill_agent", "standby", Effect::StandbyDown),
    ("node_crash", "primary", Effect::Failover),
    ("pause_agent", "primary", Effect::Nothing),
    ("pause_postgres", "standby", Effect::StandbyDown),
    ("primary_from_etcd", "primary", Effect::Failover),
    ("primary_from_standbys", "primary", Effect::Failover),
    ("isolate_standby", "standby", Effect::StandbyDown),
    ("kill_etcd_member", "etcd", Effect::Nothing),
    ("etcd_majority_lost", "etcd", Effect::NoWrites),
    ("switchover", "primary", Effect::Switchover),
    ("link_latency", "primary", Effect::Nothing),
    ("archive_full", "primary", Effect::Nothing),
    ("etcd_outage", "etcd", Effect::Nothing),
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Effect {
    Failover,
    Switchover,
    StandbyDown,
    NoWrites,
    Nothing,
}

/// splitmix64: tiny, seedable, good enough for a test fixture.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi` (`lo` when the range is empty).
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            lo
        } else {
            lo + self.next() % (hi - lo)
        }
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.range(0, 100) < percent
    }
}

/// Who was primary from `from_ms` on (`None`: nobody took writes).
#[derive(Clone, Copy)]
struct Era {
    from_ms: u64,
    primary: Option<usize>,
    timeline: u32,
}

struct World {
    eras: Vec<Era>,
    /// (node, from, to): not running.
    down: Vec<(usize, u64, u64)>,
    switches: Vec<TimelineSwitch>,
    faults: Vec<Fault>,
}

impl World {
    fn era(&self, t: u64) -> Era {
        let i = self.eras.partition_point(|e| e.from_ms <= t);
        self.eras[i.saturating_sub(1)]
    }

    fn is_down(&self, node: usize, t: u64) -> bool {
        self.down
            .iter()
            .any(|&(n, a, b)| n == node && a <= t && t < b)
    }
}

/// LSN as a function of time: monotonic across timelines, as real WAL is.
fn lsn_at(t: u64) -> String {
    let lsn = 0x0300_0000u64 + t * 997;
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// A ten-minute synthetic run.
pub fn sample_history(seed: u64) -> History {
    sample_history_for(seed, 10 * 60 * 1000)
}

/// A synthetic run of `duration_ms` (an hour gives ~150k operations).
pub fn sample_history_for(seed: u64, duration_ms: u64) -> History {
    let mut rng = Rng(seed);
    let world = schedule(&mut rng, duration_ms);
    let ops = clients(&mut rng, &world, duration_ms);
    let roles = roles(&world, duration_ms);
    let final_state = final_state(&mut rng, &world, &ops, duration_ms);
    History {
        version: HISTORY_VERSION,
        seed,
        replay: format!(
            "cargo run -p pgha-testkit --release -- chaos --seed {seed} --duration {}s",
            duration_ms / 1000
        ),
        started_unix_ms: 1_800_000_000_000,
        duration_ms,
        nodes: NODES.iter().map(|n| n.to_string()).collect(),
        network: "loopback".into(),
        ops,
        faults: world.faults,
        roles,
        final_state: Some(final_state),
    }
}

/// Faults one after another (each healed and settled before the next),
/// cycling through every kind from a seeded offset.
fn schedule(rng: &mut Rng, duration_ms: u64) -> World {
    let mut w = World {
        eras: vec![Era {
            from_ms: 0,
            primary: Some(0),
            timeline: 1,
        }],
        down: Vec::new(),
        switches: Vec::new(),
        faults: Vec::new(),
    };
    let mut next_kind = rng.range(0, KINDS.len() as u64) as usize;
    let mut t = rng.range(5_000, 15_000);
    while t + 5_000 < duration_ms {
        let (kind, role, effect) = KINDS[next_kind % KINDS.len()];
        next_kind += 1;
        let era = w.era(t);
        let primary = era.primary.unwrap_or(0);
        let standby = (1..3)
            .map(|k| (primary + k) % 3)
            .find(|&n| !w.is_down(n, t))
            .unwrap_or((primary + 1) % 3);
        let target = match role {
            "primary" => NODES[primary].to_string(),
            "standby" => NODES[standby].to_string(),
            _ => format!("etcd{}", rng.range(1, 4)),
        };
        let lasts = rng.range(2_000, 12_000);
        let healed = t + apply(
            rng,
            &mut w,
            effect,
            t,
            lasts,
            (primary, standby),
            era.timeline,
        );
        w.faults.push(Fault {
            kind: kind.into(),
            target,
            target_role: role.into(),
            start_ms: t,
            healed_ms: Some(healed),
            detail: format!("synthetic {kind} for {lasts} ms"),
        });
        t = healed + rng.range(5_000, 25_000);
    }
    w
}

/// Changes the model for one fault; returns how long until it is healed.
fn apply(
    rng: &mut Rng,
    w: &mut World,
    effect: Effect,
    t: u64,
    lasts: u64,
    (primary, standby): (usize, usize),
    timeline: u32,
) -> u64 {
    let failover = |rto: u64, w: &mut World| {
        w.switches.push(TimelineSwitch {
            timeline,
            switch_lsn: lsn_at(t),
        });
        w.eras.push(Era {
            from_ms: t,
            primary: None,
            timeline,
        });
        w.eras.push(Era {
            from_ms: t + rto,
            primary: Some(standby),
            timeline: timeline + 1,
        });
    };
    match effect {
        Effect::Failover => {
            let rto = rng.range(1_500, 8_000);
            failover(rto, w);
            let lasts = lasts.max(rto + 1_000);
            w.down.push((primary, t, t + lasts));
            lasts
        }
        Effect::Switchover => {
            failover(rng.range(300, 1_500), w);
            2_000
        }
        Effect::StandbyDown => {
            w.down.push((standby, t, t + lasts));
            lasts
        }
        Effect::NoWrites => {
            let back = lasts + rng.range(500, 2_000);
            for (from_ms, p) in [(t, None), (t + back, Some(primary))] {
                w.eras.push(Era {
                    from_ms,
                    primary: p,
                    timeline,
                });
            }
            lasts
        }
        Effect::Nothing => lasts,
    }
}

fn clients(rng: &mut Rng, w: &World, duration_ms: u64) -> Vec<Op> {
    let mut ops = Vec::new();
    for client in 0..CLIENTS {
        let mut c = Client {
            client,
            session: 0,
            seq: 0,
            last_ack: None,
            t: rng.range(0, 50),
        };
        while c.t < duration_ms {
            let slow = w
                .faults
                .iter()
                .any(|f| f.kind == "link_latency" && f.start_ms <= c.t && Some(c.t) < f.healed_ms);
            c.write(rng, w, slow, &mut ops);
            c.t += rng.range(50, 250);
        }
    }
    ops.sort_by_key(|o| (o.start_ms, o.client));
    ops
}

struct Client {
    client: u32,
    session: u32,
    seq: i64,
    last_ack: Option<i64>,
    t: u64,
}

impl Client {
    /// One write (and sometimes a read after it); advances `t`.
    fn write(&mut self, rng: &mut Rng, w: &World, slow: bool, ops: &mut Vec<Op>) {
        let id = (self.client as i64 + 1) * 1_000_000_000 + self.seq;
        self.seq += 1;
        let d = if slow {
            rng.range(40, 160)
        } else {
            rng.range(3, 30)
        };
        let (start, done) = (w.era(self.t), w.era(self.t + d));
        let mut op = self.op(OpKind::Write, id, start.primary);
        match (start.primary, done.primary) {
            (Some(p), Some(q)) if p == q && start.timeline == done.timeline => {
                op.node = Some(NODES[p].into());
                op.timeline = Some(start.timeline);
                op.lsn = Some(lsn_at(self.t + d / 2));
                op.end_ms = self.t + d;
            }
            (Some(_), _) => {
                op.outcome = Outcome::Unknown("connection reset by peer".into());
                op.end_ms = self.t + d;
            }
            (None, _) => {
                op.outcome = Outcome::Failed("no primary within the proxy's wait".into());
                op.end_ms = self.t + rng.range(200, 1_000);
            }
        }
        self.t = op.end_ms;
        let acked = op.outcome == Outcome::Ok;
        ops.push(op);
        if !acked {
            self.session += 1;
            self.last_ack = None;
            return;
        }
        self.last_ack = Some(id);
        if rng.chance(25) {
            let mut read = self.op(OpKind::Read, 0, start.primary);
            let node = (0..3)
                .map(|k| (rng.range(0, 3) as usize + k) % 3)
                .find(|&n| !w.is_down(n, self.t));
            read.node = node.map(|n| NODES[n].to_string());
            read.end_ms = self.t + rng.range(2, 15);
            read.expect = self.last_ack;
            read.saw = Some(true);
            self.t = read.end_ms;
            ops.push(read);
        }
    }

    fn op(&self, kind: OpKind, id: i64, primary: Option<usize>) -> Op {
        let route = if self.client < 2 {
            Route::Proxy
        } else {
            Route::Direct(NODES[primary.unwrap_or(0)].into())
        };
        Op {
            client: self.client,
            session: self.session,
            kind,
            route,
            id,
            start_ms: self.t,
            end_ms: self.t,
            outcome: Outcome::Ok,
            node: None,
            timeline: None,
            lsn: None,
            expect: None,
            saw: None,
        }
    }
}

fn roles(w: &World, duration_ms: u64) -> Vec<RoleSample> {
    let mut out = Vec::new();
    for at_ms in (0..=duration_ms).step_by(1_000) {
        let era = w.era(at_ms);
        for (n, name) in NODES.iter().enumerate() {
            let role = if w.is_down(n, at_ms) {
                "down"
            } else if era.primary == Some(n) {
                "primary"
            } else if era.primary.is_none() && n == 0 {
                "unknown"
            } else {
                "standby"
            };
            out.push(RoleSample {
                at_ms,
                node: name.to_string(),
                role: role.into(),
                timeline: (role != "down").then_some(era.timeline),
            });
        }
    }
    out
}

/// Every acknowledged write everywhere, half of the unknown ones too.
fn final_state(rng: &mut Rng, w: &World, ops: &[Op], duration_ms: u64) -> FinalState {
    let last = w.era(duration_ms);
    let primary = last.primary.unwrap_or(0);
    let mut ids: Vec<i64> = ops
        .iter()
        .filter(|o| o.kind == OpKind::Write)
        .filter(|o| match o.outcome {
            Outcome::Ok => true,
            Outcome::Unknown(_) => rng.chance(50),
            Outcome::Failed(_) => false,
        })
        .map(|o| o.id)
        .collect();
    ids.sort_unstable();
    let ranges = to_ranges(&ids);
    FinalState {
        at_ms: duration_ms + 5_000,
        primary: NODES[primary].into(),
        timeline_history: w.switches.clone(),
        timeline: last.timeline,
        nodes: (0..3)
            .map(|n| NodeContents {
                node: NODES[n].into(),
                role: if n == primary { "primary" } else { "standby" }.into(),
                id_ranges: ranges.clone(),
                duplicates: Vec::new(),
            })
            .collect(),
    }
}
