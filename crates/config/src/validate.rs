//! From the file as written to a config later code can trust: absolute
//! paths, unique member names and ports, the archive outside every data
//! directory, no pass-through parameter that pgha must control.

use crate::file::{ArchiveCompression, ClusterFile, SynchronousCommit};
use crate::size::ByteSize;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// Parameters pgha sets itself; a user value would break replication,
/// archiving or failover, so the config refuses them.
pub const RESERVED_PARAMETERS: &[(&str, &str)] = &[
    ("port", "set members[].port instead"),
    ("listen_addresses", "pgha listens on members[].host"),
    (
        "unix_socket_directories",
        "pgha places the socket next to the data directory",
    ),
    ("data_directory", "set members[].data_dir instead"),
    ("hba_file", "pgha writes pg_hba.conf itself"),
    ("ident_file", "pgha writes the authentication files itself"),
    ("config_file", "pgha includes its own settings file"),
    ("wal_level", "replication needs wal_level = replica"),
    ("hot_standby", "standbys must serve reads"),
    ("archive_mode", "continuous archiving is always on"),
    ("archive_command", "pgha archives through `pgha wal-push`"),
    ("archive_library", "pgha archives through `pgha wal-push`"),
    ("restore_command", "pgha restores through `pgha wal-fetch`"),
    (
        "primary_conninfo",
        "pgha points standbys at the current primary",
    ),
    (
        "primary_slot_name",
        "each standby uses the slot named after it",
    ),
    (
        "recovery_target_timeline",
        "standbys must follow the latest timeline",
    ),
    (
        "synchronous_standby_names",
        "the leader manages the synchronous standby set",
    ),
    (
        "synchronous_commit",
        "set replication.synchronous_commit instead",
    ),
    ("wal_keep_size", "set replication.wal_keep_size instead"),
    (
        "max_slot_wal_keep_size",
        "set replication.max_slot_wal_keep_size instead",
    ),
    ("wal_log_hints", "pg_rewind needs wal_log_hints = on"),
    ("max_wal_senders", "pgha sizes it for the member count"),
    (
        "max_replication_slots",
        "pgha sizes it for the member count",
    ),
];

/// A bad config: what key, what value, why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The cause is in the message, so it is not chained as a `source` as
    /// well (`{e:#}` would print it twice).
    #[error("cannot read config file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("config is not valid TOML: {0}")]
    Syntax(String),
    /// Valid TOML of the wrong shape: `key` is the dotted path of the value
    /// that does not fit ("." for the top level).
    #[error("{}", schema_message(key, reason))]
    Schema { key: String, reason: String },
    #[error("{key} {value} {reason}")]
    Invalid {
        key: String,
        value: String,
        reason: String,
    },
    #[error("{path}: {inner}")]
    InFile {
        path: PathBuf,
        inner: Box<ConfigError>,
    },
}

fn schema_message(key: &str, reason: &str) -> String {
    if key == "." || key.is_empty() {
        reason.to_string()
    } else {
        format!("{key}: {reason}")
    }
}

/// The one rule for k, the synchronous quorum, wherever it is set (the
/// config file's `replication.sync_quorum`, `pgha edit-config --set
/// sync_quorum=K`): at least 1 and, when there are standbys, at most their
/// number. Returns the reason when `k` breaks it.
pub fn check_sync_quorum(k: u32, members: usize) -> Result<(), String> {
    let standbys = members.saturating_sub(1) as u32;
    if k == 0 || (standbys > 0 && k > standbys) {
        return Err(format!(
            "must be between 1 and the number of standbys ({standbys})"
        ));
    }
    Ok(())
}

impl ConfigError {
    fn invalid(
        key: impl Into<String>,
        value: impl std::fmt::Display,
        reason: impl Into<String>,
    ) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn in_file(self, path: &Path) -> Self {
        match self {
            e @ ConfigError::Read { .. } => e,
            other => ConfigError::InFile {
                path: path.to_path_buf(),
                inner: Box::new(other),
            },
        }
    }
}

/// One member, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub host: String,
    pub port: u16,
    /// Absolute.
    pub data_dir: PathBuf,
    /// The agent's REST API port on `host`.
    pub api_port: u16,
}

impl Member {
    /// Base URL of the member's agent REST API.
    pub fn api_url(&self) -> String {
        format!("http://{}:{}", self.host, self.api_port)
    }
}

