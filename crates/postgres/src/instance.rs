//! Operations on one local PostgreSQL instance. Each runs the PostgreSQL
//! program as the service user and reports success or a typed error; none
//! retries on its own, so the caller (the agent's loop, or `pgha up`)
//! decides what a failure means.
//!
//! Layout: the member's data directory `<node>/data` sits in a node
//! directory that also holds the server log (`postgresql.log`) and the Unix
//! socket, so nothing pgha writes lives inside a base backup.

use crate::conf::{self, ConfInput};
use crate::controldata::{self, ClusterState, ControlData};
use crate::lockfile::LockFile;
use crate::shell::run;
use crate::{PgBinaries, PgError, ServiceUser};
use pgha_config::Member;
use pgha_core::{Lsn, Timeline};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How to stop PostgreSQL (pg_ctl's modes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopMode {
    /// Wait for clients to disconnect.
    Smart,
    /// Disconnect clients, checkpoint, and on a primary send all WAL to
    /// connected standbys first: the one to use for switchover.
    Fast,
    /// Like a crash: no checkpoint; crash recovery at next start.
    Immediate,
}

impl StopMode {
    fn as_str(self) -> &'static str {
        match self {
            StopMode::Smart => "smart",
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

impl StopMode {
    /// The signal `pg_ctl stop -m <mode>` sends the postmaster.
    fn signal(self) -> nix::sys::signal::Signal {
        use nix::sys::signal::Signal;
        match self {
            StopMode::Smart => Signal::SIGTERM,
            StopMode::Fast => Signal::SIGINT,
            StopMode::Immediate => Signal::SIGQUIT,
        }
    }
}

/// Where [`Instance::stop_until_shut_down`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShutdownProgress {
    /// No postmaster runs (any more).
    Exited,
    /// The control file says the server shut down cleanly (its shutdown
    /// checkpoint is durable), but postmaster `pid` still runs: it waits for
    /// its walsenders (standbys flushing the last WAL) and the archiver. It
    /// accepts no connections; start nothing in the data directory before
    /// it has exited (see [`Instance::wait_exit`]).
    Exiting { pid: u32 },
}

#[derive(Clone, Debug)]
pub struct Instance {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub data_dir: PathBuf,
    bins: PgBinaries,
    user: ServiceUser,
    /// The cluster's CA with `[tls]`: pg_basebackup, pg_rewind and psql
    /// connect to other members with `sslmode=verify-full` against it.
    tls_ca: Option<PathBuf>,
}

impl Instance {
    pub fn new(member: &Member, bins: PgBinaries, user: ServiceUser) -> Self {
        Instance {
            name: member.name.clone(),
            host: member.host.clone(),
            port: member.port,
            data_dir: member.data_dir.clone(),
            bins,
            user,
            tls_ca: None,
        }
    }

    /// Connect to other members over verified TLS (`[tls]`'s CA), or plain
    /// with `None`.
    pub fn with_tls_ca(mut self, ca_file: Option<&Path>) -> Self {
        self.tls_ca = ca_file.map(Path::to_path_buf);
        self
    }

    /// A libpq client command (pg_basebackup, pg_rewind, psql) run as the
    /// service user, with the cluster's TLS settings in its environment.
    fn libpq_command(&self, program: &str) -> tokio::process::Command {
        let mut cmd = self.user.command(self.bins.path(program));
        match &self.tls_ca {
            Some(ca) => cmd.env("PGSSLMODE", "verify-full").env("PGSSLROOTCERT", ca),
            None => cmd.env("PGSSLMODE", "disable"),
        };
        cmd
    }

    pub fn user(&self) -> &ServiceUser {
        &self.user
    }

    /// The directory around the data dir: log, socket.
    pub fn node_dir(&self) -> PathBuf {
        self.data_dir
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"))
    }

    pub fn log_file(&self) -> PathBuf {
        self.node_dir().join("postgresql.log")
    }

    pub fn socket_dir(&self) -> PathBuf {
        self.node_dir()
    }

    /// Create the node directory, owned by the service user.
    pub async fn prepare_node_dir(&self) -> Result<(), PgError> {
        let dir = self.node_dir();
        self.user.make_dir(&dir, 0o700)?;
        self.user.check_reachable(&dir).await
    }

