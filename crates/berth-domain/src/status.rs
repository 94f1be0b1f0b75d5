//! Workspace statuses and the one transition table every status writer goes through.
//!
//! DECISIONS.md §2.10: every status change is a compare-and-set. The store turns a [`Transition`]
//! into `UPDATE … SET status = to WHERE id = $1 AND status IN (from…)` and records the event only
//! when a row changed. The table here is the single place that says which statuses a transition
//! may leave from; it fixes the reference's unguarded writers (REFERENCE.md §12 #44, #46, #49, #50).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::event::EventType;

/// The status values of the wire contract (REFERENCE.md §1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum WorkspaceStatus {
    /// A container or machine is being created, or a restart cycle is running.
    Provisioning,
    /// The agent registered or heartbeats healthily.
    Online,
    /// The agent stopped heartbeating or its container died.
    Offline,
    /// Alive but unhealthy.
    Degraded,
    /// Provisioning failed; the reason is kept with the row.
    Failed,
    /// Soft-deleted tombstone.
    Removed,
    /// Stopped by an operator; resumable.
    Paused,
    /// Transient claim state while a workspace is stopped for idleness.
    Hibernating,
    /// Stopped for idleness; woken by the next message.
    Hibernated,
    /// External workspace whose agent has not connected (or went stale).
    AwaitingAgent,
}

impl WorkspaceStatus {
    /// Every status, in the order of the wire contract.
    pub const ALL: [WorkspaceStatus; 10] = [
        Self::Provisioning,
        Self::Online,
        Self::Offline,
        Self::Degraded,
        Self::Failed,
        Self::Removed,
        Self::Paused,
        Self::Hibernating,
        Self::Hibernated,
        Self::AwaitingAgent,
    ];

    /// The wire and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provisioning => "provisioning",
            Self::Online => "online",
            Self::Offline => "offline",
            Self::Degraded => "degraded",
            Self::Failed => "failed",
            Self::Removed => "removed",
            Self::Paused => "paused",
            Self::Hibernating => "hibernating",
            Self::Hibernated => "hibernated",
            Self::AwaitingAgent => "awaiting_agent",
        }
    }
}

/// A status string that is not one of the ten values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown workspace status {0:?}")]
pub struct UnknownStatus(pub String);

impl FromStr for WorkspaceStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

impl fmt::Display for WorkspaceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something that moves a workspace from one status to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transition {
    /// An external workspace was created with its agent URL: it is reachable at once.
    ExternalConnected,
    /// An external workspace was created without a URL: waiting for its agent to register.
    ExternalAwaiting,
    /// Provisioning failed (backend error, timeout, missing backend, crashed bootstrap).
    ProvisionFailed,
    /// The agent registered.
    AgentRegistered,
    /// A heartbeat arrived for a workspace that was not yet (or no longer) online.
    HeartbeatRecovered,
    /// The agent reported itself unhealthy.
    Degraded,
    /// A degraded agent reported itself healthy again.
    Recovered,
    /// A container workspace lost liveness or its container died.
    WentOffline,
    /// An external-like workspace's heartbeat went stale.
    AgentLost,
    /// A restart (manual, programmatic or by resume/wake) started provisioning again.
    Reprovision,
    /// An operator paused the workspace.
    Paused,
    /// An operator resumed a paused workspace.
    Resumed,
    /// An operator resumed a paused external-like workspace: it waits for its agent again.
    ResumedExternal,
    /// Hibernation claimed an idle workspace.
    HibernateStarted,
    /// The hibernating workspace was stopped.
    Hibernated,
    /// A hibernated workspace was woken by traffic.
    Woken,
    /// The workspace was deleted.
    Removed,
}

use WorkspaceStatus as S;

impl Transition {
    /// Every transition (for exhaustive tests and documentation).
    pub const ALL: [Transition; 17] = [
        Self::ExternalConnected,
        Self::ExternalAwaiting,
        Self::ProvisionFailed,
        Self::AgentRegistered,
        Self::HeartbeatRecovered,
        Self::Degraded,
        Self::Recovered,
        Self::WentOffline,
        Self::AgentLost,
        Self::Reprovision,
        Self::Paused,
        Self::Resumed,
        Self::ResumedExternal,
        Self::HibernateStarted,
        Self::Hibernated,
        Self::Woken,
        Self::Removed,
    ];

