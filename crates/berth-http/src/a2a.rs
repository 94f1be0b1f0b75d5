//! `POST /workspaces/{id}/a2a` (REFERENCE-2.md §4): identifies the caller from its credential
//! and hands the message to the core's proxy; maps each outcome to the reference's status, body
//! and `Retry-After` header (§4.15).
//!
//! Caller identification (berth, §9.4 #30): the admin bearer is the canvas / the user (an
//! `X-Workspace-ID` header is recorded as the sender); a workspace token is that workspace,
//! subject to the hierarchy rule, and an `X-Workspace-ID` naming another workspace is refused;
//! a request without a credential is refused outside `--dev`.
//!
//! Also the busy queue's routes (§4.12): `GET /workspaces/{id}/a2a/queue/{queue_id}` (the admin,
//! or the token of the item's target or sender with that workspace in the path),
//! `GET /workspaces/{id}/a2a/queue` (berth: the workspace's queue, for the admin or its own token;
//! the console's queue panel) and `POST /admin/a2a-queue/drop-stale`.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_api::ErrorBody;
use berth_api::a2a::{DropStaleQuery, Dropped, Enqueued, QueueItem, QueueListQuery, Queued};
use berth_core::a2a::parse_caller_header;
use berth_core::{A2aCaller, A2aError, A2aReply, QueueViewer};
use berth_domain::WorkspaceId;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Admin, Bearer, WorkspaceAuth};
use crate::extract::{ApiPath, ApiQuery, Body};
use crate::{ApiError, AppState};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(proxy))
        .routes(routes!(queue_list))
        .routes(routes!(queue_status))
        .routes(routes!(drop_stale))
}

/// Seconds a caller is told to wait for a waking or restarting workspace.
const RETRY_WAKE_SECS: u32 = 15;
/// Seconds a caller is told to wait for a busy agent.
const RETRY_BUSY_SECS: u32 = 30;
/// Largest `max_age_minutes` of `drop-stale` (ten years): the age is subtracted from the
/// clock, and a larger one would leave the calendar (the handler used to panic on it).
const DROP_STALE_MAX_AGE_MINUTES: u64 = 10 * 365 * 24 * 60;

