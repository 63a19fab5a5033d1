//! Base backups and restore points kept in the archive, next to the WAL.
//!
//! Layout:
//! ```text
//! DIR/backups/<id>/base.tar.pgha     the data directory as one tar, in the
//!                                    archive file format (zstd, SHA-256)
//! DIR/backups/<id>/backup_manifest   PostgreSQL's manifest (also in the tar)
//! DIR/backups/<id>/backup.json       the record; written last
//! DIR/backups/.tmp/<id>/             a backup being taken (never listed as usable)
//! DIR/restore-points/<name>.json     restore points made by `pgha restore-point`
//! ```
//!
//! A backup counts only once its directory is under its final name, and it
//! gets there (an atomic rename of a complete, fsynced directory) only after
//! `pg_verifybackup` passed. A crashed backup leaves `.tmp/<id>`, which
//! [`Archive::sweep_backup_staging`] removes.
//!
//! Hazard: the record's LSNs and segment size decide which WAL retention
//! keeps; they come from PostgreSQL's manifest, never from a clock.

use crate::chain::{parse_lsn, seg_of};
use crate::error::{ArchiveError, Result};
use crate::format::{self, Compression, Header};
use crate::fsutil;
use crate::inspect::read_error;
use crate::name::SegPos;
use crate::Archive;
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub const BACKUPS_DIR: &str = "backups";
pub const RESTORE_POINTS_DIR: &str = "restore-points";
pub const PAYLOAD_FILE: &str = "base.tar.pgha";
pub const MANIFEST_FILE: &str = "backup_manifest";
pub const RECORD_FILE: &str = "backup.json";
const STAGING: &str = ".tmp";

/// What is known about one kept backup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupRecord {
    pub id: String,
    /// Always "verified" for a backup under its final name.
    pub state: String,
    /// The member it was taken from, and its role then.
    pub source: String,
    pub source_role: String,
    /// Timeline at the end of the backup.
    pub timeline: u32,
    pub start_lsn: String,
    pub end_lsn: String,
    /// RFC 3339 wall-clock times (UTC) of the start and end of the backup.
    pub start_time: String,
    pub end_time: String,
    pub wal_segment_size: u64,
    /// Bytes of the data directory (the tar) and as stored.
    pub original_bytes: u64,
    pub stored_bytes: u64,
    /// SHA-256 of the tar.
    pub sha256: String,
    pub pg_version: String,
}

impl BackupRecord {
    /// The first WAL segment position this backup needs.
    pub fn start_pos(&self) -> Option<SegPos> {
        parse_lsn(&self.start_lsn).map(|l| seg_of(l, self.wal_segment_size))
    }

    /// The first WAL segment this backup needs, as a file name.
    pub fn start_segment(&self) -> Option<String> {
        self.start_pos()
            .map(|p| format!("{:08X}{:08X}{:08X}", self.timeline, p.log, p.seg))
    }

    pub fn start_lsn_u64(&self) -> Option<u64> {
        parse_lsn(&self.start_lsn)
    }

    pub fn end_lsn_u64(&self) -> Option<u64> {
        parse_lsn(&self.end_lsn)
    }
}

/// One directory under `backups/`.
#[derive(Debug)]
pub struct BackupEntry {
    pub id: String,
    pub record: std::result::Result<BackupRecord, String>,
}

/// A restore point recorded by `pgha restore-point`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RestorePoint {
    pub name: String,
    pub lsn: String,
    pub timeline: u32,
    pub time: String,
}

/// Restore point names: what pg_create_restore_point accepts and a file
/// name may hold.
pub fn check_restore_point_name(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name.len() < 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "restore point name {name:?}: use 1 to 63 letters, digits, '_', '-' or '.', not starting with '.'"
        ))
    }
}

impl Archive {
    pub fn backups_dir(&self) -> PathBuf {
        self.dir().join(BACKUPS_DIR)
    }

    /// Where backup `id` is assembled before it counts.
    pub fn backup_staging(&self, id: &str) -> PathBuf {
        self.backups_dir().join(STAGING).join(id)
    }

    pub fn backup_path(&self, id: &str) -> PathBuf {
        self.backups_dir().join(id)
    }

