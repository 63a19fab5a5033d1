//! `ProxySettings`: the proxy's config file (`proxy.toml`).
//!
//! Every field has a documented default except `monitor_password_file`.
//! Unknown keys are an error (a typo must not silently fall back to a
//! default). Hazard: the monitor password is read from its file at start and
//! kept in a [`Secret`] whose `Debug` prints `[SECRET]`.

use crate::topology::{Node, Topology};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The `proxy.toml` file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySettings {
    /// Read/write-splitting listener. Default `127.0.0.1:6432`; `""` disables it.
    #[serde(default = "d_rw")]
    pub listen_rw: String,
    /// Read-only listener (standbys, primary as fallback). Default `127.0.0.1:6433`; `""` disables.
    #[serde(default = "d_ro")]
    pub listen_ro: String,
    /// Always-the-primary listener. Default `127.0.0.1:6434`; `""` disables.
    #[serde(default = "d_primary")]
    pub listen_primary: String,
    /// Role the proxy uses to look up verifiers and poll node positions. Default `pgha_monitor`.
    #[serde(default = "d_monitor_user")]
    pub monitor_user: String,
    /// File holding the monitor role's password (first line). Required.
    pub monitor_password_file: PathBuf,
    /// Database the monitor connects to (holds `pgha.user_lookup`). Default `postgres`.
    #[serde(default = "d_monitor_db")]
    pub monitor_database: String,
    /// Database whose `pg_proc` feeds the function catalog. Default `postgres`.
    #[serde(default = "d_monitor_db")]
    pub catalog_database: String,
    /// Opening a backend connection (TCP + login). Default 5s.
    #[serde(default = "d_5s", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long a new transaction waits for a primary during failover. Default 30s.
    #[serde(default = "d_30s", with = "humantime_serde")]
    pub primary_wait_timeout: Duration,
    /// How long a new transaction waits while the proxy is paused. Default 60s,
    /// the time `pgha switchover` itself waits by default.
    #[serde(default = "d_60s", with = "humantime_serde")]
    pub pause_timeout: Duration,
    /// Position polling interval per node. Default 100ms.
    #[serde(default = "d_100ms", with = "humantime_serde")]
    pub monitor_interval: Duration,
    /// A standby whose last successful poll is older than this gets no reads. Default 1s.
    #[serde(default = "d_1s", with = "humantime_serde")]
    pub health_timeout: Duration,
    /// Function catalog refresh interval. Default 30s.
    #[serde(default = "d_30s", with = "humantime_serde")]
    pub catalog_refresh: Duration,
    /// Standbys lagging more than this many bytes of WAL get no reads. Default: no limit.
    #[serde(default)]
    pub max_lag_bytes: Option<u64>,
    /// What a read on a standby through the `rw` listener must see (see
    /// docs/routing.md): `linearizable` (default: every commit acknowledged
    /// to anyone before the read reached the proxy), `session` (the
    /// session's own writes and everything it has read before), `any`
    /// (whatever the standby has replayed, within `max_lag_bytes`).
    #[serde(default)]
    pub read_consistency: ReadConsistency,
    /// How long a read waits for a standby to replay up to its barrier
    /// before the primary serves it instead. Default 50ms.
    #[serde(default = "d_50ms", with = "humantime_serde")]
    pub read_wait_timeout: Duration,
    /// Largest client or server message, bytes. Default 1 GiB.
    #[serde(default = "d_max_msg")]
    pub max_message_bytes: usize,
    /// Largest startup packet, bytes. Default 10000.
    #[serde(default = "d_max_startup")]
    pub max_startup_bytes: usize,
    /// PEM certificate chain for TLS towards clients. With `tls_key_file`,
    /// SSLRequest is answered 'S' and TLS (rustls) follows; without both it is
    /// declined with 'N'.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) for `tls_cert_file`.
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// Threads that run client sessions, each a single-threaded runtime
    /// with the sessions assigned to it round-robin at accept (no work
    /// stealing: a session's wake-ups never cross threads). `0` runs
    /// sessions on the runtime that started the proxy. Default: the number
    /// of CPUs.
    #[serde(default = "d_session_threads")]
    pub session_threads: usize,
    /// From accept to the end of the client's login (SSL/GSS negotiation,
    /// TLS handshake, startup packet, password exchange, and the first
    /// backend login when it happens then); a client not done by then is
    /// closed without a message, as PostgreSQL does. Default 60s, like
    /// PostgreSQL's `authentication_timeout`.
    #[serde(default = "d_60s", with = "humantime_serde")]
    pub authentication_timeout: Duration,
    /// Most client connections at once, all listeners together (a client
    /// counts from accept until its socket closes). One more gets
    /// PostgreSQL's `FATAL 53300 sorry, too many clients already` after its
    /// startup packet. Default 10000.
    #[serde(default = "d_max_clients")]
    pub max_client_connections: usize,
    /// Largest client message after login (its length word), bytes: the
    /// most the proxy buffers of one client message. A longer Query, Parse,
    /// Bind, CopyData or FunctionCall is refused when its header arrives
    /// (`FATAL 54000`, naming this key) and the client is closed. Default
    /// 16 MiB; at most PostgreSQL's own limit, 1073741822.
    #[serde(default = "d_max_client_msg")]
    pub max_client_message_bytes: usize,
    /// How clients share backends (docs/proxy.md, "Pool modes"):
    /// `session` (default: a client keeps its backends until it leaves) or
    /// `transaction` (a backend goes back to its pool when a transaction,
    /// or a statement outside one, ends). Overridden per listener, database
    /// and user by the tables below (user first, then database, then
    /// listener).
    #[serde(default)]
    pub pool_mode: PoolMode,
    /// `pool_mode` per listener: keys `rw`, `ro`, `primary`.
    #[serde(default)]
    pub listener_pool_mode: std::collections::BTreeMap<String, PoolMode>,
    /// `pool_mode` per database name.
    #[serde(default)]
    pub database_pool_mode: std::collections::BTreeMap<String, PoolMode>,
    /// `pool_mode` per user name.
    #[serde(default)]
    pub user_pool_mode: std::collections::BTreeMap<String, PoolMode>,
    /// Transaction mode: most backends per pool (node, user, database and
    /// the other startup parameters), idle and in use. Default 50.
    #[serde(default = "d_pool_size")]
    pub pool_size: usize,
    /// Transaction mode: how long a transaction waits for a backend of a
    /// full pool before it fails with SQLSTATE 53300. Default 30s.
    #[serde(default = "d_30s", with = "humantime_serde")]
    pub pool_wait_timeout: Duration,
    /// Transaction mode: an idle pooled backend unused this long is closed.
    /// Default 10min.
    #[serde(default = "d_10min", with = "humantime_serde")]
    pub server_idle_timeout: Duration,
    /// Roles that may log in to the admin console (database
    /// `admin_database`: `SHOW POOLS`, `SHOW SERVERS`, `PAUSE`, `RESUME`).
    /// They authenticate like any role. Default: none (console closed).
    #[serde(default)]
    pub admin_users: Vec<String>,
    /// The admin console's database name. Default `pgha`.
    #[serde(default = "d_admin_db")]
    pub admin_database: String,
    /// Transaction mode: backends each pool keeps open (warm), idle or in
    /// use, once a client of the pool has logged in (the proxy logs in to
    /// backends with its clients' credentials only). At most `pool_size`.
    /// Default 0.
    #[serde(default)]
    pub min_pool_size: usize,
    /// Transaction mode: a pooled backend idle this long answers an empty
    /// query before it serves a client; one that does not (within
    /// `connect_timeout`) is closed and another taken. `0s`: check before
    /// every reuse. Default 30s (PgBouncer's `server_check_delay`).
    #[serde(default = "d_30s", with = "humantime_serde")]
    pub server_check_delay: Duration,
    /// Where the topology comes from.
    pub topology: TopologySettings,
    /// TLS towards clients (docs/proxy.md, "TLS"): `allow` (default: TLS
    /// for clients that ask, with `tls_cert_file`; plain text for the
    /// others), `require` (a client that does not ask is refused with
    /// SQLSTATE 28000; needs `tls_cert_file`), `disable` (every client in
    /// plain text, even with a certificate configured).
    #[serde(default)]
    pub tls: ClientTlsMode,
    /// TLS towards PostgreSQL, for the clients' backends and the monitor:
    /// `disable` (default: plain text), `require` (encrypted, the server's
    /// certificate not checked), `verify-full` (encrypted, the certificate
    /// must be signed by `backend_ca_file` and name the node's host).
    #[serde(default)]
    pub backend_tls: BackendTlsMode,
    /// PEM CA certificate(s) that sign the nodes' certificates; required by
    /// `backend_tls = "verify-full"`.
    #[serde(default)]
    pub backend_ca_file: Option<PathBuf>,
    /// HTTP listener for `GET /metrics` (Prometheus) and the status page,
    /// e.g. `127.0.0.1:6435`. Default `""`: off.
    #[serde(default)]
    pub http_listen: String,
}

