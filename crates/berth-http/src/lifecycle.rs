//! Update, delete, abilities, budget, state, restart, pause, resume, hibernate, wake, config,
//! and the control-plane callbacks (REFERENCE.md §2.4–2.11, §2.19, §2.21).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use berth_core::{Budget, LifecycleError, Principal, RestartOutcome, WorkspaceState};
use berth_domain::WorkspaceId;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{Admin, WithRemoved, WorkspaceAuth};
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
            e @ E::NotHibernatable => {
                ApiError::Custom(StatusCode::NOT_FOUND, json!({"error": e.to_string()}))
            }
            e @ E::ActiveTasks(n) => ApiError::Custom(
                StatusCode::CONFLICT,
                json!({"error": e.to_string(), "active_tasks": n}),
            ),
            e @ E::OperatorDriven(_) => ApiError::Conflict(e.to_string()),
            e @ E::NotHibernated => ApiError::Conflict(e.to_string()),
            e @ E::ConsoleUnavailable => {
                ApiError::Custom(StatusCode::NOT_IMPLEMENTED, json!({"error": e.to_string()}))
            }
            e @ E::ConsoleFailed(_) => {
                tracing::warn!(error = %e, source = ?std::error::Error::source(&e), "console fetch failed");
                ApiError::Custom(StatusCode::BAD_GATEWAY, json!({"error": e.to_string()}))
            }
            E::Store { context, source } => ApiError::internal(context, source),
        }
    }
}

/// Largest `PATCH /workspaces/{id}/config` body (REFERENCE.md §2.19).
pub const CONFIG_BODY_LIMIT: usize = 256 * 1024;

/// The path id of an admin route (workspace routes parse it in [`WorkspaceAuth`]).
fn admin_path_id(raw: &str) -> Result<WorkspaceId, ApiError> {
    WorkspaceId::parse(raw).map_err(|_| ApiError::BadRequest("invalid workspace ID".into()))
}

/// `PATCH /workspaces/{id}/abilities` (admin, REFERENCE.md §2.6).
pub(crate) async fn abilities(
    _: Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    let id = admin_path_id(&id)?;
    #[derive(Deserialize)]
    struct Abilities {
        broadcast_enabled: Option<bool>,
        talk_to_user_enabled: Option<bool>,
    }
    let Ok(Abilities {
        broadcast_enabled,
        talk_to_user_enabled,
    }) = serde_json::from_slice::<Abilities>(&body)
    else {
        return Err(ApiError::BadRequest("invalid request body".into()));
    };
    state
        .service
        .set_abilities(id, broadcast_enabled, talk_to_user_enabled)
        .await?;
    Ok(Json(json!({"status": "updated"})))
}

fn budget_json(b: Budget) -> Json<Value> {
    Json(json!({
        "budget_limit": b.limit,
        "monthly_spend": b.monthly_spend,
        "budget_remaining": b.remaining(),
    }))
}

/// `GET /workspaces/{id}/budget` (REFERENCE.md §2.7).
pub(crate) async fn get_budget(
    auth: WorkspaceAuth,
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    Ok(budget_json(state.service.budget(auth.id).await?))
}

/// `PATCH /workspaces/{id}/budget` (admin, REFERENCE.md §2.7): `budget_limit` is required; `null`
/// clears it; a fractional number is truncated.
pub(crate) async fn patch_budget(
    _: Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    let id = admin_path_id(&id)?;
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(&body) else {
        return Err(ApiError::BadRequest("invalid request body".into()));
    };
    let not_integer =
        || ApiError::BadRequest("budget_limit must be an integer (USD cents) or null".into());
    let limit = match map.get("budget_limit") {
        None => {
            return Err(ApiError::BadRequest(
                "budget_limit field is required".into(),
            ));
        }
        Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(match n.as_i64() {
            Some(i) => i,
            None => {
                let f = n.as_f64().ok_or_else(not_integer)?;
                if f < 0.0 {
                    return Err(ApiError::BadRequest(
                        "budget_limit must be >= 0 (USD cents)".into(),
                    ));
                } else if f.trunc() <= i64::MAX as f64 {
                    // Truncation towards zero, as the reference does.
                    f.trunc() as i64
                } else {
                    return Err(not_integer());
                }
            }
        }),
        Some(_) => return Err(not_integer()),
    };
    Ok(budget_json(state.service.set_budget(id, limit).await?))
}

/// `GET /workspaces/{id}/config` (REFERENCE.md §2.19).
pub(crate) async fn get_config(
    auth: WorkspaceAuth,
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({"data": state.service.config(auth.id).await?})))
}

