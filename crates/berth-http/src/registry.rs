//! `/registry/*`: register, heartbeat, update-card, discovery, peers, check-access.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use berth_api::registry::{
    AccessDecision, CheckAccess, Discovered, Heartbeat, HeartbeatAck, Peer, PeersQuery, Register,
    Registered, UpdateCard,
};
use berth_api::{ErrorBody, StatusResponse};
use berth_core::{HeartbeatRequest, RegisterRequest};
use berth_domain::WorkspaceId;
use secrecy::ExposeSecret as _;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Bearer;
use crate::extract::{ApiPath, ApiQuery, Body};
use crate::{ApiError, AppState};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(heartbeat))
        .routes(routes!(update_card))
        .routes(routes!(check_access))
        .routes(routes!(discover))
        .routes(routes!(peers))
}

fn bind<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|_| ApiError::BadRequest("invalid request body".into()))
}

/// An agent registers (REFERENCE.md §2.12): the workspace's token is required outside `--dev`.
#[utoipa::path(
    post,
    path = "/registry/register",
    tag = "registry",
    description = "Bearer: a live token of the workspace being registered (`--dev` also accepts none, the reference's bootstrap).",
    security(("workspace" = []), ()),
    request_body = Register,
    responses(
        (status = 200, description = "`registered`.", body = Registered),
        (status = 400, description = "`invalid request body`, an unsafe URL, a card too large, …", body = ErrorBody),
        (status = 401, description = "`missing workspace auth token`, `invalid workspace auth token`.", body = ErrorBody),
        (status = 404, description = "`workspace not found`.", body = ErrorBody),
        (status = 409, description = "`workspace is <status>` (paused, hibernated, failed, …).", body = ErrorBody),
        (status = 410, description = "`workspace removed`.", body = ErrorBody),
    ),
)]
async fn register(
    State(state): State<AppState>,
    Bearer(bearer): Bearer,
    Body(body): Body,
) -> Result<Json<Registered>, ApiError> {
    let p: Register = bind(&body)?;
    let req = RegisterRequest {
        id: p.id,
        url: p.url,
        agent_card: p.agent_card,
        delivery_mode: p.delivery_mode,
    };
    let r = state.service.register(req, bearer.as_deref()).await?;
    Ok(Json(Registered {
        auth_token: r.auth_token.as_ref().map(|t| t.expose_secret().to_owned()),
        delivery_mode: r.delivery_mode.as_str().to_owned(),
        platform_inbound_secret: r.platform_inbound_secret.expose_secret().to_owned(),
        status: "registered".into(),
    }))
}

/// An agent's heartbeat (REFERENCE.md §2.13).
#[utoipa::path(
    post,
    path = "/registry/heartbeat",
    tag = "registry",
    description = "Bearer: a live token of the workspace (`--dev` also accepts none).",
    security(("workspace" = []), ()),
    request_body = Heartbeat,
    responses(
        (status = 200, description = "`ok`, with the platform's inbound secret.", body = HeartbeatAck),
        (status = 400, description = "`invalid request body`.", body = ErrorBody),
        (status = 401, description = "`missing workspace auth token`, `invalid workspace auth token`.", body = ErrorBody),
        (status = 404, description = "`workspace not found`.", body = ErrorBody),
        (status = 409, description = "`workspace is <status>`.", body = ErrorBody),
        (status = 410, description = "`workspace removed`.", body = ErrorBody),
    ),
)]
async fn heartbeat(
    State(state): State<AppState>,
    Bearer(bearer): Bearer,
    Body(body): Body,
) -> Result<Json<HeartbeatAck>, ApiError> {
    let p: Heartbeat = bind(&body)?;
    let req = HeartbeatRequest {
        workspace_id: p.workspace_id,
        error_rate: p.error_rate,
        sample_error: p.sample_error,
        active_tasks: p.active_tasks,
        uptime_seconds: p.uptime_seconds,
        current_task: p.current_task,
        monthly_spend: p.monthly_spend,
        runtime_state: p.runtime_state,
        status_mgmt: p
            .runtime_metadata
            .capabilities
            .get("status_mgmt")
            .copied()
            .unwrap_or(false),
    };
    let secret = state.service.heartbeat(req, bearer.as_deref()).await?;
    Ok(Json(HeartbeatAck {
        platform_inbound_secret: secret.expose_secret().to_owned(),
        status: "ok".into(),
    }))
}

