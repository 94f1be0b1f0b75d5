//! `POST /workspaces`, `GET /workspaces`, `GET /workspaces/{id}` (REFERENCE.md §2.1–2.3).

use std::collections::BTreeMap;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use base64_lite::{decode_cursor, encode_cursor};
use berth_core::Page;
use berth_core::{CreateContext, CreateRequest, InitialMemory, WorkspaceView};
use berth_domain::WorkspaceId;
use berth_domain::compute::Compute;
use berth_domain::status::WorkspaceStatus;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::auth::Admin;
use crate::extract::{ApiPath, ApiQuery, Body, nullable};
use crate::platform_url::PlatformUrl;
use crate::{ApiError, AppState};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/workspaces", get(list).post(create))
        .route(
            "/workspaces/{id}",
            get(get_one)
                .patch(crate::lifecycle::update)
                .delete(crate::lifecycle::delete),
        )
        .route(
            "/workspaces/{id}/state",
            get(crate::lifecycle::workspace_state),
        )
        .route("/workspaces/{id}/restart", post(crate::lifecycle::restart))
        .route("/workspaces/{id}/pause", post(crate::lifecycle::pause))
        .route("/workspaces/{id}/resume", post(crate::lifecycle::resume))
        .route(
            "/workspaces/{id}/hibernate",
            post(crate::lifecycle::hibernate),
        )
        .route("/workspaces/{id}/wake", post(crate::lifecycle::wake))
        .route(
            "/workspaces/{id}/abilities",
            patch(crate::lifecycle::abilities),
        )
        .route(
            "/workspaces/{id}/budget",
            get(crate::lifecycle::get_budget).patch(crate::lifecycle::patch_budget),
        )
        .route(
            "/workspaces/{id}/config",
            get(crate::lifecycle::get_config).patch(crate::lifecycle::patch_config),
        )
        .route("/workspaces/{id}/console", get(crate::lifecycle::console))
        .route(
            "/admin/workspaces/{id}/bootstrap-failed",
            post(crate::lifecycle::bootstrap_failed),
        )
}

/// Longest accepted `Idempotency-Key`.
const IDEMPOTENCY_KEY_MAX: usize = 255;
/// Largest page of `GET /workspaces?limit=`.
const PAGE_MAX: i64 = 1000;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Canvas {
    #[serde(deserialize_with = "nullable")]
    x: f64,
    #[serde(deserialize_with = "nullable")]
    y: f64,
}

/// The request body of `POST /workspaces` (`CreateWorkspacePayload`). `null` reads as the zero
/// value and unknown fields are ignored, as the reference's Go binding does.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CreatePayload {
    #[serde(deserialize_with = "nullable")]
    name: String,
    #[serde(deserialize_with = "nullable")]
    role: String,
    #[serde(deserialize_with = "nullable")]
    template: String,
    #[serde(deserialize_with = "nullable")]
    tier: i64,
    #[serde(deserialize_with = "nullable")]
    model: String,
    #[serde(deserialize_with = "nullable")]
    runtime: String,
    #[serde(deserialize_with = "nullable")]
    external: bool,
    #[serde(deserialize_with = "nullable")]
    url: String,
    #[serde(deserialize_with = "nullable")]
    delivery_mode: String,
    #[serde(deserialize_with = "nullable")]
    workspace_dir: String,
    #[serde(deserialize_with = "nullable")]
    workspace_access: String,
    parent_id: Option<String>,
    budget_limit: Option<i64>,
    #[serde(deserialize_with = "nullable")]
    secrets: BTreeMap<String, String>,
    #[serde(deserialize_with = "nullable")]
    max_concurrent_tasks: i64,
    #[serde(deserialize_with = "nullable")]
    compute: Compute,
    #[serde(deserialize_with = "nullable")]
    canvas: Canvas,
    #[serde(deserialize_with = "nullable")]
    initial_memories: Vec<InitialMemory>,
}

