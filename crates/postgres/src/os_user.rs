//! The OS user that runs PostgreSQL. PostgreSQL refuses to run as root, so
//! when pgha runs as root it runs every PostgreSQL program as the configured
//! unprivileged user (default `postgres`) and hands it the directories it
//! needs; otherwise PostgreSQL runs as pgha's own user.

use crate::PgError;
use nix::unistd::{chown, Gid, Uid, User};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct ServiceUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    /// True when pgha must switch to this user to run PostgreSQL programs.
    pub switch: bool,
}

impl ServiceUser {
    /// `configured` when running as root, else the current user.
    pub fn resolve(configured: &str) -> Result<Self, PgError> {
        let me = Uid::effective();
        if me.is_root() {
            let user = User::from_name(configured).ok().flatten().ok_or_else(|| {
                PgError::NoServiceUser {
                    user: configured.to_string(),
                }
            })?;
            if user.uid.is_root() {
                return Err(PgError::NoServiceUser {
                    user: format!("{configured} (it is root)"),
                });
            }
            Ok(Self::from_user(user, true))
        } else {
            let user = User::from_uid(me)
                .ok()
                .flatten()
                .ok_or_else(|| PgError::NoServiceUser {
                    user: format!("uid {me}"),
                })?;
            Ok(Self::from_user(user, false))
        }
    }

    fn from_user(user: User, switch: bool) -> Self {
        ServiceUser {
            name: user.name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            home: user.dir,
            switch,
        }
    }

    /// A command for `program` that runs as this user with a clean environment.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(program);
        cmd.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("LC_ALL", "C.UTF-8")
            .env("HOME", &self.home)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(false);
        if self.switch {
            cmd.uid(self.uid).gid(self.gid);
        }
        cmd
    }

    /// Create `dir` (and parents) and give it to this user with `mode`.
    pub fn make_dir(&self, dir: &Path, mode: u32) -> Result<(), PgError> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir)
            .map_err(PgError::io(format!("create directory {}", dir.display())))?;
        self.give(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
            .map_err(PgError::io(format!("set permissions of {}", dir.display())))
    }

    /// Make this user the owner of `path` (a no-op when not switching users).
    pub fn give(&self, path: &Path) -> Result<(), PgError> {
        if !self.switch {
            return Ok(());
        }
        chown(
            path,
            Some(Uid::from_raw(self.uid)),
            Some(Gid::from_raw(self.gid)),
        )
        .map_err(|e| PgError::Io {
            what: format!("give {} to OS user {}", path.display(), self.name),
            error: e.into(),
        })
    }

    /// Write `contents` to `path` with `mode`, owned by this user.
    pub fn write_file(&self, path: &Path, contents: &[u8], mode: u32) -> Result<(), PgError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        // A name of our own: several agents may write the same shared file.
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_extension(format!("pgha-tmp.{}.{seq}", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(PgError::io(format!("create {}", tmp.display())))?;
        f.write_all(contents)
            .and_then(|_| f.sync_all())
            .map_err(PgError::io(format!("write {}", tmp.display())))?;
        self.give(&tmp)?;
        std::fs::rename(&tmp, path)
            .map_err(PgError::io(format!("rename {} into place", path.display())))
    }

    /// Fail with a clear error when this user cannot reach `path` (every
    /// parent must be searchable), which PostgreSQL needs for its data dir.
    pub async fn check_reachable(&self, path: &Path) -> Result<(), PgError> {
        if !self.switch {
            return Ok(());
        }
        let status = self
            .command("/usr/bin/test")
            .arg("-x")
            .arg(path)
            .status()
            .await
            .map_err(PgError::io("run test(1) as the service user"))?;
        if status.success() {
            Ok(())
        } else {
            Err(PgError::Unreachable {
                path: path.to_path_buf(),
                user: self.name.clone(),
            })
        }
    }
}
