//! `/bundles`: export a workspace tree as a bundle and import one (REFERENCE-2.md §3), both
//! admin. The import route has a body limit of its own ([`BUNDLE_BODY_LIMIT`]), so a bundle
//! with prompts and skills fits while a huge one is refused with 413 before anything is read.

use axum::Json;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use berth_api::ErrorBody;
use berth_core::{Bundle, BundleError, ImportedWorkspace};
use berth_domain::WorkspaceId;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Admin;
use crate::extract::{ApiPath, Body};
use crate::platform_url::PlatformUrl;
use crate::{ApiError, AppState};

/// Largest `POST /bundles/import` body.
pub const BUNDLE_BODY_LIMIT: usize = 8 * 1024 * 1024;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    // `route_layer` applies to the routes registered before it: the import route only.
    OpenApiRouter::new()
        .routes(routes!(import))
        .route_layer(DefaultBodyLimit::max(BUNDLE_BODY_LIMIT))
        .routes(routes!(export))
}

impl From<BundleError> for ApiError {
    fn from(e: BundleError) -> Self {
        match e {
            BundleError::NotFound => ApiError::NotFound("bundle not found"),
            BundleError::NameRequired => ApiError::BadRequest("bundle name is required".into()),
            BundleError::InvalidPath(path) => ApiError::Custom(
                StatusCode::BAD_REQUEST,
                json!({"error": "invalid file path", "path": path}),
            ),
            BundleError::Invalid(message) => ApiError::BadRequest(message),
            e @ BundleError::TooDeep => ApiError::Custom(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"error": e.to_string(), "code": "BUNDLE_TOO_DEEP"}),
            ),
            // Create's own answer (status, body and code), naming the workspace of the bundle.
            BundleError::Create { name, source } => match ApiError::from(source) {
                api @ ApiError::Internal(..) => api,
                other => with_workspace(other, &name),
            },
            BundleError::Store(public, cause) => ApiError::internal(public, cause),
            e @ BundleError::Io(_) => ApiError::internal("failed to read template files", e),
        }
    }
}

/// Adds `"workspace": name` to a 4xx body.
fn with_workspace(e: ApiError, name: &str) -> ApiError {
    let (status, mut body) = e.into_parts();
    if let Some(map) = body.as_object_mut() {
        map.insert("workspace".into(), name.into());
    }
    ApiError::Custom(status, body)
}

/// 200 with the bundle of the workspace and its live descendants; 404 `bundle not found`.
#[utoipa::path(
    get,
    path = "/bundles/export/{id}",
    tag = "bundles",
    security(("admin" = [])),
    params(("id" = String, Path, description = "The root workspace id.")),
    responses(
        (status = 200, description = "The bundle: the workspace, its files and its live descendants (a document of REFERENCE-2.md §3; free-form here).", body = Object),
        (status = 404, description = "`bundle not found`.", body = ErrorBody),
    ),
)]
async fn export(
    _: Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Bundle>, ApiError> {
    let id = WorkspaceId::parse(&id).map_err(|_| ApiError::NotFound("bundle not found"))?;
    Ok(Json(state.service.export_bundle(id).await?))
}

/// 201 with the result tree; 400 `invalid bundle` when the body does not bind.
#[utoipa::path(
    post,
    path = "/bundles/import",
    tag = "bundles",
    description = "Body limit: 8 MiB (its own, larger than the server's default).",
    security(("admin" = [])),
    request_body(content = Object, description = "A bundle as `GET /bundles/export/{id}` answers it."),
    responses(
        (status = 201, description = "The imported tree: each workspace's new id, name, status and children (free-form here).", body = Object),
        (status = 400, description = "`invalid bundle`, `bundle name is required`, `invalid file path`, or a create refusal naming the `workspace`.", body = ErrorBody),
        (status = 409, description = "A create refusal naming the `workspace`.", body = ErrorBody),
        (status = 422, description = "`BUNDLE_TOO_DEEP`, or a create refusal naming the `workspace`.", body = ErrorBody),
    ),
)]
async fn import(
    _: Admin,
    State(state): State<AppState>,
    PlatformUrl(platform_url): PlatformUrl,
    Body(body): Body,
) -> Result<(StatusCode, Json<ImportedWorkspace>), ApiError> {
    let invalid = || ApiError::BadRequest("invalid bundle".into());
    // A bundle is an object (serde would also bind a struct from an array).
    let value: serde_json::Value = serde_json::from_slice(&body).map_err(|_| invalid())?;
    if !value.is_object() {
        return Err(invalid());
    }
    let bundle: Bundle = serde_json::from_value(value).map_err(|_| invalid())?;
    let imported = state.service.import_bundle(bundle, platform_url).await?;
    Ok((StatusCode::CREATED, Json(imported)))
}
