//! The error bodies: `{"error": "…"}` and the variants that carry more.

use std::borrow::Cow;

use berth_domain::WorkspaceId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// Every error answer of the API: `{"error": "<message>"}` plus, on some routes, fields that
/// say more. Each extra field is optional and named here, so a client reads one type and an
/// undocumented field fails the server's own suite.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The human-readable message (the reference's text).
    pub error: Cow<'static, str>,
    /// A2A tasks in flight that refused the action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_tasks: Option<i64>,
    /// Whether the A2A target is busy (503/429 of the A2A proxy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy: Option<bool>,
    /// Machine-readable reason (`MODEL_REQUIRED`, `RUNTIME_UNRESOLVED`,
    /// `IDEMPOTENCY_KEY_REUSED`, `TEMPLATE_INVALID`, `BUNDLE_TOO_DEEP`, `RUNTIME_UNKNOWN`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Whether a pushed A2A message reached the agent before the failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_confirmed: Option<bool>,
    /// Secrets that could not be opened (500 of the secret routes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_keys: Option<Vec<String>>,
    /// The JSON path of the offending field (a NUL character in client text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What to do instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// The id the error is about (a template that exists already).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The key id a secret is sealed with that this server does not have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The last sequence id written before an event stream was cut off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event_id: Option<i64>,
    /// The offending path (bundle and template files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Queued A2A messages of a full queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<i64>,
    /// Whether the A2A queue is full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_full: Option<bool>,
    /// Rows removed before a delete failed to stop some agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed_count: Option<i64>,
    /// Whether the target is being restarted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarting: Option<bool>,
    /// Seconds to wait before retrying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<i64>,
    /// The runtime of a workspace the action does not apply to, or an unknown runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// The workspace's status (or an upstream HTTP status code) that refused the action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Value>)]
    pub status: Option<Value>,
    /// Agents that could not be stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_failures: Option<i64>,
    /// The template a create refusal is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// The timeout an upstream call ran into, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i64>,
    /// Whether the target is waking from hibernation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waking: Option<bool>,
    /// The bundle's workspace a refused import is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
}

impl ErrorBody {
    /// `{"error": message}`.
    pub fn new(message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            error: message.into(),
            ..Self::default()
        }
    }
}

/// 410 of `GET /workspaces/{id}` for a removed workspace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkspaceGone {
    /// `workspace removed`.
    pub error: String,
    /// What to do instead.
    pub hint: String,
    /// The workspace.
    pub id: WorkspaceId,
    /// When it was removed.
    pub removed_at: DateTime<Utc>,
}

/// 409 of `DELETE /workspaces/{id}` without `?confirm=true` on a workspace with children.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ConfirmationRequired {
    /// The children that a confirmed delete removes too.
    pub children: Vec<ChildRef>,
    /// `children.len()`.
    pub children_count: usize,
    /// What to do.
    pub message: String,
    /// `confirmation_required`.
    pub status: String,
}

/// One child of [`ConfirmationRequired`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChildRef {
    /// The child.
    pub id: WorkspaceId,
    /// Its name.
    pub name: String,
}
