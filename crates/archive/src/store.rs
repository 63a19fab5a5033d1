//! One interface over both kinds of archive, for the commands that work on
//! either: a directory ([`Archive`]) or an S3-compatible bucket
//! ([`S3Archive`]). Same names, same file format, same checks; only where
//! the bytes live differs.
//!
//! Backups on S3 are staged on a local disk (the caller's staging root),
//! uploaded (payload and manifest first, the record last: a backup without
//! its record is never listed), and downloaded to a local scratch file to be
//! restored.

use crate::backups::{
    self, check_restore_point_name, BackupEntry, BackupRecord, RestorePoint, BACKUPS_DIR,
    MANIFEST_FILE, PAYLOAD_FILE, RECORD_FILE, RESTORE_POINTS_DIR,
};
use crate::chain::{self, ChainReport, TimelineSpan};
use crate::error::{ArchiveError, Result};
use crate::s3::{S3Archive, S3Settings};
use crate::{clean_plan, Archive, CleanReport, Entry, Header, Retention, WalName};
use std::path::{Path, PathBuf};

/// Parallel part uploads of a backup.
const UPLOAD_CONCURRENCY: usize = 4;

/// Where the archive is.
#[derive(Debug, Clone)]
pub enum Store {
    Dir(Archive),
    S3(S3Archive),
}

impl Store {
    /// `s3://bucket/prefix` (with its settings file) or a directory.
    pub fn open(location: &str, s3_config: Option<&Path>) -> Result<Store> {
        if location.starts_with("s3://") {
            Ok(Store::S3(S3Archive::open(&S3Settings::load(
                location, s3_config,
            )?)?))
        } else {
            Ok(Store::Dir(Archive::open(location)?))
        }
    }

    /// The location, for messages.
    pub fn describe(&self) -> String {
        match self {
            Store::Dir(a) => a.dir().display().to_string(),
            Store::S3(s) => s.url().to_string(),
        }
    }

    pub async fn list(&self) -> Result<Vec<Entry>> {
        match self {
            Store::Dir(a) => a.list(),
            Store::S3(s) => s.list().await,
        }
    }

    pub async fn verify(&self, name: &WalName) -> Result<Header> {
        match self {
            Store::Dir(a) => a.verify(name),
            Store::S3(s) => s.verify(name).await,
        }
    }

    /// Apply `retention` to the WAL (see [`Archive::clean`]).
    pub async fn clean(&self, retention: &Retention, dry_run: bool) -> Result<CleanReport> {
        match self {
            Store::Dir(a) => a.clean(retention, dry_run),
            Store::S3(s) => {
                let report = clean_plan(s.list().await?, retention)?;
                if !dry_run {
                    for (name, _) in &report.deleted {
                        s.delete(name).await?;
                    }
                }
                Ok(report)
            }
        }
    }

    pub async fn timeline_path(&self, tli: u32) -> Result<Vec<TimelineSpan>> {
        match self {
            Store::Dir(a) => a.timeline_path(tli),
            Store::S3(s) => {
                if tli <= 1 {
                    return Ok(vec![TimelineSpan { tli: 1, end: None }]);
                }
                let name = WalName::parse(&format!("{tli:08X}.history"))?;
                let mut text = Vec::new();
                s.read_into(&name, &mut text).await?;
                Ok(chain::parse_history(tli, &String::from_utf8_lossy(&text)))
            }
        }
    }

    pub async fn newest_timeline(&self) -> Result<u32> {
        Ok(chain::newest_timeline(&self.list().await?))
    }

    /// See [`Archive::check_chain`].
    pub async fn check_chain(
        &self,
        path: &[TimelineSpan],
        start_lsn: u64,
        until_lsn: Option<u64>,
        seg_size: u64,
        verify: bool,
    ) -> Result<ChainReport> {
        let s = match self {
            Store::Dir(a) => return a.check_chain(path, start_lsn, until_lsn, seg_size, verify),
            Store::S3(s) => s,
        };
        let plan = chain::chain_plan(&s.list().await?, path, start_lsn, until_lsn, seg_size);
        let mut corrupt = None;
        if verify {
            for (i, name) in plan.present.iter().enumerate() {
                if let Err(e) = s.verify(name).await {
                    corrupt = Some((i, e.to_string()));
                    break;
                }
            }
        }
        Ok(plan.into_report(corrupt))
    }

    /// Where backup `id` is assembled: inside the archive directory, or
    /// under `local_root` for an object store.
    pub fn staging_dir(&self, id: &str, local_root: &Path) -> PathBuf {
        match self {
            Store::Dir(a) => a.backup_staging(id),
            Store::S3(_) => local_root.join(id),
        }
    }