fn reply(status: StatusCode, body: Value, retry_after: Option<u32>) -> Response {
    let mut resp = (status, Json(body)).into_response();
    if let Some(secs) = retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

fn error(status: StatusCode, message: &str) -> Response {
    reply(status, json!({"error": message}), None)
}

/// Who is calling, from the bearer and `X-Workspace-ID`.
async fn identify(
    state: &AppState,
    headers: &HeaderMap,
    bearer: Option<&str>,
) -> Result<A2aCaller, Response> {
    let claimed = match headers
        .get("x-workspace-id")
        .map(|v| v.to_str().unwrap_or("\u{0}"))
        .map(str::trim)
        .filter(|v| !v.is_empty())
    {
        None => None,
        Some(raw) => Some(
            parse_caller_header(raw).map_err(|e| error(StatusCode::FORBIDDEN, &e.to_string()))?,
        ),
    };
    match bearer {
        Some(t) if state.admin.is_admin_token(t) => Ok(A2aCaller::User {
            on_behalf_of: claimed,
        }),
        Some(t) => match state.service.authenticate_token(t).await {
            Ok(Some(owner)) if claimed.is_none_or(|c| c == owner) => {
                Ok(A2aCaller::Workspace(owner))
            }
            Ok(_) => Err(error(StatusCode::UNAUTHORIZED, "invalid caller auth token")),
            Err(e) => Err(ApiError::internal("auth check failed", e).into_response()),
        },
        None if state.admin.dev => Ok(A2aCaller::Dev { claimed }),
        None => Err(error(StatusCode::UNAUTHORIZED, "missing caller auth token")),
    }
}

/// `X-Timeout: <seconds>`; anything but a positive integer is ignored.
fn timeout(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get("x-timeout")?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
}

/// Sends an A2A JSON-RPC message to the workspace's agent (REFERENCE-2.md §4).
#[utoipa::path(
    post,
    path = "/workspaces/{id}/a2a",
    tag = "a2a",
    description = "The caller: the admin bearer (the user; `X-Workspace-ID` is recorded as the sender), a workspace token (that workspace, subject to the hierarchy rule), or nothing in `--dev`. A delivered message answers the agent's own status and JSON body, passed through unchanged.",
    security(("admin" = []), ("workspace" = []), ()),
    params(
        ("id" = String, Path, description = "The target workspace."),
        ("X-Workspace-ID" = Option<String>, Header, description = "The sending workspace (must be the token's own)."),
        ("X-Timeout" = Option<String>, Header, description = "Seconds to wait for the agent."),
    ),
    request_body(content = Object, description = "A JSON-RPC 2.0 request (`message/send`, …), passed to the agent."),
    responses(
        (status = 200, description = "The agent's answer (passed through, any JSON), or `Queued` for a poll-mode agent.", body = Value),
        (status = 202, description = "The agent is busy: the message waits in the busy queue.", body = Enqueued),
        (status = 400, description = "`invalid workspace ID`, invalid JSON, a malformed message (`hint`).", body = ErrorBody),
        (status = 401, description = "`missing caller auth token`, `invalid caller auth token`.", body = ErrorBody),
        (status = 402, description = "The caller's budget is exhausted.", body = ErrorBody),
        (status = 403, description = "The hierarchy rule refuses the caller, or an `X-Workspace-ID` that is not the token's.", body = ErrorBody),
        (status = 404, description = "`workspace not found`.", body = ErrorBody),
        (status = 429, description = "The busy queue is full (`queue_full`, `pending`, `retry_after`), or the rate limit.", body = ErrorBody,
            headers(("Retry-After" = String, description = "Seconds to wait."))),
        (status = 502, description = "The agent could not be reached, or failed (`delivery_confirmed`).", body = ErrorBody),
        (status = 503, description = "Waking, restarting, busy or unavailable (`retry_after`, `status`).", body = ErrorBody,
            headers(("Retry-After" = String, description = "Seconds to wait."))),
        (status = 504, description = "The agent did not answer in time (`timeout_seconds`).", body = ErrorBody),
        (status = "default", description = "The agent's own error status and body, passed through (any JSON).", body = Value),
    ),
)]
async fn proxy(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    Bearer(bearer): Bearer,
    headers: HeaderMap,
    Body(body): Body,
) -> Response {
    let Ok(target) = WorkspaceId::parse(&id) else {
        return error(StatusCode::BAD_REQUEST, "invalid workspace ID");
    };
    let caller = match identify(&state, &headers, bearer.as_deref()).await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    match state
        .service
        .proxy_a2a(target, caller, body.to_vec(), timeout(&headers))
        .await
    {
        Ok(r) => reply_response(r),
        Err(e) => error_response(e),
    }
}

fn reply_response(r: A2aReply) -> Response {
    match r {
        A2aReply::Delivered { status, body } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        A2aReply::Queued { method } => (
            StatusCode::OK,
            Json(Queued {
                delivery_mode: "poll".into(),
                method,
                status: "queued".into(),
            }),
        )
            .into_response(),
        A2aReply::BusyQueued {
            queue_id,
            queue_depth,
        } => (
            StatusCode::ACCEPTED,
            Json(Enqueued {
                message:
                    "workspace agent busy — request queued, will dispatch when capacity available"
                        .into(),
                queue_depth,
                queue_id: queue_id.to_string(),
                queued: true,
            }),
        )
            .into_response(),
        A2aReply::AgentError { status, error } => reply(
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            json!({ "error": error }),
            None,
        ),
    }
}

