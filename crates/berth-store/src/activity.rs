//! Activity log records and their SQL (REFERENCE-2.md §2): agents' self-reports and the A2A
//! proxy's rows, read back by `GET /workspaces/{id}/activity`.
//!
//! Rows carry a monotonic `seq`; the `since_id` cursor is resolved to it, so rows that share a
//! timestamp are never skipped (§9.2 #12).

use berth_domain::WorkspaceId;
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

/// One activity row to write.
#[derive(Debug, Clone, PartialEq)]
pub struct NewActivity {
    /// Row id (the cursor clients pass as `since_id`).
    pub id: Uuid,
    /// The workspace whose log this is.
    pub workspace_id: WorkspaceId,
    /// One of the activity types (not checked here: internal writers use more than the API's).
    pub activity_type: String,
    /// Who sent it (`None` = the canvas / the user).
    pub source_id: Option<Uuid>,
    /// Who it was for.
    pub target_id: Option<Uuid>,
    /// A2A method or similar.
    pub method: Option<String>,
    /// One-line summary.
    pub summary: Option<String>,
    /// Request document.
    pub request_body: Option<serde_json::Value>,
    /// Response document.
    pub response_body: Option<serde_json::Value>,
    /// Tool trace of an agent reply.
    pub tool_trace: Option<serde_json::Value>,
    /// Time spent, in milliseconds.
    pub duration_ms: Option<i64>,
    /// `ok`, `error`, or what the agent reported.
    pub status: String,
    /// Error text (stored raw).
    pub error_detail: Option<String>,
    /// When it happened (the store's precision: [`crate::now`]).
    pub created_at: DateTime<Utc>,
}

/// One stored activity row.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivityRecord {
    /// Monotonic sequence id.
    pub seq: i64,
    /// Row id.
    pub id: Uuid,
    /// The workspace whose log this is.
    pub workspace_id: WorkspaceId,
    /// Activity type.
    pub activity_type: String,
    /// Sender.
    pub source_id: Option<Uuid>,
    /// Recipient.
    pub target_id: Option<Uuid>,
    /// Method.
    pub method: Option<String>,
    /// Summary.
    pub summary: Option<String>,
    /// Request document.
    pub request_body: Option<serde_json::Value>,
    /// Response document.
    pub response_body: Option<serde_json::Value>,
    /// Tool trace.
    pub tool_trace: Option<serde_json::Value>,
    /// Duration in milliseconds.
    pub duration_ms: Option<i64>,
    /// Status.
    pub status: String,
    /// Error text.
    pub error_detail: Option<String>,
    /// When it was written.
    pub created_at: DateTime<Utc>,
}

/// Which side sent a row (`source=` of §2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActivitySource {
    /// `source_id IS NULL`.
    Canvas,
    /// `source_id IS NOT NULL`.
    Agent,
}

/// Which activity rows of one workspace to read. Every set filter is ANDed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ActivityQuery {
    /// Exact `activity_type`.
    pub activity_type: Option<String>,
    /// Sender side.
    pub source: Option<ActivitySource>,
    /// Rows whose source or target is this workspace.
    pub peer_id: Option<Uuid>,
    /// Rows written at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Rows written strictly before this time.
    pub before: Option<DateTime<Utc>>,
    /// Rows after this row of the same workspace, oldest first; without it, newest first.
    pub since_id: Option<Uuid>,
    /// At most this many (clamped to 1..=500).
    pub limit: i64,
}

/// Largest page `GET /workspaces/{id}/activity` returns.
pub const ACTIVITY_PAGE_MAX: i64 = 500;

/// Inserts the row only while its workspace exists and is not removed, in one statement, so no
/// writer (an agent's report, an A2A row, a broadcast, a drained queue item) adds activity to a
/// workspace whose removal has committed; no row comes back otherwise.
pub(crate) const INSERT_ACTIVITY: &str = "\
INSERT INTO activity_logs (id, workspace_id, activity_type, source_id, target_id, method, summary, \
request_body, response_body, tool_trace, duration_ms, status, error_detail, created_at) \
SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14 \
WHERE EXISTS (SELECT 1 FROM workspaces WHERE id = $2 AND status <> 'removed') RETURNING seq";

pub(crate) const ACTIVITY_CURSOR: &str =
    "SELECT seq FROM activity_logs WHERE id = $1 AND workspace_id = $2";

