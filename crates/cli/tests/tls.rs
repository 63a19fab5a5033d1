#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking
//! TLS in a dev cluster (`[tls] enabled = true`, as `pgha up` writes it for
//! a new dev cluster): `pgha up` generates a CA and the certificates; psql
//! with `sslmode=verify-full` and the generated CA reaches every member and
//! the proxy; the standbys stream over TLS (`pg_stat_ssl` of the WAL
//! senders); the proxy reaches PostgreSQL over TLS (`pg_stat_ssl` of its
//! backends); `tls = "require"` put into the dev proxy.toml survives `pgha
//! up` and refuses plain-text clients.

use pgha_testkit::cluster::TestCluster;
use std::path::{Path, PathBuf};
use std::process::Output;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_pgha"))
}

/// `psql -c sql` with a libpq connection string; stdout trimmed on success.
fn psql(cluster: &TestCluster, conninfo: &str, sql: &str) -> Output {
    std::process::Command::new("psql")
        .args([
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
            conninfo,
        ])
        .env("PGPASSWORD", &cluster.admin_password)
        .env_remove("PGSSLMODE")
        .output()
        .expect("run psql")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ca(cluster: &TestCluster) -> PathBuf {
    cluster.config.tls.as_ref().expect("[tls]").ca_file.clone()
}

/// verify-full against the generated CA: the certificate must be the CA's
/// and name the host dialled.
fn verified(cluster: &TestCluster, port: u16) -> String {
    format!(
        "host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=verify-full sslrootcert={}",
        ca(cluster).display()
    )
}

const SSL_IN_USE: &str = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";

#[tokio::test]
async fn a_dev_cluster_encrypts_every_connection() {
    let cluster = TestCluster::up(bin(), 2, "[tls]\nenabled = true").expect("pgha up");
    let tls = cluster.config.tls.clone().unwrap();
    // The CA key and every server key: owner only.
    for key in [
        &tls.ca_key_file,
        &tls.member("node1").unwrap().key_file,
        &tls.proxy.key_file,
    ] {
        assert_eq!(
            pgha_testkit::unprivileged::mode(key) & 0o777,
            0o600,
            "{}",
            key.display()
        );
    }

    for m in &cluster.config.members {
        let out = psql(&cluster, &verified(&cluster, m.port), SSL_IN_USE);
        assert!(out.status.success(), "{}: {}", m.name, text(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "t",
            "{}",
            m.name
        );
    }
    let proxy = cluster.config.proxy.clone().unwrap();
    // Through the proxy: the client's own backend connection is TLS too.
    for port in [proxy.rw_port, proxy.ro_port, proxy.primary_port] {
        let out = psql(&cluster, &verified(&cluster, port), SSL_IN_USE);
        assert!(out.status.success(), "proxy :{port}: {}", text(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "t",
            "proxy :{port}"
        );
    }

    // Another CA is refused: the server is verified, not just encrypted.
    let other = cluster.dir.path().join("other-ca.crt");
    let pem = pgha_tls::certs::Authority::generate("pgha").unwrap().pem();
    std::fs::write(&other, pem.cert).unwrap();
    let m1 = cluster.port("node1");
    let out = psql(
        &cluster,
        &format!(
            "host=127.0.0.1 port={m1} user=postgres dbname=postgres sslmode=verify-full sslrootcert={}",
            other.display()
        ),
        "SELECT 1",
    );
    assert!(
        !out.status.success(),
        "another CA must not verify: {}",
        text(&out)
    );

    // Replication: every standby's WAL sender runs over TLS.
    let leader = cluster.settled_leader();
    let client = cluster.connect(&leader).await.unwrap();
    let rows = client
        .query(
            "SELECT r.application_name, s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)",
            &[],
        )
        .await
        .unwrap();
    let streams: Vec<(String, bool)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(streams.len(), 1, "{streams:?}");
    assert!(streams.iter().all(|(_, ssl)| *ssl), "{streams:?}");
    // The proxy's monitor connections too.
    let monitors: Vec<bool> = client
        .query(
            "SELECT s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.application_name = 'pgha-proxy-monitor'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        !monitors.is_empty() && monitors.iter().all(|s| *s),
        "{monitors:?}"
    );

    // An operator's `tls = "require"` in the dev proxy.toml survives `up`.
    let proxy_toml = cluster.dir.path().join("proxy.toml");
    let edited = std::fs::read_to_string(&proxy_toml)
        .unwrap()
        .replace("tls = \"allow\"", "tls = \"require\"");
    assert!(edited.contains("tls = \"require\""), "{edited}");
    std::fs::write(&proxy_toml, edited).unwrap();
    restart_proxy(&cluster);
    let kept = std::fs::read_to_string(&proxy_toml).unwrap();
    assert!(kept.contains("tls = \"require\""), "{kept}");
    let plain = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=disable",
        proxy.rw_port
    );
    let out = psql(&cluster, &plain, "SELECT 1");
    assert!(!out.status.success(), "plain text must be refused");
    assert!(text(&out).contains("tls = \"require\""), "{}", text(&out));
    let out = psql(&cluster, &verified(&cluster, proxy.rw_port), "SELECT 1");
    assert!(out.status.success(), "{}", text(&out));
}

/// Stops the proxy (by the PID `pgha up` recorded) and runs `pgha up`
/// again, which starts it with a rewritten proxy.toml.
fn restart_proxy(cluster: &TestCluster) {
    let pid_file = cluster.dir.path().join("run").join("proxy.pid");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(pid);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    // Gone, or a zombie nobody reaped yet (its parent `pgha up` has exited).
    let gone = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next());
        matches!(state, None | Some("Z"))
    };
    pgha_testkit::wait_until(
        "the proxy to exit",
        std::time::Duration::from_secs(30),
        || gone().then_some(()),
    )
    .unwrap();
    let out = cluster.pgha(&["up"]);
    assert!(
        out.status.success(),
        "{}",
        pgha_testkit::cluster::describe(&out)
    );
}

/// `pgha tls init` makes the files of a config's `[tls]` once (for a
/// cluster on several hosts), keeps them on a second run, and refuses a
/// config without `[tls]`.
#[test]
fn tls_init_makes_the_certificates_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cluster.toml");
    let members = "[[members]]\nname = \"node1\"\nhost = \"10.0.0.1\"\nport = 5432\n\
                   [[members]]\nname = \"node2\"\nhost = \"10.0.0.2\"\nport = 5432\n";
    std::fs::write(&cfg, members).unwrap();
    let run = || {
        pgha_testkit::cluster::run_pgha(bin(), &["tls", "init", "--config", cfg.to_str().unwrap()])
    };
    let out = run();
    assert!(!out.status.success());
    assert!(text(&out).contains("[tls]"), "{}", text(&out));

    std::fs::write(&cfg, format!("[tls]\nenabled = true\n{members}")).unwrap();
    let out = run();
    assert!(out.status.success(), "{}", text(&out));
    let first = String::from_utf8_lossy(&out.stdout).into_owned();
    for f in [
        "ca.crt",
        "ca.key",
        "node1.crt",
        "node1.key",
        "node2.crt",
        "node2.key",
    ] {
        assert!(
            first.contains(&format!(
                "made     {}",
                dir.path().join("secrets").join(f).display()
            )),
            "{f}: {first}"
        );
    }
    let out = run();
    let second = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success() && !second.contains("made"), "{second}");
}
