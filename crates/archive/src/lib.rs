//! pgha-archive: the WAL archive behind `archive_command` (`pgha wal-push`)
//! and `restore_command` (`pgha wal-fetch`), plus listing, verification and
//! the one thing allowed to delete from it, [`Archive::clean`].
//!
//! Layout of an archive directory (shared by all members of a cluster):
//! - `DIR/<walname>`: one file per archived WAL file, named exactly as
//!   PostgreSQL's `%f`, in the format of [`format`] (header with SHA-256,
//!   payload plain or zstd);
//! - `DIR/.tmp/`: temp files of pushes in progress (`*.pgha-tmp`).
//!
//! Crash safety (see docs/archive.md): a file appears under its final name
//! only by an atomic no-replace rename of a complete, fsynced temp file,
//! followed by an fsync of the directory. Nothing overwrites an archived file.
//!
//! Hazards: this crate never creates the archive directory (an unmounted
//! mount point must not silently become the archive), and it never deletes
//! archived files except in [`Archive::clean`].

pub mod backups;
pub mod chain;
mod clean;
mod error;
pub mod failpoint;
mod fetch;
pub mod format;
mod fsutil;
pub mod health;
mod identity;
mod inspect;
mod name;
mod push;
pub mod s3;
mod store;

pub use backups::{BackupEntry, BackupRecord, RestorePoint};
pub use chain::{ChainProblem, ChainReport, TimelineSpan};
pub use clean::{clean_plan, CleanReport, Retention};
pub use error::{ArchiveError, Result};
pub use format::{Compression, Header};
pub use identity::ArchiveOwner;
pub use inspect::Entry;
pub use name::{SegPos, WalKind, WalName};
pub use push::{PushOptions, PushOutcome};
pub use store::Store;

use std::path::{Path, PathBuf};

/// Name of the temp-file subdirectory inside the archive directory.
pub const TEMP_DIR: &str = ".tmp";

/// A WAL archive directory.
#[derive(Debug, Clone)]
pub struct Archive {
    dir: PathBuf,
}

impl Archive {
    /// Open an existing archive directory. It is never created here.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Archive> {
        let dir = dir.into();
        fsutil::check_dir(&dir)?;
        Ok(Archive { dir })
    }

    /// The archive directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the archived file for `name`.
    pub fn path_of(&self, name: &WalName) -> PathBuf {
        self.dir.join(name.as_str())
    }

    fn temp_dir(&self) -> PathBuf {
        self.dir.join(TEMP_DIR)
    }
}

#[cfg(test)]
mod tests;