    /// Every backup directory, oldest first (ids sort by time).
    pub fn list_backups(&self) -> Result<Vec<BackupEntry>> {
        let dir = self.backups_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ArchiveError::io("listing backups", &dir, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(ArchiveError::on("listing backups", &dir))?;
            let Some(id) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if id.starts_with('.') || !entry.path().is_dir() {
                continue;
            }
            let record = read_record(&entry.path().join(RECORD_FILE));
            out.push(BackupEntry { id, record });
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// The records of usable backups, oldest first.
    pub fn backups(&self) -> Result<Vec<BackupRecord>> {
        Ok(self
            .list_backups()?
            .into_iter()
            .filter_map(|e| e.record.ok())
            .collect())
    }

    /// Store the tar stream `src` as the payload of staged backup `id`.
    pub fn write_backup_payload(&self, id: &str, src: impl Read) -> Result<Header> {
        write_payload_file(&self.backup_staging(id).join(PAYLOAD_FILE), src)
    }

    /// Make staged backup `id` count: write its record, fsync, and rename
    /// the directory into place.
    pub fn commit_backup(&self, record: &BackupRecord) -> Result<()> {
        let staging = self.backup_staging(&record.id);
        let json = serde_json::to_vec_pretty(record).map_err(|e| ArchiveError::Io {
            op: "encoding backup record",
            path: staging.clone(),
            cause: io::Error::other(e),
        })?;
        write_synced(&staging.join(RECORD_FILE), &json, self.dir())?;
        fsutil::fsync_dir(&staging)?;
        let target = self.backup_path(&record.id);
        match fsutil::rename_noreplace(&staging, &target)? {
            fsutil::Placed::Done => {}
            fsutil::Placed::TargetExists => {
                return Err(ArchiveError::io(
                    "placing backup",
                    &target,
                    io::Error::new(io::ErrorKind::AlreadyExists, "a backup with this id exists"),
                ))
            }
        }
        fsutil::fsync_dir(&self.backups_dir())?;
        Ok(())
    }

    /// Read the payload of backup `id` into `out`, checking length and
    /// SHA-256 (an error names the backup file).
    pub fn read_backup_payload(&self, id: &str, out: impl Write) -> Result<Header> {
        let path = self.backup_path(id).join(PAYLOAD_FILE);
        let mut file = File::open(&path).map_err(ArchiveError::on("opening backup", &path))?;
        let header =
            format::read_header(&mut file).map_err(|e| read_error(&path, "reading backup", e))?;
        format::read_payload(&mut file, &header, out)
            .map_err(|e| read_error(&path, "reading backup", e))?;
        Ok(header)
    }

    /// Delete backup `id` (retention). The record goes first, so a backup
    /// half-deleted by a crash is no longer listed as usable.
    pub fn remove_backup(&self, id: &str) -> Result<()> {
        let dir = self.backup_path(id);
        let record = dir.join(RECORD_FILE);
        match fs::remove_file(&record) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(ArchiveError::io("removing backup record", &record, e)),
        }
        fsutil::fsync_dir(&dir)?;
        fs::remove_dir_all(&dir).map_err(ArchiveError::on("removing backup", &dir))?;
        fsutil::fsync_dir(&self.backups_dir())
    }

    /// Remove staged backups no process works on (`keep` is the one in
    /// progress, if any). Returns their ids.
    pub fn sweep_backup_staging(&self, keep: Option<&str>) -> Result<Vec<String>> {
        sweep_staging(&self.backups_dir().join(STAGING), keep)
    }

    /// Record a restore point.
    pub fn save_restore_point(&self, point: &RestorePoint) -> Result<()> {
        let dir = self.dir().join(RESTORE_POINTS_DIR);
        fs::create_dir_all(&dir).map_err(ArchiveError::on("creating", &dir))?;
        let json = serde_json::to_vec_pretty(point).map_err(|e| ArchiveError::Io {
            op: "encoding restore point",
            path: dir.clone(),
            cause: io::Error::other(e),
        })?;
        write_synced(&dir.join(format!("{}.json", point.name)), &json, self.dir())?;
        fsutil::fsync_dir(&dir)
    }

    /// A restore point recorded by name, if any.
    pub fn restore_point(&self, name: &str) -> Result<Option<RestorePoint>> {
        if check_restore_point_name(name).is_err() {
            return Ok(None);
        }
        let path = self
            .dir()
            .join(RESTORE_POINTS_DIR)
            .join(format!("{name}.json"));
        match fs::read(&path) {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ArchiveError::io("reading restore point", &path, e)),
        }
    }
}

/// Remove staged backups in `dir` no live process works on (`keep`: the
/// one in progress). Returns their ids.
pub fn sweep_staging(dir: &Path, keep: Option<&str>) -> Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ArchiveError::io("listing staged backups", dir, e)),
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if Some(name.as_str()) == keep || staging_in_use(&entry.path()) {
            continue;
        }
        fs::remove_dir_all(entry.path())
            .map_err(ArchiveError::on("removing staged backup", &entry.path()))?;
        removed.push(name);
    }
    Ok(removed)
}

/// Write the tar stream `src` to a new payload file at `path` (archive
/// format, zstd on every core, SHA-256), fsynced; owned like its directory.
pub fn write_payload_file(path: &Path, src: impl Read) -> Result<Header> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(fsutil::FILE_MODE)
        .open(path)
        .map_err(ArchiveError::on("creating backup file", path))?;
    if let Some(dir) = path.parent() {
        fsutil::adopt_owner(&file, path, dir)?;
    }
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(8) as u32);
    let header = format::write_archived_with(src, &mut file, Compression::Zstd, workers)
        .map_err(ArchiveError::on("writing backup file", path))?;
    file.sync_all()
        .map_err(ArchiveError::on("fsyncing backup file", path))?;
    Ok(header)
}

/// Decode a payload file into `out`, checking length and SHA-256.
pub fn read_payload_file(path: &Path, out: impl Write) -> Result<Header> {
    let mut file = File::open(path).map_err(ArchiveError::on("opening backup", path))?;
    let header =
        format::read_header(&mut file).map_err(|e| read_error(path, "reading backup", e))?;
    format::read_payload(&mut file, &header, out)
        .map_err(|e| read_error(path, "reading backup", e))?;
    Ok(header)
}

/// A staging directory holds a `pid` file naming the process taking it.
fn staging_in_use(dir: &Path) -> bool {
    fs::read_to_string(dir.join("pid"))
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
        .is_some_and(|pid| nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok())
}

fn read_record(path: &Path) -> std::result::Result<BackupRecord, String> {
    let bytes = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

fn write_synced(path: &Path, bytes: &[u8], owner_like: &Path) -> Result<()> {
    let tmp = path.with_extension("json.pgha-tmp");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(fsutil::FILE_MODE)
        .open(&tmp)
        .map_err(ArchiveError::on("creating", &tmp))?;
    fsutil::adopt_owner(&file, &tmp, owner_like)?;
    file.write_all(bytes)
        .and_then(|_| file.sync_all())
        .map_err(ArchiveError::on("writing", &tmp))?;
    fs::rename(&tmp, path).map_err(ArchiveError::on("renaming into place", path))
}
