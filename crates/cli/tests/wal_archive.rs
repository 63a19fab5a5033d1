//! Black-box tests of `pgha wal-push`, `pgha wal-fetch` and `pgha archive`
//! through the real binary: exit codes, messages, a push or fetch killed
//! midway by a failpoint, and a real PostgreSQL 15 that archives through
//! `wal-push` and recovers through `wal-fetch`.
//!
//! Hazards: every test has its own temp dir and port; PostgreSQL runs as the
//! `postgres` OS user (it refuses root) under a `ProcessGuard`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

const PGHA: &str = env!("CARGO_BIN_EXE_pgha");
const SEG: &str = "000000010000000000000003";

/// A data-dir-like cwd with `pg_wal/` and an archive dir `archive/`.
struct Dirs {
    tmp: tempfile::TempDir,
}

impl Dirs {
    fn new() -> Dirs {
        let tmp = tempfile::tempdir().expect("create temp dir");
        fs::create_dir(tmp.path().join("pg_wal")).expect("mkdir pg_wal");
        fs::create_dir(tmp.path().join("archive")).expect("mkdir archive");
        Dirs { tmp }
    }
    fn root(&self) -> &Path {
        self.tmp.path()
    }
    fn archive(&self) -> PathBuf {
        self.root().join("archive")
    }
    fn wal(&self, name: &str, data: &[u8]) -> String {
        fs::write(self.root().join("pg_wal").join(name), data).expect("write WAL file");
        format!("pg_wal/{name}")
    }
    /// Run pgha in the data dir, like PostgreSQL does.
    fn pgha(&self, args: &[&str], failpoint: Option<&str>) -> Output {
        let mut cmd = Command::new(PGHA);
        cmd.args(args)
            .current_dir(self.root())
            .env_remove("PGHA_ARCHIVE");
        match failpoint {
            Some(fp) => cmd.env("PGHA_FAILPOINT", fp),
            None => cmd.env_remove("PGHA_FAILPOINT"),
        };
        let out = cmd.output().expect("run pgha");
        eprintln!(
            "$ pgha {} -> {:?}\nstdout: {}\nstderr: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
    fn push(&self, path: &str, extra: &[&str]) -> Output {
        let mut args = vec!["wal-push", "--archive", "archive"];
        args.extend_from_slice(extra);
        args.push(path);
        self.pgha(&args, None)
    }
    fn fetch(&self, name: &str) -> Output {
        self.pgha(
            &[
                "wal-fetch",
                "--archive",
                "archive",
                name,
                "pg_wal/RECOVERYXLOG",
            ],
            None,
        )
    }
    fn restored(&self) -> Vec<u8> {
        fs::read(self.root().join("pg_wal/RECOVERYXLOG")).expect("read restored file")
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| ((i / 512) as u8) ^ seed).collect()
}

#[test]
fn push_and_fetch_round_trip_with_exit_codes() {
    let d = Dirs::new();
    let content = data(2 << 20, 1);
    let path = d.wal(SEG, &content);
    let out = d.push(&path, &["--compress", "zstd"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stderr(&out).is_empty(), "push is silent on success");
    let mode = fs::metadata(d.archive().join(SEG))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let out = d.fetch(SEG);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(d.restored(), content);

    // Identical re-push (PostgreSQL retrying after a crash): success.
    assert_eq!(d.push(&path, &[]).status.code(), Some(0));

    // History files are small and ordinary.
    let history = d.wal("00000002.history", b"1\t0/3000000\tbefore 2000-01-01\n");
    assert_eq!(d.push(&history, &[]).status.code(), Some(0));
    assert_eq!(d.fetch("00000002.history").status.code(), Some(0));
    assert_eq!(d.restored(), b"1\t0/3000000\tbefore 2000-01-01\n");
}

#[test]
fn different_content_is_refused_loudly() {
    let d = Dirs::new();
    let path = d.wal(SEG, &data(100_000, 1));
    assert_eq!(d.push(&path, &[]).status.code(), Some(0));
    let before = fs::read(d.archive().join(SEG)).unwrap();
    d.wal(SEG, &data(100_000, 2));
    let out = d.push(&path, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("refusing to overwrite") && err.contains(SEG),
        "{err}"
    );
    assert_eq!(fs::read(d.archive().join(SEG)).unwrap(), before);
}

#[test]
fn absent_is_quiet_exit_1_and_corrupt_is_loud_exit_2() {
    let d = Dirs::new();
    let out = d.fetch("00000005.history");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).is_empty(), "absent file must be quiet");
    assert!(!d.root().join("pg_wal/RECOVERYXLOG").exists());

    let path = d.wal(SEG, &data(300_000, 3));
    assert_eq!(d.push(&path, &[]).status.code(), Some(0));
    let archived = d.archive().join(SEG);
    let mut bytes = fs::read(&archived).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&archived, &bytes).unwrap();
    let out = d.fetch(SEG);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("corrupt") && err.contains("sha256") && err.contains(SEG),
        "{err}"
    );
    assert!(!d.root().join("pg_wal/RECOVERYXLOG").exists());

    bytes.truncate(1000);
    fs::write(&archived, &bytes).unwrap();
    let out = d.fetch(SEG);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("truncated"), "{}", stderr(&out));

    // list --verify flags it too.
    let out = d.pgha(
        &["archive", "list", "--archive", "archive", "--verify"],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stdout(&out).contains("BAD"));
}

