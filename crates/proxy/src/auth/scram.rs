//! SCRAM-SHA-256 (RFC 5802/7677) without channel binding, both sides.
//!
//! Server side ([`ScramServer`]): verifies a client against the stored
//! verifier and recovers the ClientKey from the proof
//! (`ClientKey = proof XOR HMAC(StoredKey, AuthMessage)`, checked by
//! `SHA-256(ClientKey) == StoredKey`), the technique PgBouncer documents.
//! Client side ([`ScramClient`]): logs in to a backend with that ClientKey,
//! without ever knowing the password.
//!
//! Hazards: the ClientKey is password-equivalent for this server; it lives in
//! memory only for the session. Proofs are compared in constant time. For a
//! role that does not exist the server side runs a mock exchange with a
//! deterministic per-name salt, so the answer reveals nothing (as PostgreSQL).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// A stored SCRAM-SHA-256 verifier (`pg_authid.rolpassword`).
#[derive(Clone, PartialEq, Eq)]
pub struct ScramSecret {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl std::fmt::Debug for ScramSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramSecret([SECRET])")
    }
}

impl ScramSecret {
    /// Parses `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`.
    pub fn parse(s: &str) -> Option<Self> {
        let rest = s.strip_prefix("SCRAM-SHA-256$")?;
        let (iter_salt, keys) = rest.split_once('$')?;
        let (iter, salt) = iter_salt.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        Some(ScramSecret {
            iterations: iter.parse().ok()?,
            salt: B64.decode(salt).ok()?,
            stored_key: B64.decode(stored).ok()?.try_into().ok()?,
            server_key: B64.decode(server).ok()?.try_into().ok()?,
        })
    }

    /// A verifier no proof matches, with a salt derived from `name` and
    /// `mock_key` so repeated attempts for one name look alike.
    pub fn mock(name: &str, mock_key: &[u8; 32]) -> Self {
        let salt = hmac(mock_key, name.as_bytes())[..16].to_vec();
        let mut stored_key = [0u8; 32];
        let mut server_key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut stored_key);
        rand::thread_rng().fill_bytes(&mut server_key);
        ScramSecret {
            iterations: 4096,
            salt,
            stored_key,
            server_key,
        }
    }

    /// Builds a verifier from a password (tests and tools).
    pub fn from_password(password: &str, salt: &[u8], iterations: u32) -> Self {
        let salted = hi(password.as_bytes(), salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        ScramSecret {
            iterations,
            salt: salt.to_vec(),
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, b"Server Key"),
        }
    }
}

/// Why a SCRAM exchange failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Protocol(&'static str),
    #[error("SCRAM proof does not match")]
    BadProof,
}

// HMAC takes a key of any length (longer ones are hashed): `new_from_slice`
// has no error to return here.
#[allow(clippy::expect_used)]
fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// PBKDF2-HMAC-SHA-256 with one block (the SCRAM `Hi` function).
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut msg = salt.to_vec();
    msg.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac(password, &msg);
    let mut out = u;
    for _ in 1..iterations {
        u = hmac(password, &u);
        for (o, x) in out.iter_mut().zip(u.iter()) {
            *o ^= x;
        }
    }
    out
}

fn nonce() -> String {
    let mut raw = [0u8; 18];
    rand::thread_rng().fill_bytes(&mut raw);
    B64.encode(raw)
}

