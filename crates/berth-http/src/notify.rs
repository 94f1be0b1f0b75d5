//! `POST /workspaces/{id}/notify` (REFERENCE-2.md §2.6): an agent's message to its user.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use berth_api::activity::Notify;
use berth_api::{ErrorBody, StatusResponse};
use berth_core::{NotifyAttachment, NotifyError};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::WorkspaceAuth;
use crate::extract::Body;
use crate::{ApiError, AppState};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(notify))
}

/// 200 `{"status":"sent"}`.
#[utoipa::path(
    post,
    path = "/workspaces/{id}/notify",
    tag = "activity",
    security(("workspace" = [])),
    params(("id" = String, Path, description = "The workspace id.")),
    request_body = Notify,
    responses(
        (status = 200, description = "`sent`.", body = StatusResponse),
        (status = 400, description = "`invalid request body`, a message that is empty or too long.", body = ErrorBody),
        (status = 403, description = "`talk_to_user_disabled` (with a `hint`).", body = ErrorBody),
    ),
)]
async fn notify(
    State(state): State<AppState>,
    auth: WorkspaceAuth,
    Body(body): Body,
) -> Result<Json<StatusResponse>, ApiError> {
    let p: Notify = serde_json::from_slice(&body)
        .ok()
        .filter(|p: &Notify| !p.message.is_empty())
        .ok_or_else(|| ApiError::BadRequest("message is required".into()))?;
    let mut attachments = Vec::new();
    for (i, a) in p.attachments.unwrap_or_default().into_iter().enumerate() {
        if a.uri.is_empty() || a.name.is_empty() {
            return Err(ApiError::BadRequest(format!(
                "attachment[{i}]: uri and name are required"
            )));
        }
        attachments.push(NotifyAttachment {
            uri: a.uri,
            name: a.name,
            mime_type: a.mime_type.filter(|m| !m.is_empty()),
            size: a.size,
        });
    }
    match state.service.notify(auth.id, p.message, attachments).await {
        Ok(()) => Ok(Json(StatusResponse::new("sent"))),
        Err(NotifyError::NotFound) => Err(ApiError::NotFound("workspace not found")),
        Err(NotifyError::Disabled) => Err(ApiError::Custom(
            StatusCode::FORBIDDEN,
            json!({
                "error": "talk_to_user_disabled",
                "hint": "This workspace is not allowed to send messages directly to the user. Forward your update to a parent workspace using delegate_task — they may be able to reach the user."
            }),
        )),
        Err(e @ NotifyError::Store(_)) => Err(ApiError::internal("internal error", e)),
    }
}
