//! `restore_command`: copy one archived file out to where PostgreSQL wants
//! it (`%p`, usually `pg_wal/RECOVERYXLOG`), checked and atomically.
//!
//! Steps: open `DIR/<name>` (absent -> [`ArchiveError::NotFound`]), check the
//! header and file length, decode into `.<dest>.pgha-tmp` beside the
//! destination while hashing, compare length and SHA-256, fsync, rename over
//! the destination. A corrupt file never reaches the destination name.
//!
//! Hazard: the temp name is derived from the destination, so a fetch killed
//! midway leaves at most one stale temp file per destination, which the next
//! fetch to that destination truncates and reuses.

use crate::error::{ArchiveError, Result};
use crate::format::{self, Header, ReadError};
use crate::fsutil::{FILE_MODE, TEMP_SUFFIX};
use crate::inspect::{open_archived, read_error};
use crate::name::WalName;
use crate::push::TempGuard;
use crate::{failpoint, fsutil, Archive};
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

impl Archive {
    /// Restore archived file `name` to `dest`; returns its header.
    pub fn fetch(&self, name: &str, dest: &Path) -> Result<Header> {
        let name = WalName::parse(name)?;
        fsutil::check_dir(self.dir())?;
        let path = self.path_of(&name);
        let (mut file, header) = open_archived(&path, &name, self.dir())?;
        let tmp = temp_path_for(dest)?;
        let out = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(&tmp)
            .map_err(ArchiveError::on(
                "creating temp file for restored WAL",
                &tmp,
            ))?;
        let mut guard = TempGuard::new(tmp.clone());
        let dest_dir = tmp.parent().filter(|p| !p.as_os_str().is_empty());
        fsutil::adopt_owner(&out, &tmp, dest_dir.unwrap_or(Path::new(".")))?;
        let mut writer = io::BufWriter::new(&out);
        format::read_payload(&mut file, &header, &mut writer).map_err(|e| match e {
            ReadError::Write(e) => ArchiveError::io("writing restored WAL", &tmp, e),
            other => read_error(&path, "reading archive file", other),
        })?;
        writer
            .flush()
            .map_err(ArchiveError::on("writing restored WAL", &tmp))?;
        drop(writer);
        out.sync_all()
            .map_err(ArchiveError::on("fsyncing restored WAL", &tmp))?;
        failpoint::hit("wal-fetch-before-rename");
        fs::rename(&tmp, dest)
            .map_err(ArchiveError::on("renaming restored WAL into place", dest))?;
        guard.disarm();
        tracing::debug!(name = %name, dest = %dest.display(), "restored");
        Ok(header)
    }
}

/// `.<file>.pgha-tmp` in the destination's directory.
pub(crate) fn temp_path_for(dest: &Path) -> Result<PathBuf> {
    let file = dest
        .file_name()
        .and_then(|f| f.to_str())
        .ok_or_else(|| ArchiveError::Io {
            op: "choosing a temp file next to",
            path: dest.to_path_buf(),
            cause: io::Error::new(io::ErrorKind::InvalidInput, "destination has no file name"),
        })?;
    let tmp = format!(".{file}{TEMP_SUFFIX}");
    Ok(match dest.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.join(tmp),
        _ => PathBuf::from(tmp),
    })
}
