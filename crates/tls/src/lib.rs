//! TLS for a pgha cluster: the certificates pgha generates for a dev
//! cluster ([`certs`]: a CA, and server certificates it signs), and the
//! client side of every TLS connection pgha opens ([`client`]: rustls with
//! the cluster's CA as the only trust anchor and the host name checked, as
//! libpq's `sslmode=verify-full`; [`pg`]: the same for tokio-postgres).
//!
//! The crypto provider is `ring`, as in the proxy's server side (aws-lc-rs,
//! rustls' default, needs cmake and a longer build).

pub mod certs;
pub mod client;
pub mod pg;

use std::path::PathBuf;

/// A certificate or key that cannot be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {problem}")]
    Pem { path: PathBuf, problem: String },
    #[error("cannot make a certificate for {what}: {problem}")]
    Generate { what: String, problem: String },
    #[error("{host:?} is not a host name or IP address a certificate can name")]
    ServerName { host: String },
    #[error("TLS settings: {0}")]
    Config(String),
}
