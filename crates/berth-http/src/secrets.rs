//! Workspace secrets, model and provider (REFERENCE.md §2.17), global secrets (§2.18), and the
//! admin re-encryption route. Values appear only in `GET /workspaces/{id}/secrets/values`.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use berth_core::{DEFAULT_REENCRYPT_BATCH, Principal, SecretEntry, SecretError};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::auth::{Admin, WorkspaceAuth};
use crate::extract::{ApiPath, Body};
use crate::{ApiError, AppState};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/workspaces/{id}/secrets", get(list).post(set).put(set))
        // A secret may be called `values`: DELETE on this path deletes it.
        .route(
            "/workspaces/{id}/secrets/values",
            get(values).delete(delete_values_key),
        )
        .route("/workspaces/{id}/secrets/{key}", delete(remove))
        .route("/workspaces/{id}/model", get(model).put(set_model))
        .route("/workspaces/{id}/provider", get(provider).put(set_provider))
        .route(
            "/settings/secrets",
            get(global_list).post(global_set).put(global_set),
        )
        .route("/settings/secrets/{key}", delete(global_remove))
        .route(
            "/admin/secrets",
            get(global_list).post(global_set).put(global_set),
        )
        // A global secret may be called `rotate`: DELETE on this path deletes it.
        .route(
            "/admin/secrets/rotate",
            post(rotate).delete(global_remove_rotate_key),
        )
        .route("/admin/secrets/{key}", delete(global_remove))
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

fn entry_json(e: &SecretEntry) -> Value {
    json!({
        "key": e.key,
        "has_value": true,
        "scope": e.scope,
        "created_at": e.created_at,
        "updated_at": e.updated_at,
    })
}

/// `{"key", "value"}`, both required non-empty strings.
#[derive(Deserialize)]
struct SetBody {
    key: String,
    value: String,
}

fn parse_set(body: &[u8]) -> Result<(String, SecretString), ApiError> {
    let invalid = || ApiError::BadRequest("invalid request body".into());
    let v: Value = serde_json::from_slice(body).map_err(|_| invalid())?;
    if !v.is_object() {
        return Err(invalid());
    }
    let b: SetBody = serde_json::from_value(v).map_err(|_| invalid())?;
    if b.key.is_empty() || b.value.is_empty() {
        return Err(invalid());
    }
    Ok((b.key, SecretString::from(b.value)))
}

async fn list(auth: WorkspaceAuth, State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let list = state.service.list_secrets(auth.id).await?;
    Ok(Json(Value::Array(list.iter().map(entry_json).collect())))
}

/// The decrypted bundle: only for a token of this workspace or the admin credential (not for
/// `--dev`'s anonymous caller).
async fn values(
    auth: WorkspaceAuth,
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    if auth.principal == Principal::Dev {
        return Err(ApiError::Unauthorized("missing workspace auth token"));
    }
    let values = state.service.secret_values(auth.id).await?;
    let map: Map<String, Value> = values
        .into_iter()
        .map(|(k, v)| (k, Value::from(v.expose_secret())))
        .collect();
    Ok(Json(Value::Object(map)))
}

async fn set(
    auth: WorkspaceAuth,
    State(state): State<AppState>,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    let (key, value) = parse_set(&body)?;
    state.service.set_secret(auth.id, &key, value).await?;
    Ok(Json(json!({"status": "saved", "key": key})))
}

async fn delete_key(
    state: &AppState,
    auth: WorkspaceAuth,
    key: String,
) -> Result<Json<Value>, ApiError> {
    state.service.delete_secret(auth.id, &key).await?;
    Ok(Json(json!({"status": "deleted", "key": key})))
}

async fn remove(
    auth: WorkspaceAuth,
    State(state): State<AppState>,
    ApiPath((_, key)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    delete_key(&state, auth, key).await
}

async fn delete_values_key(
    auth: WorkspaceAuth,
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
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

async fn model(
    auth: WorkspaceAuth,
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        match read_one(&state, auth, berth_core::MODEL_KEY).await? {
            Some(m) => json!({"model": m, "source": "workspace_secrets"}),
            None => json!({"model": "", "source": "default"}),
        },
    ))
}

async fn provider(
    auth: WorkspaceAuth,
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        match read_one(&state, auth, berth_core::PROVIDER_KEY).await? {
            Some(p) => json!({"provider": p, "source": "workspace_secrets"}),
            None => json!({"provider": "", "source": "default"}),
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

async fn set_model(
    auth: WorkspaceAuth,
    State(state): State<AppState>,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    let model = string_field(&body, "model")?;
    state.service.set_model(auth.id, &model).await?;
    Ok(Json(if model.is_empty() {
        json!({"status": "cleared"})
    } else {
        json!({"status": "saved", "model": model})
    }))
}

async fn set_provider(
    auth: WorkspaceAuth,
    State(state): State<AppState>,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    let provider = string_field(&body, "provider")?;
    state.service.set_provider(auth.id, &provider).await?;
    Ok(Json(if provider.is_empty() {
        json!({"status": "cleared"})
    } else {
        json!({"status": "saved", "provider": provider})
    }))
}

async fn global_list(_: Admin, State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let list = state.service.list_global_secrets().await?;
    Ok(Json(Value::Array(list.iter().map(entry_json).collect())))
}

async fn global_set(
    _: Admin,
    State(state): State<AppState>,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    let (key, value) = parse_set(&body)?;
    state.service.set_global_secret(&key, value).await?;
    Ok(Json(
        json!({"status": "saved", "key": key, "scope": "global"}),
    ))
}

async fn global_delete(state: &AppState, key: String) -> Result<Json<Value>, ApiError> {
    state.service.delete_global_secret(&key).await?;
    Ok(Json(
        json!({"status": "deleted", "key": key, "scope": "global"}),
    ))
}

async fn global_remove(
    _: Admin,
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    global_delete(&state, key).await
}

async fn global_remove_rotate_key(
    _: Admin,
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    global_delete(&state, "rotate".to_owned()).await
}

/// `POST /admin/secrets/rotate` with an optional `{"batch_size": 1..=10000}`: re-seals every
/// value under an old key with the active one and reports what is left.
async fn rotate(
    _: Admin,
    State(state): State<AppState>,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    let batch = if body.iter().all(u8::is_ascii_whitespace) {
        DEFAULT_REENCRYPT_BATCH
    } else {
        #[derive(Deserialize)]
        struct RotateBody {
            batch_size: Option<u32>,
        }
        let b: RotateBody = serde_json::from_slice(&body)
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
    Ok(Json(json!(report)))
}
