//! The archive on an S3-compatible object store: a real dev cluster
//! (two members, PostgreSQL 15, etcd) whose `[archive] url` is a bucket on moto's
//! standalone S3 server from PyPI (installed by scripts/install-deps),
//! started on a free loopback port by this test and stopped by PID. WAL is
//! pushed there by PostgreSQL's archive_command, a backup is uploaded, a
//! restore downloads it and fetches the WAL back, a segment deleted from the
//! bucket makes `--latest` fail naming it, `pgha up --from-backup s3://...`
//! makes a new cluster from the bucket alone, and retention removes the
//! older backup from the bucket.
//!
//! Hazards: moto keeps everything in memory and checks no credentials; the
//! S3 settings file lives in a fresh directory of its own (mode 0755, so
//! PostgreSQL's OS user can read it), never in the system temp dir itself.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking

use pgha_testkit::cluster::{describe, kill_postmaster, run_pgha, TestCluster};
use pgha_testkit::{free_port, wait_until};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BUCKET: &str = "pgha-test";

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_pgha"))
}

fn moto_server() -> PathBuf {
    let base = std::env::var_os("PGHA_TEST_DRIVERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/pgha-test-drivers"));
    let path = base.join("moto/bin/moto_server");
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-deps (it installs moto's S3 server from PyPI)",
        path.display()
    );
    path
}

/// moto's S3 server on a free loopback port; killed by PID when dropped.
struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    fn start() -> Moto {
        let port = free_port();
        let child = Command::new(moto_server())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let moto = Moto { child, port };
        wait_until("moto listening", Duration::from_secs(60), || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        })
        .unwrap();
        moto
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// One plain HTTP request (moto checks no signatures); the status code.
    fn request(&self, method: &str, path: &str) -> u16 {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        // HTTP/1.0: the server closes the connection after its answer.
        write!(
            s,
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\n\r\n",
            self.port
        )
        .unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let out = String::from_utf8_lossy(&out);
        out.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }
}