/// `tls`: whether clients may, must or must not use TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientTlsMode {
    /// SSLRequest is declined ('N').
    Disable,
    /// SSLRequest is accepted when a certificate is configured.
    #[default]
    Allow,
    /// A StartupMessage without TLS first is refused (FATAL 28000).
    Require,
}

/// `backend_tls`: how the proxy's connections to PostgreSQL are protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendTlsMode {
    #[default]
    Disable,
    Require,
    VerifyFull,
}

/// How clients share backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolMode {
    /// A client keeps its backends (one per role it used) until it leaves.
    #[default]
    Session,
    /// A backend serves one transaction (or one statement outside a
    /// transaction) of a client, then goes back to its pool, unless the
    /// client holds session state that cannot move (it is then pinned).
    Transaction,
}

/// The guarantee a standby read on the `rw` listener gives (docs/routing.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadConsistency {
    /// A read sees every commit acknowledged, to any client and by any path,
    /// before the read reached the proxy (a read barrier on the primary's
    /// WAL position).
    #[default]
    Linearizable,
    /// Read-your-writes and monotonic reads within the session.
    Session,
    /// No ordering: any healthy standby within `max_lag_bytes`.
    Any,
}

/// Topology source.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TopologySettings {
    /// A fixed list (tests, or a cluster without etcd).
    Static {
        #[serde(default)]
        primary: Option<Node>,
        #[serde(default)]
        standbys: Vec<Node>,
    },
    /// Follow a pgha cluster in etcd (leader key, member records).
    Etcd {
        /// Cluster name (the key prefix is `<dcs.namespace>/<cluster>/`).
        cluster: String,
        /// etcd connection settings (the `[dcs]` table of the cluster config).
        #[serde(default)]
        dcs: pgha_dcs::DcsSettings,
    },
}

