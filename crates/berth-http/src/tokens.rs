//! Workspace tokens (REFERENCE.md §2.16) and external credentials (§2.15).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use berth_api::tokens::{
    Connection, ConnectionBody, MintedToken, TokenInfo, TokenList, TokensQuery,
};
use berth_api::{ErrorBody, StatusResponse};
use berth_core::RegistryError;
use berth_domain::WorkspaceId;
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Admin, WorkspaceAuth};
use crate::extract::{ApiPath, ApiQuery};
use crate::platform_url::PlatformUrl;
use crate::{ApiError, AppState};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, mint))
        .routes(routes!(revoke))
        .routes(routes!(admin_mint))
        .routes(routes!(test_token))
        .routes(routes!(rotate))
        .routes(routes!(connection))
}

/// The live tokens of a workspace (never their values), newest first.
#[utoipa::path(
    get,
    path = "/workspaces/{id}/tokens",
    tag = "tokens",
    security(("workspace" = [])),
    params(("id" = String, Path, description = "The workspace id."), TokensQuery),
    responses(
        (status = 200, description = "One page of tokens.", body = TokenList),
        (status = 400, description = "`invalid limit`, `invalid offset`, `invalid workspace id`.", body = ErrorBody),
    ),
)]
async fn list(
    auth: WorkspaceAuth,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<TokensQuery>,
) -> Result<Json<TokenList>, ApiError> {
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
    let tokens: Vec<TokenInfo> = tokens
        .into_iter()
        .map(|t| TokenInfo {
            created_at: t.created_at,
            id: t.id,
            last_used_at: t.last_used_at,
            prefix: t.prefix,
        })
        .collect();
    Ok(Json(TokenList {
        count: tokens.len(),
        tokens,
    }))
}

fn minted(id: WorkspaceId, token: &secrecy::SecretString) -> (StatusCode, Json<MintedToken>) {
    (
        StatusCode::CREATED,
        Json(MintedToken {
            auth_token: token.expose_secret().to_owned(),
            message: Some("Save this token now — it cannot be retrieved again.".into()),
            workspace_id: id,
        }),
    )
}

/// Mints a token for the workspace (shown once; at most 50 live tokens).
#[utoipa::path(
    post,
    path = "/workspaces/{id}/tokens",
    tag = "tokens",
    security(("workspace" = [])),
    params(("id" = String, Path, description = "The workspace id.")),
    responses(
        (status = 201, description = "The new token.", body = MintedToken),
        (status = 429, description = "`maximum 50 active tokens per workspace` (or the rate limit).", body = ErrorBody),
    ),
)]
async fn mint(
    auth: WorkspaceAuth,
    State(state): State<AppState>,
) -> Result<(StatusCode, Json<MintedToken>), ApiError> {
    let token = state.service.mint_token(auth.id).await?;
    Ok(minted(auth.id, &token))
}

/// Revokes one token of the workspace.
#[utoipa::path(
    delete,
    path = "/workspaces/{id}/tokens/{token_id}",
    tag = "tokens",
    security(("workspace" = [])),
    params(
        ("id" = String, Path, description = "The workspace id."),
        ("token_id" = String, Path, description = "The token's id."),
    ),
    responses(
        (status = 200, description = "`revoked`.", body = StatusResponse),
        (status = 404, description = "`token not found or already revoked`.", body = ErrorBody),
    ),
)]
async fn revoke(
    auth: WorkspaceAuth,
    State(state): State<AppState>,
    ApiPath((_, token_id)): ApiPath<(String, String)>,
) -> Result<Json<StatusResponse>, ApiError> {
    let not_found = || ApiError::NotFound("token not found or already revoked");
    let token_id = uuid::Uuid::parse_str(&token_id).map_err(|_| not_found())?;
    if state.service.revoke_token(auth.id, token_id).await? {
        Ok(Json(StatusResponse::new("revoked")))
    } else {
        Err(not_found())
    }
}

