//! The etcd credentials a client presents, read from the `[dcs]` settings,
//! and the one message every pgha part gives when a file holding a secret
//! (or the config naming it) cannot be read.
//!
//! Who may read what is decided by the file system: the secrets directory
//! is 0700 and its files 0600, owned by the cluster's OS user, and the
//! cluster config is 0640 (see docs/security.md). A user who cannot read
//! them cannot present the etcd password, and etcd (with authentication
//! on) refuses every request without it. The error says so plainly instead
//! of a bare "Permission denied (os error 13)".

use crate::error::DcsError;
use crate::settings::DcsSettings;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// An etcd user name and password. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"[SECRET]")
            .finish()
    }
}

impl DcsSettings {
    /// The credentials these settings name, reading `password_file` now:
    /// `None` without `username` (anonymous access, for an etcd without
    /// authentication). A missing, unreadable or empty password file is an
    /// error that names the file and what to do.
    pub fn credentials(&self) -> Result<Option<Credentials>, DcsError> {
        let Some(user) = &self.username else {
            return Ok(None);
        };
        let password = match (&self.password, &self.password_file) {
            (Some(p), _) => p.clone(),
            (None, Some(path)) => read_secret(path, "dcs.password_file")?,
            (None, None) => {
                return Err(DcsError::Denied(
                    "dcs.username is set without dcs.password_file".into(),
                ))
            }
        };
        Ok(Some(Credentials {
            user: user.clone(),
            password,
        }))
    }
}

/// The first line of the secret file `path` (named by config key `key`),
/// trimmed; an error when it cannot be read or is empty.
pub fn read_secret(path: &Path, key: &str) -> Result<String, DcsError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| DcsError::Denied(format!("{key}: {}", unreadable(path, &e))))?;
    let line = text.lines().next().unwrap_or("").trim().to_string();
    if line.is_empty() {
        return Err(DcsError::Denied(format!(
            "{key}: {} is empty: it must hold the etcd password on its first line",
            path.display()
        )));
    }
    Ok(line)
}

/// "cannot read PATH: WHY; WHAT TO DO" for a failed read of `path`. For a
/// permission error the advice names who may read it: root, the owner of
/// the nearest part of the path this user can see (the file, or the
/// directory that hides it), and its group when the group may read too.
pub fn unreadable(path: &Path, error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::PermissionDenied => {
            let who = match owner_of_nearest(path) {
                Some(o) => {
                    let mut who = vec!["root".to_string()];
                    if o.user != "root" {
                        who.push(format!("the cluster's owner (OS user {})", o.user));
                    }
                    if o.group_may_read {
                        who.push(format!("a member of its group ({})", o.group));
                    }
                    match who.split_last() {
                        Some((last, [])) => format!("run as {last}"),
                        Some((last, rest)) => format!("run as {} or as {last}", rest.join(", as ")),
                        None => "run as root".to_string(),
                    }
                }
                None => "run as root or as the cluster's owner".to_string(),
            };
            format!("cannot read {}: permission denied; {who}", path.display())
        }
        io::ErrorKind::NotFound => format!("cannot read {}: no such file", path.display()),
        _ => format!("cannot read {}: {error}", path.display()),
    }
}

/// Who owns the nearest visible part of a path.
struct Owner {
    user: String,
    group: String,
    /// The group may read it (a file) or enter it (a directory).
    group_may_read: bool,
}

/// The owner of `path` or, when it cannot be examined, of its nearest
/// ancestor that can.
fn owner_of_nearest(path: &Path) -> Option<Owner> {
    use std::os::unix::fs::MetadataExt;
    let mut cur: Option<PathBuf> = Some(path.to_path_buf());
    while let Some(p) = cur {
        if let Ok(meta) = std::fs::metadata(&p) {
            let uid = nix::unistd::Uid::from_raw(meta.uid());
            let gid = nix::unistd::Gid::from_raw(meta.gid());
            let user = nix::unistd::User::from_uid(uid)
                .ok()
                .flatten()
                .map_or_else(|| format!("uid {uid}"), |u| u.name);
            let group = nix::unistd::Group::from_gid(gid)
                .ok()
                .flatten()
                .map_or_else(|| format!("gid {gid}"), |g| g.name);
            let bit = if meta.is_dir() { 0o010 } else { 0o040 };
            return Some(Owner {
                user,
                group,
                group_may_read: meta.mode() & bit != 0,
            });
        }
        cur = p.parent().map(Path::to_path_buf);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_username_means_anonymous() {
        assert_eq!(DcsSettings::default().credentials().expect("ok"), None);
    }

    #[test]
    fn password_file_is_read_first_line_trimmed() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("etcd.password");
        std::fs::write(&path, "s3cret \nignored\n").expect("write");
        let s = DcsSettings {
            username: Some("pgha".into()),
            password_file: Some(path.clone()),
            ..DcsSettings::default()
        };
        let c = s.credentials().expect("read").expect("some");
        assert_eq!(c.password, "s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));
        std::fs::write(&path, "\n").expect("write");
        let err = s.credentials().expect_err("empty").to_string();
        assert!(err.contains("is empty"), "{err}");
        std::fs::remove_file(&path).expect("rm");
        let err = s.credentials().expect_err("missing").to_string();
        assert!(
            err.contains("dcs.password_file") && err.contains("no such file"),
            "{err}"
        );
    }

    #[test]
    fn permission_error_names_who_may_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("file");
        std::fs::write(&file, "x").expect("write");
        let e = io::Error::from(io::ErrorKind::PermissionDenied);
        let set = |mode| {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).expect("chmod")
        };
        let me = nix::unistd::User::from_uid(nix::unistd::Uid::effective())
            .expect("lookup")
            .expect("user")
            .name;
        set(0o600);
        let msg = unreadable(&file, &e);
        assert!(msg.contains("permission denied; run as root"), "{msg}");
        assert!(!msg.contains("group"), "a 0600 file: no group: {msg}");
        assert_eq!(msg.contains("(OS user "), me != "root", "{msg}");
        set(0o640);
        let msg = unreadable(&file, &e);
        assert!(msg.contains("or as a member of its group ("), "{msg}");
        // A file inside a directory this user cannot see: its directory's owner.
        let msg = unreadable(&dir.path().join("hidden/file"), &e);
        assert!(msg.contains("permission denied; run as root"), "{msg}");
    }
}
