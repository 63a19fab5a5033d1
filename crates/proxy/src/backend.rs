//! Opening a backend connection as the client: TCP (TLS with
//! `backend_tls`), StartupMessage with the
//! client's parameters, and authentication with the credentials recovered
//! from the client's own login (SCRAM ClientKey or md5 verifier).
//!
//! Hazard: a backend's ErrorResponse during login (unknown database, too many
//! connections...) is returned verbatim so the client sees PostgreSQL's own
//! error; transport failures are reported as [`ConnectError::Io`].

use crate::auth::{md5_response, BackendCredentials, ScramClient};
use crate::codec::backend::{error_field, Authentication};
use crate::codec::frontend::{password_message, sasl_initial_response};
use crate::codec::startup::PROTOCOL_3_0;
use crate::codec::{BackendMessage, StartupMessage};
use crate::tls::{BackendTls, ConnRead, ConnWrite};
use crate::topology::Node;
use bytes::{Bytes, BytesMut};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Why a backend connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {node}: {source}")]
    Io {
        node: String,
        source: std::io::Error,
    },
    #[error("connect to {0}: timed out")]
    Timeout(String),
    /// The server refused the login; the raw ErrorResponse fields.
    #[error("server refused login: {}", String::from_utf8_lossy(error_field(.0, b'M').unwrap_or(b"")))]
    Server(Bytes),
    #[error("login to {node}: {problem}")]
    Protocol { node: String, problem: String },
}

/// An open, authenticated backend connection.
pub struct BackendConn {
    pub node: Node,
    pub rd: ConnRead,
    pub wr: ConnWrite,
    /// Bytes read from the backend not yet processed.
    pub rbuf: BytesMut,
    /// Bytes queued for the backend.
    pub wbuf: BytesMut,
    /// The backend's BackendKeyData (for cancel requests).
    pub pid: i32,
    pub key: i32,
    /// ParameterStatus values reported at login, in order.
    pub params: Vec<(Bytes, Bytes)>,
}

impl BackendConn {
    /// Opens and authenticates a connection to `node` within `timeout`.
    pub async fn connect(
        node: &Node,
        params: &[(String, String)],
        creds: &BackendCredentials,
        timeout: Duration,
        max_message: usize,
        tls: Option<&BackendTls>,
    ) -> Result<Self, ConnectError> {
        match tokio::time::timeout(
            timeout,
            Self::connect_inner(node, params, creds, max_message, tls),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(ConnectError::Timeout(node.name.clone())),
        }
    }

    async fn connect_inner(
        node: &Node,
        params: &[(String, String)],
        creds: &BackendCredentials,
        max_message: usize,
        tls: Option<&BackendTls>,
    ) -> Result<Self, ConnectError> {
        let io = |source| ConnectError::Io {
            node: node.name.clone(),
            source,
        };
        let stream = TcpStream::connect((node.host.as_str(), node.port))
            .await
            .map_err(io)?;
        stream.set_nodelay(true).map_err(io)?;
        let (rd, wr) = match tls {
            Some(tls) => tls.connect(stream, &node.host).await.map_err(io)?,
            None => crate::tls::plain(stream),
        };
        let mut conn = BackendConn {
            node: node.clone(),
            rd,
            wr,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            pid: 0,
            key: 0,
            params: Vec::new(),
        };
        let mut out = BytesMut::new();
        StartupMessage::Startup {
            version: PROTOCOL_3_0,
            params: params.to_vec(),
        }
        .encode(&mut out);
        conn.wr.write_all(&out).await.map_err(io)?;
        conn.wr.flush().await.map_err(io)?;
        conn.login(creds, max_message).await?;
        Ok(conn)
    }

    fn protocol(&self, problem: impl Into<String>) -> ConnectError {
        ConnectError::Protocol {
            node: self.node.name.clone(),
            problem: problem.into(),
        }
    }

    /// Reads one whole message (login, and a pooled backend's reset).
    pub(crate) async fn next(
        &mut self,
        max_message: usize,
    ) -> Result<BackendMessage, ConnectError> {
        loop {
            match BackendMessage::decode(&mut self.rbuf, max_message) {
                Ok(Some(m)) => return Ok(m),
                Ok(None) => {}
                Err(e) => return Err(self.protocol(e.to_string())),
            }
            let n = crate::bufio::read_some(&mut self.rd, &mut self.rbuf)
                .await
                .map_err(|source| ConnectError::Io {
                    node: self.node.name.clone(),
                    source,
                })?;
            if n == 0 {
                return Err(self.protocol("server closed the connection during login"));
            }
        }
    }

    /// Writes out `wbuf`.
    pub(crate) async fn flush(&mut self) -> Result<(), ConnectError> {
        let result = match self.wr.write_all_buf(&mut self.wbuf).await {
            Ok(()) => self.wr.flush().await,
            Err(e) => Err(e),
        };
        result.map_err(|source| ConnectError::Io {
            node: self.node.name.clone(),
            source,
        })
    }