fn error_response(e: A2aError) -> Response {
    use A2aError as E;
    let message = e.to_string();
    match e {
        E::InvalidCallerId | E::Forbidden => error(StatusCode::FORBIDDEN, &message),
        E::MissingCallerToken => error(StatusCode::UNAUTHORIZED, &message),
        E::NotFound => error(StatusCode::NOT_FOUND, &message),
        E::BudgetExceeded => error(StatusCode::PAYMENT_REQUIRED, &message),
        E::InvalidJson => error(StatusCode::BAD_REQUEST, &message),
        E::InvalidContentType => reply(
            StatusCode::BAD_REQUEST,
            json!({"error": message, "hint": "content must be a string (v0.2 compat) or omitted in favour of parts (v0.3)"}),
            None,
        ),
        E::MissingParts => reply(
            StatusCode::BAD_REQUEST,
            json!({"error": message, "hint": "v0.3 example: {\"parts\":[{\"kind\":\"text\",\"text\":\"...\"}]}"}),
            None,
        ),
        E::Waking => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "workspace is waking from hibernation — retry in ~15 seconds", "waking": true, "retry_after": RETRY_WAKE_SECS}),
            Some(RETRY_WAKE_SECS),
        ),
        E::NoUrl { status } | E::NotAvailable { status } => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": message, "status": status}),
            None,
        ),
        E::UnsafeUrl | E::Unreachable | E::InvalidResponse | E::ResponseTooLarge => {
            error(StatusCode::BAD_GATEWAY, &message)
        }
        E::RequestBuild => error(StatusCode::INTERNAL_SERVER_ERROR, &message),
        E::Restarting {
            after_response: false,
        } => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": message, "restarting": true}),
            None,
        ),
        E::Restarting {
            after_response: true,
        } => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": message, "restarting": true, "retry_after": RETRY_WAKE_SECS}),
            Some(RETRY_WAKE_SECS),
        ),
        E::Timeout { seconds } => reply(
            StatusCode::GATEWAY_TIMEOUT,
            json!({"error": message, "timeout_seconds": seconds}),
            None,
        ),
        E::Busy => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": message, "busy": true, "retry_after": RETRY_BUSY_SECS}),
            Some(RETRY_BUSY_SECS),
        ),
        E::QueueFull { pending } => reply(
            StatusCode::TOO_MANY_REQUESTS,
            json!({"error": message, "busy": true, "queue_full": true, "pending": pending, "retry_after": RETRY_BUSY_SECS}),
            Some(RETRY_BUSY_SECS),
        ),
        E::QueueItemNotFound => error(StatusCode::NOT_FOUND, &message),
        E::Redirected { status } => reply(
            StatusCode::BAD_GATEWAY,
            json!({"error": message, "status": status}),
            None,
        ),
        E::EmptyBody { status } => reply(
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            json!({ "error": message }),
            None,
        ),
        E::ReadFailed {
            status,
            delivery_confirmed,
        } => {
            let code = if (200..300).contains(&status) {
                StatusCode::BAD_GATEWAY
            } else {
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY)
            };
            reply(
                code,
                json!({"error": message, "delivery_confirmed": delivery_confirmed}),
                None,
            )
        }
        E::Store { context, source } => ApiError::Internal(context, source).into_response(),
    }
}

/// One item of the busy queue.
#[utoipa::path(
    get,
    path = "/workspaces/{id}/a2a/queue/{queue_id}",
    tag = "a2a",
    description = "Bearer: the admin credential, or a token of the item's target or sender with that workspace in the path (`--dev` also accepts none).",
    security(("admin" = []), ("workspace" = []), ()),
    params(
        ("id" = String, Path, description = "The workspace id."),
        ("queue_id" = String, Path, description = "The queue item."),
    ),
    responses(
        (status = 200, description = "The item.", body = QueueItem),
        (status = 401, description = "`missing auth token`, `invalid auth token`.", body = ErrorBody),
        (status = 404, description = "`queue item not found`.", body = ErrorBody),
    ),
)]
async fn queue_status(
    State(state): State<AppState>,
    ApiPath((id, queue_id)): ApiPath<(String, String)>,
    Bearer(bearer): Bearer,
) -> Response {
    let viewer = match bearer.as_deref() {
        Some(t) if state.admin.is_admin_token(t) => QueueViewer::Admin,
        Some(t) => match state.service.authenticate_token(t).await {
            Ok(Some(owner)) => QueueViewer::Workspace(owner),
            Ok(None) => return error(StatusCode::UNAUTHORIZED, "invalid auth token"),
            Err(e) => return ApiError::internal("auth check failed", e).into_response(),
        },
        None if state.admin.dev => QueueViewer::Admin,
        None => return error(StatusCode::UNAUTHORIZED, "missing auth token"),
    };
    let (Ok(path), Ok(queue_id)) = (WorkspaceId::parse(&id), uuid::Uuid::parse_str(&queue_id))
    else {
        return error(StatusCode::NOT_FOUND, "queue item not found");
    };
    match state.service.a2a_queue_status(path, queue_id, viewer).await {
        Ok(item) => (StatusCode::OK, Json(queue_item(item, None, true))).into_response(),
        Err(e) => error_response(e),
    }
}

