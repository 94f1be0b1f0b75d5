//! Workspace tokens (REFERENCE.md §2.16) and external credentials (§2.15).

use berth_domain::WorkspaceId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// Query of `GET /workspaces/{id}/tokens`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TokensQuery {
    /// 1–200 (default 50).
    pub limit: Option<String>,
    /// Rows to skip (default 0).
    pub offset: Option<String>,
}

/// One live token (never its value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenInfo {
    /// When it was minted.
    pub created_at: DateTime<Utc>,
    /// The token's id (for revocation).
    pub id: Uuid,
    /// When it was last presented.
    pub last_used_at: Option<DateTime<Utc>>,
    /// The first characters of the token.
    pub prefix: String,
}

/// 200 of `GET /workspaces/{id}/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenList {
    /// `tokens.len()`.
    pub count: usize,
    /// The page.
    pub tokens: Vec<TokenInfo>,
}

/// A freshly minted token: shown once. `message` is absent from the `--dev` test token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MintedToken {
    /// The bearer token.
    pub auth_token: String,
    /// `Save this token now — it cannot be retrieved again.`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The workspace it authenticates.
    pub workspace_id: WorkspaceId,
}

/// The external connection payload (REFERENCE.md §9): where and how an external agent
/// connects, with ready-made snippets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Connection {
    /// The token (plaintext once, `""` when shown again).
    pub auth_token: String,
    /// Claude Code channel snippet.
    pub claude_code_channel_snippet: String,
    /// Codex snippet.
    pub codex_snippet: String,
    /// `curl` register command.
    pub curl_register_template: String,
    /// The heartbeat URL.
    pub heartbeat_endpoint: String,
    /// Hermes channel snippet.
    pub hermes_channel_snippet: String,
    /// Kimi snippet.
    pub kimi_snippet: String,
    /// OpenClaw snippet.
    pub openclaw_snippet: String,
    /// The platform URL (no trailing `/`).
    pub platform_url: String,
    /// Python snippet.
    pub python_snippet: String,
    /// The register URL.
    pub registry_endpoint: String,
    /// Universal MCP snippet.
    pub universal_mcp_snippet: String,
    /// The workspace.
    pub workspace_id: String,
}

/// 200 of `GET …/external/connection` and `POST …/external/rotate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConnectionBody {
    /// The payload.
    pub connection: Connection,
}
