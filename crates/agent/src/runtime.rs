//! The agent's loop: observe -> `pgha_core::decide` -> execute, one
//! iteration every `loop_wait` (or sooner: when the core asks, when a DCS
//! watch event arrives, when the postmaster exits, or when a command comes
//! in from the REST API).
//!
//! The loop is the only place that changes the node: actions run in order,
//! one at a time, and the first failure ends the iteration (the next
//! observation decides anew). Runtime memory the core relies on (lease,
//! detach promise, last `synchronous_standby_names` change) lives in
//! [`Memory`] and is lost on restart, which the core is written to survive.
//!
//! Hazard: the loop must not block on a dead DCS or a hung PostgreSQL; every
//! DCS call has the client's request timeout and every PostgreSQL call a
//! bounded one. The background tasks (lease keeper, DCS watch, postmaster
//! watch, and what the caller adds with [`Agent::supervise`], e.g. the REST
//! API) are one supervised set (`tasks.rs`): when one ends the loop stops,
//! PostgreSQL is shut down as on SIGTERM, and [`Agent::run`] returns
//! [`Exit::TaskEnded`] so the caller exits non-zero.

use crate::failsafe::Failsafe;
use crate::lease::LeaseKeeper;
use crate::metrics::{AgentMetrics, PromotionKind};
use crate::observe::{self, PgMemory};
use crate::status::{AgentCommand, AgentStatus, DecisionRecord, DECISION_HISTORY};
use crate::tasks::{TaskEnded, Tasks};
use crate::view;
use pgha_config::{ClusterConfig, Member};
use pgha_core::{
    Action, Decision, Detached, DynamicConfig, LocalState, Millis, SwitchoverSeen, SyncInDoubt,
};
use pgha_dcs::{ClusterKeys, Dcs, LeaseId};
use pgha_postgres::{Instance, PgBinaries, Secrets, ServiceUser};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Notify};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

/// State the core needs the runtime to remember between iterations.
#[derive(Debug, Default)]
pub struct Memory {
    pub member_lease: Option<LeaseId>,
    pub detached: Option<Detached>,
    pub reinit_requested: bool,
    pub pg: PgMemory,
    /// When the pending switchover request was first seen due (bounds the
    /// wait for the proxies to drain).
    pub switchover_seen: Option<SwitchoverSeen>,
    /// The `/sync` mod revision of the view the current decision was made
    /// from: the expected revision of its `/sync` write.
    pub sync_revision: u64,
    /// A `/sync` write whose outcome is unknown (see `SyncInDoubt`).
    pub sync_in_doubt: Option<SyncInDoubt>,
    /// Whether a view was read since this process started (the first one
    /// sets `sync_in_doubt` per `SyncInDoubt::after_restart`).
    pub viewed: bool,
    /// The member record last written, under which lease and when: an
    /// unchanged record is not written again (every write wakes every
    /// agent's watch, so re-writing it each iteration kept all agents
    /// looping back to back on an idle cluster).
    pub published: Option<Published>,
    /// Whether the server answers probes in time (`responsive.rs`).
    pub responsive: crate::responsive::Responsiveness,
    /// When this agent killed its hung primary and gave up the key.
    pub gave_up_hung_at: Option<Millis>,
}

/// A member record as last written to the DCS.
#[derive(Debug)]
pub struct Published {
    pub json: Vec<u8>,
    pub lease: LeaseId,
    pub at: Instant,
}

pub struct Agent {
    pub(crate) cfg: ClusterConfig,
    pub(crate) me: Member,
    pub(crate) inst: Instance,
    pub(crate) secrets: Secrets,
    pub(crate) pgha_bin: PathBuf,
    pub(crate) dcs: Arc<dyn Dcs>,
    pub(crate) keys: ClusterKeys,
    pub(crate) mem: Memory,
    pub(crate) keeper: LeaseKeeper,
    /// Failsafe promises, shared with the REST API and the prober task.
    pub(crate) failsafe: Failsafe,
    /// The supervised background tasks (see [`Agent::supervise`]).
    tasks: Tasks,
    pub(crate) client: Option<Client>,
    pub(crate) last_config: DynamicConfig,
    started: Instant,
    status_tx: watch::Sender<AgentStatus>,
    decisions: VecDeque<DecisionRecord>,
    last_reason: String,
    /// The last iteration ran at least one action besides publishing and
    /// renewing, and none failed: see [`Agent::min_wait_ms`].
    stepped: bool,
    /// What `/metrics` reports (shared with the REST API).
    metrics: Arc<AgentMetrics>,
    /// Since when this member has seen the cluster without a leader (or a
    /// switchover request), and which: the start of a promotion's duration.
    leaderless_since: Option<(Instant, PromotionKind)>,
    /// The event history's queue and, until [`Agent::run`] starts its
    /// writer, the other end.
    events: crate::events::EventLog,
    events_rx: Option<mpsc::Receiver<pgha_core::event::Event>>,
}

