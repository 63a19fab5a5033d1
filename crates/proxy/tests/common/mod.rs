//! Shared set-up for the proxy's end-to-end tests: a real primary (and
//! optionally a streaming standby), the auth lookup function, test roles,
//! and a proxy on port-0 listeners with a static topology.

#![allow(dead_code)]

use anyhow::Context;
use pgha_proxy::auth::AUTH_LOOKUP_SQL;
use pgha_proxy::{Node, Proxy, ProxyHandle, ProxySettings, StaticTopology, Topology};
use pgha_testkit::pg::PgServer;
use std::net::SocketAddr;
use std::time::Duration;

pub const ALICE_PW: &str = "alice-secret";
pub const BOB_PW: &str = "bob-md5-secret";

pub struct Cluster {
    pub primary: PgServer,
    pub standby: Option<PgServer>,
    pub topology: StaticTopology,
    pub proxy: ProxyHandle,
    _dir: tempfile::TempDir,
}

pub fn node(name: &str, pg: &PgServer) -> Node {
    Node {
        name: name.into(),
        host: "127.0.0.1".into(),
        port: pg.port,
    }
}

/// Primary (+ standby) with roles alice (SCRAM), bob (md5) and table `t`.
pub fn start_servers(with_standby: bool) -> anyhow::Result<(PgServer, Option<PgServer>)> {
    let primary = PgServer::start()?;
    let setup = format!(
        "CREATE ROLE pgha_monitor LOGIN PASSWORD 'monitor-pw'; {AUTH_LOOKUP_SQL} \
         CREATE ROLE alice LOGIN SUPERUSER PASSWORD '{ALICE_PW}'; \
         SET password_encryption = 'md5'; \
         CREATE ROLE bob LOGIN PASSWORD '{BOB_PW}' IN ROLE pgha_md5_users; \
         CREATE TABLE t (id serial PRIMARY KEY, v int); GRANT ALL ON t, t_id_seq TO bob;"
    );
    primary.psql("postgres", &setup)?;
    let standby = if with_standby {
        Some(primary.start_standby()?)
    } else {
        None
    };
    Ok((primary, standby))
}

pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_test_writer()
        .try_init();
}

pub async fn start(with_standby: bool, extra: &str) -> anyhow::Result<Cluster> {
    init_logs();
    let (primary, standby) =
        tokio::task::spawn_blocking(move || start_servers(with_standby)).await??;
    let dir = tempfile::tempdir()?;
    let pwfile = dir.path().join("monitor.pw");
    std::fs::write(&pwfile, "monitor-pw\n")?;
    let toml = format!(
        "listen_rw = \"127.0.0.1:0\"\nlisten_ro = \"127.0.0.1:0\"\nlisten_primary = \"127.0.0.1:0\"\n\
         monitor_password_file = {:?}\nmonitor_interval = \"20ms\"\nprimary_wait_timeout = \"10s\"\n{extra}\n\
         [topology]\nkind = \"static\"\n",
        pwfile.display().to_string()
    );
    let settings: ProxySettings = toml::from_str(&toml).context("parse test proxy config")?;
    let password = settings.monitor_password()?;
    let topology = StaticTopology::new(Topology {
        primary: Some(node("pg1", &primary)),
        standbys: standby.iter().map(|s| node("pg2", s)).collect(),
        generation: 1,
        paused: false,
        in_flight: Default::default(),
    });
    let proxy = Proxy::start(settings, password, topology.subscribe()).await?;
    Ok(Cluster {
        primary,
        standby,
        topology,
        proxy,
        _dir: dir,
    })
}

impl Cluster {
    pub fn rw(&self) -> SocketAddr {
        self.proxy.rw.expect("rw listener")
    }
    pub fn ro(&self) -> SocketAddr {
        self.proxy.ro.expect("ro listener")
    }
    pub fn primary_addr(&self) -> SocketAddr {
        self.proxy.primary.expect("primary listener")
    }

    /// Waits until the proxy's monitor sees the standby as healthy.
    pub async fn wait_standby_healthy(&self) -> anyhow::Result<()> {
        let node = node("pg2", self.standby.as_ref().context("no standby")?);
        let monitor = self.proxy.shared.monitor.clone();
        pgha_testkit::wait_until_async(
            "standby healthy in the proxy monitor",
            Duration::from_secs(20),
            || {
                let st = monitor.stats(&node).status();
                async move { (st.ok_started.is_some() && st.in_recovery).then_some(()) }
            },
        )
        .await
    }
}

pub fn conn_str(addr: SocketAddr, user: &str, password: &str, db: &str) -> String {
    format!(
        "host={} port={} user={user} password={password} dbname={db} connect_timeout=10",
        addr.ip(),
        addr.port()
    )
}