/// An agent replaces its card (REFERENCE.md §2.14).
#[utoipa::path(
    post,
    path = "/registry/update-card",
    tag = "registry",
    description = "Bearer: a live token of the workspace (`--dev` also accepts none).",
    security(("workspace" = []), ()),
    request_body = UpdateCard,
    responses(
        (status = 200, description = "`updated`.", body = StatusResponse),
        (status = 400, description = "`invalid request body`, a card too large or holding a NUL.", body = ErrorBody),
        (status = 401, description = "`missing workspace auth token`, `invalid workspace auth token`.", body = ErrorBody),
        (status = 404, description = "`workspace not found`.", body = ErrorBody),
        (status = 409, description = "`workspace is <status>`.", body = ErrorBody),
        (status = 410, description = "`workspace removed`.", body = ErrorBody),
    ),
)]
async fn update_card(
    State(state): State<AppState>,
    Bearer(bearer): Bearer,
    Body(body): Body,
) -> Result<Json<StatusResponse>, ApiError> {
    let p: UpdateCard = bind(&body)?;
    state
        .service
        .update_card(&p.workspace_id, p.agent_card, bearer.as_deref())
        .await?;
    Ok(Json(StatusResponse::new("updated")))
}

/// Authenticates a discovery caller: a live token of `caller` (or, in `--dev`, nothing).
async fn discovery_caller(
    state: &AppState,
    caller: WorkspaceId,
    bearer: Option<&str>,
) -> Result<(), ApiError> {
    match bearer {
        None if state.admin.dev => Ok(()),
        None => Err(ApiError::Unauthorized("missing workspace auth token")),
        Some(t) => match state.service.authenticate_token(t).await {
            Ok(Some(owner)) if owner == caller => Ok(()),
            Ok(_) => Err(ApiError::Unauthorized("invalid workspace auth token")),
            Err(e) => Err(ApiError::internal("auth check failed", e)),
        },
    }
}

/// A workspace looks up another one's URL (the hierarchy rule decides).
#[utoipa::path(
    get,
    path = "/registry/discover/{id}",
    tag = "registry",
    description = "Bearer: a live token of the caller named by `X-Workspace-ID` (`--dev` also accepts none).",
    security(("workspace" = []), ()),
    params(
        ("id" = String, Path, description = "The target workspace."),
        ("X-Workspace-ID" = String, Header, description = "The calling workspace."),
    ),
    responses(
        (status = 200, description = "The target's URL as the caller should use it.", body = Discovered),
        (status = 400, description = "`X-Workspace-ID header is required`, `invalid X-Workspace-ID`.", body = ErrorBody),
        (status = 401, description = "`missing workspace auth token`, `invalid workspace auth token`.", body = ErrorBody),
        (status = 403, description = "`not authorized to discover this workspace`.", body = ErrorBody),
        (status = 404, description = "`workspace not found`.", body = ErrorBody),
        (status = 503, description = "`workspace not available` (`status`), or its URL failed the safety check.", body = ErrorBody),
    ),
)]
async fn discover(
    State(state): State<AppState>,
    ApiPath(target): ApiPath<String>,
    headers: HeaderMap,
    Bearer(bearer): Bearer,
) -> Result<Json<Discovered>, ApiError> {
    let caller = headers
        .get("x-workspace-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::BadRequest("X-Workspace-ID header is required".into()))?;
    let caller = WorkspaceId::parse(caller)
        .map_err(|_| ApiError::BadRequest("invalid X-Workspace-ID".into()))?;
    discovery_caller(&state, caller, bearer.as_deref()).await?;
    let target =
        WorkspaceId::parse(&target).map_err(|_| ApiError::NotFound("workspace not found"))?;
    let d = state
        .service
        .discover(caller, target)
        .await
        .map_err(|e| match e {
            berth_core::RegistryError::UnsafeUrl(_) => ApiError::Custom(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "workspace URL failed safety check"}),
            ),
            other => other.into(),
        })?;
    Ok(Json(Discovered {
        id: d.id,
        name: d.name,
        url: d.url,
    }))
}

