//! Workspaces: create, list, get, and the lifecycle actions (REFERENCE.md §2.1–2.11, §2.19).

use std::borrow::Cow;
use std::collections::BTreeMap;

use berth_domain::WorkspaceId;
use berth_domain::compute::Compute;
use berth_domain::status::WorkspaceStatus;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::nullable;

/// The canvas position of a new workspace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct Canvas {
    /// Horizontal position.
    #[schema(nullable)]
    #[serde(deserialize_with = "nullable")]
    pub x: f64,
    /// Vertical position.
    #[schema(nullable)]
    #[serde(deserialize_with = "nullable")]
    pub y: f64,
}

/// One `initial_memories` entry of a create.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct InitialMemory {
    /// Memory text.
    #[schema(nullable)]
    #[serde(deserialize_with = "nullable")]
    pub content: String,
    /// `LOCAL` / `TEAM` / `GLOBAL` (case-insensitive; empty = `LOCAL`).
    #[schema(nullable)]
    #[serde(deserialize_with = "nullable")]
    pub scope: String,
}

/// The body of `POST /workspaces` (the reference's `CreateWorkspacePayload`). `null` reads as
/// the zero value and unknown fields are ignored, as the reference's Go binding does. Only
/// `name` is required by the rules (an empty name is refused).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct CreateWorkspace {
    /// Display name (required).
    #[schema(nullable)]
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    /// Role ("" = none).
    #[schema(nullable)]
    #[serde(deserialize_with = "nullable")]
    pub role: String,
    /// Template directory name under the templates root.
    #[schema(nullable)]
    #[serde(deserialize_with = "nullable")]
    pub template: String,
    /// Tier 1–4 (0 = the default).
    #[schema(nullable)]
    #[serde(deserialize_with = "nullable")]
    pub tier: i64,
    /// Model id.
    #[schema(nullable)]
    #[serde(deserialize_with = "nullable")]
    pub model: String,
    /// Runtime name.
    #[schema(nullable)]
    #[serde(deserialize_with = "nullable")]
    pub runtime: String,
    /// An external (bring-your-own-compute) agent.
    #[schema(nullable)]
    #[serde(deserialize_with = "nullable")]
    pub external: bool,
    /// The agent's URL (external workspaces).
    #[schema(nullable)]
    #[serde(deserialize_with = "nullable")]
    pub url: String,
    /// `push` or `poll`.
    #[schema(nullable)]
    #[serde(deserialize_with = "nullable")]
    pub delivery_mode: String,
    /// Host directory mounted into the workspace.
    #[schema(nullable)]
    #[serde(deserialize_with = "nullable")]
    pub workspace_dir: String,
    /// `none`, `read_only` or `read_write`.
    #[schema(nullable)]
    #[serde(deserialize_with = "nullable")]
    pub workspace_access: String,
    /// The parent workspace.
    pub parent_id: Option<String>,
    /// Monthly budget in USD cents.
    pub budget_limit: Option<i64>,
    /// Secrets handed to the agent as environment.
    #[schema(nullable)]
    #[serde(deserialize_with = "nullable")]
    pub secrets: BTreeMap<String, String>,
    /// Concurrent A2A tasks the agent accepts.
    #[schema(nullable)]
    #[serde(deserialize_with = "nullable")]
    pub max_concurrent_tasks: i64,
    /// Compute settings (control-plane backend).
    #[schema(nullable)]
    #[serde(deserialize_with = "nullable")]
    pub compute: Compute,
    /// Canvas position.
    #[schema(nullable)]
    #[serde(deserialize_with = "nullable")]
    pub canvas: Canvas,
    /// Memories seeded after the create.
    #[schema(nullable)]
    #[serde(deserialize_with = "nullable")]
    pub initial_memories: Vec<InitialMemory>,
}

