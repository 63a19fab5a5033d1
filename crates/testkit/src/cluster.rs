//! A real dev cluster for black-box tests: runs the `pgha` binary (`up`,
//! `down`, ...) on a temp dir with free loopback ports, and stops everything
//! it started when dropped, even when the test panicked: `pgha down` first,
//! then SIGKILL to any postmaster still alive (by the PID in its
//! postmaster.pid, never by name).

use crate::free_port;
use anyhow::{bail, Context};
use nix::sys::signal::Signal;
use pgha_postgres::{Instance, PgBinaries, ServiceUser, StopMode};
use std::os::unix::process::CommandExt;
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
/// placed before the member list (e.g. a `[replication]` table). Without a
/// `[dcs]` table in `extra`, etcd is the dev cluster's own on a free port,
/// with authentication as `pgha up` sets it up (user `pgha`, password in
/// `secrets/etcd.password`).
pub fn config_text(members: usize, extra: &str) -> String {
    let mut text = format!("{extra}\n");
    if !extra.contains("[dcs]") {
        // etcd takes this port and the next one (peer).
        let etcd = free_port_pair();
        text.push_str(&format!(
            "[dcs]\nendpoints = [\"http://127.0.0.1:{etcd}\"]\n\
             username = \"pgha\"\npassword_file = \"secrets/etcd.password\"\n"
        ));
    }
    if !extra.contains("[proxy]") {
        text.push_str(&format!(
            "[proxy]\nrw_port = {}\nro_port = {}\nprimary_port = {}\nhttp_port = {}\n",
            free_port(),
            free_port(),
            free_port(),
            free_port()
        ));
    }
    for i in 1..=members {
        text.push_str(&format!(
            "[[members]]\nname = \"node{i}\"\nport = {}\napi_port = {}\n",
            free_port(),
            free_port()
        ));
    }
    text
}

