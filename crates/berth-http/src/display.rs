//! `GET /workspaces/{id}/display` (admin, REFERENCE.md §2.20): whether the workspace has a
//! remote desktop. berth serves no display sessions, so the answer is never `available: true`.

use axum::Json;
use axum::extract::State;
use berth_api::ErrorBody;
use berth_api::system::Display;
use berth_core::{DisplayError, DisplayStatus};
use berth_domain::WorkspaceId;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Admin;
use crate::extract::ApiPath;
use crate::{ApiError, AppState};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(display))
}

/// 200 `{"available":false,"reason":…}`; 404 for an unknown or removed workspace.
#[utoipa::path(
    get,
    path = "/workspaces/{id}/display",
    tag = "lifecycle",
    security(("admin" = [])),
    params(("id" = String, Path, description = "The workspace id.")),
    responses(
        (status = 200, description = "Never `available: true` (berth serves no display sessions).", body = Display),
        (status = 404, description = "`workspace not found`.", body = ErrorBody),
    ),
)]
async fn display(
    _: Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Display>, ApiError> {
    let id =
        WorkspaceId::parse(&id).map_err(|_| ApiError::BadRequest("invalid workspace ID".into()))?;
    match state.service.display(id).await {
        Ok(DisplayStatus::NotEnabled) => Ok(Json(Display {
            available: false,
            height: None,
            mode: None,
            protocol: None,
            reason: "display_not_enabled".into(),
            status: None,
            width: None,
        })),
        Ok(DisplayStatus::Unavailable(d)) => Ok(Json(Display {
            available: false,
            height: Some(d.height),
            mode: Some(d.mode),
            protocol: Some(d.protocol),
            reason: "display_session_unavailable".into(),
            status: Some("not_configured".into()),
            width: Some(d.width),
        })),
        Err(DisplayError::NotFound) => Err(ApiError::NotFound("workspace not found")),
        Err(e @ DisplayError::Invalid) => Err(ApiError::internal("invalid display config", e)),
        Err(e @ DisplayError::Store(_)) => {
            Err(ApiError::internal("failed to load display config", e))
        }
    }
}