fn xor(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for i in 0..32 {
        out[i] = a[i] ^ b[i];
    }
    out
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Finds attribute `key` (`k=value`) among comma-separated attributes.
fn attr(msg: &str, key: char) -> Option<&str> {
    msg.split(',').find_map(|part| {
        let mut chars = part.chars();
        (chars.next() == Some(key) && chars.next() == Some('=')).then(|| &part[2..])
    })
}

/// The server side of one exchange.
pub struct ScramServer {
    secret: ScramSecret,
    /// A mock exchange for an unknown role or one without a SCRAM verifier.
    mock: bool,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl ScramServer {
    /// `secret: None` runs the mock exchange, which always fails at the end.
    pub fn new(secret: Option<ScramSecret>, name: &str, mock_key: &[u8; 32]) -> Self {
        let mock = secret.is_none();
        ScramServer {
            secret: secret.unwrap_or_else(|| ScramSecret::mock(name, mock_key)),
            mock,
            gs2_header: String::new(),
            client_first_bare: String::new(),
            server_first: String::new(),
            nonce: String::new(),
        }
    }

    /// Takes client-first-message, returns server-first-message.
    pub fn first(&mut self, client_first: &[u8]) -> Result<String, ScramError> {
        let msg =
            std::str::from_utf8(client_first).map_err(|_| ScramError::Protocol("not UTF-8"))?;
        let (cb, rest) = msg
            .split_once(',')
            .ok_or(ScramError::Protocol("no GS2 header"))?;
        if cb != "n" && cb != "y" {
            return Err(ScramError::Protocol("channel binding is not supported"));
        }
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or(ScramError::Protocol("no GS2 header"))?;
        if !authzid.is_empty() {
            return Err(ScramError::Protocol(
                "authorization identity is not supported",
            ));
        }
        let client_nonce = attr(bare, 'r').ok_or(ScramError::Protocol("no client nonce"))?;
        if client_nonce.is_empty()
            || !client_nonce
                .bytes()
                .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
        {
            return Err(ScramError::Protocol("invalid client nonce"));
        }
        self.gs2_header = format!("{cb},{authzid},");
        self.client_first_bare = bare.to_string();
        self.nonce = format!("{client_nonce}{}", nonce());
        self.server_first = format!(
            "r={},s={},i={}",
            self.nonce,
            B64.encode(&self.secret.salt),
            self.secret.iterations
        );
        Ok(self.server_first.clone())
    }

    /// Takes client-final-message; on success returns the recovered
    /// ClientKey and the server-final-message.
    pub fn finish(&self, client_final: &[u8]) -> Result<([u8; 32], String), ScramError> {
        let msg =
            std::str::from_utf8(client_final).map_err(|_| ScramError::Protocol("not UTF-8"))?;
        let (without_proof, proof) = msg
            .rsplit_once(",p=")
            .ok_or(ScramError::Protocol("no proof"))?;
        let cb =
            attr(without_proof, 'c').ok_or(ScramError::Protocol("no channel binding attribute"))?;
        if B64.decode(cb).ok().as_deref() != Some(self.gs2_header.as_bytes()) {
            return Err(ScramError::Protocol("unexpected channel binding"));
        }
        if attr(without_proof, 'r') != Some(self.nonce.as_str()) {
            return Err(ScramError::Protocol("nonce does not match"));
        }
        let proof: [u8; 32] = B64
            .decode(proof)
            .ok()
            .and_then(|p| p.try_into().ok())
            .ok_or(ScramError::Protocol("invalid proof"))?;
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let signature = hmac(&self.secret.stored_key, auth_message.as_bytes());
        let client_key = xor(&proof, &signature);
        let stored: [u8; 32] = Sha256::digest(client_key).into();
        if self.mock || !ct_eq(&stored, &self.secret.stored_key) {
            return Err(ScramError::BadProof);
        }
        let server_sig = hmac(&self.secret.server_key, auth_message.as_bytes());
        Ok((client_key, format!("v={}", B64.encode(server_sig))))
    }
}

/// The client side of one exchange, proving knowledge of a ClientKey.
pub struct ScramClient {
    client_key: [u8; 32],
    server_key: [u8; 32],
    client_first_bare: String,
    auth_message: String,
}

impl ScramClient {
    pub fn new(client_key: [u8; 32], server_key: [u8; 32]) -> Self {
        ScramClient {
            client_key,
            server_key,
            client_first_bare: format!("n=,r={}", nonce()),
            auth_message: String::new(),
        }
    }

    /// client-first-message.
    pub fn first(&self) -> String {
        format!("n,,{}", self.client_first_bare)
    }

    /// Takes server-first-message, returns client-final-message.
    pub fn respond(&mut self, server_first: &[u8]) -> Result<String, ScramError> {
        let msg =
            std::str::from_utf8(server_first).map_err(|_| ScramError::Protocol("not UTF-8"))?;
        let nonce = attr(msg, 'r').ok_or(ScramError::Protocol("no server nonce"))?;
        let ours = attr(&self.client_first_bare, 'r').unwrap_or_default();
        if !nonce.starts_with(ours) || nonce.len() <= ours.len() {
            return Err(ScramError::Protocol("server nonce does not extend ours"));
        }
        let without_proof = format!("c=biws,r={nonce}");
        self.auth_message = format!("{},{},{}", self.client_first_bare, msg, without_proof);
        let stored: [u8; 32] = Sha256::digest(self.client_key).into();
        let signature = hmac(&stored, self.auth_message.as_bytes());
        let proof = xor(&self.client_key, &signature);
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Like [`ScramClient::respond`] for a client-first-message-bare chosen
    /// by the caller (test clients).
    pub fn respond_to(
        &mut self,
        client_first_bare: &str,
        server_first: &[u8],
    ) -> Result<String, ScramError> {
        self.client_first_bare = client_first_bare.to_string();
        self.respond(server_first)
    }

    /// Checks server-final-message.
    pub fn verify(&self, server_final: &[u8]) -> Result<(), ScramError> {
        let msg =
            std::str::from_utf8(server_final).map_err(|_| ScramError::Protocol("not UTF-8"))?;
        let v = attr(msg, 'v').ok_or(ScramError::Protocol("no server signature"))?;
        let expected = hmac(&self.server_key, self.auth_message.as_bytes());
        match B64.decode(v) {
            Ok(sig) if ct_eq(&sig, &expected) => Ok(()),
            _ => Err(ScramError::BadProof),
        }
    }
}

/// Client-side helper for tests: computes the proof from a password.
pub fn client_key_from_password(password: &str, salt: &[u8], iterations: u32) -> [u8; 32] {
    hmac(&hi(password.as_bytes(), salt, iterations), b"Client Key")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(password: &str, secret: Option<ScramSecret>) -> Result<[u8; 32], ScramError> {
        let mut server = ScramServer::new(secret.clone(), "alice", &[7; 32]);
        let cf_bare = "n=alice,r=clientnonce123";
        let sf = server.first(format!("n,,{cf_bare}").as_bytes())?;
        let salt = B64.decode(attr(&sf, 's').unwrap()).unwrap();
        let iter: u32 = attr(&sf, 'i').unwrap().parse().unwrap();
        let ck = client_key_from_password(password, &salt, iter);
        let without = format!("c=biws,r={}", attr(&sf, 'r').unwrap());
        let am = format!("{cf_bare},{sf},{without}");
        let stored: [u8; 32] = Sha256::digest(ck).into();
        let sig = hmac(&stored, am.as_bytes());
        let proof = xor(&ck, &sig);
        let (key, _final) =
            server.finish(format!("{without},p={}", B64.encode(proof)).as_bytes())?;
        Ok(key)
    }

    #[test]
    fn server_accepts_right_password_and_recovers_key() {
        let secret = ScramSecret::from_password("s3cret", b"0123456789abcdef", 4096);
        let key = exchange("s3cret", Some(secret.clone())).unwrap();
        assert_eq!(
            key,
            client_key_from_password("s3cret", b"0123456789abcdef", 4096)
        );
        // The recovered key logs in to a server holding the same verifier.
        let mut backend = ScramServer::new(Some(secret.clone()), "alice", &[0; 32]);
        let mut client = ScramClient::new(key, secret.server_key);
        let sf = backend.first(client.first().as_bytes()).unwrap();
        let cf = client.respond(sf.as_bytes()).unwrap();
        let (_, fin) = backend.finish(cf.as_bytes()).unwrap();
        client.verify(fin.as_bytes()).unwrap();
    }

    #[test]
    fn wrong_password_and_mock_fail() {
        let secret = ScramSecret::from_password("s3cret", b"salt", 4096);
        assert_eq!(exchange("wrong", Some(secret)), Err(ScramError::BadProof));
        assert_eq!(exchange("anything", None), Err(ScramError::BadProof));
    }

    #[test]
    fn parses_postgres_verifier() {
        let s = "SCRAM-SHA-256$4096:c2FsdHNhbHQ=$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
        let v = ScramSecret::parse(s).unwrap();
        assert_eq!(v.iterations, 4096);
        assert_eq!(v.salt, b"saltsalt");
        assert_eq!(v.server_key, [1; 32]);
        assert!(ScramSecret::parse("md5abc").is_none());
    }

    #[test]
    fn mock_salt_is_stable_per_name() {
        assert_eq!(
            ScramSecret::mock("bob", &[1; 32]).salt,
            ScramSecret::mock("bob", &[1; 32]).salt
        );
        assert_ne!(
            ScramSecret::mock("bob", &[1; 32]).salt,
            ScramSecret::mock("eve", &[1; 32]).salt
        );
    }
}
