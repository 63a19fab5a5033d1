//! Observing the local PostgreSQL for the core: what the data directory is,
//! whether the server runs, its role, WAL position, upstream, replicas,
//! `synchronous_standby_names` and fence. A probe that fails leaves the
//! role `Unknown` (the core treats it as such) rather than guessing.

use pgha_config::ClusterConfig;
use pgha_core::{
    DataDir, Lsn, Millis, PgState, ReplicaStatus, Role, SyncNamesState, SyncSet, SyncStandbyNames,
    Timeline, WalPos,
};
use pgha_postgres::{Instance, PgError};
use tokio_postgres::Client;

/// The parts of the observation the runtime keeps between loops.
#[derive(Debug, Default)]
pub struct PgMemory {
    pub stopped_since: Option<Millis>,
    pub rewind_failed: bool,
    /// The last `synchronous_standby_names` this agent set and the primary's
    /// flush LSN once it was in effect.
    pub sync_applied: Option<(SyncStandbyNames, Lsn)>,
}

const PROBE_SQL: &str = "SELECT pg_is_in_recovery(),
  CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_flush_lsn()::text END,
  pg_last_wal_receive_lsn()::text,
  pg_last_wal_replay_lsn()::text,
  CASE WHEN pg_is_in_recovery()
       THEN coalesce((SELECT received_tli FROM pg_stat_wal_receiver), (SELECT timeline_id FROM pg_control_checkpoint()))
       ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END,
  (SELECT status FROM pg_stat_wal_receiver),
  current_setting('primary_conninfo'),
  current_setting('default_transaction_read_only'),
  current_setting('synchronous_standby_names')";

/// Observe the instance. `client` is a cached superuser connection (None
/// when it could not be opened).
pub async fn observe(
    inst: &Instance,
    client: Option<&Client>,
    cluster: &ClusterConfig,
    passfile: &std::path::Path,
    mem: &mut PgMemory,
    now: Millis,
) -> PgState {
    let mut pg = PgState {
        data_dir: data_dir_kind(inst),
        running: inst.is_running(),
        rewind_failed: mem.rewind_failed,
        ..PgState::default()
    };
    if pg.running {
        mem.stopped_since = None;
    } else {
        mem.stopped_since.get_or_insert(now);
    }
    pg.stopped_since = mem.stopped_since;
    match (pg.running, client) {
        (true, Some(c)) => {
            if let Err(e) = probe_running(&mut pg, inst, c, cluster, passfile, mem).await {
                tracing::debug!("probe of the running server failed: {e:#}");
                pg.role = Role::Unknown;
            }
        }
        (true, None) => pg.role = Role::Unknown,
        (false, _) => observe_stopped(&mut pg, inst, cluster).await,
    }
    pg.diverged =
        pg.data_dir == DataDir::Standby && pg.running && !pg.streaming && log_says_diverged(inst);
    pg
}

fn data_dir_kind(inst: &Instance) -> DataDir {
    if !inst.is_initialized() {
        DataDir::Empty
    } else if inst.data_dir.join("standby.signal").exists() {
        DataDir::Standby
    } else {
        DataDir::Primary
    }
}

async fn probe_running(
    pg: &mut PgState,
    inst: &Instance,
    c: &Client,
    cluster: &ClusterConfig,
    passfile: &std::path::Path,
    mem: &PgMemory,
) -> Result<(), PgError> {
    let row = c
        .query_one(PROBE_SQL, &[])
        .await
        .map_err(|source| PgError::Sql {
            what: "probe".into(),
            source,
        })?;
    let in_recovery: bool = row.get(0);
    let lsn = |i: usize| {
        row.get::<_, Option<String>>(i)
            .and_then(|t| t.parse::<Lsn>().ok())
    };
    let timeline = Timeline(row.get::<_, Option<i32>>(4).unwrap_or(0) as u32);
    pg.role = if in_recovery {
        Role::Standby
    } else {
        Role::Primary
    };
    if in_recovery {
        let best = lsn(2).max(lsn(3)).unwrap_or(Lsn::ZERO);
        pg.position = WalPos {
            timeline,
            lsn: best,
        };
        let receiving = row.get::<_, Option<String>>(5).is_some();
        if !receiving {
            // Without a WAL receiver the query above only knows the last
            // checkpoint's timeline, which can be older than the WAL we
            // hold: ask the server itself.
            let (tli, pos) = inst
                .identify_system(&cluster.replication_user, passfile)
                .await?;
            pg.position = WalPos {
                timeline: tli,
                lsn: best.max(pos),
            };
        }
        pg.replay_lsn = lsn(3);
        pg.streaming = row.get::<_, Option<String>>(5).as_deref() == Some("streaming");
        let conninfo: String = row.get(6);
        pg.upstream = upstream_of(&conninfo, cluster);
    } else {
        pg.position = WalPos {
            timeline,
            lsn: lsn(1).unwrap_or(Lsn::ZERO),
        };
        pg.fenced = row.get::<_, String>(7) == "on";
        let names = parse_sync_names(&row.get::<_, String>(8));
        let applied_at = mem
            .sync_applied
            .as_ref()
            .filter(|(n, _)| *n == names)
            .map(|(_, at)| *at);
        pg.sync_names = Some(SyncNamesState { names, applied_at });
        pg.replicas = replicas(c).await?;
    }
    Ok(())
}

