//! The archive's error type. Callers branch on it: `wal-fetch` exits 1 only
//! for [`ArchiveError::NotFound`] (the normal end of the archive) and loudly
//! for everything else.
//!
//! Hazard: every message must say what is wrong *and* what to do, because the
//! reader is an operator looking at a PostgreSQL server log, not at our code.

use std::io;
use std::path::{Path, PathBuf};

/// Everything that can go wrong in the archive library.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The archive directory does not exist. We never create it: if it is an
    /// unmounted mount point, creating it would archive onto the wrong disk.
    #[error(
        "archive directory {} does not exist; create it (owned by the OS user that runs \
         PostgreSQL, e.g. `install -d -o postgres -g postgres -m 0700 {}`) or fix --archive",
        .dir.display(), .dir.display()
    )]
    DirMissing { dir: PathBuf },

    /// The archive path exists but is not a directory.
    #[error("archive path {} is not a directory; fix --archive", .dir.display())]
    NotADirectory { dir: PathBuf },

    /// The file asked for is not in the archive (normal at the end of the
    /// archive: PostgreSQL asks for files that do not exist yet).
    #[error("{name} is not in the archive {}", .dir.display())]
    NotFound { name: String, dir: PathBuf },

    /// The name is not a WAL segment, .partial, .history or .backup file name.
    #[error(
        "{name:?} is not a WAL file name (expected a segment, .partial, .history or .backup name)"
    )]
    InvalidName { name: String },

    /// An archive file fails its checks (checksum, length, header).
    #[error(
        "archive file {} is corrupt: {reason}. Inspect it and move it aside; then \
         re-archive the WAL file from a member that still has it",
        .path.display()
    )]
    Corrupt { path: PathBuf, reason: String },

    /// The archive already holds this name with different content.
    #[error(
        "refusing to overwrite {}: the archive already holds {name} with different content \
         (archived sha256 {existing}, new sha256 {new}). Two clusters or timelines may share \
         this archive; investigate before moving the archived file aside",
        .path.display()
    )]
    Conflict {
        name: String,
        path: PathBuf,
        existing: String,
        new: String,
    },

    /// The source file to push does not exist or cannot be read.
    #[error("cannot read WAL file {}: {cause}", .path.display())]
    Source { path: PathBuf, cause: io::Error },

    /// No space left (ENOSPC/EDQUOT) while writing.
    #[error(
        "disk full while {op} {}: {cause}. Free space on that file system (in the archive: \
         `pgha archive clean`); PostgreSQL keeps its WAL and retries, so nothing is lost meanwhile",
        .path.display()
    )]
    DiskFull {
        op: &'static str,
        path: PathBuf,
        cause: io::Error,
    },

    /// Permission denied or read-only filesystem.
    #[error(
        "permission denied while {op} {}: {cause}. The archive directory and the data \
         directory must be writable by the OS user that runs PostgreSQL (e.g. `chown -R \
         postgres: <archive dir>`)",
        .path.display()
    )]
    Permission {
        op: &'static str,
        path: PathBuf,
        cause: io::Error,
    },

    /// A retention request that makes no sense (e.g. `--keep 0`).
    #[error("invalid retention: {0}")]
    InvalidRetention(String),

    /// Any other I/O failure.
    #[error("{op} {}: {cause}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        cause: io::Error,
    },

    /// The object-store location or its settings are unusable.
    #[error("object store: {0}")]
    InvalidStore(String),

    /// A request to the object store failed (network, credentials, bucket).
    #[error(
        "object store: {0}. Check the endpoint, the bucket and the credentials in the S3 settings"
    )]
    Store(String),
}

impl ArchiveError {
    /// Classify an I/O error from operation `op` on `path`.
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        let path = path.to_path_buf();
        match source.raw_os_error() {
            Some(code) if code == libc_errno::ENOSPC || code == libc_errno::EDQUOT => {
                ArchiveError::DiskFull {
                    op,
                    path,
                    cause: source,
                }
            }
            Some(code)
                if code == libc_errno::EACCES
                    || code == libc_errno::EPERM
                    || code == libc_errno::EROFS =>
            {
                ArchiveError::Permission {
                    op,
                    path,
                    cause: source,
                }
            }
            _ => ArchiveError::Io {
                op,
                path,
                cause: source,
            },
        }
    }

    /// A closure for `map_err` that classifies with [`ArchiveError::io`].
    pub(crate) fn on<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Self + 'a {
        move |e| ArchiveError::io(op, path, e)
    }

    /// True for the quiet "not in the archive" outcome.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ArchiveError::NotFound { .. })
    }

    /// True when the file exists but failed its checks.
    pub fn is_corrupt(&self) -> bool {
        matches!(self, ArchiveError::Corrupt { .. })
    }
}

/// errno values, via nix so we need no direct libc dependency.
mod libc_errno {
    use nix::errno::Errno;
    pub const ENOSPC: i32 = Errno::ENOSPC as i32;
    pub const EDQUOT: i32 = Errno::EDQUOT as i32;
    pub const EACCES: i32 = Errno::EACCES as i32;
    pub const EPERM: i32 = Errno::EPERM as i32;
    pub const EROFS: i32 = Errno::EROFS as i32;
}

/// Result alias for the archive library.
pub type Result<T, E = ArchiveError> = std::result::Result<T, E>;
