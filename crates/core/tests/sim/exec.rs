//! The simulated agent runtime: build `LocalState` from the fake
//! PostgreSQL, and execute each `Action` the way the real agent must (see
//! the rustdoc of `pgha_core::Action`). This file doubles as an executable
//! reading of that contract.

use crate::pg::{Data, Pending};
use crate::world::World;
use pgha_core::{
    Action, ConnInfo, DataDir, DcsView, DemoteKind, Detached, LeaseState, LocalState, Lsn, PgState,
    ReplicaStatus, SwitchoverSeen, SyncInDoubt, SyncNamesState, SyncStandbyNames, Upstream,
};

type Res = Result<(), String>;

impl World {
    pub fn observe(&mut self, i: usize, view: &DcsView) -> LocalState {
        let now = self.nodes[i].local_now(self.t);
        let replicas = self.replicas_of(i);
        let diverged = self.diverged(i, view);
        let t = self.t;
        let n = &mut self.nodes[i];
        if let DcsView::Known(v) = view {
            n.mem.switchover_seen = SwitchoverSeen::track(n.mem.switchover_seen, v, t, now);
        }
        if n.pg.running {
            n.mem.stopped_since = None;
        } else if n.mem.stopped_since.is_none() {
            n.mem.stopped_since = Some(now);
        }
        // A frozen server answers no probe: the stall starts at the first
        // loop that sees it and ends at the first answer.
        if n.pg.stalled(t) {
            n.mem.unanswered.get_or_insert(pgha_core::hung::Unanswered {
                since: now,
                progress_at: now,
            });
        } else {
            n.mem.unanswered = None;
        }
        let data = n.pg.data.as_ref();
        let primary = n.pg.is_primary();
        let mut pg = PgState {
            data_dir: match data {
                None => DataDir::Empty,
                Some(d) if d.standby_signal => DataDir::Standby,
                Some(_) => DataDir::Primary,
            },
            running: n.pg.running,
            role: n.pg.role(),
            position: n.pg.position(),
            replay_lsn: None,
            upstream: data.and_then(|d| d.upstream.clone()),
            streaming: n.pg.streaming,
            replicas: if primary { replicas } else { vec![] },
            sync_names: data.filter(|_| primary).map(|d| SyncNamesState {
                names: d.names.clone(),
                applied_at: n.mem.applied_at,
            }),
            fenced: data.is_some_and(|d| d.fenced),
            stopped_since: n.mem.stopped_since,
            diverged,
            rewind_failed: n.mem.rewind_failed,
            clean_shutdown: (!n.pg.running || n.pg.exiting) && n.pg.clean,
            exiting: n.pg.exiting,
            unanswered: n.mem.unanswered.filter(|_| n.pg.running),
        };
        // Hung: the agent no longer reports the last answer it had.
        if pgha_core::hung::judge(&pg, &n.mem.last_config, now).is_hung() {
            pg.role = pgha_core::Role::Unknown;
            pg.replicas.clear();
            pg.sync_names = None;
        }
        LocalState {
            name: n.name.clone(),
            api_url: String::new(),
            conn: ConnInfo {
                host: n.name.clone(),
                port: 5432,
            },
            tags: n.tags.clone(),
            pg,
            lease: n.mem.lease,
            detached: n.mem.detached,
            unix_time_ms: self.t,
            reinit_requested: false,
            switchover_seen: n.mem.switchover_seen,
            sync_in_doubt: n.mem.sync_in_doubt,
            promise: n.mem.promise.clone(),
            failsafe: n.mem.failsafe.clone(),
            gave_up_hung_at: n.mem.gave_up_hung_at,
        }
    }

    /// Standbys streaming from node `i` with their flushed LSN.
    fn replicas_of(&self, i: usize) -> Vec<ReplicaStatus> {
        let me = &self.nodes[i].name;
        self.nodes
            .iter()
            .filter(|s| {
                s.pg.streaming && s.pg.data.as_ref().and_then(|d| d.upstream.as_ref()) == Some(me)
            })
            .map(|s| ReplicaStatus {
                name: s.name.clone(),
                flush_lsn: s.pg.position().lsn,
            })
            .collect()
    }

