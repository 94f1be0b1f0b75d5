//! Update, delete, state, restart, pause, resume (REFERENCE.md §2.4, §2.5, §2.8–2.10).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use berth_core::{LifecycleError, Principal, RestartOutcome, WorkspaceState};
use berth_domain::WorkspaceId;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{Admin, WorkspaceAuth};
use crate::extract::{ApiPath, ApiQuery, Body};
use crate::{ApiError, AppState};

impl From<LifecycleError> for ApiError {
    fn from(e: LifecycleError) -> Self {
        use LifecycleError as E;
        match e {
            E::NotFound => ApiError::NotFound("workspace not found"),
            E::Invalid(m) => ApiError::BadRequest(m),
            e @ E::AdminOnly(_) => {
                ApiError::Custom(StatusCode::FORBIDDEN, json!({"error": e.to_string()}))
            }
            E::NameTaken => ApiError::Conflict(
                "workspace name already in use; please pick a different name".into(),
            ),
            E::ConfirmationRequired { children } => {
                let list: Vec<Value> = children
                    .iter()
                    .map(|(id, name)| json!({"id": id, "name": name}))
                    .collect();
                ApiError::Custom(
                    StatusCode::CONFLICT,
                    json!({
                        "status": "confirmation_required",
                        "message": "This workspace has sub-workspaces. Delete with ?confirm=true to cascade delete.",
                        "children_count": list.len(),
                        "children": list,
                    }),
                )
            }
            e @ E::StopFailures { .. } => {
                let (removed, n) = match &e {
                    E::StopFailures { removed, failures } => (*removed, failures.len()),
                    _ => (0, 0),
                };
                ApiError::Custom(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({"error": e.to_string(), "removed_count": removed, "stop_failures": n}),
                )
            }
            e @ E::ParentPaused(_) => ApiError::Conflict(e.to_string()),
            E::NoBackend => ApiError::Custom(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "provisioner not available"}),
            ),
            E::InvalidState(status) => ApiError::Custom(
                StatusCode::CONFLICT,
                json!({"error": format!("workspace is {status}"), "status": status}),
            ),
            e @ (E::NotPausable | E::NotPaused) => {
                ApiError::Custom(StatusCode::NOT_FOUND, json!({"error": e.to_string()}))
            }
            E::Store { context, source } => ApiError::internal(context, source),
        }
    }
}

/// `PATCH /workspaces/{id}`: a workspace token may change name, role and layout; tier, runtime,
/// parent and directory need the admin credential (DECISIONS.md §2.4).
pub(crate) async fn update(
    auth: WorkspaceAuth,
    State(state): State<AppState>,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(&body) else {
        return Err(ApiError::BadRequest("invalid request body".into()));
    };
    let admin = matches!(auth.principal, Principal::Admin | Principal::Dev);
    let needs_restart = state.service.update(auth.id, map, admin).await?;
    let mut out = json!({"status": "updated"});
    if needs_restart {
        out["needs_restart"] = json!(true);
    }
    Ok(Json(out))
}

#[derive(Deserialize)]
pub(crate) struct DeleteQuery {
    confirm: Option<String>,
    purge: Option<String>,
}

/// `DELETE /workspaces/{id}` (admin). berth: an unknown id is a 404.
pub(crate) async fn delete(
    _: Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<DeleteQuery>,
) -> Result<Json<Value>, ApiError> {
    let id =
        WorkspaceId::parse(&id).map_err(|_| ApiError::BadRequest("invalid workspace ID".into()))?;
    let purge = q.purge.as_deref() == Some("true");
    let cascaded = state
        .service
        .delete(id, q.confirm.as_deref() == Some("true"), purge)
        .await?;
    let status = if purge { "purged" } else { "removed" };
    Ok(Json(json!({"status": status, "cascade_deleted": cascaded})))
}

/// `GET /workspaces/{id}/state`.
pub(crate) async fn workspace_state(
    auth: WorkspaceAuth,
    State(state): State<AppState>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    Ok(match state.service.state(auth.id).await? {
        WorkspaceState::Deleted => (
            StatusCode::NOT_FOUND,
            Json(json!({"workspace_id": auth.id, "deleted": true})),
        ),
        WorkspaceState::Removed => (
            StatusCode::NOT_FOUND,
            Json(json!({"workspace_id": auth.id, "status": "removed", "deleted": true})),
        ),
        WorkspaceState::Live(status) => (
            StatusCode::OK,
            Json(
                json!({"workspace_id": auth.id, "status": status, "paused": status.as_str() == "paused", "deleted": false}),
            ),
        ),
    })
}

/// `POST /workspaces/{id}/restart`.
pub(crate) async fn restart(
    auth: WorkspaceAuth,
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(match state.service.restart(auth.id).await? {
        RestartOutcome::Provisioning { config_dir } => {
            json!({"status": "provisioning", "config_dir": config_dir, "reset_session": false})
        }
        RestartOutcome::Noop { runtime, message } => {
            json!({"status": "noop", "runtime": runtime, "message": message})
        }
    }))
}

/// `POST /workspaces/{id}/pause`.
pub(crate) async fn pause(
    auth: WorkspaceAuth,
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    let n = state.service.pause(auth.id).await?;
    Ok(Json(json!({"status": "paused", "paused_count": n})))
}

/// `POST /workspaces/{id}/resume`.
pub(crate) async fn resume(
    auth: WorkspaceAuth,
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    let n = state.service.resume(auth.id).await?;
    Ok(Json(json!({"status": "provisioning", "resumed_count": n})))
}
