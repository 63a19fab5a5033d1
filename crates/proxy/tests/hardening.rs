//! The client side's limits: `authentication_timeout` (half a startup
//! packet, a SCRAM exchange left hanging), `max_client_connections` (FATAL
//! 53300 with PostgreSQL's text, the slot freed when a client leaves), and
//! the per-message header checks after login (an unknown type or a bad
//! length refused from the header alone, without waiting for the body; a
//! message over `max_client_message_bytes` refused with an error naming it
//! while other clients keep working).
//!
//! The first two need no PostgreSQL: the proxy runs with a static topology
//! whose primary does not exist (nothing here reaches a backend).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking

mod common;

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use common::*;
use pgha_proxy::codec::backend::Authentication as A;
use pgha_proxy::codec::startup::PROTOCOL_3_0;
use pgha_proxy::codec::{BackendMessage as B, FrontendMessage as F, StartupMessage};
use pgha_proxy::{Node, Proxy, ProxyHandle, ProxySettings, StaticTopology, Topology};
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// Generous: the proxy's own timeouts in these tests are far shorter.
const DEADLINE: Duration = Duration::from_secs(30);

/// A proxy whose (static) primary does not exist, with `extra` settings.
/// The topology source and the config's directory live as long as the
/// returned `Bare`.
struct Bare {
    proxy: ProxyHandle,
    _topology: StaticTopology,
    _dir: tempfile::TempDir,
}

async fn bare_proxy(extra: &str) -> anyhow::Result<Bare> {
    init_logs();
    let dir = tempfile::tempdir()?;
    let pwfile = dir.path().join("monitor.pw");
    std::fs::write(&pwfile, "monitor-pw\n")?;
    let toml = format!(
        "listen_rw = \"127.0.0.1:0\"\nlisten_ro = \"127.0.0.1:0\"\nlisten_primary = \"\"\n\
         monitor_password_file = {:?}\n{extra}\n[topology]\nkind = \"static\"\n",
        pwfile.display().to_string()
    );
    let settings: ProxySettings = toml::from_str(&toml).context("parse test proxy config")?;
    let password = settings.monitor_password()?;
    let topology = StaticTopology::new(Topology {
        primary: Some(Node {
            name: "nowhere".into(),
            host: "127.0.0.1".into(),
            port: 1,
        }),
        standbys: Vec::new(),
        generation: 1,
        paused: false,
        in_flight: Default::default(),
    });
    let proxy = Proxy::start(settings, password, topology.subscribe()).await?;
    Ok(Bare {
        proxy,
        _topology: topology,
        _dir: dir,
    })
}

fn startup_packet(user: &str) -> BytesMut {
    let mut out = BytesMut::new();
    StartupMessage::Startup {
        version: PROTOCOL_3_0,
        params: vec![
            ("user".into(), user.into()),
            ("database".into(), "postgres".into()),
        ],
    }
    .encode(&mut out);
    out
}

fn encode(msgs: &[F]) -> BytesMut {
    let mut out = BytesMut::new();
    for m in msgs {
        m.encode(&mut out);
    }
    out
}

/// An ErrorResponse's fields by their code byte.
fn fields(body: &[u8]) -> Vec<(u8, String)> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some((&c, tail)) = rest.split_first() {
        if c == 0 {
            break;
        }
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        out.push((c, String::from_utf8_lossy(&tail[..end]).into_owned()));
        rest = tail.get(end + 1..).unwrap_or(&[]);
    }
    out
}

fn field(body: &[u8], code: u8) -> Option<String> {
    fields(body)
        .into_iter()
        .find(|(c, _)| *c == code)
        .map(|(_, v)| v)
}

/// Reads until the proxy closes the connection (end of stream or reset),
/// within [`DEADLINE`]; returns every byte it sent before that.
async fn closed(stream: &mut tokio::net::TcpStream) -> anyhow::Result<Vec<u8>> {
    let mut got = Vec::new();
    let read_all = async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(DEADLINE, read_all)
        .await
        .context("the proxy did not close the connection")?;
    Ok(got)
}

