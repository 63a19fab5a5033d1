//! Seeded fault injection and healing, and the scenario runner.

use crate::rng::Rng;
use crate::world::{World, STEP};
use pgha_core::{DynamicConfig, SwitchoverRequest};

const RATES: [(u64, u64); 5] = [(1, 2), (9, 10), (1, 1), (11, 10), (3, 2)];

impl World {
    /// One random fault.
    pub fn inject_fault(&mut self, pause_until: &mut u64) {
        let k = self.nodes.len() as u64;
        let t = self.t;
        let mut i = self.rng.below(k) as usize;
        let what = self.rng.below(12);
        if what == 1 {
            match self.dcs.holder().and_then(|h| self.index(h)) {
                Some(h) => i = h,
                None => return,
            }
        }
        let name = self.nodes[i].name.clone();
        let line = match what {
            0 | 1 => {
                let back = t + self.rng.range(500, 8000);
                self.nodes[i].pg.stop();
                self.nodes[i].crash_agent(back);
                format!("crash node {name} (back at {back})")
            }
            2 => {
                self.nodes[i].pg.stop();
                format!("crash PostgreSQL on {name}")
            }
            3 => {
                let back = t + self.rng.range(300, 5000);
                self.nodes[i].crash_agent(back);
                format!("crash agent on {name} (back at {back})")
            }
            4 => {
                self.nodes[i].hung_until = t + self.rng.range(1000, 8000);
                format!("hang agent on {name} until {}", self.nodes[i].hung_until)
            }
            5 => {
                self.nodes[i].dcs_cut_until = t + self.rng.range(1000, 8000);
                format!(
                    "cut {name} from the DCS until {}",
                    self.nodes[i].dcs_cut_until
                )
            }
            6 | 7 => {
                let j = (i + 1 + self.rng.below(k - 1) as usize) % k as usize;
                let until = t + self.rng.range(1000, 10000);
                let key = (i.min(j), i.max(j));
                let kind = if what == 6 { "cut" } else { "slow" };
                let map = if what == 6 {
                    &mut self.cut
                } else {
                    &mut self.slow
                };
                map.insert(key, until);
                format!("{kind} link {name}-{} until {until}", self.nodes[j].name)
            }
            8 => {
                self.dcs.revoke_leader();
                "revoke the leader lease".to_string()
            }
            9 => self.request_switchover(),
            10 => {
                let rate = *self.rng.pick(&RATES);
                self.nodes[i].set_rate(t, rate);
                format!("clock of {name} now runs at {}/{}", rate.0, rate.1)
            }
            _ => {
                *pause_until = t + self.rng.range(1000, 5000);
                self.dcs.config.paused = true;
                format!("pause until {pause_until}")
            }
        };
        self.note(format!("t={t} FAULT: {line}"));
    }

    /// One fault of the second set, drawn from `extra_rng`: a clock jump
    /// (forward or backward, on the leader or on another node, which may
    /// be the next candidate), or a `/sync` write of the leader held in
    /// the network until after its term may have ended.
    pub fn inject_extra_fault(&mut self) {
        let t = self.t;
        let k = self.nodes.len() as u64;
        let leader = self.dcs.holder().and_then(|h| self.index(h));
        let what = self.extra_rng.below(5);
        let on_leader = what.is_multiple_of(2);
        let i = match (on_leader, leader) {
            (true, Some(l)) => l,
            (false, Some(l)) => (l + 1 + self.extra_rng.below(k - 1) as usize) % k as usize,
            (_, None) => self.extra_rng.below(k) as usize,
        };
        let name = self.nodes[i].name.clone();
        let line = match what {
            0 | 1 => {
                let ms = self.extra_rng.range(500, 30_000);
                self.nodes[i].jump(t, ms as i64);
                format!("clock of {name} jumps {ms} ms forward")
            }
            2 | 3 => {
                let ms = self.extra_rng.range(500, 10_000);
                self.nodes[i].jump(t, -(ms as i64));
                format!("clock of {name} jumps {ms} ms backward")
            }
            _ => {
                let ms = self.extra_rng.range(500, 10_000);
                self.nodes[i].delay_next_sync = Some(ms);
                format!("the next /sync write of {name} lands {ms} ms late")
            }
        };
        self.note(format!("t={t} FAULT: {line}"));
    }

