//! `DcsSettings`: the `[dcs]` table of the cluster config file.
//!
//! ```toml
//! [dcs]
//! endpoints = ["http://10.0.0.1:2379", "http://10.0.0.2:2379", "http://10.0.0.3:2379"]
//! namespace = "/pgha"          # default
//! request_timeout = "1s"       # default
//! username = "pgha"            # etcd authentication (optional, see docs/dcs.md)
//! password_file = "/var/lib/pgha/secrets/etcd.password"
//! ```
//!
//! Unknown keys are rejected so that a typo is an error, not a silent default.
//! Hazard: the password is a secret; `Debug` prints it as `[SECRET]`. Prefer
//! `password_file` (a 0600 file) to `password` (the config file then holds
//! the secret itself).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Connection settings for the DCS (etcd v3).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DcsSettings {
    /// etcd client URLs (`http://host:port`). Default `["http://127.0.0.1:2379"]`.
    /// List every member: the client fails over between them.
    pub endpoints: Vec<String>,
    /// Key prefix under which every cluster lives. Default `"/pgha"`; must
    /// start with `/` and not end with one.
    pub namespace: String,
    /// Upper bound on every DCS request, including connecting, as a
    /// humantime string (`"500ms"`, `"1s"`). Default `"1s"`. Keep it well
    /// below the leader lease TTL so a dead etcd is noticed in time.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// etcd user name, when etcd authentication is enabled. Default none.
    pub username: Option<String>,
    /// etcd password for `username`, written in the config itself.
    /// Default none; prefer `password_file`.
    pub password: Option<String>,
    /// File whose first line is the etcd password for `username` (mode
    /// 0600). Relative to the config file's directory in a cluster config.
    /// Default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
}

impl Default for DcsSettings {
    fn default() -> Self {
        DcsSettings {
            endpoints: vec!["http://127.0.0.1:2379".to_string()],
            namespace: "/pgha".to_string(),
            request_timeout: Duration::from_secs(1),
            username: None,
            password: None,
            password_file: None,
        }
    }
}

impl fmt::Debug for DcsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DcsSettings")
            .field("endpoints", &self.endpoints)
            .field("namespace", &self.namespace)
            .field("request_timeout", &self.request_timeout)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "[SECRET]"))
            .field("password_file", &self.password_file)
            .finish()
    }
}

impl DcsSettings {
    /// Settings for the given endpoints, other fields default.
    pub fn with_endpoints<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> Self {
        DcsSettings {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// Check cross-field rules; the message names the key at fault.
    pub fn validate(&self) -> Result<(), String> {
        if self.endpoints.is_empty() {
            return Err("dcs.endpoints: at least one etcd endpoint is required".into());
        }
        for e in &self.endpoints {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(format!(
                    "dcs.endpoints: {e:?} must be a URL like http://127.0.0.1:2379"
                ));
            }
            if e.starts_with("https://") {
                return Err(format!("dcs.endpoints: {e:?}: TLS is not supported yet"));
            }
        }
        if !self.namespace.starts_with('/') || self.namespace.ends_with('/') {
            return Err(format!(
                "dcs.namespace: {:?} must start with '/' and not end with '/'",
                self.namespace
            ));
        }
        if self.request_timeout.is_zero() {
            return Err("dcs.request_timeout: must be greater than zero".into());
        }
        match (
            &self.username,
            self.password.is_some(),
            self.password_file.is_some(),
        ) {
            (Some(_), true, true) => {
                return Err("dcs.password and dcs.password_file: set only one of them".into())
            }
            (Some(_), false, false) => {
                return Err(
                    "dcs.username needs a password: set dcs.password_file (or dcs.password)".into(),
                )
            }
            (Some(u), _, _) if u.is_empty() => return Err("dcs.username: must not be empty".into()),
            (None, true, _) | (None, _, true) => {
                return Err(
                    "dcs.password / dcs.password_file need dcs.username (the etcd user)".into(),
                )
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_table_gives_defaults() {
        let s: DcsSettings = toml::from_str("").expect("parse");
        assert_eq!(s, DcsSettings::default());
        s.validate().expect("defaults are valid");
    }

    #[test]
    fn full_table_parses() {
        let s: DcsSettings = toml::from_str(
            r#"
            endpoints = ["http://a:2379", "http://b:2379"]
            namespace = "/prod"
            request_timeout = "500ms"
            username = "u"
            password = "p"
            "#,
        )
        .expect("parse");
        assert_eq!(s.endpoints.len(), 2);
        assert_eq!(s.request_timeout, Duration::from_millis(500));
        s.validate().expect("valid");
        assert!(
            !format!("{s:?}").contains("\"p\""),
            "password leaked in Debug"
        );
    }

    #[test]
    fn unknown_key_is_rejected() {
        let err = toml::from_str::<DcsSettings>("endpoint = []").expect_err("must fail");
        assert!(err.to_string().contains("endpoint"), "{err}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let s = DcsSettings {
            namespace: "pgha/".into(),
            ..DcsSettings::default()
        };
        assert!(s.validate().unwrap_err().contains("dcs.namespace"));
        let mut s = DcsSettings::default();
        s.endpoints.clear();
        assert!(s.validate().unwrap_err().contains("dcs.endpoints"));
        let s = DcsSettings {
            username: Some("u".into()),
            ..DcsSettings::default()
        };
        assert!(s.validate().unwrap_err().contains("dcs.password"));
        let s = DcsSettings {
            password_file: Some("/x".into()),
            ..DcsSettings::default()
        };
        assert!(s.validate().unwrap_err().contains("dcs.username"));
        let s = DcsSettings {
            username: Some("u".into()),
            password: Some("p".into()),
            password_file: Some("/x".into()),
            ..DcsSettings::default()
        };
        assert!(s.validate().unwrap_err().contains("only one"));
    }

    #[test]
    fn password_file_parses_and_is_not_a_secret_in_debug() {
        let s: DcsSettings =
            toml::from_str("username = \"pgha\"\npassword_file = \"/s/etcd.password\"\n")
                .expect("parse");
        s.validate().expect("valid");
        assert!(format!("{s:?}").contains("/s/etcd.password"));
        let back: DcsSettings =
            toml::from_str(&toml::to_string(&s).expect("render")).expect("parse");
        assert_eq!(back, s);
    }
}
