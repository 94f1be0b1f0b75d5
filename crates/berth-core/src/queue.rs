//! The A2A busy queue (REFERENCE-2.md §4.12): a message that meets a busy agent is stored and
//! delivered later, in order, as the agent frees up; plus the caller bookkeeping of a delivered
//! message (`last_outbound_at`, §4.10 step 3; token usage, §4.14).
//!
//! Drains start on every heartbeat that reports spare capacity (`active_tasks` below
//! `max_concurrent_tasks`) and on the sweeper's periodic pass (which also drops expired items
//! and puts back items whose delivery was interrupted). Each drain delivers a target's items one
//! at a time, oldest first, until the queue is empty or the agent is busy again.
//!
//! berth's changes to the reference (§9.4):
//! - an item that meets a busy agent again goes back to `queued` in place: it keeps its turn and
//!   is never lost (#39); busy retries do not count towards `failed`;
//! - a timeout is not retried (the agent may have acted on it; #34): the item is `failed`;
//! - drained deliveries are logged like direct ones, the reply is kept on the item (readable
//!   through `GET /workspaces/{id}/a2a/queue/{queue_id}`) and the caller gets an `a2a_send` row
//!   with the reply on its own log (#40);
//! - a target that switched to poll mode gets the inbox row (#45); interrupted deliveries are
//!   requeued and expired items dropped (#41); callers of the status route are authenticated (#42).
//!
//! Authorisation was checked when the message was queued; the drain does not re-check it.

use berth_domain::WorkspaceId;
use berth_domain::status::WorkspaceStatus;
use berth_store::{Enqueued, NewQueueItem, QueueItem, QueueSettle};
use chrono::{DurationRound as _, TimeDelta};
use serde_json::Value;
use uuid::Uuid;

use crate::a2a::{A2aError, A2aReply, Call, mock_reply, request_id};
use crate::activity::ActivityEntry;
use crate::service::WorkspaceService;

/// Days a finished queue item (and its reply) stays readable before the upkeep deletes it.
const QUEUE_KEEP_FINISHED_DAYS: i64 = 7;
/// Token counts above this are clamped (§4.14).
const TOKEN_CLAMP: i64 = 10_000_000;
/// Price per input token, US dollars (§4.14).
const PRICE_IN: f64 = 0.000_003;
/// Price per output token, US dollars (§4.14).
const PRICE_OUT: f64 = 0.000_015;

/// Who reads a queue item's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueViewer {
    /// The admin credential: any item.
    Admin,
    /// A workspace token: items it sent or received.
    Workspace(WorkspaceId),
}

/// Largest page of `GET /workspaces/{id}/a2a/queue`.
pub const A2A_QUEUE_PAGE_MAX: usize = 500;

/// One item of a workspace's queue listing.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueEntry {
    /// The item.
    pub item: QueueItem,
    /// For a `queued` item, its place in the delivery order (1 = next).
    pub position: Option<u32>,
}

/// What one drain did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Items delivered (or written to a poll inbox).
    pub delivered: u32,
    /// Items put back because the target was busy or unavailable.
    pub requeued: u32,
    /// Items that reached `failed`.
    pub failed: u32,
}

/// How one delivery attempt of a queued item ended.
enum Attempt {
    Delivered(Option<String>),
    /// Back in place; stop draining this target for now.
    NotNow(String),
    /// Counted failure: retried until the attempt limit, then `failed`.
    Retry(String),
    /// Final failure.
    Failed(String),
}

/// The `(input, output)` token counts of an agent reply: `result.usage`, else `usage`.
pub(crate) fn token_usage(reply: &Value) -> Option<(i64, i64)> {
    let usage = reply
        .pointer("/result/usage")
        .filter(|u| u.is_object())
        .or_else(|| reply.get("usage"))?;
    let count = |k: &str| {
        usage
            .get(k)
            .and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)))
            .unwrap_or(0)
            .clamp(0, TOKEN_CLAMP)
    };
    let (input, output) = (count("input_tokens"), count("output_tokens"));
    (input > 0 || output > 0).then_some((input, output))
}

