//! Executing the core's actions against the DCS and the local PostgreSQL.
//! Each arm does exactly what the action's documentation in
//! `pgha_core::action` asks, reports success or an error, and updates the
//! runtime memory the core relies on.

use crate::runtime::{Agent, Published};
use anyhow::{bail, Context};
use pgha_config::Member;
use pgha_core::{
    Action, DemoteKind, Detached, LeaseState, Lsn, Millis, SyncInDoubt, SyncRecord,
    SyncStandbyNames, Upstream,
};
use pgha_postgres::seed::{SeedContext, CLONE_TIMEOUT, START_TIMEOUT};
use pgha_postgres::{ShutdownProgress, StopMode};
use std::time::{Duration, Instant};

/// How often a graceful demote reads pg_control while it waits for the
/// shutdown checkpoint.
const SHUTDOWN_POLL: Duration = Duration::from_millis(10);
/// How long an action that starts PostgreSQL waits for a postmaster that
/// shut down cleanly to exit (its walsenders wait for standbys to flush,
/// its archiver for archive_command).
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a promotion polls `pg_is_in_recovery()`.
const PROMOTE_POLL: Duration = Duration::from_millis(5);

/// The leader key's create revision that `record` names (its term): the
/// guard of every `/sync` write, so that a write decided in an earlier
/// reign of this member cannot land in a later one.
fn term_revision(record: &SyncRecord) -> anyhow::Result<i64> {
    i64::try_from(record.term).with_context(|| format!("term {} as an etcd revision", record.term))
}

/// Actions that start PostgreSQL or rewrite its data directory: they wait
/// for a postmaster left exiting by a graceful demote.
fn starts_postgres(action: &Action) -> bool {
    matches!(
        action,
        Action::Bootstrap
            | Action::StartAsPrimary { .. }
            | Action::StartAsStandby { .. }
            | Action::FollowLeader(_)
            | Action::CloneFromLeader(_)
            | Action::Rewind(_)
            | Action::Reclone(_)
    )
}