    /// What the runtime would find out about divergence from the leader.
    fn diverged(&self, i: usize, view: &DcsView) -> bool {
        let DcsView::Known(v) = view else {
            return false;
        };
        let Some(l) = v.established_leader() else {
            return false;
        };
        let Some(j) = self.index(&l.holder) else {
            return false;
        };
        match (&self.nodes[i].pg.data, &self.nodes[j].pg.data) {
            (Some(mine), Some(theirs)) if i != j => !mine.is_prefix_of(theirs),
            _ => false,
        }
    }

    pub fn execute(&mut self, i: usize, action: &Action) -> Res {
        let cut = self.nodes[i].dcs_cut(self.t);
        if self.nodes[i].pg.stalled(self.t) && needs_server(action) {
            return Err("PostgreSQL does not answer".into());
        }
        match action {
            Action::PublishMember(m) => {
                dcs_ok(cut)?;
                self.dcs.publish(m.clone(), self.t);
                Ok(())
            }
            Action::AcquireInitialize => {
                dcs_ok(cut)?;
                if self.dcs.initialize.is_none() {
                    self.dcs.initialize = Some(self.nodes[i].name.clone());
                    self.dcs.bump();
                }
                Ok(())
            }
            Action::Bootstrap => self.bootstrap(i),
            Action::AcquireLeader => self.acquire(i, cut),
            Action::RenewLeader => self.renew(i, cut),
            Action::ReleaseLeader => {
                dcs_ok(cut)?;
                self.dcs.release_leader(&self.nodes[i].name);
                self.nodes[i].mem.lease = None;
                Ok(())
            }
            Action::HandOver(r) | Action::WriteSyncKey(r)
                if cut || self.nodes[i].delay_next_sync.is_some() =>
            {
                // No answer: the runtime cannot tell whether it landed.
                let expected = self.nodes[i].mem.sync_revision;
                self.nodes[i].mem.sync_in_doubt = Some(SyncInDoubt {
                    term: r.term,
                    revision: expected,
                });
                dcs_ok(cut)?;
                let delay = self.nodes[i].delay_next_sync.take().unwrap_or(0);
                self.hold_late(i, action, expected, delay);
                Err(format!("request timed out (it is held {delay} ms)"))
            }
            Action::HandOver(r) => {
                let name = self.nodes[i].name.clone();
                let expected = self.nodes[i].mem.sync_revision;
                self.nodes[i].mem.sync_in_doubt = None;
                let done = self.dcs.hand_over(r.clone(), &name, expected);
                ok_if(done, "leader key not ours or /sync changed")?;
                self.nodes[i].mem.lease = None;
                Ok(())
            }
            Action::WriteSyncKey(r) => {
                let name = self.nodes[i].name.clone();
                let expected = self.nodes[i].mem.sync_revision;
                self.nodes[i].mem.sync_in_doubt = None;
                let done = self.dcs.write_sync(r.clone(), &name, expected);
                ok_if(done, "leader key not ours or /sync changed")
            }
            Action::SetSyncStandbyNames(names) => self.set_names(i, names),
            Action::StartAsPrimary { sync_names } => self.start_primary(i, sync_names),
            Action::Promote { sync_names } => self.promote(i, sync_names),
            Action::StartAsStandby { upstream } => self.start_standby(i, upstream.as_ref()),
            Action::FollowLeader(up) => self.follow(i, up),
            Action::DetachFromPrimary { after_term } => self.detach(i, *after_term),
            Action::CloneFromLeader(up) | Action::Reclone(up) => self.clone_from(i, up),
            Action::Rewind(up) => self.rewind(i, up),
            Action::Demote(kind) => self.demote(i, *kind),
            Action::Fence | Action::Unfence => {
                let fence = *action == Action::Fence;
                let d = self.nodes[i].pg.data.as_mut().ok_or("no data")?;
                d.fenced = fence;
                Ok(())
            }
            Action::ClearSwitchover => {
                dcs_ok(cut)?;
                self.dcs.switchover = None;
                self.dcs.bump();
                Ok(())
            }
            Action::ClearFailover => {
                dcs_ok(cut)?;
                self.dcs.failover = None;
                self.dcs.bump();
                Ok(())
            }
        }
    }

    fn bootstrap(&mut self, i: usize) -> Res {
        let id = self.new_id();
        let n = &mut self.nodes[i];
        n.pg.stop();
        n.pg.data = Some(Data {
            wal: vec![(id, 1)],
            standby_signal: false,
            upstream: None,
            names: SyncStandbyNames::Async,
            fenced: false,
        });
        self.note_timeline(i, 1);
        Ok(())
    }

