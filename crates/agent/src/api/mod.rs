//! The agent's REST API (axum): Patroni-compatible health endpoints for load
//! balancers and orchestrators, the node and cluster documents, and the
//! token-protected control endpoints.
//!
//! | path | 200 when | else |
//! |---|---|---|
//! | `/`, `/primary`, `/master`, `/leader`, `/read-write` | writable leader | 503 |
//! | `/replica[?lag=16MB]` | streaming standby, not the leader, within lag | 503 |
//! | `/read-only` | the leader's running primary, or a streaming standby | 503 |
//! | `/health` | PostgreSQL runs | 503 |
//! | `/sync`, `/synchronous` | running standby in the sync set | 503 |
//! | `/async`, `/asynchronous[?lag=]` | streaming standby not in the sync set | 503 |
//! | `/liveness` | the agent loop published a status recently | 503 |
//! | `/readiness` | writable leader or running standby | 503 |
//! | `/patroni` | always (node document, with `archive`: the archive's health) | |
//! | `/cluster` | always (cluster document, with `archive`) | |
//! | `/config` | always (the dynamic config, or null before the first DCS read) | |
//! | `/metrics` | always (Prometheus text format, docs/observability.md) | |
//! | `POST /restart`, `POST /reinit` | done (token required) | 202/401/500/503 |
//! | `POST /failsafe` | promise granted (token required; body `{"leader", "term"}`) | 400/401/409/503 |
//!
//! Health endpoints answer GET, HEAD and OPTIONS alike (HAProxy's `option
//! httpchk` sends OPTIONS by default); their bodies are the node document.
//!
//! Hazard: the handlers read the latest snapshot only; they never wait on
//! the loop, so a stuck loop shows up as a failing `/liveness`, not as a
//! hanging health check.

pub mod client;
pub mod control;
pub mod docs;
pub mod health;

use crate::failsafe::Failsafe;
use crate::status::{AgentCommand, AgentStatus};
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::{Json, Router};
use control::Control;
use health::{Check, Verdict};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

pub use docs::view_json;

/// `/liveness` fails when the loop has published nothing for this long.
/// Generous, because the loop does not publish while it runs one long
/// action (a restart, a base backup); a stopped agent process fails the
/// probe anyway, because nothing answers.
pub const LIVENESS_STALE: Duration = Duration::from_secs(30);

struct ApiState {
    status: watch::Receiver<AgentStatus>,
    commands: mpsc::Sender<AgentCommand>,
    token: String,
    /// When the loop last published a snapshot (or when serving began).
    last_update: Arc<Mutex<Instant>>,
    command_wait: Duration,
    /// Failsafe promises (`None`: `POST /failsafe` answers 503).
    failsafe: Option<Failsafe>,
    metrics: Arc<crate::metrics::AgentMetrics>,
}

type Shared = Arc<ApiState>;

/// Serve the API on `listener` until `shutdown` resolves. The caller binds
/// the listener (tests bind `127.0.0.1:0`). `token` guards the control
/// endpoints; an empty token disables them (every call answers 401).
pub async fn serve(
    listener: tokio::net::TcpListener,
    status: watch::Receiver<AgentStatus>,
    commands: mpsc::Sender<AgentCommand>,
    token: String,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let metrics = Arc::default();
    serve_agent(listener, status, commands, token, None, metrics, shutdown).await
}

/// [`serve`] for a running agent: also answers the leader's failsafe
/// promise requests (`POST /failsafe`) through `failsafe`, and `/metrics`
/// reports the agent's counters ([`crate::Agent::metrics`]).
pub async fn serve_agent(
    listener: tokio::net::TcpListener,
    status: watch::Receiver<AgentStatus>,
    commands: mpsc::Sender<AgentCommand>,
    token: String,
    failsafe: Option<Failsafe>,
    metrics: Arc<crate::metrics::AgentMetrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let last_update = Arc::new(Mutex::new(Instant::now()));
    let watcher = tokio::spawn(track_updates(status.clone(), last_update.clone()));
    let state = Arc::new(ApiState {
        status,
        commands,
        token,
        last_update,
        command_wait: control::COMMAND_WAIT,
        failsafe,
        metrics,
    });
    let addr = listener.local_addr().ok();
    tracing::info!(?addr, "REST API listening");
    let result = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await;
    watcher.abort();
    result.map_err(|e| anyhow::anyhow!("serve the REST API: {e}"))
}

/// Record the time of every snapshot the loop publishes.
async fn track_updates(mut rx: watch::Receiver<AgentStatus>, last: Arc<Mutex<Instant>>) {
    while rx.changed().await.is_ok() {
        if let Ok(mut t) = last.lock() {
            *t = Instant::now();
        }
    }
}

fn router(state: Shared) -> Router {
    Router::new()
        .route("/patroni", any(patroni))
        .route("/cluster", any(cluster))
        .route("/config", any(config))
        .route("/liveness", any(liveness))
        .route("/metrics", any(metrics))
        .route("/restart", post(restart))
        .route("/reinit", post(reinit))
        .route("/failsafe", post(failsafe_promise))
        .fallback(health_check)
        .with_state(state)
}

