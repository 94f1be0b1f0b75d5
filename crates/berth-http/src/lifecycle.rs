//! Update, delete, abilities, budget, state, restart, pause, resume, hibernate, wake, config,
//! and the control-plane callbacks (REFERENCE.md §2.4–2.11, §2.19, §2.21).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use berth_api::workspaces::{
    Abilities, BootstrapFailed, BootstrapFailedAck, Budget as BudgetBody, BudgetPatch, ConfigBody,
    Console, DeleteQuery, Deleted, HibernateQuery, Paused, RestartRequest, Restarted, Resumed,
    UpdateWorkspace, Updated, WorkspaceStateBody,
};
use berth_api::{ConfirmationRequired, ErrorBody, StatusResponse};
use berth_core::{Budget, LifecycleError, Principal, RestartOutcome, WorkspaceState};
use berth_domain::WorkspaceId;
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
                let children: Vec<berth_api::error::ChildRef> = children
                    .into_iter()
                    .map(|(id, name)| berth_api::error::ChildRef { id, name })
                    .collect();
                let body = ConfirmationRequired {
                    children_count: children.len(),
                    children,
                    message: "This workspace has sub-workspaces. Delete with ?confirm=true to cascade delete.".into(),
                    status: "confirmation_required".into(),
                };
                ApiError::Custom(
                    StatusCode::CONFLICT,
                    serde_json::to_value(body).expect("serialisable"),
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
#[utoipa::path(
    patch,
    path = "/workspaces/{id}/abilities",
    tag = "lifecycle",
    security(("admin" = [])),
    params(("id" = String, Path, description = "The workspace id.")),
    request_body = Abilities,
    responses(
        (status = 200, description = "`updated`.", body = StatusResponse),
        (status = 404, description = "`workspace not found`.", body = ErrorBody),
    ),
)]
pub(crate) async fn abilities(
    _: Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    Body(body): Body,
) -> Result<Json<StatusResponse>, ApiError> {
    let id = admin_path_id(&id)?;
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
    Ok(Json(StatusResponse::new("updated")))
}

fn budget_json(b: Budget) -> Json<BudgetBody> {
    Json(BudgetBody {
        budget_limit: b.limit,
        monthly_spend: b.monthly_spend,
        budget_remaining: b.remaining(),
    })
}

/// `GET /workspaces/{id}/budget` (REFERENCE.md §2.7).
#[utoipa::path(
    get,
    path = "/workspaces/{id}/budget",
    tag = "lifecycle",
    security(("workspace" = [])),
    params(("id" = String, Path, description = "The workspace id.")),
    responses((status = 200, description = "The budget.", body = BudgetBody)),
)]
pub(crate) async fn get_budget(
    auth: WorkspaceAuth,
    State(state): State<AppState>,
) -> Result<Json<BudgetBody>, ApiError> {
    Ok(budget_json(state.service.budget(auth.id).await?))
}

/// `PATCH /workspaces/{id}/budget` (admin, REFERENCE.md §2.7): `budget_limit` is required; `null`
/// clears it; a fractional number is truncated.
#[utoipa::path(
    patch,
    path = "/workspaces/{id}/budget",
    tag = "lifecycle",
    security(("admin" = [])),
    params(("id" = String, Path, description = "The workspace id.")),
    request_body = BudgetPatch,
    responses(
        (status = 200, description = "The budget after the change.", body = BudgetBody),
        (status = 404, description = "`workspace not found`.", body = ErrorBody),
    ),
)]
pub(crate) async fn patch_budget(
    _: Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    Body(body): Body,
) -> Result<Json<BudgetBody>, ApiError> {
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
#[utoipa::path(
    get,
    path = "/workspaces/{id}/config",
    tag = "lifecycle",
    security(("workspace" = [])),
    params(("id" = String, Path, description = "The workspace id.")),
    responses((status = 200, description = "The stored config object (free-form).", body = ConfigBody)),
)]
pub(crate) async fn get_config(
    auth: WorkspaceAuth,
    State(state): State<AppState>,
) -> Result<Json<ConfigBody>, ApiError> {
    Ok(Json(ConfigBody {
        data: state.service.config(auth.id).await?,
    }))
}

