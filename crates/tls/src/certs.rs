//! Certificates of a dev cluster: one CA per cluster, and server
//! certificates it signs for each member and for the proxy.
//!
//! Pure: everything is returned as PEM text; writing the files (where, with
//! which owner and mode, never over an operator's file) is the caller's.
//!
//! Hazard: a server certificate is signed by a CA rebuilt from its key
//! ([`Authority::from_key`]) and a subject that is a function of the
//! cluster name alone. Verification matches the issuer's name and key, so
//! certificates signed later verify against the `ca.crt` written first, as
//! long as the cluster name is the same.

use crate::TlsError;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use time::OffsetDateTime;

/// How long a generated certificate is valid (the CA and the servers').
pub const VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A certificate and its private key, PEM.
#[derive(Clone)]
pub struct Pem {
    pub cert: String,
    /// PKCS#8 (`-----BEGIN PRIVATE KEY-----`), ECDSA P-256.
    pub key: String,
}

impl std::fmt::Debug for Pem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pem").field("key", &"[SECRET]").finish()
    }
}

/// The cluster's CA: signs the server certificates.
pub struct Authority {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn generate_error(what: &str) -> impl Fn(rcgen::Error) -> TlsError + '_ {
    move |e| TlsError::Generate {
        what: what.to_string(),
        problem: e.to_string(),
    }
}

fn ca_params(cluster: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "pgha");
    dn.push(DnType::CommonName, format!("pgha CA of cluster {cluster}"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params);
    params
}

fn set_validity(params: &mut CertificateParams) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    // A day back: a member whose clock is a little behind accepts it.
    let fallback = params.not_before;
    let at = |secs: i64| OffsetDateTime::from_unix_timestamp(secs).unwrap_or(fallback);
    params.not_before = at(now - 24 * 3600);
    params.not_after = at(now + VALIDITY.as_secs() as i64);
}

impl Authority {
    /// A new CA for `cluster`, with a new key.
    pub fn generate(cluster: &str) -> Result<Self, TlsError> {
        let what = format!("the CA of cluster {cluster}");
        let key = KeyPair::generate().map_err(generate_error(&what))?;
        Self::from_key(cluster, key)
    }

    /// The CA of `cluster` from its key (PEM), to sign more certificates.
    pub fn load(cluster: &str, key_pem: &str) -> Result<Self, TlsError> {
        let what = format!("the CA of cluster {cluster}");
        let key = KeyPair::from_pem(key_pem).map_err(generate_error(&what))?;
        Self::from_key(cluster, key)
    }

    fn from_key(cluster: &str, key: KeyPair) -> Result<Self, TlsError> {
        let what = format!("the CA of cluster {cluster}");
        let cert = ca_params(cluster)
            .self_signed(&key)
            .map_err(generate_error(&what))?;
        Ok(Authority { cert, key })
    }

    /// The CA's certificate and key.
    pub fn pem(&self) -> Pem {
        Pem {
            cert: self.cert.pem(),
            key: self.key.serialize_pem(),
        }
    }

    /// A server certificate for `name` (its common name) valid for `hosts`
    /// (IP addresses and DNS names, as clients write them), with a new key.
    pub fn issue(&self, name: &str, hosts: &[String]) -> Result<Pem, TlsError> {
        let what = format!("{name} ({})", hosts.join(", "));
        let mut params = CertificateParams::new(hosts.to_vec()).map_err(generate_error(&what))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "pgha");
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params);
        let key = KeyPair::generate().map_err(generate_error(&what))?;
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .map_err(generate_error(&what))?;
        Ok(Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }
}

/// The names a server certificate of a host carries: `host` itself, and
/// `127.0.0.1` and `localhost` (local tools connect over loopback).
pub fn server_names(host: &str) -> Vec<String> {
    let mut names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    if !names.iter().any(|n| n == host) && !host.is_empty() {
        names.push(host.to_string());
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_cover_loopback_and_the_host() {
        assert_eq!(server_names("127.0.0.1"), ["127.0.0.1", "localhost"]);
        assert_eq!(
            server_names("10.0.0.5"),
            ["127.0.0.1", "localhost", "10.0.0.5"]
        );
    }

    #[test]
    fn the_key_is_not_in_debug_output() {
        let ca = Authority::generate("pgha").unwrap();
        let text = format!("{:?}", ca.pem());
        assert!(!text.contains("PRIVATE"), "{text}");
    }
}
