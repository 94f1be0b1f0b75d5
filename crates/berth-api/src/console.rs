//! The web console's session (`/console/session`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The body of `POST /console/session`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SignIn {
    /// The admin token or a workspace token.
    pub token: String,
}

/// A console session (`GET`/`POST /console/session`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConsoleSession {
    /// `admin` or `workspace`.
    pub principal: String,
    /// The workspace of a workspace token's session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<String>,
    /// Send it as `X-CSRF-Token` with every state-changing request.
    pub csrf: String,
    /// When the session ends (RFC 3339).
    pub expires_at: String,
}
