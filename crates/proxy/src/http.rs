//! The proxy's HTTP listener (`http_listen`): `GET /metrics` in
//! Prometheus' text format. Read-only and unauthenticated: bind it to
//! loopback or a monitoring network (docs/observability.md).

use crate::shared::Shared;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

/// Serve until the task is aborted (the proxy handle drops it).
pub async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .with_state(shared);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!("the HTTP listener ended: {e}");
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let body = shared.metrics.render(&shared);
    let ct = [(header::CONTENT_TYPE, pgha_metrics::CONTENT_TYPE)];
    (StatusCode::OK, ct, body).into_response()
}
