//! Rendering of the two files pgha owns inside a data directory:
//!
//! - `pgha.conf`, included at the end of `postgresql.conf`, so the user's own
//!   settings stay in `postgresql.conf` and pgha's win where they overlap;
//! - `pg_hba.conf`, which pgha writes whole.
//!
//! Pure functions of their input, so every setting is unit-tested. The
//! values and their trade-offs are documented in docs/configuration.md.

use pgha_config::{ArchiveCompression, ClusterConfig, Member};
use pgha_core::{SyncSet, SyncStandbyNames};
use std::fmt::Write;
use std::path::Path;

/// The file pgha owns inside the data directory.
pub const PGHA_CONF: &str = "pgha.conf";
/// The line appended to postgresql.conf.
pub const INCLUDE_LINE: &str = "include_if_exists = 'pgha.conf'\t# added by pgha: keep last";

/// The seed's synchronous set: every member but `primary`, with the
/// configured quorum (asynchronous for a single-member cluster).
pub fn all_standbys(cluster: &ClusterConfig, primary: &str) -> SyncStandbyNames {
    let names: Vec<String> = cluster
        .members
        .iter()
        .filter(|m| m.name != primary)
        .map(|m| m.name.clone())
        .collect();
    if names.is_empty() {
        SyncStandbyNames::Async
    } else {
        let k = cluster.sync_quorum.min(names.len() as u32);
        SyncStandbyNames::Quorum(SyncSet::new(names, k))
    }
}

/// Everything `pgha.conf` depends on.
pub struct ConfInput<'a> {
    pub cluster: &'a ClusterConfig,
    pub member: &'a Member,
    /// Directory for the Unix socket (next to the data dir).
    pub socket_dir: &'a Path,
    /// The pgha binary that archive_command / restore_command run.
    pub pgha_bin: &'a Path,
    /// libpq passfile with the replication credentials.
    pub passfile: &'a Path,
    /// The primary a standby streams from; None on a primary.
    pub upstream: Option<&'a Member>,
    pub sync: &'a SyncStandbyNames,
}

/// `'value'` with embedded quotes doubled, as postgresql.conf wants.
pub fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// The contents of `pgha.conf`.
pub fn render_pgha_conf(input: &ConfInput<'_>) -> String {
    let c = input.cluster;
    let m = input.member;
    let members = c.members.len() as u32;
    let mut out = String::new();
    let mut set = |name: &str, value: String| {
        let _ = writeln!(out, "{name} = {value}");
    };
    set("listen_addresses", quote(&listen_address(&m.host)));
    set("port", m.port.to_string());
    set(
        "unix_socket_directories",
        quote(&input.socket_dir.display().to_string()),
    );
    set("wal_level", "replica".into());
    set("hot_standby", "on".into());
    set("wal_log_hints", "on".into());
    set("max_wal_senders", (members * 2 + 4).to_string());
    set("max_replication_slots", (members * 2 + 4).to_string());
    set("wal_keep_size", format!("'{}MB'", c.wal_keep_size.as_mb()));
    set(
        "max_slot_wal_keep_size",
        format!("'{}MB'", c.max_slot_wal_keep_size.as_mb()),
    );
    set("hot_standby_feedback", "on".into());
    set("max_standby_streaming_delay", "'30s'".into());
    set("max_standby_archive_delay", "'30s'".into());
    set("wal_receiver_status_interval", "'1s'".into());
    // How soon a standby tries streaming again after its upstream went away
    // (a PostgreSQL crash and restart in place on the primary, a promotion):
    // a synchronous commit on the restarted primary waits for this
    // reconnect: measured 100-180 ms after a switchover's promotion with
    // 100 ms. Each retry also runs restore_command once or twice (a
    // `pgha wal-fetch` of a few ms wall time, ~0 CPU for a missing
    // segment), only while the standby does not stream: 20 tries a second
    // while its upstream is down.
    set("wal_retrieve_retry_interval", "'50ms'".into());
    // After a crash PostgreSQL first makes the whole data directory durable
    // before redo: `fsync` opens and fsyncs every file (0.6 s for a small
    // cluster here, more on a busy disk), `syncfs` is one call per file
    // system with the same guarantee (Linux; errors are reported since
    // Linux 5.8). It decides much of the restart-in-place time.
    set("recovery_init_sync_method", "syncfs".into());
    set("synchronous_commit", quote(c.synchronous_commit.as_str()));
    set(
        "synchronous_standby_names",
        quote(&input.sync.to_postgres()),
    );
    set("archive_mode", "on".into());
    set("archive_timeout", "'60s'".into());
    set("archive_command", quote(&archive_command(input)));
    set("restore_command", quote(&restore_command(input)));
    set("recovery_target_timeline", "'latest'".into());
    set("password_encryption", "'scram-sha-256'".into());
    set("cluster_name", quote(&format!("{}/{}", c.name, m.name)));
    if let Some(pair) = c.tls.as_ref().and_then(|t| Some((t, t.member(&m.name)?))) {
        let (tls, cert) = pair;
        let path = |p: &Path| quote(&p.display().to_string());
        set("ssl", "on".into());
        set("ssl_cert_file", path(&cert.cert_file));
        set("ssl_key_file", path(&cert.key_file));
        set("ssl_ca_file", path(&tls.ca_file));
    }
    match input.upstream {
        Some(up) => {
            set("primary_conninfo", quote(&primary_conninfo(input, up)));
            set("primary_slot_name", quote(&m.name));
        }
        None => {
            set("primary_conninfo", "''".into());
            set("primary_slot_name", "''".into());
        }
    }
    let mut text = String::from("# Written by pgha; changes here are overwritten. Put your own settings in the\n# cluster config ([postgres.parameters]) or in postgresql.conf.\n");
    text.push_str(&out);
    if !c.parameters.is_empty() {
        text.push_str("\n# [postgres.parameters] from the cluster config\n");
        for (name, value) in &c.parameters {
            let _ = writeln!(text, "{name} = {}", quote(value));
        }
    }
    text
}