    /// An idle backend has nothing to say: readable means the server closed
    /// it (or sent a FATAL before closing). Reads at most one byte, which
    /// only happens to a connection about to be dropped.
    pub(crate) fn closed_while_idle(&mut self) -> bool {
        self.rd.readable_now()
    }

    /// A health check of an idle backend: an empty query answered by
    /// EmptyQueryResponse and ReadyForQuery `I` within `timeout`.
    pub(crate) async fn ping(&mut self, timeout: Duration) -> bool {
        if self.closed_while_idle() {
            return false;
        }
        let check = async {
            crate::codec::FrontendMessage::Query { sql: Bytes::new() }.encode(&mut self.wbuf);
            self.flush().await.ok()?;
            loop {
                match self.next(usize::MAX).await.ok()? {
                    BackendMessage::ReadyForQuery { status: b'I' } => return Some(()),
                    BackendMessage::ReadyForQuery { .. } => return None,
                    _ => {}
                }
            }
        };
        matches!(tokio::time::timeout(timeout, check).await, Ok(Some(())))
    }

    async fn send(&mut self, msg: crate::codec::FrontendMessage) -> Result<(), ConnectError> {
        let mut out = BytesMut::new();
        msg.encode(&mut out);
        let result = match self.wr.write_all(&out).await {
            Ok(()) => self.wr.flush().await,
            Err(e) => Err(e),
        };
        result.map_err(|source| ConnectError::Io {
            node: self.node.name.clone(),
            source,
        })
    }

    async fn login(&mut self, creds: &BackendCredentials, max: usize) -> Result<(), ConnectError> {
        let mut scram: Option<ScramClient> = None;
        loop {
            match self.next(max).await? {
                BackendMessage::Authentication(a) => {
                    self.authenticate(a, creds, &mut scram).await?
                }
                BackendMessage::ParameterStatus { name, value } => self.params.push((name, value)),
                BackendMessage::BackendKeyData { pid, key } => {
                    self.pid = pid;
                    self.key = key;
                }
                BackendMessage::ReadyForQuery { .. } => return Ok(()),
                BackendMessage::ErrorResponse(fields) => return Err(ConnectError::Server(fields)),
                BackendMessage::NoticeResponse(_)
                | BackendMessage::NegotiateProtocolVersion { .. } => {}
                BackendMessage::Other { tag, .. } => {
                    return Err(
                        self.protocol(format!("unexpected message {:?} during login", tag as char))
                    )
                }
            }
        }
    }

    async fn authenticate(
        &mut self,
        req: Authentication,
        creds: &BackendCredentials,
        scram: &mut Option<ScramClient>,
    ) -> Result<(), ConnectError> {
        match (req, creds) {
            (Authentication::Ok, _) => Ok(()),
            (Authentication::Md5Password { salt }, BackendCredentials::Md5(hash)) => {
                let answer = md5_response(hash, &salt);
                self.send(password_message(answer.as_bytes())).await
            }
            (Authentication::Sasl { mechanisms }, BackendCredentials::Scram { client_key, server_key }) => {
                if !mechanisms.iter().any(|m| &m[..] == b"SCRAM-SHA-256") {
                    return Err(self.protocol("server does not offer SCRAM-SHA-256"));
                }
                let client = ScramClient::new(client_key.0, *server_key);
                let first = client.first();
                *scram = Some(client);
                self.send(sasl_initial_response("SCRAM-SHA-256", first.as_bytes())).await
            }
            (Authentication::SaslContinue(data), _) => {
                let Some(client) = scram.as_mut() else {
                    return Err(self.protocol("SASLContinue before SASL"));
                };
                let fin = client.respond(&data).map_err(|e| self.protocol(e.to_string()))?;
                self.send(crate::codec::FrontendMessage::Password(Bytes::from(fin))).await
            }
            (Authentication::SaslFinal(data), _) => match scram.as_ref() {
                Some(client) => client.verify(&data).map_err(|e| self.protocol(format!("server signature: {e}"))),
                None => Err(self.protocol("SASLFinal before SASL")),
            },
            (other, _) => Err(self.protocol(format!(
                "server asks for an authentication method the proxy cannot answer for this role ({other:?})"
            ))),
        }
    }
}

/// Sends a CancelRequest for `(pid, key)` to `node`.
pub async fn send_cancel(node: &Node, pid: i32, key: i32) -> std::io::Result<()> {
    let mut stream = TcpStream::connect((node.host.as_str(), node.port)).await?;
    let mut out = BytesMut::new();
    StartupMessage::CancelRequest { pid, key }.encode(&mut out);
    stream.write_all(&out).await?;
    // The server closes the connection without answering.
    let mut sink = [0u8; 1];
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut sink)).await;
    Ok(())
}
