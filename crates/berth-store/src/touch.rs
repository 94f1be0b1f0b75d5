//! Group commit of token `last_used_at` touches.
//!
//! A token check that finds the token's `last_used_at` older than a minute notes the use. Writing
//! that as its own statement made every such check a write of its own: at 100,000 agents whose
//! cached tokens expire, thousands of single-row write transactions a second, each on SQLite
//! polling for the write lock beside the queued writers. Instead the check waits for a touch
//! batch (so the row is touched before it answers, as before); one flush runs at a time in its
//! own task and writes every token noted meanwhile with one `UPDATE … WHERE id IN (…)` in one
//! transaction. A failed touch is logged and does not fail the check: it is bookkeeping.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;
use uuid::Uuid;

/// Tokens per `UPDATE` statement.
pub(crate) const TOUCH_ROWS_PER_STATEMENT: usize = 500;

#[derive(Default)]
struct Queue {
    waiting: Vec<(Uuid, oneshot::Sender<()>)>,
    flushing: bool,
}

/// The pending touches of one store (clones share them).
#[derive(Clone, Default)]
pub(crate) struct TokenTouches {
    queue: Arc<Mutex<Queue>>,
}

impl std::fmt::Debug for TokenTouches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenTouches").finish_non_exhaustive()
    }
}

impl TokenTouches {
    /// Queues `token`; returns the receiver that fires once its batch is written (or failed),
    /// and whether the caller must start a flush.
    pub(crate) fn note(&self, token: Uuid) -> (oneshot::Receiver<()>, bool) {
        let (tx, rx) = oneshot::channel();
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.waiting.push((token, tx));
        let start = !std::mem::replace(&mut q.flushing, true);
        (rx, start)
    }

    /// The next batch, or `None` (and the flush ends) when nothing waits.
    pub(crate) fn next_batch(&self) -> Option<Vec<(Uuid, oneshot::Sender<()>)>> {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.waiting.is_empty() {
            q.flushing = false;
            return None;
        }
        Some(std::mem::take(&mut q.waiting))
    }

    /// Ends a flush that stopped early (its task unwound): whoever waits is released.
    pub(crate) fn abandon(&self) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.flushing = false;
        q.waiting.clear();
    }
}

/// `UPDATE workspace_auth_tokens SET last_used_at = $1 WHERE id IN ($2…)`, not moving it back.
pub(crate) fn touch_sql(n: usize) -> String {
    let ids: Vec<String> = (0..n).map(|i| format!("${}", i + 2)).collect();
    format!(
        "UPDATE workspace_auth_tokens SET last_used_at = $1 \
         WHERE id IN ({}) AND (last_used_at IS NULL OR last_used_at < $1)",
        ids.join(", ")
    )
}

/// When a flush writes its batch.
pub(crate) fn flush_time() -> DateTime<Utc> {
    crate::model::now()
}
