//! The state-changing endpoints (`POST /restart`, `POST /reinit`): check
//! the bearer token, hand an [`AgentCommand`] to the loop, wait (bounded)
//! for its answer.
//!
//! Status codes: 200 done; 202 accepted but still running when the wait
//! ended; 401 missing or wrong token; 500 the agent tried and refused or
//! failed (the body says why); 503 the loop is not taking commands.
//!
//! Hazard: the token comparison must not leak how many leading bytes
//! matched, so it runs in time independent of the content.

use crate::status::AgentCommand;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How long a control request waits for the loop before answering 202.
pub const COMMAND_WAIT: Duration = Duration::from_secs(60);

/// Compare two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u64;
    let n = a.len().max(b.len());
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        diff |= u64::from(x ^ y);
    }
    diff == 0
}

/// Whether the request carries `Authorization: Bearer <token>`. An empty
/// configured token authorizes nothing.
pub fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
        return false;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let mut parts = value.trim().splitn(2, ' ');
    let scheme = parts.next().unwrap_or_default();
    let given = parts.next().unwrap_or_default().trim();
    !token.is_empty()
        && scheme.eq_ignore_ascii_case("bearer")
        && constant_time_eq(given.as_bytes(), token.as_bytes())
}

/// Which command a control endpoint sends.
#[derive(Clone, Copy, Debug)]
pub enum Control {
    Restart,
    Reinit,
}

impl Control {
    fn name(self) -> &'static str {
        match self {
            Control::Restart => "restart",
            Control::Reinit => "reinit",
        }
    }

    fn command(self, reply: oneshot::Sender<Result<(), String>>) -> AgentCommand {
        match self {
            Control::Restart => AgentCommand::Restart { reply },
            Control::Reinit => AgentCommand::Reinit { reply },
        }
    }
}

/// Send `what` to the loop and wait up to `wait` for its result.
pub async fn run_command(
    commands: &mpsc::Sender<AgentCommand>,
    what: Control,
    wait: Duration,
) -> (StatusCode, Value) {
    let name = what.name();
    let (tx, rx) = oneshot::channel();
    match commands.try_send(what.command(tx)) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(_)) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"ok": false, "action": name, "error": "the agent is busy with another command"}),
            )
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"ok": false, "action": name, "error": "the agent loop is not running"}),
            )
        }
    }
    tracing::info!(action = name, "control request handed to the agent loop");
    match tokio::time::timeout(wait, rx).await {
        Ok(Ok(Ok(()))) => (StatusCode::OK, json!({"ok": true, "action": name})),
        Ok(Ok(Err(msg))) => {
            tracing::warn!(action = name, error = %msg, "control request failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"ok": false, "action": name, "error": msg}),
            )
        }
        Ok(Err(_)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"ok": false, "action": name, "error": "the agent loop dropped the request"}),
        ),
        Err(_) => (
            StatusCode::ACCEPTED,
            json!({"ok": null, "action": name,
                   "message": format!("still in progress after {}s; watch `pgha status`", wait.as_secs())}),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn constant_time_eq_matches_eq() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn bearer_token_is_required() {
        let mut h = HeaderMap::new();
        assert!(!authorized(&h, "t0k"));
        h.insert("authorization", HeaderValue::from_static("Bearer t0k"));
        assert!(authorized(&h, "t0k"));
        assert!(!authorized(&h, "t0k2"));
        assert!(!authorized(&h, ""));
        h.insert("authorization", HeaderValue::from_static("Basic t0k"));
        assert!(!authorized(&h, "t0k"));
    }
}