impl From<CreatePayload> for CreateRequest {
    fn from(p: CreatePayload) -> Self {
        CreateRequest {
            name: p.name,
            role: p.role,
            template: p.template,
            tier: p.tier,
            model: p.model,
            runtime: p.runtime,
            external: p.external,
            url: p.url,
            delivery_mode: p.delivery_mode,
            workspace_dir: p.workspace_dir,
            workspace_access: p.workspace_access,
            parent_id: p.parent_id,
            budget_limit: p.budget_limit,
            secrets: p
                .secrets
                .into_iter()
                .map(|(k, v)| (k, SecretString::from(v)))
                .collect(),
            max_concurrent_tasks: p.max_concurrent_tasks,
            compute: p.compute,
            canvas: (p.canvas.x, p.canvas.y),
            initial_memories: p.initial_memories,
        }
    }
}

async fn create(
    _: Admin,
    State(state): State<AppState>,
    PlatformUrl(platform_url): PlatformUrl,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let idempotency_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let key = v.to_str().map(str::trim).unwrap_or_default();
            if key.is_empty() || key.len() > IDEMPOTENCY_KEY_MAX {
                return Err(ApiError::BadRequest(format!(
                    "Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX} visible ASCII characters"
                )));
            }
            Some(key.to_owned())
        }
    };
    let payload: CreatePayload = serde_json::from_slice(&body)
        .map_err(|_| ApiError::BadRequest("invalid workspace payload".into()))?;
    let ctx = CreateContext {
        idempotency_key,
        request_hash: Sha256::digest(&body).into(),
        platform_url,
    };
    let created = state.service.create(payload.into(), ctx).await?;
    let mut resp = (StatusCode::CREATED, Json(created.response)).into_response();
    if created.replayed {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(resp)
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /workspaces`: the reference's bare array. berth: `?limit=N` pages it and returns the next
/// page's `?cursor=` in the `X-Next-Cursor` header (absent on the last page).
async fn list(
    _: Admin,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let limit = match q.limit.as_deref() {
        None => None,
        Some(l) => match l.parse::<i64>() {
            Ok(n) if (1..=PAGE_MAX).contains(&n) => Some(n),
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "limit must be an integer from 1 to {PAGE_MAX}"
                )));
            }
        },
    };
    let after = match q.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => {
            Some(decode_cursor(c).ok_or_else(|| ApiError::BadRequest("invalid cursor".into()))?)
        }
    };
    let rows = state
        .service
        .list(Page {
            after,
            limit: limit.map(|l| l + 1),
        })
        .await
        .map_err(|e| ApiError::internal("query failed", e))?;
    let mut rows = rows;
    let next = match limit {
        Some(l) if rows.len() as i64 > l => {
            rows.truncate(l as usize);
            rows.last()
                .map(|v| encode_cursor(v.workspace.created_at, v.workspace.id))
        }
        _ => None,
    };
    let body: Vec<WorkspaceJson<'_>> = rows.iter().map(WorkspaceJson::list).collect();
    let mut resp = Json(body).into_response();
    if let Some(next) = next.and_then(|n| HeaderValue::from_str(&n).ok()) {
        resp.headers_mut().insert("x-next-cursor", next);
    }
    Ok(resp)
}

#[derive(Debug, Deserialize)]
struct GetQuery {
    include_removed: Option<String>,
}

/// `GET /workspaces/{id}` (open route): one query; 410 for removed rows; sensitive keys stripped.
async fn get_one(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<GetQuery>,
) -> Result<Response, ApiError> {
    let id =
        WorkspaceId::parse(&id).map_err(|_| ApiError::BadRequest("invalid workspace ID".into()))?;
    let view = state
        .service
        .get(id)
        .await
        .map_err(|e| ApiError::internal("query failed", e))?
        .ok_or(ApiError::NotFound("workspace not found"))?;
    if view.workspace.status == WorkspaceStatus::Removed
        && q.include_removed.as_deref() != Some("true")
    {
        return Err(ApiError::Custom(
            StatusCode::GONE,
            json!({
                "error": "workspace removed",
                "id": id,
                "hint": "Regenerate workspace + token from the canvas → Tokens tab",
                "removed_at": view.workspace.updated_at,
            }),
        ));
    }
    Ok(Json(WorkspaceJson::get(&view)).into_response())
}

/// The List/Get projection (REFERENCE.md §2.2), plus berth's `failure_code`: a typed view that
/// borrows from the row and is serialised straight to the response bytes (no intermediate
/// `serde_json::Value` per field). Fields are in alphabetical order, the order the former
/// `serde_json::Map` (a `BTreeMap`) wrote them in, so the wire bytes are unchanged. The list-only
/// fields are `Some` in the list and skipped by `GET /workspaces/{id}`, which adds
/// `last_outbound_at` instead.
#[derive(Serialize)]
struct WorkspaceJson<'a> {
    active_tasks: i64,
    agent_card: Option<&'a Value>,
    broadcast_enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    budget_limit: Option<Option<i64>>,
    collapsed: bool,
    compute: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    current_task: Option<&'a str>,
    failure_code: Option<&'a str>,
    id: WorkspaceId,
    last_error_rate: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_outbound_at: Option<Option<DateTime<Utc>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_sample_error: Option<&'a str>,
    max_concurrent_tasks: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    monthly_spend: Option<i64>,
    name: &'a str,
    parent_id: Option<WorkspaceId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    provision_timeout_ms: Option<i64>,
    role: Option<&'a str>,
    runtime: &'a str,
    status: WorkspaceStatus,
    talk_to_user_enabled: bool,
    tier: i64,
    uptime_seconds: i64,
    url: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    workspace_dir: Option<Option<&'a str>>,
    x: f64,
    y: f64,
}

impl<'a> WorkspaceJson<'a> {
    /// The `GET /workspaces` element.
    fn list(v: &'a WorkspaceView) -> Self {
        let w = &v.workspace;
        Self {
            budget_limit: Some(w.budget_limit),
            current_task: Some(w.current_task.as_deref().unwrap_or_default()),
            last_outbound_at: None,
            last_sample_error: Some(w.last_sample_error.as_deref().unwrap_or_default()),
            monthly_spend: Some(w.monthly_spend),
            workspace_dir: Some(w.workspace_dir.as_deref()),
            ..Self::get(v)
        }
    }

    /// The `GET /workspaces/{id}` body: the list element without the budget, the current task,
    /// the last sample error and the host directory, plus `last_outbound_at`.
    fn get(v: &'a WorkspaceView) -> Self {
        let w = &v.workspace;
        Self {
            active_tasks: w.active_tasks,
            agent_card: w.agent_card.as_ref(),
            broadcast_enabled: w.broadcast_enabled,
            budget_limit: None,
            collapsed: w.collapsed,
            compute: &w.compute,
            current_task: None,
            failure_code: w.failure_code.as_deref(),
            id: w.id,
            last_error_rate: w.last_error_rate,
            last_outbound_at: Some(w.last_outbound_at),
            last_sample_error: None,
            max_concurrent_tasks: w.max_concurrent_tasks,
            monthly_spend: None,
            name: &w.name,
            parent_id: w.parent_id,
            provision_timeout_ms: v.provision_timeout_ms,
            role: w.role.as_deref(),
            runtime: &w.runtime,
            status: w.status,
            talk_to_user_enabled: w.talk_to_user_enabled,
            tier: w.tier,
            uptime_seconds: w.uptime_seconds,
            url: w.url.as_deref().unwrap_or_default(),
            workspace_dir: None,
            x: w.x,
            y: w.y,
        }
    }
}

/// Opaque list cursors: `<created_at RFC 3339>|<id>`, hex-encoded so they are URL-safe.
mod base64_lite {
    use berth_domain::WorkspaceId;
    use chrono::{DateTime, Utc};

    pub(super) fn encode_cursor(at: DateTime<Utc>, id: WorkspaceId) -> String {
        let raw = format!(
            "{}|{id}",
            at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        );
        raw.bytes().map(|b| format!("{b:02x}")).collect()
    }

    pub(super) fn decode_cursor(c: &str) -> Option<(DateTime<Utc>, WorkspaceId)> {
        if !c.len().is_multiple_of(2) || c.len() > 256 {
            return None;
        }
        let bytes: Option<Vec<u8>> = (0..c.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(c.get(i..i + 2)?, 16).ok())
            .collect();
        let raw = String::from_utf8(bytes?).ok()?;
        let (at, id) = raw.split_once('|')?;
        let at = DateTime::parse_from_rfc3339(at).ok()?.with_timezone(&Utc);
        Some((at, WorkspaceId::parse(id).ok()?))
    }
}
