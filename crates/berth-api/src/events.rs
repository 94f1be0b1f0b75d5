//! The event log (REFERENCE.md §8).

use berth_domain::WorkspaceId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// Query of `GET /events` and `GET /events/{workspace_id}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Sequence id: page forward from it (oldest first); without it the newest first.
    pub after: Option<String>,
    /// 1–1000 (default 100).
    pub limit: Option<String>,
}

/// One recorded event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
    /// The event name (`WORKSPACE_ONLINE`, …).
    pub event_type: String,
    /// The event's id.
    pub id: Uuid,
    /// The event's payload (its shape depends on `event_type`).
    #[schema(value_type = Object)]
    pub payload: Value,
    /// Position in the log (the SSE `id:` and `?after=` cursor).
    pub seq: i64,
    /// The workspace it is about.
    pub workspace_id: Option<WorkspaceId>,
}

/// The `data:` of one SSE frame and one WebSocket message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LiveFrame {
    /// The event's payload.
    #[schema(value_type = Object)]
    pub data: Value,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    /// The event name.
    #[serde(rename = "type")]
    pub event_type: String,
}

/// One WebSocket text message of `GET /ws` (REFERENCE.md §8.2, plus `seq`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WsFrame {
    /// The event name.
    pub event: String,
    /// The event's payload.
    #[schema(value_type = Object)]
    pub payload: Value,
    /// Position in the log.
    pub seq: i64,
    /// RFC 3339.
    pub timestamp: String,
    /// The workspace it is about.
    pub workspace_id: Option<WorkspaceId>,
}

/// Query of the live streams (`GET /ws`, `GET /workspaces/{id}/events/stream`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// The credential, for browsers (`EventSource` and `WebSocket` cannot set headers); not
    /// together with `Authorization`.
    pub token: Option<String>,
}