    /// A data directory that PostgreSQL has fully initialised (a clone in
    /// progress lives elsewhere and is renamed into place when complete).
    pub fn is_initialized(&self) -> bool {
        self.data_dir.join("PG_VERSION").is_file()
            && self.data_dir.join("global/pg_control").is_file()
    }

    pub async fn controldata(&self) -> Result<ControlData, PgError> {
        let mut cmd = self.user.command(self.bins.path("pg_controldata"));
        cmd.arg("-D").arg(&self.data_dir);
        let out = run("pg_controldata", cmd, Duration::from_secs(10)).await?;
        controldata::parse(&out).map_err(|detail| PgError::Unexpected {
            what: "reading pg_controldata".into(),
            detail,
        })
    }

    /// The cluster state in `global/pg_control`, read directly (cheap enough
    /// to poll; see [`controldata::state_from_control_file`]).
    pub fn control_state(&self) -> Result<ClusterState, PgError> {
        use std::io::Read;
        let path = self.data_dir.join("global/pg_control");
        let mut head = [0u8; 32];
        std::fs::File::open(&path)
            .and_then(|mut f| f.read_exact(&mut head))
            .map_err(PgError::io(format!("read {}", path.display())))?;
        controldata::state_from_control_file(&head).map_err(|detail| PgError::Unexpected {
            what: format!("reading {}", path.display()),
            detail,
        })
    }

    /// initdb with SCRAM everywhere, data checksums, and `superuser` whose
    /// password is in `pwfile`.
    pub async fn initdb(&self, superuser: &str, pwfile: &Path) -> Result<(), PgError> {
        self.prepare_node_dir().await?;
        let mut cmd = self.user.command(self.bins.path("initdb"));
        cmd.arg("-D")
            .arg(&self.data_dir)
            .arg("--username")
            .arg(superuser)
            .arg("--pwfile")
            .arg(pwfile)
            .args([
                "--auth=scram-sha-256",
                "--data-checksums",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ]);
        run(
            &format!("initdb of {}", self.name),
            cmd,
            Duration::from_secs(120),
        )
        .await?;
        Ok(())
    }

    /// Write pgha.conf and pg_hba.conf and make postgresql.conf include pgha.conf.
    pub fn write_config(&self, input: &ConfInput<'_>) -> Result<(), PgError> {
        let pgha_conf = conf::render_pgha_conf(input);
        self.user.write_file(
            &self.data_dir.join(conf::PGHA_CONF),
            pgha_conf.as_bytes(),
            0o600,
        )?;
        let hba = conf::render_hba(input.cluster);
        self.user
            .write_file(&self.data_dir.join("pg_hba.conf"), hba.as_bytes(), 0o600)?;
        self.ensure_include()
    }

    fn ensure_include(&self) -> Result<(), PgError> {
        let path = self.data_dir.join("postgresql.conf");
        let text = std::fs::read_to_string(&path)
            .map_err(PgError::io(format!("read {}", path.display())))?;
        if text.lines().any(|l| {
            l.trim_start()
                .starts_with("include_if_exists = 'pgha.conf'")
        }) {
            return Ok(());
        }
        let mut new = text;
        if !new.ends_with('\n') {
            new.push('\n');
        }
        new.push_str(conf::INCLUDE_LINE);
        new.push('\n');
        self.user.write_file(&path, new.as_bytes(), 0o600)
    }

    /// Create or remove `standby.signal`.
    pub fn set_standby_signal(&self, standby: bool) -> Result<(), PgError> {
        let path = self.data_dir.join("standby.signal");
        if standby {
            self.user.write_file(&path, b"", 0o600)
        } else {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(PgError::Io {
                    what: format!("remove {}", path.display()),
                    error: e,
                }),
                _ => Ok(()),
            }
        }
    }

    /// PID of the running postmaster, from postmaster.pid, if that process
    /// is still the postgres that wrote the file (alive, a postgres, started
    /// when the file says: see [`LockFile::owner_runs`]), not merely a
    /// process that holds the PID now.
    pub fn pid(&self) -> Option<u32> {
        let lock = LockFile::read(&self.data_dir.join("postmaster.pid"))?;
        lock.owner_runs().then_some(lock.pid as u32)
    }