/// `PATCH /workspaces/{id}/config` (REFERENCE.md §2.19, fixing REFERENCE-2.md §9.6 #53): a JSON
/// object of at most 256 KiB, shallow-merged; a key set to `null` is deleted.
#[utoipa::path(
    patch,
    path = "/workspaces/{id}/config",
    tag = "lifecycle",
    security(("workspace" = [])),
    params(("id" = String, Path, description = "The workspace id.")),
    request_body(content = Object, description = "A JSON object (at most 256 KiB) merged into the config; a key set to `null` is deleted."),
    responses(
        (status = 200, description = "`updated`.", body = StatusResponse),
        (status = 400, description = "`invalid JSON`, `config must be a JSON object`.", body = ErrorBody),
        (status = 413, description = "`body too large or unreadable`.", body = ErrorBody),
    ),
)]
pub(crate) async fn patch_config(
    auth: WorkspaceAuth,
    State(state): State<AppState>,
    body: axum::body::Body,
) -> Result<Json<StatusResponse>, ApiError> {
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
    Ok(Json(StatusResponse::new("updated")))
}

/// `POST /admin/workspaces/{id}/bootstrap-failed` (admin, REFERENCE.md §2.21).
#[utoipa::path(
    post,
    path = "/admin/workspaces/{id}/bootstrap-failed",
    tag = "lifecycle",
    description = "A control plane reports that a workspace's machine failed to boot; an empty body is accepted.",
    security(("admin" = [])),
    params(("id" = String, Path, description = "The workspace id.")),
    request_body = BootstrapFailed,
    responses(
        (status = 200, description = "Recorded (`no_change` when the workspace was not provisioning).", body = BootstrapFailedAck),
        (status = 404, description = "`workspace not found`.", body = ErrorBody),
    ),
)]
pub(crate) async fn bootstrap_failed(
    _: Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    Body(body): Body,
) -> Result<Json<BootstrapFailedAck>, ApiError> {
    let id = admin_path_id(&id)?;
    let report: BootstrapFailed = if body.iter().all(u8::is_ascii_whitespace) {
        BootstrapFailed::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|_| ApiError::BadRequest("invalid request body".into()))?
    };
    let changed = state
        .service
        .bootstrap_failed(id, Some(report.error), &report.log_tail)
        .await?;
    Ok(Json(BootstrapFailedAck {
        ok: true,
        no_change: (!changed).then_some(true),
    }))
}

/// `GET /workspaces/{id}/console` (admin, REFERENCE.md §2.21): only a control plane has one.
#[utoipa::path(
    get,
    path = "/workspaces/{id}/console",
    tag = "lifecycle",
    security(("admin" = [])),
    params(("id" = String, Path, description = "The workspace id.")),
    responses(
        (status = 200, description = "The machine's console output.", body = Console),
        (status = 404, description = "`workspace not found`.", body = ErrorBody),
        (status = 501, description = "The backend has no console (only a control plane has one).", body = ErrorBody),
        (status = 502, description = "The control plane did not answer.", body = ErrorBody),
        (status = 503, description = "`provisioner not available`.", body = ErrorBody),
    ),
)]
pub(crate) async fn console(
    _: Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Console>, ApiError> {
    let id = admin_path_id(&id)?;
    let output = state.service.console(id).await?;
    Ok(Json(Console { output }))
}

/// `POST /workspaces/{id}/hibernate` (REFERENCE.md §2.11). berth: `?force=true` really
/// hibernates a busy workspace, and a claim that loses a race answers 404/409 instead of 200.
#[utoipa::path(
    post,
    path = "/workspaces/{id}/hibernate",
    tag = "lifecycle",
    security(("workspace" = [])),
    params(("id" = String, Path, description = "The workspace id."), HibernateQuery),
    responses(
        (status = 200, description = "`hibernated`.", body = StatusResponse),
        (status = 404, description = "`workspace not found` (and the action's own not-found texts).", body = ErrorBody),
        (status = 409, description = "The workspace's status does not allow it (`status` says which), or a parent is paused.", body = ErrorBody),
        (status = 503, description = "`provisioner not available`.", body = ErrorBody),
    ),
)]
pub(crate) async fn hibernate(
    WithRemoved(auth): WithRemoved,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<HibernateQuery>,
) -> Result<Json<StatusResponse>, ApiError> {
    let force = q.force.as_deref() == Some("true");
    state.service.hibernate(auth.id, force).await?;
    Ok(Json(StatusResponse::new("hibernated")))
}