pub async fn connect(
    addr: SocketAddr,
    user: &str,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(
        &conn_str(addr, user, password, "postgres"),
        tokio_postgres::NoTls,
    )
    .await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Whether a plain read (`SELECT 1`, simple query) was served by the
/// standby: read from the proxy's per-node counters of client units (no SQL
/// can tell: a read the proxy sends to a standby must answer as the primary
/// would, so server-identifying functions always run on the primary).
/// Inside a transaction this tells where the transaction runs. The caller
/// must have no other client of this proxy running statements meanwhile.
pub async fn served_by_standby(c: &Cluster, client: &tokio_postgres::Client) -> bool {
    let stats = c
        .standby
        .as_ref()
        .map(|s| c.proxy.shared.monitor.stats(&node("pg2", s)));
    let before = stats
        .as_ref()
        .map_or(0, |s| s.served.load(std::sync::atomic::Ordering::Relaxed));
    client.simple_query("SELECT 1").await.expect("SELECT 1");
    let after = stats
        .as_ref()
        .map_or(0, |s| s.served.load(std::sync::atomic::Ordering::Relaxed));
    after > before
}

/// A hand-driven protocol client, for feeding the proxy bad bytes.
pub struct Raw {
    pub stream: tokio::net::TcpStream,
    buf: bytes::BytesMut,
    /// ParameterStatus values received during login, in order.
    pub params: Vec<(String, String)>,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Raw> {
        Ok(Raw {
            stream: tokio::net::TcpStream::connect(addr).await?,
            buf: bytes::BytesMut::new(),
            params: Vec::new(),
        })
    }

    pub async fn send(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    /// The next backend message, `None` when the proxy closed the connection.
    pub async fn next(&mut self) -> anyhow::Result<Option<pgha_proxy::codec::BackendMessage>> {
        use tokio::io::AsyncReadExt;
        loop {
            if let Some(m) = pgha_proxy::codec::BackendMessage::decode(&mut self.buf, 1 << 30)? {
                return Ok(Some(m));
            }
            let n =
                tokio::time::timeout(Duration::from_secs(20), self.stream.read_buf(&mut self.buf))
                    .await??;
            if n == 0 {
                return Ok(None);
            }
        }
    }

    /// Logs in with SCRAM and reads up to the first ReadyForQuery.
    pub async fn login(addr: SocketAddr, user: &str, password: &str) -> anyhow::Result<Raw> {
        Raw::login_to(addr, user, password, "postgres").await
    }

    /// The value of a ParameterStatus the login reported.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sends a simple query; returns the messages up to ReadyForQuery
    /// (`None` in the list: the proxy closed the connection).
    pub async fn query(
        &mut self,
        sql: &str,
    ) -> anyhow::Result<Vec<Option<pgha_proxy::codec::BackendMessage>>> {
        use pgha_proxy::codec::{BackendMessage as B, FrontendMessage};
        let mut out = bytes::BytesMut::new();
        FrontendMessage::Query {
            sql: bytes::Bytes::from(sql.to_string()),
        }
        .encode(&mut out);
        self.send(&out).await?;
        let mut got = Vec::new();
        loop {
            let m = self.next().await?;
            let end = matches!(m, None | Some(B::ReadyForQuery { .. }));
            got.push(m);
            if end {
                return Ok(got);
            }
        }
    }

    /// Logs in with SCRAM to database `db` and reads up to the first ReadyForQuery.
    pub async fn login_to(
        addr: SocketAddr,
        user: &str,
        password: &str,
        db: &str,
    ) -> anyhow::Result<Raw> {
        use pgha_proxy::codec::backend::Authentication as A;
        use pgha_proxy::codec::{BackendMessage as B, FrontendMessage, StartupMessage};
        let mut raw = Raw::connect(addr).await?;
        let mut out = bytes::BytesMut::new();
        StartupMessage::Startup {
            version: pgha_proxy::codec::startup::PROTOCOL_3_0,
            params: vec![("user".into(), user.into()), ("database".into(), db.into())],
        }
        .encode(&mut out);
        raw.send(&out).await?;
        let mut client: Option<(String, String)> = None;
        loop {
            let msg = raw.next().await?.context("closed during login")?;
            out.clear();
            match msg {
                B::Authentication(A::Sasl { .. }) => {
                    let bare = "n=,r=rawclientnonce".to_string();
                    pgha_proxy::codec::frontend::sasl_initial_response(
                        "SCRAM-SHA-256",
                        format!("n,,{bare}").as_bytes(),
                    )
                    .encode(&mut out);
                    client = Some((bare, String::new()));
                }
                B::Authentication(A::SaslContinue(data)) => {
                    let sf = String::from_utf8(data.to_vec())?;
                    let get = |k: &str| {
                        sf.split(',')
                            .find_map(|p| p.strip_prefix(k))
                            .map(str::to_string)
                    };
                    let salt = base64_decode(&get("s=").context("salt")?)?;
                    let iter: u32 = get("i=").context("iterations")?.parse()?;
                    let key =
                        pgha_proxy::auth::scram::client_key_from_password(password, &salt, iter);
                    let mut sc = pgha_proxy::auth::ScramClient::new(key, [0; 32]);
                    // Reuse the library client for the proof; its own first message is not sent.
                    let (bare, _) = client.take().context("no SASL start")?;
                    let fin = sc.respond_to(&bare, sf.as_bytes())?;
                    FrontendMessage::Password(fin.into()).encode(&mut out);
                }
                B::ErrorResponse(f) => {
                    anyhow::bail!("login failed: {}", String::from_utf8_lossy(&f))
                }
                B::ReadyForQuery { .. } => return Ok(raw),
                B::ParameterStatus { name, value } => raw.params.push((
                    String::from_utf8_lossy(&name).into_owned(),
                    String::from_utf8_lossy(&value).into_owned(),
                )),
                _ => {}
            }
            if !out.is_empty() {
                raw.send(&out).await?;
            }
        }
    }
}

fn base64_decode(s: &str) -> anyhow::Result<Vec<u8>> {
    use base64::Engine;
    Ok(base64::engine::general_purpose::STANDARD.decode(s)?)
}
