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
    /// The postmaster a graceful demote left exiting: its control file said
    /// "shut down" but it still waits for walsenders and the archiver.
    /// Nothing may start in the data directory before it has exited.
    pub exiting_pid: Option<u32>,
    /// The last `IDENTIFY_SYSTEM` answer of a standby without a WAL
    /// receiver, reused while nothing it depends on moved.
    pub identified: Option<Identified>,
}

/// An `IDENTIFY_SYSTEM` answer (timeline, flushed position) and what it
/// was asked under: the postmaster and the standby's received and replayed
/// positions. Without a WAL receiver the answer changes only when one of
/// those does (a timeline switch is replayed at a record boundary), so it
/// is reused then: the psql process and replication connection it costs
/// (tens of milliseconds on a busy machine) were on every loop of a
/// detached standby, including a failover candidate's last two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identified {
    pub key: (Option<u32>, Option<Lsn>, Option<Lsn>),
    pub timeline: Timeline,
    pub lsn: Lsn,
}

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
    if pg.running && is_exiting(inst, mem) {
        // Shut down cleanly, the postmaster still finishing: read it like
        // a stopped server (the control file is final).
        pg.exiting = true;
        observe_stopped(&mut pg, inst, cluster).await;
        return pg;
    }
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
    // Running or not: a start that fails because our history forked off the
    // leader's leaves the same words at the end of the server log.
    pg.diverged = pg.data_dir == DataDir::Standby && !pg.streaming && log_says_diverged(inst);

    pg
}

/// The postmaster a graceful demote left exiting still runs and its
/// control file says it shut down cleanly. Forgets a postmaster that has
/// exited (or was replaced).
pub fn is_exiting(inst: &Instance, mem: &mut PgMemory) -> bool {
    let Some(pid) = mem.exiting_pid else {
        return false;
    };
    if inst.pid() != Some(pid) {
        mem.exiting_pid = None;
        return false;
    }
    inst.control_state().is_ok_and(|s| s.is_clean_shutdown())
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
    mem: &mut PgMemory,
) -> Result<(), PgError> {
    let st = pgha_postgres::probe::server_status(c).await?;
    let timeline = st.timeline.unwrap_or(Timeline(0));
    pg.role = if st.in_recovery {
        Role::Standby
    } else {
        Role::Primary
    };
    if st.in_recovery {
        let best = st.receive_lsn.max(st.replay_lsn).unwrap_or(Lsn::ZERO);
        pg.position = WalPos {
            timeline,
            lsn: best,
        };
        if st.wal_receiver.is_none() {
            // Without a WAL receiver the status query only knows the last
            // checkpoint's timeline, which can be older than the WAL we
            // hold: ask the server itself.
            let key = (inst.pid(), st.receive_lsn, st.replay_lsn);
            let (tli, pos) = match mem.identified.filter(|i| i.key == key) {
                Some(i) => (i.timeline, i.lsn),
                None => {
                    let (timeline, lsn) = inst
                        .identify_system(&cluster.replication_user, passfile)
                        .await?;
                    mem.identified = Some(Identified { key, timeline, lsn });
                    (timeline, lsn)
                }
            };
            pg.position = WalPos {
                timeline: tli,
                lsn: best.max(pos),
            };
        }
        pg.replay_lsn = st.replay_lsn;
        pg.streaming = st.wal_receiver.as_deref() == Some("streaming");
        pg.upstream = upstream_of(&st.primary_conninfo, cluster);
    } else {
        pg.position = WalPos {
            timeline,
            lsn: st.flush_lsn.unwrap_or(Lsn::ZERO),
        };
        pg.fenced = st.read_only_default;
        let names = parse_sync_names(&st.synchronous_standby_names);
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
        pg.clean_shutdown = cd.state == pgha_postgres::controldata::ClusterState::ShutDown;
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