/// Only GET, HEAD and OPTIONS read; anything else on a read endpoint is 405.
fn read_method(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD || method == Method::OPTIONS
}

fn not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(json!({"error": "method not allowed"})),
    )
        .into_response()
}

async fn health_check(
    State(st): State<Shared>,
    method: Method,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(check) = Check::from_path(uri.path()) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no endpoint {}", uri.path())})),
        )
            .into_response();
    };
    if !read_method(&method) {
        return not_allowed();
    }
    let snapshot = st.status.borrow().clone();
    let mut doc = docs::node_doc(&snapshot);
    let code = match health::evaluate(check, &snapshot, &query) {
        Verdict::Pass => StatusCode::OK,
        Verdict::Fail(reason) => {
            doc["reason"] = Value::String(reason);
            StatusCode::SERVICE_UNAVAILABLE
        }
        Verdict::BadRequest(reason) => {
            doc["error"] = Value::String(reason);
            StatusCode::BAD_REQUEST
        }
    };
    (code, Json(doc)).into_response()
}

async fn patroni(State(st): State<Shared>, method: Method) -> Response {
    if !read_method(&method) {
        return not_allowed();
    }
    let mut doc = docs::node_doc(&st.status.borrow());
    doc["archive"] = crate::metrics::archive_doc(&st.metrics.pg_sample());
    (StatusCode::OK, Json(doc)).into_response()
}

async fn cluster(State(st): State<Shared>, method: Method) -> Response {
    if !read_method(&method) {
        return not_allowed();
    }
    let mut doc = docs::cluster_doc(&st.status.borrow());
    doc["archive"] = crate::metrics::archive_doc(&st.metrics.pg_sample());
    (StatusCode::OK, Json(doc)).into_response()
}

/// The dynamic config as this agent last read it (Patroni's `GET /config`).
async fn config(State(st): State<Shared>, method: Method) -> Response {
    if !read_method(&method) {
        return not_allowed();
    }
    let doc = st.status.borrow().view.get("config").cloned();
    (StatusCode::OK, Json(doc.unwrap_or(Value::Null))).into_response()
}

/// Prometheus' text exposition format (docs/observability.md).
async fn metrics(State(st): State<Shared>, method: Method) -> Response {
    if !read_method(&method) {
        return not_allowed();
    }
    let body = st.metrics.render(&st.status.borrow());
    let ct = [(axum::http::header::CONTENT_TYPE, pgha_metrics::CONTENT_TYPE)];
    (StatusCode::OK, ct, body).into_response()
}

async fn liveness(State(st): State<Shared>, method: Method) -> Response {
    if !read_method(&method) {
        return not_allowed();
    }
    let age = st
        .last_update
        .lock()
        .map(|t| t.elapsed())
        .unwrap_or(Duration::MAX);
    let fresh = age < LIVENESS_STALE;
    let code = if fresh {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({"alive": fresh, "last_status_age_ms": age.as_millis() as u64});
    (code, Json(body)).into_response()
}

async fn restart(State(st): State<Shared>, headers: HeaderMap) -> Response {
    control_endpoint(&st, &headers, Control::Restart).await
}

async fn reinit(State(st): State<Shared>, headers: HeaderMap) -> Response {
    control_endpoint(&st, &headers, Control::Reinit).await
}

async fn control_endpoint(st: &ApiState, headers: &HeaderMap, what: Control) -> Response {
    if !control::authorized(headers, &st.token) {
        tracing::warn!(?what, "control request without a valid token refused");
        let body = json!({"ok": false, "error": "missing or wrong bearer token"});
        let mut resp = (StatusCode::UNAUTHORIZED, Json(body)).into_response();
        resp.headers_mut().insert(
            axum::http::header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer"),
        );
        return resp;
    }
    let (code, body) = control::run_command(&st.commands, what, st.command_wait).await;
    (code, Json(body)).into_response()
}

/// `POST /failsafe`: the leader asks this member for a failsafe promise
/// (`pgha_core::failsafe`). 200 with the promise's duration when granted,
/// 409 with the reason when not.
async fn failsafe_promise(State(st): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    if !control::authorized(&headers, &st.token) {
        tracing::warn!("failsafe request without a valid token refused");
        let body = json!({"ok": false, "error": "missing or wrong bearer token"});
        return (StatusCode::UNAUTHORIZED, Json(body)).into_response();
    }
    let Some(failsafe) = &st.failsafe else {
        let body = json!({"ok": false, "error": "this API serves no agent loop"});
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    };
    let req: pgha_core::PromiseRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            let error = format!("expected {{\"leader\": NAME, \"term\": N}}: {e}");
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"ok": false, "error": error})),
            )
                .into_response();
        }
    };
    match failsafe.request(&req) {
        Ok(p) => {
            tracing::debug!(leader = %p.leader, term = p.term, "failsafe promise granted");
            (
                StatusCode::OK,
                Json(json!({"ok": true, "leader": p.leader, "term": p.term})),
            )
                .into_response()
        }
        Err(why) => {
            tracing::debug!(leader = %req.leader, "failsafe promise refused: {why}");
            (
                StatusCode::CONFLICT,
                Json(json!({"ok": false, "error": why})),
            )
                .into_response()
        }
    }
}