/// Why [`Agent::run`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// Asked to (`cancel`): exit zero.
    Cancelled,
    /// A supervised task ended: exit non-zero so the agent is restarted.
    TaskEnded(TaskEnded),
}

/// The initial dynamic config from the file's `[ha]` table.
pub fn initial_config(cfg: &ClusterConfig) -> DynamicConfig {
    let ms = |d: Duration| Millis(d.as_millis() as u64);
    DynamicConfig {
        ttl: ms(cfg.ha.ttl),
        loop_wait: ms(cfg.ha.loop_wait),
        fence_margin: ms(cfg.ha.loop_wait),
        sync_quorum: cfg.sync_quorum,
        allow_async_fallback: cfg.ha.allow_async_fallback,
        failsafe_mode: cfg.ha.failsafe_mode,
        ..DynamicConfig::default()
    }
}

impl Agent {
    /// Build the agent for member `name` of `cfg`.
    pub fn new(
        cfg: ClusterConfig,
        name: &str,
        dcs: Arc<dyn Dcs>,
        pgha_bin: PathBuf,
    ) -> anyhow::Result<(Self, watch::Receiver<AgentStatus>)> {
        let me = cfg
            .member(name)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("member {name:?} is not in the cluster config"))?;
        let user = ServiceUser::resolve(&cfg.os_user)?;
        let bins = PgBinaries::locate(cfg.bin_dir.as_deref())?;
        let secrets = Secrets::ensure(
            &cfg.secrets_dir,
            &user,
            &cfg.superuser,
            &cfg.replication_user,
        )?;
        let keys = ClusterKeys::new(&cfg.dcs.namespace, &cfg.name)?;
        pgha_postgres::tls_files::check(&cfg, &me.name, &user)?;
        let metrics = Arc::new(AgentMetrics::default());
        let dcs = crate::instrumented::InstrumentedDcs::wrap(dcs, metrics.clone());
        let inst = Instance::new(&me, bins, user).with_tls_ca(cfg.tls_ca());
        let (status_tx, status_rx) = watch::channel(AgentStatus {
            member: me.name.clone(),
            cluster: cfg.name.clone(),
            ..AgentStatus::default()
        });
        let last_config = initial_config(&cfg);
        let started = Instant::now();
        let period = Duration::from_millis((last_config.ttl.0 / 4).clamp(100, 2_000));
        let keeper = LeaseKeeper::new(started);
        let failsafe = Failsafe::new(&me.name, &secrets.api_token, started);
        let mut tasks = Tasks::default();
        let prober = failsafe.clone().run();
        tasks.spawn("failsafe prober", async move {
            prober.await;
            Ok(())
        });
        let (events, events_rx) = crate::events::EventLog::channel();
        let renew = keeper.clone().run(dcs.clone(), period);
        tasks.spawn("lease keeper", async move {
            renew.await;
            Ok(())
        });
        Ok((
            Agent {
                cfg,
                me,
                inst,
                secrets,
                pgha_bin,
                dcs,
                keys,
                mem: Memory::default(),
                keeper,
                failsafe,
                tasks,
                client: None,
                last_config,
                started,
                status_tx,
                decisions: VecDeque::new(),
                last_reason: String::new(),
                stepped: false,
                metrics,
                leaderless_since: None,
                events,
                events_rx: Some(events_rx),
            },
            status_rx,
        ))
    }

    pub(crate) fn now(&self) -> Millis {
        Millis(self.started.elapsed().as_millis() as u64)
    }

    pub fn api_token(&self) -> String {
        self.secrets.api_token.clone()
    }

    /// The failsafe handle the REST API answers `POST /failsafe` with.
    pub fn failsafe(&self) -> Failsafe {
        self.failsafe.clone()
    }

    /// The counters `/metrics` reports; pass them to
    /// [`crate::api::serve_agent`].
    pub fn metrics(&self) -> Arc<AgentMetrics> {
        self.metrics.clone()
    }

    fn sampler_target(&self) -> crate::sampler::SamplerTarget {
        crate::sampler::SamplerTarget {
            host: self.me.host.clone(),
            port: self.me.port,
            user: self.cfg.superuser.clone(),
            password: self.secrets.admin_password.clone(),
            data_dir: self.me.data_dir.clone(),
            archive_dir: self.cfg.archive_dir.clone(),
        }
    }

    /// Runs `task` as part of the agent, supervised with its own tasks: if
    /// it ends (returns, fails or panics) the agent stops as from
    /// [`Agent::run`]'s [`Exit::TaskEnded`]. For tasks meant to run as long
    /// as the agent (the REST API).
    pub fn supervise<F>(&mut self, name: &'static str, task: F)
    where
        F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.tasks.spawn(name, task);
    }

    /// Run until `cancel` or until a supervised task ends; then stop
    /// PostgreSQL and give up the leader key.
    pub async fn run(
        mut self,
        mut commands: mpsc::Receiver<AgentCommand>,
        cancel: CancellationToken,
    ) -> Exit {
        let wake = Arc::new(Notify::new());
        let mut tasks = std::mem::take(&mut self.tasks);
        let watches = [
            tasks.spawn("cluster watch", {
                let watch = watch_cluster(
                    self.dcs.clone(),
                    self.keys.prefix().to_string(),
                    wake.clone(),
                );
                async move {
                    watch.await;
                    Ok(())
                }
            }),
            tasks.spawn("postmaster watch", {
                let watch = watch_postmaster(self.inst.clone(), wake.clone());
                async move {
                    watch.await;
                    Ok(())
                }
            }),
        ];
        if let Some(rx) = self.events_rx.take() {
            let writer = crate::events::writer(self.dcs.clone(), self.keys.events(), rx);
            tasks.spawn("event writer", async move {
                writer.await;
                Ok(())
            });
        }
        let sampler = crate::sampler::run(self.sampler_target(), self.metrics.clone());
        tasks.spawn("metrics sampler", async move {
            sampler.await;
            Ok(())
        });
        self.write_initial_config().await;
        let exit = loop {
            let decision = self.iterate().await;
            let wait = Duration::from_millis(decision.wake_in.0.clamp(self.min_wait_ms(), 5_000));
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break Exit::Cancelled,
                ended = tasks.ended() => {
                    tracing::error!(
                        task = ended.name,
                        "agent {ended}; shutting down to exit non-zero (the supervisor restarts the agent)"
                    );
                    break Exit::TaskEnded(ended);
                }
                Some(cmd) = commands.recv() => self.handle_command(cmd).await,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        };
        for w in watches {
            w.abort();
        }
        self.shutdown().await;
        tasks.shutdown().await;
        exit
    }

    /// The shortest pause before the next iteration. A decision that asks
    /// to decide again at once after its actions succeeded (a failover or
    /// switchover step: detach, take the key, claim and promote, publish
    /// the new primary) goes on after 5 ms; otherwise at least 20 ms, so
    /// that a step that keeps failing, or a wait asked for "now", does not
    /// spin.
    fn min_wait_ms(&self) -> u64 {
        if self.stepped {
            5
        } else {
            20
        }
    }

    /// One observe-decide-execute step.
    pub async fn iterate(&mut self) -> Decision {
        self.keeper.heartbeat();
        let now = self.now();
        let sent = now;
        let deadline = crate::responsive::probe_deadline(&self.last_config);
        let connect_missed = self.ensure_client(deadline).await;
        let snap = view::read(self.dcs.as_ref(), &self.keys, &self.last_config).await;
        if let Some(v) = &snap.view {
            self.last_config = v.config.clone();
            self.adopt_leader_lease(v, snap.leader_lease);
        }
        let pg = self.observe_within(sent, deadline, connect_missed).await;
        let mut local = self.local_state(pg);
        if let Some(v) = &snap.view {
            self.mem.switchover_seen =
                SwitchoverSeen::track(self.mem.switchover_seen, v, local.unix_time_ms, now);
        }
        local.switchover_seen = self.mem.switchover_seen;
        if let Some(v) = &snap.view {
            self.mem.sync_revision = v.sync_revision;
            if !self.mem.viewed {
                self.mem.viewed = true;
                self.mem.sync_in_doubt = SyncInDoubt::after_restart(v, &self.me.name);
            }
        }
        let dcs_view = snap.dcs_view(&self.last_config);
        self.failsafe.observed(&local, &dcs_view);
        if self.failsafe.asking() {
            self.failsafe.round(self.failsafe.round_timeout()).await;
        }
        local.promise = self.failsafe.promise();
        local.failsafe = self.failsafe.confirmations();
        // After the DCS read and the promise round, which may have taken a
        // request timeout: lease and promises are judged at this moment.
        let now = self.now();
        let decision = pgha_core::decide(&local, &dcs_view, now);
        self.log_decision(&decision);
        self.track_leaderless(snap.view.as_ref());
        self.stepped = false;
        for action in &decision.actions {
            self.keeper.heartbeat();
            if let Err(why) = self.failsafe.gate(action) {
                tracing::warn!(member = %self.me.name, action = %action, "{why}");
                self.stepped = false;
                break;
            }
            let started = Instant::now();
            let result = self.execute_bounded(action).await;
            self.note_event(action, &decision.reason, started.elapsed(), &result, &snap);
            if let Err(e) = result {
                tracing::warn!(member = %self.me.name, action = %action, "action failed: {e:#}");
                self.metrics.action(action.kind(), false);
                self.client = None;
                self.stepped = false;
                break;
            }
            self.metrics.action(action.kind(), true);
            if let Action::StartAsPrimary { .. } | Action::Bootstrap = action {
                self.leaderless_since = None;
            }
            self.forget_copied_archive_notes(action);
            self.stepped |= !matches!(action, Action::PublishMember(_) | Action::RenewLeader);
        }
        self.failsafe.settle(self.mem.detached.is_some());
        if let Some(v) = &snap.view {
            // Bounded like the probe: a server that froze since must not
            // hold the loop (it did, for a whole 60 s freeze, before).
            let bounded = tokio::time::timeout(deadline, self.maintain_slots(v)).await;
            if bounded.is_err() {
                self.client = None;
            }
        }
        self.publish_status(&local, &snap, &decision);
        decision
    }

    /// Record what `action` did in the event history (and a promotion in
    /// the metrics): failovers and switchovers, demotions, fences,
    /// rewinds, re-clones and changes of the synchronous set.
    fn note_event(
        &mut self,
        action: &Action,
        reason: &str,
        took: Duration,
        result: &anyhow::Result<()>,
        snap: &view::Snapshot,
    ) {
        use pgha_core::event::EventKind;
        let ok = result.is_ok();
        let error = result.as_ref().err().map(|e| format!("failed: {e:#}"));
        let ms = |d: Duration| Some(d.as_millis() as u64);
        let (kind, duration, detail) = match action {
            Action::Promote { sync_names } => {
                let since = if ok {
                    self.leaderless_since.take()
                } else {
                    None
                };
                match since {
                    Some((since, k)) => {
                        self.metrics.promoted(k, since.elapsed());
                        let kind = match k {
                            PromotionKind::Failover => EventKind::Failover,
                            PromotionKind::Switchover => EventKind::Switchover,
                        };
                        (
                            kind,
                            ms(since.elapsed()),
                            format!("synchronous_standby_names {sync_names}"),
                        )
                    }
                    None => (EventKind::Failover, ms(took), String::new()),
                }
            }
            Action::Demote(k) if ok => (EventKind::Demote, ms(took), format!("{k:?}")),
            Action::Fence if ok => (EventKind::Fence, None, String::new()),
            Action::Unfence if ok => (EventKind::Unfence, None, String::new()),
            Action::Rewind(up) => (EventKind::Rewind, ms(took), format!("from {}", up.name)),
            Action::Reclone(up) => (EventKind::Reclone, ms(took), format!("from {}", up.name)),
            Action::WriteSyncKey(r) | Action::HandOver(r) if ok => {
                let before = snap
                    .view
                    .as_ref()
                    .and_then(|v| v.sync.as_ref())
                    .map(|s| &s.set);
                if before == Some(&r.set) {
                    return;
                }
                let was = before.map_or("none".to_string(), |s| s.to_string());
                (EventKind::SyncSet, None, format!("{} (was {was})", r.set))
            }
            _ => return,
        };
        self.metrics.event(kind.name(), ok);
        self.events.record(pgha_core::event::Event {
            at_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            kind,
            member: self.me.name.clone(),
            reason: reason.to_string(),
            duration_ms: duration,
            detail: error.unwrap_or(detail),
            ok,
        });
    }

    /// A clone or rewind copies the source's data directory, including its
    /// `wal-push`/`wal-fetch` failure note (`pgha_archive::health`), which
    /// says nothing about this member: remove it. A promoted member no
    /// longer restores: its old fetch failure is over.
    fn forget_copied_archive_notes(&self, action: &Action) {
        use pgha_archive::health;
        let dir = &self.me.data_dir;
        match action {
            Action::CloneFromLeader(_) | Action::Reclone(_) | Action::Rewind(_) => {
                let _ = std::fs::remove_file(dir.join(health::FAILURE_FILE));
            }
            Action::Promote { .. } => health::clear_failure(dir, health::Op::Fetch),
            _ => {}
        }
    }

    /// Start (or end) the clock of a possible promotion: from the first
    /// view without a leader, or with a switchover request, until this
    /// member's `Promote` succeeds (the views between show the key taken by
    /// this member); another member's leadership stops it.
    fn track_leaderless(&mut self, view: Option<&pgha_core::ClusterView>) {
        let Some(v) = view else { return };
        let mine = v.leader.as_ref().is_some_and(|l| l.holder == self.me.name);
        let kind = if v.switchover.is_some() {
            Some(PromotionKind::Switchover)
        } else if v.leader.is_none() {
            Some(PromotionKind::Failover)
        } else {
            None
        };
        match (kind, self.leaderless_since) {
            // Took the key: the clock runs on until the promotion is done.
            (None, _) if mine => {}
            (None, _) => self.leaderless_since = None,
            (Some(k), None) => self.leaderless_since = Some((Instant::now(), k)),
            (Some(_), Some(_)) => {}
        }
    }

    fn local_state(&self, pg: pgha_core::PgState) -> LocalState {
        LocalState {
            name: self.me.name.clone(),
            api_url: self.me.api_url(),
            conn: pgha_core::ConnInfo {
                host: self.me.host.clone(),
                port: self.me.port,
            },
            tags: Default::default(),
            pg,
            lease: self.keeper.state(),
            detached: self.mem.detached,
            unix_time_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            reinit_requested: self.mem.reinit_requested,
            switchover_seen: self.mem.switchover_seen,
            sync_in_doubt: self.mem.sync_in_doubt,
            promise: None,
            failsafe: None,
            gave_up_hung_at: self.mem.gave_up_hung_at,
        }
    }

    /// Run `action`; the ones that only talk SQL to the local server are
    /// bounded (a server that froze since the probe must not hold the loop).
    async fn execute_bounded(&mut self, action: &Action) -> anyhow::Result<()> {
        let sql_only = matches!(
            action,
            Action::Fence | Action::Unfence | Action::SetSyncStandbyNames(_)
        );
        if !sql_only {
            return self.execute(action).await;
        }
        match tokio::time::timeout(SQL_ACTION_LIMIT, self.execute(action)).await {
            Ok(r) => r,
            Err(_) => {
                self.client = None;
                anyhow::bail!("PostgreSQL did not answer within {SQL_ACTION_LIMIT:?}")
            }
        }
    }

    /// Observe PostgreSQL with the probe's deadline. A running server that
    /// does not answer in time (connect or status query) is a stall: see
    /// `responsive.rs` for what is reported then.
    async fn observe_within(
        &mut self,
        sent: Millis,
        deadline: Duration,
        connect_missed: bool,
    ) -> pgha_core::PgState {
        let passfile = self.secrets.passfile();
        let observed = if connect_missed {
            None
        } else {
            tokio::time::timeout(
                deadline,
                observe::observe(
                    &self.inst,
                    self.client.as_ref(),
                    &self.cfg,
                    &passfile,
                    &mut self.mem.pg,
                    sent,
                ),
            )
            .await
            .ok()
        };
        match observed {
            Some(pg) => {
                if !pg.running {
                    self.mem.responsive.reset();
                }
                self.mem.responsive.answered(&pg)
            }
            None => {
                // The connection may still have a query in flight.
                self.client = None;
                let fallback = pgha_core::PgState {
                    running: true,
                    ..Default::default()
                };
                let now = self.now();
                self.mem
                    .responsive
                    .no_answer(&self.inst, sent, now, &self.last_config, fallback)
            }
        }
    }

    /// After an agent restart the leader key may still be ours: adopt its
    /// lease, but claim no lease time (the core renews before relying on it).
    fn adopt_leader_lease(&mut self, v: &pgha_core::ClusterView, lease: Option<LeaseId>) {
        let mine = v.leader.as_ref().is_some_and(|l| l.holder == self.me.name);
        match (mine, self.keeper.lease(), lease) {
            (true, None, Some(id)) => self.keeper.set(id, None),
            (false, Some(_), _) => self.keeper.clear(),
            _ => {}
        }
    }

    /// Connect to the local server if there is no connection; `true` when
    /// a running server gave no answer within `deadline` (a refusal is an
    /// answer).
    async fn ensure_client(&mut self, deadline: Duration) -> bool {
        if self.client.as_ref().is_some_and(|c| !c.is_closed()) {
            return false;
        }
        self.client = None;
        if !self.inst.is_running() || observe::is_exiting(&self.inst, &mut self.mem.pg) {
            return false;
        }
        let started = Instant::now();
        match pgha_postgres::probe::connect_tls(
            &self.me.host,
            self.me.port,
            &self.cfg.superuser,
            &self.secrets.admin_password,
            deadline,
            self.cfg.tls_ca(),
        )
        .await
        {
            Ok(c) => {
                self.client = Some(c);
                false
            }
            Err(e) => {
                tracing::debug!("cannot connect to the local PostgreSQL yet: {e:#}");
                started.elapsed() >= deadline && self.inst.is_running()
            }
        }
    }

    async fn write_initial_config(&self) {
        let Ok(json) = serde_json::to_vec(&self.last_config) else {
            return;
        };
        if let Err(e) = self
            .dcs
            .create_if_absent(&self.keys.config(), &json, None)
            .await
        {
            tracing::warn!("cannot write the initial /config yet: {e:#}");
        }
    }

    fn log_decision(&mut self, d: &Decision) {
        let steps: Vec<String> = d.steps().iter().map(|a| a.to_string()).collect();
        let routine = steps.iter().all(|s| s == "renew leader lease");
        if !routine || d.reason != self.last_reason {
            tracing::info!(member = %self.me.name, actions = ?steps, "{}", d.reason);
            self.metrics
                .decision(d.steps().first().map_or("none", |a| a.kind()));
            self.decisions.push_back(DecisionRecord {
                at_unix_ms: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|t| t.as_millis() as u64)
                    .unwrap_or(0),
                reason: d.reason.clone(),
                actions: steps,
            });
            while self.decisions.len() > DECISION_HISTORY {
                self.decisions.pop_front();
            }
        }
        self.last_reason = d.reason.clone();
    }

    fn publish_status(&self, local: &LocalState, snap: &view::Snapshot, _d: &Decision) {
        let pg = &local.pg;
        let view = snap.view.as_ref();
        let leader = view
            .and_then(|v| v.leader.as_ref())
            .map(|l| l.holder.clone());
        let is_leader =
            leader.as_deref() == Some(self.me.name.as_str()) && self.keeper.state().is_some();
        let leader_lsn = view
            .zip(leader.as_ref())
            .and_then(|(v, l)| v.members.get(l))
            .map(|m| m.flush_lsn);
        let status = AgentStatus {
            member: self.me.name.clone(),
            cluster: self.cfg.name.clone(),
            role: if pg.running {
                pg.role
            } else {
                pgha_core::Role::Unknown
            },
            pg_running: pg.running,
            is_leader,
            writable: is_leader && pg.is_running_primary() && !pg.fenced,
            streaming: pg.is_running_standby() && pg.streaming,
            timeline: Some(pg.position.timeline),
            lsn: Some(pg.position.lsn),
            replay_lsn: pg.replay_lsn,
            lag_bytes: match (pg.role, leader_lsn, pg.replay_lsn) {
                (pgha_core::Role::Standby, Some(l), Some(r)) => Some(l.bytes_after(r)),
                _ => None,
            },
            in_sync_set: view.is_some_and(|v| v.sync_set().members.contains(&self.me.name)),
            paused: view.is_some_and(|v| v.config.paused),
            dcs_unavailable: snap.view.is_none(),
            leader,
            view: view
                .map(crate::api::view_json)
                .unwrap_or(serde_json::Value::Null),
            decisions: self.decisions.clone(),
            fenced: pg.is_running_primary() && pg.fenced,
        };
        let expiry = self
            .keeper
            .state()
            .filter(|_| is_leader)
            .map(|l| self.started + Duration::from_millis(l.expires_at().0));
        self.metrics.set_lease_expiry(expiry);
        self.status_tx.send_replace(status);
    }

    async fn handle_command(&mut self, cmd: AgentCommand) {
        match cmd {
            AgentCommand::Restart { reply } => {
                let r = self.restart_postgres().await.map_err(|e| format!("{e:#}"));
                let _ = reply.send(r);
            }
            AgentCommand::Reinit { reply } => {
                let is_leader = self.keeper.lease().is_some();
                let r = if is_leader {
                    Err("this member is the leader: switch over first".to_string())
                } else {
                    self.mem.reinit_requested = true;
                    Ok(())
                };
                let _ = reply.send(r);
            }
        }
    }

    async fn shutdown(&mut self) {
        tracing::info!(member = %self.me.name, "shutting down: stopping PostgreSQL");
        if let Err(e) = self
            .inst
            .stop(pgha_postgres::StopMode::Fast, Duration::from_secs(30))
            .await
        {
            tracing::warn!("fast shutdown failed ({e:#}); stopping immediately");
            let _ = self
                .inst
                .stop(pgha_postgres::StopMode::Immediate, Duration::from_secs(10))
                .await;
        }
        let _ = self.execute(&Action::ReleaseLeader).await;
        if let Some(lease) = self.mem.member_lease.take() {
            let _ = self.dcs.revoke_lease(lease).await;
        }
    }
}