/// `POST /workspaces/{id}/wake` (berth addition): provisions a hibernated workspace again.
#[utoipa::path(
    post,
    path = "/workspaces/{id}/wake",
    tag = "lifecycle",
    security(("workspace" = [])),
    params(("id" = String, Path, description = "The workspace id.")),
    responses(
        (status = 200, description = "`provisioning`.", body = StatusResponse),
        (status = 404, description = "`workspace not found` (and the action's own not-found texts).", body = ErrorBody),
        (status = 409, description = "The workspace's status does not allow it (`status` says which), or a parent is paused.", body = ErrorBody),
        (status = 503, description = "`provisioner not available`.", body = ErrorBody),
    ),
)]
pub(crate) async fn wake(
    WithRemoved(auth): WithRemoved,
    State(state): State<AppState>,
) -> Result<Json<StatusResponse>, ApiError> {
    state.service.wake(auth.id).await?;
    Ok(Json(StatusResponse::new("provisioning")))
}

/// `PATCH /workspaces/{id}`: a workspace token may change name, role and layout; tier, runtime,
/// parent and directory need the admin credential (DECISIONS.md §2.4).
#[utoipa::path(
    patch,
    path = "/workspaces/{id}",
    tag = "workspaces",
    security(("workspace" = [])),
    params(("id" = String, Path, description = "The workspace id.")),
    request_body = UpdateWorkspace,
    responses(
        (status = 200, description = "`updated` (`needs_restart` when a change takes effect at the next restart).", body = Updated),
        (status = 403, description = "A workspace token tried to change an admin-only field.", body = ErrorBody),
        (status = 409, description = "The name is taken.", body = ErrorBody),
    ),
)]
pub(crate) async fn update(
    auth: WorkspaceAuth,
    State(state): State<AppState>,
    Body(body): Body,
) -> Result<Json<Updated>, ApiError> {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(&body) else {
        return Err(ApiError::BadRequest("invalid request body".into()));
    };
    let admin = matches!(auth.principal, Principal::Admin | Principal::Dev);
    let needs_restart = state.service.update(auth.id, map, admin).await?;
    Ok(Json(Updated {
        needs_restart: needs_restart.then_some(true),
        status: "updated".into(),
    }))
}

/// `DELETE /workspaces/{id}` (admin). berth: an unknown id is a 404.
#[utoipa::path(
    delete,
    path = "/workspaces/{id}",
    tag = "workspaces",
    security(("admin" = [])),
    params(("id" = String, Path, description = "The workspace id."), DeleteQuery),
    responses(
        (status = 200, description = "`removed` or `purged`, with the number of descendants removed too.", body = Deleted),
        (status = 404, description = "`workspace not found`.", body = ErrorBody),
        (status = 409, description = "The workspace has children and `?confirm=true` is missing.", body = ConfirmationRequired),
        (status = 500, description = "Some agents could not be stopped (`removed_count`, `stop_failures`), or an internal failure.", body = ErrorBody),
        (status = 503, description = "`provisioner not available`.", body = ErrorBody),
    ),
)]
pub(crate) async fn delete(
    _: Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<DeleteQuery>,
) -> Result<Json<Deleted>, ApiError> {
    let id =
        WorkspaceId::parse(&id).map_err(|_| ApiError::BadRequest("invalid workspace ID".into()))?;
    let purge = q.purge.as_deref() == Some("true");
    let cascaded = state
        .service
        .delete(id, q.confirm.as_deref() == Some("true"), purge)
        .await?;
    let status = if purge { "purged" } else { "removed" };
    Ok(Json(Deleted {
        cascade_deleted: i64::try_from(cascaded).unwrap_or(i64::MAX),
        status: status.into(),
    }))
}

/// `GET /workspaces/{id}/state`.
#[utoipa::path(
    get,
    path = "/workspaces/{id}/state",
    tag = "lifecycle",
    security(("workspace" = [])),
    params(("id" = String, Path, description = "The workspace id.")),
    responses(
        (status = 200, description = "The live workspace's status.", body = WorkspaceStateBody),
        (status = 404, description = "Removed or gone: `deleted: true`.", body = WorkspaceStateBody),
    ),
)]
pub(crate) async fn workspace_state(
    WithRemoved(auth): WithRemoved,
    State(state): State<AppState>,
) -> Result<(StatusCode, Json<WorkspaceStateBody>), ApiError> {
    let body = |status, paused, deleted| {
        Json(WorkspaceStateBody {
            deleted,
            paused,
            status,
            workspace_id: auth.id,
        })
    };
    Ok(match state.service.state(auth.id).await? {
        WorkspaceState::Deleted => (StatusCode::NOT_FOUND, body(None, None, true)),
        WorkspaceState::Removed => (
            StatusCode::NOT_FOUND,
            body(Some(berth_domain::WorkspaceStatus::Removed), None, true),
        ),
        WorkspaceState::Live(status) => (
            StatusCode::OK,
            body(
                Some(status),
                Some(status == berth_domain::WorkspaceStatus::Paused),
                false,
            ),
        ),
    })
}