/// The one message in `bytes` (a FATAL ErrorResponse): its fields.
fn only_error(bytes: &[u8]) -> anyhow::Result<Vec<(u8, String)>> {
    let mut buf = BytesMut::from(bytes);
    let msg = B::decode(&mut buf, 1 << 20)?.context("no complete message before the close")?;
    anyhow::ensure!(buf.is_empty(), "more than one message: {bytes:?}");
    match msg {
        B::ErrorResponse(body) => Ok(fields(&body)),
        other => anyhow::bail!("expected an ErrorResponse, got {other:?}"),
    }
}

async fn wait_clients(proxy: &ProxyHandle, n: usize) -> anyhow::Result<()> {
    let shared = proxy.shared.clone();
    pgha_testkit::wait_until_async(&format!("{n} client connections counted"), DEADLINE, || {
        let count = shared.client_count();
        async move { (count == n).then_some(()) }
    })
    .await
}

/// Half a startup packet: closed without a message once
/// `authentication_timeout` has passed, and its slot is freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_startup_packet_is_closed_after_the_timeout() -> anyhow::Result<()> {
    let bare = bare_proxy("authentication_timeout = \"1s\"").await?;
    let proxy = &bare.proxy;
    let mut raw = Raw::connect(proxy.rw.context("rw")?).await?;
    let packet = startup_packet("alice");
    raw.send(&packet[..packet.len() / 2]).await?;
    let got = closed(&mut raw.stream).await?;
    assert!(got.is_empty(), "PostgreSQL says nothing either: {got:?}");
    wait_clients(proxy, 0).await?;

    // Same for a client that sends nothing at all, and for one that stops
    // after an SSLRequest was declined.
    let mut silent = Raw::connect(proxy.ro.context("ro")?).await?;
    assert!(closed(&mut silent.stream).await?.is_empty());
    let mut ssl = Raw::connect(proxy.rw.context("rw")?).await?;
    ssl.send(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).await?;
    // ('N' unless the timeout came first on a stalled machine.)
    let got = closed(&mut ssl.stream).await?;
    assert!(got.is_empty() || got == b"N", "{got:?}");
    wait_clients(proxy, 0).await
}

/// Past `max_client_connections` (counted across listeners) a client gets
/// PostgreSQL's FATAL 53300 after its startup packet; a slot is freed when
/// its client leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_clients_get_53300() -> anyhow::Result<()> {
    let bare = bare_proxy("max_client_connections = 2").await?;
    let proxy = &bare.proxy;
    let rw = proxy.rw.context("rw")?;
    let ro = proxy.ro.context("ro")?;
    let first = Raw::connect(rw).await?;
    let second = Raw::connect(ro).await?;
    wait_clients(proxy, 2).await?;

    for addr in [rw, ro] {
        let mut third = Raw::connect(addr).await?;
        third.send(&startup_packet("alice")).await?;
        let got = closed(&mut third.stream).await?;
        let err = only_error(&got)?;
        assert!(err.contains(&(b'S', "FATAL".into())), "{err:?}");
        assert!(err.contains(&(b'C', "53300".into())), "{err:?}");
        assert!(
            err.contains(&(b'M', "sorry, too many clients already".into())),
            "{err:?}"
        );
    }

    // As in PostgreSQL the SSLRequest is still answered first.
    let mut ssl = Raw::connect(rw).await?;
    ssl.send(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).await?;
    let mut answer = [0u8; 1];
    tokio::time::timeout(DEADLINE, ssl.stream.read_exact(&mut answer)).await??;
    assert_eq!(&answer, b"N");
    ssl.send(&startup_packet("alice")).await?;
    let err = only_error(&closed(&mut ssl.stream).await?)?;
    assert!(err.contains(&(b'C', "53300".into())), "{err:?}");
    wait_clients(proxy, 2).await?;

    // One leaves: the next client is served (here: the role lookup fails,
    // since there is no server, which is not 53300).
    drop(first);
    wait_clients(proxy, 1).await?;
    let mut next = Raw::connect(rw).await?;
    next.send(&startup_packet("alice")).await?;
    let err = only_error(&closed(&mut next.stream).await?)?;
    assert!(!err.contains(&(b'C', "53300".into())), "{err:?}");
    drop(second);
    wait_clients(proxy, 0).await
}

