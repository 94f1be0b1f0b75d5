//! `POST` and `GET /workspaces/{id}/activity` (REFERENCE-2.md §2.3, §2.5): agents' self-reports
//! and the log read-back that poll-mode agents use as their inbox.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use berth_api::activity::{ActivityEntry as Row, ActivityQuery as RowsQuery, LogActivity};
use berth_api::{ErrorBody, StatusResponse};
use berth_core::{
    ACTIVITY_TYPES, ActivityEntry, ActivityError, ActivityQuery, ActivityRecord, ActivitySource,
};
use serde_json::{Map, Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::WorkspaceAuth;
use crate::extract::{ApiQuery, Body};
use crate::platform_url::PlatformUrl;
use crate::{ApiError, AppState};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_activity, log_activity))
}

/// Default page size of the listing.
const DEFAULT_LIMIT: i64 = 100;
/// Largest page size.
const LIMIT_MAX: i64 = 500;
/// Largest `since_secs` (30 days).
const SINCE_SECS_MAX: i64 = 2_592_000;

fn invalid_body() -> ApiError {
    ApiError::BadRequest("invalid request body".into())
}

impl From<ActivityError> for ApiError {
    fn from(e: ActivityError) -> Self {
        match e {
            ActivityError::WorkspaceNotFound => ApiError::NotFound("workspace not found"),
            ActivityError::CursorNotFound => ApiError::Custom(
                StatusCode::GONE,
                json!({"error": "since_id cursor not found (row may have been pruned or belongs to a different workspace); omit since_id to reset"}),
            ),
            ActivityError::Store { context, source } => ApiError::internal(context, source),
        }
    }
}

/// A string field as Go's binding sees it: absent or `null` is empty; another type fails.
fn string_field(body: &Map<String, Value>, key: &str) -> Result<String, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(invalid_body()),
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// A JSON document field: absent and `null` are both "no document".
fn document(body: &Map<String, Value>, key: &str) -> Option<Value> {
    body.get(key).filter(|v| !v.is_null()).cloned()
}

/// `POST /workspaces/{id}/activity` (§2.3). berth: a failed write is an error, never a 200.
#[utoipa::path(
    post,
    path = "/workspaces/{id}/activity",
    tag = "activity",
    security(("workspace" = [])),
    params(("id" = String, Path, description = "The workspace id.")),
    request_body = LogActivity,
    responses(
        (status = 200, description = "`logged`.", body = StatusResponse),
        (status = 400, description = "`invalid request body`, `invalid activity_type, must be one of: …`.", body = ErrorBody),
        (status = 403, description = "`source_id must match authenticated workspace`.", body = ErrorBody),
    ),
)]
async fn log_activity(
    State(state): State<AppState>,
    auth: WorkspaceAuth,
    Body(raw): Body,
) -> Result<Json<StatusResponse>, ApiError> {
    let body: Value = serde_json::from_slice(&raw).map_err(|_| invalid_body())?;
    let body = body.as_object().ok_or_else(invalid_body)?;
    let activity_type = string_field(body, "activity_type")?;
    if activity_type.is_empty() {
        return Err(invalid_body());
    }
    let method = string_field(body, "method")?;
    let summary = string_field(body, "summary")?;
    let target_id = string_field(body, "target_id")?;
    let source_id = string_field(body, "source_id")?;
    let status = string_field(body, "status")?;
    let error_detail = string_field(body, "error_detail")?;
    let duration_ms = match body.get("duration_ms") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_i64().ok_or_else(invalid_body)?),
    };
    // berth: a malformed target id is a bad request, not a silently lost row (§9.2 #11).
    let target_id = match non_empty(target_id) {
        None => None,
        Some(t) => Some(Uuid::parse_str(&t).map_err(|_| invalid_body())?),
    };
    if !ACTIVITY_TYPES.contains(&activity_type.as_str()) {
        return Err(ApiError::BadRequest(format!(
            "invalid activity_type, must be one of: {}",
            ACTIVITY_TYPES.join(", ")
        )));
    }
    let own = Uuid::from(auth.id);
    if !source_id.is_empty() && Uuid::parse_str(&source_id).ok() != Some(own) {
        tracing::warn!(workspace.id = %auth.id, source_id = ?source_id, "activity: source_id does not match the authenticated workspace");
        return Err(ApiError::Custom(
            StatusCode::FORBIDDEN,
            json!({"error": "source_id must match authenticated workspace"}),
        ));
    }
    let entry = ActivityEntry {
        activity_type,
        source_id: Some(own),
        target_id,
        method: non_empty(method),
        summary: non_empty(summary),
        request_body: document(body, "request_body").or_else(|| document(body, "metadata")),
        response_body: document(body, "response_body"),
        tool_trace: None,
        duration_ms,
        status,
        error_detail: non_empty(error_detail),
    };
    state
        .service
        .log_activity(auth.id, entry, Vec::new())
        .await?;
    Ok(Json(StatusResponse::new("logged")))
}