/// `POST /workspaces/{id}/restart`. The optional body (REFERENCE.md §2.9): berth reads only
/// `template`; a body that does not parse is ignored, as the reference ignores bind errors.
#[utoipa::path(
    post,
    path = "/workspaces/{id}/restart",
    tag = "lifecycle",
    security(("workspace" = [])),
    params(("id" = String, Path, description = "The workspace id.")),
    request_body = RestartRequest,
    responses(
        (status = 200, description = "`provisioning`, or `noop` for a runtime berth does not run.", body = Restarted),
        (status = 404, description = "`workspace not found` (and the action's own not-found texts).", body = ErrorBody),
        (status = 409, description = "The workspace's status does not allow it (`status` says which), or a parent is paused.", body = ErrorBody),
        (status = 503, description = "`provisioner not available`.", body = ErrorBody),
    ),
)]
pub(crate) async fn restart(
    WithRemoved(auth): WithRemoved,
    State(state): State<AppState>,
    Body(body): Body,
) -> Result<Json<Restarted>, ApiError> {
    let body: RestartRequest = serde_json::from_slice(&body).unwrap_or_default();
    Ok(Json(
        match state
            .service
            .restart_with(auth.id, body.template.as_deref())
            .await?
        {
            RestartOutcome::Provisioning { config_dir } => Restarted {
                config_dir: Some(config_dir),
                message: None,
                reset_session: Some(false),
                runtime: None,
                status: "provisioning".into(),
            },
            RestartOutcome::Noop { runtime, message } => Restarted {
                config_dir: None,
                message: Some(message),
                reset_session: None,
                runtime: Some(runtime),
                status: "noop".into(),
            },
        },
    ))
}

/// `POST /workspaces/{id}/pause`.
#[utoipa::path(
    post,
    path = "/workspaces/{id}/pause",
    tag = "lifecycle",
    security(("workspace" = [])),
    params(("id" = String, Path, description = "The workspace id.")),
    responses(
        (status = 200, description = "`paused`, with the workspaces paused (it and its descendants).", body = Paused),
        (status = 404, description = "`workspace not found` (and the action's own not-found texts).", body = ErrorBody),
        (status = 409, description = "The workspace's status does not allow it (`status` says which), or a parent is paused.", body = ErrorBody),
        (status = 503, description = "`provisioner not available`.", body = ErrorBody),
    ),
)]
pub(crate) async fn pause(
    WithRemoved(auth): WithRemoved,
    State(state): State<AppState>,
) -> Result<Json<Paused>, ApiError> {
    let n = state.service.pause(auth.id).await?;
    Ok(Json(Paused {
        paused_count: i64::try_from(n).unwrap_or(i64::MAX),
        status: "paused".into(),
    }))
}

/// `POST /workspaces/{id}/resume`.
#[utoipa::path(
    post,
    path = "/workspaces/{id}/resume",
    tag = "lifecycle",
    security(("workspace" = [])),
    params(("id" = String, Path, description = "The workspace id.")),
    responses(
        (status = 200, description = "`provisioning`, with the workspaces resumed.", body = Resumed),
        (status = 404, description = "`workspace not found` (and the action's own not-found texts).", body = ErrorBody),
        (status = 409, description = "The workspace's status does not allow it (`status` says which), or a parent is paused.", body = ErrorBody),
        (status = 503, description = "`provisioner not available`.", body = ErrorBody),
    ),
)]
pub(crate) async fn resume(
    WithRemoved(auth): WithRemoved,
    State(state): State<AppState>,
) -> Result<Json<Resumed>, ApiError> {
    let n = state.service.resume(auth.id).await?;
    Ok(Json(Resumed {
        resumed_count: i64::try_from(n).unwrap_or(i64::MAX),
        status: "provisioning".into(),
    }))
}