/// Refusals that wait for a startup packet are bounded too: past
/// `max_client_connections` of them a client gets 53300 at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_bounded_too() -> anyhow::Result<()> {
    let bare = bare_proxy("max_client_connections = 1").await?;
    let proxy = &bare.proxy;
    let rw = proxy.rw.context("rw")?;
    let _client = Raw::connect(rw).await?;
    wait_clients(proxy, 1).await?;
    let silent = Raw::connect(rw).await?;
    let shared = proxy.shared.clone();
    pgha_testkit::wait_until_async("one refusal under way", DEADLINE, || {
        let n = shared.refusing_count();
        async move { (n == 1).then_some(()) }
    })
    .await?;
    // Sends nothing, gets the error anyway.
    let mut third = Raw::connect(rw).await?;
    let err = only_error(&closed(&mut third.stream).await?)?;
    assert!(err.contains(&(b'C', "53300".into())), "{err:?}");
    assert!(
        err.contains(&(b'M', "sorry, too many clients already".into())),
        "{err:?}"
    );
    drop(silent);
    pgha_testkit::wait_until_async("no refusal under way", DEADLINE, || {
        let n = shared.refusing_count();
        async move { (n == 0).then_some(()) }
    })
    .await?;
    wait_clients(proxy, 1).await
}

/// A client that stops in the middle of its SCRAM exchange is closed once
/// `authentication_timeout` has passed; other logins are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_scram_client_is_closed_after_the_timeout() -> anyhow::Result<()> {
    // Long enough for a whole login on a loaded machine.
    let c = start(false, "authentication_timeout = \"10s\"").await?;
    // A whole login fits in the timeout (and warms the monitor's pool).
    let mut quick = Raw::login(c.rw(), "alice", ALICE_PW).await?;

    let mut slow = Raw::connect(c.rw()).await?;
    slow.send(&startup_packet("alice")).await?;
    let msg = slow.next().await?.context("closed before SASL")?;
    assert!(matches!(msg, B::Authentication(A::Sasl { .. })), "{msg:?}");
    let first = pgha_proxy::codec::frontend::sasl_initial_response(
        "SCRAM-SHA-256",
        b"n,,n=,r=slowclientnonce",
    );
    slow.send(&encode(&[first])).await?;
    let msg = slow.next().await?.context("closed before SASLContinue")?;
    assert!(
        matches!(msg, B::Authentication(A::SaslContinue(_))),
        "{msg:?}"
    );
    // ... and never sends its proof.
    let got = closed(&mut slow.stream).await?;
    assert!(got.is_empty(), "closed without a message: {got:?}");

    let rows = quick.query("SELECT 1").await?;
    assert!(
        rows.iter()
            .any(|m| matches!(m, Some(B::Other { tag: b'D', .. }))),
        "{rows:?}"
    );
    Ok(())
}

/// Logs in and sends `bytes`; the proxy must answer with one FATAL (code,
/// message) and close, without waiting for anything more.
async fn refused(c: &Cluster, bytes: &[u8], code: &str, message: &str) -> anyhow::Result<()> {
    let mut raw = Raw::login(c.rw(), "alice", ALICE_PW).await?;
    raw.send(bytes).await?;
    let msg = raw.next().await?.context("closed without an error")?;
    let B::ErrorResponse(body) = msg else {
        anyhow::bail!("for {bytes:?}: expected an error, got {msg:?}");
    };
    assert_eq!(
        field(&body, b'S').as_deref(),
        Some("FATAL"),
        "for {bytes:?}"
    );
    assert_eq!(field(&body, b'C').as_deref(), Some(code), "for {bytes:?}");
    assert_eq!(
        field(&body, b'M').as_deref(),
        Some(message),
        "for {bytes:?}"
    );
    assert!(raw.next().await?.is_none(), "closed after the error");
    Ok(())
}