    /// Remove the lock files (postmaster.pid and the Unix socket's
    /// `.s.PGSQL.<port>.lock`) of a postmaster that has exited but is still
    /// a zombie: a new postmaster refuses to start while `kill(pid, 0)`
    /// succeeds on the PID in them ("lock file already exists"), which
    /// after a crash lasted until init reaped the zombie (a second or more).
    /// The same goes for a file whose PID now belongs to another process
    /// (recycled after a crash or a reboot), which PostgreSQL itself would
    /// refuse to start over. Only files whose writer is gone go; PostgreSQL
    /// still checks on its own that no old backend uses the shared memory.
    pub fn remove_stale_lock_files(&self) {
        let socket_lock = self
            .socket_dir()
            .join(format!(".s.PGSQL.{}.lock", self.port));
        for path in [self.data_dir.join("postmaster.pid"), socket_lock] {
            let Some(lock) = LockFile::read(&path) else {
                continue;
            };
            if lock.owner_runs() {
                continue;
            }
            let pid = lock.pid;
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(pid, file = %path.display(), "removed the stale lock file of a postmaster that no longer runs")
                }
                Err(e) => tracing::debug!("cannot remove {}: {e}", path.display()),
            }
        }
    }

    pub fn is_running(&self) -> bool {
        self.pid().is_some()
    }

    /// Start and wait until it accepts connections (or `timeout`).
    pub async fn start(&self, timeout: Duration) -> Result<(), PgError> {
        if self.is_running() {
            return Ok(());
        }
        self.remove_stale_lock_files();
        let mut cmd = self.pg_ctl();
        cmd.arg("start")
            .arg("-w")
            .arg("-t")
            .arg(timeout.as_secs().max(1).to_string())
            .arg("-l")
            .arg(self.log_file());
        run(
            &format!("start {}", self.name),
            cmd,
            timeout + Duration::from_secs(5),
        )
        .await
        .map_err(|e| self.with_log_tail(e))?;
        Ok(())
    }

    pub async fn stop(&self, mode: StopMode, timeout: Duration) -> Result<(), PgError> {
        if !self.is_running() {
            return Ok(());
        }
        let mut cmd = self.pg_ctl();
        cmd.args(["stop", "-w", "-m", mode.as_str(), "-t"])
            .arg(timeout.as_secs().max(1).to_string());
        run(
            &format!("stop {}", self.name),
            cmd,
            timeout + Duration::from_secs(5),
        )
        .await?;
        Ok(())
    }

    /// Ask the running postmaster to stop in `mode` (the signal `pg_ctl stop`
    /// sends) without waiting. `None` when no postmaster runs.
    pub fn signal_stop(&self, mode: StopMode) -> Result<Option<u32>, PgError> {
        let Some(pid) = self.pid() else {
            return Ok(None);
        };
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), mode.signal()).map_err(
            |e| PgError::Io {
                what: format!(
                    "send {:?} to the postmaster of {} (pid {pid})",
                    mode.signal(),
                    self.name
                ),
                error: e.into(),
            },
        )?;
        Ok(Some(pid))
    }

    /// Stop in `mode` and return as soon as the control file says the
    /// server shut down cleanly, polling it every `poll`, instead of when the
    /// postmaster has exited: after a primary's shutdown checkpoint the
    /// postmaster still waits for its walsenders to send the rest and for
    /// standbys to flush it, and (with archive_mode) for the archiver to
    /// push the segment it switched to, which `pg_ctl stop` waits for too.
    /// A timeout leaves the shutdown running.
    pub async fn stop_until_shut_down(
        &self,
        mode: StopMode,
        poll: Duration,
        timeout: Duration,
    ) -> Result<ShutdownProgress, PgError> {
        let Some(pid) = self.signal_stop(mode)? else {
            return Ok(ShutdownProgress::Exited);
        };
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if !process_alive(pid as i32) {
                return Ok(ShutdownProgress::Exited);
            }
            if self.control_state().is_ok_and(|s| s.is_clean_shutdown()) {
                return Ok(ShutdownProgress::Exiting { pid });
            }
            if std::time::Instant::now() >= deadline {
                return Err(PgError::Timeout {
                    what: format!("a clean shutdown of {} (pid {pid})", self.name),
                    seconds: timeout.as_secs(),
                });
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// Wait until postmaster `pid` (one that shut down cleanly and is
    /// finishing, see [`ShutdownProgress::Exiting`]) has exited.
    pub async fn wait_exit(&self, pid: u32, timeout: Duration) -> Result<(), PgError> {
        tokio::time::timeout(
            timeout,
            wait_for_exit(pid as i32, Duration::from_millis(5)),
        )
        .await
        .map_err(|_| PgError::Timeout {
            what: format!(
                "the shut-down postmaster of {} (pid {pid}) to exit (its walsenders wait for standbys to flush, or its archiver for archive_command)",
                self.name
            ),
            seconds: timeout.as_secs(),
        })
    }

    /// Re-read configuration files (pg_ctl reload).
    pub async fn reload(&self) -> Result<(), PgError> {
        let mut cmd = self.pg_ctl();
        cmd.arg("reload");
        run(
            &format!("reload {}", self.name),
            cmd,
            Duration::from_secs(10),
        )
        .await?;
        Ok(())
    }

    /// Promote a standby and wait until it accepts writes.
    pub async fn promote(&self, timeout: Duration) -> Result<(), PgError> {
        let mut cmd = self.pg_ctl();
        cmd.args(["promote", "-w", "-t"])
            .arg(timeout.as_secs().max(1).to_string());
        run(
            &format!("promote {}", self.name),
            cmd,
            timeout + Duration::from_secs(5),
        )
        .await?;
        Ok(())
    }

    /// Clone this member from `upstream` with pg_basebackup through the slot
    /// named after this member, streaming WAL during the backup. The backup
    /// goes to a scratch directory renamed into place only when complete, so
    /// an interrupted clone never looks initialised.
    pub async fn clone_from(
        &self,
        upstream: &Member,
        replication_user: &str,
        passfile: &Path,
        timeout: Duration,
    ) -> Result<(), PgError> {
        self.prepare_node_dir().await?;
        let scratch = self.node_dir().join("data.clone");
        remove_dir_if_exists(&scratch)?;
        let mut cmd = self.libpq_command("pg_basebackup");
        cmd.env("PGPASSFILE", passfile)
            .arg("-D")
            .arg(&scratch)
            .args([
                "-h",
                &upstream.host,
                "-p",
                &upstream.port.to_string(),
                "-U",
                replication_user,
            ])
            // Named so that `pgha up` and `pgha reinit` can follow its
            // progress on the source (pg_stat_progress_basebackup); never
            // the member's own name, which synchronous_standby_names counts.
            .arg("-d")
            .arg(format!("application_name=pgha_clone_{}", self.name))
            .args([
                "-S",
                &self.name,
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-password",
            ]);
        let result = run(
            &format!("pg_basebackup of {} from {}", self.name, upstream.name),
            cmd,
            timeout,
        )
        .await;
        if let Err(e) = result {
            let _ = remove_dir_if_exists(&scratch);
            return Err(e);
        }
        remove_dir_if_exists(&self.data_dir)?;
        std::fs::rename(&scratch, &self.data_dir).map_err(PgError::io(format!(
            "rename {} to {}",
            scratch.display(),
            self.data_dir.display()
        )))
    }

    /// Remove the data directory (for a re-clone). The instance must be stopped.
    pub fn remove_data(&self) -> Result<(), PgError> {
        remove_dir_if_exists(&self.data_dir)
    }

    /// pg_rewind this (stopped) data directory to `source`'s timeline.
    pub async fn rewind(
        &self,
        source: &Member,
        superuser: &str,
        passfile: &Path,
        timeout: Duration,
    ) -> Result<(), PgError> {
        let mut cmd = self.libpq_command("pg_rewind");
        cmd.env("PGPASSFILE", passfile)
            .arg("-D")
            .arg(&self.data_dir)
            .arg(format!(
                "--source-server=host={} port={} user={} dbname=postgres connect_timeout=5",
                source.host, source.port, superuser
            ))
            .arg("--progress");
        run(
            &format!("pg_rewind of {} from {}", self.name, source.name),
            cmd,
            timeout,
        )
        .await?;
        Ok(())
    }

    /// Finish crash recovery of a stopped, uncleanly shut down data
    /// directory in single-user mode, so pg_rewind accepts it. The data
    /// directory must not hold `standby.signal`.
    pub async fn crash_recover(&self) -> Result<(), PgError> {
        let mut cmd = self.user.command(self.bins.path("postgres"));
        cmd.arg("--single").arg("-D").arg(&self.data_dir).args([
            "-c",
            "archive_mode=off",
            "postgres",
        ]);
        run(
            &format!("crash recovery of {}", self.name),
            cmd,
            Duration::from_secs(300),
        )
        .await?;
        Ok(())
    }

    /// `IDENTIFY_SYSTEM` over a replication connection to this (running)
    /// server: the timeline it is on and its flushed WAL position. On a
    /// standby whose WAL receiver has stopped this is the only exact source
    /// of its timeline (the checkpoint's timeline can be older, and an
    /// under-reported timeline would make a node look behind a peer).
    pub async fn identify_system(
        &self,
        replication_user: &str,
        passfile: &Path,
    ) -> Result<(Timeline, Lsn), PgError> {
        let mut cmd = self.libpq_command("psql");
        cmd.env("PGPASSFILE", passfile)
            .args(["-X", "-A", "-t", "-w", "-c", "IDENTIFY_SYSTEM"])
            .arg(format!(
                "host={} port={} user={replication_user} dbname=postgres replication=true connect_timeout=2 application_name=pgha",
                self.host, self.port
            ));
        let out = run(
            &format!("IDENTIFY_SYSTEM on {}", self.name),
            cmd,
            Duration::from_secs(5),
        )
        .await?;
        let unexpected = |detail: String| PgError::Unexpected {
            what: "reading IDENTIFY_SYSTEM".into(),
            detail,
        };
        let fields: Vec<&str> = out.trim().split('|').collect();
        let (Some(tli), Some(pos)) = (fields.get(1), fields.get(2)) else {
            return Err(unexpected(out.clone()));
        };
        let tli: u32 = tli.parse().map_err(|_| unexpected(out.clone()))?;
        let pos: Lsn = pos.parse().map_err(|_| unexpected(out.clone()))?;
        Ok((Timeline(tli), pos))
    }

    fn pg_ctl(&self) -> tokio::process::Command {
        let mut cmd = self.user.command(self.bins.path("pg_ctl"));
        cmd.arg("-D").arg(&self.data_dir);
        cmd
    }

    /// Add the end of the server log to a failed start's error: that is where
    /// PostgreSQL says why.
    fn with_log_tail(&self, e: PgError) -> PgError {
        match e {
            PgError::Command {
                what,
                status,
                stderr,
            } => {
                let log = std::fs::read_to_string(self.log_file()).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                PgError::Command {
                    what,
                    status,
                    stderr: format!(
                        "{stderr}\nlast lines of {}:\n{}",
                        self.log_file().display(),
                        tail.join("\n")
                    ),
                }
            }
            other => other,
        }
    }
}

fn remove_dir_if_exists(dir: &Path) -> Result<(), PgError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(PgError::Io {
            what: format!("remove {}", dir.display()),
            error: e,
        }),
        _ => Ok(()),
    }
}

