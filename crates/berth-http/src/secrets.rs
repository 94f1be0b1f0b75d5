//! Workspace secrets, model and provider (REFERENCE.md §2.17), global secrets (§2.18), and the
//! admin re-encryption route. Values appear only in `GET /workspaces/{id}/secrets/values`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use berth_api::ErrorBody;
use berth_api::secrets::{
    ModelBody, ProviderBody, ReencryptReport, RotateSecrets, SecretChanged, SecretEntry as Entry,
    SecretValues, SetModel, SetProvider, SetSecret, SettingSaved,
};
use berth_core::{DEFAULT_REENCRYPT_BATCH, Principal, SecretEntry, SecretError};
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Admin, WorkspaceAuth};
use crate::extract::{ApiPath, Body};
use crate::{ApiError, AppState};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, set))
        // A secret may be called `values`: DELETE on this path deletes it.
        .routes(routes!(values, delete_values_key))
        .routes(routes!(remove))
        .routes(routes!(model, set_model))
        .routes(routes!(provider, set_provider))
        .routes(routes!(global_list, global_set))
        .routes(routes!(global_remove))
        .routes(routes!(admin_list, admin_set))
        // A global secret may be called `rotate`: DELETE on this path deletes it.
        .routes(routes!(rotate, global_remove_rotate_key))
        .routes(routes!(admin_remove))
}

impl From<SecretError> for ApiError {
    fn from(e: SecretError) -> Self {
        use SecretError as E;
        match e {
            E::InvalidKey | E::EmptyValue | E::ValueTooLarge | E::InvalidText(_) => {
                ApiError::BadRequest(e.to_string())
            }
            E::WorkspaceNotFound => ApiError::NotFound("workspace not found"),
            E::NotFound => ApiError::NotFound("secret not found"),
            E::Unreadable {
                ref key_id,
                ref failed_keys,
            } => {
                let mut body = json!({"error": e.to_string(), "failed_keys": failed_keys});
                if let Some(id) = key_id {
                    body["key_id"] = Value::from(id.as_str());
                }
                ApiError::Custom(StatusCode::INTERNAL_SERVER_ERROR, body)
            }
            E::Store { context, source } => ApiError::internal(context, source),
        }
    }
}

fn entry_json(e: &SecretEntry) -> Entry {
    Entry {
        created_at: e.created_at,
        has_value: true,
        key: e.key.clone(),
        scope: e.scope.to_owned(),
        updated_at: e.updated_at,
    }
}

fn parse_set(body: &[u8]) -> Result<(String, SecretString), ApiError> {
    let invalid = || ApiError::BadRequest("invalid request body".into());
    let v: Value = serde_json::from_slice(body).map_err(|_| invalid())?;
    if !v.is_object() {
        return Err(invalid());
    }
    let b: SetSecret = serde_json::from_value(v).map_err(|_| invalid())?;
    if b.key.is_empty() || b.value.is_empty() {
        return Err(invalid());
    }
    Ok((b.key, SecretString::from(b.value)))
}

/// The workspace's secrets (names, never values).
#[utoipa::path(
    get,
    path = "/workspaces/{id}/secrets",
    tag = "secrets",
    security(("workspace" = [])),
    params(("id" = String, Path, description = "The workspace id.")),
    responses(
        (status = 200, description = "The secrets.", body = Vec<Entry>),
        (status = 500, description = "A secret cannot be opened (`failed_keys`, `key_id`), or an internal failure.", body = ErrorBody),
    ),
)]
async fn list(
    auth: WorkspaceAuth,
    State(state): State<AppState>,
) -> Result<Json<Vec<Entry>>, ApiError> {
    let list = state.service.list_secrets(auth.id).await?;
    Ok(Json(list.iter().map(entry_json).collect()))
}

/// The decrypted bundle: only for a token of this workspace or the admin credential (not for
/// `--dev`'s anonymous caller).
#[utoipa::path(
    get,
    path = "/workspaces/{id}/secrets/values",
    tag = "secrets",
    description = "Name → value. Not for `--dev`'s anonymous caller (401).",
    security(("workspace" = [])),
    params(("id" = String, Path, description = "The workspace id.")),
    responses(
        (status = 200, description = "The values.", body = SecretValues),
        (status = 500, description = "A secret cannot be opened (`failed_keys`, `key_id`), or an internal failure.", body = ErrorBody),
    ),
)]
async fn values(
    auth: WorkspaceAuth,
    State(state): State<AppState>,
) -> Result<Json<SecretValues>, ApiError> {
    if auth.principal == Principal::Dev {
        return Err(ApiError::Unauthorized("missing workspace auth token"));
    }
    let values = state.service.secret_values(auth.id).await?;
    Ok(Json(
        values
            .into_iter()
            .map(|(k, v)| (k, v.expose_secret().to_owned()))
            .collect(),
    ))
}