/// The wire form of a stored item; the agent's answer only when `with_response`.
fn queue_item(
    item: berth_core::berth_store::QueueItem,
    position: Option<u32>,
    with_response: bool,
) -> QueueItem {
    let response_body = match item.response_body {
        Some(r) if with_response && item.status == "completed" => {
            Some(serde_json::from_str::<Value>(&r).unwrap_or(Value::String(r)))
        }
        _ => None,
    };
    QueueItem {
        attempts: item.attempts,
        completed_at: item.completed_at,
        dispatched_at: item.dispatched_at,
        enqueued_at: item.enqueued_at,
        expires_at: item.expires_at,
        last_error: item.last_error,
        method: item.method,
        position,
        priority: item.priority,
        queue_id: item.id.to_string(),
        response_body,
        status: item.status,
        workspace_id: item.workspace_id.to_string(),
    }
}

/// Default page of the queue listing.
const QUEUE_LIST_DEFAULT: usize = 50;

/// The workspace's busy queue (berth): pending items in delivery order, then finished ones
/// (kept for seven days) newest first.
#[utoipa::path(
    get,
    path = "/workspaces/{id}/a2a/queue",
    tag = "a2a",
    description = "berth addition. Bearer: the admin credential or the workspace's own token (`--dev` also accepts none). Pending items come first in delivery order (the one being delivered, then each `queued` one with its `position`, 1 = next), then finished ones (`completed`, `failed`, `dropped`; kept seven days) newest first. Items carry no `response_body`: read one item for the agent's answer.",
    security(("admin" = []), ("workspace" = []), ()),
    params(("id" = String, Path, description = "The workspace id."), QueueListQuery),
    responses(
        (status = 200, description = "The items, at most `limit`.", body = Vec<QueueItem>),
        (status = 400, description = "`invalid workspace ID`, `limit must be a positive integer`.", body = ErrorBody),
        (status = 404, description = "`workspace not found` (unknown or removed).", body = ErrorBody),
    ),
)]
async fn queue_list(
    State(state): State<AppState>,
    auth: WorkspaceAuth,
    ApiQuery(q): ApiQuery<QueueListQuery>,
) -> Response {
    let limit = match q.limit.as_deref().map(str::trim) {
        None | Some("") => QUEUE_LIST_DEFAULT,
        Some(l) => match l.parse::<u64>() {
            Ok(n) if n >= 1 => usize::try_from(n).map_or(berth_core::A2A_QUEUE_PAGE_MAX, |n| {
                n.min(berth_core::A2A_QUEUE_PAGE_MAX)
            }),
            _ => return error(StatusCode::BAD_REQUEST, "limit must be a positive integer"),
        },
    };
    match state.service.a2a_queue(auth.id, limit).await {
        Ok(entries) => {
            let items: Vec<QueueItem> = entries
                .into_iter()
                .map(|e| queue_item(e.item, e.position, false))
                .collect();
            (StatusCode::OK, Json(items)).into_response()
        }
        Err(e) => error_response(e),
    }
}

/// Drops queued A2A messages older than `max_age_minutes`.
#[utoipa::path(
    post,
    path = "/admin/a2a-queue/drop-stale",
    tag = "a2a",
    security(("admin" = [])),
    params(DropStaleQuery),
    responses(
        (status = 200, description = "How many were dropped.", body = Dropped),
        (status = 400, description = "`max_age_minutes must be a positive integer`, `invalid workspace_id`.", body = ErrorBody),
    ),
)]
async fn drop_stale(
    State(state): State<AppState>,
    _admin: Admin,
    ApiQuery(q): ApiQuery<DropStaleQuery>,
) -> Response {
    let minutes = match q.max_age_minutes.as_deref().map(str::trim) {
        None | Some("") => 60,
        Some(m) => match m.parse::<u64>() {
            Ok(n) if n > DROP_STALE_MAX_AGE_MINUTES => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "max_age_minutes must be at most {DROP_STALE_MAX_AGE_MINUTES} (ten years)"
                    ),
                );
            }
            Ok(n) if n >= 1 => n,
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "max_age_minutes must be a positive integer",
                );
            }
        },
    };
    let workspace = match q
        .workspace_id
        .as_deref()
        .map(str::trim)
        .filter(|w| !w.is_empty())
    {
        None => None,
        Some(w) => match WorkspaceId::parse(w) {
            Ok(id) => Some(id),
            Err(_) => return error(StatusCode::BAD_REQUEST, "invalid workspace_id"),
        },
    };
    let age = Duration::from_secs(minutes * 60);
    match state.service.drop_stale_a2a(age, workspace).await {
        Ok(n) => (StatusCode::OK, Json(Dropped { dropped: n })).into_response(),
        Err(e) => ApiError::internal("failed to drop stale items", e).into_response(),
    }
}
