//! Authentication material: the role verifier lookup through the monitoring
//! role, SCRAM-SHA-256 (both sides, see [`scram`]) and md5.
//!
//! The proxy keeps no password list: it asks the cluster for the role's
//! verifier with [`AUTH_LOOKUP_SQL`]'s function, verifies the client against
//! it, and derives what it needs to log in to backends as that client
//! ([`BackendCredentials`]).
//!
//! Hazards: a verifier and a recovered ClientKey are password-equivalent; they
//! are never logged (`Debug` prints `[SECRET]`). Unknown roles and roles with
//! no usable verifier get the same answer as a wrong password.

pub mod scram;

pub use scram::{ScramClient, ScramError, ScramSecret, ScramServer};

use md5::{Digest, Md5};

/// SQL the cluster bootstrap runs once in database `postgres` (as a
/// superuser, after creating role `pgha_monitor`) so the proxy's monitoring
/// role can read role verifiers. The final `GRANT USAGE ON SCHEMA` is needed
/// for `pgha_monitor` to reach the function at all.
pub const AUTH_LOOKUP_SQL: &str = "CREATE SCHEMA pgha; \
CREATE FUNCTION pgha.user_lookup(i_username text, OUT uname text, OUT secret text) RETURNS record \
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog AS $$ \
SELECT rolname::text, rolpassword::text FROM pg_catalog.pg_authid WHERE rolname = i_username \
AND rolcanlogin AND (rolvaliduntil IS NULL OR rolvaliduntil > now()) $$; \
REVOKE ALL ON FUNCTION pgha.user_lookup(text) FROM PUBLIC; \
GRANT EXECUTE ON FUNCTION pgha.user_lookup(text) TO pgha_monitor; \
GRANT USAGE ON SCHEMA pgha TO pgha_monitor;";

/// The query the proxy runs (as `pgha_monitor`) per login.
pub const LOOKUP_QUERY: &str = "SELECT uname, secret FROM pgha.user_lookup($1)";

/// A role's stored verifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    Scram(ScramSecret),
    /// `md5` + 32 hex digits: md5(password || rolname), as hex.
    Md5(Md5Hash),
    /// Unknown role, no password, expired, or a format the proxy cannot use.
    None,
}

/// The 32 hex digits of an md5 verifier (without the `md5` prefix).
#[derive(Clone, PartialEq, Eq)]
pub struct Md5Hash(pub [u8; 32]);

impl std::fmt::Debug for Md5Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Md5Hash([SECRET])")
    }
}

impl Secret {
    /// Interprets `rolpassword` (None: no such role, or no password).
    pub fn parse(stored: Option<&str>) -> Secret {
        let Some(s) = stored else { return Secret::None };
        if let Some(v) = ScramSecret::parse(s) {
            return Secret::Scram(v);
        }
        if let Some(hex) = s.strip_prefix("md5") {
            if let Ok(h) = <[u8; 32]>::try_from(hex.as_bytes()) {
                if h.iter().all(u8::is_ascii_hexdigit) {
                    return Secret::Md5(Md5Hash(h));
                }
            }
        }
        Secret::None
    }
}

/// What the proxy presents to a backend on the client's behalf.
#[derive(Debug, Clone)]
pub enum BackendCredentials {
    Scram {
        client_key: ClientKey,
        server_key: [u8; 32],
    },
    Md5(Md5Hash),
}

/// A recovered SCRAM ClientKey.
#[derive(Clone)]
pub struct ClientKey(pub [u8; 32]);

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientKey([SECRET])")
    }
}

/// The answer to an md5 challenge: `"md5" + md5(hash_hex || salt)` as hex.
pub fn md5_response(hash: &Md5Hash, salt: &[u8; 4]) -> String {
    let mut h = Md5::new();
    h.update(hash.0);
    h.update(salt);
    format!("md5{}", hex_lower(&h.finalize()))
}

/// The md5 verifier PostgreSQL stores for `password` of role `user`.
pub fn md5_verifier(user: &str, password: &str) -> Md5Hash {
    let mut h = Md5::new();
    h.update(password.as_bytes());
    h.update(user.as_bytes());
    let hex = hex_lower(&h.finalize());
    let mut out = [0u8; 32];
    out.copy_from_slice(hex.as_bytes());
    Md5Hash(out)
}

/// Constant-time comparison of a client's md5 answer.
pub fn md5_check(hash: &Md5Hash, salt: &[u8; 4], answer: &[u8]) -> bool {
    let expected = md5_response(hash, salt);
    expected.len() == answer.len()
        && expected
            .bytes()
            .zip(answer)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Message and SQLSTATE PostgreSQL gives for any failed password login.
pub fn auth_failed_message(user: &str) -> String {
    format!("password authentication failed for user \"{user}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_matches_postgres() {
        // SELECT 'md5' || md5('secret' || 'alice')
        let v = md5_verifier("alice", "secret");
        assert_eq!(
            Secret::parse(Some(&format!("md5{}", std::str::from_utf8(&v.0).unwrap()))),
            Secret::Md5(v.clone())
        );
        let salt = [1, 2, 3, 4];
        let answer = md5_response(&v, &salt);
        assert!(md5_check(&v, &salt, answer.as_bytes()));
        assert!(!md5_check(&v, &[0, 0, 0, 0], answer.as_bytes()));
    }

    #[test]
    fn secret_formats() {
        assert_eq!(Secret::parse(None), Secret::None);
        assert_eq!(Secret::parse(Some("plaintext")), Secret::None);
        assert_eq!(Secret::parse(Some("md5xyz")), Secret::None);
    }
}
