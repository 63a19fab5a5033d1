//! Transaction pooling (`pool_mode = "transaction"`) against a real
//! PostgreSQL: clients share a few backends, and each client's session
//! behaves as on a dedicated connection: its settings and prepared
//! statements follow it from backend to backend, and session state that
//! cannot move (temporary tables, session advisory locks, LISTEN, WITH HOLD
//! cursors) pins the client to its backend until that state is gone. SQL
//! `PREPARE` does not pin: such statements follow the client like
//! protocol-level ones.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking

mod common;

use common::*;
use std::collections::HashSet;
use std::time::Duration;

const POOLED: &str = "pool_mode = \"transaction\"\npool_wait_timeout = \"2s\"\n";

async fn pid(c: &tokio_postgres::Client) -> i32 {
    c.query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

/// Backends of role alice on the primary, counted by PostgreSQL itself.
fn alice_backends(c: &Cluster) -> usize {
    let out = c
        .primary
        .psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'alice'",
        )
        .unwrap();
    out.trim().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_share_pool_size_backends() -> anyhow::Result<()> {
    let c = start(false, &format!("{POOLED}pool_size = 3\n")).await?;
    let addr = c.primary_addr();
    let mut clients = Vec::new();
    for _ in 0..24 {
        clients.push(connect(addr, "alice", ALICE_PW).await?);
    }
    let work = clients.iter().enumerate().map(|(i, client)| async move {
        let mut pids = Vec::new();
        for round in 0..5 {
            let tx_pid: i32 = {
                client.batch_execute("BEGIN").await.unwrap();
                client
                    .execute(
                        "INSERT INTO t (v) VALUES ($1)",
                        &[&((i * 10 + round) as i32)],
                    )
                    .await
                    .unwrap();
                let p = pid(client).await;
                client.batch_execute("COMMIT").await.unwrap();
                p
            };
            pids.push(tx_pid);
        }
        pids
    });
    let pids: HashSet<i32> = futures::future::join_all(work)
        .await
        .into_iter()
        .flatten()
        .collect();
    assert!(
        pids.len() <= 3,
        "24 clients in transaction mode with pool_size = 3 used {} backends",
        pids.len()
    );
    assert!(
        alice_backends(&c) <= 3,
        "PostgreSQL sees more than pool_size backends"
    );
    let rows = c
        .primary
        .psql("postgres", "SELECT count(*) FROM t")?
        .trim()
        .parse::<usize>()?;
    assert_eq!(rows, 24 * 5, "every committed insert is there");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_and_prepared_statements_follow_the_client() -> anyhow::Result<()> {
    // One backend for everybody: every client change is a session change
    // on that backend.
    let c = start(false, &format!("{POOLED}pool_size = 1\n")).await?;
    let a = connect(c.primary_addr(), "alice", ALICE_PW).await?;
    let b = connect(c.primary_addr(), "alice", ALICE_PW).await?;
    assert_eq!(pid(&a).await, pid(&b).await, "one shared backend");

    a.batch_execute("SET work_mem = '7MB'").await?;
    assert_eq!(show(&b).await, "4MB", "a's SET must not reach b");
    assert_eq!(show(&a).await, "7MB", "a's SET follows a");
    b.batch_execute("SET work_mem = '9MB'").await?;
    assert_eq!(show(&a).await, "7MB");
    assert_eq!(show(&b).await, "9MB");
    a.batch_execute("RESET work_mem").await?;
    assert_eq!(show(&a).await, "4MB");

    // Both drivers name their first statement alike (s0, s1...): the
    // backend must never run one client's statement for the other.
    let sa = a.prepare("SELECT 'a'::text || $1::text").await?;
    let sb = b.prepare("SELECT 'b'::text || $1::text").await?;
    for i in 0..3 {
        let n = i.to_string();
        let ra: String = a.query_one(&sa, &[&n]).await?.get(0);
        let rb: String = b.query_one(&sb, &[&n]).await?.get(0);
        assert_eq!(ra, format!("a{i}"));
        assert_eq!(rb, format!("b{i}"));
    }
    Ok(())
}

async fn show(c: &tokio_postgres::Client) -> String {
    c.query_one("SHOW work_mem", &[]).await.unwrap().get(0)
}

/// With pool_size = 2: `holder` pins one backend with `create`; `other`
/// keeps the second one in an open transaction; a third client then finds
/// no backend (53300 after pool_wait_timeout). Once `holder` runs `release`
/// (and ends a transaction), its backend returns and the third client runs.
async fn pins_until_released(c: &Cluster, create: &str, release: &str) -> anyhow::Result<()> {
    let addr = c.primary_addr();
    let holder = connect(addr, "alice", ALICE_PW).await?;
    let other = connect(addr, "alice", ALICE_PW).await?;
    let third = connect(addr, "alice", ALICE_PW).await?;
    holder.batch_execute(create).await?;
    let pinned = pid(&holder).await;
    // The pinned client keeps its backend across transactions.
    for _ in 0..3 {
        other.batch_execute("SELECT 1").await?;
        assert_eq!(
            pid(&holder).await,
            pinned,
            "{create}: the pinned backend changed"
        );
    }
    other.batch_execute("BEGIN").await?;
    assert_ne!(pid(&other).await, pinned);
    let err = third
        .batch_execute("SELECT 1")
        .await
        .expect_err("no backend should be free while one is pinned and one in a transaction");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::TOO_MANY_CONNECTIONS),
        "{create}: {err}"
    );
    let text = err
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert!(
        text.contains("pool_size"),
        "the error names the setting: {text}"
    );

    holder.batch_execute(release).await?;
    holder.batch_execute("SELECT 1").await?;
    pgha_testkit::wait_until_async(
        "the released backend serves another client",
        Duration::from_secs(20),
        || async { third.batch_execute("SELECT 1").await.ok() },
    )
    .await?;
    other.batch_execute("COMMIT").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_state_pins_its_backend_until_it_is_gone() -> anyhow::Result<()> {
    let c = start(false, &format!("{POOLED}pool_size = 2\n")).await?;
    let cases = [
        (
            "CREATE TEMP TABLE scratch (x int); INSERT INTO scratch VALUES (1)",
            "DROP TABLE scratch",
        ),
        (
            "SELECT pg_advisory_lock(42)",
            "SELECT pg_advisory_unlock(42)",
        ),
        ("LISTEN pool_test", "UNLISTEN *"),
        (
            "BEGIN; DECLARE held CURSOR WITH HOLD FOR SELECT 1; COMMIT",
            "CLOSE held",
        ),
        ("CREATE TEMP TABLE again (x int)", "DISCARD ALL"),
    ];
    for (create, release) in cases {
        pins_until_released(&c, create, release).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temp_table_lives_across_transactions_like_on_a_dedicated_connection() -> anyhow::Result<()>
{
    let c = start(false, &format!("{POOLED}pool_size = 2\n")).await?;
    let a = connect(c.primary_addr(), "alice", ALICE_PW).await?;
    let b = connect(c.primary_addr(), "alice", ALICE_PW).await?;
    a.batch_execute("CREATE TEMP TABLE mine (x int)").await?;
    for i in 0..5 {
        a.execute("INSERT INTO mine VALUES ($1)", &[&i]).await?;
        // Another client's transactions in between must not see it.
        assert!(b.batch_execute("SELECT * FROM mine").await.is_err());
    }
    let n: i64 = a.query_one("SELECT count(*) FROM mine", &[]).await?.get(0);
    assert_eq!(n, 5);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_transaction_leaves_a_clean_backend() -> anyhow::Result<()> {
    let c = start(false, &format!("{POOLED}pool_size = 1\n")).await?;
    let addr = c.primary_addr();
    {
        let a = connect(addr, "alice", ALICE_PW).await?;
        a.batch_execute("BEGIN; INSERT INTO t (v) VALUES (777); SET LOCAL work_mem = '8MB'")
            .await?;
        a.batch_execute("CREATE TEMP TABLE left_behind (x int)")
            .await?;
        // Dropped without COMMIT.
    }
    let b = connect(addr, "alice", ALICE_PW).await?;
    pgha_testkit::wait_until_async(
        "the backend back in the pool",
        Duration::from_secs(20),
        || async { b.batch_execute("SELECT 1").await.ok() },
    )
    .await?;
    let n: i64 = b
        .query_one("SELECT count(*) FROM t WHERE v = 777", &[])
        .await?
        .get(0);
    assert_eq!(n, 0, "the abandoned transaction must not commit");
    assert!(
        b.batch_execute("SELECT * FROM left_behind").await.is_err(),
        "the abandoned session's temp table is gone"
    );
    assert_eq!(
        b.query_one("SHOW work_mem", &[]).await?.get::<_, String>(0),
        "4MB"
    );
    Ok(())
}

async fn admin(
    c: &Cluster,
    user: &str,
    pw: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(
        &conn_str(c.primary_addr(), user, pw, "pgha"),
        tokio_postgres::NoTls,
    )
    .await?;
    tokio::spawn(conn);
    Ok(client)
}

/// The rows of an admin command, as column -> value maps.
async fn admin_rows(
    a: &tokio_postgres::Client,
    command: &str,
) -> Vec<std::collections::HashMap<String, String>> {
    a.simple_query(command)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                r.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.name().to_string(), r.get(i).unwrap_or("").to_string()))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// PIDs of alice's backends as PostgreSQL lists them.
fn alice_pids(c: &Cluster) -> std::collections::BTreeSet<i32> {
    c.primary
        .psql(
            "postgres",
            "SELECT pid FROM pg_stat_activity WHERE usename = 'alice' ORDER BY pid",
        )
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_console_matches_pg_stat_activity_and_pauses() -> anyhow::Result<()> {
    let c = start(
        false,
        &format!("{POOLED}pool_size = 3\nadmin_users = [\"alice\"]\n"),
    )
    .await?;
    let addr = c.primary_addr();
    let mut clients = Vec::new();
    for _ in 0..3 {
        let client = connect(addr, "alice", ALICE_PW).await?;
        client.batch_execute("BEGIN; SELECT 1").await?;
        clients.push(client);
    }
    let a = admin(&c, "alice", ALICE_PW).await?;
    let pools = admin_rows(&a, "SHOW POOLS").await;
    assert_eq!(pools.len(), 1, "{pools:?}");
    assert_eq!(pools[0]["user"], "alice");
    assert_eq!(pools[0]["database"], "postgres");
    assert_eq!(pools[0]["sv_active"], "3");
    assert_eq!(pools[0]["sv_total"], alice_pids(&c).len().to_string());
    let servers: std::collections::BTreeSet<i32> = admin_rows(&a, "SHOW SERVERS")
        .await
        .iter()
        .map(|r| r["pid"].parse().unwrap())
        .collect();
    assert_eq!(
        servers,
        alice_pids(&c),
        "SHOW SERVERS lists what pg_stat_activity lists"
    );
    let listed = admin_rows(&a, "SHOW CLIENTS").await;
    let alices: Vec<_> = listed.iter().filter(|r| r["user"] == "alice").collect();
    assert_eq!(alices.len(), 3, "{listed:?}");
    assert!(alices.iter().all(|r| r["state"] == "active"
        && r["pool_mode"] == "transaction"
        && r["database"] == "postgres"));
    let serving: std::collections::BTreeSet<i32> = alices
        .iter()
        .flat_map(|r| {
            r["server_pids"]
                .split_whitespace()
                .map(|p| p.parse().unwrap())
        })
        .collect();
    assert_eq!(
        serving,
        alice_pids(&c),
        "the backends SHOW CLIENTS names are those pg_stat_activity lists"
    );
    for client in &clients {
        client.batch_execute("COMMIT").await?;
    }
    pgha_testkit::wait_until_async(
        "clients idle, holding no backend",
        Duration::from_secs(10),
        || async {
            let rows = admin_rows(&a, "SHOW CLIENTS").await;
            rows.iter()
                .filter(|r| r["user"] == "alice")
                .all(|r| r["state"] == "idle" && r["server_pids"].is_empty())
                .then_some(())
        },
    )
    .await?;
    pgha_testkit::wait_until_async(
        "backends idle in the pool",
        Duration::from_secs(10),
        || async {
            let p = admin_rows(&a, "SHOW POOLS").await;
            (p[0]["sv_idle"] == "3" && p[0]["sv_active"] == "0").then_some(())
        },
    )
    .await?;

    // PAUSE: new transactions wait until RESUME.
    a.simple_query("PAUSE postgres").await?;
    let paused_query = clients[0].simple_query("SELECT 42");
    tokio::pin!(paused_query);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut paused_query)
            .await
            .is_err(),
        "a transaction ran while its database was paused"
    );
    assert_eq!(admin_rows(&a, "SHOW POOLS").await[0]["paused"], "true");
    a.simple_query("RESUME postgres").await?;
    tokio::time::timeout(Duration::from_secs(10), paused_query).await??;

    // Unknown commands and other roles are refused with a clear error.
    let err = a.simple_query("SHOW NOTHING").await.unwrap_err();
    let text = err
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert!(text.contains("SHOW HELP"), "{err:?}");
    let Err(err) = admin(&c, "bob", BOB_PW).await else {
        panic!("bob is not in admin_users and must be refused")
    };
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION),
        "{err}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_pool_size_keeps_warm_backends_and_dead_ones_are_replaced() -> anyhow::Result<()> {
    // server_check_delay = 0s: every reuse is checked first.
    let c = start(
        false,
        &format!(
            "{POOLED}pool_size = 4\nmin_pool_size = 2\nserver_check_delay = \"0s\"\n\
             server_idle_timeout = \"5s\"\nadmin_users = [\"alice\"]\n"
        ),
    )
    .await?;
    let client = connect(c.primary_addr(), "alice", ALICE_PW).await?;
    client.batch_execute("SELECT 1").await?;
    let a = admin(&c, "alice", ALICE_PW).await?;
    let two_warm = || async {
        let pids = alice_pids(&c);
        let servers: std::collections::BTreeSet<i32> = admin_rows(&a, "SHOW SERVERS")
            .await
            .iter()
            .map(|r| r["pid"].parse().unwrap())
            .collect();
        (pids.len() == 2 && servers == pids).then_some(pids)
    };
    let warm = pgha_testkit::wait_until_async(
        "min_pool_size backends open",
        Duration::from_secs(20),
        two_warm,
    )
    .await?;

    // Kill them behind the proxy's back: the client never sees a dead one,
    // and the pool fills up again.
    c.primary.psql(
        "postgres",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'alice'",
    )?;
    pgha_testkit::wait_until_async("the old backends gone", Duration::from_secs(10), || async {
        alice_pids(&c).is_disjoint(&warm).then_some(())
    })
    .await?;
    for _ in 0..3 {
        client.batch_execute("SELECT 1").await?;
    }
    let replaced = pgha_testkit::wait_until_async(
        "min_pool_size backends open again",
        Duration::from_secs(20),
        two_warm,
    )
    .await?;
    assert!(replaced.is_disjoint(&warm), "{replaced:?} vs {warm:?}");
    Ok(())
}

/// The first column of the first row of a simple query.
async fn value(c: &tokio_postgres::Client, sql: &str) -> Result<String, tokio_postgres::Error> {
    let rows = c.simple_query(sql).await?;
    Ok(rows
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap_or_default())
}

/// SQLSTATE and message of a failed statement.
async fn failure(c: &tokio_postgres::Client, sql: &str) -> (String, String) {
    let e = c.simple_query(sql).await.expect_err(sql);
    let db = e.as_db_error().unwrap_or_else(|| panic!("{sql}: {e}"));
    (db.code().code().to_string(), db.message().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_prepared_statements_follow_the_client() -> anyhow::Result<()> {
    // One backend for everybody: two clients' statements of the same name
    // take turns on it.
    let c = start(false, &format!("{POOLED}pool_size = 1\n")).await?;
    let addr = c.primary_addr();
    let direct = std::net::SocketAddr::from(([127, 0, 0, 1], c.primary.port));
    let a = connect(addr, "alice", ALICE_PW).await?;
    let b = connect(addr, "alice", ALICE_PW).await?;
    let d = connect(direct, "alice", ALICE_PW).await?;

    a.batch_execute("PREPARE s (int) AS SELECT $1 * 2").await?;
    b.batch_execute("PREPARE s AS SELECT 'b'").await?;
    // Through the extended protocol too (tokio-postgres: Parse, Bind, Execute).
    a.execute("PREPARE ext AS SELECT 7", &[]).await?;
    for i in 0..3 {
        assert_eq!(
            value(&a, &format!("EXECUTE s({i})")).await?,
            (i * 2).to_string()
        );
        assert_eq!(value(&b, "EXECUTE s").await?, "b");
    }
    assert_eq!(value(&a, "EXECUTE ext").await?, "7");

    // A new backend (the old one killed behind the proxy's back): the
    // client's statements are prepared on it again.
    let old = pid(&a).await;
    c.primary
        .psql("postgres", &format!("SELECT pg_terminate_backend({old})"))?;
    pgha_testkit::wait_until_async("the backend gone", Duration::from_secs(10), || async {
        (!alice_pids(&c).contains(&old)).then_some(())
    })
    .await?;
    assert_eq!(value(&a, "EXECUTE s(21)").await?, "42");
    assert_ne!(pid(&a).await, old);
    assert_eq!(value(&b, "EXECUTE s").await?, "b");

    // Errors exactly as on a dedicated connection: `fresh` and `d_fresh`
    // have no statement, `a` and `d` the same `s`.
    let fresh = connect(addr, "alice", ALICE_PW).await?;
    let d_fresh = connect(direct, "alice", ALICE_PW).await?;
    d.batch_execute("PREPARE s (int) AS SELECT $1 * 2").await?;
    for (client, reference, sql) in [
        (&fresh, &d_fresh, "EXECUTE s"),
        (&fresh, &d_fresh, "DEALLOCATE s"),
        (&a, &d, "PREPARE s AS SELECT 1"),
        (&a, &d, "EXECUTE s(1, 2)"),
    ] {
        assert_eq!(
            failure(client, sql).await,
            failure(reference, sql).await,
            "{sql}: SQLSTATE and message through the proxy vs direct"
        );
    }
    assert_eq!(failure(&fresh, "EXECUTE s").await.0, "26000");

    // DEALLOCATE and DEALLOCATE ALL: gone for that client only.
    a.batch_execute("DEALLOCATE s").await?;
    assert_eq!(failure(&a, "EXECUTE s(1)").await.0, "26000");
    assert_eq!(value(&a, "EXECUTE ext").await?, "7");
    assert_eq!(value(&b, "EXECUTE s").await?, "b");
    a.batch_execute("PREPARE s AS SELECT 'again'").await?;
    b.batch_execute("DEALLOCATE ALL").await?;
    assert_eq!(failure(&b, "EXECUTE s").await.0, "26000");
    assert_eq!(value(&a, "EXECUTE s").await?, "again");
    assert_eq!(value(&a, "EXECUTE ext").await?, "7");
    // A failed PREPARE makes nothing; the name can be used afterwards.
    assert_eq!(failure(&b, "PREPARE s AS SELEC 1").await.0, "42601");
    assert_eq!(failure(&b, "EXECUTE s").await.0, "26000");
    b.batch_execute("PREPARE s AS SELECT 'b2'").await?;
    assert_eq!(value(&b, "EXECUTE s").await?, "b2");
    Ok(())
}
