//! `DcsSettings`: the `[dcs]` table of the cluster config file.
//!
//! ```toml
//! [dcs]
//! endpoints = ["http://10.0.0.1:2379", "http://10.0.0.2:2379", "http://10.0.0.3:2379"]
//! namespace = "/pgha"          # default
//! request_timeout = "1s"       # default
//! # username = "pgha"          # optional etcd auth; password required with it
//! # password = "secret"
//! ```
//!
//! Unknown keys are rejected so that a typo is an error, not a silent default.
//! Hazard: the password is a secret; `Debug` prints it as `[SECRET]`.

use serde::{Deserialize, Serialize};
use std::fmt;
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
    /// etcd password for `username`. Default none.
    pub password: Option<String>,
}

impl Default for DcsSettings {
    fn default() -> Self {
        DcsSettings {
            endpoints: vec!["http://127.0.0.1:2379".to_string()],
            namespace: "/pgha".to_string(),
            request_timeout: Duration::from_secs(1),
            username: None,
            password: None,
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
        if self.username.is_some() != self.password.is_some() {
            return Err("dcs.username and dcs.password must be set together".into());
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
    }
}