/// The validated cluster config. All paths are absolute.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub name: String,
    /// The member a `pgha agent` drives, if the file names one.
    pub member: Option<String>,
    pub bin_dir: Option<PathBuf>,
    pub os_user: String,
    pub superuser: String,
    /// Pass-through parameters, rendered as PostgreSQL config values.
    pub parameters: BTreeMap<String, String>,
    pub sync_quorum: u32,
    pub synchronous_commit: SynchronousCommit,
    pub wal_keep_size: ByteSize,
    pub max_slot_wal_keep_size: ByteSize,
    pub replication_user: String,
    pub archive_dir: PathBuf,
    pub archive_compression: ArchiveCompression,
    pub secrets_dir: PathBuf,
    pub members: Vec<Member>,
    pub dcs: pgha_dcs::DcsSettings,
    pub ha: crate::file::HaFile,
    pub proxy: Option<crate::file::ProxyFile>,
    /// `[tls]` when enabled: where the CA and the certificates are.
    pub tls: Option<crate::tls::TlsConfig>,
    /// The file as parsed, to write back out (`pgha up` saves it).
    pub file: ClusterFile,
    /// `[archive] url`: the archive is on an object store (then `archive_dir`
    /// is unused by PostgreSQL's commands).
    pub archive_url: Option<String>,
    /// `[archive] s3_config`, absolute (with a url only).
    pub archive_s3_config: Option<PathBuf>,
}

impl ClusterConfig {
    /// Where the archive is: the object-store URL or the directory.
    pub fn archive_location(&self) -> String {
        match &self.archive_url {
            Some(u) => u.clone(),
            None => self.archive_dir.display().to_string(),
        }
    }
}

impl ClusterConfig {
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }

    /// The CA to verify members against, when `[tls]` is enabled.
    pub fn tls_ca(&self) -> Option<&Path> {
        self.tls.as_ref().map(|t| t.ca_file.as_path())
    }
}

pub(crate) fn validate(file: ClusterFile, base: &Path) -> Result<ClusterConfig, ConfigError> {
    check_identifier("name", &file.name)?;
    let members = validate_members(&file, base)?;
    if let Some(me) = &file.member {
        if !members.iter().any(|m| &m.name == me) {
            return Err(ConfigError::invalid(
                "member",
                quote(me),
                "is not one of members[].name",
            ));
        }
    }
    let k = file.replication.sync_quorum;
    check_sync_quorum(k, members.len())
        .map_err(|reason| ConfigError::invalid("replication.sync_quorum", k, reason))?;
    check_port_collisions(&file, &members)?;
    let archive_dir = absolute(base, &file.archive.dir);
    for (i, m) in members.iter().enumerate() {
        if archive_dir.starts_with(&m.data_dir) || m.data_dir.starts_with(&archive_dir) {
            return Err(ConfigError::invalid(
                "archive.dir",
                archive_dir.display(),
                format!(
                    "overlaps members[{i}].data_dir {}: the archive must live outside every data directory",
                    m.data_dir.display()
                ),
            ));
        }
    }
    let parameters = validate_parameters(&file)?;
    file.dcs.validate().map_err(|reason| {
        ConfigError::invalid("dcs", format!("{:?}", file.dcs.endpoints), reason)
    })?;
    validate_ha(&file.ha)?;
    let secrets_dir = absolute(base, &file.secrets_dir);
    let tls = crate::tls::validate(&file.tls, &members, &secrets_dir, |p| absolute(base, p))?;
    if tls.is_some() {
        check_tls_parameters(&file)?;
    }
    validate_backup(&file.backup)?;
    if let Some(url) = &file.archive.url {
        let ok = url
            .strip_prefix("s3://")
            .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'));
        if !ok {
            return Err(ConfigError::invalid(
                "archive.url",
                quote(url),
                "must be s3://bucket or s3://bucket/prefix",
            ));
        }
    }
    let archive_url = file.archive.url.clone();
    let archive_s3_config = archive_url.as_ref().map(|_| {
        let rel = file
            .archive
            .s3_config
            .clone()
            .unwrap_or_else(|| file.secrets_dir.join("s3.conf"));
        absolute(base, &rel)
    });
    Ok(ClusterConfig {
        name: file.name.clone(),
        member: file.member.clone(),
        bin_dir: file.postgres.bin_dir.as_ref().map(|p| absolute(base, p)),
        os_user: file
            .postgres
            .os_user
            .clone()
            .unwrap_or_else(|| "postgres".into()),
        superuser: file
            .postgres
            .superuser
            .clone()
            .unwrap_or_else(|| "postgres".into()),
        parameters,
        sync_quorum: k,
        synchronous_commit: file.replication.synchronous_commit,
        wal_keep_size: file.replication.wal_keep_size,
        max_slot_wal_keep_size: file.replication.max_slot_wal_keep_size,
        replication_user: file.replication.user.clone(),
        archive_dir,
        archive_compression: file.archive.compression,
        secrets_dir: absolute(base, &file.secrets_dir),
        members,
        dcs: pgha_dcs::DcsSettings {
            password_file: file.dcs.password_file.as_ref().map(|p| absolute(base, p)),
            ..file.dcs.clone()
        },
        ha: file.ha.clone(),
        proxy: file.proxy.clone(),
        tls,
        file,
        archive_url,
        archive_s3_config,
    })
}