fn listen_address(host: &str) -> String {
    // A member listening on a wildcard would accept connections for other
    // members' addresses; listen where the cluster says it is, plus loopback
    // so local tools work.
    if host == "127.0.0.1" || host == "localhost" {
        host.to_string()
    } else {
        format!("{host},127.0.0.1")
    }
}

/// `--archive LOCATION` (plus the object store's settings file).
fn archive_args(input: &ConfInput<'_>) -> String {
    let c = input.cluster;
    let mut args = format!(
        "--archive {}",
        crate::shell::sh_quote(&c.archive_location())
    );
    if let Some(f) = &c.archive_s3_config {
        args.push_str(&format!(
            " --s3-config {}",
            crate::shell::sh_quote(&f.display().to_string())
        ));
    }
    args
}

fn archive_command(input: &ConfInput<'_>) -> String {
    let mut cmd = format!(
        "{} wal-push {}",
        crate::shell::sh_quote(&input.pgha_bin.display().to_string()),
        archive_args(input),
    );
    if input.cluster.archive_compression == ArchiveCompression::Zstd {
        cmd.push_str(" --compress zstd");
    }
    cmd.push_str(" %p");
    cmd
}

fn restore_command(input: &ConfInput<'_>) -> String {
    format!(
        "{} wal-fetch {} %f %p",
        crate::shell::sh_quote(&input.pgha_bin.display().to_string()),
        archive_args(input),
    )
}

/// libpq conninfo a standby uses to stream from `upstream`.
pub fn primary_conninfo(input: &ConfInput<'_>, upstream: &Member) -> String {
    format!(
        "host={} port={} user={} passfile={} application_name={} {} connect_timeout=2 keepalives_idle=5 keepalives_interval=2 keepalives_count=3",
        upstream.host,
        upstream.port,
        input.cluster.replication_user,
        conninfo_value(&input.passfile.display().to_string()),
        input.member.name,
        sslmode(input.cluster.tls_ca()),
    )
}

/// libpq's TLS settings for pgha's connections between members: the
/// server verified against the cluster's CA and its host name with `[tls]`,
/// plain text without.
pub fn sslmode(ca_file: Option<&Path>) -> String {
    match ca_file {
        Some(ca) => format!(
            "sslmode=verify-full sslrootcert={}",
            conninfo_value(&ca.display().to_string())
        ),
        None => "sslmode=disable".into(),
    }
}

