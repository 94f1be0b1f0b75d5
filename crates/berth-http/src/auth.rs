//! Admin authentication (DECISIONS.md §2.1–2.2): a bearer equal to the configured admin token,
//! compared in constant time. Only `--dev` lets admin routes through without it.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{ApiError, AppState};

/// How admin requests are authenticated.
pub struct AdminAuth {
    /// SHA-256 of the admin token (comparing digests keeps the comparison constant-time
    /// whatever the presented token's length).
    token_hash: [u8; 32],
    /// `--dev`: admin routes fail open.
    pub(crate) dev: bool,
    /// The web console's sign-in sessions (`console.rs`).
    pub(crate) sessions: crate::console::Sessions,
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAuth")
            .field("dev", &self.dev)
            .finish_non_exhaustive()
    }
}

impl AdminAuth {
    /// Admin routes need `token`; with `dev` they are open.
    pub fn new(token: &SecretString, dev: bool) -> Self {
        Self {
            token_hash: Sha256::digest(token.expose_secret().as_bytes()).into(),
            dev,
            sessions: crate::console::Sessions::default(),
        }
    }

    /// Whether `presented` is the admin token.
    pub fn is_admin_token(&self, presented: &str) -> bool {
        let h: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        h.ct_eq(&self.token_hash).into()
    }
}

/// The bearer token of a request: the header must start with exactly `Bearer `; the rest is trimmed.
pub(crate) fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let token = value.strip_prefix("Bearer ")?.trim();
    (!token.is_empty()).then_some(token)
}

/// Extractor that admits only admin requests.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if state.admin.dev {
            return Ok(Admin);
        }
        match bearer(parts) {
            None => Err(ApiError::Unauthorized("admin auth required")),
            Some(t) if state.admin.is_admin_token(t) => Ok(Admin),
            Some(_) => Err(ApiError::Unauthorized("invalid admin auth token")),
        }
    }
}

/// Extractor for `/workspaces/{id}/…` routes: the admin bearer, or a live token of that very
/// workspace (no Referer/Origin bypass). Without a bearer only in `--dev`. A removed workspace
/// is gone for these routes: 404 `workspace not found`, before the handler runs (the routes
/// that answer a removed workspace their own documented way take `WithRemoved`, which skips
/// this check).
#[derive(Debug, Clone, Copy)]
pub struct WorkspaceAuth {
    /// The path's workspace.
    pub id: berth_domain::WorkspaceId,
    /// Who called.
    pub principal: berth_core::Principal,
}

impl FromRequestParts<AppState> for WorkspaceAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let auth = WithRemoved::from_request_parts(parts, state).await?.0;
        refuse_removed(state, &auth).await?;
        Ok(auth)
    }
}

/// 404 when `auth`'s workspace is removed. A workspace token needs no lookup: the removal
/// revokes the workspace's tokens in its own transaction, so a live token names a live
/// workspace; the admin bearer and `--dev` name any id.
pub(crate) async fn refuse_removed(state: &AppState, auth: &WorkspaceAuth) -> Result<(), ApiError> {
    if matches!(auth.principal, berth_core::Principal::Workspace(_)) {
        return Ok(());
    }
    match state.service.get(auth.id).await {
        Ok(Some(v)) if v.workspace.status == berth_domain::WorkspaceStatus::Removed => {
            Err(ApiError::NotFound("workspace not found"))
        }
        Ok(_) => Ok(()),
        Err(e) => Err(ApiError::internal("failed to verify workspace", e)),
    }
}

/// 404 `workspace not found` unless workspace `id` exists and is not removed: for the live
/// streams (SSE, the terminal), which authenticate a `?token=` themselves and so check this
/// themselves too.
pub(crate) async fn require_live(
    state: &AppState,
    id: berth_domain::WorkspaceId,
) -> Result<(), ApiError> {
    match state.service.get(id).await {
        Ok(Some(v)) if v.workspace.status != berth_domain::WorkspaceStatus::Removed => Ok(()),
        Ok(_) => Err(ApiError::NotFound("workspace not found")),
        Err(e) => Err(ApiError::internal("failed to verify workspace", e)),
    }
}

/// [`WorkspaceAuth`] without the removed-workspace refusal, for the lifecycle actions whose
/// answer to a removed workspace is the reference's own and documented: `GET …/state` (404 with
/// `"deleted": true`), restart (409 `workspace is removed`), pause and resume (404 `workspace
/// not found or already paused` / `… not paused`), hibernate (404) and wake (409 `workspace not
/// found or not hibernated`). Each of them checks the status itself and writes nothing then.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WithRemoved(pub(crate) WorkspaceAuth);

impl FromRequestParts<AppState> for WithRemoved {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        use axum::extract::Path;
        use berth_core::Principal;
        let Path(params) =
            Path::<std::collections::HashMap<String, String>>::from_request_parts(parts, state)
                .await
                .map_err(|_| ApiError::BadRequest("invalid workspace ID".into()))?;
        let raw = params.get("id").map(String::as_str).unwrap_or_default();
        if raw.is_empty() {
            return Err(ApiError::Unauthorized("missing workspace ID"));
        }
        // The reference spells this error two ways: token routes say "id", the others "ID".
        let token_route = parts
            .extensions
            .get::<axum::extract::MatchedPath>()
            .is_some_and(|p| p.as_str().contains("/tokens"));
        let message = if token_route {
            "invalid workspace id"
        } else {
            "invalid workspace ID"
        };
        let id = berth_domain::WorkspaceId::parse(raw)
            .map_err(|_| ApiError::BadRequest(message.into()))?;
        let principal = match bearer(parts) {
            Some(t) => workspace_principal(state, id, t).await?,
            None if state.admin.dev => Principal::Dev,
            None => return Err(ApiError::Unauthorized("missing workspace auth token")),
        };
        Ok(WithRemoved(WorkspaceAuth { id, principal }))
    }
}

/// Who `token` is on workspace `id`: the admin, or a live token of that very workspace.
pub(crate) async fn workspace_principal(
    state: &AppState,
    id: berth_domain::WorkspaceId,
    token: &str,
) -> Result<berth_core::Principal, ApiError> {
    if state.admin.is_admin_token(token) {
        return Ok(berth_core::Principal::Admin);
    }
    match state.service.authenticate_token(token).await {
        Ok(Some(owner)) if owner == id => Ok(berth_core::Principal::Workspace(id)),
        Ok(_) => Err(ApiError::Unauthorized("invalid workspace auth token")),
        Err(e) => Err(ApiError::internal("auth check failed", e)),
    }
}

/// The bearer of a request, if any (for handlers that run their own checks).
#[derive(Debug, Clone)]
pub struct Bearer(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for Bearer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Bearer(bearer(parts).map(str::to_owned)))
    }
}
