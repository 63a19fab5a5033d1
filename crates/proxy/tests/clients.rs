//! Real client programs through the rw listener: psql (simple protocol,
//! transactions, COPY) and pgbench in simple, extended and prepared modes.

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
