//! Nobody but the cluster controls the cluster. Against a real etcd with
//! authentication turned on by `pgha etcd-auth` (no PostgreSQL: fast):
//! anonymous and wrong-password writes are refused (etcdctl), root with the
//! secrets controls the cluster, and the OS user `nobody` cannot pause,
//! switch over, fail over or edit the config, neither with the cluster's
//! config (unreadable) nor with a config of its own (etcd refuses it), and
//! the cluster is left as it was. Then a dev cluster from `pgha up`:
//! agents, proxy and CLI work with the credentials, its files are owner
//! and group only, and `nobody` cannot pause it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking

use pgha_core::DynamicConfig;
use pgha_dcs::{ClusterKeys, Dcs, DcsSettings, EtcdDcs};
use pgha_testkit::cluster::{describe, run_pgha, TestCluster};
use pgha_testkit::etcd::EtcdGuard;
use pgha_testkit::free_port;
use pgha_testkit::unprivileged::{mode, open_to_all, Unprivileged};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_pgha"))
}

/// A cluster config on "a real host" with etcd credentials: the directory
/// open to everyone (like /etc/pgha), the config 0640, the secrets 0700.
struct Fixture {
    dir: tempfile::TempDir,
    etcd_url: String,
}

impl Fixture {
    fn new(etcd_url: &str) -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        open_to_all(dir.path(), 0o755).expect("chmod");
        std::fs::write(dir.path().join("cluster.toml"), config(etcd_url, true)).expect("write");
        open_to_all(&dir.path().join("cluster.toml"), 0o640).expect("chmod");
        Fixture {
            dir,
            etcd_url: etcd_url.to_string(),
        }
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("cluster.toml")
    }

    fn secret(&self, name: &str) -> PathBuf {
        self.dir.path().join("secrets").join(name)
    }

    fn pgha(&self, args: &[&str]) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        let cfg = self.config_path().display().to_string();
        all.extend(["--config", cfg.as_str()]);
        run_pgha(bin(), &all)
    }

    /// A client with the cluster user's password from the secrets.
    fn dcs(&self) -> EtcdDcs {
        let settings = DcsSettings {
            request_timeout: Duration::from_secs(10),
            username: Some("pgha".into()),
            password_file: Some(self.secret("etcd.password")),
            ..DcsSettings::with_endpoints([self.etcd_url.clone()])
        };
        EtcdDcs::new(settings).expect("client")
    }
}

/// The cluster config (`auth`: with the etcd user and password file).
fn config(etcd_url: &str, auth: bool) -> String {
    let mut text = format!("name = \"vt\"\n[dcs]\nendpoints = [\"{etcd_url}\"]\n");
    if auth {
        text.push_str("username = \"pgha\"\npassword_file = \"secrets/etcd.password\"\n");
    }
    for i in 1..=3 {
        text.push_str(&format!(
            "[[members]]\nname = \"node{i}\"\nport = {}\napi_port = {}\n",
            free_port(),
            free_port()
        ));
    }
    text
}

fn etcdctl(url: &str, args: &[&str]) -> Output {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={url}"))
        .arg("--dial-timeout=5s")
        .args(args)
        .output()
        .expect("run etcdctl (Debian package etcd-client)")
}

/// Everything the control verbs write, as it stands in etcd.
async fn cluster_state(f: &Fixture) -> (Option<DynamicConfig>, bool, bool) {
    let dcs = f.dcs();
    let keys = ClusterKeys::new("/pgha", "vt").expect("keys");
    let config = dcs
        .get(&keys.config())
        .await
        .expect("get /config")
        .kv
        .map(|kv| serde_json::from_slice(&kv.value).expect("config JSON"));
    let switchover = dcs.get(&keys.switchover()).await.expect("get").kv.is_some();
    let failover = dcs.get(&keys.failover()).await.expect("get").kv.is_some();
    (config, switchover, failover)
}

/// The verbs that change the cluster, each with what must not happen.
const CONTROL: [&[&str]; 4] = [
    &["pause"],
    &["switchover", "--to", "node2", "--wait", "0"],
    &["failover", "--to", "node2", "--wait", "0"],
    &["edit-config", "--set", "max_lag_on_failover=1"],
];