    /// Remove abandoned staging directories.
    pub fn sweep_staging(&self, local_root: &Path) -> Result<Vec<String>> {
        match self {
            Store::Dir(a) => a.sweep_backup_staging(None),
            Store::S3(_) => backups::sweep_staging(local_root, None),
        }
    }

    /// Make the staged backup count (see the module doc).
    pub async fn commit_backup(&self, record: &BackupRecord, staging: &Path) -> Result<()> {
        match self {
            Store::Dir(a) => a.commit_backup(record),
            Store::S3(s) => {
                let base = format!("{BACKUPS_DIR}/{}", record.id);
                s.put_file(
                    &format!("{base}/{PAYLOAD_FILE}"),
                    &staging.join(PAYLOAD_FILE),
                    UPLOAD_CONCURRENCY,
                )
                .await?;
                let manifest = std::fs::read(staging.join(MANIFEST_FILE))
                    .map_err(ArchiveError::on("reading", &staging.join(MANIFEST_FILE)))?;
                s.put_bytes(&format!("{base}/{MANIFEST_FILE}"), manifest, false)
                    .await?;
                let json = serde_json::to_vec_pretty(record)
                    .map_err(|e| ArchiveError::Store(format!("encoding backup record: {e}")))?;
                if !s
                    .put_bytes(&format!("{base}/{RECORD_FILE}"), json, true)
                    .await?
                {
                    return Err(ArchiveError::Store(format!(
                        "backup {} exists already in {}",
                        record.id,
                        s.url()
                    )));
                }
                std::fs::remove_dir_all(staging)
                    .map_err(ArchiveError::on("removing the staging copy", staging))?;
                Ok(())
            }
        }
    }

    pub async fn list_backups(&self) -> Result<Vec<BackupEntry>> {
        let s = match self {
            Store::Dir(a) => return a.list_backups(),
            Store::S3(s) => s,
        };
        let (_, mut ids) = s.list_dir(BACKUPS_DIR).await?;
        ids.sort();
        let mut out = Vec::new();
        for id in ids {
            let record = match s
                .get_bytes(&format!("{BACKUPS_DIR}/{id}/{RECORD_FILE}"))
                .await?
            {
                Some(b) => {
                    serde_json::from_slice(&b).map_err(|e| format!("{id}/{RECORD_FILE}: {e}"))
                }
                None => Err(format!("{id} has no {RECORD_FILE} (an interrupted upload)")),
            };
            out.push(BackupEntry { id, record });
        }
        Ok(out)
    }

    pub async fn backups(&self) -> Result<Vec<BackupRecord>> {
        Ok(self
            .list_backups()
            .await?
            .into_iter()
            .filter_map(|e| e.record.ok())
            .collect())
    }

    /// A local file holding backup `id`'s payload: the archived file
    /// itself, or a download into `scratch` (a new file path).
    pub async fn payload_file(&self, id: &str, scratch: &Path) -> Result<PathBuf> {
        match self {
            Store::Dir(a) => Ok(a.backup_path(id).join(PAYLOAD_FILE)),
            Store::S3(s) => {
                s.get_file(&format!("{BACKUPS_DIR}/{id}/{PAYLOAD_FILE}"), scratch)
                    .await?;
                Ok(scratch.to_path_buf())
            }
        }
    }

    /// Delete backup `id`: the record first.
    pub async fn remove_backup(&self, id: &str) -> Result<()> {
        match self {
            Store::Dir(a) => a.remove_backup(id),
            Store::S3(s) => {
                s.delete(&format!("{BACKUPS_DIR}/{id}/{RECORD_FILE}"))
                    .await?;
                s.delete_tree(&format!("{BACKUPS_DIR}/{id}")).await
            }
        }
    }

    pub async fn restore_point(&self, name: &str) -> Result<Option<RestorePoint>> {
        match self {
            Store::Dir(a) => a.restore_point(name),
            Store::S3(s) => {
                if check_restore_point_name(name).is_err() {
                    return Ok(None);
                }
                Ok(s.get_bytes(&format!("{RESTORE_POINTS_DIR}/{name}.json"))
                    .await?
                    .and_then(|b| serde_json::from_slice(&b).ok()))
            }
        }
    }

    pub async fn save_restore_point(&self, point: &RestorePoint) -> Result<()> {
        match self {
            Store::Dir(a) => a.save_restore_point(point),
            Store::S3(s) => {
                let json = serde_json::to_vec_pretty(point)
                    .map_err(|e| ArchiveError::Store(format!("encoding restore point: {e}")))?;
                s.put_bytes(
                    &format!("{RESTORE_POINTS_DIR}/{}.json", point.name),
                    json,
                    false,
                )
                .await?;
                Ok(())
            }
        }
    }
}