impl Moto {
    /// Delete one object with boto3 from moto's own venv (a signed request).
    fn delete(&self, key: &str) {
        let python = moto_server().with_file_name("python");
        let out = Command::new(python)
            .arg("-c")
            .arg(format!(
                "import boto3; boto3.client('s3', endpoint_url='{}', region_name='us-east-1', \
                 aws_access_key_id='test', aws_secret_access_key='test')\
                 .delete_object(Bucket='{BUCKET}', Key='{key}')",
                self.endpoint()
            ))
            .output()
            .expect("run boto3");
        assert!(
            out.status.success(),
            "delete {key}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Restored {
    data: PathBuf,
    port: u16,
}

impl Drop for Restored {
    fn drop(&mut self) {
        kill_postmaster(&self.data);
    }
}

/// `pgha restore --latest` into `label` under the cluster directory.
fn restore_latest(c: &TestCluster, label: &str) -> (Restored, std::process::Output) {
    let r = Restored {
        data: c.dir.path().join(label),
        port: free_port(),
    };
    let out = c.pgha(&[
        "restore",
        "--to",
        &r.data.display().to_string(),
        "--port",
        &r.port.to_string(),
        "--latest",
    ]);
    (r, out)
}

async fn count(port: u16, c: &TestCluster, sql: &str) -> i64 {
    let db = pgha_postgres::probe::connect(
        "127.0.0.1",
        port,
        &c.config.superuser,
        &c.admin_password,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    db.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn wal_and_backups_on_an_s3_compatible_store() {
    let moto = Moto::start();
    assert_eq!(
        moto.request("PUT", &format!("/{BUCKET}")),
        200,
        "create bucket"
    );
    let settings_dir = tempfile::Builder::new()
        .prefix("pgha-s3-settings")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(settings_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let settings = settings_dir.path().join("s3.conf");
    std::fs::write(
        &settings,
        format!(
            "endpoint = {}\nregion = us-east-1\naccess_key_id = test\nsecret_access_key = test\n",
            moto.endpoint()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&settings, std::fs::Permissions::from_mode(0o644)).unwrap();
    let extra = format!(
        "[archive]\nurl = \"s3://{BUCKET}/c1\"\ns3_config = \"{}\"\n[backup]\nkeep = 1\n",
        settings.display()
    );
    let c = TestCluster::up(bin(), 2, &extra).expect("cluster");
    let primary = c.connect("node1").await.unwrap();
    primary
        .batch_execute("CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 1000)")
        .await
        .unwrap();

    let out = c.pgha(&["backup"]);
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("uploading to s3://pgha-test/c1"), "{text}");
    let list = |c: &TestCluster| -> serde_json::Value {
        let out = c.pgha(&["backup", "list", "--json"]);
        assert!(out.status.success(), "{}", describe(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let first = list(&c);
    assert_eq!(first.as_array().unwrap().len(), 1, "{first}");
    assert_eq!(first[0]["state"], "verified");
    let first_id = first[0]["id"].as_str().unwrap().to_string();

    // One backup at a time in the cluster: a held lock refuses another.
    {
        use pgha_dcs::Dcs;
        let dcs = pgha_dcs::EtcdDcs::new(c.config.dcs.clone()).unwrap();
        let keys = pgha_dcs::ClusterKeys::new(&c.config.dcs.namespace, &c.config.name).unwrap();
        let key = format!("{}backup-lock", keys.prefix());
        assert!(dcs
            .create_if_absent(&key, b"pid 1 on test", None)
            .await
            .unwrap());
        let out = c.pgha(&["backup"]);
        assert!(!out.status.success(), "{}", describe(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("another backup is running (pid 1 on test)"),
            "{err}"
        );
        assert!(dcs.delete(&key).await.unwrap());
    }

    // More rows, archived through archive_command into the bucket.
    primary
        .batch_execute("INSERT INTO t SELECT generate_series(1001, 2000)")
        .await
        .unwrap();
    let seg: String = primary
        .query_one("SELECT pg_walfile_name(pg_current_wal_lsn())", &[])
        .await
        .unwrap()
        .get(0);
    primary
        .execute("SELECT pg_switch_wal()", &[])
        .await
        .unwrap();
    let url = format!("s3://{BUCKET}/c1");
    let settings_s = settings.display().to_string();
    wait_until("segment in the bucket", Duration::from_secs(60), || {
        let out = run_pgha(
            bin(),
            &[
                "archive",
                "list",
                "--archive",
                &url,
                "--s3-config",
                &settings_s,
                "--verify",
            ],
        );
        (out.status.success() && String::from_utf8_lossy(&out.stdout).contains(&seg)).then_some(())
    })
    .unwrap();

    // Restore from the bucket: every row.
    {
        let (r, out) = restore_latest(&c, "restore-s3");
        assert!(out.status.success(), "{}", describe(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains("downloading backup"));
        assert_eq!(count(r.port, &c, "SELECT count(*) FROM t").await, 2000);
    }

    // A new HA cluster from the bucket alone (`up --from-backup s3://...`),
    // with an archive of its own under another prefix: every row.
    {
        let extra = format!(
            "[archive]\nurl = \"s3://{BUCKET}/c2\"\ns3_config = \"{}\"\n",
            settings.display()
        );
        let new = TestCluster::up_with(bin(), 1, &extra, &["--from-backup", &url, "--latest"])
            .expect("a cluster from the bucket");
        let proxy = new.config.proxy.as_ref().unwrap();
        assert_eq!(
            count(proxy.rw_port, &new, "SELECT count(*) FROM t").await,
            2000
        );
        // Its own archive received the new timeline's history.
        wait_until("history in the new prefix", Duration::from_secs(30), || {
            let out = run_pgha(
                bin(),
                &[
                    "archive",
                    "list",
                    "--archive",
                    &format!("s3://{BUCKET}/c2"),
                    "--s3-config",
                    &settings_s,
                ],
            );
            String::from_utf8_lossy(&out.stdout)
                .contains("00000002.history")
                .then_some(())
        })
        .unwrap();
    }

    // A segment deleted from the bucket: --latest names it and stops.
    moto.delete(&format!("c1/{seg}"));
    {
        let (_restored, out) = restore_latest(&c, "restore-s3-hole");
        assert!(!out.status.success(), "{}", describe(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&seg) && err.contains("missing"), "{err}");
    }

    // A second backup: keep = 1 removes the first from the bucket.
    let out = c.pgha(&["backup"]);
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("deleted backup {first_id}")),
        "{text}"
    );
    let after = list(&c);
    assert_eq!(after.as_array().unwrap().len(), 1, "{after}");
    assert_ne!(after[0]["id"], first_id.as_str());
}
