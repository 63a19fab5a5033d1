//! The client side of connection start: SSL negotiation (TLS when configured,
//! else declined), GSS encryption (declined),
//! CancelRequest, StartupMessage, and password authentication against the
//! verifier the monitor looks up.
//!
//! Hazards: everything here runs before the client is authenticated, so
//! messages are bounded by `max_startup`, and the whole start by
//! `authentication_timeout` (see `serve`). Unknown roles, roles without a
//! usable verifier and wrong passwords all end in the same FATAL 28P01, after
//! a full (mock, for unknown roles) SCRAM exchange.

use super::ClientIo;
use crate::auth::{
    auth_failed_message, md5_check, BackendCredentials, ClientKey, ScramError, ScramServer, Secret,
};
use crate::codec::backend::Authentication;
use crate::codec::frontend::{parse_password, parse_sasl_initial_response};
use crate::codec::{BackendMessage, CodecError, ErrorInfo, FrontendMessage, StartupMessage};
use crate::config::ClientTlsMode;
use crate::shared::Shared;
use bytes::Bytes;
use rand::RngCore;

/// An authenticated client, ready for a backend.
pub struct Started {
    pub user: String,
    /// Startup parameters to pass to backends.
    pub params: Vec<(String, String)>,
    pub creds: BackendCredentials,
}

/// How the start ended without an authenticated client.
pub enum StartEnd {
    /// Cancel request served, or the client went away: close quietly.
    Quiet,
    /// Tell the client this, then close.
    Fatal(ErrorInfo),
}

impl From<CodecError> for StartEnd {
    fn from(e: CodecError) -> Self {
        StartEnd::Fatal(ErrorInfo::fatal(
            "08P01",
            format!("invalid startup packet: {e}"),
        ))
    }
}

impl From<std::io::Error> for StartEnd {
    fn from(_: std::io::Error) -> Self {
        StartEnd::Quiet
    }
}

/// The startup packet's protocol version and parameters.
pub type StartupPacket = (i32, Vec<(String, String)>);

/// Reads startup-phase packets up to the StartupMessage: answers SSLRequest
/// (TLS handshake when configured) and GSSENCRequest, serves a
/// CancelRequest.
pub async fn negotiate(io: &mut ClientIo, shared: &Shared) -> Result<StartupPacket, StartEnd> {
    loop {
        let max = shared.limits.max_startup;
        let msg = io.read_with(|buf| StartupMessage::decode(buf, max)).await?;
        match msg {
            None => return Err(StartEnd::Quiet),
            Some(StartupMessage::SslRequest) if !io.rd.is_tls() => match &shared.tls {
                Some(acceptor) => {
                    // Bounded like the rest of the login, by
                    // authentication_timeout (as PostgreSQL does): a slow
                    // client (a JVM on a loaded machine) needs more than a
                    // connect timeout for its first handshake.
                    let timeout = shared.settings.authentication_timeout;
                    if let Err(e) = io.start_tls(acceptor, timeout).await {
                        tracing::info!("TLS handshake with client failed: {e}");
                        return Err(StartEnd::Quiet);
                    }
                }
                None => io.write_now(b"N").await?,
            },
            Some(StartupMessage::SslRequest) => {
                return Err(StartEnd::Fatal(ErrorInfo::fatal(
                    "08P01",
                    "SSLRequest on a connection already using TLS",
                )))
            }
            Some(StartupMessage::GssEncRequest) => io.write_now(b"N").await?,
            Some(StartupMessage::CancelRequest { pid, key }) => {
                shared.cancel(pid, key).await;
                return Err(StartEnd::Quiet);
            }
            Some(StartupMessage::Startup { .. })
                if !io.rd.is_tls() && shared.settings.tls == ClientTlsMode::Require =>
            {
                return Err(StartEnd::Fatal(plain_text_refused()))
            }
            Some(StartupMessage::Startup { version, params }) => return Ok((version, params)),
        }
    }
}

/// The answer to a client that did not ask for TLS while `tls = "require"`:
/// SQLSTATE 28000, as PostgreSQL's own refusal of a connection no
/// `pg_hba.conf` line allows.
fn plain_text_refused() -> ErrorInfo {
    ErrorInfo::fatal(
        "28000",
        "the pgha proxy accepts only TLS connections (tls = \"require\" in proxy.toml): connect with sslmode=require or verify-full",
    )
}

