//! `POST /workspaces/{id}/broadcast` (REFERENCE.md §2.22): a workspace sends one message to
//! every other live workspace of its organisation (the tree under its root).
//!
//! Each recipient gets a `broadcast_receive` activity row (method `broadcast`, `source_id` the
//! sender, the whole message and the sender in `request_body`), written through the shared
//! logger with its `ACTIVITY_LOGGED` event and the `BROADCAST_MESSAGE` event in one
//! transaction, so a recipient's row exists exactly when its event does (the reference inserted
//! silently and broadcast the event without recording it, REFERENCE-2.md §9.2 #13). The sender
//! gets a `broadcast_sent` row last, naming who received it.
//!
//! berth's additions: the message must hold a non-blank character and be at most
//! [`BROADCAST_MESSAGE_MAX`] bytes (it is stored once per recipient); a recipient deleted
//! (purged) while the broadcast runs is skipped, not an error.

use berth_domain::WorkspaceId;
use berth_domain::access::MAX_ANCESTOR_WALK;
use berth_domain::event::EventType;
use berth_domain::status::WorkspaceStatus;
use berth_store::{NewEvent, Workspace};
use serde_json::json;

use crate::activity::{ActivityEntry, ActivityError};
use crate::service::WorkspaceService;

/// Largest message, in bytes (64 KiB): each recipient stores its own copy.
pub const BROADCAST_MESSAGE_MAX: usize = 64 * 1024;

/// How many characters of the message an activity row's summary keeps.
const SUMMARY_CHARS: usize = 120;

/// Why a broadcast was refused.
#[derive(Debug, thiserror::Error)]
pub enum BroadcastError {
    /// The message is empty or blank.
    #[error("message is required")]
    MessageRequired,
    /// The message is longer than [`BROADCAST_MESSAGE_MAX`] bytes.
    #[error("message must be at most {BROADCAST_MESSAGE_MAX} bytes")]
    MessageTooLong,
    /// No such workspace, or it was removed.
    #[error("workspace not found")]
    NotFound,
    /// The workspace may not broadcast (`broadcast_enabled = false`).
    #[error("broadcast_disabled")]
    Disabled,
    /// The store failed.
    #[error("internal error")]
    Store(#[source] berth_store::Error),
}

/// The summary of a broadcast row: the message cut to [`SUMMARY_CHARS`] characters, with `…`
/// when cut.
fn summary(message: &str) -> String {
    let mut s: String = message.chars().take(SUMMARY_CHARS).collect();
    if message.chars().nth(SUMMARY_CHARS).is_some() {
        s.push('…');
    }
    s
}

impl WorkspaceService {
    /// Sends `message` from workspace `id` to every other live workspace under its organisation's
    /// root (the root included); returns how many received it.
    #[tracing::instrument(skip_all, fields(workspace.id = %id))]
    pub async fn broadcast(&self, id: WorkspaceId, message: &str) -> Result<usize, BroadcastError> {
        if message.trim().is_empty() {
            return Err(BroadcastError::MessageRequired);
        }
        if message.len() > BROADCAST_MESSAGE_MAX {
            return Err(BroadcastError::MessageTooLong);
        }
        let sender = self
            .live_workspace(id)
            .await?
            .ok_or(BroadcastError::NotFound)?;
        if !sender.broadcast_enabled {
            return Err(BroadcastError::Disabled);
        }
        let root = self.org_root(&sender).await?;
        let mut recipients = Vec::new();
        if root != id {
            recipients.push(root);
        }
        recipients.extend(
            self.store
                .live_descendants(root)
                .await
                .map_err(BroadcastError::Store)?
                .into_iter()
                .filter(|r| *r != id),
        );

        let summary = summary(message);
        let payload = json!({
            "message": message,
            "sender_id": id.to_string(),
            "sender": sender.name,
        });
        let mut delivered: Vec<WorkspaceId> = Vec::with_capacity(recipients.len());
        for recipient in recipients {
            let entry = ActivityEntry {
                activity_type: "broadcast_receive".into(),
                method: Some("broadcast".into()),
                source_id: Some(id.into()),
                target_id: Some(recipient.into()),
                summary: Some(summary.clone()),
                request_body: Some(payload.clone()),
                ..ActivityEntry::default()
            };
            let event = NewEvent {
                event_type: EventType::BroadcastMessage,
                payload: payload.clone(),
            };
            match self.log_activity(recipient, entry, vec![event]).await {
                Ok(_) => delivered.push(recipient),
                // Deleted for good since it was listed: there is no one left to receive it.
                Err(ActivityError::WorkspaceNotFound | ActivityError::CursorNotFound) => {
                    tracing::debug!(recipient.id = %recipient, "broadcast recipient gone");
                }
                Err(ActivityError::Store { source, .. }) => {
                    return Err(BroadcastError::Store(source));
                }
            }
        }

        let entry = ActivityEntry {
            activity_type: "broadcast_sent".into(),
            method: Some("broadcast".into()),
            source_id: Some(id.into()),
            summary: Some(summary),
            request_body: Some(json!({"message": message})),
            response_body: Some(json!({
                "delivered": delivered.len(),
                "recipients": delivered.iter().map(ToString::to_string).collect::<Vec<_>>(),
            })),
            ..ActivityEntry::default()
        };
        self.log_activity(id, entry, Vec::new())
            .await
            .map_err(|e| match e {
                ActivityError::WorkspaceNotFound | ActivityError::CursorNotFound => {
                    BroadcastError::NotFound
                }
                ActivityError::Store { source, .. } => BroadcastError::Store(source),
            })?;
        tracing::info!(delivered = delivered.len(), "broadcast sent");
        Ok(delivered.len())
    }

    /// A workspace's row unless it is missing or removed.
    async fn live_workspace(&self, id: WorkspaceId) -> Result<Option<Workspace>, BroadcastError> {
        Ok(self
            .store
            .get_workspace(id)
            .await
            .map_err(BroadcastError::Store)?
            .filter(|w| w.status != WorkspaceStatus::Removed))
    }

    /// The root of `sender`'s organisation: its topmost live ancestor, or itself (the walk stops
    /// after [`MAX_ANCESTOR_WALK`] steps, like the access rule's).
    async fn org_root(&self, sender: &Workspace) -> Result<WorkspaceId, BroadcastError> {
        let mut root = sender.id;
        let mut parent = sender.parent_id;
        for _ in 0..MAX_ANCESTOR_WALK {
            let Some(p) = parent else { break };
            let Some(row) = self.live_workspace(p).await? else {
                break;
            };
            root = row.id;
            parent = row.parent_id;
        }
        Ok(root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_are_cut_on_characters() {
        assert_eq!(summary("hello"), "hello");
        let exact = "é".repeat(SUMMARY_CHARS);
        assert_eq!(summary(&exact), exact);
        let long = "é".repeat(SUMMARY_CHARS + 1);
        assert_eq!(summary(&long), format!("{exact}…"));
    }

    #[test]
    fn message_limits_are_named_in_the_errors() {
        assert_eq!(
            BroadcastError::MessageTooLong.to_string(),
            "message must be at most 65536 bytes"
        );
    }
}
