//! A real PostgreSQL 15 server for tests (`PgServer`), and optionally a
//! streaming standby of it, each in its own temp dir on a free loopback port.
//!
//! Authentication: `scram-sha-256` over TCP for everyone, except members of
//! role `pgha_md5_users` (md5, so md5-stored roles can log in) and
//! replication (trust, loopback only). The superuser is `postgres` with
//! password [`SUPERUSER_PASSWORD`].
//!
//! Hazards: PostgreSQL refuses to run as root, so when the test runs as root
//! the binaries run as OS user `postgres` and the temp dir is chowned to it.
//! The server runs in its own process group; Drop sends SIGQUIT (immediate
//! shutdown) to that group by PID, then SIGKILL if it is still there.

use crate::{free_port, wait_until, ProcessGuard};
use anyhow::{bail, Context};
use nix::sys::signal::Signal;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Password of the `postgres` superuser in every fixture.
pub const SUPERUSER_PASSWORD: &str = "pgha-test-superuser";

/// Directory of the PostgreSQL binaries: `$PGHA_PG_BIN`, else Debian's 15.
pub fn pg_bin_dir() -> PathBuf {
    std::env::var_os("PGHA_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

/// Full path of one PostgreSQL binary.
pub fn pg_bin(name: &str) -> PathBuf {
    pg_bin_dir().join(name)
}

/// uid/gid to run PostgreSQL as: `postgres` when we are root, else ourselves.
fn run_as() -> anyhow::Result<Option<(u32, u32)>> {
    if !nix::unistd::Uid::effective().is_root() {
        return Ok(None);
    }
    let user = nix::unistd::User::from_name("postgres")
        .context("look up OS user postgres")?
        .context("OS user postgres does not exist (install Debian's postgresql-15 package)")?;
    Ok(Some((user.uid.as_raw(), user.gid.as_raw())))
}

fn command(bin: &str, ids: Option<(u32, u32)>) -> Command {
    let mut cmd = Command::new(pg_bin(bin));
    if let Some((uid, gid)) = ids {
        cmd.uid(uid).gid(gid);
    }
    cmd.env_remove("PGDATA").env("LC_ALL", "C");
    cmd
}

/// Runs a command to completion; fails with its output when it fails.
fn run(mut cmd: Command, what: &str) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("{what}: start (is postgresql-15 installed?)"))?;
    if !out.status.success() {
        bail!(
            "{what}: {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A running PostgreSQL server; dropping it stops the server and removes its files.
pub struct PgServer {
    pub port: u16,
    pub dir: PathBuf,
    pub data_dir: PathBuf,
    pub standby: bool,
    process: Option<ProcessGuard>,
    ids: Option<(u32, u32)>,
    _tmp: tempfile::TempDir,
}

impl PgServer {
    fn tempdir(ids: Option<(u32, u32)>) -> anyhow::Result<tempfile::TempDir> {
        let tmp = tempfile::Builder::new()
            .prefix("pgha-pg-")
            .tempdir()
            .context("create temp dir")?;
        if let Some((uid, gid)) = ids {
            nix::unistd::chown(tmp.path(), Some(uid.into()), Some(gid.into()))
                .context("chown temp dir")?;
        }
        Ok(tmp)
    }

    /// initdb + start a primary.
    pub fn start() -> anyhow::Result<Self> {
        let ids = run_as()?;
        let tmp = Self::tempdir(ids)?;
        let dir = tmp.path().to_path_buf();
        let data_dir = dir.join("data");
        let pwfile = dir.join("pw");
        std::fs::write(&pwfile, SUPERUSER_PASSWORD).context("write password file")?;
        if let Some((uid, gid)) = ids {
            nix::unistd::chown(&pwfile, Some(uid.into()), Some(gid.into()))
                .context("chown password file")?;
        }
        let mut initdb = command("initdb", ids);
        initdb
            .arg("-D")
            .arg(&data_dir)
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
            ])
            .args(["--locale=C", "--no-sync"])
            .arg(format!("--pwfile={}", pwfile.display()));
        run(initdb, "initdb")?;
        let conf = "\nlisten_addresses = '127.0.0.1'\nfsync = off\nfull_page_writes = off\n\
            wal_level = replica\nmax_wal_senders = 10\nhot_standby = on\nshared_buffers = 32MB\n\
            max_connections = 200\nwal_keep_size = 256MB\nlog_min_messages = warning\n\
            max_prepared_transactions = 10\n";
        append(&data_dir.join("postgresql.conf"), conf)?;
        let hba = "local all all trust\nhost replication all 127.0.0.1/32 trust\n\
            host all +pgha_md5_users 127.0.0.1/32 md5\nhost all all 127.0.0.1/32 scram-sha-256\n";
        std::fs::write(data_dir.join("pg_hba.conf"), hba).context("write pg_hba.conf")?;
        let mut server = PgServer {
            port: free_port(),
            dir,
            data_dir,
            standby: false,
            process: None,
            ids,
            _tmp: tmp,
        };
        server.launch()?;
        server.psql("postgres", "CREATE ROLE pgha_md5_users NOLOGIN")?;
        Ok(server)
    }

    /// pg_basebackup -R from this server, then start the standby.
    pub fn start_standby(&self) -> anyhow::Result<PgServer> {
        let tmp = Self::tempdir(self.ids)?;
        let dir = tmp.path().to_path_buf();
        let data_dir = dir.join("data");
        let mut bb = command("pg_basebackup", self.ids);
        bb.arg("-D")
            .arg(&data_dir)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-R",
                "-X",
                "stream",
            ])
            .arg("--no-sync");
        run(bb, "pg_basebackup")?;
        let mut server = PgServer {
            port: free_port(),
            dir,
            data_dir,
            standby: true,
            process: None,
            ids: self.ids,
            _tmp: tmp,
        };
        server.launch()?;
        Ok(server)
    }

    /// Starts `postgres` and waits until it accepts connections.
    fn launch(&mut self) -> anyhow::Result<()> {
        // A custom setting that names the server, for tests that must tell
        // which server answered a read (a proxy sends anything that reads
        // server state, `inet_server_port()` included, to the primary).
        append(
            &self.data_dir.join("postgresql.conf"),
            &format!("pgha_test.port = '{}'\n", self.port),
        )?;
        let log =
            std::fs::File::create(self.dir.join("postgres.log")).context("create server log")?;
        if let Some((uid, gid)) = self.ids {
            nix::unistd::chown(
                &self.dir.join("postgres.log"),
                Some(uid.into()),
                Some(gid.into()),
            )
            .context("chown server log")?;
        }
        let mut cmd = command("postgres", self.ids);
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0);
        let child = cmd.spawn().context("start postgres")?;
        self.process = Some(ProcessGuard::new(
            format!("postgres:{}", self.port),
            child,
            true,
        ));
        let port = self.port.to_string();
        let res = wait_until(
            "postgres to accept connections",
            Duration::from_secs(60),
            || {
                let mut c = Command::new(pg_bin("pg_isready"));
                c.args(["-q", "-h", "127.0.0.1", "-p", &port]);
                c.status().ok().filter(|s| s.success())
            },
        );
        if let Err(e) = res {
            bail!("{e:#}\nserver log:\n{}", self.log());
        }
        Ok(())
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }

    /// Runs SQL as the superuser over TCP; returns unaligned, tuples-only output.
    pub fn psql(&self, db: &str, sql: &str) -> anyhow::Result<String> {
        let mut cmd = Command::new(pg_bin("psql"));
        cmd.args([
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
        ])
        .args([
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
            "-d",
            db,
            "-c",
            sql,
        ])
        .env("PGPASSWORD", SUPERUSER_PASSWORD)
        .env("PGCONNECT_TIMEOUT", "10");
        run(cmd, &format!("psql {sql:?}")).map(|s| s.trim_end().to_string())
    }

    /// Waits until this standby has replayed everything `primary` wrote so far.
    pub fn wait_caught_up(&self, primary: &PgServer, timeout: Duration) -> anyhow::Result<()> {
        let target = primary.psql("postgres", "SELECT pg_current_wal_lsn()")?;
        let sql = format!("SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn");
        wait_until("standby to catch up", timeout, || {
            self.psql("postgres", &sql).ok().filter(|s| s == "t")
        })
        .map(|_| ())
    }

    /// Crash the server now (SIGKILL to its process group), as a failure test would.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// Immediate shutdown (SIGQUIT), then SIGKILL after a grace period.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.signal(Signal::SIGQUIT);
            let deadline = Instant::now() + Duration::from_secs(5);
            while p.is_running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            p.kill();
        }
    }

    /// Whether the server process is still there.
    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(|p| p.is_running())
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn append(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(|| format!("open {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("append to {}", path.display()))
}
