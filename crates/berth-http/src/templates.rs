//! `/templates`: the templates directory listing and the import (REFERENCE-2.md §6), both admin.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use berth_api::ErrorBody;
use berth_api::templates::{
    ImportTemplate, ImportedTemplate, Template, TemplateInvalid, TemplateListing,
};
use berth_core::{ImportError, TemplateImport, TemplateInfo};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Admin;
use crate::extract::Body;
use crate::{ApiError, AppState};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(import))
}

/// The reference's entry shape; `skills` is `[]` (never `null`) and `runtime` carries no
/// `-default` suffix. Optional lists and the timeout are omitted when empty.
fn entry(t: TemplateInfo) -> TemplateListing {
    TemplateListing::Valid(Box::new(Template {
        description: t.description,
        id: t.id,
        model: t.model,
        models: t.models,
        name: t.name,
        provider_registry: t.provider_registry,
        providers: t.providers,
        provision_timeout_seconds: t.provision_timeout_seconds,
        required_env: t.required_env,
        runtime: t.runtime,
        skill_count: t.skills.len(),
        skills: t.skills,
        tier: t.tier,
    }))
}

/// 200 with the array of valid templates (lexical order), followed by one
/// `{"id", "error", "code": "TEMPLATE_INVALID"}` entry per malformed template.
#[utoipa::path(
    get,
    path = "/templates",
    tag = "templates",
    security(("admin" = [])),
    responses((status = 200, description = "The valid templates, then one `TEMPLATE_INVALID` entry per malformed one.", body = Vec<TemplateListing>)),
)]
async fn list(_: Admin, State(state): State<AppState>) -> Json<Vec<TemplateListing>> {
    let listing = state.service.list_templates().await;
    let mut out: Vec<TemplateListing> = listing.templates.into_iter().map(entry).collect();
    out.extend(listing.errors.into_iter().map(|e| {
        TemplateListing::Invalid(TemplateInvalid {
            code: "TEMPLATE_INVALID".into(),
            error: e.error,
            id: e.id,
        })
    }));
    Json(out)
}

/// Imports a template from its files.
#[utoipa::path(
    post,
    path = "/templates/import",
    tag = "templates",
    security(("admin" = [])),
    request_body = ImportTemplate,
    responses(
        (status = 201, description = "`imported`.", body = ImportedTemplate),
        (status = 400, description = "`invalid request body`, `invalid file path` (`path`), `RUNTIME_UNKNOWN` (`runtime`), …", body = ErrorBody),
        (status = 409, description = "`template already exists` (`id`).", body = ErrorBody),
    ),
)]
async fn import(
    _: Admin,
    State(state): State<AppState>,
    Body(body): Body,
) -> Result<(StatusCode, Json<ImportedTemplate>), ApiError> {
    let p: ImportTemplate = serde_json::from_slice(&body)
        .map_err(|_| ApiError::BadRequest("invalid request body".into()))?;
    let req = TemplateImport {
        name: p.name,
        files: p.files,
        runtime: p.runtime,
        model: p.model,
    };
    match state.service.import_template(req).await {
        Ok(done) => Ok((
            StatusCode::CREATED,
            Json(ImportedTemplate {
                id: done.id,
                name: done.name,
                status: "imported".into(),
            }),
        )),
        Err(e) => Err(match e {
            ImportError::Exists(id) => ApiError::Custom(
                StatusCode::CONFLICT,
                json!({"error": "template already exists", "id": id}),
            ),
            ImportError::InvalidPath(path) => ApiError::Custom(
                StatusCode::BAD_REQUEST,
                json!({"error": "invalid file path", "path": path}),
            ),
            ImportError::UnknownRuntime(runtime) => ApiError::Custom(
                StatusCode::BAD_REQUEST,
                json!({"error": "unknown runtime: use a built-in runtime or one declared by a template", "runtime": runtime, "code": "RUNTIME_UNKNOWN"}),
            ),
            e @ ImportError::Io(_) => ApiError::internal("failed to import template", e),
            e => ApiError::BadRequest(e.to_string()),
        }),
    }
}
