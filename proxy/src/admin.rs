//! Admin HTTP API: /health, /ready, /metrics, /pools, POST /reload.

use crate::app::App;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use std::sync::Arc;

/// Build the admin router.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/pools", get(pools))
        .route("/reload", post(reload))
        .with_state(app)
}

async fn ready(State(app): State<Arc<App>>) -> impl IntoResponse {
    let report = app.check_upstreams().await;
    let all_ok = report.iter().all(|r| r.reachable);
    let code = if all_ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(serde_json::json!({ "ready": all_ok, "routes": report })))
}

async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    app.refresh_pool_metrics();
    app.shared.governance.refresh_metrics();
    ([("content-type", "text/plain; version=0.0.4")], app.shared.metrics.render())
}

async fn pools(State(app): State<Arc<App>>) -> impl IntoResponse {
    Json(app.pool_report())
}

async fn reload(State(app): State<Arc<App>>) -> impl IntoResponse {
    match app.reload().await {
        Ok(()) => (StatusCode::OK, Json(serde_json::json!({ "reloaded": true }))),
        Err(e) => (StatusCode::UNPROCESSABLE_ENTITY, Json(serde_json::json!({ "reloaded": false, "error": e }))),
    }
}
