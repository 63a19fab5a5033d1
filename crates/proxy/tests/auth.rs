//! Authentication through the proxy against a real PostgreSQL: SCRAM with the
//! right and a wrong password, an unknown role, an md5 role.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking

mod common;

use common::*;

fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.code().code().to_string())
        .unwrap_or_else(|| format!("no db error: {e}"))
}

fn message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_md5_wrong_and_unknown() -> anyhow::Result<()> {
    let c = start(false, "").await?;
    for addr in [c.rw(), c.ro(), c.primary_addr()] {
        let client = connect(addr, "alice", ALICE_PW).await?;
        let row = client
            .query_one("SELECT current_user::text, 1 + $1::int", &[&41i32])
            .await?;
        assert_eq!(row.get::<_, String>(0), "alice");
        assert_eq!(row.get::<_, i32>(1), 42);
    }
    let e = connect(c.rw(), "alice", "wrong").await.unwrap_err();
    assert_eq!(sqlstate(&e), "28P01");
    assert_eq!(
        message(&e),
        "password authentication failed for user \"alice\""
    );
    let e = connect(c.rw(), "nosuchrole", "x").await.unwrap_err();
    assert_eq!(sqlstate(&e), "28P01");
    assert_eq!(
        message(&e),
        "password authentication failed for user \"nosuchrole\""
    );
    // Direct to PostgreSQL the answer is the same.
    let direct = std::net::SocketAddr::from(([127, 0, 0, 1], c.primary.port));
    let e = connect(direct, "nosuchrole", "x").await.unwrap_err();
    assert_eq!(
        message(&e),
        "password authentication failed for user \"nosuchrole\""
    );

    let bob = connect(c.rw(), "bob", BOB_PW).await?;
    let row = bob.query_one("SELECT current_user::text", &[]).await?;
    assert_eq!(row.get::<_, String>(0), "bob");
    let e = connect(c.rw(), "bob", "nope").await.unwrap_err();
    assert_eq!(sqlstate(&e), "28P01");
    assert_eq!(
        message(&e),
        "password authentication failed for user \"bob\""
    );
    Ok(())
}
