//! `GET /workspaces/{id}/display` (admin, REFERENCE.md §2.20): whether the workspace has a
//! remote desktop. berth serves no display sessions, so the answer is never `available: true`.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use berth_core::{DisplayError, DisplayStatus};
use berth_domain::WorkspaceId;
use serde_json::{Value, json};

use crate::auth::Admin;
use crate::extract::ApiPath;
use crate::{ApiError, AppState};

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/workspaces/{id}/display", get(display))
}

/// 200 `{"available":false,"reason":…}`; 404 for an unknown or removed workspace.
async fn display(
    _: Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let id =
        WorkspaceId::parse(&id).map_err(|_| ApiError::BadRequest("invalid workspace ID".into()))?;
    match state.service.display(id).await {
        Ok(DisplayStatus::NotEnabled) => Ok(Json(
            json!({"available": false, "reason": "display_not_enabled"}),
        )),
        Ok(DisplayStatus::Unavailable(d)) => Ok(Json(json!({
            "available": false,
            "reason": "display_session_unavailable",
            "mode": d.mode,
            "protocol": d.protocol,
            "width": d.width,
            "height": d.height,
            "status": "not_configured",
        }))),
        Err(DisplayError::NotFound) => Err(ApiError::NotFound("workspace not found")),
        Err(e @ DisplayError::Invalid) => Err(ApiError::internal("invalid display config", e)),
        Err(e @ DisplayError::Store(_)) => {
            Err(ApiError::internal("failed to load display config", e))
        }
    }
}
