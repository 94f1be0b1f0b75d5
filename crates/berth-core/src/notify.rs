//! `POST /workspaces/{id}/notify` (REFERENCE-2.md §2.6): an agent sends its user a message.
//!
//! The `AGENT_MESSAGE` event and the activity row (`a2a_receive`, method `notify`) are written in
//! one transaction with the row's `ACTIVITY_LOGGED` event, so the message is in the log exactly
//! when it was announced (the reference broadcast first and inserted best-effort, silently).
//! Attachments use the same lower-case keys (`uri`, `name`, `mimeType`, `size`) in the event and
//! in the stored copy (§9.2 #20).

use berth_domain::WorkspaceId;
use berth_domain::event::EventType;
use berth_domain::status::WorkspaceStatus;
use berth_store::NewEvent;
use serde_json::{Map, Value, json};

use crate::activity::{ActivityEntry, ActivityError};
use crate::service::WorkspaceService;

/// How many characters of the message the row's summary keeps.
const SUMMARY_CHARS: usize = 80;

/// One file an agent's message points at.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NotifyAttachment {
    /// Where the file is.
    pub uri: String,
    /// Its name.
    pub name: String,
    /// Its MIME type, when known.
    pub mime_type: Option<String>,
    /// Its size in bytes, when known.
    pub size: Option<i64>,
}

/// Why a notify was refused.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// No such workspace, or it was removed.
    #[error("workspace not found")]
    NotFound,
    /// The workspace may not talk to the user (`talk_to_user_enabled = false`).
    #[error("talk_to_user_disabled")]
    Disabled,
    /// The store failed.
    #[error("internal error")]
    Store(#[source] berth_store::Error),
}

impl WorkspaceService {
    /// Records an agent's message to its user: the `AGENT_MESSAGE` event and the activity row.
    #[tracing::instrument(skip_all, fields(workspace.id = %id))]
    pub async fn notify(
        &self,
        id: WorkspaceId,
        message: String,
        attachments: Vec<NotifyAttachment>,
    ) -> Result<(), NotifyError> {
        let row = self
            .store
            .get_workspace(id)
            .await
            .map_err(NotifyError::Store)?
            .filter(|w| w.status != WorkspaceStatus::Removed)
            .ok_or(NotifyError::NotFound)?;
        if !row.talk_to_user_enabled {
            return Err(NotifyError::Disabled);
        }
        let files: Vec<Value> = attachments
            .iter()
            .map(|a| {
                let mut f = Map::new();
                f.insert("uri".into(), a.uri.clone().into());
                f.insert("name".into(), a.name.clone().into());
                if let Some(m) = &a.mime_type {
                    f.insert("mimeType".into(), m.clone().into());
                }
                if let Some(s) = a.size {
                    f.insert("size".into(), s.into());
                }
                Value::Object(f)
            })
            .collect();
        let mut event =
            json!({"message": message, "workspace_id": id.to_string(), "name": row.name});
        let mut response = json!({"result": message});
        if !files.is_empty() {
            event["attachments"] = Value::Array(files.clone());
            response["parts"] = files
                .into_iter()
                .map(|f| json!({"kind": "file", "file": f}))
                .collect();
        }
        let mut summary: String = message.chars().take(SUMMARY_CHARS).collect();
        if message.chars().count() > SUMMARY_CHARS {
            summary.push('…');
        }
        let entry = ActivityEntry {
            activity_type: "a2a_receive".into(),
            method: Some("notify".into()),
            summary: Some(format!("Agent message: {summary}")),
            response_body: Some(response),
            ..ActivityEntry::default()
        };
        let extra = vec![NewEvent {
            event_type: EventType::AgentMessage,
            payload: event,
        }];
        self.log_activity(id, entry, extra)
            .await
            .map_err(|e| match e {
                ActivityError::WorkspaceNotFound => NotifyError::NotFound,
                ActivityError::Store { source, .. } => NotifyError::Store(source),
                ActivityError::CursorNotFound => NotifyError::NotFound,
            })?;
        Ok(())
    }
}
