#![allow(clippy::unwrap_used, clippy::expect_used)] // a test states its expectations by panicking
//! Generated certificates verify as clients will check them: a server
//! certificate signed by a CA rebuilt from its key verifies against the
//! CA certificate written first; the wrong host name or another CA fails.

use pgha_tls::certs::{server_names, Authority};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Serves one TLS connection with `server` and answers "ok".
async fn serve(server: &pgha_tls::certs::Pem) -> std::net::SocketAddr {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(server.cert.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_slice(server.key.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            if let Ok(mut tls) = acceptor.accept(tcp).await {
                let _ = tls.write_all(b"ok").await;
                let _ = tls.shutdown().await;
            }
        }
    });
    addr
}

async fn dial(
    ca_file: &std::path::Path,
    addr: std::net::SocketAddr,
    host: &str,
) -> std::io::Result<String> {
    let config = pgha_tls::client::config(ca_file).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = pgha_tls::client::server_name(host).unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    let mut out = String::new();
    tls.read_to_string(&mut out).await?;
    Ok(out)
}

#[tokio::test]
async fn a_certificate_signed_later_verifies_against_the_first_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::generate("pgha").unwrap().pem();
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, &ca.cert).unwrap();
    // Later (another `pgha up`): the CA from its key signs a new member's.
    let again = Authority::load("pgha", &ca.key).unwrap();
    let server = again.issue("node1", &server_names("127.0.0.1")).unwrap();
    let addr = serve(&server).await;
    assert_eq!(dial(&ca_file, addr, "127.0.0.1").await.unwrap(), "ok");
    assert_eq!(dial(&ca_file, addr, "localhost").await.unwrap(), "ok");
    let wrong = dial(&ca_file, addr, "db.example.com").await.unwrap_err();
    assert!(wrong.to_string().contains("certificate"), "{wrong}");

    let other = Authority::generate("pgha").unwrap().pem();
    let other_file = dir.path().join("other.crt");
    std::fs::write(&other_file, &other.cert).unwrap();
    let untrusted = dial(&other_file, addr, "127.0.0.1").await.unwrap_err();
    assert!(untrusted.to_string().contains("certificate"), "{untrusted}");
}