impl TopologySettings {
    /// The initial topology of a static source (empty for etcd).
    pub fn initial(&self) -> Topology {
        match self {
            TopologySettings::Static { primary, standbys } => Topology {
                primary: primary.clone(),
                standbys: standbys.clone(),
                generation: 1,
                paused: false,
                in_flight: Default::default(),
            },
            TopologySettings::Etcd { .. } => Topology::default(),
        }
    }
}

/// Why the config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parse {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid setting {key}: {problem}")]
    Invalid { key: &'static str, problem: String },
    #[error("TLS certificate or key {path}: {problem}")]
    Tls { path: PathBuf, problem: String },
}

/// A password read from a file.
#[derive(Clone)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[SECRET]")
    }
}

impl ProxySettings {
    /// The pool mode of a client of `listener` logged in as `user` to
    /// `database`: the user's entry, else the database's, else the
    /// listener's, else `pool_mode`.
    pub fn pool_mode_for(&self, listener: &str, user: &str, database: &str) -> PoolMode {
        self.user_pool_mode
            .get(user)
            .or_else(|| self.database_pool_mode.get(database))
            .or_else(|| self.listener_pool_mode.get(listener))
            .copied()
            .unwrap_or(self.pool_mode)
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let mut s: ProxySettings = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.into(),
            source,
        })?;
        if let Some(dir) = path.parent() {
            s.resolve_relative_paths(dir);
        }
        s.validate()?;
        Ok(s)
    }

    /// Takes every relative file path of the settings (secrets, TLS files,
    /// the etcd password file) relative to `dir`, the config file's own
    /// directory, as the cluster config does: the proxy then reads the same
    /// files whatever directory it was started from.
    pub fn resolve_relative_paths(&mut self, dir: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        };
        fix(&mut self.monitor_password_file);
        if let Some(p) = self.tls_cert_file.as_mut() {
            fix(p);
        }
        if let Some(p) = self.tls_key_file.as_mut() {
            fix(p);
        }
        if let Some(p) = self.backend_ca_file.as_mut() {
            fix(p);
        }
        if let TopologySettings::Etcd { dcs, .. } = &mut self.topology {
            if let Some(p) = dcs.password_file.as_mut() {
                fix(p);
            }
        }
    }

    /// Cross-field checks.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, problem: &str| {
            Err(ConfigError::Invalid {
                key,
                problem: problem.into(),
            })
        };
        if self.max_message_bytes < 1024 {
            return invalid("max_message_bytes", "must be at least 1024");
        }
        if self.max_startup_bytes < 64 {
            return invalid("max_startup_bytes", "must be at least 64");
        }
        if self.read_wait_timeout > Duration::from_secs(60) {
            return invalid(
                "read_wait_timeout",
                "at most 60s (a longer wait only delays reads the primary could serve)",
            );
        }
        if self.monitor_interval.is_zero() {
            return invalid("monitor_interval", "must be positive");
        }
        if self.listen_rw.is_empty() && self.listen_ro.is_empty() && self.listen_primary.is_empty()
        {
            return invalid("listen_rw", "at least one listener must be enabled");
        }
        if self.session_threads > 1024 {
            return invalid("session_threads", "at most 1024");
        }
        if self.authentication_timeout.is_zero() {
            return invalid("authentication_timeout", "must be positive");
        }
        if self.max_client_connections == 0 {
            return invalid("max_client_connections", "must be at least 1");
        }
        let pg_max = crate::codec::frontend::PG_LARGE_MESSAGE_LIMIT;
        if self.max_client_message_bytes < 1024 || self.max_client_message_bytes > pg_max {
            return invalid(
                "max_client_message_bytes",
                &format!("must be between 1024 and {pg_max} (PostgreSQL's own limit)"),
            );
        }
        if self.pool_size == 0 {
            return invalid("pool_size", "must be at least 1");
        }
        if self.min_pool_size > self.pool_size {
            return invalid(
                "min_pool_size",
                &format!(
                    "{} is more than pool_size ({}); lower it or raise pool_size",
                    self.min_pool_size, self.pool_size
                ),
            );
        }
        for key in self.listener_pool_mode.keys() {
            if !["rw", "ro", "primary"].contains(&key.as_str()) {
                return invalid(
                    "listener_pool_mode",
                    &format!("unknown listener {key:?} (the listeners are rw, ro and primary)"),
                );
            }
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return invalid(
                "tls_cert_file",
                "tls_cert_file and tls_key_file go together (set both or neither)",
            );
        }
        if self.tls == ClientTlsMode::Require && self.tls_cert_file.is_none() {
            return invalid(
                "tls",
                "\"require\" needs a certificate: set tls_cert_file and tls_key_file",
            );
        }
        if self.backend_tls == BackendTlsMode::VerifyFull && self.backend_ca_file.is_none() {
            return invalid(
                "backend_tls",
                "\"verify-full\" needs the CA that signs the nodes' certificates: set backend_ca_file",
            );
        }
        Ok(())
    }

    /// Reads the monitor password (first line of its file).
    pub fn monitor_password(&self) -> Result<Secret, ConfigError> {
        let path = &self.monitor_password_file;
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        Ok(Secret(text.lines().next().unwrap_or("").to_string()))
    }

    /// Codec limits.
    pub fn limits(&self) -> crate::codec::Limits {
        crate::codec::Limits {
            max_message: self.max_message_bytes,
            max_startup: self.max_startup_bytes,
            max_client_message: self.max_client_message_bytes,
        }
    }
}