fn conninfo_value(v: &str) -> String {
    if v.chars()
        .any(|c| c.is_whitespace() || c == '\'' || c == '\\')
    {
        format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
    } else {
        v.to_string()
    }
}

/// The contents of `pg_hba.conf`: passwords (SCRAM) everywhere, replication
/// only for the replication role from members' addresses, no `trust`.
///
/// With `[tls]`, a connection that leaves the host must be TLS (`hostssl`);
/// loopback connections may stay plain (`host`): they never cross a
/// network, and local tools keep working without the CA.
pub fn render_hba(cluster: &ClusterConfig) -> String {
    const LOOPBACK: [&str; 2] = ["127.0.0.1/32", "::1/128"];
    let tls = cluster.tls.is_some();
    let kind = |addr: &str| {
        if tls && !LOOPBACK.contains(&addr) {
            "hostssl"
        } else {
            "host"
        }
    };
    let mut out = String::from("# Written by pgha; changes here are overwritten.\n");
    out.push_str("# TYPE  DATABASE     USER         ADDRESS          METHOD\n");
    out.push_str("local   all          all                           scram-sha-256\n");
    let mut hosts: Vec<String> = LOOPBACK.iter().map(|s| s.to_string()).collect();
    for m in &cluster.members {
        let addr = hba_address(&m.host);
        if !hosts.contains(&addr) {
            hosts.push(addr);
        }
    }
    for addr in &hosts {
        let _ = writeln!(
            out,
            "{:<7} replication  {:<12} {:<16} scram-sha-256",
            kind(addr),
            cluster.replication_user,
            addr
        );
    }
    if tls {
        for addr in LOOPBACK {
            let _ = writeln!(
                out,
                "host    all          all          {addr:<16} scram-sha-256"
            );
        }
    }
    for addr in ["0.0.0.0/0", "::/0"] {
        let _ = writeln!(
            out,
            "{:<7} all          all          {addr:<16} scram-sha-256",
            kind(addr)
        );
    }
    out
}

