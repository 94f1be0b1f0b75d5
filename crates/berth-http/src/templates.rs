//! `/templates`: the templates directory listing and the import (REFERENCE-2.md §6), both admin.

use std::collections::BTreeMap;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use berth_core::{ImportError, TemplateImport, TemplateInfo};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::auth::Admin;
use crate::extract::Body;
use crate::{ApiError, AppState};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/templates", get(list))
        .route("/templates/import", post(import))
}

/// The reference's entry shape; `skills` is `[]` (never `null`) and `runtime` carries no
/// `-default` suffix. Optional lists and the timeout are omitted when empty.
fn entry(t: TemplateInfo) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), t.id.into());
    m.insert("name".into(), t.name.into());
    m.insert("description".into(), t.description.into());
    m.insert("tier".into(), t.tier.into());
    m.insert("runtime".into(), t.runtime.into());
    m.insert("model".into(), t.model.into());
    if !t.models.is_empty() {
        m.insert("models".into(), t.models.into());
    }
    if !t.required_env.is_empty() {
        m.insert("required_env".into(), t.required_env.into());
    }
    if !t.providers.is_empty() {
        m.insert("providers".into(), t.providers.into());
    }
    if !t.provider_registry.is_empty() {
        m.insert("provider_registry".into(), t.provider_registry.into());
    }
    m.insert("skill_count".into(), t.skills.len().into());
    m.insert("skills".into(), t.skills.into());
    if let Some(s) = t.provision_timeout_seconds {
        m.insert("provision_timeout_seconds".into(), s.into());
    }
    Value::Object(m)
}

/// 200 with the array of valid templates (lexical order), followed by one
/// `{"id", "error", "code": "TEMPLATE_INVALID"}` entry per malformed template.
async fn list(_: Admin, State(state): State<AppState>) -> Json<Value> {
    let listing = state.service.list_templates().await;
    let mut out: Vec<Value> = listing.templates.into_iter().map(entry).collect();
    out.extend(
        listing
            .errors
            .into_iter()
            .map(|e| json!({"id": e.id, "error": e.error, "code": "TEMPLATE_INVALID"})),
    );
    Json(Value::Array(out))
}

#[derive(Deserialize)]
struct ImportPayload {
    name: String,
    files: BTreeMap<String, String>,
    #[serde(default)]
    runtime: Option<String>,
    #[serde(default)]
    model: Option<String>,
}

async fn import(
    _: Admin,
    State(state): State<AppState>,
    Body(body): Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let p: ImportPayload = serde_json::from_slice(&body)
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
            Json(json!({"status": "imported", "id": done.id, "name": done.name})),
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
