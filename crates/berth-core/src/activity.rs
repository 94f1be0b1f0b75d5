//! Activity logs (REFERENCE-2.md §2): the shared logger that writes a row and its
//! `ACTIVITY_LOGGED` event in one transaction, the reader behind `GET /workspaces/{id}/activity`,
//! and the retention sweep.
//!
//! berth's changes to the reference (§9.2): a failed insert is an error, not a silent success
//! (#11); the `since_id` cursor pages on the row's sequence, so rows sharing a timestamp are never
//! skipped (#12); the event is recorded in the event log, carries the row's `id` (the cursor) and
//! `created_at`, and has its `error_detail` redacted (#13, #14); retention runs in bounded batches
//! from its own supervised loop, first at start-up (#17).

use std::time::Duration;

use berth_domain::WorkspaceId;
use berth_domain::event::EventType;
use berth_domain::redact::{redact_secrets, truncate_utf8};
use berth_store::{ActivityQuery, ActivityRecord, NewActivity, NewEvent};
use serde_json::{Map, Value, json};
use tokio::sync::watch;
use uuid::Uuid;

use crate::service::WorkspaceService;

/// The `activity_type` values `POST /workspaces/{id}/activity` accepts (§2.2), in the order of
/// the reference's error message.
pub const ACTIVITY_TYPES: [&str; 7] = [
    "a2a_send",
    "a2a_receive",
    "task_update",
    "agent_log",
    "skill_promotion",
    "memory_write",
    "error",
];

/// Bytes of `error_detail` the `ACTIVITY_LOGGED` event keeps (§2.4).
pub const EVENT_ERROR_DETAIL_CAP: usize = 4096;

/// One activity row to write through [`WorkspaceService::log_activity`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActivityEntry {
    /// The activity type.
    pub activity_type: String,
    /// Sender (`None` = the canvas / the user).
    pub source_id: Option<Uuid>,
    /// Recipient.
    pub target_id: Option<Uuid>,
    /// Method.
    pub method: Option<String>,
    /// Summary.
    pub summary: Option<String>,
    /// Request document.
    pub request_body: Option<Value>,
    /// Response document.
    pub response_body: Option<Value>,
    /// Tool trace.
    pub tool_trace: Option<Value>,
    /// Duration in milliseconds.
    pub duration_ms: Option<i64>,
    /// Status (`ok` when empty).
    pub status: String,
    /// Error text (stored raw; redacted in the event).
    pub error_detail: Option<String>,
}

/// Why an activity operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ActivityError {
    /// The workspace does not exist or is removed (a removed workspace takes no activity).
    #[error("workspace not found")]
    WorkspaceNotFound,
    /// The `since_id` cursor is not a row of this workspace (pruned, or another workspace's).
    #[error("since_id cursor not found")]
    CursorNotFound,
    /// The store failed.
    #[error("{context}")]
    Store {
        /// The public message.
        context: &'static str,
        /// The cause (logged, never sent).
        #[source]
        source: berth_store::Error,
    },
}

/// How long activity rows are kept and how often the retention sweep runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActivityRetention {
    /// Rows older than this are deleted (reference: `ACTIVITY_RETENTION_DAYS`, 7 days).
    pub keep: Duration,
    /// Time between sweeps (reference: `ACTIVITY_CLEANUP_INTERVAL_HOURS`, 6 h).
    pub every: Duration,
}

impl Default for ActivityRetention {
    fn default() -> Self {
        Self {
            keep: Duration::from_secs(7 * 24 * 3600),
            every: Duration::from_secs(6 * 3600),
        }
    }
}

/// The `error_detail` of an event: cut to [`EVENT_ERROR_DETAIL_CAP`] bytes on a character
/// boundary (with `…[truncated]`), then redacted.
pub fn sanitize_error_detail(detail: &str) -> String {
    let cut = truncate_utf8(detail, EVENT_ERROR_DETAIL_CAP);
    let text = if cut.len() < detail.len() {
        format!("{cut}…[truncated]")
    } else {
        cut.to_owned()
    };
    redact_secrets(&text)
}

/// The `ACTIVITY_LOGGED` payload of a row (§2.4, plus its `id` and `created_at`).
pub fn activity_event_payload(row: &NewActivity) -> Value {
    let mut p = Map::new();
    p.insert("id".into(), json!(row.id));
    p.insert("activity_type".into(), json!(row.activity_type));
    p.insert("method".into(), json!(row.method));
    p.insert("summary".into(), json!(row.summary));
    p.insert("status".into(), json!(row.status));
    p.insert("source_id".into(), json!(row.source_id));
    p.insert("target_id".into(), json!(row.target_id));
    p.insert("duration_ms".into(), json!(row.duration_ms));
    p.insert("created_at".into(), json!(row.created_at));
    if let Some(t) = &row.tool_trace {
        p.insert("tool_trace".into(), t.clone());
    }
    if let Some(b) = &row.request_body {
        p.insert("request_body".into(), b.clone());
    }
    if let Some(b) = &row.response_body {
        p.insert("response_body".into(), b.clone());
    }
    if let Some(d) = row.error_detail.as_deref().filter(|d| !d.is_empty()) {
        p.insert("error_detail".into(), json!(sanitize_error_detail(d)));
    }
    Value::Object(p)
}