/// The workspaces a workspace may talk to.
#[utoipa::path(
    get,
    path = "/registry/{id}/peers",
    tag = "registry",
    description = "Bearer: a live token of the workspace in the path (`--dev` also accepts none).",
    security(("workspace" = []), ()),
    params(("id" = String, Path, description = "The workspace id."), PeersQuery),
    responses(
        (status = 200, description = "Its peers.", body = Vec<Peer>),
        (status = 401, description = "`missing workspace auth token`, `invalid workspace auth token`.", body = ErrorBody),
        (status = 404, description = "`workspace not found`.", body = ErrorBody),
    ),
)]
async fn peers(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<PeersQuery>,
    Bearer(bearer): Bearer,
) -> Result<Json<Vec<Peer>>, ApiError> {
    let id = WorkspaceId::parse(&id).map_err(|_| ApiError::NotFound("workspace not found"))?;
    discovery_caller(&state, id, bearer.as_deref()).await?;
    let peers = state
        .service
        .peers(id, query.q.as_deref().unwrap_or(""))
        .await?;
    Ok(Json(
        peers
            .into_iter()
            .map(|p| Peer {
                active_tasks: p.active_tasks,
                agent_card: p.agent_card,
                id: p.id,
                name: p.name,
                parent_id: p.parent_id,
                role: p.role,
                status: p.status,
                tier: p.tier,
                url: p.url,
            })
            .collect(),
    ))
}

/// `POST /registry/check-access`. berth: authenticated (the admin, or a token of `caller_id`).
#[utoipa::path(
    post,
    path = "/registry/check-access",
    tag = "registry",
    description = "Bearer: the admin credential, or a live token of `caller_id` (`--dev` also accepts none).",
    security(("admin" = []), ("workspace" = []), ()),
    request_body = CheckAccess,
    responses(
        (status = 200, description = "Whether the two may communicate.", body = AccessDecision),
        (status = 400, description = "`invalid request body`.", body = ErrorBody),
        (status = 401, description = "`missing workspace auth token`, `invalid workspace auth token`.", body = ErrorBody),
    ),
)]
async fn check_access(
    State(state): State<AppState>,
    Bearer(bearer): Bearer,
    Body(body): Body,
) -> Result<Json<AccessDecision>, ApiError> {
    let p: CheckAccess = bind(&body)?;
    if p.caller_id.is_empty() || p.target_id.is_empty() {
        return Err(ApiError::BadRequest("invalid request body".into()));
    }
    let admin = bearer
        .as_deref()
        .is_some_and(|t| state.admin.is_admin_token(t));
    let (Ok(caller), Ok(target)) = (
        WorkspaceId::parse(&p.caller_id),
        WorkspaceId::parse(&p.target_id),
    ) else {
        if !admin && !state.admin.dev {
            return Err(ApiError::Unauthorized("invalid workspace auth token"));
        }
        return Ok(Json(AccessDecision {
            allowed: p.caller_id == p.target_id,
        }));
    };
    if !admin {
        discovery_caller(&state, caller, bearer.as_deref()).await?;
    }
    let allowed = state.service.can_communicate(caller, target).await?;
    Ok(Json(AccessDecision { allowed }))
}