/// The 201 body of `POST /workspaces` (the reference's three shapes: container, external with
/// a URL, external without one, which carries the connection payload with the once-only token).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreatedWorkspace {
    /// The new workspace.
    pub id: WorkspaceId,
    /// Present (`true`) for external workspaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<bool>,
    /// Status at commit.
    pub status: WorkspaceStatus,
    /// Access mode (container workspaces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_access: Option<String>,
    /// Connection payload with the once-only token (external without URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<crate::tokens::Connection>,
}

/// Query of `GET /workspaces`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListWorkspacesQuery {
    /// Page size, 1–1000 (berth); without it the whole list.
    pub limit: Option<String>,
    /// The `X-Next-Cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Query of `GET /workspaces/{id}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GetWorkspaceQuery {
    /// `true`: answer a removed workspace with 200 instead of 410.
    pub include_removed: Option<String>,
}

/// The List/Get projection of a workspace (REFERENCE.md §2.2), plus berth's `failure_code`.
/// The server borrows from its row (`Workspace<'_>`); a client reads `Workspace<'static>`.
/// Fields are in alphabetical order, the order the reference's sorted map wrote them in. The
/// list-only fields (`budget_limit`, `current_task`, `last_sample_error`, `monthly_spend`,
/// `workspace_dir`) are present in `GET /workspaces` and absent from `GET /workspaces/{id}`,
/// which has `last_outbound_at` instead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Workspace<'a> {
    /// A2A tasks in flight, from the last heartbeat.
    pub active_tasks: i64,
    /// The agent card the agent registered (free-form JSON).
    #[schema(value_type = Option<Object>)]
    pub agent_card: Option<Cow<'a, Value>>,
    /// Whether the workspace may broadcast to its organisation.
    pub broadcast_enabled: bool,
    /// Monthly budget in USD cents (list only; `null` = none).
    #[serde(
        default,
        deserialize_with = "crate::double_option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<i64>)]
    pub budget_limit: Option<Option<i64>>,
    /// Collapsed on the canvas.
    pub collapsed: bool,
    /// Stored compute settings.
    #[schema(value_type = Object)]
    pub compute: Cow<'a, Value>,
    /// The agent's current task (list only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub current_task: Option<Cow<'a, str>>,
    /// Machine-readable reason of a `failed` status.
    #[schema(value_type = Option<String>)]
    pub failure_code: Option<Cow<'a, str>>,
    /// The workspace.
    pub id: WorkspaceId,
    /// Error rate from the last heartbeat.
    pub last_error_rate: f64,
    /// berth: the agent's last heartbeat (or registration); absent until it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    /// Last A2A message sent by this workspace (get only).
    #[serde(
        default,
        deserialize_with = "crate::double_option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub last_outbound_at: Option<Option<DateTime<Utc>>>,
    /// Last sample error from a heartbeat (list only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub last_sample_error: Option<Cow<'a, str>>,
    /// Concurrent A2A tasks the agent accepts.
    pub max_concurrent_tasks: i64,
    /// Spend this month in USD cents (list only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_spend: Option<i64>,
    /// Display name.
    #[schema(value_type = String)]
    pub name: Cow<'a, str>,
    /// The parent workspace.
    pub parent_id: Option<WorkspaceId>,
    /// Provisioning deadline in ms (while provisioning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provision_timeout_ms: Option<i64>,
    /// Role.
    #[schema(value_type = Option<String>)]
    pub role: Option<Cow<'a, str>>,
    /// Runtime name.
    #[schema(value_type = String)]
    pub runtime: Cow<'a, str>,
    /// Status.
    pub status: WorkspaceStatus,
    /// Whether the agent may message its user.
    pub talk_to_user_enabled: bool,
    /// Tier 1–4.
    pub tier: i64,
    /// Agent uptime from the last heartbeat.
    pub uptime_seconds: i64,
    /// The agent's URL (`""` when none).
    #[schema(value_type = String)]
    pub url: Cow<'a, str>,
    /// Host directory (list only; `null` = none).
    #[serde(
        default,
        deserialize_with = "crate::double_option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>)]
    pub workspace_dir: Option<Option<Cow<'a, str>>>,
    /// Canvas x.
    pub x: f64,
    /// Canvas y.
    pub y: f64,
}

