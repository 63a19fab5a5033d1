//! SQL against a running instance: connecting with pgha's admin credential,
//! reading role, timeline and WAL positions, replication and slot views, and
//! the idempotent set-up statements (roles, slots) of the seed.

use crate::PgError;
use pgha_core::{Lsn, Timeline};
use std::time::Duration;
use tokio_postgres::{Client, NoTls};

/// Open a connection as `user` over TCP; the connection task runs in the
/// background until the client is dropped.
pub async fn connect(
    host: &str,
    port: u16,
    user: &str,
    password: &str,
    timeout: Duration,
) -> Result<Client, PgError> {
    connect_tls(host, port, user, password, timeout, None).await
}

/// [`connect`] over TLS verified against `ca_file` (the certificate must be
/// the CA's and name `host`: libpq's `sslmode=verify-full`) when one is
/// given, else plain as [`connect`].
pub async fn connect_tls(
    host: &str,
    port: u16,
    user: &str,
    password: &str,
    timeout: Duration,
    ca_file: Option<&std::path::Path>,
) -> Result<Client, PgError> {
    let Some(ca) = ca_file else {
        return connect_with(host, port, user, password, timeout, NoTls, false).await;
    };
    let tls = pgha_tls::pg::MakeRustlsConnect::new(ca).map_err(|e| PgError::Unexpected {
        what: format!("TLS settings for {host}:{port}"),
        detail: e.to_string(),
    })?;
    connect_with(host, port, user, password, timeout, tls, true).await
}

async fn connect_with<T>(
    host: &str,
    port: u16,
    user: &str,
    password: &str,
    timeout: Duration,
    tls: T,
    require_tls: bool,
) -> Result<Client, PgError>
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket> + Send + 'static,
    T::Stream: Send + 'static,
{
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(host)
        .port(port)
        .user(user)
        .password(password)
        .dbname("postgres")
        .application_name("pgha")
        .connect_timeout(timeout);
    if require_tls {
        cfg.ssl_mode(tokio_postgres::config::SslMode::Require);
    }
    let what = format!("connect to {host}:{port} as {user}");
    let (client, connection) = tokio::time::timeout(timeout, cfg.connect(tls))
        .await
        .map_err(|_| PgError::Timeout {
            what: what.clone(),
            seconds: timeout.as_secs(),
        })?
        .map_err(PgError::sql(what))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("probe connection ended: {e}");
        }
    });
    Ok(client)
}

/// What a running server says about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerStatus {
    pub in_recovery: bool,
    pub timeline: Option<Timeline>,
    /// pg_current_wal_lsn() on a primary.
    pub current_lsn: Option<Lsn>,
    /// Last WAL received (standby).
    pub receive_lsn: Option<Lsn>,
    /// Last WAL replayed (standby).
    pub replay_lsn: Option<Lsn>,
    /// WAL receiver status ("streaming", ...) when one runs.
    pub wal_receiver: Option<String>,
    /// pg_current_wal_flush_lsn() on a primary: what is durably on disk.
    pub flush_lsn: Option<Lsn>,
    /// Current `primary_conninfo` (standbys follow its host and port).
    pub primary_conninfo: String,
    /// `default_transaction_read_only` is on (pgha's fence on a primary).
    pub read_only_default: bool,
    /// Current `synchronous_standby_names`.
    pub synchronous_standby_names: String,
}

const STATUS_SQL: &str = "SELECT pg_is_in_recovery(),
  CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END,
  pg_last_wal_receive_lsn()::text,
  pg_last_wal_replay_lsn()::text,
  CASE WHEN pg_is_in_recovery()
       THEN coalesce((SELECT received_tli FROM pg_stat_wal_receiver), (SELECT timeline_id FROM pg_control_checkpoint()))
       ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END,
  (SELECT status FROM pg_stat_wal_receiver),
  CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_flush_lsn()::text END,
  current_setting('primary_conninfo'),
  current_setting('default_transaction_read_only'),
  current_setting('synchronous_standby_names')";

pub async fn server_status(client: &Client) -> Result<ServerStatus, PgError> {
    let row = client
        .query_one(STATUS_SQL, &[])
        .await
        .map_err(PgError::sql("read server status"))?;
    Ok(ServerStatus {
        in_recovery: row.get(0),
        current_lsn: lsn_col(row.get(1))?,
        receive_lsn: lsn_col(row.get(2))?,
        replay_lsn: lsn_col(row.get(3))?,
        timeline: row.get::<_, Option<i32>>(4).map(|t| Timeline(t as u32)),
        wal_receiver: row.get(5),
        flush_lsn: lsn_col(row.get(6))?,
        primary_conninfo: row.get(7),
        read_only_default: row.get::<_, String>(8) == "on",
        synchronous_standby_names: row.get(9),
    })
}