fn hba_address(host: &str) -> String {
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(a)) => format!("{a}/32"),
        Ok(std::net::IpAddr::V6(a)) => format!("{a}/128"),
        Err(_) if host == "localhost" => "127.0.0.1/32".into(),
        Err(_) => host.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn cluster(extra: &str) -> ClusterConfig {
        let text = format!(
            "{extra}\n[[members]]\nname = \"node1\"\nport = 5432\n[[members]]\nname = \"node2\"\nport = 5433\n[[members]]\nname = \"node3\"\nport = 5434\n"
        );
        pgha_config::parse(&text, Path::new("/srv/pgha")).unwrap()
    }

    fn render(c: &ClusterConfig, member: usize, upstream: Option<usize>) -> String {
        let sync = all_standbys(c, "node1");
        render_pgha_conf(&ConfInput {
            cluster: c,
            member: &c.members[member],
            socket_dir: Path::new("/srv/pgha/node1"),
            pgha_bin: Path::new("/usr/bin/pgha"),
            passfile: Path::new("/srv/pgha/secrets/pgpass"),
            upstream: upstream.map(|i| &c.members[i]),
            sync: &sync,
        })
    }

    #[test]
    fn seed_sync_names_are_any_one_of_the_standbys() {
        let c = cluster("");
        assert_eq!(
            all_standbys(&c, "node1").to_postgres(),
            r#"ANY 1 ("node2", "node3")"#
        );
        let conf = render(&c, 0, None);
        assert!(
            conf.contains(r#"synchronous_standby_names = 'ANY 1 ("node2", "node3")'"#),
            "{conf}"
        );
        assert!(conf.contains("synchronous_commit = 'on'"));
        assert!(conf.contains("wal_log_hints = on"));
        assert!(conf.contains("archive_mode = on"));
        assert!(conf
            .contains("archive_command = '/usr/bin/pgha wal-push --archive /srv/pgha/archive %p'"));
        assert!(conf.contains(
            "restore_command = '/usr/bin/pgha wal-fetch --archive /srv/pgha/archive %f %p'"
        ));
        assert!(conf.contains("max_slot_wal_keep_size = '2048MB'"));
        assert!(conf.contains("primary_conninfo = ''"));
    }

    #[test]
    fn standby_streams_through_its_slot_with_its_name() {
        let c = cluster("");
        let conf = render(&c, 1, Some(0));
        assert!(conf.contains("primary_slot_name = 'node2'"), "{conf}");
        assert!(conf.contains("application_name=node2"), "{conf}");
        assert!(
            conf.contains(
                "host=127.0.0.1 port=5432 user=replicator passfile=/srv/pgha/secrets/pgpass"
            ),
            "{conf}"
        );
        assert!(
            !conf.contains("password="),
            "no password in config files: {conf}"
        );
        assert!(conf.contains("recovery_target_timeline = 'latest'"));
    }

    #[test]
    fn pass_through_parameters_come_last_and_quoted() {
        let c = cluster("[postgres.parameters]\nwork_mem = \"8MB\"\nlog_line_prefix = \"%m 'x' \"");
        let conf = render(&c, 0, None);
        assert!(conf.ends_with("work_mem = '8MB'\n"), "{conf}");
        assert!(conf.contains("log_line_prefix = '%m ''x'' '"), "{conf}");
    }

    #[test]
    fn zstd_archive_adds_the_flag() {
        let c = cluster("[archive]\ncompression = \"zstd\"");
        assert!(render(&c, 0, None).contains("--compress zstd %p"));
    }

    #[test]
    fn hba_has_no_trust_and_limits_replication_to_the_role() {
        let c = cluster("");
        let hba = render_hba(&c);
        assert!(!hba.contains("trust"), "{hba}");
        for line in hba.lines().filter(|l| l.contains("replication")) {
            assert!(line.contains("replicator"), "{line}");
            assert!(line.ends_with("scram-sha-256"), "{line}");
        }
    }

    #[test]
    fn tls_turns_ssl_on_and_verifies_the_upstream() {
        let c = cluster("[tls]\nenabled = true");
        let conf = render(&c, 1, Some(0));
        assert!(conf.contains("ssl = on"), "{conf}");
        assert!(
            conf.contains("ssl_cert_file = '/srv/pgha/secrets/node2.crt'"),
            "{conf}"
        );
        assert!(conf.contains("ssl_key_file = '/srv/pgha/secrets/node2.key'"));
        assert!(conf.contains("ssl_ca_file = '/srv/pgha/secrets/ca.crt'"));
        assert!(
            conf.contains("sslmode=verify-full sslrootcert=/srv/pgha/secrets/ca.crt"),
            "{conf}"
        );
        let plain = render(&cluster(""), 1, Some(0));
        assert!(plain.contains("sslmode=disable"), "{plain}");
        assert!(!plain.contains("ssl = on"), "{plain}");
    }

    /// With TLS, what leaves the host is `hostssl`; loopback stays `host`.
    #[test]
    fn tls_hba_requires_tls_off_the_host() {
        let text = "[tls]\nenabled = true\n[[members]]\nname = \"node1\"\nhost = \"10.0.0.1\"\nport = 5432\n[[members]]\nname = \"node2\"\nhost = \"10.0.0.2\"\nport = 5432\n";
        let c = pgha_config::parse(text, Path::new("/srv/pgha")).unwrap();
        let hba = render_hba(&c);
        for line in hba.lines().filter(|l| l.starts_with("host")) {
            let local = line.contains("127.0.0.1/32") || line.contains("::1/128");
            let first = line.split_whitespace().next().unwrap();
            assert_eq!(first, if local { "host" } else { "hostssl" }, "{hba}");
        }
        assert!(
            hba.contains("hostssl replication  replicator   10.0.0.2/32"),
            "{hba}"
        );
        assert!(
            hba.contains("hostssl all          all          0.0.0.0/0"),
            "{hba}"
        );
        let plain = render_hba(&cluster(""));
        assert!(!plain.contains("hostssl"), "{plain}");
    }

    #[test]
    fn async_renders_empty() {
        assert_eq!(SyncStandbyNames::Async.to_postgres(), "");
    }
}
