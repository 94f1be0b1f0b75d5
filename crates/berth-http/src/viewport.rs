//! `GET/PUT /canvas/viewport` (REFERENCE-2.md §7.4–7.5), with the fixes of §9.6 #54: `zoom`
//! defaults to 1 (not 0) when omitted and must be positive, a database error is a 500 (not the
//! default viewport), and PUT needs a bearer — the admin token or any live workspace token — with
//! no `Origin`-header bypass (only `--dev` accepts a request without one).

use axum::Json;
use axum::extract::State;
use berth_api::system::{Viewport as ViewportBody, ViewportPatch};
use berth_api::{ErrorBody, StatusResponse};
use berth_core::Viewport;
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Bearer;
use crate::extract::Body;
use crate::{ApiError, AppState};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(show, save))
}

/// 200 `{"x","y","zoom"}`: the saved viewport, or `{0, 0, 1}` when none was saved. Open, as in
/// the reference (the canvas reads it before anyone signs in; it holds nothing secret).
#[utoipa::path(
    get,
    path = "/canvas/viewport",
    tag = "system",
    security(()),
    responses((status = 200, description = "The saved viewport, or `{0, 0, 1}`.", body = ViewportBody)),
)]
async fn show(State(state): State<AppState>) -> Result<Json<ViewportBody>, ApiError> {
    let v = state
        .service
        .viewport()
        .await
        .map_err(|e| ApiError::internal("query failed", e))?;
    Ok(Json(ViewportBody {
        x: v.x,
        y: v.y,
        zoom: v.zoom,
    }))
}

/// 200 `{"status":"saved"}`; 400 `invalid viewport data`; 401 without an accepted bearer.
#[utoipa::path(
    put,
    path = "/canvas/viewport",
    tag = "system",
    description = "Bearer: the admin credential or any live workspace token (`--dev` also accepts none).",
    security(("admin" = []), ("workspace" = [])),
    request_body = ViewportPatch,
    responses(
        (status = 200, description = "`saved`.", body = StatusResponse),
        (status = 400, description = "`invalid viewport data` (zoom must be greater than 0).", body = ErrorBody),
    ),
)]
async fn save(
    State(state): State<AppState>,
    Bearer(bearer): Bearer,
    Body(body): Body,
) -> Result<Json<StatusResponse>, ApiError> {
    match bearer.as_deref().map(str::trim) {
        None if state.config.dev => {}
        None => return Err(ApiError::Unauthorized("admin auth required")),
        Some(t) if !t.is_empty() && state.admin.is_admin_token(t) => {}
        Some(t) => match state.service.authenticate_token(t).await {
            Ok(Some(_)) => {}
            Ok(None) => return Err(ApiError::Unauthorized("invalid admin auth token")),
            Err(e) => return Err(ApiError::internal("auth check failed", e)),
        },
    }
    let invalid = || ApiError::BadRequest("invalid viewport data".into());
    let value: Value = serde_json::from_slice(&body).map_err(|_| invalid())?;
    if !value.is_object() {
        return Err(invalid());
    }
    let p: ViewportPatch = serde_json::from_value(value).map_err(|_| invalid())?;
    let defaults = Viewport::default();
    let viewport = Viewport {
        x: p.x.unwrap_or(defaults.x),
        y: p.y.unwrap_or(defaults.y),
        zoom: p.zoom.unwrap_or(defaults.zoom),
    };
    let finite = viewport.x.is_finite() && viewport.y.is_finite() && viewport.zoom.is_finite();
    if !finite || viewport.zoom <= 0.0 {
        return Err(ApiError::BadRequest(
            "invalid viewport data: x and y must be finite and zoom greater than 0".into(),
        ));
    }
    state
        .service
        .save_viewport(viewport)
        .await
        .map_err(|e| ApiError::internal("failed to save viewport", e))?;
    Ok(Json(StatusResponse::new("saved")))
}
