//! The metrics sampler: every few seconds, with its own connection, read
//! what the loop does not need but an operator does (per-standby
//! replication with lag in seconds, slots and the WAL they keep, the
//! archiver) and the archive directory's size and oldest segment, into
//! [`AgentMetrics`]. Runs beside the loop so a slow query never delays a
//! failover; a failed sample leaves an empty one (nothing stale).

use crate::metrics::{
    AgentMetrics, ArchiveDirSample, ArchiverSample, FetchFailure, PgSample, SlotSample,
    StandbySample,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::Client;

/// How often the sampler reads.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Where and as whom the sampler connects.
#[derive(Clone)]
pub struct SamplerTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub data_dir: PathBuf,
    pub archive_dir: PathBuf,
}

/// Sample forever.
pub async fn run(target: SamplerTarget, metrics: Arc<AgentMetrics>) {
    let mut client: Option<Client> = None;
    loop {
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            client = pgha_postgres::probe::connect(
                &target.host,
                target.port,
                &target.user,
                &target.password,
                Duration::from_secs(2),
            )
            .await
            .ok();
        }
        let mut s = PgSample {
            at_unix: unix_now(),
            ..PgSample::default()
        };
        if let Some(c) = &client {
            if let Err(e) = sample_pg(c, &mut s).await {
                tracing::debug!("metrics sample failed: {e}");
                client = None;
            }
        }
        let note = pgha_archive::health::read_failure(&target.data_dir);
        if let Some(a) = s.archiver.as_mut() {
            a.last_failure_reason = note
                .as_ref()
                .filter(|f| f.op == pgha_archive::health::Op::Push)
                .map(|f| f.reason.clone());
        }
        s.fetch_failure = note
            .filter(|f| f.op == pgha_archive::health::Op::Fetch)
            .map(|f| FetchFailure {
                wal: f.wal,
                reason: f.reason,
                at_unix: f.at_unix,
            });
        let dir = target.archive_dir.clone();
        s.archive = tokio::task::spawn_blocking(move || scan_archive(&dir))
            .await
            .ok()
            .flatten();
        metrics.set_pg_sample(s);
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
}

pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

async fn sample_pg(c: &Client, s: &mut PgSample) -> Result<(), tokio_postgres::Error> {
    let in_recovery: bool = c.query_one("SELECT pg_is_in_recovery()", &[]).await?.get(0);
    if !in_recovery {
        let rows = c
            .query(
                "SELECT application_name, coalesce(state, ''), coalesce(sync_state, ''),
                        (pg_current_wal_lsn() - replay_lsn)::float8,
                        extract(epoch FROM replay_lag)::float8,
                        extract(epoch FROM flush_lag)::float8
                 FROM pg_stat_replication ORDER BY application_name",
                &[],
            )
            .await?;
        s.standbys = rows
            .iter()
            .map(|r| StandbySample {
                name: r.get(0),
                state: r.get(1),
                sync_state: r.get(2),
                lag_bytes: r.get(3),
                replay_lag_seconds: r.get(4),
                flush_lag_seconds: r.get(5),
            })
            .collect();
    }
    let rows = c
        .query(
            "SELECT slot_name::text, active,
                    (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                          ELSE pg_current_wal_lsn() END - restart_lsn)::float8
             FROM pg_replication_slots WHERE slot_type = 'physical' ORDER BY slot_name",
            &[],
        )
        .await?;
    s.slots = rows
        .iter()
        .map(|r| SlotSample {
            name: r.get(0),
            active: r.get(1),
            retained_bytes: r.get(2),
        })
        .collect();
    let r = c
        .query_one(
            "SELECT archived_count::float8, failed_count::float8,
                    coalesce(last_archived_wal, ''), extract(epoch FROM last_archived_time)::float8,
                    coalesce(last_failed_wal, ''), extract(epoch FROM last_failed_time)::float8
             FROM pg_stat_archiver",
            &[],
        )
        .await?;
    s.archiver = Some(ArchiverSample {
        archived_count: r.get(0),
        failed_count: r.get(1),
        last_archived_wal: r.get(2),
        last_archived_time: r.get(3),
        last_failed_wal: r.get(4),
        last_failed_time: r.get(5),
        last_failure_reason: None,
    });
    Ok(())
}

/// Count the archive's files and bytes and find its oldest segment (by
/// name: timeline, then position). Temp files of pushes in progress are
/// not counted. `None` when the directory cannot be read.
pub fn scan_archive(dir: &Path) -> Option<ArchiveDirSample> {
    let mut d = ArchiveDirSample::default();
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() || name.starts_with('.') {
            continue;
        }
        d.files += 1;
        d.bytes += meta.len();
        let segment = name.len() == 24 && name.bytes().all(|b| b.is_ascii_hexdigit());
        if segment && d.oldest_segment.as_ref().is_none_or(|o| name < *o) {
            d.oldest_segment = Some(name);
        }
    }
    d.corrupt = pgha_archive::health::read_corrupt(dir)
        .into_iter()
        .map(|c| (c.name, c.reason, c.at_unix))
        .collect();
    Some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_scan_counts_files_and_finds_the_oldest_segment() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::write(p.join("000000020000000000000003"), b"abc").unwrap();
        std::fs::write(p.join("000000010000000000000005"), b"de").unwrap();
        std::fs::write(p.join("00000002.history"), b"f").unwrap();
        std::fs::create_dir(p.join(".tmp")).unwrap();
        let s = scan_archive(p).unwrap();
        assert_eq!(s.files, 3);
        assert_eq!(s.bytes, 6);
        assert_eq!(
            s.oldest_segment.as_deref(),
            Some("000000010000000000000005")
        );
        assert!(scan_archive(&p.join("missing")).is_none());
    }
}