    /// The statuses this transition may leave from. Anything else is "no change".
    pub fn from(self) -> &'static [WorkspaceStatus] {
        match self {
            Self::ExternalConnected | Self::ExternalAwaiting => &[S::Provisioning],
            Self::ProvisionFailed => &[S::Provisioning],
            // Register never revives removed, paused, hibernated or failed rows (DECISIONS §2.5).
            Self::AgentRegistered => &[
                S::Provisioning,
                S::Online,
                S::Offline,
                S::Degraded,
                S::AwaitingAgent,
            ],
            Self::HeartbeatRecovered => &[S::Provisioning, S::Offline, S::AwaitingAgent],
            Self::Degraded => &[S::Online],
            Self::Recovered => &[S::Degraded],
            Self::WentOffline | Self::AgentLost => &[S::Online, S::Degraded],
            Self::Reprovision => &[
                S::Provisioning,
                S::Online,
                S::Offline,
                S::Degraded,
                S::Failed,
                S::AwaitingAgent,
            ],
            Self::Paused => &[
                S::Provisioning,
                S::Online,
                S::Offline,
                S::Degraded,
                S::Failed,
                S::Hibernating,
                S::Hibernated,
                S::AwaitingAgent,
            ],
            Self::Resumed | Self::ResumedExternal => &[S::Paused],
            Self::HibernateStarted => &[S::Online, S::Degraded],
            Self::Hibernated => &[S::Hibernating],
            Self::Woken => &[S::Hibernated],
            Self::Removed => &[
                S::Provisioning,
                S::Online,
                S::Offline,
                S::Degraded,
                S::Failed,
                S::Paused,
                S::Hibernating,
                S::Hibernated,
                S::AwaitingAgent,
            ],
        }
    }

    /// The status this transition leads to.
    pub fn to(self) -> WorkspaceStatus {
        match self {
            Self::ExternalConnected
            | Self::AgentRegistered
            | Self::HeartbeatRecovered
            | Self::Recovered => S::Online,
            Self::ExternalAwaiting | Self::AgentLost | Self::ResumedExternal => S::AwaitingAgent,
            Self::ProvisionFailed => S::Failed,
            Self::Degraded => S::Degraded,
            Self::WentOffline => S::Offline,
            Self::Reprovision | Self::Resumed | Self::Woken => S::Provisioning,
            Self::Paused => S::Paused,
            Self::HibernateStarted => S::Hibernating,
            Self::Hibernated => S::Hibernated,
            Self::Removed => S::Removed,
        }
    }

    /// The event recorded when the transition changes a row, if any.
    pub fn event(self) -> Option<EventType> {
        Some(match self {
            Self::ExternalConnected
            | Self::AgentRegistered
            | Self::HeartbeatRecovered
            | Self::Recovered => EventType::WorkspaceOnline,
            Self::ExternalAwaiting | Self::AgentLost | Self::ResumedExternal => {
                EventType::WorkspaceAwaitingAgent
            }
            Self::ProvisionFailed => EventType::WorkspaceProvisionFailed,
            Self::Degraded => EventType::WorkspaceDegraded,
            Self::WentOffline => EventType::WorkspaceOffline,
            Self::Reprovision | Self::Resumed | Self::Woken => EventType::WorkspaceProvisioning,
            Self::Paused => EventType::WorkspacePaused,
            Self::HibernateStarted => return None,
            Self::Hibernated => EventType::WorkspaceHibernated,
            Self::Removed => EventType::WorkspaceRemoved,
        })
    }

    /// The pure table: the status after applying `self` to `current`, or `None` for "no change".
    pub fn apply(self, current: WorkspaceStatus) -> Option<WorkspaceStatus> {
        self.from().contains(&current).then(|| self.to())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_strings_round_trip() {
        for st in WorkspaceStatus::ALL {
            assert_eq!(st.as_str().parse::<WorkspaceStatus>(), Ok(st));
            assert_eq!(serde_json::to_string(&st).unwrap(), format!("\"{st}\""));
        }
        assert!("ONLINE".parse::<WorkspaceStatus>().is_err());
    }

    #[test]
    fn removed_is_terminal_for_every_transition() {
        for t in Transition::ALL {
            assert_eq!(t.apply(S::Removed), None, "{t:?} must not leave removed");
        }
    }

    #[test]
    fn register_never_revives_stopped_or_failed_rows() {
        for st in [
            S::Paused,
            S::Hibernated,
            S::Hibernating,
            S::Failed,
            S::Removed,
        ] {
            assert_eq!(Transition::AgentRegistered.apply(st), None, "{st}");
            assert_eq!(Transition::HeartbeatRecovered.apply(st), None, "{st}");
        }
    }

    #[test]
    fn table_is_enumerated() {
        // Each (transition, status) pair either changes the row to `to()` or is "no change";
        // a transition never leaves from its own target (so a retry is a no-op).
        let mut changes = 0;
        for t in Transition::ALL {
            for st in WorkspaceStatus::ALL {
                match t.apply(st) {
                    Some(next) => {
                        assert_eq!(next, t.to());
                        assert_ne!(st, S::Removed);
                        changes += 1;
                    }
                    None => assert!(!t.from().contains(&st)),
                }
            }
            if t != Transition::AgentRegistered && t != Transition::Reprovision {
                assert!(!t.from().contains(&t.to()), "{t:?} is not idempotent");
            }
        }
        assert_eq!(
            changes,
            Transition::ALL
                .iter()
                .map(|t| t.from().len())
                .sum::<usize>()
        );
        assert_eq!(
            Transition::ProvisionFailed.apply(S::Provisioning),
            Some(S::Failed)
        );
        assert_eq!(Transition::ProvisionFailed.apply(S::Online), None);
        assert_eq!(
            Transition::ExternalAwaiting.apply(S::Provisioning),
            Some(S::AwaitingAgent)
        );
        assert_eq!(
            Transition::Woken.apply(S::Hibernated),
            Some(S::Provisioning)
        );
    }
}