    fn request_switchover(&mut self) -> String {
        let Some(from) = self.dcs.holder().map(str::to_string) else {
            return "no switchover (no leader)".into();
        };
        let others: Vec<String> = self
            .nodes
            .iter()
            .map(|n| n.name.clone())
            .filter(|n| *n != from)
            .collect();
        let to = if self.rng.chance(300) {
            None
        } else {
            Some(self.rng.pick(&others).clone())
        };
        let line = format!("switchover request from {from} to {to:?}");
        let req = SwitchoverRequest {
            from: Some(from),
            to,
            scheduled_at_unix_ms: None,
        };
        self.dcs.request_switchover(req, self.t);
        line
    }

    /// End every fault: agents back, links and DCS access restored, resume.
    pub fn heal(&mut self) {
        for n in self.nodes.iter_mut() {
            n.restart_at = n.restart_at.min(self.t);
            n.hung_until = 0;
            n.dcs_cut_until = 0;
            n.delay_next_sync = None;
            n.pg.stalled_until = 0;
        }
        if self.dcs.frozen_until > self.t {
            self.dcs.frozen_until = self.t;
        }
        self.cut.clear();
        self.slow.clear();
        self.dcs.config.paused = false;
        self.note(format!("t={} HEAL", self.t));
    }
}

/// Knobs of one scenario, drawn from its seed.
pub struct Scenario {
    pub nodes: usize,
    pub config: DynamicConfig,
    pub fault_steps: u64,
    pub fault_per_mille: u64,
}

impl Scenario {
    pub fn random(seed: u64) -> Scenario {
        let mut rng = Rng::new(seed ^ 0x5EED_0F5C_E7A2_1000);
        let nodes = *rng.pick(&[3, 3, 3, 3, 3, 3, 2, 4, 4, 5]);
        let config = DynamicConfig {
            sync_quorum: if nodes >= 4 && rng.chance(300) { 2 } else { 1 },
            allow_async_fallback: rng.chance(200),
            ..Default::default()
        };
        // a third of the seeds are storms: several overlapping faults
        let storm = rng.chance(330);
        Scenario {
            nodes,
            config,
            fault_steps: if storm {
                rng.range(100, 200)
            } else {
                rng.range(60, 160)
            },
            fault_per_mille: if storm {
                rng.range(100, 250)
            } else {
                rng.range(15, 60)
            },
        }
    }
}

/// Bounds of the liveness check, from the moment faults heal.
pub fn writable_bound(cfg: &DynamicConfig) -> u64 {
    cfg.ttl.0 + 8000
}

pub fn ack_bound(cfg: &DynamicConfig) -> u64 {
    writable_bound(cfg) + 4000
}

/// How to run a seed.
#[derive(Clone, Copy, Debug)]
pub struct RunOpts {
    /// Print every event as it happens.
    pub verbose: bool,
    /// Inject the second fault set (clock jumps, late `/sync` writes).
    /// Off only to replay a seed pinned before that set existed exactly.
    pub extra_faults: bool,
    /// See `World::late_within_term`.
    pub late_within_term: bool,
    /// Inject whole-DCS outages (drawn from their own generator). Off only
    /// to replay a seed pinned before they existed exactly.
    pub dcs_outages: bool,
    /// Inject PostgreSQL stalls around `hung_timeout` (own generator).
    pub pg_stalls: bool,
}

impl RunOpts {
    pub const DEFAULT: RunOpts = RunOpts {
        verbose: false,
        extra_faults: true,
        late_within_term: true,
        dcs_outages: true,
        pg_stalls: true,
    };
}

/// Run one seeded scenario; `Ok` carries (promotions, late `/sync` writes
/// refused), `Err` the violation and the log.
pub fn run_seed(seed: u64, verbose: bool) -> Result<(u64, u64), String> {
    run_seed_with(
        seed,
        RunOpts {
            verbose,
            ..RunOpts::DEFAULT
        },
    )
}