/// `PATCH /workspaces/{id}` body: the fields to change. Name, role and layout for a workspace
/// token; tier, runtime, parent, directory and the hibernation delay only with the admin
/// credential (403 otherwise). Read as a JSON object; each field is checked by the core.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UpdateWorkspace {
    /// New name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// New role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Canvas x.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<f64>,
    /// Canvas y.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<f64>,
    /// Collapsed on the canvas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collapsed: Option<bool>,
    /// Tier (admin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<i64>,
    /// Runtime (admin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// Parent (admin; `null` detaches).
    #[serde(
        default,
        deserialize_with = "crate::double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub parent_id: Option<Option<String>>,
    /// Host directory (admin).
    #[serde(
        default,
        deserialize_with = "crate::double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub workspace_dir: Option<Option<String>>,
    /// Idle minutes before the workspace hibernates (admin; `null` = never).
    #[serde(
        default,
        deserialize_with = "crate::double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub hibernation_idle_minutes: Option<Option<i64>>,
}

/// 200 of `PATCH /workspaces/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Updated {
    /// `true` when a changed field takes effect at the next restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needs_restart: Option<bool>,
    /// `updated`.
    pub status: String,
}

/// Query of `DELETE /workspaces/{id}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// `true`: also delete the children.
    pub confirm: Option<String>,
    /// `true`: remove containers, volumes and rows for good.
    pub purge: Option<String>,
}

/// 200 of `DELETE /workspaces/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Deleted {
    /// Descendants removed with it.
    pub cascade_deleted: i64,
    /// `removed` or `purged`.
    pub status: String,
}

/// `GET /workspaces/{id}/state` (200 for a live workspace, 404 with `deleted: true` otherwise).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WorkspaceStateBody {
    /// Whether the row is removed or gone.
    pub deleted: bool,
    /// Whether the status is `paused` (live workspaces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    /// The status (absent for a row that does not exist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<WorkspaceStatus>,
    /// The workspace.
    pub workspace_id: WorkspaceId,
}

/// The optional body of `POST /workspaces/{id}/restart`; a body that does not parse is ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RestartRequest {
    /// Re-provision from this template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
}

/// 200 of `POST /workspaces/{id}/restart`: `provisioning` (with `config_dir` and
/// `reset_session`) or `noop` (with `runtime` and `message`, external runtimes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Restarted {
    /// The config directory handed to the agent (`provisioning`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_dir: Option<String>,
    /// Why nothing happened (`noop`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Always `false` (`provisioning`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_session: Option<bool>,
    /// The runtime (`noop`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// `provisioning` or `noop`.
    pub status: String,
}

/// 200 of `POST /workspaces/{id}/pause`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Paused {
    /// Workspaces paused (the workspace and its descendants).
    pub paused_count: i64,
    /// `paused`.
    pub status: String,
}

/// 200 of `POST /workspaces/{id}/resume`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Resumed {
    /// Workspaces resumed.
    pub resumed_count: i64,
    /// `provisioning`.
    pub status: String,
}

/// Query of `POST /workspaces/{id}/hibernate`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HibernateQuery {
    /// `true`: hibernate even with active tasks.
    pub force: Option<String>,
}

/// `PATCH /workspaces/{id}/abilities` body. (No `serde(default)`: a JSON array of the wrong
/// length does not bind, as in the reference.)
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Abilities {
    /// Allow broadcasts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broadcast_enabled: Option<bool>,
    /// Allow messages to the user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub talk_to_user_enabled: Option<bool>,
}

