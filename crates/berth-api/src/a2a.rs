//! The A2A proxy's own bodies (REFERENCE-2.md §4). The proxied JSON-RPC request and the
//! agent's answer are passed through as they are (free-form JSON).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

/// 200 of a message to a poll-mode agent: it waits in the inbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Queued {
    /// `poll`.
    pub delivery_mode: String,
    /// The JSON-RPC method.
    pub method: String,
    /// `queued`.
    pub status: String,
}

/// One item of the busy queue (`GET /workspaces/{id}/a2a/queue/{queue_id}`, and each element of
/// `GET /workspaces/{id}/a2a/queue`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QueueItem {
    /// Delivery attempts.
    pub attempts: i64,
    /// When it was delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
    /// When it was handed to the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatched_at: Option<DateTime<Utc>>,
    /// When it was queued.
    pub enqueued_at: DateTime<Utc>,
    /// When it is dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// The last delivery error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The JSON-RPC method of the message (berth; absent when it had none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// In the listing, a `queued` item's place in the delivery order (1 = delivered next).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u32>,
    /// Priority.
    pub priority: i64,
    /// The item.
    pub queue_id: String,
    /// The agent's answer once `completed` (its JSON, or the raw text as a string); only on the
    /// single item, never in the listing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Value>)]
    pub response_body: Option<Value>,
    /// `queued`, `dispatched`, `completed`, `failed`, `dropped`.
    pub status: String,
    /// The target.
    pub workspace_id: String,
}

/// 202 of a message to a busy agent: it waits in the busy queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Enqueued {
    /// Human text.
    pub message: String,
    /// Queue depth after the enqueue.
    pub queue_depth: i64,
    /// Where to poll the item.
    pub queue_id: String,
    /// Always `true`.
    pub queued: bool,
}

/// Query of `GET /workspaces/{id}/a2a/queue`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QueueListQuery {
    /// Items at most: 1–500 (default 50; more is read as 500).
    pub limit: Option<String>,
}

/// Query of `POST /admin/a2a-queue/drop-stale`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DropStaleQuery {
    /// Age in minutes (default 60, at most ten years).
    pub max_age_minutes: Option<String>,
    /// Only this workspace's queue.
    pub workspace_id: Option<String>,
}

/// 200 of `POST /admin/a2a-queue/drop-stale`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Dropped {
    /// Items dropped.
    pub dropped: u64,
}