/// The parsed query of the listing, validated in the reference's order (§2.5).
fn parse_query(q: &HashMap<String, String>) -> Result<ActivityQuery, ApiError> {
    let get = |k: &str| q.get(k).map(|s| s.trim()).filter(|s| !s.is_empty());
    let peer_id = match get("peer_id") {
        None => None,
        Some(p) => Some(
            Uuid::parse_str(p)
                .map_err(|_| ApiError::BadRequest("peer_id must be a UUID".into()))?,
        ),
    };
    let before = match get("before_ts") {
        None => None,
        Some(t) => Some(
            chrono::DateTime::parse_from_rfc3339(t)
                .map_err(|_| {
                    ApiError::BadRequest(
                        "before_ts must be an RFC3339 timestamp (e.g. 2026-05-01T00:00:00Z)".into(),
                    )
                })?
                .with_timezone(&chrono::Utc),
        ),
    };
    let limit = get("limit")
        .and_then(|l| l.parse::<i64>().ok())
        .filter(|l| *l > 0)
        .map_or(DEFAULT_LIMIT, |l| l.min(LIMIT_MAX));
    let since = match get("since_secs") {
        None => None,
        Some(s) => {
            let secs = s
                .parse::<i64>()
                .ok()
                .filter(|s| *s > 0)
                .ok_or_else(|| {
                    ApiError::BadRequest("since_secs must be a positive integer".into())
                })?
                .min(SINCE_SECS_MAX);
            Some(chrono::Utc::now() - chrono::Duration::seconds(secs))
        }
    };
    // berth: a malformed cursor is the caller's mistake (400), not a 500 (§9.2 #15).
    let since_id = match get("since_id") {
        None => None,
        Some(c) => Some(
            Uuid::parse_str(c)
                .map_err(|_| ApiError::BadRequest("since_id must be a UUID".into()))?,
        ),
    };
    let source = match get("source") {
        None => None,
        Some("canvas") => Some(ActivitySource::Canvas),
        Some("agent") => Some(ActivitySource::Agent),
        Some(_) => {
            return Err(ApiError::BadRequest(
                "source must be 'canvas' or 'agent'".into(),
            ));
        }
    };
    Ok(ActivityQuery {
        activity_type: get("type").map(str::to_owned),
        source,
        peer_id,
        since,
        before,
        since_id,
        limit,
    })
}

/// One element of the listing (§2.5), without the `include=peer_info` fields.
fn row_json(r: ActivityRecord) -> Row {
    Row {
        activity_type: r.activity_type,
        agent_card_url: None,
        attachments: None,
        created_at: r
            .created_at
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        duration_ms: r.duration_ms,
        error_detail: r.error_detail,
        id: r.id,
        method: r.method,
        peer_name: None,
        peer_role: None,
        request_body: r.request_body,
        response_body: r.response_body,
        source_id: r.source_id,
        status: r.status,
        summary: r.summary,
        target_id: r.target_id,
        tool_trace: r.tool_trace,
        workspace_id: r.workspace_id.to_string(),
    }
}

/// `GET /workspaces/{id}/activity` (§2.5): newest first, or after the `since_id` row in write
/// order (the row's sequence, so rows sharing a timestamp are never skipped).
#[utoipa::path(
    get,
    path = "/workspaces/{id}/activity",
    tag = "activity",
    security(("workspace" = [])),
    params(("id" = String, Path, description = "The workspace id."), RowsQuery),
    responses(
        (status = 200, description = "Activity rows.", body = Vec<Row>),
        (status = 400, description = "A query parameter does not parse.", body = ErrorBody),
        (status = 410, description = "The `since_id` row is gone (pruned, or another workspace's).", body = ErrorBody),
    ),
)]
async fn list_activity(
    State(state): State<AppState>,
    auth: WorkspaceAuth,
    PlatformUrl(platform_url): PlatformUrl,
    ApiQuery(q): ApiQuery<HashMap<String, String>>,
) -> Result<Json<Vec<Row>>, ApiError> {
    let query = parse_query(&q)?;
    let rows = state.service.activity(auth.id, query).await?;
    if !crate::peer_info::wanted(q.get("include")) {
        return Ok(Json(rows.into_iter().map(row_json).collect()));
    }
    // `include=peer_info`: sender name/role, agent card URL, attachments.
    let peers = crate::peer_info::peers(&state.service, &rows).await?;
    let listed = rows
        .into_iter()
        .map(|r| {
            let mut row = row_json(r);
            crate::peer_info::extend(&mut row, &peers, &platform_url);
            row
        })
        .collect();
    Ok(Json(listed))
}