/// `GET`/`PATCH /workspaces/{id}/budget` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Budget {
    /// The limit in USD cents (`null` = none).
    pub budget_limit: Option<i64>,
    /// What is left this month (`null` without a limit).
    pub budget_remaining: Option<i64>,
    /// Spend this month in USD cents.
    pub monthly_spend: i64,
}

/// `PATCH /workspaces/{id}/budget` body: `budget_limit` is required; `null` clears it; a
/// fractional number is truncated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BudgetPatch {
    /// USD cents, or `null`.
    #[schema(required = true)]
    pub budget_limit: Option<f64>,
}

/// `GET /workspaces/{id}/config`: `{"data": {…}}` (free-form).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ConfigBody {
    /// The stored config object.
    #[schema(value_type = Object)]
    pub data: Value,
}

/// `POST /admin/workspaces/{id}/bootstrap-failed` body (empty body = both empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct BootstrapFailed {
    /// What failed.
    #[schema(nullable)]
    #[serde(deserialize_with = "nullable")]
    pub error: String,
    /// The end of the bootstrap log.
    #[schema(nullable)]
    #[serde(deserialize_with = "nullable")]
    pub log_tail: String,
}

/// 200 of `POST /admin/workspaces/{id}/bootstrap-failed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BootstrapFailedAck {
    /// `true` when the workspace was not in a state to fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_change: Option<bool>,
    /// Always `true`.
    pub ok: bool,
}

/// 200 of `GET /workspaces/{id}/console`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Console {
    /// The machine's console output.
    pub output: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_borrowed_workspace_reads_back_owned_with_null_and_absent_kept_apart() {
        let card = serde_json::json!({"name": "agent"});
        let compute = serde_json::json!({});
        let listed = Workspace {
            active_tasks: 1,
            agent_card: Some(Cow::Borrowed(&card)),
            broadcast_enabled: false,
            budget_limit: Some(None),
            collapsed: false,
            compute: Cow::Borrowed(&compute),
            current_task: Some(Cow::Borrowed("")),
            failure_code: None,
            id: WorkspaceId::parse("12345678-9abc-def0-1234-56789abcdef0").expect("id"),
            last_error_rate: 0.0,
            last_heartbeat_at: None,
            last_outbound_at: None,
            last_sample_error: Some(Cow::Borrowed("")),
            max_concurrent_tasks: 1,
            monthly_spend: Some(0),
            name: Cow::Borrowed("w"),
            parent_id: None,
            provision_timeout_ms: None,
            role: None,
            runtime: Cow::Borrowed("echo"),
            status: WorkspaceStatus::Online,
            talk_to_user_enabled: true,
            tier: 2,
            uptime_seconds: 3,
            url: Cow::Borrowed(""),
            workspace_dir: Some(None),
            x: 0.0,
            y: 0.0,
        };
        let text = serde_json::to_string(&listed).expect("serialise");
        assert!(text.contains(r#""budget_limit":null"#), "{text}");
        assert!(!text.contains("last_outbound_at"), "{text}");
        let owned: Workspace<'static> = serde_json::from_str(&text).expect("deserialise");
        assert_eq!(owned, listed);
        assert_eq!(owned.budget_limit, Some(None));
        assert_eq!(owned.workspace_dir, Some(None));
        assert_eq!(owned.last_outbound_at, None);
    }

    #[test]
    fn a_create_reads_null_as_the_zero_value_and_ignores_unknown_fields() {
        let p: CreateWorkspace = serde_json::from_str(
            r#"{"name":"x","tier":null,"secrets":null,"canvas":{"x":null},"unknown":1}"#,
        )
        .expect("binds");
        assert_eq!(p.name, "x");
        assert_eq!(p.tier, 0);
        assert!(p.secrets.is_empty());
        assert_eq!(p.canvas, Canvas::default());
    }

    #[test]
    fn abilities_do_not_bind_from_a_short_array() {
        assert!(serde_json::from_str::<Abilities>("[true]").is_err());
        assert!(serde_json::from_str::<Abilities>("{}").is_ok());
    }
}
