//! Where PostgreSQL's programs are: `postgres.bin_dir` from the config, or the
//! newest `/usr/lib/postgresql/<major>/bin` (Debian's layout).

use crate::PgError;
use std::path::{Path, PathBuf};

/// The programs pgha runs.
pub const REQUIRED: &[&str] = &[
    "initdb",
    "pg_ctl",
    "pg_basebackup",
    "pg_rewind",
    "pg_controldata",
    "postgres",
];

#[derive(Clone, Debug)]
pub struct PgBinaries {
    dir: PathBuf,
}

impl PgBinaries {
    /// Use `configured` when given, else autodetect; check every required program exists.
    pub fn locate(configured: Option<&Path>) -> Result<Self, PgError> {
        let dir = match configured {
            Some(dir) => dir.to_path_buf(),
            None => autodetect(Path::new("/usr/lib/postgresql")).ok_or(PgError::NoInstallation)?,
        };
        let bins = PgBinaries { dir };
        for name in REQUIRED {
            let path = bins.path(name);
            if !path.is_file() {
                return Err(PgError::MissingBinary { path });
            }
        }
        Ok(bins)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, program: &str) -> PathBuf {
        self.dir.join(program)
    }
}

/// The `bin` dir of the highest numeric version under `root`.
fn autodetect(root: &Path) -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("pg_ctl").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autodetect_picks_newest_with_pg_ctl() {
        let root = tempfile::tempdir().unwrap();
        for v in ["13", "15", "9"] {
            let bin = root.path().join(v).join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            std::fs::write(bin.join("pg_ctl"), "").unwrap();
        }
        std::fs::create_dir_all(root.path().join("16/bin")).unwrap(); // no pg_ctl
        assert_eq!(autodetect(root.path()).unwrap(), root.path().join("15/bin"));
    }

    #[test]
    fn missing_binary_names_the_package() {
        let dir = tempfile::tempdir().unwrap();
        let e = PgBinaries::locate(Some(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("initdb"), "{e}");
        assert!(e.contains("postgresql-15"), "{e}");
    }
}