pub fn run_seed_with(seed: u64, opts: RunOpts) -> Result<(u64, u64), String> {
    let sc = Scenario::random(seed);
    let mut w = World::new(seed, sc.nodes, sc.config.clone());
    w.verbose = opts.verbose;
    w.late_within_term = opts.late_within_term;
    for k in 0..w.nodes.len() {
        let rate = *w.rng.pick(&[(1, 1), (1, 1), (1, 1), (9, 10), (11, 10)]);
        w.nodes[k].set_rate(0, rate);
    }
    let last = w.nodes.len() - 1;
    match w.rng.below(20) {
        // an asynchronous backup that never takes over
        0..=2 if last >= 2 => {
            w.nodes[last].tags.nofailover = true;
            w.nodes[last].tags.nosync = true;
        }
        3 | 4 if last >= 2 => w.nodes[last].tags.nofailover = true,
        _ => {}
    }
    for _ in 0..w.proxy_rng.below(3) {
        let stuck = w.proxy_rng.chance(100);
        w.add_proxy(stuck);
    }
    let tags = w.nodes[last].tags.clone();
    w.note(format!(
        "seed {seed}: {} nodes, {:?}, last node {tags:?}",
        sc.nodes, sc.config
    ));
    let ok = run_until(&mut w, 30_000, |w| {
        w.writable_primary().is_some() && !w.acked.is_empty()
    });
    if !ok {
        w.violate("bootstrap: no writable primary with an acknowledged commit within 30 s".into());
    }
    let mut pause_until = u64::MAX;
    let mut outage_rng = crate::rng::Rng::new(seed ^ 0x0E7C_D0A7_0FF1_1E00);
    let mut stall_rng = crate::rng::Rng::new(seed ^ 0x57A1_1ED0_0D15_C000);
    for _ in 0..sc.fault_steps {
        if w.violation.is_some() {
            break;
        }
        if w.t >= pause_until {
            w.dcs.config.paused = false;
            pause_until = u64::MAX;
        }
        if w.rng.chance(sc.fault_per_mille) {
            w.inject_fault(&mut pause_until);
        }
        if opts.extra_faults && w.extra_rng.chance(sc.fault_per_mille / 2) {
            w.inject_extra_fault();
        }
        if opts.dcs_outages && outage_rng.chance(sc.fault_per_mille / 3) {
            let until = w.t + outage_rng.range(1000, 15_000);
            let frozen = outage_rng.chance(500);
            w.dcs_outage(until, frozen);
            let how = if frozen {
                "leases frozen"
            } else {
                "leases run out"
            };
            w.note(format!(
                "t={} FAULT: the whole DCS is out until {until} ({how})",
                w.t
            ));
        }
        if opts.pg_stalls && stall_rng.chance(sc.fault_per_mille / 3) {
            inject_stall(&mut w, &mut stall_rng);
        }
        w.step();
    }
    w.heal();
    check_recovery(&mut w, &sc.config);
    match w.violation.take() {
        None => Ok((w.failovers, w.late_refused)),
        Some(v) => Err(report(&w, seed, &v)),
    }
}

fn run_until(w: &mut World, limit_ms: u64, done: impl Fn(&World) -> bool) -> bool {
    let end = w.t + limit_ms;
    while w.t < end && w.violation.is_none() {
        if done(w) {
            return true;
        }
        w.step();
    }
    done(w)
}

/// Invariant 3: after healing, a writable primary within the bound and an
/// acknowledged commit soon after.
fn check_recovery(w: &mut World, cfg: &DynamicConfig) {
    let healed = w.t;
    if !run_until(w, writable_bound(cfg), |w| w.writable_primary().is_some()) {
        let what = format!(
            "no writable primary within {} ms after healing",
            writable_bound(cfg)
        );
        w.violate(what);
        return;
    }
    let acked = w.acked.len();
    let left = (healed + ack_bound(cfg)).saturating_sub(w.t);
    if !run_until(w, left, |w| w.acked.len() > acked) {
        let what = format!(
            "no acknowledged commit within {} ms after healing",
            ack_bound(cfg)
        );
        w.violate(what);
    }
    // keep running a little: the invariants must hold in calm too
    for _ in 0..(2000 / STEP) {
        w.step();
    }
}

fn report(w: &World, seed: u64, violation: &str) -> String {
    let log: Vec<&str> = w.log.iter().map(String::as_str).collect();
    format!(
        "seed {seed}: {violation}\nstate:\n{}last events:\n{}\n\nreplay with: \
         PGHA_SIM_SEED={seed} cargo test -p pgha-core --test sim replay -- --ignored --nocapture\n",
        w.dump(),
        log.join("\n")
    )
}

/// PostgreSQL stalls for d around hung_timeout (6 s): below it nothing may
/// change, above it the node is failed over; on the leader half the time.
fn inject_stall(w: &mut World, rng: &mut crate::rng::Rng) {
    let d = rng.range(1000, 14_000);
    let leader = w.dcs.holder().and_then(|h| w.index(h));
    let i = match leader {
        Some(l) if rng.chance(500) => l,
        _ => rng.below(w.nodes.len() as u64) as usize,
    };
    if w.nodes[i].pg.running {
        w.nodes[i].pg.stalled_until = w.t + d;
        let name = w.nodes[i].name.clone();
        w.note(format!(
            "t={} FAULT: PostgreSQL on {name} stalls for {d} ms",
            w.t
        ));
    }
}
