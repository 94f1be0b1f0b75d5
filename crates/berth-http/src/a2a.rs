//! `POST /workspaces/{id}/a2a` (REFERENCE-2.md §4): identifies the caller from its credential
//! and hands the message to the core's proxy; maps each outcome to the reference's status, body
//! and `Retry-After` header (§4.15).
//!
//! Caller identification (berth, §9.4 #30): the admin bearer is the canvas / the user (an
//! `X-Workspace-ID` header is recorded as the sender); a workspace token is that workspace,
//! subject to the hierarchy rule, and an `X-Workspace-ID` naming another workspace is refused;
//! a request without a credential is refused outside `--dev`.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use berth_core::a2a::parse_caller_header;
use berth_core::{A2aCaller, A2aError, A2aReply};
use berth_domain::WorkspaceId;
use serde_json::{Value, json};

use crate::auth::Bearer;
use crate::extract::{ApiPath, Body};
use crate::{ApiError, AppState};

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/workspaces/{id}/a2a", post(proxy))
}

/// Seconds a caller is told to wait for a waking or restarting workspace.
const RETRY_WAKE_SECS: u32 = 15;
/// Seconds a caller is told to wait for a busy agent.
const RETRY_BUSY_SECS: u32 = 30;

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
        A2aReply::Queued { method } => reply(
            StatusCode::OK,
            json!({"status": "queued", "delivery_mode": "poll", "method": method}),
            None,
        ),
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
