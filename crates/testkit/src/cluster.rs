//! A real dev cluster for black-box tests: runs the `pgha` binary (`up`,
//! `down`, ...) on a temp dir with free loopback ports, and stops everything
//! it started when dropped, even when the test panicked: `pgha down` first,
//! then SIGKILL to any postmaster still alive (by the PID in its
//! postmaster.pid, never by name).

use crate::free_port;
use anyhow::{bail, Context};
use pgha_postgres::{Instance, PgBinaries, ServiceUser, StopMode};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;
use tokio_postgres::Client;

pub struct TestCluster {
    pub bin: PathBuf,
    pub dir: tempfile::TempDir,
    pub config: pgha_config::ClusterConfig,
    pub admin_password: String,
}

/// A cluster config with `members` members on free ports, plus `extra` TOML
/// placed before the member list (e.g. a `[replication]` table).
pub fn config_text(members: usize, extra: &str) -> String {
    let mut text = format!("{extra}\n");
    for i in 1..=members {
        text.push_str(&format!(
            "[[members]]\nname = \"node{i}\"\nport = {}\n",
            free_port()
        ));
    }
    text
}

impl TestCluster {
    /// `pgha up` a cluster of `members` with `extra` config.
    pub fn up(bin: &Path, members: usize, extra: &str) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("pgha-test")
            .tempdir()
            .context("temp dir")?;
        let cfg_path = dir.path().join("input.toml");
        std::fs::write(&cfg_path, config_text(members, extra)).context("write config")?;
        let out = run_pgha(
            bin,
            &[
                "up",
                "--dir",
                &dir.path().display().to_string(),
                "--config",
                &cfg_path.display().to_string(),
            ],
        );
        let config = pgha_config::load(&dir.path().join("cluster.toml"));
        let mut cluster = TestCluster {
            bin: bin.to_path_buf(),
            dir,
            config: match config {
                Ok(c) => c,
                Err(e) => bail!(
                    "pgha up wrote no usable cluster.toml ({e}); {}",
                    describe(&out)
                ),
            },
            admin_password: String::new(),
        };
        if !out.status.success() {
            bail!("pgha up failed: {}", describe(&out));
        }
        cluster.admin_password =
            std::fs::read_to_string(cluster.config.secrets_dir.join("admin.password"))
                .context("read admin password")?
                .trim()
                .to_string();
        Ok(cluster)
    }

    pub fn dir_arg(&self) -> String {
        self.dir.path().display().to_string()
    }

    /// Run `pgha <args>` with `--dir` appended.
    pub fn pgha(&self, args: &[&str]) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        let dir = self.dir_arg();
        all.extend(["--dir", dir.as_str()]);
        run_pgha(&self.bin, &all)
    }

    pub fn port(&self, member: &str) -> u16 {
        self.config.member(member).map(|m| m.port).unwrap_or(0)
    }

    pub fn instance(&self, member: &str) -> Instance {
        let m = self.config.member(member).expect("member exists");
        let bins = PgBinaries::locate(self.config.bin_dir.as_deref()).expect("PostgreSQL binaries");
        let user = ServiceUser::resolve(&self.config.os_user).expect("service user");
        Instance::new(m, bins, user)
    }

    /// Connect to `member` as the superuser.
    pub async fn connect(&self, member: &str) -> anyhow::Result<Client> {
        let m = self.config.member(member).context("no such member")?;
        Ok(pgha_postgres::probe::connect(
            &m.host,
            m.port,
            &self.config.superuser,
            &self.admin_password,
            Duration::from_secs(5),
        )
        .await?)
    }

    /// Stop one member's PostgreSQL (fast shutdown).
    pub async fn stop_member(&self, member: &str) -> anyhow::Result<()> {
        Ok(self
            .instance(member)
            .stop(StopMode::Fast, Duration::from_secs(30))
            .await?)
    }

    /// Start one member's PostgreSQL with the config it already has.
    pub async fn start_member(&self, member: &str) -> anyhow::Result<()> {
        Ok(self.instance(member).start(Duration::from_secs(60)).await?)
    }

    /// The end of a member's server log, for assertions and failure messages.
    pub fn server_log(&self, member: &str) -> String {
        let m = self.config.member(member).expect("member exists");
        let log = m
            .data_dir
            .parent()
            .expect("node dir")
            .join("postgresql.log");
        std::fs::read_to_string(log).unwrap_or_default()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let out = self.pgha(&["down"]);
        if !out.status.success() {
            eprintln!("pgha down failed during cleanup: {}", describe(&out));
        }
        for m in &self.config.members {
            kill_postmaster(&m.data_dir);
        }
    }
}

/// SIGKILL the postmaster recorded in `data_dir`'s postmaster.pid, if alive.
pub fn kill_postmaster(data_dir: &Path) {
    let Ok(text) = std::fs::read_to_string(data_dir.join("postmaster.pid")) else {
        return;
    };
    if let Some(pid) = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<i32>().ok())
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Run the pgha binary, capturing output.
pub fn run_pgha(bin: &Path, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap_or_else(|e| panic!("run {} {args:?}: {e}", bin.display()))
}

/// A command's status, stdout and stderr, for failure messages.
pub fn describe(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
