//! Workspace tokens (REFERENCE.md §2.16) and external credentials (§2.15).

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use berth_core::RegistryError;
use berth_domain::WorkspaceId;
use secrecy::ExposeSecret as _;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{Admin, WorkspaceAuth};
use crate::extract::{ApiPath, ApiQuery};
use crate::platform_url::PlatformUrl;
use crate::{ApiError, AppState};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/workspaces/{id}/tokens", get(list).post(mint))
        .route("/workspaces/{id}/tokens/{token_id}", delete(revoke))
        .route("/admin/workspaces/{id}/tokens", post(admin_mint))
        .route("/admin/workspaces/{id}/test-token", get(test_token))
        .route("/workspaces/{id}/external/rotate", post(rotate))
        .route("/workspaces/{id}/external/connection", get(connection))
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<String>,
    offset: Option<String>,
}

async fn list(
    auth: WorkspaceAuth,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = match q.limit.as_deref() {
        None | Some("") => 50,
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=200).contains(n))
            .ok_or_else(|| ApiError::BadRequest("invalid limit".into()))?,
    };
    let offset = match q.offset.as_deref() {
        None | Some("") => 0,
        Some(o) => o
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| ApiError::BadRequest("invalid offset".into()))?,
    };
    let tokens = state.service.list_tokens(auth.id, limit, offset).await?;
    let list: Vec<Value> = tokens
        .iter()
        .map(|t| json!({"id": t.id, "prefix": t.prefix, "created_at": t.created_at, "last_used_at": t.last_used_at}))
        .collect();
    Ok(Json(json!({"count": list.len(), "tokens": list})))
}

fn minted(id: WorkspaceId, token: &secrecy::SecretString) -> (StatusCode, Json<Value>) {
    (
        StatusCode::CREATED,
        Json(json!({
            "auth_token": token.expose_secret(),
            "workspace_id": id,
            "message": "Save this token now — it cannot be retrieved again.",
        })),
    )
}

async fn mint(
    auth: WorkspaceAuth,
    State(state): State<AppState>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let token = state.service.mint_token(auth.id).await?;
    Ok(minted(auth.id, &token))
}

async fn revoke(
    auth: WorkspaceAuth,
    State(state): State<AppState>,
    ApiPath((_, token_id)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let not_found = || ApiError::NotFound("token not found or already revoked");
    let token_id = uuid::Uuid::parse_str(&token_id).map_err(|_| not_found())?;
    if state.service.revoke_token(auth.id, token_id).await? {
        Ok(Json(json!({"status": "revoked"})))
    } else {
        Err(not_found())
    }
}

fn parse_id(id: &str) -> Result<WorkspaceId, ApiError> {
    WorkspaceId::parse(id).map_err(|_| ApiError::BadRequest("invalid workspace id".into()))
}

async fn admin_mint(
    _: Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = parse_id(&id)?;
    let token = state.service.mint_token(id).await?;
    Ok(minted(id, &token))
}

/// The reference's test-token endpoint exists only in `--dev` (404 otherwise).
async fn test_token(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    if !state.admin.dev {
        return Err(ApiError::NotFound("not found"));
    }
    let id = parse_id(&id)?;
    let token = state.service.mint_token(id).await?;
    Ok(Json(
        json!({"auth_token": token.expose_secret(), "workspace_id": id}),
    ))
}

async fn rotate(
    auth: WorkspaceAuth,
    State(state): State<AppState>,
    PlatformUrl(url): PlatformUrl,
) -> Result<Json<Value>, ApiError> {
    match state.service.rotate_external(auth.id, &url).await {
        Ok(connection) => Ok(Json(json!({"connection": connection}))),
        Err(RegistryError::NotExternal { runtime }) => Err(ApiError::Custom(
            StatusCode::BAD_REQUEST,
            json!({
                "error": "rotate is only valid for external/BYO-compute workspaces",
                "runtime": runtime,
                "hint": "use POST /workspaces/:id/restart for container-backed runtimes",
            }),
        )),
        Err(e) => Err(e.into()),
    }
}

async fn connection(
    auth: WorkspaceAuth,
    State(state): State<AppState>,
    PlatformUrl(url): PlatformUrl,
) -> Result<Json<Value>, ApiError> {
    match state.service.external_connection(auth.id, &url).await {
        Ok(connection) => Ok(Json(json!({"connection": connection}))),
        Err(RegistryError::NotExternal { runtime }) => Err(ApiError::Custom(
            StatusCode::BAD_REQUEST,
            json!({"error": "connection payload is only valid for external/BYO-compute workspaces", "runtime": runtime}),
        )),
        Err(e) => Err(e.into()),
    }
}
