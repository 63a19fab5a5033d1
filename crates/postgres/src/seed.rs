//! The seed: how a member becomes the cluster's first primary, and how a
//! standby is made from it. Each step is idempotent so a run interrupted
//! half-way can simply run again:
//!
//! Primary: initdb (SCRAM, checksums) -> pgha.conf + pg_hba.conf -> start ->
//! replication role, monitoring role and the proxy's password-lookup function.
//! Standby: slot on the primary (named after the standby) -> pg_basebackup
//! through that slot -> pgha.conf pointing at the primary -> standby.signal ->
//! start.

use crate::conf::ConfInput;
use crate::probe;
use crate::secrets::MONITOR_USER;
use crate::{Instance, PgError, Secrets};
use pgha_config::{ClusterConfig, Member};
use pgha_core::SyncStandbyNames;
use std::path::Path;
use std::time::Duration;

/// The client [`SeedContext::admin`] returns, for callers (`pgha up`'s health
/// check) that hold one without depending on tokio-postgres themselves.
pub use tokio_postgres::Client as PgClient;

/// Function the proxy calls (as the monitoring role) to fetch a role's
/// password verifier, so the proxy needs no password list of its own.
/// SECURITY DEFINER: only the superuser can read pg_authid.
pub const AUTH_LOOKUP_SQL: &str = "
CREATE SCHEMA IF NOT EXISTS pgha;
CREATE OR REPLACE FUNCTION pgha.user_lookup(i_username text, OUT uname text, OUT secret text)
RETURNS record LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog AS $$
  SELECT rolname::text, rolpassword::text FROM pg_catalog.pg_authid
  WHERE rolname = i_username AND rolcanlogin AND (rolvaliduntil IS NULL OR rolvaliduntil > now())
$$;
REVOKE ALL ON FUNCTION pgha.user_lookup(text) FROM PUBLIC;
GRANT USAGE ON SCHEMA pgha TO pgha_monitor;
GRANT EXECUTE ON FUNCTION pgha.user_lookup(text) TO pgha_monitor;
";

/// How long a start or promote may take before it counts as failed.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a base backup may take.
pub const CLONE_TIMEOUT: Duration = Duration::from_secs(600);

/// What every seed step needs besides the instance.
pub struct SeedContext<'a> {
    pub cluster: &'a ClusterConfig,
    pub secrets: &'a Secrets,
    pub pgha_bin: &'a Path,
}

impl SeedContext<'_> {
    /// (Re)write the instance's pgha.conf and pg_hba.conf.
    pub fn configure(
        &self,
        inst: &Instance,
        upstream: Option<&Member>,
        sync: &SyncStandbyNames,
    ) -> Result<(), PgError> {
        let member = self.member(inst)?;
        let passfile = self.secrets.passfile();
        let socket_dir = inst.socket_dir();
        inst.write_config(&ConfInput {
            cluster: self.cluster,
            member,
            socket_dir: &socket_dir,
            pgha_bin: self.pgha_bin,
            passfile: &passfile,
            upstream,
            sync,
        })
    }

    fn member<'m>(&'m self, inst: &Instance) -> Result<&'m Member, PgError> {
        self.cluster
            .member(&inst.name)
            .ok_or_else(|| PgError::Unexpected {
                what: "configuring an instance".into(),
                detail: format!("{} is not a member of the cluster config", inst.name),
            })
    }

    /// Connect to `inst` as the superuser.
    pub async fn admin(&self, inst: &Instance) -> Result<tokio_postgres::Client, PgError> {
        probe::connect_tls(
            &inst.host,
            inst.port,
            &self.cluster.superuser,
            &self.secrets.admin_password,
            Duration::from_secs(5),
            self.cluster.tls_ca(),
        )
        .await
    }

    /// Make `inst` the first primary: initdb if needed, configure, start, and
    /// create the roles and functions the other parts rely on.
    pub async fn bootstrap_primary(&self, inst: &Instance) -> Result<(), PgError> {
        if !inst.is_initialized() {
            tracing::info!(member = %inst.name, "initdb");
            inst.initdb(&self.cluster.superuser, &self.secrets.admin_file())
                .await?;
        }
        self.configure(inst, None, &SyncStandbyNames::Async)?;
        inst.set_standby_signal(false)?;
        inst.start(START_TIMEOUT).await?;
        let client = self.admin(inst).await?;
        self.setup_roles(&client).await
    }

    /// Create the replication role, the proxy's monitoring role and its
    /// password-lookup function (idempotent), in one transaction: one round
    /// trip and one WAL flush instead of one per statement, on the path of
    /// every primary start. Runs with `synchronous_commit = local`: the
    /// first primary has no standby yet.
    pub async fn setup_roles(&self, client: &tokio_postgres::Client) -> Result<(), PgError> {
        let repl = &self.cluster.replication_user;
        let existing: Vec<String> = client
            .query(
                "SELECT rolname::text FROM pg_roles WHERE rolname = ANY($1)",
                &[&vec![repl.as_str(), MONITOR_USER]],
            )
            .await
            .map_err(PgError::sql("look up pgha's roles"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let role = |name: &str, password: &str, attributes: &str| {
            let verb = if existing.iter().any(|e| e == name) {
                "ALTER"
            } else {
                "CREATE"
            };
            format!(
                "{verb} ROLE {} WITH LOGIN {attributes} PASSWORD {};\n",
                probe::quote_ident(name),
                probe::quote_literal(password)
            )
        };
        let sql = format!(
            "BEGIN;\nSET LOCAL synchronous_commit TO local;\n{}{}GRANT pg_monitor TO {MONITOR_USER};{AUTH_LOOKUP_SQL}COMMIT;",
            role(repl, &self.secrets.replication_password, "REPLICATION"),
            role(MONITOR_USER, &self.secrets.monitor_password, ""),
        );
        client.batch_execute(&sql).await.map_err(PgError::sql(
            "create pgha's roles and the password-lookup function",
        ))
    }

    /// Start an initialised member with freshly rendered config: as a
    /// standby of `upstream`, or as a primary with `sync` when it is None.
    pub async fn start_member(
        &self,
        inst: &Instance,
        upstream: Option<&Instance>,
        sync: &SyncStandbyNames,
    ) -> Result<(), PgError> {
        let upstream = upstream.map(|u| self.member(u)).transpose()?;
        self.configure(inst, upstream, sync)?;
        inst.set_standby_signal(upstream.is_some())?;
        inst.start(START_TIMEOUT).await
    }

    /// Make `inst` a standby of `primary` (running): slot, base backup,
    /// config, standby.signal, start. An initialised data dir is reused.
    pub async fn clone_standby(&self, inst: &Instance, primary: &Instance) -> Result<(), PgError> {
        let upstream = self.member(primary)?;
        if !inst.is_initialized() {
            let client = self.admin(primary).await?;
            probe::ensure_slot(&client, &inst.name).await?;
            tracing::info!(member = %inst.name, from = %primary.name, "pg_basebackup");
            inst.clone_from(
                upstream,
                &self.cluster.replication_user,
                &self.secrets.passfile(),
                CLONE_TIMEOUT,
            )
            .await?;
        }
        self.configure(inst, Some(upstream), &SyncStandbyNames::Async)?;
        inst.set_standby_signal(true)?;
        inst.start(START_TIMEOUT).await
    }
}