impl WorkspaceService {
    /// §4.9 step 2: queues a message the busy agent did not take, with its rows.
    pub(crate) async fn queue_busy(
        &self,
        call: &Call<'_>,
        error: &str,
        duration_ms: i64,
    ) -> Result<A2aReply, A2aError> {
        let message = call.request.as_ref().and_then(|r| r.pointer("/params"));
        let idempotency_key = message
            .and_then(|p| p.pointer("/message/messageId"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let expires_at = message
            .and_then(|p| p.get("expires_in_seconds"))
            .and_then(Value::as_f64)
            .filter(|s| *s >= 1.0 && s.is_finite())
            .map(|s| berth_store::now() + TimeDelta::seconds(s.min(1e9) as i64));
        let item = NewQueueItem {
            id: Uuid::new_v4(),
            workspace_id: call.target.id,
            caller_id: call.source,
            body: call.bytes.clone(),
            method: Some(call.method.clone()).filter(|m| !m.is_empty()),
            idempotency_key,
            expires_at,
            enqueued_at: berth_store::now(),
            max_pending: self.a2a.queue_max_per_target,
        };
        match self.store.enqueue_a2a(item).await {
            Ok(Enqueued::Queued { id, depth } | Enqueued::Duplicate { id, depth }) => {
                tracing::info!(queue.id = %id, queue.depth = depth, "a2a: agent busy; message queued");
                let entry = ActivityEntry {
                    activity_type: "a2a_receive".into(),
                    source_id: call.source,
                    target_id: Some(call.target.id.into()),
                    method: Some(call.method.clone()),
                    summary: Some(format!(
                        "{} → {} (queued: target busy)",
                        call.method, call.target.name
                    )),
                    request_body: call.request.clone(),
                    duration_ms: Some(duration_ms),
                    status: "ok".into(),
                    ..ActivityEntry::default()
                };
                self.write_row(call.target.id, entry, Vec::new()).await;
                Ok(A2aReply::BusyQueued {
                    queue_id: id,
                    queue_depth: depth,
                })
            }
            Ok(Enqueued::Full { pending }) => {
                self.failure_row(call, &format!("{error} (queue full)"), duration_ms)
                    .await;
                Err(A2aError::QueueFull { pending })
            }
            Err(e) => {
                tracing::error!(error = %e, "a2a: busy message could not be queued");
                self.failure_row(call, error, duration_ms).await;
                Err(A2aError::Busy)
            }
        }
    }

    /// §4.10 step 3: the caller's `last_outbound_at` (a failed write is only logged).
    pub(crate) async fn touch_outbound(&self, caller: Uuid) {
        let caller = WorkspaceId::from(caller);
        if let Err(e) = self
            .store
            .touch_last_outbound(caller, berth_store::now())
            .await
        {
            tracing::warn!(caller = %caller, error = %e, "a2a: last_outbound_at not updated");
        }
    }

    /// §4.14: adds the reply's token usage to the target's row of the day.
    pub(crate) async fn record_usage(&self, call: &Call<'_>, body: &[u8]) {
        let Some((input, output)) = serde_json::from_slice::<Value>(body)
            .ok()
            .as_ref()
            .and_then(token_usage)
        else {
            return;
        };
        let now = berth_store::now();
        let day = now.duration_trunc(TimeDelta::days(1)).unwrap_or(now);
        let cost = input as f64 * PRICE_IN + output as f64 * PRICE_OUT;
        if let Err(e) = self
            .store
            .add_token_usage(call.target.id, day, input, output, cost)
            .await
        {
            tracing::warn!(error = %e, "a2a: token usage not recorded");
        }
    }

    /// Delivers `target`'s queued items, oldest first, until none is left or the agent is busy
    /// (or unavailable) again. Safe to run concurrently: the store hands out one item per
    /// target at a time.
    pub async fn drain_a2a_queue(
        &self,
        target: WorkspaceId,
    ) -> Result<DrainReport, berth_store::Error> {
        let mut report = DrainReport::default();
        while let Some(item) = self.store.claim_a2a(target, berth_store::now()).await? {
            let attempt = self.deliver_queued(&item).await;
            let mut counts = true;
            let (status, error, response, stop) = match attempt {
                Attempt::Delivered(response) => {
                    report.delivered += 1;
                    ("completed", None, response, false)
                }
                Attempt::NotNow(e) => {
                    report.requeued += 1;
                    counts = false;
                    ("queued", Some(e), None, true)
                }
                Attempt::Retry(e) if item.attempts < self.a2a.queue_max_attempts => {
                    report.requeued += 1;
                    ("queued", Some(e), None, true)
                }
                Attempt::Retry(e) | Attempt::Failed(e) => {
                    report.failed += 1;
                    ("failed", Some(e), None, false)
                }
            };
            tracing::info!(queue.id = %item.id, workspace.id = %target, queue.status = status, "a2a: queued item attempt ended");
            self.store
                .settle_a2a(
                    item.id,
                    QueueSettle {
                        status: status.into(),
                        last_error: error,
                        response_body: response,
                        counts,
                        at: berth_store::now(),
                    },
                )
                .await?;
            if stop {
                break;
            }
        }
        Ok(report)
    }

    /// Starts a drain of `target` in the background (after a heartbeat with spare capacity).
    pub(crate) async fn spawn_drain(&self, target: WorkspaceId) {
        let svc = self.clone();
        self.spawn(async move {
            if let Err(e) = svc.drain_a2a_queue(target).await {
                tracing::error!(workspace.id = %target, error = %e, "a2a queue drain failed");
            }
        })
        .await;
    }

    /// The sweeper's queue pass: drops expired items, requeues interrupted deliveries (older
    /// than the delivery ceiling plus a minute), deletes items finished more than a week ago,
    /// and starts a drain for every target with
    /// queued items. Returns how many drains it started.
    pub async fn sweep_a2a_queue(&self) -> Result<usize, berth_store::Error> {
        let now = berth_store::now();
        let ceiling = TimeDelta::from_std(self.a2a.request_timeout).unwrap_or(TimeDelta::MAX);
        let stale_before = now
            - ceiling
                .checked_add(&TimeDelta::minutes(1))
                .unwrap_or(ceiling);
        let finished_before = now - TimeDelta::days(QUEUE_KEEP_FINISHED_DAYS);
        let (dropped, requeued, deleted) = self
            .store
            .a2a_queue_upkeep(now, stale_before, finished_before)
            .await?;
        if dropped + requeued + deleted > 0 {
            tracing::info!(dropped, requeued, deleted, "a2a queue upkeep");
        }
        let targets = self.store.a2a_queued_targets(now).await?;
        for t in &targets {
            self.spawn_drain(*t).await;
        }
        Ok(targets.len())
    }

    /// The caller of a drained message learns the answer (§9.4 #40): an `a2a_send` row on its
    /// own log (with its `ACTIVITY_LOGGED` event) carrying the request and the reply.
    async fn notify_caller(&self, call: &Call<'_>, reply: &[u8]) {
        let Some(caller) = call.source else { return };
        let entry = ActivityEntry {
            activity_type: "a2a_send".into(),
            source_id: Some(caller),
            target_id: Some(call.target.id.into()),
            method: Some(call.method.clone()),
            summary: Some(format!(
                "{} → {} (delivered from the queue)",
                call.method, call.target.name
            )),
            request_body: call.request.clone(),
            response_body: Some(serde_json::from_slice(reply).unwrap_or(Value::Null)),
            status: "ok".into(),
            ..ActivityEntry::default()
        };
        if let Err(e) = self
            .log_activity(WorkspaceId::from(caller), entry, Vec::new())
            .await
        {
            tracing::warn!(caller = %caller, error = %e, "a2a queue: caller not notified");
        }
    }

    /// One delivery attempt of a claimed item (§4.12 Drain step 2, without re-authorising).
    async fn deliver_queued(&self, item: &QueueItem) -> Attempt {
        let row = match self.store.get_workspace(item.workspace_id).await {
            Ok(Some(w)) if w.status != WorkspaceStatus::Removed => w,
            Ok(_) => return Attempt::Failed("workspace removed".into()),
            Err(e) => return Attempt::NotNow(format!("lookup failed: {e}")),
        };
        let call = Call {
            target: &row,
            source: item.caller_id,
            method: item.method.clone().unwrap_or_default(),
            request: serde_json::from_str(&item.body).ok(),
            bytes: item.body.clone(),
            from_queue: true,
        };
        if row.delivery_mode == "poll" {
            return match self.deliver_poll(&call).await {
                Ok(_) => Attempt::Delivered(None),
                Err(e) => Attempt::Retry(e.to_string()),
            };
        }
        if row.runtime == "mock" {
            let id = request_id(&item.body).unwrap_or_else(|| Uuid::new_v4().to_string());
            let reply = mock_reply(row.id, &id);
            self.success_row(&call, 200, &reply, 0).await;
            self.notify_caller(&call, &reply).await;
            return Attempt::Delivered(Some(String::from_utf8_lossy(&reply).into_owned()));
        }
        match row.status {
            WorkspaceStatus::Online | WorkspaceStatus::Degraded => {}
            WorkspaceStatus::Hibernated => {
                if let Err(e) = self.wake(row.id).await {
                    tracing::warn!(workspace.id = %row.id, error = %e, "a2a queue: wake failed");
                }
                return Attempt::NotNow("workspace is waking from hibernation".into());
            }
            other => return Attempt::NotNow(format!("workspace is {other}")),
        }
        let Some(url) = row.url.clone().filter(|u| !u.is_empty()) else {
            return Attempt::NotNow("workspace has no URL".into());
        };
        match self
            .deliver_push(&call, &url, item.body.clone().into_bytes(), None)
            .await
        {
            Ok(A2aReply::Delivered { body, .. }) => {
                self.notify_caller(&call, &body).await;
                Attempt::Delivered(Some(String::from_utf8_lossy(&body).into_owned()))
            }
            Ok(A2aReply::AgentError { status, error }) if status >= 500 => {
                Attempt::Retry(format!("agent answered {status}: {error}"))
            }
            Ok(A2aReply::AgentError { status, error }) => {
                Attempt::Failed(format!("agent answered {status}: {error}"))
            }
            Ok(A2aReply::Queued { .. } | A2aReply::BusyQueued { .. }) => Attempt::Delivered(None),
            Err(A2aError::Busy) => Attempt::NotNow("workspace agent busy".into()),
            Err(e @ A2aError::Restarting { .. }) => Attempt::NotNow(e.to_string()),
            Err(e @ (A2aError::Timeout { .. } | A2aError::ReadFailed { .. })) => {
                // The agent may have acted on it: never delivered twice.
                Attempt::Failed(e.to_string())
            }
            Err(e) => Attempt::Retry(e.to_string()),
        }
    }

    /// `GET /workspaces/{path}/a2a/queue/{queue_id}`: the item, when `path` is its target or its
    /// sender and the viewer may see it (the admin, or the token of its target or sender).
    pub async fn a2a_queue_status(
        &self,
        path: WorkspaceId,
        queue_id: Uuid,
        viewer: QueueViewer,
    ) -> Result<QueueItem, A2aError> {
        let item = self
            .store
            .a2a_queue_item(queue_id)
            .await
            .map_err(|e| A2aError::Store {
                context: "lookup failed",
                source: Box::new(e),
            })?
            .ok_or(A2aError::QueueItemNotFound)?;
        let involved =
            |w: WorkspaceId| item.workspace_id == w || item.caller_id == Some(Uuid::from(w));
        let allowed = match viewer {
            QueueViewer::Admin => true,
            QueueViewer::Workspace(w) => w == path && involved(w),
        };
        if !allowed || !involved(path) {
            return Err(A2aError::QueueItemNotFound);
        }
        Ok(item)
    }

    /// `GET /workspaces/{id}/a2a/queue`: the workspace's queue as a reader sees it, at most
    /// `limit` items (clamped to 1..=[`A2A_QUEUE_PAGE_MAX`]): pending items in delivery order,
    /// each `queued` one with its position (1 = delivered next), then finished ones newest
    /// first. The caller's access was checked by the route (the admin or the workspace's own
    /// token); a workspace that does not exist is [`A2aError::NotFound`].
    pub async fn a2a_queue(
        &self,
        id: WorkspaceId,
        limit: usize,
    ) -> Result<Vec<QueueEntry>, A2aError> {
        let store_err = |context| {
            move |e: berth_store::Error| A2aError::Store {
                context,
                source: Box::new(e),
            }
        };
        if self
            .store
            .get_workspace(id)
            .await
            .map_err(store_err("lookup failed"))?
            .is_none()
        {
            return Err(A2aError::NotFound);
        }
        let items = self
            .store
            .a2a_queue_page(id, limit.clamp(1, A2A_QUEUE_PAGE_MAX))
            .await
            .map_err(store_err("queue read failed"))?;
        let mut next = 0;
        Ok(items
            .into_iter()
            .map(|item| {
                let position = (item.status == "queued").then(|| {
                    next += 1;
                    next
                });
                QueueEntry { item, position }
            })
            .collect())
    }

    /// `POST /admin/a2a-queue/drop-stale`: `queued` items older than `max_age` (of one target,
    /// or all) become `dropped`. Returns how many. An age reaching back past the calendar's
    /// start matches nothing (checked arithmetic: the subtraction once panicked on it).
    pub async fn drop_stale_a2a(
        &self,
        max_age: std::time::Duration,
        workspace: Option<WorkspaceId>,
    ) -> Result<u64, berth_store::Error> {
        let now = berth_store::now();
        let Some(older_than) = TimeDelta::from_std(max_age)
            .ok()
            .and_then(|age| now.checked_sub_signed(age))
        else {
            return Ok(0);
        };
        self.store.drop_stale_a2a(older_than, workspace, now).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn usage_comes_from_the_result_or_the_top_level_and_is_clamped() {
        assert_eq!(
            token_usage(&json!({"result": {"usage": {"input_tokens": 10, "output_tokens": 5}}})),
            Some((10, 5))
        );
        assert_eq!(
            token_usage(&json!({"usage": {"input_tokens": 3}})),
            Some((3, 0))
        );
        assert_eq!(
            token_usage(&json!({"usage": {"input_tokens": -4, "output_tokens": 1e12}})),
            Some((0, TOKEN_CLAMP))
        );
        assert_eq!(token_usage(&json!({"usage": {"input_tokens": 0}})), None);
        assert_eq!(token_usage(&json!({"result": {"parts": []}})), None);
    }
}