/// Deletes one batch of old rows (bounded, so retention never holds a long lock).
pub(crate) const PRUNE_ACTIVITY_BATCH: &str = "\
DELETE FROM activity_logs WHERE seq IN \
(SELECT seq FROM activity_logs WHERE created_at < $1 ORDER BY seq LIMIT $2)";

/// Rows one retention batch deletes.
pub(crate) const PRUNE_ACTIVITY_BATCH_SIZE: i64 = 5_000;

/// The listing query for the filters that are set; placeholders are numbered in bind order:
/// workspace, type, peer, since, before, cursor seq, limit.
pub(crate) fn activity_sql(q: &ActivityQuery, cursor: bool) -> String {
    let mut sql = String::from(
        "SELECT seq, id, workspace_id, activity_type, source_id, target_id, method, summary, \
         request_body, response_body, tool_trace, duration_ms, status, error_detail, created_at \
         FROM activity_logs WHERE workspace_id = $1",
    );
    let mut n = 1;
    let mut next = || {
        n += 1;
        n
    };
    if q.activity_type.is_some() {
        sql.push_str(&format!(" AND activity_type = ${}", next()));
    }
    match q.source {
        Some(ActivitySource::Canvas) => sql.push_str(" AND source_id IS NULL"),
        Some(ActivitySource::Agent) => sql.push_str(" AND source_id IS NOT NULL"),
        None => {}
    }
    if q.peer_id.is_some() {
        let p = next();
        sql.push_str(&format!(" AND (source_id = ${p} OR target_id = ${p})"));
    }
    if q.since.is_some() {
        sql.push_str(&format!(" AND created_at >= ${}", next()));
    }
    if q.before.is_some() {
        sql.push_str(&format!(" AND created_at < ${}", next()));
    }
    if cursor {
        sql.push_str(&format!(" AND seq > ${} ORDER BY seq ASC", next()));
    } else {
        sql.push_str(" ORDER BY seq DESC");
    }
    sql.push_str(&format!(" LIMIT ${}", next()));
    sql
}

/// The raw activity row.
#[derive(sqlx::FromRow)]
pub(crate) struct ActivityRow {
    pub(crate) seq: i64,
    pub(crate) id: Uuid,
    pub(crate) workspace_id: Uuid,
    pub(crate) activity_type: String,
    pub(crate) source_id: Option<Uuid>,
    pub(crate) target_id: Option<Uuid>,
    pub(crate) method: Option<String>,
    pub(crate) summary: Option<String>,
    pub(crate) request_body: Option<Json<serde_json::Value>>,
    pub(crate) response_body: Option<Json<serde_json::Value>>,
    pub(crate) tool_trace: Option<Json<serde_json::Value>>,
    pub(crate) duration_ms: Option<i64>,
    pub(crate) status: String,
    pub(crate) error_detail: Option<String>,
    pub(crate) created_at: DateTime<Utc>,
}

impl From<ActivityRow> for ActivityRecord {
    fn from(r: ActivityRow) -> Self {
        ActivityRecord {
            seq: r.seq,
            id: r.id,
            workspace_id: WorkspaceId::from(r.workspace_id),
            activity_type: r.activity_type,
            source_id: r.source_id,
            target_id: r.target_id,
            method: r.method,
            summary: r.summary,
            request_body: r.request_body.map(|j| j.0),
            response_body: r.response_body.map(|j| j.0),
            tool_trace: r.tool_trace.map(|j| j.0),
            duration_ms: r.duration_ms,
            status: r.status,
            error_detail: r.error_detail,
            created_at: r.created_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_follow_the_bind_order() {
        let q = ActivityQuery {
            activity_type: Some("agent_log".into()),
            source: Some(ActivitySource::Agent),
            peer_id: Some(Uuid::nil()),
            since: Some(Utc::now()),
            before: Some(Utc::now()),
            since_id: Some(Uuid::nil()),
            limit: 10,
        };
        let sql = activity_sql(&q, true);
        assert!(sql.contains("activity_type = $2"), "{sql}");
        assert!(sql.contains("source_id = $3 OR target_id = $3"), "{sql}");
        assert!(sql.contains("created_at >= $4"), "{sql}");
        assert!(sql.contains("created_at < $5"), "{sql}");
        assert!(sql.contains("seq > $6 ORDER BY seq ASC LIMIT $7"), "{sql}");
        let plain = activity_sql(&ActivityQuery::default(), false);
        assert!(plain.ends_with("ORDER BY seq DESC LIMIT $2"), "{plain}");
    }
}