impl WorkspaceService {
    /// The shared logger (§2.4): writes the row, its `ACTIVITY_LOGGED` event and `extra` events
    /// in one transaction.
    pub async fn log_activity(
        &self,
        workspace: WorkspaceId,
        entry: ActivityEntry,
        extra: Vec<NewEvent>,
    ) -> Result<ActivityRecord, ActivityError> {
        let status = if entry.status.is_empty() {
            "ok".to_owned()
        } else {
            entry.status
        };
        let row = NewActivity {
            id: Uuid::new_v4(),
            workspace_id: workspace,
            activity_type: entry.activity_type,
            source_id: entry.source_id,
            target_id: entry.target_id,
            method: entry.method,
            summary: entry.summary,
            request_body: entry.request_body,
            response_body: entry.response_body,
            tool_trace: entry.tool_trace,
            duration_ms: entry.duration_ms,
            status,
            error_detail: entry.error_detail,
            created_at: berth_store::now(),
        };
        let mut events = vec![NewEvent {
            event_type: EventType::ActivityLogged,
            payload: activity_event_payload(&row),
        }];
        events.extend(extra);
        self.store
            .log_activity(row, events)
            .await
            .map_err(|e| match e {
                berth_store::Error::NotFound => ActivityError::WorkspaceNotFound,
                source => ActivityError::Store {
                    context: "failed to log activity",
                    source,
                },
            })
    }

    /// One workspace's activity rows (§2.5).
    pub async fn activity(
        &self,
        workspace: WorkspaceId,
        query: ActivityQuery,
    ) -> Result<Vec<ActivityRecord>, ActivityError> {
        self.store
            .activity(workspace, query)
            .await
            .map_err(|e| match e {
                berth_store::Error::NotFound => ActivityError::CursorNotFound,
                source => ActivityError::Store {
                    context: "query failed",
                    source,
                },
            })
    }

    /// Deletes activity rows older than `older_than` (all types, in bounded batches).
    pub async fn prune_activity(&self, older_than: Duration) -> Result<u64, berth_store::Error> {
        let keep = chrono::Duration::from_std(older_than).unwrap_or(chrono::Duration::MAX);
        let cutoff = berth_store::now()
            .checked_sub_signed(keep)
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
        self.store.prune_activity(cutoff).await
    }

    /// The activity retention loop: prunes at start and then every `retention.every` until
    /// `stop` turns true. The binary starts it next to [`WorkspaceService::run_sweeps`]; a failed
    /// run is logged and retried on the next tick, never fatal.
    pub async fn run_activity_retention(
        &self,
        retention: ActivityRetention,
        mut stop: watch::Receiver<bool>,
    ) {
        let every = retention.every.max(Duration::from_secs(1));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            match self.prune_activity(retention.keep).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(rows = n, "activity retention pruned rows"),
                Err(e) => tracing::error!(error = %e, "activity retention sweep failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_detail_is_cut_on_a_boundary_and_redacted() {
        let long = "é".repeat(3000);
        let s = sanitize_error_detail(&long);
        assert!(s.ends_with("…[truncated]"));
        assert!(s.len() <= EVENT_ERROR_DETAIL_CAP + "…[truncated]".len());
        let s = sanitize_error_detail(
            "upstream said Authorization: Bearer abcdefghijklmnopqrstuvwxyz012345",
        );
        assert!(!s.contains("abcdefghijklmnopqrstuvwxyz012345"), "{s}");
        assert_eq!(sanitize_error_detail("plain"), "plain");
    }

    #[test]
    fn event_payload_has_the_reference_keys_and_the_cursor() {
        let row = NewActivity {
            id: Uuid::new_v4(),
            workspace_id: WorkspaceId::new_v4(),
            activity_type: "agent_log".into(),
            source_id: None,
            target_id: None,
            method: None,
            summary: Some("s".into()),
            request_body: Some(json!({"a": 1})),
            response_body: None,
            tool_trace: None,
            duration_ms: None,
            status: "ok".into(),
            error_detail: Some(String::new()),
            created_at: berth_store::now(),
        };
        let p = activity_event_payload(&row);
        let mut keys: Vec<&str> = p.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "activity_type",
                "created_at",
                "duration_ms",
                "id",
                "method",
                "request_body",
                "source_id",
                "status",
                "summary",
                "target_id"
            ]
        );
        assert_eq!(p["id"], json!(row.id.to_string()));
    }
}