/// `PATCH /workspaces/{id}/config` (REFERENCE.md §2.19, fixing REFERENCE-2.md §9.6 #53): a JSON
/// object of at most 256 KiB, shallow-merged; a key set to `null` is deleted.
pub(crate) async fn patch_config(
    auth: WorkspaceAuth,
    State(state): State<AppState>,
    body: axum::body::Body,
) -> Result<Json<Value>, ApiError> {
    let too_large = || {
        ApiError::Custom(
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"error": "body too large or unreadable"}),
        )
    };
    let bytes = axum::body::to_bytes(body, CONFIG_BODY_LIMIT)
        .await
        .map_err(|_| too_large())?;
    crate::extract::refuse_nul(&bytes)?;
    let value: Value =
        serde_json::from_slice(&bytes).map_err(|_| ApiError::BadRequest("invalid JSON".into()))?;
    let Value::Object(patch) = value else {
        return Err(ApiError::BadRequest("config must be a JSON object".into()));
    };
    state.service.patch_config(auth.id, patch).await?;
    Ok(Json(json!({"status": "updated"})))
}

/// `POST /admin/workspaces/{id}/bootstrap-failed` (admin, REFERENCE.md §2.21).
pub(crate) async fn bootstrap_failed(
    _: Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    let id = admin_path_id(&id)?;
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Report {
        #[serde(deserialize_with = "crate::extract::nullable")]
        error: String,
        #[serde(deserialize_with = "crate::extract::nullable")]
        log_tail: String,
    }
    let report: Report = if body.iter().all(u8::is_ascii_whitespace) {
        Report::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|_| ApiError::BadRequest("invalid request body".into()))?
    };
    let changed = state
        .service
        .bootstrap_failed(id, Some(report.error), &report.log_tail)
        .await?;
    Ok(Json(if changed {
        json!({"ok": true})
    } else {
        json!({"ok": true, "no_change": true})
    }))
}

/// `GET /workspaces/{id}/console` (admin, REFERENCE.md §2.21): only a control plane has one.
pub(crate) async fn console(
    _: Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let id = admin_path_id(&id)?;
    let output = state.service.console(id).await?;
    Ok(Json(json!({"output": output})))
}

#[derive(Deserialize)]
pub(crate) struct HibernateQuery {
    force: Option<String>,
}

/// `POST /workspaces/{id}/hibernate` (REFERENCE.md §2.11). berth: `?force=true` really
/// hibernates a busy workspace, and a claim that loses a race answers 404/409 instead of 200.
pub(crate) async fn hibernate(
    WithRemoved(auth): WithRemoved,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<HibernateQuery>,
) -> Result<Json<Value>, ApiError> {
    let force = q.force.as_deref() == Some("true");
    state.service.hibernate(auth.id, force).await?;
    Ok(Json(json!({"status": "hibernated"})))
}

/// `POST /workspaces/{id}/wake` (berth addition): provisions a hibernated workspace again.
pub(crate) async fn wake(
    WithRemoved(auth): WithRemoved,
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    state.service.wake(auth.id).await?;
    Ok(Json(json!({"status": "provisioning"})))
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
    WithRemoved(auth): WithRemoved,
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

/// The optional `POST /workspaces/{id}/restart` body (REFERENCE.md §2.9). berth reads only
/// `template`; a body that does not parse is ignored, as the reference ignores bind errors.
#[derive(Debug, Default, Deserialize)]
struct RestartBody {
    #[serde(default)]
    template: Option<String>,
}

/// `POST /workspaces/{id}/restart`.
pub(crate) async fn restart(
    WithRemoved(auth): WithRemoved,
    State(state): State<AppState>,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    let body: RestartBody = serde_json::from_slice(&body).unwrap_or_default();
    Ok(Json(
        match state
            .service
            .restart_with(auth.id, body.template.as_deref())
            .await?
        {
            RestartOutcome::Provisioning { config_dir } => {
                json!({"status": "provisioning", "config_dir": config_dir, "reset_session": false})
            }
            RestartOutcome::Noop { runtime, message } => {
                json!({"status": "noop", "runtime": runtime, "message": message})
            }
        },
    ))
}

/// `POST /workspaces/{id}/pause`.
pub(crate) async fn pause(
    WithRemoved(auth): WithRemoved,
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    let n = state.service.pause(auth.id).await?;
    Ok(Json(json!({"status": "paused", "paused_count": n})))
}

/// `POST /workspaces/{id}/resume`.
pub(crate) async fn resume(
    WithRemoved(auth): WithRemoved,
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    let n = state.service.resume(auth.id).await?;
    Ok(Json(json!({"status": "provisioning", "resumed_count": n})))
}
