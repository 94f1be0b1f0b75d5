//! `/registry/*`: register, heartbeat, update-card, discovery, peers, check-access.

use std::collections::HashMap;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use berth_core::{HeartbeatRequest, RegisterRequest};
use berth_domain::WorkspaceId;
use secrecy::ExposeSecret as _;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Bearer;
use crate::extract::{ApiPath, ApiQuery, Body, nullable};
use crate::{ApiError, AppState};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/registry/register", post(register))
        .route("/registry/heartbeat", post(heartbeat))
        .route("/registry/update-card", post(update_card))
        .route("/registry/check-access", post(check_access))
        .route("/registry/discover/{id}", get(discover))
        .route("/registry/{id}/peers", get(peers))
}

fn bind<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|_| ApiError::BadRequest("invalid request body".into()))
}

#[derive(Deserialize)]
struct RegisterPayload {
    id: String,
    #[serde(default, deserialize_with = "nullable")]
    url: String,
    agent_card: Value,
    #[serde(default)]
    delivery_mode: Option<String>,
}

async fn register(
    State(state): State<AppState>,
    Bearer(bearer): Bearer,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    let p: RegisterPayload = bind(&body)?;
    let req = RegisterRequest {
        id: p.id,
        url: p.url,
        agent_card: p.agent_card,
        delivery_mode: p.delivery_mode,
    };
    let r = state.service.register(req, bearer.as_deref()).await?;
    let mut out = json!({
        "status": "registered",
        "delivery_mode": r.delivery_mode.as_str(),
        "platform_inbound_secret": r.platform_inbound_secret.expose_secret(),
    });
    if let Some(t) = &r.auth_token {
        out["auth_token"] = json!(t.expose_secret());
    }
    Ok(Json(out))
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct RuntimeMetadata {
    #[serde(deserialize_with = "nullable")]
    capabilities: HashMap<String, bool>,
}

#[derive(Deserialize)]
struct HeartbeatPayload {
    workspace_id: String,
    #[serde(default, deserialize_with = "nullable")]
    error_rate: f64,
    #[serde(default, deserialize_with = "nullable")]
    sample_error: String,
    #[serde(default, deserialize_with = "nullable")]
    active_tasks: i64,
    #[serde(default, deserialize_with = "nullable")]
    uptime_seconds: i64,
    #[serde(default, deserialize_with = "nullable")]
    current_task: String,
    #[serde(default, deserialize_with = "nullable")]
    monthly_spend: i64,
    #[serde(default, deserialize_with = "nullable")]
    runtime_state: String,
    #[serde(default, deserialize_with = "nullable")]
    runtime_metadata: RuntimeMetadata,
}

async fn heartbeat(
    State(state): State<AppState>,
    Bearer(bearer): Bearer,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    let p: HeartbeatPayload = bind(&body)?;
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
    Ok(Json(
        json!({"status": "ok", "platform_inbound_secret": secret.expose_secret()}),
    ))
}

#[derive(Deserialize)]
struct CardPayload {
    workspace_id: String,
    agent_card: Value,
}

async fn update_card(
    State(state): State<AppState>,
    Bearer(bearer): Bearer,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    let p: CardPayload = bind(&body)?;
    state
        .service
        .update_card(&p.workspace_id, p.agent_card, bearer.as_deref())
        .await?;
    Ok(Json(json!({"status": "updated"})))
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

async fn discover(
    State(state): State<AppState>,
    ApiPath(target): ApiPath<String>,
    headers: HeaderMap,
    Bearer(bearer): Bearer,
) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(json!({"id": d.id, "url": d.url, "name": d.name})))
}

#[derive(Deserialize)]
struct PeersQuery {
    q: Option<String>,
}

async fn peers(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<PeersQuery>,
    Bearer(bearer): Bearer,
) -> Result<Json<Value>, ApiError> {
    let id = WorkspaceId::parse(&id).map_err(|_| ApiError::NotFound("workspace not found"))?;
    discovery_caller(&state, id, bearer.as_deref()).await?;
    let peers = state
        .service
        .peers(id, query.q.as_deref().unwrap_or(""))
        .await?;
    let list: Vec<Value> = peers
        .into_iter()
        .map(|p| {
            json!({
                "id": p.id, "name": p.name, "role": p.role, "tier": p.tier, "status": p.status,
                "agent_card": p.agent_card, "url": p.url, "parent_id": p.parent_id, "active_tasks": p.active_tasks,
            })
        })
        .collect();
    Ok(Json(Value::Array(list)))
}

#[derive(Deserialize)]
struct CheckAccessPayload {
    caller_id: String,
    target_id: String,
}

/// `POST /registry/check-access`. berth: authenticated (the admin, or a token of `caller_id`).
async fn check_access(
    State(state): State<AppState>,
    Bearer(bearer): Bearer,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    let p: CheckAccessPayload = bind(&body)?;
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
        return Ok(Json(json!({"allowed": p.caller_id == p.target_id})));
    };
    if !admin {
        discovery_caller(&state, caller, bearer.as_deref()).await?;
    }
    let allowed = state.service.can_communicate(caller, target).await?;
    Ok(Json(json!({"allowed": allowed})))
}
