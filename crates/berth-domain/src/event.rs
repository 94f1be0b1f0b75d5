//! Event names of the wire contract (REFERENCE.md §8.1).

use std::fmt;

use serde::Serialize;

/// The lifecycle and agent events berth records and streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventType {
    /// A workspace started provisioning (create, restart, resume, wake).
    WorkspaceProvisioning,
    /// Provisioning failed.
    WorkspaceProvisionFailed,
    /// A workspace became reachable.
    WorkspaceOnline,
    /// A workspace lost liveness.
    WorkspaceOffline,
    /// A workspace reported itself unhealthy.
    WorkspaceDegraded,
    /// A workspace was hibernated.
    WorkspaceHibernated,
    /// A workspace was paused.
    WorkspacePaused,
    /// A workspace was removed.
    WorkspaceRemoved,
    /// An external workspace waits for its agent.
    WorkspaceAwaitingAgent,
    /// A heartbeat arrived (broadcast only).
    WorkspaceHeartbeat,
    /// An agent card changed.
    AgentCardUpdated,
    /// The current task changed (broadcast only).
    TaskUpdated,
    /// External credentials were rotated.
    ExternalCredentialsRotated,
    /// An activity row was written (REFERENCE-2.md §2.4).
    ActivityLogged,
    /// A canvas A2A call got its agent's answer (REFERENCE-2.md §4.11).
    #[serde(rename = "A2A_RESPONSE")]
    A2aResponse,
    /// An agent sent its user a message (`POST /workspaces/{id}/notify`, REFERENCE-2.md §2.6).
    AgentMessage,
    /// A workspace broadcast a message to its organisation (`POST /workspaces/{id}/broadcast`,
    /// REFERENCE.md §2.22); recorded once per recipient, against the recipient.
    BroadcastMessage,
}

impl EventType {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WorkspaceProvisioning => "WORKSPACE_PROVISIONING",
            Self::WorkspaceProvisionFailed => "WORKSPACE_PROVISION_FAILED",
            Self::WorkspaceOnline => "WORKSPACE_ONLINE",
            Self::WorkspaceOffline => "WORKSPACE_OFFLINE",
            Self::WorkspaceDegraded => "WORKSPACE_DEGRADED",
            Self::WorkspaceHibernated => "WORKSPACE_HIBERNATED",
            Self::WorkspacePaused => "WORKSPACE_PAUSED",
            Self::WorkspaceRemoved => "WORKSPACE_REMOVED",
            Self::WorkspaceAwaitingAgent => "WORKSPACE_AWAITING_AGENT",
            Self::WorkspaceHeartbeat => "WORKSPACE_HEARTBEAT",
            Self::AgentCardUpdated => "AGENT_CARD_UPDATED",
            Self::TaskUpdated => "TASK_UPDATED",
            Self::ExternalCredentialsRotated => "EXTERNAL_CREDENTIALS_ROTATED",
            Self::ActivityLogged => "ACTIVITY_LOGGED",
            Self::A2aResponse => "A2A_RESPONSE",
            Self::AgentMessage => "AGENT_MESSAGE",
            Self::BroadcastMessage => "BROADCAST_MESSAGE",
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_matches_as_str() {
        for e in [
            EventType::WorkspaceProvisioning,
            EventType::WorkspaceProvisionFailed,
            EventType::WorkspaceAwaitingAgent,
            EventType::ExternalCredentialsRotated,
            EventType::A2aResponse,
            EventType::AgentMessage,
            EventType::BroadcastMessage,
        ] {
            assert_eq!(
                serde_json::to_string(&e).unwrap(),
                format!("\"{}\"", e.as_str())
            );
        }
    }
}
