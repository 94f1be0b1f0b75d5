//! Waiting for a workspace to come online: its event stream says when something changed, its
//! row says what the status is.
//!
//! Each event of the workspace's SSE stream (and, as a fallback, every [`RECHECK`], which also
//! covers a stream that could not connect or broke for good) triggers one
//! `GET /workspaces/{id}`. Reading the status from the row rather than from event payloads
//! keeps the rule in one place — the server's — and cannot miss a transition that happened
//! between an action and the stream's connect.
//!
//! A restart is the one action whose answer comes before the row changes: the server answers
//! `provisioning` and runs the restart cycle (stop, mark `provisioning`, start) in the
//! background, so right after it the row may still say `online` — the old agent's. So
//! [`Client::restart_and_wait`] subscribes to the stream before it restarts, and counts `online`
//! only after fresh evidence: a status event on the stream, or a row that was not `online`.

use std::time::Duration;

use berth_api::workspaces::{Restarted, Workspace};
use berth_domain::{WorkspaceId, WorkspaceStatus};
use futures_util::{Stream, StreamExt as _};

use crate::{Client, Error, Result, StreamEvent};

/// How often the status is read again when no event arrives.
pub const RECHECK: Duration = Duration::from_secs(1);

/// The event that records a failed start, with `{"error", "code"}`.
const FAILED_EVENT: &str = "WORKSPACE_PROVISION_FAILED";
/// The events of the transitions a (re)start goes through.
const START_EVENTS: [&str; 3] = ["WORKSPACE_PROVISIONING", "WORKSPACE_ONLINE", FAILED_EVENT];

impl Client {
    /// Waits until workspace `id` is `online` and returns it, calling `on_change` with the
    /// workspace each time its status changes (first with the status it has now). A workspace
    /// that ends `failed` is an [`Error::WorkspaceFailed`] with its `failure_code`; one that is
    /// paused or hibernated meanwhile is an [`Error::Stopped`], one removed the server's
    /// [`Error::Api`] 410. Otherwise it waits as long as it takes: wrap it
    /// in a timeout for a deadline. An external workspace stays `awaiting_agent` until its agent
    /// registers.
    ///
    /// Right after a create, resume or wake (which mark the row `provisioning` before they
    /// answer) this waits for the start they began; after a restart use
    /// [`Client::restart_and_wait`].
    pub async fn wait_until_settled(
        &self,
        id: WorkspaceId,
        on_change: impl FnMut(&Workspace<'static>),
    ) -> Result<Workspace<'static>> {
        self.settle(id, self.events(id), true, on_change).await
    }

    /// Restarts workspace `id` (from `template`, if given) and waits until the new start is
    /// `online`, as [`Client::wait_until_settled`] does; also the restart's answer. A restart
    /// the server answers `noop` (an external workspace) returns the workspace as it is.
    pub async fn restart_and_wait(
        &self,
        id: WorkspaceId,
        template: Option<&str>,
        mut on_change: impl FnMut(&Workspace<'static>),
    ) -> Result<(Restarted, Workspace<'static>)> {
        let events = self.subscribe(id, None).await?;
        let restarted = self.restart_workspace(id, template).await?;
        if restarted.status != "provisioning" {
            let ws = self.workspace(id).await?;
            on_change(&ws);
            return Ok((restarted, ws));
        }
        let ws = self.settle(id, events, false, on_change).await?;
        Ok((restarted, ws))
    }

    /// The wait loop. `online_counts`: whether an `online` row counts before any fresh
    /// evidence (see the module docs).
    async fn settle(
        &self,
        id: WorkspaceId,
        events: impl Stream<Item = Result<StreamEvent>>,
        mut online_counts: bool,
        mut on_change: impl FnMut(&Workspace<'static>),
    ) -> Result<Workspace<'static>> {
        let mut events = std::pin::pin!(events);
        let mut stream_alive = true;
        let mut last: Option<WorkspaceStatus> = None;
        // The message of the latest failure event the stream showed.
        let mut failure_message: Option<String> = None;
        loop {
            let ws = self.workspace(id).await?;
            if ws.status != WorkspaceStatus::Online {
                online_counts = true;
            }
            if last != Some(ws.status) && (online_counts || ws.status != WorkspaceStatus::Online) {
                last = Some(ws.status);
                on_change(&ws);
            }
            match ws.status {
                WorkspaceStatus::Online if online_counts => return Ok(ws),
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
                status @ (WorkspaceStatus::Paused
                | WorkspaceStatus::Hibernating
                | WorkspaceStatus::Hibernated
                | WorkspaceStatus::Removed) => return Err(Error::Stopped { id, status }),
                _ => {}
            }
            if stream_alive {
                tokio::select! {
                    e = events.next() => match e {
                        Some(Ok(e)) => {
                            if START_EVENTS.contains(&e.event.event_type.as_str()) {
                                online_counts = true;
                            }
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

/// The `error` text of a failure event's payload.
fn payload_error(payload: &serde_json::Value) -> Option<String> {
    payload
        .get("error")
        .and_then(serde_json::Value::as_str)
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
}
