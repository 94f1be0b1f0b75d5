//! The activity log (REFERENCE-2.md §2), notify, broadcast and session search.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// Query of `GET /workspaces/{id}/activity`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ActivityQuery {
    /// Filter by activity type.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub activity_type: Option<String>,
    /// `agent` or `canvas`: who wrote the row.
    pub source: Option<String>,
    /// Only rows exchanged with this workspace (UUID).
    pub peer_id: Option<String>,
    /// Only rows of the last N seconds (at most 30 days).
    pub since_secs: Option<String>,
    /// Only rows written after this row id, in write order.
    pub since_id: Option<String>,
    /// Only rows before this RFC 3339 time.
    pub before_ts: Option<String>,
    /// 1–500 (default 100).
    pub limit: Option<String>,
    /// `peer_info`: add the sender's name, role, card URL and attachments.
    pub include: Option<String>,
}

/// One activity row. `request_body`, `response_body` and `tool_trace` are present only when
/// set; the peer fields only with `include=peer_info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ActivityEntry {
    /// `activity_type`: `a2a_send`, `a2a_receive`, `agent_log`, …
    pub activity_type: String,
    /// The sender's discovery URL (`include=peer_info`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_card_url: Option<String>,
    /// Files named in the request (`include=peer_info`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub attachments: Option<Vec<Value>>,
    /// RFC 3339.
    pub created_at: String,
    /// Duration of the call.
    pub duration_ms: Option<i64>,
    /// Error text.
    pub error_detail: Option<String>,
    /// The row's id.
    pub id: Uuid,
    /// A2A method.
    pub method: Option<String>,
    /// The sender's name (`include=peer_info`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_name: Option<String>,
    /// The sender's role (`include=peer_info`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_role: Option<String>,
    /// The request (free-form JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Value>)]
    pub request_body: Option<Value>,
    /// The response (free-form JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Value>)]
    pub response_body: Option<Value>,
    /// Sender workspace.
    pub source_id: Option<Uuid>,
    /// `ok`, `error`, …
    pub status: String,
    /// One-line summary.
    pub summary: Option<String>,
    /// Receiver workspace.
    pub target_id: Option<Uuid>,
    /// Tool calls (free-form JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Value>)]
    pub tool_trace: Option<Value>,
    /// The workspace.
    pub workspace_id: String,
}

/// `POST /workspaces/{id}/activity` body: `activity_type` is required; string fields read
/// `null` as empty; documents read `null` as absent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LogActivity {
    /// One of the activity types.
    pub activity_type: String,
    /// A2A method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Receiver (UUID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_id: Option<String>,
    /// Sender (must be the authenticated workspace when a token calls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_id: Option<String>,
    /// `ok`, `error`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Error text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_detail: Option<String>,
    /// Duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    /// Request document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Value>)]
    pub request_body: Option<Value>,
    /// Response document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Value>)]
    pub response_body: Option<Value>,
    /// Tool calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Value>)]
    pub tool_trace: Option<Value>,
}

/// One attachment of a notify.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Attachment {
    /// Where the file is.
    #[serde(default)]
    pub uri: String,
    /// File name.
    #[serde(default)]
    pub name: String,
    /// MIME type.
    #[serde(default, rename = "mimeType", skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    /// Size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
}

/// `POST /workspaces/{id}/notify` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Notify {
    /// The message to the user.
    pub message: String,
    /// Files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachments: Option<Vec<Attachment>>,
}

/// `POST /workspaces/{id}/broadcast` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Broadcast {
    /// The message to the organisation.
    pub message: String,
}

/// 200 of `POST /workspaces/{id}/broadcast`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BroadcastSent {
    /// Recipients.
    pub delivered: i64,
    /// `sent`.
    pub status: String,
}

/// Query of `GET /workspaces/{id}/session-search`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SessionSearchQuery {
    /// Search term.
    pub q: Option<String>,
    /// Page size.
    pub limit: Option<String>,
}

/// One session-search hit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SessionSearchItem {
    /// The summary.
    pub content: String,
    /// RFC 3339.
    pub created_at: String,
    /// The row id.
    pub id: Uuid,
    /// `activity`.
    pub kind: String,
    /// The activity type.
    pub label: String,
    /// A2A method (`""` when none).
    pub method: String,
    /// The request (free-form JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Value>)]
    pub request_body: Option<Value>,
    /// The response (free-form JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Value>)]
    pub response_body: Option<Value>,
    /// Status.
    pub status: String,
    /// The workspace.
    pub workspace_id: String,
}
