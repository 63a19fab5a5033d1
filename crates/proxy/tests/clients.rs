//! Real client programs through the rw listener: psql (simple protocol,
//! transactions, COPY) and pgbench in simple, extended and prepared modes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking

mod common;

use common::*;
use std::process::Command;

fn pg_tool(name: &str, addr: std::net::SocketAddr) -> Command {
    let mut cmd = Command::new(pgha_testkit::pg::pg_bin(name));
    cmd.env("PGHOST", addr.ip().to_string())
        .env("PGPORT", addr.port().to_string())
        .env("PGUSER", "alice")
        .env("PGPASSWORD", ALICE_PW)
        .env("PGDATABASE", "postgres")
        .env("PGCONNECT_TIMEOUT", "10");
    cmd
}

fn run(mut cmd: Command) -> anyhow::Result<String> {
    let out = cmd.output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    anyhow::ensure!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    Ok(stdout + &stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_and_pgbench_through_rw() -> anyhow::Result<()> {
    let c = start(true, "").await?;
    c.wait_standby_healthy().await?;
    let rw = c.rw();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut psql = pg_tool("psql", rw);
        psql.args(["-X", "-v", "ON_ERROR_STOP=1", "-A", "-t"])
            .arg("-c")
            .arg(
                "CREATE TABLE p (a int, b text); \
             BEGIN; INSERT INTO p VALUES (1, 'one'); INSERT INTO p VALUES (2, 'two'); COMMIT; \
             COPY p FROM PROGRAM 'printf \"3\\tthree\\n4\\tfour\\n\"'; \
             SELECT count(*) FROM p;",
            );
        let out = run(psql)?;
        assert!(out.contains('4'), "{out}");
        let mut copy_out = pg_tool("psql", rw);
        copy_out.args([
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            "COPY (SELECT a FROM p ORDER BY a) TO STDOUT",
        ]);
        let out = run(copy_out)?;
        assert_eq!(
            out.split_whitespace().collect::<Vec<_>>(),
            ["1", "2", "3", "4"],
            "{out}"
        );

        let mut init = pg_tool("pgbench", rw);
        init.args(["-i", "-s", "1", "-q"]);
        run(init)?;
        for mode in ["simple", "extended", "prepared"] {
            for extra in [&[][..], &["-S"][..]] {
                let mut bench = pg_tool("pgbench", rw);
                bench
                    .args(["-M", mode, "-c", "2", "-j", "1", "-t", "200", "-n"])
                    .args(extra);
                let out = run(bench)?;
                assert!(
                    out.contains("number of failed transactions: 0"),
                    "{mode} {extra:?}:\n{out}"
                );
                assert!(
                    out.contains("number of transactions actually processed: 400/400"),
                    "{mode} {extra:?}:\n{out}"
                );
            }
        }
        Ok(())
    })
    .await??;
    Ok(())
}

/// The same psql script, directly on the primary and through rw: every
/// byte psql prints (results, errors, notices) must match. The script mixes
/// reads a standby serves, server-local state, serializable and read-only
/// transactions, errors and notices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_through_rw_prints_what_the_primary_prints() -> anyhow::Result<()> {
    let c = start(true, "").await?;
    c.wait_standby_healthy().await?;
    c.primary.psql(
        "postgres",
        "INSERT INTO t (v) SELECT g FROM generate_series(1, 50) g; \
         CREATE SEQUENCE s; CREATE UNLOGGED TABLE u (a int); INSERT INTO u VALUES (7); \
         SELECT pg_create_physical_replication_slot('cmp_slot');",
    )?;
    c.standby
        .as_ref()
        .expect("standby")
        .wait_caught_up(&c.primary, std::time::Duration::from_secs(30))?;
    let script = r#"
SELECT count(*), sum(v) FROM t;
SELECT v FROM t WHERE v % 10 = 0 ORDER BY v;
SELECT pg_is_in_recovery();
SHOW transaction_read_only;
SELECT current_setting('transaction_read_only');
SELECT count(*) FROM pg_stat_replication;
SELECT count(*) FROM pg_stat_wal_receiver;
SELECT slot_name, slot_type FROM pg_replication_slots ORDER BY 1;
SELECT last_value FROM s;
SELECT a FROM u;
BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE;
SELECT count(*) FROM t;
SELECT current_setting('transaction_isolation');
COMMIT;
BEGIN READ ONLY;
SELECT pg_try_advisory_xact_lock(42);
SELECT count(*) FROM pg_locks WHERE locktype = 'advisory';
COMMIT;
BEGIN READ ONLY;
DECLARE c CURSOR WITH HOLD FOR SELECT v FROM t WHERE v <= 3 ORDER BY v;
COMMIT;
FETCH ALL FROM c;
CLOSE c;
SELECT 1/0;
SELECT nosuchcolumn FROM t;
DO $$BEGIN RAISE NOTICE 'hello from %', 'pgha'; END$$;
SET default_transaction_isolation = serializable;
SELECT count(*) FROM t;
RESET default_transaction_isolation;
SELECT current_setting('default_transaction_isolation');
"#;
    let direct: std::net::SocketAddr = format!("127.0.0.1:{}", c.primary.port).parse()?;
    let rw = c.rw();
    // A file, so that psql sends each statement as its own query.
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("compare.sql");
    std::fs::write(&file, script)?;
    let outputs = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for addr in [direct, rw] {
            let mut psql = pg_tool("psql", addr);
            psql.args(["-X", "-a", "-v", "ON_ERROR_STOP=0", "-f"])
                .arg(&file);
            let o = psql.output()?;
            out.push((
                String::from_utf8_lossy(&o.stdout).into_owned(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            ));
        }
        Ok(out)
    })
    .await??;
    let (want, got) = (&outputs[0], &outputs[1]);
    assert_eq!(
        got.0, want.0,
        "stdout through rw differs from the primary's"
    );
    assert_eq!(
        got.1, want.1,
        "stderr through rw differs from the primary's"
    );
    assert!(want.1.contains("division by zero"), "{}", want.1);
    assert!(want.1.contains("hello from pgha"), "{}", want.1);
    Ok(())
}