/// A free port whose successor is free too.
fn free_port_pair() -> u16 {
    loop {
        let p = free_port();
        if p < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}

impl TestCluster {
    /// `pgha up` a cluster of `members` with `extra` config.
    pub fn up(bin: &Path, members: usize, extra: &str) -> anyhow::Result<Self> {
        Self::up_with(bin, members, extra, &[])
    }

    /// [`TestCluster::up`] with more arguments for `pgha up` (e.g.
    /// `--from-backup DIR`).
    pub fn up_with(
        bin: &Path,
        members: usize,
        extra: &str,
        up_args: &[&str],
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("pgha-test")
            .tempdir()
            .context("temp dir")?;
        let cfg_path = dir.path().join("input.toml");
        std::fs::write(&cfg_path, config_text(members, extra)).context("write config")?;
        let dir_arg = dir.path().display().to_string();
        let cfg_arg = cfg_path.display().to_string();
        let mut args = vec!["up", "--dir", &dir_arg, "--config", &cfg_arg];
        args.extend_from_slice(up_args);
        let out = run_pgha(bin, &args);
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

    /// `pgha status --json`, parsed (panics with the command's output when it fails).
    pub fn status_json(&self) -> serde_json::Value {
        let out = self.pgha(&["status", "--json"]);
        assert!(out.status.success(), "{}", describe(&out));
        serde_json::from_slice(&out.stdout).expect("status --json is JSON")
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

    /// Whether `member` takes writes: `Some(true)` a primary that is not
    /// read-only, `Some(false)` it answers but does not (a standby, or a
    /// fenced primary), `None` no answer within 3 s (down, or frozen).
    pub async fn writable(&self, member: &str) -> Option<bool> {
        let check = async {
            let client = self.connect(member).await.ok()?;
            let row = client
                .query_one(
                    "SELECT NOT pg_is_in_recovery() AND current_setting('default_transaction_read_only') = 'off'",
                    &[],
                )
                .await
                .ok()?;
            Some(row.get::<_, bool>(0))
        };
        tokio::time::timeout(Duration::from_secs(3), check)
            .await
            .ok()
            .flatten()
    }

    /// Stop one member cleanly: SIGTERM to its agent, which stops its
    /// PostgreSQL; waits for both.
    pub async fn stop_member(&self, member: &str) -> anyhow::Result<()> {
        if let Some(pid) = self.agent_pid(member) {
            signal(pid, Signal::SIGTERM);
            crate::wait_until_async("agent exit", Duration::from_secs(60), || async {
                (!alive(pid)).then_some(())
            })
            .await?;
        }
        Ok(self
            .instance(member)
            .stop(StopMode::Fast, Duration::from_secs(30))
            .await?)
    }

    /// Start one member's agent again (as `pgha up` does), in the background.
    pub fn start_member(&self, member: &str) -> anyhow::Result<()> {
        if self.agent_pid(member).is_some() {
            return Ok(());
        }
        let node_dir = self.instance(member).node_dir();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node_dir.join("agent.log"))?;
        let child = Command::new(&self.bin)
            .args(["agent", "--config"])
            .arg(self.dir.path().join("cluster.toml"))
            .args(["--member", member])
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("start agent")?;
        std::fs::write(
            self.pid_file(&format!("agent-{member}")),
            format!("{}\n", child.id()),
        )?;
        std::mem::forget(child);
        Ok(())
    }

    /// Crash a node: SIGKILL its agent and its postmaster at once.
    pub fn kill_node(&self, member: &str) {
        if let Some(pid) = self.agent_pid(member) {
            signal(pid, Signal::SIGKILL);
        }
        let m = self.config.member(member).expect("member exists");
        kill_postmaster(&m.data_dir);
    }

    /// SIGKILL the dev cluster's etcd (its data is kept); returns whether
    /// it ran. [`TestCluster::start_etcd`] brings it back.
    pub fn kill_etcd(&self) -> bool {
        let pid = recorded_pid(&self.pid_file("etcd"), "etcd");
        if let Some(pid) = pid {
            signal(pid, Signal::SIGKILL);
            let _ = crate::wait_until("etcd exits", Duration::from_secs(10), || {
                (!alive(pid)).then_some(())
            });
        }
        pid.is_some()
    }

    /// Start the dev cluster's etcd again (`pgha up` starts what is not
    /// running) on its data directory.
    pub fn start_etcd(&self) -> Output {
        self.pgha(&["up"])
    }

    /// SIGSTOP / SIGCONT a member's agent (a hung agent).
    pub fn pause_agent(&self, member: &str, paused: bool) {
        if let Some(pid) = self.agent_pid(member) {
            signal(
                pid,
                if paused {
                    Signal::SIGSTOP
                } else {
                    Signal::SIGCONT
                },
            );
        }
    }

    /// The PID of the postmaster of `member`, if it runs.
    pub fn postmaster_pid(&self, member: &str) -> Option<i32> {
        let m = self.config.member(member)?;
        let text = std::fs::read_to_string(m.data_dir.join("postmaster.pid")).ok()?;
        let pid: i32 = text.lines().next()?.trim().parse().ok()?;
        alive(pid as u32).then_some(pid)
    }

    /// `member`'s postmaster and all its children (empty when it is down).
    pub fn postgres_pids(&self, member: &str) -> Vec<u32> {
        let Some(pm) = self.postmaster_pid(member) else {
            return Vec::new();
        };
        let pm = pm as u32;
        let mut pids = vec![pm];
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for e in entries.flatten() {
                let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                    continue;
                };
                if parent_pid(pid) == Some(pm) {
                    pids.push(pid);
                }
            }
        }
        pids
    }

    /// SIGSTOP (`frozen`) or SIGCONT each of `pids` that is still a
    /// PostgreSQL process (never a recycled PID).
    pub fn freeze_pids(&self, pids: &[u32], frozen: bool) {
        let sig = if frozen {
            Signal::SIGSTOP
        } else {
            Signal::SIGCONT
        };
        for pid in pids {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.starts_with("postgres") || comm.starts_with("postmaster") {
                signal(*pid, sig);
            }
        }
    }

    fn pid_file(&self, name: &str) -> PathBuf {
        self.dir.path().join("run").join(format!("{name}.pid"))
    }

    /// PID of a process `pgha up` (or this fixture) started, if still ours.
    pub fn agent_pid(&self, member: &str) -> Option<u32> {
        recorded_pid(&self.pid_file(&format!("agent-{member}")), "agent")
    }

    /// The member holding the leader key, read from etcd.
    /// The leader once every member runs with its agent up (panics after 60 s).
    pub fn settled_leader(&self) -> String {
        crate::wait_until(
            "a leader with all agents up",
            Duration::from_secs(60),
            || {
                let s = self.status_json();
                let all_up = s["members"]
                    .as_array()?
                    .iter()
                    .all(|m| m["agent"] == "up" && m["state"] == "running");
                all_up.then(|| s["leader"].as_str().map(str::to_string))?
            },
        )
        .expect("cluster settles")
    }

    pub async fn leader(&self) -> Option<String> {
        let dcs = pgha_dcs::EtcdDcs::new(self.config.dcs.clone()).ok()?;
        let keys =
            pgha_dcs::ClusterKeys::new(&self.config.dcs.namespace, &self.config.name).ok()?;
        let r = pgha_dcs::Dcs::get(&dcs, &keys.leader()).await.ok()?;
        r.kv.map(|kv| kv.value_str().into_owned())
    }

    /// Wait until a leader other than `not` holds the key and its
    /// PostgreSQL accepts writes; returns the leader.
    pub async fn wait_new_leader(
        &self,
        not: Option<&str>,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        crate::wait_until_async("a writable leader", timeout, || async {
            let l = self.leader().await?;
            if Some(l.as_str()) == not {
                return None;
            }
            let c = self.connect(&l).await.ok()?;
            let ro: String = c
                .query_one("SHOW transaction_read_only", &[])
                .await
                .ok()?
                .get(0);
            let standby: bool = c
                .query_one("SELECT pg_is_in_recovery()", &[])
                .await
                .ok()?
                .get(0);
            (ro == "off" && !standby).then_some(l)
        })
        .await
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

impl TestCluster {
    /// Copy every log of a failed test to `$PGHA_TEST_LOGS` (default
    /// /tmp/pgha-test-logs/<temp dir name>) so they survive the cleanup.
    fn save_logs(&self) {
        let base = std::env::var_os("PGHA_TEST_LOGS")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/tmp/pgha-test-logs"));
        let name = self
            .dir
            .path()
            .file_name()
            .map(|n| n.to_owned())
            .unwrap_or_default();
        let dest = base.join(name);
        let _ = std::fs::create_dir_all(&dest);
        for m in &self.config.members {
            let node = self.instance(&m.name).node_dir();
            for f in ["agent.log", "postgresql.log"] {
                let _ = std::fs::copy(node.join(f), dest.join(format!("{}-{f}", m.name)));
            }
        }
        let _ = std::fs::copy(self.dir.path().join("etcd.log"), dest.join("etcd.log"));
        eprintln!("logs of the failed test saved in {}", dest.display());
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("PGHA_KEEP_LOGS").is_some() {
            self.save_logs();
        }
        // Let a SIGSTOPped agent run again so it can hear SIGTERM.
        for m in &self.config.members {
            self.pause_agent(&m.name, false);
        }
        let out = self.pgha(&["down"]);
        if !out.status.success() {
            eprintln!("pgha down failed during cleanup: {}", describe(&out));
        }
        // Whatever `down` could not stop: by recorded PID only.
        if let Ok(entries) = std::fs::read_dir(self.dir.path().join("run")) {
            for e in entries.flatten() {
                if let Some(pid) = recorded_pid(&e.path(), "") {
                    signal(pid, Signal::SIGKILL);
                }
            }
        }
        for m in &self.config.members {
            kill_postmaster(&m.data_dir);
        }
    }
}

/// The parent of `pid` from `/proc/<pid>/stat`.
fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn signal(pid: u32, sig: Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

fn alive(pid: u32) -> bool {
    pgha_postgres::process_alive(pid as i32)
}

/// The PID in `pid_file` if that process lives and its command line
/// contains `expect` and a pgha or etcd program (never a recycled PID).
fn recorded_pid(pid_file: &Path, expect: &str) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline =
        String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).ok()?).into_owned();
    let ours = cmdline.contains("pgha") || cmdline.contains("etcd");
    (alive(pid) && ours && cmdline.contains(expect)).then_some(pid)
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

/// The entry of `name` in a `pgha status --json` document.
pub fn member<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["members"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["name"] == name))
        .unwrap_or_else(|| panic!("{name} in {status}"))
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