/// Sets (creates or replaces) a secret of the workspace.
#[utoipa::path(
    method(post, put),
    path = "/workspaces/{id}/secrets",
    tag = "secrets",
    security(("workspace" = [])),
    params(("id" = String, Path, description = "The workspace id.")),
    request_body = SetSecret,
    responses(
        (status = 200, description = "`saved`.", body = SecretChanged),
        (status = 400, description = "`invalid request body`, an invalid key, an empty or too large value.", body = ErrorBody),
    ),
)]
async fn set(
    auth: WorkspaceAuth,
    State(state): State<AppState>,
    Body(body): Body,
) -> Result<Json<SecretChanged>, ApiError> {
    let (key, value) = parse_set(&body)?;
    state.service.set_secret(auth.id, &key, value).await?;
    Ok(Json(SecretChanged {
        key,
        scope: None,
        status: "saved".into(),
    }))
}

async fn delete_key(
    state: &AppState,
    auth: WorkspaceAuth,
    key: String,
) -> Result<Json<SecretChanged>, ApiError> {
    state.service.delete_secret(auth.id, &key).await?;
    Ok(Json(SecretChanged {
        key,
        scope: None,
        status: "deleted".into(),
    }))
}

/// Deletes a secret of the workspace.
#[utoipa::path(
    delete,
    path = "/workspaces/{id}/secrets/{key}",
    tag = "secrets",
    security(("workspace" = [])),
    params(
        ("id" = String, Path, description = "The workspace id."),
        ("key" = String, Path, description = "The secret's name."),
    ),
    responses(
        (status = 200, description = "`deleted`.", body = SecretChanged),
        (status = 404, description = "`secret not found`, `workspace not found`.", body = ErrorBody),
    ),
)]
async fn remove(
    auth: WorkspaceAuth,
    State(state): State<AppState>,
    ApiPath((_, key)): ApiPath<(String, String)>,
) -> Result<Json<SecretChanged>, ApiError> {
    delete_key(&state, auth, key).await
}

/// Deletes the secret called `values` (the path is also `GET …/secrets/values`).
#[utoipa::path(
    delete,
    path = "/workspaces/{id}/secrets/values",
    tag = "secrets",
    security(("workspace" = [])),
    params(("id" = String, Path, description = "The workspace id.")),
    responses(
        (status = 200, description = "`deleted`.", body = SecretChanged),
        (status = 404, description = "`secret not found`, `workspace not found`.", body = ErrorBody),
    ),
)]
async fn delete_values_key(
    auth: WorkspaceAuth,
    State(state): State<AppState>,
) -> Result<Json<SecretChanged>, ApiError> {
    delete_key(&state, auth, "values".to_owned()).await
}

async fn read_one(
    state: &AppState,
    auth: WorkspaceAuth,
    key: &str,
) -> Result<Option<String>, ApiError> {
    match state.service.workspace_secret(auth.id, key).await {
        Ok(v) => Ok(v.map(|v| v.expose_secret().to_owned())),
        Err(e @ SecretError::Unreadable { .. }) => {
            let mut resp = ApiError::from(e);
            if let ApiError::Custom(_, body) = &mut resp {
                // The reference's message for these two routes.
                if body.get("key_id").is_none() {
                    body["error"] = Value::from("failed to decrypt");
                }
            }
            Err(resp)
        }
        Err(e) => Err(e.into()),
    }
}

/// The workspace's model (a workspace secret).
#[utoipa::path(
    get,
    path = "/workspaces/{id}/model",
    tag = "secrets",
    security(("workspace" = [])),
    params(("id" = String, Path, description = "The workspace id.")),
    responses(
        (status = 200, description = "The model and where it comes from.", body = ModelBody),
        (status = 500, description = "`failed to decrypt` (or with `key_id`), or an internal failure.", body = ErrorBody),
    ),
)]
async fn model(
    auth: WorkspaceAuth,
    State(state): State<AppState>,
) -> Result<Json<ModelBody>, ApiError> {
    Ok(Json(
        match read_one(&state, auth, berth_core::MODEL_KEY).await? {
            Some(model) => ModelBody {
                model,
                source: "workspace_secrets".into(),
            },
            None => ModelBody {
                model: String::new(),
                source: "default".into(),
            },
        },
    ))
}

