//! `/registry/*`: what agents call (register, heartbeat, card, discovery, peers, access).

use std::collections::HashMap;

use berth_domain::WorkspaceId;
use berth_domain::status::WorkspaceStatus;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::nullable;

/// `POST /registry/register` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Register {
    /// The workspace.
    pub id: String,
    /// Where the agent listens (`null` = `""`).
    #[schema(nullable)]
    #[serde(default, deserialize_with = "nullable")]
    pub url: String,
    /// The A2A agent card (free-form JSON).
    #[schema(value_type = Object)]
    pub agent_card: Value,
    /// `push` or `poll`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_mode: Option<String>,
}

/// 200 of `POST /registry/register`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Registered {
    /// A token minted for a token-less (`--dev`) bootstrap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_token: Option<String>,
    /// The delivery mode in force.
    pub delivery_mode: String,
    /// The secret the platform presents to the agent.
    pub platform_inbound_secret: String,
    /// `registered`.
    pub status: String,
}

/// `runtime_metadata` of a heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct RuntimeMetadata {
    /// Capability flags (`status_mgmt`: the agent manages its own status).
    #[schema(nullable)]
    #[serde(deserialize_with = "nullable")]
    pub capabilities: HashMap<String, bool>,
}

/// `POST /registry/heartbeat` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Heartbeat {
    /// The workspace.
    pub workspace_id: String,
    /// Recent error rate.
    #[schema(nullable)]
    #[serde(default, deserialize_with = "nullable")]
    pub error_rate: f64,
    /// A recent error.
    #[schema(nullable)]
    #[serde(default, deserialize_with = "nullable")]
    pub sample_error: String,
    /// Tasks in flight.
    #[schema(nullable)]
    #[serde(default, deserialize_with = "nullable")]
    pub active_tasks: i64,
    /// Agent uptime.
    #[schema(nullable)]
    #[serde(default, deserialize_with = "nullable")]
    pub uptime_seconds: i64,
    /// What it is doing.
    #[schema(nullable)]
    #[serde(default, deserialize_with = "nullable")]
    pub current_task: String,
    /// Spend this month in USD cents.
    #[schema(nullable)]
    #[serde(default, deserialize_with = "nullable")]
    pub monthly_spend: i64,
    /// Runtime-reported state.
    #[schema(nullable)]
    #[serde(default, deserialize_with = "nullable")]
    pub runtime_state: String,
    /// Capabilities.
    #[schema(nullable)]
    #[serde(default, deserialize_with = "nullable")]
    pub runtime_metadata: RuntimeMetadata,
}

/// 200 of `POST /registry/heartbeat`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatAck {
    /// The secret the platform presents to the agent.
    pub platform_inbound_secret: String,
    /// `ok`.
    pub status: String,
}

/// `POST /registry/update-card` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UpdateCard {
    /// The workspace.
    pub workspace_id: String,
    /// The new card (free-form JSON).
    #[schema(value_type = Object)]
    pub agent_card: Value,
}

/// `POST /registry/check-access` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CheckAccess {
    /// Who would call.
    pub caller_id: String,
    /// Whom.
    pub target_id: String,
}

/// 200 of `POST /registry/check-access`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AccessDecision {
    /// Whether the hierarchy rule lets them communicate.
    pub allowed: bool,
}

/// 200 of `GET /registry/discover/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Discovered {
    /// The target.
    pub id: WorkspaceId,
    /// Its name.
    pub name: String,
    /// Its URL as the caller should use it.
    pub url: String,
}

/// Query of `GET /registry/{id}/peers`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PeersQuery {
    /// Filter on name or role.
    pub q: Option<String>,
}

/// One element of `GET /registry/{id}/peers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Peer {
    /// Tasks in flight.
    pub active_tasks: i64,
    /// Its agent card (free-form JSON).
    #[schema(value_type = Option<Object>)]
    pub agent_card: Option<Value>,
    /// The peer.
    pub id: WorkspaceId,
    /// Its name.
    pub name: String,
    /// Its parent.
    pub parent_id: Option<WorkspaceId>,
    /// Its role.
    pub role: Option<String>,
    /// Its status.
    pub status: WorkspaceStatus,
    /// Its tier.
    pub tier: i64,
    /// Its URL.
    pub url: String,
}
