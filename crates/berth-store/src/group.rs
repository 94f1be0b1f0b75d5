//! Group commit: callers queue their writes and wait; one flush at a time takes what waits and
//! writes it in one transaction, so writes that arrive during a flush go together into the
//! next. A lone write starts a flush at once (no delay when idle). The caller that finds no
//! flush running starts one, in a task of its own, so a caller that goes away cancels nothing.
//!
//! Used for heartbeats (`berth-core`'s `heartbeats.rs`, over [`crate::WorkspaceStore::heartbeats`])
//! and for token uses here: a token check whose `last_used_at` is a minute old waits for a
//! touch batch (so the row is touched before it answers), and every use noted meanwhile is
//! written with one `UPDATE … WHERE id IN (…)`. Writing each as its own statement made every
//! such check a write of its own: at 100,000 agents whose cached tokens expire, thousands of
//! single-row write transactions a second. A failed touch is logged and does not fail the
//! check: it is bookkeeping.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::oneshot;

/// Tokens per touch `UPDATE` statement.
pub(crate) const TOUCH_ROWS_PER_STATEMENT: usize = 500;

struct Queue<T, R> {
    waiting: VecDeque<(T, oneshot::Sender<R>)>,
    flushing: bool,
}

/// Writes waiting for a flush, each with the channel its result goes back on.
pub struct GroupCommit<T, R> {
    queue: Mutex<Queue<T, R>>,
}

impl<T, R> Default for GroupCommit<T, R> {
    fn default() -> Self {
        Self {
            queue: Mutex::new(Queue {
                waiting: VecDeque::new(),
                flushing: false,
            }),
        }
    }
}

impl<T, R> std::fmt::Debug for GroupCommit<T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

impl<T, R> GroupCommit<T, R> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue<T, R>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `item`; returns the receiver of its result and whether the caller must start a
    /// flush (none is running).
    pub fn join(&self, item: T) -> (oneshot::Receiver<R>, bool) {
        let (tx, rx) = oneshot::channel();
        let mut q = self.lock();
        q.waiting.push_back((item, tx));
        let start = !std::mem::replace(&mut q.flushing, true);
        (rx, start)
    }

    /// How many writes wait.
    pub fn waiting(&self) -> usize {
        self.lock().waiting.len()
    }

    /// The next batch, oldest first and at most `max`; `None`, ending the flush, when nothing
    /// waits (the next [`Self::join`] then starts a new one).
    pub fn next_batch(&self, max: usize) -> Option<Vec<(T, oneshot::Sender<R>)>> {
        let mut q = self.lock();
        if q.waiting.is_empty() {
            q.flushing = false;
            return None;
        }
        let n = q.waiting.len().min(max.max(1));
        Some(q.waiting.drain(..n).collect())
    }

    /// Ends a flush that stopped early (its task unwound): whoever waits is answered with a
    /// closed channel and the next [`Self::join`] starts afresh.
    pub fn abandon(&self) {
        let mut q = self.lock();
        q.flushing = false;
        q.waiting.clear();
    }
}

/// Abandons the flush of `group` when dropped before [`FlushGuard::done`] (a flush that
/// unwound).
pub struct FlushGuard<'a, T, R>(Option<&'a GroupCommit<T, R>>);

impl<'a, T, R> FlushGuard<'a, T, R> {
    /// Guards a flush of `group`.
    pub fn new(group: &'a GroupCommit<T, R>) -> Self {
        Self(Some(group))
    }

    /// The flush ended normally ([`GroupCommit::next_batch`] returned `None`).
    pub fn done(mut self) {
        self.0 = None;
    }
}

impl<T, R> Drop for FlushGuard<'_, T, R> {
    fn drop(&mut self) {
        if let Some(group) = self.0 {
            group.abandon();
        }
    }
}

/// `UPDATE workspace_auth_tokens SET last_used_at = $1 WHERE id IN ($2…)`, not moving it back.
pub(crate) fn touch_sql(n: usize) -> String {
    format!(
        "UPDATE workspace_auth_tokens SET last_used_at = $1 \
         WHERE id IN ({}) AND (last_used_at IS NULL OR last_used_at < $1)",
        crate::sql::placeholders(2, n)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_join_starts_a_flush_and_batches_keep_arrival_order() {
        let g: GroupCommit<u32, u32> = GroupCommit::default();
        let (_a, start) = g.join(1);
        assert!(start, "no flush was running");
        let (_b, again) = g.join(2);
        assert!(!again, "the running flush takes it");
        g.join(3);
        assert_eq!(g.waiting(), 3);
        let first: Vec<u32> = g
            .next_batch(2)
            .expect("a batch")
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        assert_eq!(first, [1, 2]);
        let rest: Vec<u32> = g
            .next_batch(2)
            .expect("a batch")
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        assert_eq!(rest, [3]);
        assert!(g.next_batch(2).is_none(), "the flush ends");
        assert!(g.join(4).1, "the next join starts a new flush");
    }

    #[test]
    fn an_abandoned_flush_answers_its_waiters_and_lets_the_next_start() {
        let g: GroupCommit<u32, u32> = GroupCommit::default();
        let (mut waiting, _) = g.join(1);
        drop(FlushGuard::new(&g));
        assert!(
            waiting.try_recv().is_err(),
            "answered with a closed channel"
        );
        assert_eq!(g.waiting(), 0);
        assert!(g.join(2).1);
        let guard = FlushGuard::new(&g);
        assert!(g.next_batch(8).is_some() && g.next_batch(8).is_none());
        guard.done();
        assert!(g.join(3).1);
    }
}