    fn acquire(&mut self, i: usize, cut: bool) -> Res {
        dcs_ok(cut)?;
        let now = self.nodes[i].local_now(self.t);
        let name = self.nodes[i].name.clone();
        if self.dcs.acquire_leader(&name, self.t).is_some() {
            let ttl = self.dcs.config.ttl;
            self.nodes[i].mem.lease = Some(LeaseState {
                renewed_at: now,
                ttl,
            });
        }
        Ok(())
    }

    fn renew(&mut self, i: usize, cut: bool) -> Res {
        dcs_ok(cut)?;
        let now = self.nodes[i].local_now(self.t);
        let name = self.nodes[i].name.clone();
        if self.dcs.renew_leader(&name, self.t) {
            let ttl = self.dcs.config.ttl;
            self.nodes[i].mem.lease = Some(LeaseState {
                renewed_at: now,
                ttl,
            });
            Ok(())
        } else {
            self.nodes[i].mem.lease = None;
            Err("leader key not ours".into())
        }
    }

    fn set_names(&mut self, i: usize, names: &SyncStandbyNames) -> Res {
        let n = &mut self.nodes[i];
        ok_if(n.pg.is_primary(), "not a running primary")?;
        let d = n.pg.data.as_mut().ok_or("no data")?;
        d.names = names.clone();
        n.mem.applied_at = Some(Lsn(d.wal.len() as u64));
        Ok(())
    }

    fn start_primary(&mut self, i: usize, names: &SyncStandbyNames) -> Res {
        let n = &mut self.nodes[i];
        ok_if(!n.pg.running, "already running")?;
        let d = n.pg.data.as_mut().ok_or("no data")?;
        ok_if(!d.standby_signal, "standby data")?;
        d.names = names.clone();
        n.mem.applied_at = Some(Lsn(d.wal.len() as u64));
        n.pg.running = true;
        self.check_new_primary(i, "started as primary");
        Ok(())
    }

    fn promote(&mut self, i: usize, names: &SyncStandbyNames) -> Res {
        ok_if(self.nodes[i].pg.is_standby(), "not a running standby")?;
        let id = self.new_id();
        self.max_tl += 1;
        let tl = self.max_tl;
        let n = &mut self.nodes[i];
        let d = n.pg.data.as_mut().ok_or("no data")?;
        d.wal.push((id, tl));
        d.standby_signal = false;
        d.upstream = None;
        d.names = names.clone();
        n.mem.applied_at = Some(Lsn(d.wal.len() as u64));
        n.mem.detached = None;
        n.pg.streaming = false;
        self.note_timeline(i, tl);
        self.failovers += 1;
        self.check_new_primary(i, "promoted");
        Ok(())
    }

    fn start_standby(&mut self, i: usize, up: Option<&Upstream>) -> Res {
        if let Some(u) = up {
            self.check_promise(i, u);
        }
        let n = &mut self.nodes[i];
        ok_if(!n.pg.running, "already running")?;
        let d = n.pg.data.as_mut().ok_or("no data")?;
        d.standby_signal = true;
        d.upstream = up.map(|u| u.name.clone());
        n.pg.running = true;
        if up.is_some() {
            n.mem.detached = None;
        }
        Ok(())
    }

    /// Attaching to a leader must keep the detach promise: the leader's
    /// term is newer than the one the node detached after.
    fn check_promise(&mut self, i: usize, up: &Upstream) {
        let Some(d) = self.nodes[i].mem.detached else {
            return;
        };
        let term = self.dcs.leader.as_ref().map(|(k, _)| k.term);
        if term.is_none_or(|t| t <= d.after_term) {
            let what = format!(
                "{} attaches to {} (term {term:?}) but promised to stay detached after term {}",
                self.nodes[i].name, up.name, d.after_term
            );
            self.violate(what);
        }
    }

    fn follow(&mut self, i: usize, up: &Upstream) -> Res {
        self.check_promise(i, up);
        let n = &mut self.nodes[i];
        ok_if(n.pg.is_standby(), "not a running standby")?;
        let d = n.pg.data.as_mut().ok_or("no data")?;
        d.upstream = Some(up.name.clone());
        n.mem.detached = None;
        Ok(())
    }

    fn detach(&mut self, i: usize, after_term: u64) -> Res {
        let n = &mut self.nodes[i];
        ok_if(n.pg.is_standby(), "not a running standby")?;
        let d = n.pg.data.as_mut().ok_or("no data")?;
        d.upstream = None;
        n.pg.streaming = false;
        n.mem.detached = Some(Detached { after_term });
        Ok(())
    }

