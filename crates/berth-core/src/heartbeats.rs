//! Group commit of heartbeats: the ones that arrive while a flush is running are applied together
//! by the next flush, in one store transaction ([`WorkspaceStore::heartbeats`]).
//!
//! - **No delay when idle.** A heartbeat that finds no flush running starts one at once; batches
//!   form only from heartbeats that would otherwise have queued for the database anyway. An
//!   optional window (`--heartbeat-batch-window-ms`, default 0) makes a flush that already has
//!   company wait that long for more, up to the batch bound (`--heartbeat-batch-max`).
//! - **An answer means committed.** Each heartbeat's caller is answered with its own result after
//!   the batch's transaction committed; when the transaction fails, every heartbeat of the batch
//!   gets the error (the agent retries) and nothing of the batch was written.
//! - **Order per workspace.** One flush runs at a time and takes heartbeats in arrival order; the
//!   store applies a batch in order, each against the row as the earlier ones left it.
//! - **Cancellation-safe.** The flush runs in its own task: a caller that goes away (its client
//!   disconnected) does not cancel a transaction that carries other callers' heartbeats.

use std::sync::Arc;
use std::time::Duration;

use berth_domain::WorkspaceId;
use berth_store::{FlushGuard, GroupCommit, Heartbeat, HeartbeatOutcome, WorkspaceStore};

/// Bounds of the heartbeat batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatBatching {
    /// The most heartbeats one transaction applies.
    pub max_batch: usize,
    /// How long a flush that already holds more than one heartbeat waits for more (0: never).
    pub window: Duration,
}

impl Default for HeartbeatBatching {
    fn default() -> Self {
        Self {
            max_batch: 512,
            window: Duration::ZERO,
        }
    }
}

type Outcome = Result<HeartbeatOutcome, berth_store::Error>;

/// The batcher: shared by the service's clones.
pub(crate) struct HeartbeatBatcher {
    store: Arc<dyn WorkspaceStore>,
    settings: HeartbeatBatching,
    /// The store's group-commit queue (`berth_store::GroupCommit`, also behind token uses).
    queue: GroupCommit<(WorkspaceId, Heartbeat), Outcome>,
    metrics: Arc<crate::metrics::Metrics>,
}

/// A batch's transaction failed: every heartbeat in it gets this (the first error, shared).
#[derive(Debug, thiserror::Error)]
#[error("heartbeat batch failed: {0}")]
struct BatchFailed(Arc<berth_store::Error>);

impl HeartbeatBatcher {
    pub(crate) fn new(
        store: Arc<dyn WorkspaceStore>,
        settings: HeartbeatBatching,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Self {
        Self {
            store,
            settings: HeartbeatBatching {
                max_batch: settings.max_batch.max(1),
                ..settings
            },
            queue: GroupCommit::default(),
            metrics,
        }
    }

    /// Applies one heartbeat with whatever else is waiting; answers after the commit.
    pub(crate) async fn submit(self: &Arc<Self>, id: WorkspaceId, heartbeat: Heartbeat) -> Outcome {
        let (answer, start) = self.queue.join((id, heartbeat));
        if start {
            tokio::spawn(self.clone().flush_while_waiting());
        }
        answer.await.unwrap_or_else(|_| {
            Err(berth_store::Error::Backend(
                "the heartbeat flush ended without an answer".into(),
            ))
        })
    }

    /// Flushes until nothing waits, then lets the next heartbeat start a new flush. Should a
    /// flush unwind, its callers get an error and the next heartbeat starts afresh.
    async fn flush_while_waiting(self: Arc<Self>) {
        let guard = FlushGuard::new(&self.queue);
        loop {
            if !self.settings.window.is_zero() {
                self.gather().await;
            }
            let Some(batch) = self.queue.next_batch(self.settings.max_batch) else {
                break;
            };
            self.metrics.observe_heartbeat_batch(batch.len());
            let (items, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            match self.store.heartbeats(items).await {
                Ok(results) => {
                    for (reply, result) in replies.into_iter().zip(results) {
                        let _ = reply.send(result);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, heartbeats = replies.len(), "heartbeat batch failed");
                    let shared = Arc::new(e);
                    for reply in replies {
                        let _ = reply.send(Err(berth_store::Error::Backend(Box::new(
                            BatchFailed(shared.clone()),
                        ))));
                    }
                }
            }
        }
        guard.done();
    }

    /// With a window: when the flush has company but not a full batch, waits up to the window
    /// for more (never when a single heartbeat waits: an idle server adds no delay).
    async fn gather(&self) {
        let deadline = tokio::time::Instant::now() + self.settings.window;
        loop {
            let n = self.queue.waiting();
            if n <= 1 || n >= self.settings.max_batch || tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_micros(200).min(self.settings.window)).await;
        }
    }
}
