//! The certificate files of `[tls]`: the CA, each member's server
//! certificate and the dev proxy's, made when missing at pgha's default
//! places in the secrets directory (`pgha up`, `pgha secrets init`).
//!
//! Hazards: an operator's file (any path set in `[tls]`) is never written,
//! and a file that exists is never replaced, so certificates are rotated by
//! replacing or removing files (docs/security.md, "TLS"), not by pgha.
//! Keys are 0600 and owned by the service user: PostgreSQL refuses a key
//! file that others may read, unless root owns it with mode 0640.

use crate::{PgError, ServiceUser};
use pgha_config::{CertPair, ClusterConfig, TlsConfig};
use pgha_tls::certs::{server_names, Authority};
use std::path::Path;

const PROXY: &str = pgha_config::tls::PROXY_CERT_NAME;

/// Mode of a private key.
pub const KEY_MODE: u32 = 0o600;
/// Mode of a certificate (public; it sits in the 0700 secrets directory).
pub const CERT_MODE: u32 = 0o644;

/// Makes every missing generated file of `cluster`'s `[tls]` (nothing
/// without `[tls]`); fails naming the file when an operator's file is
/// missing. The proxy's pair is made when the config has a `[proxy]`.
pub fn ensure(cluster: &ClusterConfig, user: &ServiceUser) -> Result<(), PgError> {
    let proxy_host = cluster.proxy.as_ref().map(|p| p.host.as_str());
    ensure_with_proxy(cluster, user, proxy_host)
}

/// [`ensure`], with the proxy's pair made for `proxy_host` (none: no proxy
/// pair), whether or not the config has a `[proxy]` table.
pub fn ensure_with_proxy(
    cluster: &ClusterConfig,
    user: &ServiceUser,
    proxy_host: Option<&str>,
) -> Result<(), PgError> {
    let Some(tls) = &cluster.tls else {
        return Ok(());
    };
    let mut ca: Option<Authority> = None;
    if !tls.ca_file.exists() {
        if !tls.ca_generated {
            return Err(missing(
                &tls.ca_file,
                "tls.ca_file",
                "put the CA certificate there, or remove tls.ca_file and tls.ca_key_file to let pgha generate one",
            ));
        }
        let new = Authority::generate(&cluster.name)?;
        let pem = new.pem();
        user.write_file(&tls.ca_key_file, pem.key.as_bytes(), KEY_MODE)?;
        user.write_file(&tls.ca_file, pem.cert.as_bytes(), CERT_MODE)?;
        tracing::info!(file = %tls.ca_file.display(), "generated the cluster's CA");
        ca = Some(new);
    }
    let mut pairs: Vec<(String, &str, &CertPair)> = cluster
        .members
        .iter()
        .filter_map(|m| Some((m.name.clone(), m.host.as_str(), tls.member(&m.name)?)))
        .collect();
    if let Some(host) = proxy_host {
        pairs.push((PROXY.into(), host, &tls.proxy));
    }
    for (name, host, pair) in pairs {
        if pair.cert_file.exists() && pair.key_file.exists() {
            continue;
        }
        if !pair.generated {
            let path = if pair.cert_file.exists() {
                &pair.key_file
            } else {
                &pair.cert_file
            };
            let key = if name == PROXY {
                "tls.proxy".to_string()
            } else {
                format!("tls.members.{name}")
            };
            return Err(missing(
                path,
                &key,
                "put the certificate and its key there, or remove the table to let pgha generate them",
            ));
        }
        if ca.is_none() {
            ca = Some(load_ca(cluster, tls, &name)?);
        }
        if let Some(ca) = &ca {
            let pem = ca.issue(&name, &server_names(host))?;
            user.write_file(&pair.key_file, pem.key.as_bytes(), KEY_MODE)?;
            user.write_file(&pair.cert_file, pem.cert.as_bytes(), CERT_MODE)?;
            tracing::info!(file = %pair.cert_file.display(), "generated the certificate of {name}");
        }
    }
    Ok(())
}

fn load_ca(cluster: &ClusterConfig, tls: &TlsConfig, name: &str) -> Result<Authority, PgError> {
    let key = match std::fs::read_to_string(&tls.ca_key_file) {
        Ok(k) => k,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(missing(
                &tls.ca_key_file,
                "tls.ca_key_file",
                &format!("pgha needs the CA's key to sign the missing certificate of {name}: put the key there, or give {name} a certificate of your own in [tls.members.{name}] / [tls.proxy]"),
            ))
        }
        Err(e) => {
            return Err(PgError::Io {
                what: format!("read {}", tls.ca_key_file.display()),
                error: e,
            })
        }
    };
    Ok(Authority::load(&cluster.name, &key)?)
}

fn missing(path: &Path, key: &str, remedy: &str) -> PgError {
    PgError::MissingTlsFile {
        path: path.to_path_buf(),
        key: key.to_string(),
        remedy: remedy.to_string(),
    }
}

