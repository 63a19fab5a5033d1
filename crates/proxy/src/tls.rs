//! TLS (rustls, `ring` provider) on both sides of the proxy: loading the
//! configured certificate and key into an acceptor for clients, the
//! connector for backends (`backend_tls`), and the stream halves a session
//! reads and writes, plain TCP or TLS, the same type for a client and a
//! backend connection.
//!
//! Hazards: rustls may keep encrypted bytes after a write returned (the
//! socket would block); [`ClientWrite::pending_flush`] tells the session to
//! keep flushing, or the client waits forever for data the proxy thinks it
//! sent. The plain variant stays a bare `OwnedWriteHalf`/`OwnedReadHalf`, so
//! clients without TLS pay one enum match per I/O call and no copy.

use crate::config::{BackendTlsMode, ConfigError, ProxySettings};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
pub use tokio_rustls::TlsAcceptor;

/// A TLS connection, the proxy on either end (server towards clients,
/// client towards backends).
type Tls = tokio_rustls::TlsStream<TcpStream>;

/// A connection's halves, client or backend.
pub type ConnRead = ClientRead;
/// A connection's halves, client or backend.
pub type ConnWrite = ClientWrite;

/// Builds the acceptor from a PEM certificate chain and private key.
pub fn load_acceptor(cert_file: &Path, key_file: &Path) -> Result<TlsAcceptor, ConfigError> {
    let bad = |path: &Path, problem: String| ConfigError::Tls {
        path: path.into(),
        problem,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| bad(cert_file, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(cert_file, e.to_string()))?;
    if certs.is_empty() {
        return Err(bad(cert_file, "no certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| bad(key_file, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(cert_file, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad(key_file, e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A connection's read half (a client's, or a backend's: [`ConnRead`]).
pub enum ClientRead {
    Plain(OwnedReadHalf),
    Tls(ReadHalf<Tls>),
    /// Between taking the plain halves and the end of the TLS handshake.
    Gone,
}

/// A connection's write half (a client's, or a backend's: [`ConnWrite`]).
pub enum ClientWrite {
    Plain(OwnedWriteHalf),
    Tls {
        wr: WriteHalf<Tls>,
        /// Encrypted bytes may still sit in rustls.
        unflushed: bool,
    },
    Gone,
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "stream in TLS handshake")
}

/// Splits a plain client connection.
pub fn plain(stream: TcpStream) -> (ClientRead, ClientWrite) {
    let (rd, wr) = stream.into_split();
    (ClientRead::Plain(rd), ClientWrite::Plain(wr))
}

/// Runs the server side of the TLS handshake on a plain connection.
pub async fn upgrade(
    rd: &mut ClientRead,
    wr: &mut ClientWrite,
    acceptor: &TlsAcceptor,
) -> io::Result<()> {
    let (ClientRead::Plain(r), ClientWrite::Plain(w)) = (
        std::mem::replace(rd, ClientRead::Gone),
        std::mem::replace(wr, ClientWrite::Gone),
    ) else {
        return Err(io::Error::other("TLS requested twice"));
    };
    let stream = r.reunite(w).map_err(io::Error::other)?;
    let tls: Tls = acceptor.accept(stream).await?.into();
    let (r, w) = tokio::io::split(tls);
    *rd = ClientRead::Tls(r);
    *wr = ClientWrite::Tls {
        wr: w,
        unflushed: false,
    };
    Ok(())
}

impl ClientRead {
    pub fn is_tls(&self) -> bool {
        matches!(self, ClientRead::Tls(_))
    }

    /// Whether the peer closed the connection or sent something, without
    /// waiting (an idle backend has nothing to say). Reads at most one
    /// byte, so only for a connection about to be dropped when it returns
    /// true.
    pub fn readable_now(&mut self) -> bool {
        let mut byte = [0u8; 1];
        match self {
            ClientRead::Plain(r) => {
                !matches!(r.try_read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
            ClientRead::Tls(r) => {
                use futures::FutureExt;
                use tokio::io::AsyncReadExt;
                r.read(&mut byte).now_or_never().is_some()
            }
            ClientRead::Gone => true,
        }
    }
}

impl ClientWrite {
    /// Encrypted output is still buffered: poll `flush` until it is not.
    pub fn pending_flush(&self) -> bool {
        matches!(
            self,
            ClientWrite::Tls {
                unflushed: true,
                ..
            }
        )
    }

    /// Writes without waiting (plain TCP only; TLS reports `WouldBlock`).
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            ClientWrite::Plain(w) => w.try_write(buf),
            _ => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl AsyncRead for ClientRead {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientRead::Plain(r) => Pin::new(r).poll_read(cx, buf),
            ClientRead::Tls(r) => Pin::new(r).poll_read(cx, buf),
            ClientRead::Gone => Poll::Ready(Err(gone())),
        }
    }
}

impl AsyncWrite for ClientWrite {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientWrite::Plain(w) => Pin::new(w).poll_write(cx, buf),
            ClientWrite::Tls { wr, unflushed } => {
                let n = ready!(Pin::new(&mut *wr).poll_write(cx, buf))?;
                *unflushed = true;
                // Push the records out now when the socket takes them.
                if let Poll::Ready(r) = Pin::new(wr).poll_flush(cx) {
                    r?;
                    *unflushed = false;
                }
                Poll::Ready(Ok(n))
            }
            ClientWrite::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientWrite::Plain(w) => Pin::new(w).poll_flush(cx),
            ClientWrite::Tls { wr, unflushed } => {
                ready!(Pin::new(wr).poll_flush(cx))?;
                *unflushed = false;
                Poll::Ready(Ok(()))
            }
            ClientWrite::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientWrite::Plain(w) => Pin::new(w).poll_shutdown(cx),
            ClientWrite::Tls { wr, .. } => Pin::new(wr).poll_shutdown(cx),
            ClientWrite::Gone => Poll::Ready(Err(gone())),
        }
    }
}

/// TLS towards backends (`backend_tls`): the client config and whether the
/// server's name is checked.
#[derive(Clone)]
pub struct BackendTls {
    config: Arc<rustls::ClientConfig>,
}

/// PostgreSQL's SSLRequest: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

impl BackendTls {
    /// From the settings: `None` for `backend_tls = "disable"`.
    pub fn from_settings(s: &ProxySettings) -> Result<Option<Self>, ConfigError> {
        let config = match (s.backend_tls, &s.backend_ca_file) {
            (BackendTlsMode::Disable, _) => return Ok(None),
            (BackendTlsMode::Require, _) => pgha_tls::client::config_unverified(),
            (BackendTlsMode::VerifyFull, Some(ca)) => pgha_tls::client::config(ca),
            (BackendTlsMode::VerifyFull, None) => {
                return Err(ConfigError::Invalid {
                    key: "backend_ca_file",
                    problem: "backend_tls = \"verify-full\" needs it".into(),
                })
            }
        };
        let config = config.map_err(|e| ConfigError::Tls {
            path: s.backend_ca_file.clone().unwrap_or_default(),
            problem: e.to_string(),
        })?;
        Ok(Some(BackendTls { config }))
    }

    /// The tokio-postgres connector of the monitor's connections.
    pub fn postgres(&self) -> pgha_tls::pg::MakeRustlsConnect {
        pgha_tls::pg::MakeRustlsConnect::from_config(self.config.clone())
    }

    /// SSLRequest on a new connection to `host`, then the TLS handshake;
    /// a server that declines TLS is an error naming the setting.
    pub async fn connect(
        &self,
        mut stream: TcpStream,
        host: &str,
    ) -> io::Result<(ClientRead, ClientWrite)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream.write_all(&SSL_REQUEST).await?;
        let mut answer = [0u8; 1];
        stream.read_exact(&mut answer).await?;
        if answer[0] != b'S' {
            return Err(io::Error::other(
                "the server does not accept TLS connections (backend_tls in proxy.toml asks for TLS: turn ssl on in PostgreSQL, or set backend_tls = \"disable\")",
            ));
        }
        let name = pgha_tls::client::server_name(host).map_err(io::Error::other)?;
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        let tls: Tls = connector.connect(name, stream).await?.into();
        let (r, w) = tokio::io::split(tls);
        Ok((
            ClientRead::Tls(r),
            ClientWrite::Tls {
                wr: w,
                unflushed: false,
            },
        ))
    }
}
