//! `POST /workspaces/{id}/broadcast` (REFERENCE.md §2.22): a workspace's message to every other
//! live workspace of its organisation.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use berth_api::ErrorBody;
use berth_api::activity::{Broadcast, BroadcastSent};
use berth_core::BroadcastError;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::WorkspaceAuth;
use crate::extract::Body;
use crate::{ApiError, AppState};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(broadcast))
}

/// The 403 hint (the reference's text is not part of the specification).
const DISABLED_HINT: &str = "This workspace is not allowed to broadcast to its organisation. An admin can enable it with PATCH /workspaces/{id}/abilities {\"broadcast_enabled\": true}; meanwhile, message specific peers with delegate_task.";

/// 200 `{"status":"sent","delivered":N}`.
#[utoipa::path(
    post,
    path = "/workspaces/{id}/broadcast",
    tag = "activity",
    security(("workspace" = [])),
    params(("id" = String, Path, description = "The workspace id.")),
    request_body = Broadcast,
    responses(
        (status = 200, description = "`sent`, with the number of recipients.", body = BroadcastSent),
        (status = 400, description = "`message is required`, a message too long.", body = ErrorBody),
        (status = 403, description = "`broadcast_disabled` (with a `hint`).", body = ErrorBody),
    ),
)]
async fn broadcast(
    State(state): State<AppState>,
    auth: WorkspaceAuth,
    Body(body): Body,
) -> Result<Json<BroadcastSent>, ApiError> {
    // An object with a string `message` (serde would also bind a struct from an array).
    let message = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(mut fields)) => match fields.remove("message") {
            Some(Value::String(m)) => m,
            _ => return Err(ApiError::BadRequest("message is required".into())),
        },
        _ => return Err(ApiError::BadRequest("message is required".into())),
    };
    match state.service.broadcast(auth.id, &message).await {
        Ok(delivered) => Ok(Json(BroadcastSent {
            delivered: i64::try_from(delivered).unwrap_or(i64::MAX),
            status: "sent".into(),
        })),
        Err(e @ (BroadcastError::MessageRequired | BroadcastError::MessageTooLong)) => {
            Err(ApiError::BadRequest(e.to_string()))
        }
        Err(BroadcastError::NotFound) => Err(ApiError::NotFound("workspace not found")),
        Err(BroadcastError::Disabled) => Err(ApiError::Custom(
            StatusCode::FORBIDDEN,
            json!({"error": "broadcast_disabled", "hint": DISABLED_HINT}),
        )),
        Err(e @ BroadcastError::Store(_)) => Err(ApiError::internal("internal error", e)),
    }
}