#[test]
fn missing_archive_dir_is_an_error_that_says_what_to_do() {
    let d = Dirs::new();
    let path = d.wal(SEG, b"x");
    let args = ["wal-push", "--archive", "nowhere", path.as_str()];
    let out = d.pgha(&args, None);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
    assert!(
        !d.root().join("nowhere").exists(),
        "push must not create the archive dir"
    );
    let out = d.pgha(
        &["wal-fetch", "--archive", "nowhere", SEG, "pg_wal/X"],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("does not exist"));
}

fn temps(d: &Dirs) -> Vec<PathBuf> {
    match fs::read_dir(d.archive().join(".tmp")) {
        Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn push_killed_midway_leaves_no_file_under_the_final_name() {
    for failpoint in ["wal-push-after-write", "wal-push-before-rename"] {
        let d = Dirs::new();
        let content = data(1 << 20, 4);
        let path = d.wal(SEG, &content);
        let out = d.pgha(
            &["wal-push", "--archive", "archive", &path],
            Some(failpoint),
        );
        assert_eq!(
            out.status.signal(),
            Some(6),
            "{failpoint}: expected SIGABRT"
        );
        assert!(
            !d.archive().join(SEG).exists(),
            "{failpoint}: partial file visible"
        );
        let stale = temps(&d);
        assert_eq!(stale.len(), 1, "{failpoint}: {stale:?}");
        // wal-fetch sees the normal end of the archive.
        assert_eq!(d.fetch(SEG).status.code(), Some(1));

        // PostgreSQL retries: the retry succeeds and the content is whole.
        assert_eq!(d.push(&path, &[]).status.code(), Some(0));
        assert_eq!(d.fetch(SEG).status.code(), Some(0));
        assert_eq!(d.restored(), content);

        // Once the debris is old and unlocked, the next push sweeps it.
        let old = SystemTime::now() - Duration::from_secs(3600);
        let f = fs::File::options().write(true).open(&stale[0]).unwrap();
        f.set_modified(old).unwrap();
        let next = d.wal("000000010000000000000004", b"next");
        assert_eq!(d.push(&next, &[]).status.code(), Some(0));
        assert!(temps(&d).is_empty(), "{failpoint}: stale temp not swept");
    }
}

#[test]
fn push_killed_after_rename_is_completed_by_the_retry() {
    let d = Dirs::new();
    let content = data(100_000, 5);
    let path = d.wal(SEG, &content);
    let out = d.pgha(
        &["wal-push", "--archive", "archive", &path],
        Some("wal-push-before-dir-fsync"),
    );
    assert_eq!(out.status.signal(), Some(6));
    // The file is complete under its name; the retry fsyncs and succeeds.
    assert_eq!(d.push(&path, &[]).status.code(), Some(0));
    assert_eq!(d.fetch(SEG).status.code(), Some(0));
    assert_eq!(d.restored(), content);
}

#[test]
fn fetch_killed_midway_leaves_destination_untouched() {
    let d = Dirs::new();
    let path = d.wal(SEG, &data(100_000, 6));
    assert_eq!(d.push(&path, &[]).status.code(), Some(0));
    fs::write(d.root().join("pg_wal/RECOVERYXLOG"), b"previous").unwrap();
    let out = d.pgha(
        &[
            "wal-fetch",
            "--archive",
            "archive",
            SEG,
            "pg_wal/RECOVERYXLOG",
        ],
        Some("wal-fetch-before-rename"),
    );
    assert_eq!(out.status.signal(), Some(6));
    assert_eq!(d.restored(), b"previous");
    assert_eq!(d.fetch(SEG).status.code(), Some(0));
    assert_eq!(d.restored(), data(100_000, 6));
}

#[test]
fn archive_clean_deletes_only_old_segments_and_says_so() {
    let d = Dirs::new();
    for seg in 1..=6u32 {
        let p = d.wal(&format!("0000000100000000{seg:08X}"), &[seg as u8; 64]);
        assert_eq!(d.push(&p, &[]).status.code(), Some(0));
    }
    let h = d.wal("00000002.history", b"1\t0/5000000\tx\n");
    assert_eq!(d.push(&h, &[]).status.code(), Some(0));
    let clean = |extra: &[&str]| {
        let mut args = vec!["archive", "clean", "--archive", "archive"];
        args.extend_from_slice(extra);
        d.pgha(&args, None)
    };
    let out = clean(&["--keep", "0"]);
    assert_ne!(out.status.code(), Some(0));
    let out = clean(&["--keep", "2", "--dry-run"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("would delete 000000010000000000000001"));
    assert!(d.archive().join("000000010000000000000001").exists());
    let out = clean(&["--keep", "2"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("deleted 000000010000000000000004"));
    let mut left: Vec<String> = fs::read_dir(d.archive())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            "000000010000000000000005",
            "000000010000000000000006",
            "00000002.history"
        ]
    );
}

/// A real PostgreSQL 15 archiving through `wal-push` and recovering through
/// `wal-fetch` from a base backup taken without WAL.
mod real_postgres {
    use super::*;
    use nix::unistd::{chown, Gid, Uid, User};
    use pgha_testkit::{free_port, wait_until, ProcessGuard};
    use std::os::unix::process::CommandExt;

    const BIN: &str = "/usr/lib/postgresql/15/bin";

    fn user() -> (Uid, Gid) {
        let u = User::from_name("postgres")
            .expect("look up user postgres")
            .expect("OS user postgres missing: apt-get install postgresql-15");
        (u.uid, u.gid)
    }

    /// A PostgreSQL binary run as `postgres` in `cwd`.
    fn pg(tool: &str, cwd: &Path) -> Command {
        let (uid, gid) = user();
        let mut cmd = Command::new(format!("{BIN}/{tool}"));
        cmd.uid(uid.as_raw()).gid(gid.as_raw()).current_dir(cwd);
        cmd.env_remove("PGHA_FAILPOINT").env_remove("PGHA_ARCHIVE");
        cmd
    }

    fn run_ok(mut cmd: Command, what: &str) -> String {
        let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(out.status.success(), "{what} failed: {}", stderr(&out));
        stdout(&out)
    }

    fn chown_pg(path: &Path) {
        let (uid, gid) = user();
        chown(path, Some(uid), Some(gid)).expect("chown to postgres");
    }

    struct Server {
        root: PathBuf,
        port: u16,
        guard: ProcessGuard,
    }

    impl Server {
        fn start(root: &Path, data: &str) -> Server {
            let port = free_port();
            let log = fs::File::create(root.join(format!("{data}.log"))).expect("create log");
            let mut cmd = pg("postgres", root);
            cmd.args(["-D", data, "-p", &port.to_string()])
                .args(["-c", "listen_addresses=", "-c"])
                .arg(format!("unix_socket_directories={}", root.display()))
                .stdout(log.try_clone().expect("dup log"))
                .stderr(log)
                .process_group(0);
            let child = cmd.spawn().expect("start postgres");
            let server = Server {
                root: root.to_path_buf(),
                port,
                guard: ProcessGuard::new(format!("postgres {data}"), child, true),
            };
            wait_until(
                "postgres accepting connections",
                Duration::from_secs(60),
                || server.sql("select 1"),
            )
            .expect("postgres did not start");
            server
        }

        fn sql(&self, sql: &str) -> Option<String> {
            let mut cmd = pg("psql", &self.root);
            cmd.args(["-XAtq", "-U", "postgres", "-d", "postgres", "-c", sql])
                .args([
                    "-h",
                    &self.root.display().to_string(),
                    "-p",
                    &self.port.to_string(),
                ]);
            let out = cmd.output().ok()?;
            out.status
                .success()
                .then(|| stdout(&out).trim().to_string())
        }

        fn must(&self, sql: &str) -> String {
            self.sql(sql)
                .unwrap_or_else(|| panic!("query failed: {sql}"))
        }

        /// Fast shutdown, and wait for it.
        fn stop(mut self) {
            self.guard.signal(nix::sys::signal::Signal::SIGINT);
            wait_until("postgres to stop", Duration::from_secs(60), || {
                (!self.guard.is_running()).then_some(())
            })
            .expect("postgres did not stop");
        }
    }

    fn conf(root: &Path, data: &str, lines: &[String]) {
        let path = root.join(data).join("postgresql.conf");
        let mut text = fs::read_to_string(&path).expect("read postgresql.conf");
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
        fs::write(&path, text).expect("write postgresql.conf");
    }

    #[test]
    fn postgres_archives_with_wal_push_and_recovers_with_wal_fetch() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let root = tmp.path();
        chown_pg(root);
        // A private copy of the binary, so the postgres user can run it
        // wherever the checkout lives.
        let bin = root.join("pgha");
        fs::copy(PGHA, &bin).expect("copy pgha");
        let archive = root.join("archive");
        fs::create_dir(&archive).unwrap();
        fs::set_permissions(&archive, fs::Permissions::from_mode(0o700)).unwrap();
        chown_pg(&archive);
        let (bin, arch) = (bin.display(), archive.display());

        let mut initdb = pg("initdb", root);
        initdb.args(["-D", "primary", "-U", "postgres", "--auth=trust"]);
        run_ok(initdb, "initdb");
        conf(
            root,
            "primary",
            &[
                "archive_mode = on".into(),
                format!("archive_command = '{bin} wal-push --archive {arch} --compress zstd %p'"),
            ],
        );
        let primary = Server::start(root, "primary");
        primary.must("create table t (v int); insert into t values (1)");

        let mut backup = pg("pg_basebackup", root);
        backup
            .args(["-D", "restored", "-X", "none", "-U", "postgres"])
            .args([
                "-h",
                &root.display().to_string(),
                "-p",
                &primary.port.to_string(),
            ]);
        run_ok(backup, "pg_basebackup -X none");

        primary.must("insert into t values (2)");
        let seg = primary.must("select pg_walfile_name(pg_current_wal_lsn())");
        primary.must("select pg_switch_wal()");
        wait_until(
            "the segment in the archive",
            Duration::from_secs(60),
            || archive.join(&seg).exists().then_some(()),
        )
        .expect("segment was not archived");
        let failed = primary.must("select failed_count from pg_stat_archiver");
        assert_eq!(failed, "0", "archive_command failed at least once");
        primary.stop();

        let out = Command::new(PGHA)
            .args([
                "archive",
                "list",
                "--verify",
                "--archive",
                &arch.to_string(),
            ])
            .output()
            .expect("run pgha archive list");
        assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
        assert!(stdout(&out).contains(&seg) && stdout(&out).contains("zstd"));

        // The base backup has no WAL: row 2 can only come from the archive.
        fs::write(root.join("restored/recovery.signal"), b"").unwrap();
        chown_pg(&root.join("restored/recovery.signal"));
        conf(
            root,
            "restored",
            &[format!(
                "restore_command = '{bin} wal-fetch --archive {arch} %f %p'"
            )],
        );
        let restored = Server::start(root, "restored");
        wait_until("end of archive recovery", Duration::from_secs(60), || {
            (restored.sql("select pg_is_in_recovery()")? == "f").then_some(())
        })
        .expect("recovery did not finish");
        assert_eq!(restored.must("select count(*) from t"), "2");
        let log = fs::read_to_string(root.join("restored.log")).unwrap_or_default();
        let line = format!("restored log file \"{seg}\" from archive");
        assert!(log.contains(&line), "restore path not used; log:\n{log}");
        // The new timeline's history is archived by the promoted server.
        wait_until("00000002.history archived", Duration::from_secs(60), || {
            archive.join("00000002.history").exists().then_some(())
        })
        .expect("new timeline history not archived");
        restored.stop();
    }
}