    /// The source's data, if reachable and running.
    fn source(&self, i: usize, up: &Upstream) -> Result<Data, String> {
        let j = self.index(&up.name).ok_or("unknown upstream")?;
        ok_if(
            self.link_up(i, j) && self.nodes[j].pg.running,
            "upstream unreachable",
        )?;
        self.nodes[j]
            .pg
            .data
            .clone()
            .ok_or_else(|| "upstream has no data".into())
    }

    fn clone_from(&mut self, i: usize, up: &Upstream) -> Res {
        self.check_promise(i, up);
        let src = self.source(i, up)?;
        let n = &mut self.nodes[i];
        n.pg.stop();
        n.pg.data = Some(Data {
            wal: src.wal,
            standby_signal: true,
            upstream: Some(up.name.clone()),
            names: SyncStandbyNames::Async,
            fenced: false,
        });
        n.mem.rewind_failed = false;
        n.mem.detached = None;
        Ok(())
    }

    fn rewind(&mut self, i: usize, up: &Upstream) -> Res {
        self.check_promise(i, up);
        self.nodes[i].pg.stop();
        let src = self.source(i, up)?;
        if self.rng.chance(100) {
            self.nodes[i].mem.rewind_failed = true;
            return Err("pg_rewind failed".into());
        }
        let n = &mut self.nodes[i];
        let d = n.pg.data.as_mut().ok_or("no data")?;
        let keep = d.common_prefix(&src);
        d.wal.truncate(keep);
        d.standby_signal = true;
        d.upstream = Some(up.name.clone());
        d.fenced = false;
        n.mem.detached = None;
        Ok(())
    }

    fn demote(&mut self, i: usize, kind: DemoteKind) -> Res {
        if kind == DemoteKind::Kill {
            // SIGKILL works on a frozen server too.
            ok_if(self.nodes[i].pg.running, "not running")?;
            let now = self.nodes[i].local_now(self.t);
            self.nodes[i].pg.stop();
            self.nodes[i].mem.gave_up_hung_at = Some(now);
            return Ok(());
        }
        ok_if(self.nodes[i].pg.is_primary(), "not a running primary")?;
        if kind == DemoteKind::Graceful {
            self.check_drain(i);
            // The shutdown checkpoint is written and the control file says
            // "shut down"; the demote returns there. The postmaster still
            // runs: its walsenders send the rest as streaming goes on
            // (`World::replicate`), and it exits later (`World::step`).
            let id = self.new_id();
            let n = &mut self.nodes[i];
            let tl = n.pg.position().timeline.0;
            let d = n.pg.data.as_mut().ok_or("no data")?;
            d.wal.push((id, tl));
            d.fenced = false;
            d.standby_signal = true;
            d.upstream = None;
            n.pg.pending.clear();
            n.pg.clean = true;
            n.pg.exiting = true;
            return Ok(());
        }
        let n = &mut self.nodes[i];
        n.pg.stop();
        let d = n.pg.data.as_mut().ok_or("no data")?;
        d.fenced = false;
        Ok(())
    }

    /// A commit written on primary `i` now.
    pub fn write_commit(&mut self, i: usize) {
        let id = self.new_id();
        let n = &mut self.nodes[i];
        let tl = n.pg.position().timeline.0;
        if let Some(d) = n.pg.data.as_mut() {
            d.wal.push((id, tl));
            let lsn = d.wal.len();
            n.pg.pending.push(Pending { id, lsn });
        }
    }
}

fn dcs_ok(cut: bool) -> Res {
    ok_if(!cut, "DCS unreachable")
}

fn ok_if(cond: bool, why: &str) -> Res {
    if cond {
        Ok(())
    } else {
        Err(why.to_string())
    }
}

/// Actions a frozen server cannot carry out (they talk to it or wait for
/// it); DCS actions and a kill still work.
fn needs_server(action: &Action) -> bool {
    !matches!(
        action,
        Action::PublishMember(_)
            | Action::AcquireInitialize
            | Action::AcquireLeader
            | Action::RenewLeader
            | Action::ReleaseLeader
            | Action::WriteSyncKey(_)
            | Action::HandOver(_)
            | Action::ClearSwitchover
            | Action::ClearFailover
            | Action::Demote(DemoteKind::Kill)
    )
}