/// The workspace's provider (a workspace secret).
#[utoipa::path(
    get,
    path = "/workspaces/{id}/provider",
    tag = "secrets",
    security(("workspace" = [])),
    params(("id" = String, Path, description = "The workspace id.")),
    responses(
        (status = 200, description = "The provider and where it comes from.", body = ProviderBody),
        (status = 500, description = "`failed to decrypt` (or with `key_id`), or an internal failure.", body = ErrorBody),
    ),
)]
async fn provider(
    auth: WorkspaceAuth,
    State(state): State<AppState>,
) -> Result<Json<ProviderBody>, ApiError> {
    Ok(Json(
        match read_one(&state, auth, berth_core::PROVIDER_KEY).await? {
            Some(provider) => ProviderBody {
                provider,
                source: "workspace_secrets".into(),
            },
            None => ProviderBody {
                provider: String::new(),
                source: "default".into(),
            },
        },
    ))
}

/// The string field `field` of a JSON object body (`null` or absent = `""`).
fn string_field(body: &[u8], field: &str) -> Result<String, ApiError> {
    let invalid = || ApiError::BadRequest("invalid request body".into());
    let v: Value = serde_json::from_slice(body).map_err(|_| invalid())?;
    let obj = v.as_object().ok_or_else(invalid)?;
    match obj.get(field) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(invalid()),
    }
}

/// Sets the workspace's model (`""` or `null` clears it).
#[utoipa::path(
    put,
    path = "/workspaces/{id}/model",
    tag = "secrets",
    security(("workspace" = [])),
    params(("id" = String, Path, description = "The workspace id.")),
    request_body = SetModel,
    responses((status = 200, description = "`saved` with the model, or `cleared`.", body = SettingSaved)),
)]
async fn set_model(
    auth: WorkspaceAuth,
    State(state): State<AppState>,
    Body(body): Body,
) -> Result<Json<SettingSaved>, ApiError> {
    let model = string_field(&body, "model")?;
    state.service.set_model(auth.id, &model).await?;
    Ok(Json(if model.is_empty() {
        SettingSaved {
            model: None,
            provider: None,
            status: "cleared".into(),
        }
    } else {
        SettingSaved {
            model: Some(model),
            provider: None,
            status: "saved".into(),
        }
    }))
}

/// Sets the workspace's provider (`""` or `null` clears it).
#[utoipa::path(
    put,
    path = "/workspaces/{id}/provider",
    tag = "secrets",
    security(("workspace" = [])),
    params(("id" = String, Path, description = "The workspace id.")),
    request_body = SetProvider,
    responses((status = 200, description = "`saved` with the provider, or `cleared`.", body = SettingSaved)),
)]
async fn set_provider(
    auth: WorkspaceAuth,
    State(state): State<AppState>,
    Body(body): Body,
) -> Result<Json<SettingSaved>, ApiError> {
    let provider = string_field(&body, "provider")?;
    state.service.set_provider(auth.id, &provider).await?;
    Ok(Json(if provider.is_empty() {
        SettingSaved {
            model: None,
            provider: None,
            status: "cleared".into(),
        }
    } else {
        SettingSaved {
            model: None,
            provider: Some(provider),
            status: "saved".into(),
        }
    }))
}

async fn global_entries(state: &AppState) -> Result<Json<Vec<Entry>>, ApiError> {
    let list = state.service.list_global_secrets().await?;
    Ok(Json(list.iter().map(entry_json).collect()))
}

/// The global secrets (names, never values), handed to every workspace.
#[utoipa::path(
    get,
    path = "/settings/secrets",
    tag = "secrets",
    security(("admin" = [])),
    responses((status = 200, description = "The global secrets.", body = Vec<Entry>)),
)]
async fn global_list(
    _: Admin,
    State(state): State<AppState>,
) -> Result<Json<Vec<Entry>>, ApiError> {
    global_entries(&state).await
}

/// `GET /admin/secrets`: the same as `GET /settings/secrets`.
#[utoipa::path(
    get,
    path = "/admin/secrets",
    tag = "secrets",
    security(("admin" = [])),
    responses((status = 200, description = "The global secrets.", body = Vec<Entry>)),
)]
async fn admin_list(_: Admin, State(state): State<AppState>) -> Result<Json<Vec<Entry>>, ApiError> {
    global_entries(&state).await
}

async fn global_save(state: &AppState, body: &[u8]) -> Result<Json<SecretChanged>, ApiError> {
    let (key, value) = parse_set(body)?;
    state.service.set_global_secret(&key, value).await?;
    Ok(Json(SecretChanged {
        key,
        scope: Some("global".into()),
        status: "saved".into(),
    }))
}

