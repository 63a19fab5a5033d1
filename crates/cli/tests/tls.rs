#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking
//! TLS in a dev cluster (`[tls] enabled = true`, as `pgha up` writes it for
//! a new dev cluster): `pgha up` generates a CA and the certificates; psql
//! with `sslmode=verify-full` and the generated CA reaches every member and
//! the proxy; the standbys stream over TLS (`pg_stat_ssl` of the WAL
//! senders).

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
    let out = psql(&cluster, &verified(&cluster, proxy.rw_port), "SELECT 1");
    assert!(out.status.success(), "proxy: {}", text(&out));

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
}