fn parse_id(id: &str) -> Result<WorkspaceId, ApiError> {
    WorkspaceId::parse(id).map_err(|_| ApiError::BadRequest("invalid workspace id".into()))
}

/// Mints a token for any workspace (admin).
#[utoipa::path(
    post,
    path = "/admin/workspaces/{id}/tokens",
    tag = "tokens",
    security(("admin" = [])),
    params(("id" = String, Path, description = "The workspace id.")),
    responses(
        (status = 201, description = "The new token.", body = MintedToken),
        (status = 404, description = "`workspace not found`.", body = ErrorBody),
        (status = 429, description = "`maximum 50 active tokens per workspace` (or the rate limit).", body = ErrorBody),
    ),
)]
async fn admin_mint(
    _: Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<MintedToken>), ApiError> {
    let id = parse_id(&id)?;
    let token = state.service.mint_token(id).await?;
    Ok(minted(id, &token))
}

/// The reference's test-token endpoint exists only in `--dev` (404 otherwise).
#[utoipa::path(
    get,
    path = "/admin/workspaces/{id}/test-token",
    tag = "tokens",
    description = "`--dev` only: mints a token without a credential. Without `--dev` it answers 404 `not found`, like a route that does not exist.",
    security(()),
    params(("id" = String, Path, description = "The workspace id.")),
    responses(
        (status = 200, description = "A new token (`--dev`).", body = MintedToken),
        (status = 404, description = "`not found` (not `--dev`), or `workspace not found`.", body = ErrorBody),
    ),
)]
async fn test_token(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<MintedToken>, ApiError> {
    if !state.admin.dev {
        return Err(ApiError::NotFound("not found"));
    }
    let id = parse_id(&id)?;
    let token = state.service.mint_token(id).await?;
    Ok(Json(MintedToken {
        auth_token: token.expose_secret().to_owned(),
        message: None,
        workspace_id: id,
    }))
}

fn connection_body(connection: Value) -> Result<Json<ConnectionBody>, ApiError> {
    let connection: Connection = serde_json::from_value(connection)
        .map_err(|e| ApiError::internal("failed to encode the connection payload", e))?;
    Ok(Json(ConnectionBody { connection }))
}

/// Rotates an external workspace's token and answers the new connection payload.
#[utoipa::path(
    post,
    path = "/workspaces/{id}/external/rotate",
    tag = "tokens",
    security(("workspace" = [])),
    params(("id" = String, Path, description = "The workspace id.")),
    responses(
        (status = 200, description = "The connection payload with the new token.", body = ConnectionBody),
        (status = 400, description = "Not an external workspace (`runtime`, `hint`).", body = ErrorBody),
    ),
)]
async fn rotate(
    auth: WorkspaceAuth,
    State(state): State<AppState>,
    PlatformUrl(url): PlatformUrl,
) -> Result<Json<ConnectionBody>, ApiError> {
    match state.service.rotate_external(auth.id, &url).await {
        Ok(connection) => connection_body(connection),
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

/// The connection payload of an external workspace (the token shown as `""`).
#[utoipa::path(
    get,
    path = "/workspaces/{id}/external/connection",
    tag = "tokens",
    security(("workspace" = [])),
    params(("id" = String, Path, description = "The workspace id.")),
    responses(
        (status = 200, description = "The connection payload.", body = ConnectionBody),
        (status = 400, description = "Not an external workspace (`runtime`).", body = ErrorBody),
    ),
)]
async fn connection(
    auth: WorkspaceAuth,
    State(state): State<AppState>,
    PlatformUrl(url): PlatformUrl,
) -> Result<Json<ConnectionBody>, ApiError> {
    match state.service.external_connection(auth.id, &url).await {
        Ok(connection) => connection_body(connection),
        Err(RegistryError::NotExternal { runtime }) => Err(ApiError::Custom(
            StatusCode::BAD_REQUEST,
            json!({"error": "connection payload is only valid for external/BYO-compute workspaces", "runtime": runtime}),
        )),
        Err(e) => Err(e.into()),
    }
}
