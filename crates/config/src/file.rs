//! The config file as written by people: every key, its default, and its
//! documentation. Unknown keys are refused (a typo must not be ignored on an
//! HA system). See docs/configuration.md for the operator's view.

use crate::size::ByteSize;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The whole file.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// Cluster name: used as the etcd key prefix and in logs. Default "pgha".
    #[serde(default = "default_name")]
    pub name: String,
    /// Which member this file configures, for `pgha agent` (ignored by the
    /// dev-cluster commands, which drive every member).
    #[serde(default)]
    pub member: Option<String>,
    #[serde(default)]
    pub postgres: PostgresFile,
    #[serde(default)]
    pub replication: ReplicationFile,
    #[serde(default)]
    pub archive: ArchiveFile,
    /// `[dcs]`: how to reach etcd (see docs/dcs.md).
    #[serde(default)]
    pub dcs: pgha_dcs::DcsSettings,
    /// `[ha]`: failover timing and policy.
    #[serde(default)]
    pub ha: HaFile,
    /// `[proxy]`: where the dev cluster's proxy listens (`pgha up` starts
    /// one when this table is present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxyFile>,
    /// Where pgha keeps generated credentials (replication, admin, monitor
    /// passwords), readable only by the service user. Default "secrets".
    #[serde(default = "default_secrets_dir")]
    pub secrets_dir: PathBuf,
    /// `[tls]`: TLS between the cluster's parts (docs/security.md).
    #[serde(default, skip_serializing_if = "crate::file::is_default")]
    pub tls: crate::tls::TlsFile,
    /// The members, in order; the first is the bootstrap primary.
    pub members: Vec<MemberFile>,
    /// `[backup]`: base backups and their retention (docs/backup.md).
    #[serde(default, skip_serializing_if = "BackupFile::is_default")]
    pub backup: BackupFile,
}

/// `[backup]`: base backups kept in the archive (`pgha backup`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackupFile {
    /// Keep this many verified backups (the newest); older ones and the WAL
    /// only they need are removed after each successful backup. Unset: keep
    /// every backup (and all WAL since the oldest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<u32>,
    /// Also keep every backup younger than this (e.g. "7d"), whatever `keep`
    /// says.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub keep_for: Option<Duration>,
    /// Take a backup this often (e.g. "1d"), run by the leader's agent, at
    /// most one at a time in the cluster. Unset: only `pgha backup`.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub schedule: Option<Duration>,
    /// Take backups from the primary instead of a standby.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_primary: bool,
}

impl BackupFile {
    pub fn is_default(&self) -> bool {
        *self == BackupFile::default()
    }
}

pub(crate) fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// `[postgres]`: where PostgreSQL is and how it runs.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresFile {
    /// Directory with initdb, pg_ctl, ... Default: the newest
    /// `/usr/lib/postgresql/*/bin`.
    #[serde(default)]
    pub bin_dir: Option<PathBuf>,
    /// OS user that runs PostgreSQL when pgha runs as root. Default "postgres".
    #[serde(default)]
    pub os_user: Option<String>,
    /// Superuser name pgha creates and uses for its own connections.
    /// Default "postgres".
    #[serde(default)]
    pub superuser: Option<String>,
    /// Passed through to postgresql.conf. Parameters that pgha controls are
    /// refused (see `RESERVED_PARAMETERS`).
    #[serde(default)]
    pub parameters: BTreeMap<String, toml::Value>,
}

/// `[replication]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicationFile {
    /// k in `synchronous_standby_names = 'ANY k (...)'`. Default 1.
    #[serde(default = "one")]
    pub sync_quorum: u32,
    /// Default "on".
    #[serde(default)]
    pub synchronous_commit: SynchronousCommit,
    /// WAL kept for standbys without a slot. Default "256MB".
    #[serde(default = "default_wal_keep_size")]
    pub wal_keep_size: ByteSize,
    /// Most WAL a slot may hold back; past it a dead standby's slot is
    /// invalidated and the standby catches up from the archive. Default "2GB".
    #[serde(default = "default_max_slot_wal_keep_size")]
    pub max_slot_wal_keep_size: ByteSize,
    /// Name of the replication role. Default "replicator".
    #[serde(default = "default_replication_user")]
    pub user: String,
}

/// `synchronous_commit` values that keep the durability promise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SynchronousCommit {
    #[default]
    On,
    RemoteWrite,
    RemoteApply,
}

impl SynchronousCommit {
    pub fn as_str(self) -> &'static str {
        match self {
            SynchronousCommit::On => "on",
            SynchronousCommit::RemoteWrite => "remote_write",
            SynchronousCommit::RemoteApply => "remote_apply",
        }
    }
}

/// `[archive]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveFile {
    /// The shared WAL archive. Must not be inside any member's data
    /// directory. Default "archive".
    #[serde(default = "default_archive_dir")]
    pub dir: PathBuf,
    /// Default "none".
    #[serde(default)]
    pub compression: ArchiveCompression,
    /// An S3-compatible object store instead of `dir`:
    /// `"s3://bucket/prefix"` (docs/backup.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The object store's settings file (`endpoint`, `region`,
    /// `access_key_id`, `secret_access_key`; keep it in the secrets
    /// directory). Default "secrets/s3.conf" when `url` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_config: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ArchiveCompression {
    #[default]
    None,
    Zstd,
}

impl ArchiveCompression {
    pub fn as_str(self) -> &'static str {
        match self {
            ArchiveCompression::None => "none",
            ArchiveCompression::Zstd => "zstd",
        }
    }
}

