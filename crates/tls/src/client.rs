//! The client side of pgha's TLS connections: the cluster's CA as the one
//! trust anchor, the server's certificate checked against the host name or
//! IP address that was dialled (libpq's `sslmode=verify-full`).

use crate::TlsError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::path::Path;
use std::sync::Arc;

/// A client config trusting the certificates in `ca_file` (PEM) and nothing
/// else.
pub fn config(ca_file: &Path) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let bad = |problem: String| TlsError::Pem {
        path: ca_file.to_path_buf(),
        problem,
    };
    let text = std::fs::read(ca_file).map_err(|source| TlsError::Read {
        path: ca_file.to_path_buf(),
        source,
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&text) {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate in the file".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The name a server's certificate must carry when dialled as `host`.
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(host.to_string()).map_err(|_| TlsError::ServerName {
        host: host.to_string(),
    })
}
