//! `POST /workspaces`, `GET /workspaces`, `GET /workspaces/{id}` (REFERENCE.md §2.1–2.3).

use std::borrow::Cow;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64_lite::{decode_cursor, encode_cursor};
use berth_api::workspaces::{
    CreateWorkspace, CreatedWorkspace, GetWorkspaceQuery, ListWorkspacesQuery, Workspace,
};
use berth_api::{ErrorBody, WorkspaceGone};
use berth_core::Page;
use berth_core::{CreateContext, CreateRequest, CreateResponse, InitialMemory, WorkspaceView};
use berth_domain::WorkspaceId;
use berth_domain::status::WorkspaceStatus;
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Admin;
use crate::extract::{ApiPath, ApiQuery, Body};
use crate::platform_url::PlatformUrl;
use crate::{ApiError, AppState};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(
            get_one,
            crate::lifecycle::update,
            crate::lifecycle::delete
        ))
        .routes(routes!(crate::lifecycle::workspace_state))
        .routes(routes!(crate::lifecycle::restart))
        .routes(routes!(crate::lifecycle::pause))
        .routes(routes!(crate::lifecycle::resume))
        .routes(routes!(crate::lifecycle::hibernate))
        .routes(routes!(crate::lifecycle::wake))
        .routes(routes!(crate::lifecycle::abilities))
        .routes(routes!(
            crate::lifecycle::get_budget,
            crate::lifecycle::patch_budget
        ))
        .routes(routes!(
            crate::lifecycle::get_config,
            crate::lifecycle::patch_config
        ))
        .routes(routes!(crate::lifecycle::console))
        .routes(routes!(crate::lifecycle::bootstrap_failed))
}

/// Longest accepted `Idempotency-Key`.
const IDEMPOTENCY_KEY_MAX: usize = 255;
/// Largest page of `GET /workspaces?limit=`.
const PAGE_MAX: i64 = 1000;

fn create_request(p: CreateWorkspace) -> CreateRequest {
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
        initial_memories: p
            .initial_memories
            .into_iter()
            .map(|m| InitialMemory {
                content: m.content,
                scope: m.scope,
            })
            .collect(),
    }
}

/// The core's create answer on the wire.
fn created_json(r: CreateResponse) -> Result<CreatedWorkspace, ApiError> {
    let connection = match r.connection {
        None => None,
        Some(c) => Some(
            serde_json::from_value(c)
                .map_err(|e| ApiError::internal("failed to encode the connection payload", e))?,
        ),
    };
    Ok(CreatedWorkspace {
        id: r.id,
        external: r.external,
        status: r.status,
        workspace_access: r.workspace_access,
        connection,
    })
}

/// Creates a workspace: every check of REFERENCE.md §2.1 in its normative order, then one
/// transaction. With `Idempotency-Key`, a repeat of the same request answers the stored result
/// (`Idempotent-Replayed: true`); the same key with another body is a 422.
#[utoipa::path(
    post,
    path = "/workspaces",
    tag = "workspaces",
    security(("admin" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "1 to 255 visible ASCII characters: a retry with the same key and body answers the first result instead of creating again.")),
    request_body = CreateWorkspace,
    responses(
        (status = 201, description = "Created (or replayed).", body = CreatedWorkspace,
            headers(("Idempotent-Replayed" = String, description = "`true` when this is the stored answer of an earlier request with the same key."))),
        (status = 400, description = "A field is invalid (`invalid workspace payload`, `tier must be between 1 and 4`, …).", body = ErrorBody),
        (status = 409, description = "No free name is left.", body = ErrorBody),
        (status = 422, description = "`MODEL_REQUIRED`, `RUNTIME_UNRESOLVED`, `RUNTIME_UNKNOWN`, `IDEMPOTENCY_KEY_REUSED`, … (`code`).", body = ErrorBody),
    ),
)]
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
    let payload: CreateWorkspace = serde_json::from_slice(&body)
        .map_err(|_| ApiError::BadRequest("invalid workspace payload".into()))?;
    let ctx = CreateContext {
        idempotency_key,
        request_hash: Sha256::digest(&body).into(),
        platform_url,
    };
    let created = state.service.create(create_request(payload), ctx).await?;
    let mut resp = (StatusCode::CREATED, Json(created_json(created.response)?)).into_response();
    if created.replayed {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(resp)
}