fn d_rw() -> String {
    "127.0.0.1:6432".into()
}
fn d_ro() -> String {
    "127.0.0.1:6433".into()
}
fn d_primary() -> String {
    "127.0.0.1:6434".into()
}
fn d_monitor_user() -> String {
    "pgha_monitor".into()
}
fn d_monitor_db() -> String {
    "postgres".into()
}
fn d_5s() -> Duration {
    Duration::from_secs(5)
}
fn d_30s() -> Duration {
    Duration::from_secs(30)
}
fn d_60s() -> Duration {
    Duration::from_secs(60)
}
fn d_10min() -> Duration {
    Duration::from_secs(600)
}
fn d_admin_db() -> String {
    "pgha".into()
}
fn d_pool_size() -> usize {
    50
}
fn d_100ms() -> Duration {
    Duration::from_millis(100)
}
fn d_50ms() -> Duration {
    Duration::from_millis(50)
}
fn d_1s() -> Duration {
    Duration::from_secs(1)
}
fn d_max_msg() -> usize {
    1 << 30
}
fn d_max_startup() -> usize {
    10_000
}
fn d_max_clients() -> usize {
    10_000
}
fn d_max_client_msg() -> usize {
    16 << 20
}
fn d_session_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_config_gets_defaults() {
        let s: ProxySettings = toml::from_str(
            "monitor_password_file = \"/x\"\n[topology]\nkind = \"static\"\nprimary = { name = \"n1\", host = \"127.0.0.1\", port = 5432 }\n",
        )
        .unwrap();
        s.validate().unwrap();
        assert_eq!(s.listen_rw, "127.0.0.1:6432");
        assert_eq!(s.connect_timeout, Duration::from_secs(5));
        assert_eq!(s.topology.initial().primary.unwrap().port, 5432);
        assert_eq!(s.authentication_timeout, Duration::from_secs(60));
        assert_eq!(s.max_client_connections, 10_000);
        assert_eq!(s.max_client_message_bytes, 16 << 20);
    }

    #[test]
    fn limits_are_validated() {
        let base = "monitor_password_file = \"/x\"\n";
        let topo = "[topology]\nkind = \"static\"\n";
        for (line, key) in [
            ("authentication_timeout = \"0s\"", "authentication_timeout"),
            ("max_client_connections = 0", "max_client_connections"),
            ("min_pool_size = 51", "min_pool_size"),
            ("max_client_message_bytes = 100", "max_client_message_bytes"),
            (
                "max_client_message_bytes = 1073741823",
                "max_client_message_bytes",
            ),
        ] {
            let s: ProxySettings = toml::from_str(&format!("{base}{line}\n{topo}")).unwrap();
            let e = s.validate().unwrap_err().to_string();
            assert!(e.contains(key), "{line}: {e}");
        }
    }

    #[test]
    fn relative_paths_are_taken_from_the_config_files_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("proxy.toml");
        std::fs::write(
            &file,
            "monitor_password_file = \"secrets/monitor.password\"\n\
             tls_cert_file = \"/etc/pgha/proxy.crt\"\n\
             tls_key_file = \"tls/proxy.key\"\n\
             [topology]\nkind = \"etcd\"\ncluster = \"c\"\n\
             [topology.dcs]\nusername = \"u\"\npassword_file = \"secrets/etcd.password\"\n",
        )
        .unwrap();
        let s = ProxySettings::load(&file).unwrap();
        assert_eq!(
            s.monitor_password_file,
            dir.path().join("secrets/monitor.password")
        );
        assert_eq!(
            s.tls_cert_file.as_deref(),
            Some(Path::new("/etc/pgha/proxy.crt"))
        );
        assert_eq!(s.tls_key_file, Some(dir.path().join("tls/proxy.key")));
        match s.topology {
            TopologySettings::Etcd { dcs, .. } => assert_eq!(
                dcs.password_file,
                Some(dir.path().join("secrets/etcd.password"))
            ),
            other => panic!("expected an etcd topology, got {other:?}"),
        }
    }

    #[test]
    fn unknown_key_is_rejected() {
        let e = toml::from_str::<ProxySettings>(
            "monitor_password_file = \"/x\"\nlisten_rx = \"a\"\n[topology]\nkind = \"static\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("listen_rx"), "{e}");
    }
}