fn lsn_col(text: Option<String>) -> Result<Option<Lsn>, PgError> {
    text.map(|t| {
        t.parse::<Lsn>().map_err(|e| PgError::Unexpected {
            what: "parsing an LSN".into(),
            detail: e.to_string(),
        })
    })
    .transpose()
}

/// One row of pg_stat_replication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicationRow {
    pub application_name: String,
    pub state: String,
    pub sync_state: String,
    pub flush_lsn: Option<Lsn>,
    pub replay_lsn: Option<Lsn>,
}

/// Promote the standby `client` is connected to: `pg_promote(wait =>
/// false)` signals the startup process, then `pg_is_in_recovery()` is polled
/// every `poll` until the server accepts writes (or `timeout`). Cheaper than
/// `pg_ctl promote`, which is a process to spawn and polls every 100 ms.
pub async fn promote(client: &Client, poll: Duration, timeout: Duration) -> Result<(), PgError> {
    let sent: bool = client
        .query_one("SELECT pg_promote(wait => false)", &[])
        .await
        .map_err(PgError::sql("promote with pg_promote()"))?
        .get(0);
    if !sent {
        return Err(PgError::Unexpected {
            what: "promoting with pg_promote()".into(),
            detail: "it returned false: the startup process was not signalled".into(),
        });
    }
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let in_recovery: bool = client
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await
            .map_err(PgError::sql("poll pg_is_in_recovery() while promoting"))?
            .get(0);
        if !in_recovery {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(PgError::Timeout {
                what: "the promotion to end (pg_is_in_recovery() still true)".into(),
                seconds: timeout.as_secs(),
            });
        }
        tokio::time::sleep(poll).await;
    }
}

pub async fn replication(client: &Client) -> Result<Vec<ReplicationRow>, PgError> {
    let rows = client
        .query(
            "SELECT application_name, coalesce(state, ''), coalesce(sync_state, ''), flush_lsn::text, replay_lsn::text
             FROM pg_stat_replication ORDER BY application_name",
            &[],
        )
        .await
        .map_err(PgError::sql("read pg_stat_replication"))?;
    rows.into_iter()
        .map(|r| {
            Ok(ReplicationRow {
                application_name: r.get(0),
                state: r.get(1),
                sync_state: r.get(2),
                flush_lsn: lsn_col(r.get(3))?,
                replay_lsn: lsn_col(r.get(4))?,
            })
        })
        .collect()
}

/// One physical slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotRow {
    pub name: String,
    pub active: bool,
    pub restart_lsn: Option<Lsn>,
    pub wal_status: Option<String>,
}

pub async fn slots(client: &Client) -> Result<Vec<SlotRow>, PgError> {
    let rows = client
        .query(
            "SELECT slot_name::text, active, restart_lsn::text, wal_status FROM pg_replication_slots
             WHERE slot_type = 'physical' ORDER BY slot_name",
            &[],
        )
        .await
        .map_err(PgError::sql("read pg_replication_slots"))?;
    rows.into_iter()
        .map(|r| {
            Ok(SlotRow {
                name: r.get(0),
                active: r.get(1),
                restart_lsn: lsn_col(r.get(2))?,
                wal_status: r.get(3),
            })
        })
        .collect()
}

/// Create the physical slot `name` (reserving WAL at once) unless it exists.
pub async fn ensure_slot(client: &Client, name: &str) -> Result<(), PgError> {
    client
        .execute(
            "SELECT pg_create_physical_replication_slot($1, true)
             WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
            &[&name],
        )
        .await
        .map_err(PgError::sql(format!("create replication slot {name}")))?;
    Ok(())
}

/// Drop the slot `name` if it exists and is not in use.
pub async fn drop_slot(client: &Client, name: &str) -> Result<(), PgError> {
    client
        .execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1",
            &[&name],
        )
        .await
        .map_err(PgError::sql(format!("drop replication slot {name}")))?;
    Ok(())
}

/// Create (or update the password of) a login role with `attributes`
/// (e.g. "REPLICATION"). The password is sent as a literal because
/// CREATE/ALTER ROLE take no parameters; it is hashed with SCRAM by the
/// server (`password_encryption = scram-sha-256`).
pub async fn ensure_login_role(
    client: &Client,
    name: &str,
    password: &str,
    attributes: &str,
) -> Result<(), PgError> {
    let exists = client
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&name])
        .await
        .map_err(PgError::sql(format!("look up role {name}")))?
        .is_some();
    let verb = if exists { "ALTER" } else { "CREATE" };
    let sql = format!(
        "{verb} ROLE {} WITH LOGIN {attributes} PASSWORD {}",
        quote_ident(name),
        quote_literal(password)
    );
    client
        .batch_execute(&sql)
        .await
        .map_err(PgError::sql(format!("{} role {name}", verb.to_lowercase())))
}

pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}