/// `GET /workspaces`: the reference's bare array. berth: `?limit=N` pages it and returns the next
/// page's `?cursor=` in the `X-Next-Cursor` header (absent on the last page).
#[utoipa::path(
    get,
    path = "/workspaces",
    tag = "workspaces",
    security(("admin" = [])),
    params(ListWorkspacesQuery),
    responses(
        (status = 200, description = "Every workspace that is not removed (or one page of them).", body = Vec<Workspace<'_>>,
            headers(("X-Next-Cursor" = String, description = "The `?cursor=` of the next page; absent on the last page."))),
        (status = 400, description = "`limit must be an integer from 1 to 1000`, `invalid cursor`, or a NUL in a query parameter.", body = ErrorBody),
    ),
)]
async fn list(
    _: Admin,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListWorkspacesQuery>,
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
    let body: Vec<Workspace<'_>> = rows.iter().map(list_json).collect();
    let mut resp = Json(body).into_response();
    if let Some(next) = next.and_then(|n| HeaderValue::from_str(&n).ok()) {
        resp.headers_mut().insert("x-next-cursor", next);
    }
    Ok(resp)
}

/// `GET /workspaces/{id}` (open route): one query; 410 for removed rows; sensitive keys stripped.
#[utoipa::path(
    get,
    path = "/workspaces/{id}",
    tag = "workspaces",
    description = "Open (the reference's canvas reads it without a credential): the projection leaves out the budget, the current task, the last sample error and the host directory.",
    security(()),
    params(("id" = String, Path, description = "The workspace id."), GetWorkspaceQuery),
    responses(
        (status = 200, description = "The workspace.", body = Workspace<'_>),
        (status = 400, description = "`invalid workspace ID`.", body = ErrorBody),
        (status = 404, description = "`workspace not found`.", body = ErrorBody),
        (status = 410, description = "The workspace was removed (`?include_removed=true` answers it anyway).", body = WorkspaceGone),
    ),
)]
async fn get_one(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<GetWorkspaceQuery>,
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
        return Ok((
            StatusCode::GONE,
            Json(WorkspaceGone {
                error: "workspace removed".into(),
                hint: "Regenerate workspace + token from the canvas → Tokens tab".into(),
                id,
                removed_at: view.workspace.updated_at,
            }),
        )
            .into_response());
    }
    Ok(Json(get_json(&view)).into_response())
}

/// The `GET /workspaces` element: the [`get_json`] projection plus the budget, the current
/// task, the last sample error, the spend and the host directory, without `last_outbound_at`.
/// It borrows from the row and is serialised straight to the response bytes.
fn list_json(v: &WorkspaceView) -> Workspace<'_> {
    let w = &v.workspace;
    Workspace {
        budget_limit: Some(w.budget_limit),
        current_task: Some(Cow::Borrowed(w.current_task.as_deref().unwrap_or_default())),
        last_outbound_at: None,
        last_sample_error: Some(Cow::Borrowed(
            w.last_sample_error.as_deref().unwrap_or_default(),
        )),
        monthly_spend: Some(w.monthly_spend),
        workspace_dir: Some(w.workspace_dir.as_deref().map(Cow::Borrowed)),
        ..get_json(v)
    }
}

/// The `GET /workspaces/{id}` body (REFERENCE.md §2.2, plus berth's `failure_code`).
fn get_json(v: &WorkspaceView) -> Workspace<'_> {
    let w = &v.workspace;
    Workspace {
        active_tasks: w.active_tasks,
        agent_card: w.agent_card.as_ref().map(Cow::Borrowed),
        broadcast_enabled: w.broadcast_enabled,
        budget_limit: None,
        collapsed: w.collapsed,
        compute: Cow::Borrowed(&w.compute),
        current_task: None,
        failure_code: w.failure_code.as_deref().map(Cow::Borrowed),
        id: w.id,
        last_error_rate: w.last_error_rate,
        last_heartbeat_at: w.last_heartbeat_at,
        last_outbound_at: Some(w.last_outbound_at),
        last_sample_error: None,
        max_concurrent_tasks: w.max_concurrent_tasks,
        monthly_spend: None,
        name: Cow::Borrowed(&w.name),
        parent_id: w.parent_id,
        provision_timeout_ms: v.provision_timeout_ms,
        role: w.role.as_deref().map(Cow::Borrowed),
        runtime: Cow::Borrowed(&w.runtime),
        status: w.status,
        talk_to_user_enabled: w.talk_to_user_enabled,
        tier: w.tier,
        uptime_seconds: w.uptime_seconds,
        url: Cow::Borrowed(w.url.as_deref().unwrap_or_default()),
        workspace_dir: None,
        x: w.x,
        y: w.y,
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
