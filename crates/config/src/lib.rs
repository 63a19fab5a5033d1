//! The cluster configuration file: one TOML file that describes the cluster
//! (members, PostgreSQL binaries, archive, replication settings, pass-through
//! PostgreSQL parameters).
//!
//! Loading happens in two steps, as in most long-lived servers: the file is
//! parsed into [`file::ClusterFile`] (serde, unknown keys refused so that a
//! typo is an error rather than a silently ignored setting), then validated
//! into [`ClusterConfig`], whose invariants (unique names and ports, archive
//! outside every data directory, ...) later code can rely on. Every error
//! names the key, the value and the reason.

pub mod file;
pub mod size;
pub mod tls;
mod validate;

pub use file::{
    ArchiveCompression, BackupFile, ClusterFile, HaFile, MemberFile, ProxyFile, SynchronousCommit,
    DEV_ETCD_USER, ETCD_PASSWORD_FILE, ETCD_ROOT_PASSWORD_FILE,
};
pub use size::ByteSize;
pub use tls::{CertFiles, CertPair, TlsConfig, TlsFile};
pub use validate::{check_sync_quorum, ClusterConfig, ConfigError, Member, RESERVED_PARAMETERS};

use std::path::Path;

/// Read, parse and validate a cluster config file. Relative paths in the file
/// are taken relative to the file's directory.
pub fn load(path: &Path) -> Result<ClusterConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    let base = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| Path::new(".").to_path_buf());
    parse(&text, &base).map_err(|e| e.in_file(path))
}

/// Parse and validate config text; relative paths are resolved against `base`.
///
/// Two kinds of error come before validation: text that is not TOML at all
/// ([`ConfigError::Syntax`]) and TOML of the wrong shape (unknown key, wrong
/// type, missing member field: [`ConfigError::Schema`], naming the key).
pub fn parse(text: &str, base: &Path) -> Result<ClusterConfig, ConfigError> {
    let table: toml::Table =
        toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
    let file: ClusterFile =
        serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            ConfigError::Schema {
                key: e.path().to_string(),
                reason: e.inner().to_string(),
            }
        })?;
    validate::validate(file, base)
}