/// Bound on an action that only talks SQL to the local server.
const SQL_ACTION_LIMIT: Duration = Duration::from_secs(10);

/// How often the postmaster watcher checks that the postmaster lives.
const POSTMASTER_POLL: Duration = Duration::from_millis(20);

/// Wake the loop as soon as the postmaster exits: a PostgreSQL crash on the
/// primary is then restarted in place within a poll, not on the next loop
/// (up to `loop_wait` later). Also wakes after a stop the loop did itself,
/// which costs one extra iteration.
async fn watch_postmaster(inst: Instance, wake: Arc<Notify>) {
    loop {
        match inst.pid() {
            Some(pid) => {
                pgha_postgres::wait_for_exit(pid as i32, POSTMASTER_POLL).await;
                tracing::debug!(pid, "the postmaster exited: waking the loop");
                wake.notify_one();
            }
            None => tokio::time::sleep(POSTMASTER_POLL * 5).await,
        }
    }
}

/// Wake the loop on every change under the cluster prefix; re-establish the
/// watch when it ends (etcd restart), with a pause between attempts.
async fn watch_cluster(dcs: Arc<dyn Dcs>, prefix: String, wake: Arc<Notify>) {
    loop {
        match dcs.watch_prefix(&prefix, 0).await {
            Ok(mut w) => {
                while w.next().await.is_some() {
                    wake.notify_one();
                }
            }
            Err(e) => tracing::debug!("watch on {prefix} failed: {e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
