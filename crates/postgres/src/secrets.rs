//! Generated credentials: the superuser (pgha's own connections), the
//! replication role and the proxy's monitoring role. Each password lives in
//! its own file, mode 0600, owned by the service user, in a directory only
//! that user can read; a libpq passfile lets PostgreSQL's WAL receiver,
//! pg_basebackup and pg_rewind log in without a password in any config file.
//!
//! On a multi-host deployment the same secrets directory is copied to every
//! host (the replication password must match everywhere).

use crate::{PgError, ServiceUser};
use rand::distributions::Alphanumeric;
use rand::Rng;
use std::path::{Path, PathBuf};

pub const ADMIN_FILE: &str = "admin.password";
pub const REPLICATION_FILE: &str = "replication.password";
pub const MONITOR_FILE: &str = "monitor.password";
pub const PASSFILE: &str = "pgpass";
/// Token the agents' state-changing REST endpoints require.
pub const API_TOKEN_FILE: &str = "api.token";

/// Name of the role the proxy uses to look up password verifiers.
pub const MONITOR_USER: &str = "pgha_monitor";

#[derive(Clone)]
pub struct Secrets {
    pub dir: PathBuf,
    pub admin_password: String,
    pub replication_password: String,
    pub monitor_password: String,
    pub api_token: String,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Secrets {
    /// Read the secrets in `dir`, generating any that are missing, and (re)write
    /// the passfile for `superuser` and `replication_user`.
    pub fn ensure(
        dir: &Path,
        user: &ServiceUser,
        superuser: &str,
        replication_user: &str,
    ) -> Result<Self, PgError> {
        user.make_dir(dir, 0o700)?;
        let secrets = Secrets {
            dir: dir.to_path_buf(),
            admin_password: read_or_generate(dir, ADMIN_FILE, user)?,
            replication_password: read_or_generate(dir, REPLICATION_FILE, user)?,
            monitor_password: read_or_generate(dir, MONITOR_FILE, user)?,
            api_token: read_or_generate(dir, API_TOKEN_FILE, user)?,
        };
        let passfile = format!(
            "*:*:*:{}:{}\n*:*:*:{}:{}\n",
            escape(replication_user),
            escape(&secrets.replication_password),
            escape(superuser),
            escape(&secrets.admin_password),
        );
        user.write_file(&secrets.passfile(), passfile.as_bytes(), 0o600)?;
        Ok(secrets)
    }

    /// Read existing secrets without creating anything.
    pub fn load(dir: &Path) -> Result<Self, PgError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path)
                .map(|s| s.trim().to_string())
                .map_err(PgError::io(format!("read {}", path.display())))
        };
        Ok(Secrets {
            dir: dir.to_path_buf(),
            admin_password: read(ADMIN_FILE)?,
            replication_password: read(REPLICATION_FILE)?,
            monitor_password: read(MONITOR_FILE)?,
            api_token: read(API_TOKEN_FILE)?,
        })
    }

    pub fn passfile(&self) -> PathBuf {
        self.dir.join(PASSFILE)
    }

    pub fn admin_file(&self) -> PathBuf {
        self.dir.join(ADMIN_FILE)
    }
}

fn read_or_generate(dir: &Path, name: &str, user: &ServiceUser) -> Result<String, PgError> {
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(PgError::Io {
                what: format!("read {}", path.display()),
                error: e,
            })
        }
    }
    let pw: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect();
    user.write_file(&path, pw.as_bytes(), 0o600)?;
    Ok(pw)
}

/// Escape `:` and `\` for a libpq passfile field.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace(':', "\\:")
}