/// With `[tls]` on, pgha sets PostgreSQL's `ssl*` file parameters itself.
fn check_tls_parameters(file: &ClusterFile) -> Result<(), ConfigError> {
    for (name, value) in &file.postgres.parameters {
        if crate::tls::TLS_PARAMETERS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(ConfigError::invalid(
                format!("postgres.parameters.{name}"),
                value,
                "is set by pgha when [tls] is enabled: set tls.ca_file or [tls.members.<name>] instead",
            ));
        }
    }
    Ok(())
}

fn validate_members(file: &ClusterFile, base: &Path) -> Result<Vec<Member>, ConfigError> {
    if file.members.is_empty() {
        return Err(ConfigError::invalid(
            "members",
            "[]",
            "must list at least one member",
        ));
    }
    let mut out: Vec<Member> = Vec::with_capacity(file.members.len());
    for (i, m) in file.members.iter().enumerate() {
        check_identifier(&format!("members[{i}].name"), &m.name)?;
        if m.port == 0 {
            return Err(ConfigError::invalid(
                format!("members[{i}].port"),
                0,
                "is not a usable port",
            ));
        }
        let data_dir = absolute(
            base,
            &m.data_dir
                .clone()
                .unwrap_or_else(|| Path::new(&m.name).join("data")),
        );
        for (j, prev) in out.iter().enumerate() {
            if prev.name == m.name {
                return Err(ConfigError::invalid(
                    format!("members[{i}].name"),
                    quote(&m.name),
                    format!("is already used by members[{j}]"),
                ));
            }
            if prev.port == m.port && prev.host == m.host {
                return Err(ConfigError::invalid(
                    format!("members[{i}].port"),
                    m.port,
                    format!("is already used by members[{j}]"),
                ));
            }
            if prev.data_dir.starts_with(&data_dir) || data_dir.starts_with(&prev.data_dir) {
                return Err(ConfigError::invalid(
                    format!("members[{i}].data_dir"),
                    data_dir.display(),
                    format!("overlaps members[{j}].data_dir {}", prev.data_dir.display()),
                ));
            }
        }
        let api_port = match m.api_port {
            Some(p) => p,
            None => m.port.checked_add(1000).ok_or_else(|| {
                ConfigError::invalid(
                    format!("members[{i}].port"),
                    m.port,
                    "leaves no default api_port (port + 1000): set api_port",
                )
            })?,
        };
        for (j, prev) in out.iter().enumerate() {
            if prev.host == m.host
                && (prev.api_port == api_port || prev.port == api_port || prev.api_port == m.port)
            {
                return Err(ConfigError::invalid(
                    format!("members[{i}].api_port"),
                    api_port,
                    format!("collides with a port of members[{j}]"),
                ));
            }
        }
        out.push(Member {
            name: m.name.clone(),
            host: m.host.clone(),
            port: m.port,
            data_dir,
            api_port,
        });
    }
    Ok(out)
}

