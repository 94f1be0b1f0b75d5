//! `/health` and `/buildinfo`.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};

use crate::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/buildinfo", get(buildinfo))
}

/// 200 `{"status":"ok"}` when the database answers; 503 otherwise (the reference was a constant).
async fn health(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    if state.service.healthy().await {
        (StatusCode::OK, Json(json!({"status": "ok"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable"})),
        )
    }
}

async fn buildinfo(State(state): State<AppState>) -> Json<Value> {
    Json(json!({"git_sha": state.config.git_sha, "version": env!("CARGO_PKG_VERSION")}))
}
