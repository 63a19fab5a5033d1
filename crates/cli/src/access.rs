//! Who may read the cluster's files, and what the CLI says to one who may
//! not.
//!
//! | file | mode | why |
//! |---|---|---|
//! | `cluster.toml`, the dev `proxy.toml` | 0640 | they name the secret files and the etcd user |
//! | `secrets/` | 0700 | every password, the API token, the passfile |
//! | `secrets/*` | 0600 | |
//!
//! Owner: the cluster's OS user (`postgres.os_user` when pgha runs as root,
//! else the user running it); group: that user's group. Root and the owner
//! can control the cluster; group members can read the config but not the
//! secrets, so they cannot authenticate to etcd or to the agents' API
//! either (docs/security.md).

use anyhow::Context;
use pgha_config::{ClusterConfig, ConfigError};
use std::path::Path;

/// Mode of the config files (`cluster.toml`, the dev `proxy.toml`).
pub const CONFIG_MODE: u32 = 0o640;

/// Load the cluster config at `path`; a permission error says who may.
pub fn load_config(path: &Path) -> anyhow::Result<ClusterConfig> {
    if let Err(e) = std::fs::metadata(path) {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            anyhow::bail!(pgha_dcs::credentials::unreadable(path, &e));
        }
    }
    pgha_config::load(path).map_err(|e| match e {
        ConfigError::Read { path, error }
            if error.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            anyhow::anyhow!(pgha_dcs::credentials::unreadable(&path, &error))
        }
        other => other.into(),
    })
}

/// Clear every permission bit of `path` beyond `mode` (never adds one).
pub fn restrict(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).with_context(|| format!("stat {}", path.display()))?;
    let current = meta.permissions().mode() & 0o7777;
    let wanted = current & mode;
    if wanted != current {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(wanted))
            .with_context(|| format!("set the mode of {} to {wanted:o}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn restrict_only_removes_bits() {
        let dir = tempfile::tempdir().expect("dir");
        let f = dir.path().join("f");
        std::fs::write(&f, "x").expect("write");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        restrict(&f, CONFIG_MODE).expect("restrict");
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&f), 0o640);
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        restrict(&f, CONFIG_MODE).expect("restrict");
        assert_eq!(mode(&f), 0o600);
    }
}