/// Runs the start of a session up to (not including) AuthenticationOk.
pub async fn start(io: &mut ClientIo, shared: &Shared) -> Result<Started, StartEnd> {
    let (version, params) = negotiate(io, shared).await?;
    let (params, unknown): (Vec<_>, Vec<_>) = params
        .into_iter()
        .partition(|(k, _)| !k.starts_with("_pq_."));
    if version & 0xffff != 0 || !unknown.is_empty() {
        let options = unknown.into_iter().map(|(k, _)| Bytes::from(k)).collect();
        io.queue(&BackendMessage::NegotiateProtocolVersion { minor: 0, options });
    }
    if params
        .iter()
        .any(|(k, v)| k == "replication" && !matches!(v.as_str(), "false" | "off" | "0" | "no"))
    {
        return Err(StartEnd::Fatal(ErrorInfo::fatal(
            "0A000",
            "the pgha proxy does not accept replication connections",
        )));
    }
    let Some(user) = params
        .iter()
        .find(|(k, _)| k == "user")
        .map(|(_, v)| v.clone())
    else {
        return Err(StartEnd::Fatal(ErrorInfo::fatal(
            "28000",
            "no PostgreSQL user name specified in startup packet",
        )));
    };
    let secret = shared.monitor.lookup_secret(&user).await.map_err(|e| {
        tracing::warn!(%user, "role lookup failed: {e:#}");
        StartEnd::Fatal(ErrorInfo::fatal(
            "08006",
            format!("the proxy could not look up the role: {e}"),
        ))
    })?;
    let creds = match secret {
        Secret::Md5(hash) => md5_exchange(io, shared, &user, hash).await?,
        Secret::Scram(s) => scram_exchange(io, shared, &user, Some(s)).await?,
        Secret::None => scram_exchange(io, shared, &user, None).await?,
    };
    Ok(Started {
        user,
        params,
        creds,
    })
}

/// Reads the next 'p' message body of the authentication exchange. Another
/// type is refused at its type byte, as PostgreSQL does (a Terminate ends
/// the start quietly).
async fn read_password(io: &mut ClientIo, shared: &Shared) -> Result<Bytes, StartEnd> {
    let max = shared.limits.max_startup;
    let read = io.read_with(|buf| match buf.first() {
        Some(&tag) if tag != b'p' && tag != b'X' => Ok(Some(Err(tag))),
        _ => FrontendMessage::decode(buf, max).map(|m| m.map(Ok)),
    });
    match read.await? {
        None => Err(StartEnd::Quiet),
        Some(Ok(FrontendMessage::Password(body))) => Ok(body),
        Some(Ok(_)) => Err(StartEnd::Quiet),
        Some(Err(tag)) => Err(StartEnd::Fatal(ErrorInfo::fatal(
            "08P01",
            format!("expected password response, got message type {tag}"),
        ))),
    }
}

fn failed(user: &str) -> StartEnd {
    StartEnd::Fatal(ErrorInfo::fatal("28P01", auth_failed_message(user)))
}

async fn md5_exchange(
    io: &mut ClientIo,
    shared: &Shared,
    user: &str,
    hash: crate::auth::Md5Hash,
) -> Result<BackendCredentials, StartEnd> {
    let mut salt = [0u8; 4];
    rand::thread_rng().fill_bytes(&mut salt);
    io.queue(&BackendMessage::Authentication(
        Authentication::Md5Password { salt },
    ));
    io.flush().await?;
    let body = read_password(io, shared).await?;
    let answer = parse_password(body)?;
    if !md5_check(&hash, &salt, &answer) {
        return Err(failed(user));
    }
    Ok(BackendCredentials::Md5(hash))
}

async fn scram_exchange(
    io: &mut ClientIo,
    shared: &Shared,
    user: &str,
    secret: Option<crate::auth::ScramSecret>,
) -> Result<BackendCredentials, StartEnd> {
    let server_key = secret.as_ref().map(|s| s.server_key).unwrap_or([0; 32]);
    let mut server = ScramServer::new(secret, user, &shared.mock_key);
    let mechanisms = vec![Bytes::from_static(b"SCRAM-SHA-256")];
    io.queue(&BackendMessage::Authentication(Authentication::Sasl {
        mechanisms,
    }));
    io.flush().await?;
    let (mech, data) = parse_sasl_initial_response(read_password(io, shared).await?)?;
    if &mech[..] != b"SCRAM-SHA-256" {
        return Err(StartEnd::Fatal(ErrorInfo::fatal(
            "08P01",
            "client selected an invalid SASL authentication mechanism",
        )));
    }
    let server_first = server.first(&data).map_err(scram_error)?;
    io.queue(&BackendMessage::Authentication(
        Authentication::SaslContinue(server_first.into()),
    ));
    io.flush().await?;
    let client_final = read_password(io, shared).await?;
    match server.finish(&client_final) {
        Ok((client_key, server_final)) => {
            io.queue(&BackendMessage::Authentication(Authentication::SaslFinal(
                server_final.into(),
            )));
            Ok(BackendCredentials::Scram {
                client_key: ClientKey(client_key),
                server_key,
            })
        }
        Err(ScramError::BadProof) => Err(failed(user)),
        Err(e) => Err(scram_error(e)),
    }
}

fn scram_error(e: ScramError) -> StartEnd {
    StartEnd::Fatal(ErrorInfo::fatal("08P01", e.to_string()))
}
