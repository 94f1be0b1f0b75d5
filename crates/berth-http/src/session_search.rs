//! `GET /workspaces/{id}/session-search?q=&limit=` (REFERENCE-2.md §2.6): a workspace's own
//! activity log, optionally filtered by a case-insensitive substring of its summary, type,
//! method, status or request/response documents, newest first.
//!
//! berth differences: there is no legacy `agent_memories` table, so every item is of kind
//! `activity`; `%` and `_` in `q` match themselves (the reference passes them through as
//! wildcards); a `q` longer than [`QUERY_MAX`] bytes is a 400.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use berth_api::ErrorBody;
use berth_api::activity::{SessionSearchItem, SessionSearchQuery};
use berth_core::ActivityRecord;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::WorkspaceAuth;
use crate::extract::ApiQuery;
use crate::{ApiError, AppState};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(search))
}

/// Page size without (or with an invalid) `limit`.
const DEFAULT_LIMIT: i64 = 50;
/// Largest page size (the store clamps to the same).
const LIMIT_MAX: i64 = 200;
/// Longest accepted search term, in bytes.
pub(crate) const QUERY_MAX: usize = 1000;

/// `limit`: a positive integer, capped at 200; anything else is the default (the reference's
/// rule).
fn limit(raw: Option<&String>) -> i64 {
    raw.and_then(|l| l.trim().parse::<i64>().ok())
        .filter(|l| *l > 0)
        .map_or(DEFAULT_LIMIT, |l| l.min(LIMIT_MAX))
}

/// One item: `{kind, id, workspace_id, label, content, method, status, created_at,
/// request_body?, response_body?}`.
fn item(r: ActivityRecord) -> SessionSearchItem {
    SessionSearchItem {
        content: r.summary.unwrap_or_default(),
        created_at: r
            .created_at
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        id: r.id,
        kind: "activity".into(),
        label: r.activity_type,
        method: r.method.unwrap_or_default(),
        request_body: r.request_body,
        response_body: r.response_body,
        status: r.status,
        workspace_id: r.workspace_id.to_string(),
    }
}

/// Searches the workspace's own activity log, newest first.
#[utoipa::path(
    get,
    path = "/workspaces/{id}/session-search",
    tag = "activity",
    security(("workspace" = [])),
    params(("id" = String, Path, description = "The workspace id."), SessionSearchQuery),
    responses(
        (status = 200, description = "Matching items.", body = Vec<SessionSearchItem>),
        (status = 400, description = "`q must be at most … bytes`.", body = ErrorBody),
    ),
)]
async fn search(
    State(state): State<AppState>,
    auth: WorkspaceAuth,
    ApiQuery(q): ApiQuery<HashMap<String, String>>,
) -> Result<Json<Vec<SessionSearchItem>>, ApiError> {
    let term = q.get("q").filter(|t| !t.is_empty()).cloned();
    if term.as_ref().is_some_and(|t| t.len() > QUERY_MAX) {
        return Err(ApiError::BadRequest(format!(
            "q must be at most {QUERY_MAX} bytes"
        )));
    }
    let rows = state
        .service
        .store()
        .search_activity(auth.id, term, limit(q.get("limit")))
        .await
        .map_err(|e| ApiError::internal("session search failed", e))?;
    Ok(Json(rows.into_iter().map(item).collect()))
}