impl Agent {
    fn seed(&self) -> SeedContext<'_> {
        SeedContext {
            cluster: &self.cfg,
            secrets: &self.secrets,
            pgha_bin: &self.pgha_bin,
        }
    }

    /// The configured member an upstream names (its address from the
    /// cluster config, falling back to the address it published).
    fn upstream_member(&self, up: &Upstream) -> Member {
        match self.cfg.member(&up.name) {
            Some(m) => m.clone(),
            None => Member {
                name: up.name.clone(),
                host: up.conn.host.clone(),
                port: up.conn.port,
                data_dir: Default::default(),
                api_port: 0,
            },
        }
    }

    fn ttl_secs(&self) -> i64 {
        self.last_config.ttl.0.div_ceil(1000).max(1) as i64
    }

    pub(crate) async fn execute(&mut self, action: &Action) -> anyhow::Result<()> {
        if starts_postgres(action) {
            self.wait_for_exiting_postmaster().await?;
        }
        match action {
            Action::PublishMember(state) => {
                let lease = self.member_lease().await?;
                let json = serde_json::to_vec(state)?;
                // Rewritten anyway after a TTL, should someone have deleted it.
                let refresh = Duration::from_millis(self.last_config.ttl.0);
                let unchanged = self.mem.published.as_ref().is_some_and(|p| {
                    p.json == json && p.lease == lease && p.at.elapsed() < refresh
                });
                if !unchanged {
                    self.mem.published = None;
                    self.dcs
                        .put(&self.keys.member(&self.me.name), &json, Some(lease))
                        .await?;
                    self.mem.published = Some(Published {
                        json,
                        lease,
                        at: Instant::now(),
                    });
                }
            }
            Action::AcquireInitialize => {
                self.dcs
                    .create_if_absent(&self.keys.initialize(), self.me.name.as_bytes(), None)
                    .await?;
            }
            Action::Bootstrap => self.bootstrap().await?,
            Action::AcquireLeader => self.acquire_leader().await?,
            Action::RenewLeader => self.renew_leader().await?,
            Action::ReleaseLeader => self.release_leader().await?,
            Action::WriteSyncKey(record) => {
                let json = serde_json::to_vec(record)?;
                let expected = self.mem.sync_revision;
                let result = self
                    .dcs
                    .put_if_key_equals(
                        &self.keys.sync(),
                        &json,
                        &self.keys.leader(),
                        self.me.name.as_bytes(),
                        term_revision(record)?,
                        expected as i64,
                    )
                    .await;
                let written = self.note_sync_outcome(record, expected, result)?;
                if !written {
                    bail!(
                        "not writing /sync: the leader key is no longer ours in term {} \
                         or /sync changed since revision {expected}",
                        record.term
                    );
                }
            }
            Action::HandOver(record) => self.hand_over(record).await?,
            Action::SetSyncStandbyNames(names) => self.set_sync_names(names).await?,
            Action::StartAsPrimary { sync_names } => self.start_as_primary(sync_names).await?,
            Action::Promote { sync_names } => self.promote(sync_names).await?,
            Action::StartAsStandby { upstream } => {
                let up = upstream.as_ref().map(|u| self.upstream_member(u));
                self.seed()
                    .configure(&self.inst, up.as_ref(), &SyncStandbyNames::Async)?;
                self.inst.set_standby_signal(true)?;
                self.inst.start(START_TIMEOUT).await?;
                if up.is_some() {
                    self.mem.detached = None;
                }
            }
            Action::FollowLeader(up) => {
                let up = self.upstream_member(up);
                self.seed()
                    .configure(&self.inst, Some(&up), &SyncStandbyNames::Async)?;
                if self.inst.is_running() {
                    self.reload().await?;
                }
                self.mem.detached = None;
            }
            Action::DetachFromPrimary { after_term } => self.detach(*after_term).await?,
            Action::CloneFromLeader(up) => self.clone_from(up).await?,
            Action::Rewind(up) => {
                if let Err(e) = self.rewind(up).await {
                    self.mem.pg.rewind_failed = true;
                    return Err(e);
                }
            }
            Action::Reclone(up) => {
                self.stop(StopMode::Fast).await?;
                self.inst.remove_data()?;
                self.clone_from(up).await?;
                self.mem.pg.rewind_failed = false;
                self.mem.reinit_requested = false;
            }
            Action::Demote(kind) => self.demote(*kind).await?,
            Action::Fence => self.set_fence(true).await?,
            Action::Unfence => self.set_fence(false).await?,
            Action::ClearSwitchover => {
                self.dcs.delete(&self.keys.switchover()).await?;
            }
            Action::ClearFailover => {
                self.dcs.delete(&self.keys.failover()).await?;
            }
        }
        Ok(())
    }

    /// The lease under the member key: kept alive every publish, granted
    /// again when it expired (e.g. after a DCS outage).
    async fn member_lease(&mut self) -> anyhow::Result<pgha_dcs::LeaseId> {
        if let Some(id) = self.mem.member_lease {
            match self.dcs.keep_alive(id).await {
                Ok(_) => return Ok(id),
                Err(e) if e.is_lease_expired() => self.mem.member_lease = None,
                Err(e) => return Err(e.into()),
            }
        }
        let lease = self.dcs.grant_lease(self.ttl_secs()).await?;
        self.mem.member_lease = Some(lease.id);
        Ok(lease.id)
    }

    async fn acquire_leader(&mut self) -> anyhow::Result<()> {
        let sent = self.now();
        let lease = self.dcs.grant_lease(self.ttl_secs()).await?;
        let won = self
            .dcs
            .create_if_absent(&self.keys.leader(), self.me.name.as_bytes(), Some(lease.id))
            .await;
        match won {
            Ok(true) => {
                self.keeper.set(
                    lease.id,
                    Some(LeaseState {
                        renewed_at: sent,
                        ttl: Millis(lease.ttl_secs as u64 * 1000),
                    }),
                );
                tracing::info!(member = %self.me.name, "acquired the leader lease");
                Ok(())
            }
            other => {
                let _ = self.dcs.revoke_lease(lease.id).await;
                other.map(|_| ()).map_err(Into::into)
            }
        }
    }

    async fn renew_leader(&mut self) -> anyhow::Result<()> {
        let Some(id) = self.keeper.lease() else {
            return Ok(());
        };
        let sent = self.now();
        match self.dcs.keep_alive(id).await {
            Ok(ttl) => {
                self.keeper.renewed(LeaseState {
                    renewed_at: sent,
                    ttl: Millis(ttl.max(0) as u64 * 1000),
                });
                Ok(())
            }
            Err(e) if e.is_lease_expired() => {
                tracing::warn!(member = %self.me.name, "the leader lease expired");
                self.keeper.clear();
                Ok(())
            }
            Err(e) => Err(e).context("renew the leader lease"),
        }
    }

    pub(crate) async fn release_leader(&mut self) -> anyhow::Result<()> {
        self.dcs
            .delete_if_equals(&self.keys.leader(), self.me.name.as_bytes())
            .await?;
        if let Some(id) = self.keeper.lease() {
            let _ = self.dcs.revoke_lease(id).await;
        }
        self.keeper.clear();
        Ok(())
    }

    /// Write `/sync` and release the leader key in one transaction, only
    /// while the key is ours; then as `release_leader`: revoke the lease.
    /// If the key is not ours nothing was written: fail like `WriteSyncKey`
    /// (the next observation shows who holds it; the lease keeper is
    /// cleared then).
    async fn hand_over(&mut self, record: &SyncRecord) -> anyhow::Result<()> {
        let json = serde_json::to_vec(record)?;
        let expected = self.mem.sync_revision;
        let result = self
            .dcs
            .put_and_delete_if_equals(
                &self.keys.sync(),
                &json,
                &self.keys.leader(),
                self.me.name.as_bytes(),
                term_revision(record)?,
                expected as i64,
            )
            .await;
        let done = self.note_sync_outcome(record, expected, result)?;
        if !done {
            bail!(
                "not handing over: the leader key is no longer ours in term {} \
                 or /sync changed since revision {expected}",
                record.term
            );
        }
        if let Some(id) = self.keeper.lease() {
            let _ = self.dcs.revoke_lease(id).await;
        }
        self.keeper.clear();
        Ok(())
    }

    /// Remember whether a `/sync` write (conditional on `/sync` at
    /// `expected`) may still land: after an error its outcome is unknown
    /// (a timeout is `Unavailable`; any other error is treated the same,
    /// which only costs a confirming write), after an answer it is known.
    fn note_sync_outcome(
        &mut self,
        record: &SyncRecord,
        expected: u64,
        result: pgha_dcs::DcsResult<bool>,
    ) -> anyhow::Result<bool> {
        match result {
            Ok(done) => {
                self.mem.sync_in_doubt = None;
                Ok(done)
            }
            Err(e) => {
                self.mem.sync_in_doubt = Some(SyncInDoubt {
                    term: record.term,
                    revision: expected,
                });
                Err(e.into())
            }
        }
    }

    async fn bootstrap(&mut self) -> anyhow::Result<()> {
        if !self.inst.is_initialized() {
            self.inst.remove_data()?;
            self.inst
                .initdb(&self.cfg.superuser, &self.secrets.admin_file())
                .await?;
        }
        self.seed()
            .configure(&self.inst, None, &SyncStandbyNames::Async)?;
        self.inst.set_standby_signal(false)?;
        Ok(())
    }

    async fn start_as_primary(&mut self, names: &SyncStandbyNames) -> anyhow::Result<()> {
        self.seed().configure(&self.inst, None, names)?;
        self.inst.set_standby_signal(false)?;
        self.inst.start(START_TIMEOUT).await?;
        self.client = None;
        let client = self.seed().admin(&self.inst).await?;
        self.seed().setup_roles(&client).await?;
        self.record_sync_applied(names, &client).await?;
        self.mem.detached = None;
        Ok(())
    }

    async fn promote(&mut self, names: &SyncStandbyNames) -> anyhow::Result<()> {
        self.seed().configure(&self.inst, None, names)?;
        self.reload().await?;
        let started = std::time::Instant::now();
        let (client, how) = self.promote_now().await?;
        tracing::info!(member = %self.me.name, took_ms = started.elapsed().as_millis() as u64, how, "promoted");
        let client = match client {
            Some(c) => c,
            None => self.seed().admin(&self.inst).await?,
        };
        self.record_sync_applied(names, &client).await?;
        self.client = Some(client);
        self.mem.detached = None;
        Ok(())
    }

    /// Promote with `pg_promote()` on a connection (the cached one, else a
    /// new one) and poll until the server accepts writes; fall back to
    /// `pg_ctl promote` when that fails (e.g. no connection). Returns the
    /// connection when it is still good, and how the promotion was done.
    async fn promote_now(
        &mut self,
    ) -> anyhow::Result<(Option<tokio_postgres::Client>, &'static str)> {
        let client = match self.client.take() {
            Some(c) if !c.is_closed() => Ok(c),
            _ => self.seed().admin(&self.inst).await,
        };
        let failed = match client {
            Ok(c) => match pgha_postgres::probe::promote(&c, PROMOTE_POLL, START_TIMEOUT).await {
                Ok(()) => return Ok((Some(c), "pg_promote")),
                Err(e) => anyhow::Error::from(e),
            },
            Err(e) => e.into(),
        };
        tracing::warn!(member = %self.me.name, "promoting with pg_promote() failed ({failed:#}); trying pg_ctl promote");
        self.inst.promote(START_TIMEOUT).await?;
        Ok((None, "pg_ctl"))
    }

    async fn set_sync_names(&mut self, names: &SyncStandbyNames) -> anyhow::Result<()> {
        self.seed().configure(&self.inst, None, names)?;
        self.reload().await?;
        let client = self.seed().admin(&self.inst).await?;
        let want = names.to_postgres();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let now: String = client
                .query_one("SHOW synchronous_standby_names", &[])
                .await?
                .get(0);
            if now == want {
                break;
            }
            if std::time::Instant::now() > deadline {
                bail!("synchronous_standby_names is still {now:?} after reload, wanted {want:?}");
            }
            // The backend applies the reload before its next query.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.record_sync_applied(names, &client).await
    }

    async fn record_sync_applied(
        &mut self,
        names: &SyncStandbyNames,
        client: &tokio_postgres::Client,
    ) -> anyhow::Result<()> {
        let lsn: String = client
            .query_one("SELECT pg_current_wal_flush_lsn()::text", &[])
            .await?
            .get(0);
        let lsn: Lsn = lsn.parse()?;
        self.mem.pg.sync_applied = Some((names.clone(), lsn));
        Ok(())
    }

    async fn detach(&mut self, after_term: u64) -> anyhow::Result<()> {
        self.seed()
            .configure(&self.inst, None, &SyncStandbyNames::Async)?;
        if self.inst.is_running() {
            self.reload().await?;
            let client = match self.client.take() {
                Some(c) if !c.is_closed() => c,
                _ => self.seed().admin(&self.inst).await?,
            };
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            loop {
                let n: i64 = client
                    .query_one("SELECT count(*) FROM pg_stat_wal_receiver", &[])
                    .await?
                    .get(0);
                if n == 0 {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    bail!("the WAL receiver is still running 5s after detaching");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            self.client = Some(client);
        }
        self.mem.detached = Some(Detached { after_term });
        Ok(())
    }

    async fn clone_from(&mut self, up: &Upstream) -> anyhow::Result<()> {
        let upm = self.upstream_member(up);
        self.inst
            .clone_from(
                &upm,
                &self.cfg.replication_user,
                &self.secrets.passfile(),
                CLONE_TIMEOUT,
            )
            .await?;
        self.seed()
            .configure(&self.inst, Some(&upm), &SyncStandbyNames::Async)?;
        self.inst.set_standby_signal(true)?;
        Ok(())
    }

    async fn rewind(&mut self, up: &Upstream) -> anyhow::Result<()> {
        let upm = self.upstream_member(up);
        self.stop(StopMode::Fast).await?;
        let cd = self.inst.controldata().await?;
        if !cd.state.is_clean_shutdown() {
            self.inst.set_standby_signal(false)?;
            self.inst.crash_recover().await?;
        }
        // A just-promoted leader's control file still names the old timeline
        // until its first checkpoint; pg_rewind would then see no divergence
        // and do nothing. Checkpoint the source first.
        let source = pgha_postgres::probe::connect_tls(
            &upm.host,
            upm.port,
            &self.cfg.superuser,
            &self.secrets.admin_password,
            Duration::from_secs(5),
            self.cfg.tls_ca(),
        )
        .await?;
        source.batch_execute("CHECKPOINT").await?;
        drop(source);
        self.inst
            .rewind(
                &upm,
                &self.cfg.superuser,
                &self.secrets.passfile(),
                Duration::from_secs(300),
            )
            .await?;
        self.seed()
            .configure(&self.inst, Some(&upm), &SyncStandbyNames::Async)?;
        self.inst.set_standby_signal(true)?;
        self.mem.pg.sync_applied = None;
        Ok(())
    }

    async fn demote(&mut self, kind: DemoteKind) -> anyhow::Result<()> {
        match kind {
            DemoteKind::Graceful => {
                // Return once the shutdown checkpoint is durable, not when
                // the postmaster has exited (walsenders, archiver): the
                // core then records the final position at once.
                let started = std::time::Instant::now();
                let progress = self
                    .inst
                    .stop_until_shut_down(StopMode::Fast, SHUTDOWN_POLL, Duration::from_secs(60))
                    .await;
                match progress {
                    Ok(ShutdownProgress::Exiting { pid }) => {
                        tracing::info!(member = %self.me.name, pid, took_ms = started.elapsed().as_millis() as u64, "shut down cleanly; the postmaster is still exiting");
                        self.mem.pg.exiting_pid = Some(pid);
                    }
                    Ok(ShutdownProgress::Exited) => {}
                    Err(e) => {
                        tracing::warn!(member = %self.me.name, "no clean shutdown in time ({e:#}); waiting for the postmaster to exit");
                        self.inst
                            .stop(StopMode::Fast, Duration::from_secs(30))
                            .await?;
                    }
                }
                self.seed()
                    .configure(&self.inst, None, &SyncStandbyNames::Async)?;
                self.inst.set_standby_signal(true)?;
            }
            DemoteKind::Immediate => {
                self.inst
                    .stop(StopMode::Immediate, Duration::from_secs(10))
                    .await?;
            }
            DemoteKind::Kill => {
                crate::responsive::kill_server(
                    &self.inst,
                    Duration::from_secs(1),
                    Duration::from_secs(10),
                )
                .await?;
                self.mem.responsive.reset();
                self.mem.gave_up_hung_at = Some(self.now());
            }
        }
        self.client = None;
        self.mem.pg.sync_applied = None;
        Ok(())
    }

    /// Make the running server re-read its configuration files:
    /// `pg_reload_conf()` on the cached connection (the same SIGHUP to the
    /// postmaster, without spawning a process), else `pg_ctl reload`.
    async fn reload(&mut self) -> anyhow::Result<()> {
        if let Some(c) = self.client.as_ref().filter(|c| !c.is_closed()) {
            match c.query_one("SELECT pg_reload_conf()", &[]).await {
                Ok(_) => return Ok(()),
                Err(e) => tracing::debug!("pg_reload_conf() failed ({e}); using pg_ctl reload"),
            }
        }
        self.inst.reload().await?;
        Ok(())
    }

    /// A postmaster left exiting by a graceful demote must be gone before
    /// anything starts in (or rewrites) the data directory.
    async fn wait_for_exiting_postmaster(&mut self) -> anyhow::Result<()> {
        let Some(pid) = self.mem.pg.exiting_pid else {
            return Ok(());
        };
        let started = std::time::Instant::now();
        self.inst.wait_exit(pid, EXIT_TIMEOUT).await?;
        self.mem.pg.exiting_pid = None;
        tracing::debug!(member = %self.me.name, pid, waited_ms = started.elapsed().as_millis() as u64, "the shut-down postmaster exited");
        Ok(())
    }

    async fn stop(&mut self, mode: StopMode) -> anyhow::Result<()> {
        self.client = None;
        if let Err(e) = self.inst.stop(mode, Duration::from_secs(30)).await {
            tracing::warn!("{mode:?} shutdown failed ({e:#}); stopping immediately");
            self.inst
                .stop(StopMode::Immediate, Duration::from_secs(10))
                .await?;
        }
        Ok(())
    }

    /// Refuse (or accept again) writes without stopping reads.
    async fn set_fence(&mut self, on: bool) -> anyhow::Result<()> {
        let client = self.seed().admin(&self.inst).await?;
        // One statement at a time: ALTER SYSTEM refuses to run in the
        // implicit transaction of a multi-statement query.
        let statements: &[&str] = if on {
            &[
                "ALTER SYSTEM SET default_transaction_read_only = on",
                "SELECT pg_reload_conf()",
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                  WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND application_name <> 'pgha'",
            ]
        } else {
            &[
                "SET default_transaction_read_only = off",
                "ALTER SYSTEM RESET default_transaction_read_only",
                "SELECT pg_reload_conf()",
            ]
        };
        for sql in statements {
            client.batch_execute(sql).await?;
        }
        tracing::warn!(member = %self.me.name, fenced = on, "fence changed");
        Ok(())
    }

    pub(crate) async fn restart_postgres(&mut self) -> anyhow::Result<()> {
        self.wait_for_exiting_postmaster().await?;
        self.stop(StopMode::Fast).await?;
        self.inst.start(START_TIMEOUT).await?;
        Ok(())
    }

    /// On the leader's primary: one physical slot per other member, so a
    /// standby that follows (or is cloned) streams through its own slot.
    pub(crate) async fn maintain_slots(&mut self, view: &pgha_core::ClusterView) {
        let leading = view
            .leader
            .as_ref()
            .is_some_and(|l| l.holder == self.me.name)
            && self.keeper.state().is_some();
        if !leading {
            return;
        }
        let Some(client) = self.client.as_ref() else {
            return;
        };
        let Ok(slots) = pgha_postgres::probe::slots(client).await else {
            return;
        };
        for m in self.cfg.members.iter().filter(|m| m.name != self.me.name) {
            let slot = slots.iter().find(|s| s.name == m.name);
            // A slot invalidated by max_slot_wal_keep_size can never stream
            // again: replace it; the standby catches up from the archive.
            if let Some(lost) =
                slot.filter(|s| !s.active && s.wal_status.as_deref() == Some("lost"))
            {
                tracing::warn!(slot = %lost.name, "replacing a replication slot invalidated by max_slot_wal_keep_size");
                if let Err(e) = pgha_postgres::probe::drop_slot(client, &lost.name).await {
                    tracing::debug!("cannot drop slot {}: {e:#}", lost.name);
                    continue;
                }
            } else if slot.is_some() {
                continue;
            }
            {
                if let Err(e) = pgha_postgres::probe::ensure_slot(client, &m.name).await {
                    tracing::debug!("cannot create slot {}: {e:#}", m.name);
                }
            }
        }
    }
}