/// Every port the cluster listens on: members' PostgreSQL and API ports,
/// the proxy's listeners, and etcd client endpoints, each with its host and
/// the key that sets it.
fn listening_ports(file: &ClusterFile, members: &[Member]) -> Vec<(String, String, u16)> {
    let mut out = Vec::new();
    for (i, m) in members.iter().enumerate() {
        out.push((format!("members[{i}].port"), m.host.clone(), m.port));
        out.push((format!("members[{i}].api_port"), m.host.clone(), m.api_port));
    }
    if let Some(p) = &file.proxy {
        for (key, port) in [
            ("proxy.rw_port", p.rw_port),
            ("proxy.ro_port", p.ro_port),
            ("proxy.primary_port", p.primary_port),
        ] {
            out.push((key.to_string(), p.host.clone(), port));
        }
        if let Some(port) = p.http_port {
            out.push(("proxy.http_port".to_string(), p.host.clone(), port));
        }
    }
    for (i, url) in file.dcs.endpoints.iter().enumerate() {
        if let Some((host, port)) = url_host_port(url) {
            out.push((format!("dcs.endpoints[{i}]"), host, port));
        }
    }
    out
}

/// `scheme://host:port[/...]` → (host, port).
fn url_host_port(url: &str) -> Option<(String, u16)> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let (host, port) = authority.rsplit_once(':')?;
    Some((
        host.trim_matches(['[', ']']).to_string(),
        port.parse().ok()?,
    ))
}

/// Two listeners collide when their ports are equal and they are certainly
/// on one machine: the same host, or loopback and every-address (a member on
/// another host may use the port a proxy listens on with 0.0.0.0).
fn hosts_overlap(a: &str, b: &str) -> bool {
    let any = |h: &str| matches!(h, "0.0.0.0" | "::" | "*");
    let local = |h: &str| any(h) || matches!(h, "127.0.0.1" | "localhost" | "::1");
    let norm = |h: &str| {
        if h == "localhost" {
            "127.0.0.1".to_string()
        } else {
            h.to_string()
        }
    };
    norm(a) == norm(b) || (any(a) && local(b)) || (any(b) && local(a))
}

/// No two ports of the cluster may be the same: a proxy port equal to a
/// member's port, or `rw_port == ro_port`, would otherwise pass and make
/// `pgha up` time out.
fn check_port_collisions(file: &ClusterFile, members: &[Member]) -> Result<(), ConfigError> {
    let ports = listening_ports(file, members);
    for (j, (key, host, port)) in ports.iter().enumerate() {
        if *port == 0 {
            return Err(ConfigError::invalid(key, 0, "is not a usable port"));
        }
        if let Some((prev, _, _)) = ports[..j]
            .iter()
            .find(|(_, h, p)| p == port && hosts_overlap(h, host))
        {
            return Err(ConfigError::invalid(
                key,
                port,
                format!("collides with {prev}: every port of the cluster must be different"),
            ));
        }
    }
    Ok(())
}

fn validate_ha(ha: &crate::file::HaFile) -> Result<(), ConfigError> {
    if !ha.ttl.as_millis().is_multiple_of(1000) || ha.ttl.as_secs() < 1 {
        return Err(ConfigError::invalid(
            "ha.ttl",
            humantime_serde::re::humantime::format_duration(ha.ttl),
            "must be a whole number of seconds, at least 1s (etcd leases are in seconds)",
        ));
    }
    if ha.loop_wait.is_zero() || ha.loop_wait * 2 >= ha.ttl {
        return Err(ConfigError::invalid(
            "ha.loop_wait",
            humantime_serde::re::humantime::format_duration(ha.loop_wait),
            "must be positive and less than half of ha.ttl, so the leader renews its lease in time",
        ));
    }
    Ok(())
}

fn validate_backup(b: &crate::file::BackupFile) -> Result<(), ConfigError> {
    if b.keep == Some(0) {
        return Err(ConfigError::invalid(
            "backup.keep",
            0,
            "must be at least 1: retention never removes the only restorable backup",
        ));
    }
    if let Some(every) = b.schedule {
        if every < Duration::from_secs(60) {
            return Err(ConfigError::invalid(
                "backup.schedule",
                humantime_serde::re::humantime::format_duration(every),
                "must be at least 1m (a base backup copies the whole data directory)",
            ));
        }
    }
    Ok(())
}

