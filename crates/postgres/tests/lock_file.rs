//! A `postmaster.pid` whose PID now belongs to another process (recycled
//! after a crash or a reboot) is not a running postmaster: the instance
//! reports "not running", and starting removes the stale file and works,
//! against a real PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking

use pgha_config::Member;
use pgha_postgres::{Instance, PgBinaries, ServiceUser, StopMode};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A process started by the test, killed by its PID when dropped.
struct Proc(Child);

impl Proc {
    /// `sleep 600`, named `argv0` in its command line.
    fn sleep_as(argv0: &str) -> Proc {
        let child = Command::new("bash")
            .args(["-c", &format!("exec -a {argv0} sleep 600")])
            .spawn()
            .expect("spawn sleep");
        let p = Proc(child);
        // Wait (bounded) until bash has exec'd: the command line is final.
        let deadline = Instant::now() + Duration::from_secs(10);
        while cmdline(p.pid()) != format!("{argv0}\0600\0") {
            assert!(Instant::now() < deadline, "sleep never ran");
            std::thread::sleep(Duration::from_millis(5));
        }
        p
    }

    fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Stops the instance's postmaster by the PID in its lock file.
struct StopOnDrop(Instance);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0.pid() {
            let pid = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGQUIT);
            let deadline = Instant::now() + Duration::from_secs(20);
            while pgha_postgres::process_alive(pid.as_raw()) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

fn write_lock_file(data_dir: &Path, pid: i32, started: i64, port: u16) {
    let text = format!(
        "{pid}\n{}\n{started}\n{port}\n{}\n\n  {port}001         0\nready   \n",
        data_dir.display(),
        data_dir.parent().expect("node dir").display()
    );
    std::fs::write(data_dir.join("postmaster.pid"), text).expect("write postmaster.pid");
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recycled_pid_is_not_a_running_postmaster() {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let port = free_port();
    let member = Member {
        name: "n1".into(),
        host: "127.0.0.1".into(),
        port,
        data_dir: tmp.path().join("n1/data"),
        api_port: port,
    };
    let user = ServiceUser::resolve("postgres").expect("OS user postgres");
    let inst = Instance::new(&member, PgBinaries::locate(None).expect("PostgreSQL"), user);
    let pwfile = tmp.path().join("pw");
    std::fs::write(&pwfile, "secret\n").expect("pwfile");
    std::fs::set_permissions(&pwfile, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    inst.initdb("postgres", &pwfile).await.expect("initdb");
    let node = member.data_dir.parent().expect("node dir");
    let conf = member.data_dir.join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf).expect("read postgresql.conf");
    text.push_str(&format!(
        "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n",
        node.display()
    ));
    std::fs::write(&conf, text).expect("write postgresql.conf");

    // A live process that is not postgres holds the PID.
    let sleep = Proc::sleep_as("sleep");
    write_lock_file(&member.data_dir, sleep.pid(), now_secs(), port);
    assert!(!inst.is_running(), "a sleep taken for the postmaster");
    assert_eq!(inst.pid(), None);

    // A postgres (by its command line) holds the PID, but started long
    // after the postmaster that wrote the file: a recycled PID too. The same
    // process with its own start time is taken for the postmaster.
    let imposter = Proc::sleep_as("postgres");
    write_lock_file(&member.data_dir, imposter.pid(), now_secs() - 3600, port);
    assert!(
        !inst.is_running(),
        "a postgres started an hour late taken for the postmaster"
    );
    write_lock_file(&member.data_dir, imposter.pid(), now_secs(), port);
    assert!(
        inst.is_running(),
        "the start time check refuses its own writer"
    );
    drop(imposter);

    // Starting over the sleep's stale file removes it and works.
    write_lock_file(&member.data_dir, sleep.pid(), now_secs() - 3600, port);
    inst.start(Duration::from_secs(60))
        .await
        .expect("start over a stale postmaster.pid");
    let guard = StopOnDrop(inst.clone());
    let pid = inst.pid().expect("the new postmaster runs") as i32;
    assert_ne!(pid, sleep.pid());
    assert!(cmdline(pid).contains("postgres"), "{}", cmdline(pid));
    inst.stop(StopMode::Fast, Duration::from_secs(30))
        .await
        .expect("stop");
    assert!(!inst.is_running());
    drop(guard);
}