/// `[ha]`: the initial dynamic configuration the bootstrapping agent writes
/// to the DCS (later changed with `pgha edit-config`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HaFile {
    /// Leader lease time-to-live. Default "2s" (etcd grants whole seconds).
    #[serde(default = "default_ttl", with = "humantime_serde")]
    pub ttl: Duration,
    /// Pause between two iterations of the agent loop. Default "500ms".
    #[serde(default = "default_loop_wait", with = "humantime_serde")]
    pub loop_wait: Duration,
    /// With no healthy standby, switch the primary to asynchronous commit
    /// (loud warning) instead of blocking writes. Default false.
    #[serde(default)]
    pub allow_async_fallback: bool,
    /// While etcd is unreachable, keep taking writes past the lease as long
    /// as k members of the sync set promise not to promote (see
    /// docs/failover.md, "The failsafe rule"). Default true.
    #[serde(default = "default_true")]
    pub failsafe_mode: bool,
}

fn default_true() -> bool {
    true
}

fn default_ttl() -> Duration {
    Duration::from_secs(2)
}
fn default_loop_wait() -> Duration {
    Duration::from_millis(500)
}

impl Default for HaFile {
    fn default() -> Self {
        HaFile {
            ttl: default_ttl(),
            loop_wait: default_loop_wait(),
            allow_async_fallback: false,
            failsafe_mode: true,
        }
    }
}

/// `[proxy]` of the dev cluster.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyFile {
    /// Listen address. Default "127.0.0.1".
    #[serde(default = "default_host")]
    pub host: String,
    /// Read/write-splitting port.
    pub rw_port: u16,
    /// Read-only port (standbys, primary as fallback).
    pub ro_port: u16,
    /// Always-the-primary port.
    pub primary_port: u16,
    /// HTTP port of the proxy (`/metrics`, the status page); none: off.
    #[serde(default)]
    pub http_port: Option<u16>,
}

/// One `[[members]]` entry.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MemberFile {
    /// Member name: also its replication slot name and application_name, so
    /// lower-case letters, digits and underscores only.
    pub name: String,
    /// Address other members and clients use. Default "127.0.0.1".
    #[serde(default = "default_host")]
    pub host: String,
    /// PostgreSQL port.
    pub port: u16,
    /// Data directory. Default "<name>/data".
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// Port of the agent's REST API on `host`. Default `port + 1000`.
    #[serde(default)]
    pub api_port: Option<u16>,
}

/// The etcd user of a dev cluster (`[dcs] username`).
pub const DEV_ETCD_USER: &str = "pgha";
/// The file in the secrets directory holding the cluster's etcd password.
pub const ETCD_PASSWORD_FILE: &str = "etcd.password";
/// The file in the secrets directory holding etcd's root password.
pub const ETCD_ROOT_PASSWORD_FILE: &str = "etcd-root.password";

fn default_name() -> String {
    "pgha".into()
}
fn default_secrets_dir() -> PathBuf {
    "secrets".into()
}
fn default_archive_dir() -> PathBuf {
    "archive".into()
}
fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_replication_user() -> String {
    "replicator".into()
}
fn one() -> u32 {
    1
}
fn default_wal_keep_size() -> ByteSize {
    ByteSize::mb(256)
}
fn default_max_slot_wal_keep_size() -> ByteSize {
    ByteSize::mb(2048)
}

impl Default for ReplicationFile {
    fn default() -> Self {
        ReplicationFile {
            sync_quorum: one(),
            synchronous_commit: SynchronousCommit::default(),
            wal_keep_size: default_wal_keep_size(),
            max_slot_wal_keep_size: default_max_slot_wal_keep_size(),
            user: default_replication_user(),
        }
    }
}

impl Default for ArchiveFile {
    fn default() -> Self {
        ArchiveFile {
            dir: default_archive_dir(),
            compression: ArchiveCompression::default(),
            url: None,
            s3_config: None,
        }
    }
}

impl ClusterFile {
    /// The dev cluster's file: `count` members on loopback from `base_port + 1`.
    pub fn dev(count: usize, base_port: u16) -> Self {
        let members = (1..=count)
            .map(|i| MemberFile {
                name: format!("node{i}"),
                host: default_host(),
                port: base_port + i as u16,
                data_dir: None,
                api_port: Some(base_port + 20 + i as u16),
            })
            .collect();
        ClusterFile {
            name: default_name(),
            member: None,
            postgres: PostgresFile::default(),
            replication: ReplicationFile::default(),
            archive: ArchiveFile::default(),
            // `pgha up` turns on authentication in the etcd it starts.
            dcs: pgha_dcs::DcsSettings {
                username: Some(DEV_ETCD_USER.into()),
                password_file: Some(default_secrets_dir().join(ETCD_PASSWORD_FILE)),
                ..pgha_dcs::DcsSettings::with_endpoints([format!(
                    "http://127.0.0.1:{}",
                    base_port + 30
                )])
            },
            ha: HaFile::default(),
            proxy: Some(ProxyFile {
                host: default_host(),
                rw_port: base_port + 10,
                ro_port: base_port + 11,
                primary_port: base_port + 12,
                http_port: Some(base_port + 13),
            }),
            secrets_dir: default_secrets_dir(),
            // `pgha up` generates a CA and the certificates.
            tls: crate::tls::TlsFile {
                enabled: true,
                ..Default::default()
            },
            members,
            backup: BackupFile::default(),
        }
    }
}