async fn replicas(c: &Client) -> Result<Vec<ReplicaStatus>, PgError> {
    let rows = pgha_postgres::probe::replication(c).await?;
    Ok(rows
        .into_iter()
        .filter(|r| r.state == "streaming")
        .map(|r| ReplicaStatus {
            name: r.application_name,
            flush_lsn: r.flush_lsn.unwrap_or(Lsn::ZERO),
        })
        .collect())
}

async fn observe_stopped(pg: &mut PgState, inst: &Instance, cluster: &ClusterConfig) {
    if pg.data_dir == DataDir::Empty {
        return;
    }
    if let Ok(cd) = inst.controldata().await {
        let (timeline, lsn) = if cd.min_recovery_lsn > cd.checkpoint_lsn {
            (cd.min_recovery_timeline, cd.min_recovery_lsn)
        } else {
            (cd.checkpoint_timeline, cd.checkpoint_lsn)
        };
        pg.position = WalPos { timeline, lsn };
    }
    let conf = std::fs::read_to_string(inst.data_dir.join(pgha_postgres::conf::PGHA_CONF))
        .unwrap_or_default();
    pg.upstream = conf
        .lines()
        .find_map(|l| l.strip_prefix("primary_conninfo = "))
        .and_then(|v| upstream_of(v.trim_matches('\''), cluster));
}

/// The member whose host and port appear in a `primary_conninfo`.
pub fn upstream_of(conninfo: &str, cluster: &ClusterConfig) -> Option<String> {
    let field = |name: &str| {
        conninfo
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
            .map(str::to_string)
    };
    let host = field("host")?;
    let port: u16 = field("port")?.parse().ok()?;
    cluster
        .members
        .iter()
        .find(|m| m.host == host && m.port == port)
        .map(|m| m.name.clone())
}

/// Parse `synchronous_standby_names` as pgha writes it.
pub fn parse_sync_names(text: &str) -> SyncStandbyNames {
    let t = text.trim();
    if t.is_empty() {
        return SyncStandbyNames::Async;
    }
    let parsed = (|| {
        let rest = t.strip_prefix("ANY ")?;
        let (k, list) = rest.split_once(' ')?;
        let k: u32 = k.parse().ok()?;
        let inner = list.trim().strip_prefix('(')?.strip_suffix(')')?;
        let names: Vec<String> = inner
            .split(',')
            .map(|n| n.trim().trim_matches('"').to_string())
            .filter(|n| !n.is_empty())
            .collect();
        Some((k, names))
    })();
    match parsed {
        Some((1, names)) if names == ["*"] => SyncStandbyNames::AnyStandby,
        Some((k, names)) => SyncStandbyNames::Quorum(SyncSet::new(names, k)),
        // Something pgha did not write: report it as a quorum of nothing,
        // which the leader replaces with what it wants.
        None => SyncStandbyNames::Quorum(SyncSet::default()),
    }
}

/// The end of the server log says the WAL receiver cannot follow because
/// this node's history forked off the leader's.
fn log_says_diverged(inst: &Instance) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(inst.log_file()) else {
        return false;
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(4096)));
    let mut tail = String::new();
    let _ = f.read_to_string(&mut tail);
    let last = tail.lines().rev().take(10).collect::<Vec<_>>().join("\n");
    last.contains("is not a child of this server's history")
        || last.contains("forked off current database system timeline")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_names_round_trip_with_what_pgha_writes() {
        let set = SyncSet::new(["node2", "node3"], 1);
        let names = SyncStandbyNames::Quorum(set);
        assert_eq!(parse_sync_names(&names.to_postgres()), names);
        assert_eq!(parse_sync_names(""), SyncStandbyNames::Async);
        assert_eq!(parse_sync_names("ANY 1 (*)"), SyncStandbyNames::AnyStandby);
    }
}
