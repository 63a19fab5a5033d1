//! `archive_command`: copy one WAL file into the archive, crash-safely and
//! without ever replacing an archived file.
//!
//! Steps: (1) if the name is archived already, compare content: identical
//! is success (PostgreSQL re-archives after a crash), different is
//! [`ArchiveError::Conflict`]; (2) write header + payload to a new, locked
//! temp file in `DIR/.tmp`, fsync it; (3) rename it to `DIR/<name>` with
//! no-replace semantics; (4) fsync `DIR`. Success is reported only after (4).
//!
//! Hazard: two members may push the same name at once (e.g. both sides of a
//! failover). The loser of the rename race compares content like step (1).

use crate::error::{ArchiveError, Result};
use crate::format::{self, Compression, Header};
use crate::fsutil::{self, Placed, STALE_AFTER, TEMP_SUFFIX};
use crate::inspect::{open_archived, read_error};
use crate::name::WalName;
use crate::{failpoint, Archive};
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// How to store a pushed file.
#[derive(Debug, Clone, Copy, Default)]
pub struct PushOptions {
    pub compression: Compression,
}

/// What a successful push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// The file was written to the archive.
    Stored(Header),
    /// An identical copy was already archived (e.g. a retry after a crash).
    AlreadyArchived(Header),
}

impl Archive {
    /// Archive the WAL file at `src` under its file name.
    pub fn push(&self, src: &Path, opts: PushOptions) -> Result<PushOutcome> {
        let name = name_of(src)?;
        let target = self.path_of(&name);
        if exists(&target)? {
            let (len, sha) = hash_source(src)?;
            return self.compare_existing(&name, len, sha);
        }
        self.sweep_temps();
        let source = File::open(src).map_err(|cause| ArchiveError::Source {
            path: src.to_path_buf(),
            cause,
        })?;
        let tmp = self.new_temp_path(&name)?;
        let mut file = fsutil::create_locked(&tmp)?;
        let mut guard = TempGuard::new(tmp.clone());
        fsutil::adopt_owner(&file, &tmp, self.dir())?;
        let header =
            format::write_archived(io::BufReader::new(source), &mut *file, opts.compression)
                .map_err(ArchiveError::on("writing archive temp file", &tmp))?;
        failpoint::hit("wal-push-after-write");
        file.sync_all()
            .map_err(ArchiveError::on("fsyncing archive temp file", &tmp))?;
        failpoint::hit("wal-push-before-rename");
        match fsutil::rename_noreplace(&tmp, &target)? {
            Placed::Done => {
                guard.disarm();
                failpoint::hit("wal-push-before-dir-fsync");
                fsutil::fsync_dir(self.dir())?;
                tracing::debug!(name = %name, compression = %opts.compression, "archived");
                Ok(PushOutcome::Stored(header))
            }
            Placed::TargetExists => {
                self.compare_existing(&name, header.original_len, header.sha256)
            }
        }
    }

    /// The name is archived: success if its content is the given one.
    fn compare_existing(&self, name: &WalName, len: u64, sha: [u8; 32]) -> Result<PushOutcome> {
        let path = self.path_of(name);
        let (mut file, header) = open_archived(&path, name, self.dir())?;
        // Check the whole archived copy: a matching header over a damaged
        // payload must not pass for "already archived".
        format::read_payload(&mut file, &header, io::sink())
            .map_err(|e| read_error(&path, "reading archived file", e))?;
        if header.original_len != len || header.sha256 != sha {
            return Err(ArchiveError::Conflict {
                name: name.to_string(),
                path,
                existing: header.sha256_hex(),
                new: hex::encode(sha),
            });
        }
        // A crashed earlier push may have renamed without the fsyncs: redo them.
        file.sync_all()
            .map_err(ArchiveError::on("fsyncing archived file", &path))?;
        fsutil::fsync_dir(self.dir())?;
        Ok(PushOutcome::AlreadyArchived(header))
    }

    /// A fresh temp path in `DIR/.tmp`, creating that directory if needed.
    fn new_temp_path(&self, name: &WalName) -> Result<PathBuf> {
        let tmp_dir = self.temp_dir();
        match fs::DirBuilder::new().mode(0o700).create(&tmp_dir) {
            Ok(()) => {
                let dir = File::open(&tmp_dir)
                    .map_err(ArchiveError::on("opening temp directory", &tmp_dir))?;
                fsutil::adopt_owner(&dir, &tmp_dir, self.dir())?;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(ArchiveError::io("creating temp directory", &tmp_dir, e)),
        }
        let unique: u64 = rand::random();
        let file = format!("{name}.{}.{unique:016x}{TEMP_SUFFIX}", std::process::id());
        Ok(tmp_dir.join(file))
    }

    /// Remove debris of killed pushes; failures only warn.
    fn sweep_temps(&self) {
        match fsutil::sweep_stale_temps(&self.temp_dir(), STALE_AFTER, false) {
            Ok(removed) => {
                for path in removed {
                    tracing::info!(path = %path.display(), "removed stale temp file of a killed push");
                }
            }
            Err(e) => tracing::warn!("sweeping stale temp files: {e}"),
        }
    }
}

/// The WAL name of the file at `src` (its last path component).
fn name_of(src: &Path) -> Result<WalName> {
    let file = src.file_name().and_then(|f| f.to_str()).unwrap_or("");
    WalName::parse(file).map_err(|_| ArchiveError::InvalidName {
        name: src.display().to_string(),
    })
}

fn exists(path: &Path) -> Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(ArchiveError::io("inspecting archive file", path, e)),
    }
}

fn hash_source(src: &Path) -> Result<(u64, [u8; 32])> {
    let source = |cause| ArchiveError::Source {
        path: src.to_path_buf(),
        cause,
    };
    let file = File::open(src).map_err(source)?;
    format::hash_reader(io::BufReader::new(file)).map_err(source)
}

/// Removes the temp file on every exit path but success. A killed process
/// leaves it behind; later pushes and `clean` sweep it.
pub(crate) struct TempGuard {
    path: Option<PathBuf>,
}

impl TempGuard {
    pub(crate) fn new(path: PathBuf) -> Self {
        TempGuard { path: Some(path) }
    }
    pub(crate) fn disarm(&mut self) {
        self.path = None;
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            if let Err(e) = fs::remove_file(&path) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), "removing temp file: {e}");
                }
            }
        }
    }
}
