//! `/health` and `/buildinfo`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use berth_api::system::{BuildInfo, Health};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(buildinfo))
}

/// 200 `{"status":"ok"}` when the database answers; 503 otherwise (the reference was a constant).
#[utoipa::path(
    get,
    path = "/health",
    tag = "system",
    security(()),
    responses(
        (status = 200, description = "The database answers.", body = Health),
        (status = 503, description = "The database does not answer (`unavailable`).", body = Health),
    ),
)]
async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    if state.service.healthy().await {
        (
            StatusCode::OK,
            Json(Health {
                status: "ok".into(),
            }),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "unavailable".into(),
            }),
        )
    }
}

/// The commit and version of the running server.
#[utoipa::path(
    get,
    path = "/buildinfo",
    tag = "system",
    security(()),
    responses((status = 200, description = "Build information.", body = BuildInfo)),
)]
async fn buildinfo(State(state): State<AppState>) -> Json<BuildInfo> {
    Json(BuildInfo {
        git_sha: state.config.git_sha.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}