fn validate_parameters(file: &ClusterFile) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut out = BTreeMap::new();
    for (name, value) in &file.postgres.parameters {
        let key = format!("postgres.parameters.{name}");
        let lower = name.to_ascii_lowercase();
        if let Some((_, why)) = RESERVED_PARAMETERS.iter().find(|(p, _)| *p == lower) {
            return Err(ConfigError::invalid(
                key,
                value,
                format!("is controlled by pgha: {why}"),
            ));
        }
        if !lower
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            return Err(ConfigError::invalid(
                key,
                value,
                "is not a valid parameter name",
            ));
        }
        let rendered = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => if *b { "on" } else { "off" }.to_string(),
            _ => {
                return Err(ConfigError::invalid(
                    key,
                    value,
                    "must be a string, number or boolean",
                ));
            }
        };
        out.insert(lower, rendered);
    }
    Ok(out)
}

fn check_identifier(key: &str, value: &str) -> Result<(), ConfigError> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value.starts_with(|c: char| c.is_ascii_lowercase())
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            quote(value),
            "must start with a lower-case letter and hold only lower-case letters, digits and '_' (at most 63)",
        ))
    }
}

fn quote(s: &str) -> String {
    format!("{s:?}")
}

/// `path` made absolute against `base`, with `.` and `..` folded lexically.
fn absolute(base: &Path, path: &Path) -> PathBuf {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        let base = if base.is_absolute() {
            base.to_path_buf()
        } else {
            std::env::current_dir().unwrap_or_default().join(base)
        };
        base.join(path)
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::parse;
    use std::path::Path;

    fn err(text: &str) -> String {
        parse(text, Path::new("/srv/pgha")).unwrap_err().to_string()
    }

    const THREE: &str = r#"
[[members]]
name = "node1"
port = 5432
[[members]]
name = "node2"
port = 5433
[[members]]
name = "node3"
port = 5434
"#;

    #[test]
    fn defaults_reproduce_the_seed() {
        let c = parse(THREE, Path::new("/srv/pgha")).unwrap();
        assert_eq!(c.sync_quorum, 1);
        assert_eq!(c.synchronous_commit.as_str(), "on");
        assert_eq!(c.archive_dir, Path::new("/srv/pgha/archive"));
        assert_eq!(c.members[1].data_dir, Path::new("/srv/pgha/node2/data"));
        assert_eq!(c.os_user, "postgres");
    }

    #[test]
    fn duplicate_port_names_both_members() {
        let text = THREE.replace("5434", "5432");
        assert_eq!(
            err(&text),
            "members[2].port 5432 is already used by members[0]"
        );
    }

    #[test]
    fn duplicate_name_is_refused() {
        let text = THREE.replace("\"node3\"", "\"node1\"");
        assert_eq!(
            err(&text),
            "members[2].name \"node1\" is already used by members[0]"
        );
    }

    #[test]
    fn archive_inside_a_data_dir_is_refused() {
        let text = format!("[archive]\ndir = \"node1/data/archive\"\n{THREE}");
        let e = err(&text);
        assert!(
            e.starts_with("archive.dir /srv/pgha/node1/data/archive overlaps members[0].data_dir"),
            "{e}"
        );
    }

    #[test]
    fn reserved_parameter_says_why() {
        let text = format!("[postgres.parameters]\nsynchronous_standby_names = \"*\"\n{THREE}");
        let e = err(&text);
        assert!(
            e.contains("postgres.parameters.synchronous_standby_names"),
            "{e}"
        );
        assert!(e.contains("controlled by pgha"), "{e}");
    }

    #[test]
    fn pass_through_parameters_are_rendered() {
        let text = format!("[postgres.parameters]\nwork_mem = \"8MB\"\nmax_connections = 200\nfsync = true\n{THREE}");
        let c = parse(&text, Path::new("/x")).unwrap();
        assert_eq!(c.parameters["work_mem"], "8MB");
        assert_eq!(c.parameters["max_connections"], "200");
        assert_eq!(c.parameters["fsync"], "on");
    }

    #[test]
    fn unknown_key_is_an_error() {
        let e = err(&format!("nmae = \"x\"\n{THREE}"));
        assert!(e.contains("unknown field `nmae`"), "{e}");
    }

    #[test]
    fn quorum_larger_than_standbys_is_refused() {
        let e = err(&format!("[replication]\nsync_quorum = 3\n{THREE}"));
        assert_eq!(
            e,
            "replication.sync_quorum 3 must be between 1 and the number of standbys (2)"
        );
    }

    #[test]
    fn bad_member_name_is_refused() {
        let e = err(&THREE.replace("\"node2\"", "\"Node-2\""));
        assert!(
            e.starts_with("members[1].name \"Node-2\" must start with"),
            "{e}"
        );
    }

    #[test]
    fn bad_size_names_the_value() {
        let e = err(&format!("[replication]\nwal_keep_size = \"lots\"\n{THREE}"));
        assert!(e.contains("\"lots\" is not a size"), "{e}");
    }

    #[test]
    fn synchronous_commit_off_is_refused() {
        let e = err(&format!(
            "[replication]\nsynchronous_commit = \"off\"\n{THREE}"
        ));
        assert!(e.contains("unknown variant `off`"), "{e}");
    }

    /// Valid TOML of the wrong shape names the key and does not claim the
    /// text is not TOML.
    #[test]
    fn type_errors_name_the_key_and_are_not_syntax_errors() {
        for (text, key, why) in [
            (
                format!("[replication]\nsync_quorum = \"two\"\n{THREE}"),
                "replication.sync_quorum: ",
                "invalid type: string \"two\"",
            ),
            (
                THREE.replace("port = 5433", "port = \"5433\""),
                "members[1].port: ",
                "invalid type: string \"5433\"",
            ),
            (
                format!("[ha]\nttl = 2\n{THREE}"),
                "ha.ttl: ",
                "invalid type: integer `2`",
            ),
            (
                format!("[proxy]\nrw_port = 1\nro_port = 2\n{THREE}"),
                "proxy: ",
                "missing field `primary_port`",
            ),
        ] {
            let e = err(&text);
            assert!(e.starts_with(key), "{e}");
            assert!(e.contains(why), "{e}");
            assert!(!e.contains("not valid TOML"), "{e}");
        }
        let e = err(&format!("[replication\n{THREE}"));
        assert!(e.starts_with("config is not valid TOML"), "{e}");
    }

    /// Any two ports of the cluster that are equal on one host are refused,
    /// naming both keys.
    #[test]
    fn colliding_ports_name_both_keys() {
        let proxy = |rw: u16, ro: u16, primary: u16| {
            format!("[proxy]\nrw_port = {rw}\nro_port = {ro}\nprimary_port = {primary}\n{THREE}")
        };
        for (text, want) in [
            (
                proxy(6000, 6000, 6002),
                "proxy.ro_port 6000 collides with proxy.rw_port",
            ),
            (
                proxy(6000, 6001, 5433),
                "proxy.primary_port 5433 collides with members[1].port",
            ),
            (
                proxy(6000, 6432, 6002),
                "proxy.ro_port 6432 collides with members[0].api_port",
            ),
            (
                format!("[dcs]\nendpoints = [\"http://127.0.0.1:5434\"]\n{THREE}"),
                "dcs.endpoints[0] 5434 collides with members[2].port",
            ),
            (
                THREE.replace("port = 5432", "port = 5432\napi_port = 5432"),
                "members[0].api_port 5432 collides with members[0].port",
            ),
        ] {
            let e = err(&text);
            assert!(e.starts_with(want), "{e}");
        }
        let e = err(&format!(
            "[proxy]\nhost = \"0.0.0.0\"\nrw_port = 5432\nro_port = 6001\nprimary_port = 6002\n{THREE}"
        ));
        assert!(
            e.starts_with("proxy.rw_port 5432 collides with members[0].port"),
            "{e}"
        );
        // The same port on another host is fine.
        let text = format!(
            "[proxy]\nhost = \"10.0.0.9\"\nrw_port = 5432\nro_port = 5433\nprimary_port = 5434\n{THREE}"
        );
        parse(&text, Path::new("/srv/pgha")).unwrap();
    }

    /// The config file and `edit-config` share one rule for k.
    #[test]
    fn sync_quorum_rule_is_shared() {
        assert!(crate::check_sync_quorum(2, 3).is_ok());
        assert!(crate::check_sync_quorum(0, 3).is_err());
        assert_eq!(
            crate::check_sync_quorum(5, 3).unwrap_err(),
            "must be between 1 and the number of standbys (2)"
        );
        assert!(crate::check_sync_quorum(1, 1).is_ok());
    }
}
