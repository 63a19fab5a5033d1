//! Reading the JSON values under the cluster prefix, one way for every
//! reader (agent, proxy, `pgha status`).
//!
//! Rule: a value that does not parse is reported (a warning naming the key
//! and the parse error) and then treated exactly as if the key were absent.
//! It never counts as a default value: an unreadable `/switchover` read as
//! "a switchover with no details" once made the proxy pause writes while the
//! agents, which skipped it, never cleared it.
//!
//! Hazard: "as if absent" also means a garbage write over a valid value
//! hides the valid one; that is what the DCS now holds, so every reader
//! sees the same thing.

use crate::KeyValue;
use serde::de::DeserializeOwned;

/// Decodes `value` (stored under `key`) as JSON `T`; on failure logs a
/// warning naming the key and the error, and returns `None`.
pub fn parse_value<T: DeserializeOwned>(key: &str, value: &[u8]) -> Option<T> {
    match serde_json::from_slice(value) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(%key, "ignoring a DCS value that does not parse: {e}");
            None
        }
    }
}

impl KeyValue {
    /// This key's value as JSON `T`, or `None` (with a warning) when it does
    /// not parse: see [`parse_value`].
    pub fn parse_json<T: DeserializeOwned>(&self) -> Option<T> {
        parse_value(&self.key, &self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Default, serde::Deserialize)]
    #[serde(default)]
    struct Request {
        from: Option<String>,
        at: Option<u64>,
    }

    #[test]
    fn garbage_is_absent_never_a_default() {
        let cases: &[(&[u8], Option<Request>)] = &[
            (b"{}", Some(Request::default())),
            (
                br#"{"from":"a"}"#,
                Some(Request {
                    from: Some("a".into()),
                    at: None,
                }),
            ),
            (b"", None),
            (b"garbage", None),
            (b"{not json", None),
            (br#"{"from": 7}"#, None),
            (br#"{"at": "soon"}"#, None),
            (b"7", None),
            (b"\xff\xfe", None),
        ];
        for (value, want) in cases {
            assert_eq!(
                &parse_value::<Request>("/pgha/c/switchover", value),
                want,
                "value {:?}",
                String::from_utf8_lossy(value)
            );
        }
    }
}
