//! Waiting for a workspace to come online: its event stream says when something changed, its
//! row says what the status is.
//!
//! Each event of the workspace's SSE stream (and, as a fallback, every [`RECHECK`], which also
//! covers a stream that could not connect or broke for good) triggers one
//! `GET /workspaces/{id}`. Reading the status from the row rather than from event payloads
//! keeps the rule in one place — the server's — and cannot miss a transition that happened
//! between the create and the stream's connect.

use std::time::Duration;

use berth_api::workspaces::Workspace;
use berth_domain::{WorkspaceId, WorkspaceStatus};
use futures_util::StreamExt as _;

use crate::{Client, Error, Result};

/// How often the status is read again when no event arrives.
pub const RECHECK: Duration = Duration::from_secs(1);

impl Client {
    /// Waits until workspace `id` is `online` and returns it, calling `on_change` with the
    /// workspace each time its status changes (first with the status it has now). A workspace
    /// that ends `failed` is an [`Error::WorkspaceFailed`] with its `failure_code`; one that is
    /// removed meanwhile is the server's [`Error::Api`] 410. Waits as long as it takes: wrap it
    /// in a timeout for a deadline. An external workspace stays `awaiting_agent` until its agent
    /// registers.
    pub async fn wait_until_settled(
        &self,
        id: WorkspaceId,
        mut on_change: impl FnMut(&Workspace<'static>),
    ) -> Result<Workspace<'static>> {
        let mut events = Box::pin(self.events(id));
        let mut stream_alive = true;
        let mut last: Option<WorkspaceStatus> = None;
        // The message of the latest failure event the stream showed.
        let mut failure_message: Option<String> = None;
        loop {
            let ws = self.workspace(id).await?;
            if last != Some(ws.status) {
                last = Some(ws.status);
                on_change(&ws);
            }
            match ws.status {
                WorkspaceStatus::Online => return Ok(ws),
                WorkspaceStatus::Failed => {
                    let message = match self.failure_message(id).await {
                        Some(m) => m,
                        None => failure_message
                            .unwrap_or_else(|| "the workspace failed to start".to_owned()),
                    };
                    return Err(Error::WorkspaceFailed {
                        id,
                        failure_code: ws.failure_code.as_deref().map(str::to_owned),
                        message,
                    });
                }
                _ => {}
            }
            if stream_alive {
                tokio::select! {
                    e = events.next() => match e {
                        Some(Ok(e)) => {
                            if e.event.event_type == FAILED_EVENT {
                                failure_message = payload_error(&e.event.data);
                            }
                        }
                        // The stream gave up: fall back to reading the row every RECHECK.
                        Some(Err(_)) | None => stream_alive = false,
                    },
                    () = tokio::time::sleep(RECHECK) => {}
                }
            } else {
                tokio::time::sleep(RECHECK).await;
            }
        }
    }

    /// The message of the newest `WORKSPACE_PROVISION_FAILED` event of `id` in the log (admin
    /// only; `None` without the admin token or without such an event).
    async fn failure_message(&self, id: WorkspaceId) -> Option<String> {
        let events = self.event_log(Some(id), None, Some(50)).await.ok()?;
        events
            .iter()
            .find(|e| e.event_type == FAILED_EVENT)
            .and_then(|e| payload_error(&e.payload))
    }
}

/// The event that records a failed start, with `{"error", "code"}`.
const FAILED_EVENT: &str = "WORKSPACE_PROVISION_FAILED";

/// The `error` text of a failure event's payload.
fn payload_error(payload: &serde_json::Value) -> Option<String> {
    payload
        .get("error")
        .and_then(serde_json::Value::as_str)
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
}