/// What a member needs before its PostgreSQL can start with `[tls]`: the CA
/// certificate and the member's pair. An agent does not generate them (on
/// several hosts each would make its own CA); it refuses to start instead.
///
/// The member's key must also pass PostgreSQL's own check, so a refusal is
/// reported here, naming the file, rather than as a server that does not
/// start: owned by `user` with no permission for group or others (0600), or
/// owned by root and at most 0640.
pub fn check(cluster: &ClusterConfig, member: &str, user: &ServiceUser) -> Result<(), PgError> {
    let Some(tls) = &cluster.tls else {
        return Ok(());
    };
    const REMEDY: &str = "with [tls] enabled every member needs the CA certificate and its own certificate and key: `pgha up` generates them for a dev cluster; elsewhere make them and copy them to each host (docs/security.md, \"TLS\")";
    let mut needed = vec![(&tls.ca_file, "tls.ca_file".to_string())];
    if let Some(pair) = tls.member(member) {
        let key = format!("tls.members.{member}");
        needed.push((&pair.cert_file, format!("{key}.cert_file")));
        needed.push((&pair.key_file, format!("{key}.key_file")));
    }
    if let Some((path, key)) = needed.into_iter().find(|(path, _)| !path.exists()) {
        return Err(missing(path, &key, REMEDY));
    }
    match tls.member(member) {
        Some(pair) => key_file_usable(&pair.key_file, user),
        None => Ok(()),
    }
}

/// PostgreSQL's rule for `ssl_key_file` (it refuses to start otherwise).
fn key_file_usable(path: &Path, user: &ServiceUser) -> Result<(), PgError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(PgError::io(format!("stat {}", path.display())))?;
    let mode = meta.mode() & 0o777;
    let problem = if meta.uid() == user.uid {
        (mode & 0o077 != 0).then(|| {
            format!(
                "mode {mode:04o} lets group or others read it; PostgreSQL refuses that: chmod 0600 {}",
                path.display()
            )
        })
    } else if meta.uid() == 0 {
        (mode & 0o037 != 0).then(|| {
            format!(
                "mode {mode:04o}: a key owned by root must be 0640 or stricter for PostgreSQL: chmod 0640 {}",
                path.display()
            )
        })
    } else {
        Some(format!(
            "it belongs to uid {}; PostgreSQL (running as {}) needs its own or root's: chown {} {}",
            meta.uid(),
            user.name,
            user.name,
            path.display()
        ))
    };
    match problem {
        Some(problem) => Err(PgError::UnusableTlsKey {
            path: path.to_path_buf(),
            problem,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn config(dir: &Path, extra: &str) -> ClusterConfig {
        let text = format!(
            "[tls]\nenabled = true\n{extra}\n[proxy]\nrw_port = 7432\nro_port = 7433\nprimary_port = 7434\n\
             [[members]]\nname = \"node1\"\nport = 5432\n[[members]]\nname = \"node2\"\nport = 5433\n"
        );
        pgha_config::parse(&text, dir).unwrap()
    }

    fn user() -> ServiceUser {
        ServiceUser::resolve("postgres").unwrap()
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    /// Made once at the default places (keys 0600), kept afterwards; a
    /// deleted member certificate is signed again by the same CA.
    #[test]
    fn generated_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path(), "");
        user().make_dir(&c.secrets_dir, 0o700).unwrap();
        ensure(&c, &user()).unwrap();
        let tls = c.tls.as_ref().unwrap();
        assert_eq!(mode(&tls.ca_key_file), KEY_MODE);
        let n2 = tls.member("node2").unwrap();
        assert_eq!(mode(&n2.key_file), KEY_MODE);
        assert_eq!(mode(&n2.cert_file), CERT_MODE);
        assert!(tls.proxy.cert_file.exists());
        let ca = std::fs::read(&tls.ca_file).unwrap();
        let n1 = std::fs::read(&tls.member("node1").unwrap().cert_file).unwrap();
        let n2_before = std::fs::read(&n2.cert_file).unwrap();
        std::fs::remove_file(&n2.cert_file).unwrap();
        ensure(&c, &user()).unwrap();
        assert_eq!(std::fs::read(&tls.ca_file).unwrap(), ca, "the CA is kept");
        assert_eq!(
            std::fs::read(&tls.member("node1").unwrap().cert_file).unwrap(),
            n1,
            "an existing certificate is kept"
        );
        assert_ne!(std::fs::read(&n2.cert_file).unwrap(), n2_before);
        check(&c, "node2", &user()).unwrap();
    }

    /// An operator's path is never written: missing, it is an error naming
    /// the key; the agent's check names a missing member key.
    #[test]
    fn operator_files_are_never_made() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path(), "ca_file = \"mine/ca.pem\"");
        user().make_dir(&c.secrets_dir, 0o700).unwrap();
        let e = ensure(&c, &user()).unwrap_err().to_string();
        assert!(
            e.contains("mine/ca.pem") && e.contains("tls.ca_file"),
            "{e}"
        );
        assert!(!dir.path().join("mine/ca.pem").exists());
        let e = check(&c, "node1", &user()).unwrap_err().to_string();
        assert!(e.contains("tls.ca_file"), "{e}");

        let c = config(dir.path(), "");
        ensure(&c, &user()).unwrap();
        std::fs::remove_file(&c.tls.as_ref().unwrap().member("node1").unwrap().key_file).unwrap();
        let e = check(&c, "node1", &user()).unwrap_err().to_string();
        assert!(e.contains("tls.members.node1.key_file"), "{e}");
    }

    /// A key others may read is refused as PostgreSQL would refuse it.
    #[test]
    fn a_readable_key_is_refused_before_postgresql_refuses_it() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path(), "");
        user().make_dir(&c.secrets_dir, 0o700).unwrap();
        ensure(&c, &user()).unwrap();
        let key = &c.tls.as_ref().unwrap().member("node1").unwrap().key_file;
        std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = check(&c, "node1", &user()).unwrap_err().to_string();
        assert!(e.contains("chmod 0600") && e.contains("node1.key"), "{e}");
    }
}
