//! TLS towards clients (rustls, `ring` provider): loading the configured
//! certificate and key into an acceptor, and the client stream halves a
//! session reads and writes, plain TCP or TLS.
//!
//! Hazards: rustls may keep encrypted bytes after a write returned (the
//! socket would block); [`ClientWrite::pending_flush`] tells the session to
//! keep flushing, or the client waits forever for data the proxy thinks it
//! sent. The plain variant stays a bare `OwnedWriteHalf`/`OwnedReadHalf`, so
//! clients without TLS pay one enum match per I/O call and no copy.

use crate::config::ConfigError;
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

type Tls = tokio_rustls::server::TlsStream<TcpStream>;

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

/// The client stream's read half.
pub enum ClientRead {
    Plain(OwnedReadHalf),
    Tls(ReadHalf<Tls>),
    /// Between taking the plain halves and the end of the TLS handshake.
    Gone,
}

/// The client stream's write half.
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
    io::Error::new(
        io::ErrorKind::NotConnected,
        "client stream in TLS handshake",
    )
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
    let (r, w) = tokio::io::split(acceptor.accept(stream).await?);
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
