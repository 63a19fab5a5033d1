//! `[tls]`: TLS between the cluster's parts (docs/security.md, "TLS").
//!
//! The file names where the certificates are; validation turns that into
//! absolute paths and records, per file pair, whether pgha may create it:
//! only a pair at its default place in the secrets directory is ever
//! generated (when missing), an operator's own file is never written.

use crate::validate::ConfigError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The CA certificate's file name in the secrets directory.
pub const CA_CERT_FILE: &str = "ca.crt";
/// The CA key's file name in the secrets directory.
pub const CA_KEY_FILE: &str = "ca.key";
/// The name of the dev proxy's certificate pair (`proxy.crt`, `proxy.key`).
pub const PROXY_CERT_NAME: &str = "proxy";

/// `[tls]` as written.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    /// PostgreSQL `ssl = on`, replication and pgha's own connections with
    /// `sslmode=verify-full`, the dev proxy over TLS. Default false for a
    /// config without `[tls]`; the dev cluster's generated config sets true.
    #[serde(default)]
    pub enabled: bool,
    /// The CA certificate every part verifies servers against. Default
    /// `<secrets_dir>/ca.crt`, generated when missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// The CA's key, used only to sign missing generated certificates (no
    /// running process reads it). Default `<secrets_dir>/ca.key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_key_file: Option<PathBuf>,
    /// Operator-provided server certificates per member name
    /// (`[tls.members.node1]`). Default `<secrets_dir>/<member>.crt` and
    /// `.key`, generated when missing.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub members: BTreeMap<String, CertFiles>,
    /// The dev proxy's certificate. Default `<secrets_dir>/proxy.crt` and
    /// `.key`, generated when missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<CertFiles>,
}

/// A certificate (PEM, chain allowed) and its private key (PEM).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CertFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// A validated certificate pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertPair {
    /// Absolute.
    pub cert_file: PathBuf,
    /// Absolute.
    pub key_file: PathBuf,
    /// At pgha's default place: `pgha up` creates it when missing. False
    /// for an operator's pair, which pgha never writes.
    pub generated: bool,
}

/// `[tls]` validated (present only when `enabled`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    /// Absolute.
    pub ca_file: PathBuf,
    /// Absolute.
    pub ca_key_file: PathBuf,
    /// The CA pair is pgha's (generated when missing).
    pub ca_generated: bool,
    /// Every member's pair, by member name.
    pub members: BTreeMap<String, CertPair>,
    /// The dev proxy's pair.
    pub proxy: CertPair,
}

impl TlsConfig {
    /// The server certificate of `member`.
    pub fn member(&self, member: &str) -> Option<&CertPair> {
        self.members.get(member)
    }
}

/// `pgha.conf` parameters that `[tls]` sets.
pub const TLS_PARAMETERS: &[&str] = &["ssl", "ssl_cert_file", "ssl_key_file", "ssl_ca_file"];

pub(crate) fn validate(
    tls: &TlsFile,
    members: &[crate::Member],
    secrets_dir: &Path,
    absolute: impl Fn(&Path) -> PathBuf,
) -> Result<Option<TlsConfig>, ConfigError> {
    if !tls.enabled {
        return Ok(None);
    }
    for name in tls.members.keys() {
        if !members.iter().any(|m| &m.name == name) {
            return Err(ConfigError::Invalid {
                key: format!("tls.members.{name}"),
                value: format!("{name:?}"),
                reason: "is not one of members[].name".into(),
            });
        }
    }
    let default_pair = |name: &str| CertPair {
        cert_file: secrets_dir.join(format!("{name}.crt")),
        key_file: secrets_dir.join(format!("{name}.key")),
        generated: true,
    };
    let given = |f: &CertFiles| CertPair {
        cert_file: absolute(&f.cert_file),
        key_file: absolute(&f.key_file),
        generated: false,
    };
    let members = members
        .iter()
        .map(|m| {
            let pair = tls
                .members
                .get(&m.name)
                .map_or_else(|| default_pair(&m.name), given);
            (m.name.clone(), pair)
        })
        .collect();
    let ca_file = tls.ca_file.as_deref().map(&absolute);
    let ca_key_file = tls.ca_key_file.as_deref().map(&absolute);
    Ok(Some(TlsConfig {
        ca_generated: ca_file.is_none() && ca_key_file.is_none(),
        ca_file: ca_file.unwrap_or_else(|| secrets_dir.join(CA_CERT_FILE)),
        ca_key_file: ca_key_file.unwrap_or_else(|| secrets_dir.join(CA_KEY_FILE)),
        members,
        proxy: tls
            .proxy
            .as_ref()
            .map_or_else(|| default_pair(PROXY_CERT_NAME), given),
    }))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    fn parse(extra: &str) -> Result<crate::ClusterConfig, crate::ConfigError> {
        let text = format!(
            "{extra}\n[[members]]\nname = \"node1\"\nport = 5432\n[[members]]\nname = \"node2\"\nhost = \"10.0.0.2\"\nport = 5432\n"
        );
        crate::parse(&text, Path::new("/srv/pgha"))
    }

    #[test]
    fn off_without_the_table_and_defaults_in_the_secrets_dir() {
        assert!(parse("").unwrap().tls.is_none());
        let tls = parse("[tls]\nenabled = true").unwrap().tls.unwrap();
        assert_eq!(tls.ca_file, Path::new("/srv/pgha/secrets/ca.crt"));
        assert!(tls.ca_generated);
        let n2 = tls.member("node2").unwrap();
        assert_eq!(n2.key_file, Path::new("/srv/pgha/secrets/node2.key"));
        assert!(n2.generated);
        assert_eq!(
            tls.proxy.cert_file,
            Path::new("/srv/pgha/secrets/proxy.crt")
        );
    }

    #[test]
    fn operator_files_are_kept_and_never_generated() {
        let tls = parse(
            "[tls]\nenabled = true\nca_file = \"/etc/ssl/ca.pem\"\n\
             [tls.members.node1]\ncert_file = \"certs/n1.pem\"\nkey_file = \"certs/n1.key\"",
        )
        .unwrap()
        .tls
        .unwrap();
        assert!(!tls.ca_generated);
        assert_eq!(tls.ca_file, Path::new("/etc/ssl/ca.pem"));
        let n1 = tls.member("node1").unwrap();
        assert_eq!(n1.cert_file, Path::new("/srv/pgha/certs/n1.pem"));
        assert!(!n1.generated);
        assert!(tls.member("node2").unwrap().generated);
    }

    #[test]
    fn unknown_member_and_ssl_parameters_are_refused() {
        let e = parse(
            "[tls]\nenabled = true\n[tls.members.node9]\ncert_file = \"a\"\nkey_file = \"b\"",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("tls.members.node9") && e.contains("members[].name"),
            "{e}"
        );
        let e = parse("[postgres.parameters]\nssl_cert_file = \"x\"\n[tls]\nenabled = true")
            .unwrap_err()
            .to_string();
        assert!(e.contains("postgres.parameters.ssl_cert_file"), "{e}");
        // Without [tls] the operator's own ssl settings pass through.
        parse("[postgres.parameters]\nssl = \"on\"").unwrap();
    }

    #[test]
    fn the_dev_config_has_tls_on_and_round_trips() {
        let text = toml::to_string(&crate::ClusterFile::dev(2, 15430)).unwrap();
        assert!(text.contains("[tls]\nenabled = true"), "{text}");
        let c = crate::parse(&text, Path::new("/srv/pgha")).unwrap();
        assert!(c.tls.is_some());
    }
}