#[tokio::test(flavor = "multi_thread")]
async fn only_holders_of_the_secrets_control_the_cluster() {
    let etcd = tokio::task::spawn_blocking(EtcdGuard::start)
        .await
        .expect("join")
        .expect("etcd");
    let url = etcd.client_url.clone();
    let f = Fixture::new(&url);

    // Turn authentication on; the passwords are generated, owner-only.
    let out = tokio::task::block_in_place(|| f.pgha(&["etcd-auth"]));
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("etcd authentication enabled"),
        "{}",
        describe(&out)
    );
    assert_eq!(mode(&f.dir.path().join("secrets")), 0o700);
    for name in ["etcd.password", "etcd-root.password"] {
        assert_eq!(mode(&f.secret(name)), 0o600, "{name}");
    }
    // Again: converges, changes nothing.
    let out = tokio::task::block_in_place(|| f.pgha(&["etcd-auth"]));
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("already enabled"),
        "{}",
        describe(&out)
    );

    // Anonymous and wrong-password writes are refused by etcd itself.
    let switchover = r#"{"from":"node1","to":"node2"}"#;
    let out = etcdctl(&url, &["put", "/pgha/vt/switchover", switchover]);
    assert!(!out.status.success(), "anonymous put: {}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("user name is empty"),
        "{}",
        describe(&out)
    );
    let out = etcdctl(
        &url,
        &[
            "--user=pgha:wrong",
            "put",
            "/pgha/vt/switchover",
            switchover,
        ],
    );
    assert!(!out.status.success(), "wrong password: {}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("authentication failed"),
        "{}",
        describe(&out)
    );
    let before = cluster_state(&f).await;
    assert_eq!(before, (None, false, false), "a refused write landed");

    // Root, who can read the secrets, controls the cluster.
    let out = tokio::task::block_in_place(|| f.pgha(&["pause"]));
    assert!(out.status.success(), "{}", describe(&out));
    let out = tokio::task::block_in_place(|| f.pgha(&["resume"]));
    assert!(out.status.success(), "{}", describe(&out));
    let before = cluster_state(&f).await;
    assert_eq!(before.0.as_ref().map(|c| c.paused), Some(false));

    let Some(nobody) = Unprivileged::new(bin(), "only_holders_of_the_secrets_control_the_cluster")
        .expect("unprivileged user")
    else {
        return;
    };
    // With the cluster's config: it cannot even read it.
    let cfg = f.config_path().display().to_string();
    for verb in CONTROL {
        let mut args = verb.to_vec();
        args.extend(["--config", cfg.as_str()]);
        let out = tokio::task::block_in_place(|| nobody.pgha(&args));
        let err = describe(&out);
        assert_eq!(out.status.code(), Some(1), "{verb:?} as nobody: {err}");
        assert!(
            err.contains(&format!(
                "cannot read {cfg}: permission denied; run as root"
            )),
            "{verb:?} as nobody: {err}"
        );
    }
    // With a config of its own naming the etcd user and the password file:
    // the file is the cluster owner's alone.
    let own = nobody.dir().join("cluster.toml");
    let mut text = config(&url, false);
    text = text.replacen(
        "[dcs]\n",
        &format!(
            "[dcs]\nusername = \"pgha\"\npassword_file = \"{}\"\n",
            f.secret("etcd.password").display()
        ),
        1,
    );
    std::fs::write(&own, text).expect("write own config");
    open_to_all(&own, 0o644).expect("chmod");
    let own_arg = own.display().to_string();
    for verb in CONTROL {
        let mut args = verb.to_vec();
        args.extend(["--config", own_arg.as_str()]);
        let out = tokio::task::block_in_place(|| nobody.pgha(&args));
        let err = describe(&out);
        assert_eq!(out.status.code(), Some(1), "{verb:?} as nobody: {err}");
        // The secrets are the owner's alone: no advice to join the group.
        assert!(
            err.contains(
                "etcd.password: permission denied; run as root or as the cluster's owner (OS user postgres)"
            ),
            "{verb:?} as nobody: {err}"
        );
    }
    // With a config of its own and no credentials: etcd refuses.
    std::fs::write(&own, config(&url, false)).expect("write own config");
    for verb in CONTROL {
        let mut args = verb.to_vec();
        args.extend(["--config", own_arg.as_str()]);
        let out = tokio::task::block_in_place(|| nobody.pgha(&args));
        let err = describe(&out);
        assert_eq!(out.status.code(), Some(1), "{verb:?} as nobody: {err}");
        assert!(
            err.contains("etcd requires authentication"),
            "{verb:?} as nobody: {err}"
        );
    }
    assert_eq!(
        cluster_state(&f).await,
        before,
        "nobody changed the cluster"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dev_cluster_runs_with_etcd_auth_and_owner_only_files() {
    let c = tokio::task::block_in_place(|| TestCluster::up(bin(), 1, "")).expect("pgha up");
    // `up` waited for a leader and a commit through the proxy: the agent and
    // the proxy follow etcd with the credentials. The CLI too:
    let s = tokio::task::block_in_place(|| c.status_json());
    assert_eq!(s["etcd"], "ok", "{s}");
    let url = c.config.dcs.endpoints[0].clone();
    let out = etcdctl(&url, &["put", "/pgha/pgha/config", "{}"]);
    assert!(!out.status.success(), "anonymous put: {}", describe(&out));

    let dir = c.dir.path();
    assert_eq!(mode(&dir.join("cluster.toml")), 0o640);
    assert_eq!(mode(&dir.join("proxy.toml")), 0o640);
    let secrets = &c.config.secrets_dir;
    assert_eq!(mode(secrets), 0o700);
    let mut names: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(secrets).expect("read secrets") {
        let path = entry.expect("entry").path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
        names.push(
            path.file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned(),
        );
    }
    for name in ["etcd.password", "etcd-root.password"] {
        assert!(names.iter().any(|n| n == name), "{name} missing: {names:?}");
    }

    let Some(nobody) = Unprivileged::new(
        bin(),
        "a_dev_cluster_runs_with_etcd_auth_and_owner_only_files",
    )
    .expect("unprivileged user") else {
        return;
    };
    // The cluster directory may be open to all (a temp dir here is not):
    // the config alone must keep nobody out.
    open_to_all(dir, 0o755).expect("chmod");
    let dir_arg = dir.display().to_string();
    let out = tokio::task::block_in_place(|| nobody.pgha(&["pause", "--dir", &dir_arg]));
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        describe(&out).contains("cluster.toml: permission denied"),
        "{}",
        describe(&out)
    );
    let s = tokio::task::block_in_place(|| c.status_json());
    assert_eq!(s["paused"], false, "{s}");
}