/// After login each message header is checked when it arrives: the error
/// comes from the header alone (the body is never sent here), and a
/// message over `max_client_message_bytes` is refused naming the setting
/// while a bystander keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_headers_are_refused_before_their_body() -> anyhow::Result<()> {
    let c = start(false, "max_client_message_bytes = 65536").await?;
    let bystander = connect(c.rw(), "alice", ALICE_PW).await?;
    bystander
        .batch_execute("BEGIN; INSERT INTO t (v) VALUES (1)")
        .await?;

    // An unknown type: refused at its type byte, then with a length word.
    refused(&c, b"!", "08P01", "invalid frontend message type 33").await?;
    refused(
        &c,
        b"!\0\0\0\x64",
        "08P01",
        "invalid frontend message type 33",
    )
    .await?;
    // A password message after login is an unknown type, as in PostgreSQL.
    refused(
        &c,
        b"p\0\0\0\x28",
        "08P01",
        "invalid frontend message type 112",
    )
    .await?;
    // Sync claiming (almost) 1 GiB, and one byte more than its 4.
    refused(&c, b"S\x3f\xff\xff\xf0", "08P01", "invalid message length").await?;
    refused(&c, b"S\0\0\0\x05", "08P01", "invalid message length").await?;
    // Execute shorter than its shortest body; Describe over PostgreSQL's
    // 10000 for such messages.
    refused(&c, b"E\0\0\0\x05", "08P01", "invalid message length").await?;
    refused(&c, b"D\0\0\x27\x11", "08P01", "invalid message length").await?;
    // A Query over the cap: refused from its header, naming the setting
    // (the proxy never buffers it).
    refused(
        &c,
        b"Q\0\x01\x86\xa0",
        "54000",
        "message too large: 100000 bytes, more than the proxy's \
         max_client_message_bytes (65536)",
    )
    .await?;

    // Bytes sent with the password message (before the login ended) are
    // checked too.
    let mut raw = Raw::connect(c.rw()).await?;
    raw.send(&startup_packet("bob")).await?;
    let msg = raw
        .next()
        .await?
        .context("closed before the md5 challenge")?;
    let B::Authentication(A::Md5Password { salt }) = msg else {
        anyhow::bail!("expected an md5 challenge, got {msg:?}");
    };
    let hash = pgha_proxy::auth::md5_verifier("bob", BOB_PW);
    let answer = pgha_proxy::auth::md5_response(&hash, &salt);
    let mut wire = encode(&[pgha_proxy::codec::frontend::password_message(
        answer.as_bytes(),
    )]);
    wire.extend_from_slice(b"!\0\0\0\x64");
    raw.send(&wire).await?;
    let error = loop {
        match raw.next().await?.context("closed without an error")? {
            B::ErrorResponse(body) => break fields(&body),
            _ => continue,
        }
    };
    assert!(error.contains(&(b'C', "08P01".into())), "{error:?}");
    assert!(
        error.contains(&(b'M', "invalid frontend message type 33".into())),
        "{error:?}"
    );
    assert!(raw.next().await?.is_none(), "closed after the error");

    // Under the cap a large query works, split over many reads, and so do
    // pipelined messages whose headers straddle writes.
    let mut raw = Raw::login(c.rw(), "alice", ALICE_PW).await?;
    let long = format!("SELECT length('{}')", "x".repeat(60_000));
    let mut wire = encode(&[F::Query {
        sql: Bytes::from(long),
    }]);
    wire.extend_from_slice(&encode(&[F::Query {
        sql: Bytes::from_static(b"SELECT 2"),
    }]));
    for part in [
        &wire[..1],
        &wire[1..3],
        &wire[3..40_000],
        &wire[40_000..60_010],
    ] {
        raw.send(part).await?;
    }
    raw.send(&wire[60_010..]).await?;
    let mut values = Vec::new();
    let mut ready = 0;
    while ready < 2 {
        match raw.next().await?.context("closed")? {
            B::ReadyForQuery { .. } => ready += 1,
            B::ErrorResponse(e) => anyhow::bail!("error: {:?}", fields(&e)),
            B::Other { tag: b'D', body } if body.len() >= 6 => {
                values.push(String::from_utf8_lossy(&body[6..]).into_owned())
            }
            _ => {}
        }
    }
    assert_eq!(values, ["60000", "2"]);

    // The bystander's transaction is intact.
    bystander.batch_execute("COMMIT").await?;
    let n: i64 = bystander
        .query_one("SELECT count(*) FROM t WHERE v = 1", &[])
        .await?
        .get(0);
    assert_eq!(n, 1);
    Ok(())
}
