//! Running `pgha` as an unprivileged OS user (`nobody`), for tests of who
//! may control a cluster. Only root can switch users, so
//! [`Unprivileged::new`] returns `None` (and says why on stderr) when the
//! test does not run as root; CI runs as root.
//!
//! The binary is copied into a directory every user can enter: the build
//! tree may sit under a home directory only its owner can.

use anyhow::Context;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Unprivileged {
    pub uid: u32,
    pub gid: u32,
    pub name: String,
    /// The copy of the pgha binary `nobody` runs.
    pub bin: PathBuf,
    _dir: tempfile::TempDir,
}

impl Unprivileged {
    /// `nobody` with a copy of `bin`, or `None` when this process is not
    /// root (the caller skips its test).
    pub fn new(bin: &Path, test: &str) -> anyhow::Result<Option<Self>> {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("SKIPPED {test}: needs root to run pgha as the unprivileged user nobody");
            return Ok(None);
        }
        let user = nix::unistd::User::from_name("nobody")
            .ok()
            .flatten()
            .context("no OS user `nobody`")?;
        let dir = tempfile::Builder::new()
            .prefix("pgha-nobody")
            .tempdir()
            .context("temp dir")?;
        open_to_all(dir.path(), 0o755)?;
        let copy = dir.path().join("pgha");
        std::fs::copy(bin, &copy).with_context(|| format!("copy {}", bin.display()))?;
        open_to_all(&copy, 0o755)?;
        let me = Unprivileged {
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            name: user.name,
            bin: copy,
            _dir: dir,
        };
        let probe = me.command(&["--version"]).output();
        if !probe.as_ref().is_ok_and(|o| o.status.success()) {
            anyhow::bail!(
                "{} cannot run {} ({probe:?}): every directory above it must be searchable \
                 by other users (is the temp dir, e.g. /tmp, mode 1777?)",
                me.name,
                me.bin.display()
            );
        }
        Ok(Some(me))
    }

    /// A directory `nobody` may read (for a config file of its own).
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    /// Run `pgha <args>` as this user, with no supplementary groups.
    pub fn pgha(&self, args: &[&str]) -> Output {
        self.command(args)
            .output()
            .unwrap_or_else(|e| panic!("run pgha {args:?} as {}: {e}", self.name))
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .env("RUST_LOG", "warn")
            .env("HOME", "/")
            .current_dir("/")
            .uid(self.uid)
            .gid(self.gid);
        cmd
    }
}

/// Set `path`'s mode (tests use it to open a temp dir to every user).
pub fn open_to_all(path: &Path, mode: u32) -> anyhow::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

/// The permission bits of `path`.
pub fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}
