//! Reading archived files back without restoring them: listing, and full
//! verification (decode + length + SHA-256).
//!
//! Hazard: `list` reads only headers (64 bytes per file) and so is cheap;
//! `verify` reads and decodes the whole file.

use crate::error::{ArchiveError, Result};
use crate::format::{self, Header, ReadError};
use crate::name::WalName;
use crate::Archive;
use std::fs::{self, File};
use std::io;
use std::path::Path;

/// One archived file as listed.
#[derive(Debug)]
pub struct Entry {
    pub name: WalName,
    /// Size on disk, header included.
    pub stored_size: u64,
    /// The header, or why it could not be read (a corrupt or foreign file).
    pub header: std::result::Result<Header, String>,
}

impl Archive {
    /// Every archived file (names that parse as WAL names), in WAL order.
    /// Temp files and foreign names are not listed.
    pub fn list(&self) -> Result<Vec<Entry>> {
        let dir = self.dir();
        let entries = fs::read_dir(dir).map_err(ArchiveError::on("listing archive", dir))?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(ArchiveError::on("listing archive", dir))?;
            let Some(name) = entry
                .file_name()
                .to_str()
                .and_then(|n| WalName::parse(n).ok())
            else {
                continue;
            };
            let path = entry.path();
            let stored_size = match entry.metadata() {
                Ok(m) if m.is_file() => m.len(),
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(ArchiveError::io("inspecting archive file", &path, e)),
            };
            let header = header_of(&path);
            out.push(Entry {
                name,
                stored_size,
                header,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Read `name` completely and check it; returns its header.
    pub fn verify(&self, name: &WalName) -> Result<Header> {
        let path = self.path_of(name);
        let (mut file, header) = open_archived(&path, name, self.dir())?;
        format::read_payload(&mut file, &header, io::sink())
            .map_err(|e| read_error(&path, "reading archive file", e))?;
        Ok(header)
    }

    /// Read `name` completely into `out`, checked (small files: history).
    pub fn read_into(&self, name: &WalName, out: &mut Vec<u8>) -> Result<Header> {
        let path = self.path_of(name);
        let (mut file, header) = open_archived(&path, name, self.dir())?;
        format::read_payload(&mut file, &header, &mut *out)
            .map_err(|e| read_error(&path, "reading archive file", e))?;
        Ok(header)
    }
}

/// Header of an archived file, or why it is unreadable.
fn header_of(path: &Path) -> std::result::Result<Header, String> {
    let mut file = File::open(path).map_err(|e| e.to_string())?;
    format::read_header(&mut file).map_err(|e| match e {
        ReadError::Corrupt(reason) => reason,
        ReadError::Io(e) | ReadError::Write(e) => e.to_string(),
    })
}

/// Open an archived file and check its header; absent -> `NotFound`.
pub(crate) fn open_archived(path: &Path, name: &WalName, dir: &Path) -> Result<(File, Header)> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ArchiveError::NotFound {
                name: name.to_string(),
                dir: dir.to_path_buf(),
            })
        }
        Err(e) => return Err(ArchiveError::io("opening archive file", path, e)),
    };
    let header =
        format::read_header(&mut file).map_err(|e| read_error(path, "reading archive file", e))?;
    Ok((file, header))
}

/// Turn a [`ReadError`] on archive file `path` into an [`ArchiveError`].
/// Write errors are attributed to `path` too unless the caller maps them.
pub(crate) fn read_error(path: &Path, op: &'static str, e: ReadError) -> ArchiveError {
    match e {
        ReadError::Corrupt(reason) => ArchiveError::Corrupt {
            path: path.to_path_buf(),
            reason,
        },
        ReadError::Io(e) | ReadError::Write(e) => ArchiveError::io(op, path, e),
    }
}