/// Whether `pid` is a live process. A postmaster that died stays a zombie
/// until its parent (pg_ctl daemonises it, so init) reaps it, and `kill(pid, 0)`
/// succeeds on a zombie: on a busy machine that hid a crashed PostgreSQL
/// for over a second. So a process whose /proc state is `Z` (zombie) or `X`
/// (dead) counts as gone.
pub fn process_alive(pid: i32) -> bool {
    if pid <= 0 || nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may hold spaces.
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next()),
            Some('Z' | 'X')
        ),
        // No /proc (or a race with the reaper): trust kill(2).
        Err(_) => true,
    }
}

/// Resolves once process `pid` has exited (or turned into a zombie), by
/// polling [`process_alive`] every `every`: a few microseconds of work per
/// poll, so the agent can react to a crashed postmaster within a poll
/// instead of on its next loop.
pub async fn wait_for_exit(pid: i32, every: std::time::Duration) {
    while process_alive(pid) {
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod process_tests {
    use super::process_alive;

    #[test]
    fn a_zombie_is_not_alive() {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id() as i32;
        // Not reaped yet: wait until it has exited and become a zombie.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while process_alive(pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "child {pid} never became a zombie"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // kill(2) still succeeds on it: only the /proc state tells.
        assert!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok());
        child.wait().expect("reap");
        assert!(process_alive(std::process::id() as i32));
    }
}