/// Sets a global secret.
#[utoipa::path(
    method(post, put),
    path = "/settings/secrets",
    tag = "secrets",
    security(("admin" = [])),
    request_body = SetSecret,
    responses(
        (status = 200, description = "`saved`.", body = SecretChanged),
        (status = 400, description = "`invalid request body`, an invalid key, an empty or too large value.", body = ErrorBody),
    ),
)]
async fn global_set(
    _: Admin,
    State(state): State<AppState>,
    Body(body): Body,
) -> Result<Json<SecretChanged>, ApiError> {
    global_save(&state, &body).await
}

/// `POST`/`PUT /admin/secrets`: the same as on `/settings/secrets`.
#[utoipa::path(
    method(post, put),
    path = "/admin/secrets",
    tag = "secrets",
    security(("admin" = [])),
    request_body = SetSecret,
    responses(
        (status = 200, description = "`saved`.", body = SecretChanged),
        (status = 400, description = "`invalid request body`, an invalid key, an empty or too large value.", body = ErrorBody),
    ),
)]
async fn admin_set(
    _: Admin,
    State(state): State<AppState>,
    Body(body): Body,
) -> Result<Json<SecretChanged>, ApiError> {
    global_save(&state, &body).await
}

async fn global_delete(state: &AppState, key: String) -> Result<Json<SecretChanged>, ApiError> {
    state.service.delete_global_secret(&key).await?;
    Ok(Json(SecretChanged {
        key,
        scope: Some("global".into()),
        status: "deleted".into(),
    }))
}

/// Deletes a global secret.
#[utoipa::path(
    delete,
    path = "/settings/secrets/{key}",
    tag = "secrets",
    security(("admin" = [])),
    params(("key" = String, Path, description = "The secret's name.")),
    responses(
        (status = 200, description = "`deleted`.", body = SecretChanged),
        (status = 404, description = "`secret not found`.", body = ErrorBody),
    ),
)]
async fn global_remove(
    _: Admin,
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
) -> Result<Json<SecretChanged>, ApiError> {
    global_delete(&state, key).await
}

/// `DELETE /admin/secrets/{key}`: the same as on `/settings/secrets/{key}`.
#[utoipa::path(
    delete,
    path = "/admin/secrets/{key}",
    tag = "secrets",
    security(("admin" = [])),
    params(("key" = String, Path, description = "The secret's name.")),
    responses(
        (status = 200, description = "`deleted`.", body = SecretChanged),
        (status = 404, description = "`secret not found`.", body = ErrorBody),
    ),
)]
async fn admin_remove(
    _: Admin,
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
) -> Result<Json<SecretChanged>, ApiError> {
    global_delete(&state, key).await
}

/// Deletes the global secret called `rotate` (the path is also `POST …/rotate`).
#[utoipa::path(
    delete,
    path = "/admin/secrets/rotate",
    tag = "secrets",
    security(("admin" = [])),
    responses(
        (status = 200, description = "`deleted`.", body = SecretChanged),
        (status = 404, description = "`secret not found`.", body = ErrorBody),
    ),
)]
async fn global_remove_rotate_key(
    _: Admin,
    State(state): State<AppState>,
) -> Result<Json<SecretChanged>, ApiError> {
    global_delete(&state, "rotate".to_owned()).await
}

/// `POST /admin/secrets/rotate` with an optional `{"batch_size": 1..=10000}`: re-seals every
/// value under an old key with the active one and reports what is left.
#[utoipa::path(
    post,
    path = "/admin/secrets/rotate",
    tag = "secrets",
    security(("admin" = [])),
    request_body = RotateSecrets,
    responses(
        (status = 200, description = "What was re-sealed and what is left, by key id.", body = ReencryptReport),
        (status = 400, description = "`batch_size must be between 1 and 10000`, `invalid request body`.", body = ErrorBody),
    ),
)]
async fn rotate(
    _: Admin,
    State(state): State<AppState>,
    Body(body): Body,
) -> Result<Json<ReencryptReport>, ApiError> {
    let batch = if body.iter().all(u8::is_ascii_whitespace) {
        DEFAULT_REENCRYPT_BATCH
    } else {
        let b: RotateSecrets = serde_json::from_slice(&body)
            .map_err(|_| ApiError::BadRequest("invalid request body".into()))?;
        match b.batch_size {
            None => DEFAULT_REENCRYPT_BATCH,
            Some(n @ 1..=10_000) => n,
            Some(_) => {
                return Err(ApiError::BadRequest(
                    "batch_size must be between 1 and 10000".into(),
                ));
            }
        }
    };
    let report = state
        .service
        .reencrypt_secrets(batch)
        .await
        .map_err(|e| ApiError::internal("failed to re-encrypt secrets", e))?;
    Ok(Json(ReencryptReport {
        active_key_id: report.active_key_id,
        remaining_by_key_id: report.remaining_by_key_id,
        rows: report.rows,
    }))
}
