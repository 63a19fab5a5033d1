//! File-system primitives the crash-safety argument rests on: exclusive temp
//! files held under an advisory lock, fsync of files and directories, and a
//! rename that never replaces an existing file.
//!
//! Hazards:
//! - `rename(2)` silently replaces its target; we use `renameat2` with
//!   `RENAME_NOREPLACE`, and where the file system does not support it (NFS,
//!   some FUSE), `link(2)` + `unlink(2)`, which also fails with EEXIST.
//! - A temp file is "stale" only when nobody holds its lock (the lock dies
//!   with its process) *and* it is older than [`STALE_AFTER`]; the age closes
//!   the window between creating a temp file and locking it.

use crate::error::{ArchiveError, Result};
use nix::errno::Errno;
use nix::fcntl::{renameat2, Flock, FlockArg, RenameFlags};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Mode of every file we create (archive files, temp files, fetched WAL).
pub const FILE_MODE: u32 = 0o600;
/// Unlocked temp files older than this are debris from a killed process.
pub const STALE_AFTER: Duration = Duration::from_secs(60);
/// Suffix of every temp file we create.
pub const TEMP_SUFFIX: &str = ".pgha-tmp";

/// When running as root (an operator, a test), give `file` the owner of
/// `like` (the archive or destination directory), so that files root
/// creates stay usable by the OS user that runs PostgreSQL.
pub fn adopt_owner(file: &File, path: &Path, like: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let owner = fs::metadata(like).map_err(ArchiveError::on("inspecting directory", like))?;
    std::os::unix::fs::fchown(file, Some(owner.uid()), Some(owner.gid()))
        .map_err(ArchiveError::on("changing owner of", path))
}

/// Check that `dir` exists and is a directory; never create it.
pub fn check_dir(dir: &Path) -> Result<()> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(ArchiveError::NotADirectory {
            dir: dir.to_path_buf(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ArchiveError::DirMissing {
            dir: dir.to_path_buf(),
        }),
        Err(e) => Err(ArchiveError::io("inspecting archive directory", dir, e)),
    }
}

/// fsync a directory so that a rename or unlink inside it is durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    let d = File::open(dir).map_err(ArchiveError::on("opening directory for fsync", dir))?;
    d.sync_all()
        .map_err(ArchiveError::on("fsyncing directory", dir))
}

/// Create a new temp file at `path` (must not exist), mode 0600, and lock it.
pub fn create_locked(path: &Path) -> Result<Flock<File>> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
        .map_err(ArchiveError::on("creating temp file", path))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        let _ = fs::remove_file(path);
        ArchiveError::io("locking temp file", path, io::Error::from(errno))
    })
}

/// Outcome of [`rename_noreplace`].
#[derive(Debug, PartialEq, Eq)]
pub enum Placed {
    /// `from` is now at `to`.
    Done,
    /// `to` already existed; `from` is untouched.
    TargetExists,
}

/// Move `from` to `to` unless `to` exists. Both on one file system.
pub fn rename_noreplace(from: &Path, to: &Path) -> Result<Placed> {
    match renameat2(None, from, None, to, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => return Ok(Placed::Done),
        Err(Errno::EEXIST) => return Ok(Placed::TargetExists),
        Err(Errno::EINVAL) | Err(Errno::ENOSYS) | Err(Errno::EOPNOTSUPP) => {}
        Err(e) => return Err(ArchiveError::io("renaming into place", to, e.into())),
    }
    // The file system lacks RENAME_NOREPLACE: link(2) refuses to replace too.
    match fs::hard_link(from, to) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(Placed::TargetExists),
        Err(e) => return Err(ArchiveError::io("linking into place", to, e)),
    }
    fs::remove_file(from).map_err(ArchiveError::on("removing temp file", from))?;
    Ok(Placed::Done)
}

/// Remove unlocked temp files older than `min_age` in `dir`; return them.
/// Best effort: a file that vanishes or cannot be locked is skipped.
pub fn sweep_stale_temps(dir: &Path, min_age: Duration, dry_run: bool) -> Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ArchiveError::io("listing temp directory", dir, e)),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry.map_err(ArchiveError::on("listing temp directory", dir))?;
        let path = entry.path();
        let is_temp = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.ends_with(TEMP_SUFFIX));
        if is_temp && is_stale(&path, min_age) {
            if !dry_run {
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(ArchiveError::io("removing stale temp file", &path, e)),
                }
            }
            removed.push(path);
        }
    }
    Ok(removed)
}

/// Old enough and nobody holds its lock. Temp names are unique and created
/// with O_EXCL, so once its creator is gone nobody locks a temp file again;
/// dropping our probe lock before the unlink is therefore harmless.
fn is_stale(path: &Path, min_age: Duration) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    let old_enough = file
        .metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|age| age >= min_age);
    old_enough && Flock::lock(file, FlockArg::LockExclusiveNonblock).is_ok()
}
