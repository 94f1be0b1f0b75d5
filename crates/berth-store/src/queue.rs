//! The A2A busy queue (REFERENCE-2.md §4.12) and the token-usage ledger (§4.14): records and SQL.
//!
//! A target's items are delivered strictly in order (`priority`, then `seq`), one at a time: an
//! item is claimed only while no other item of the same target is `dispatched`, so two drains
//! (on one instance or several) never deliver a target's messages out of order. A drained item
//! that meets a busy target again is put back in place (status `queued`), so it keeps its turn and
//! its idempotency key never resolves to a finished row (§9.4 #39).

use berth_domain::WorkspaceId;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Priority of every item berth queues (the reference's "task" level).
pub const QUEUE_PRIORITY_TASK: i64 = 50;

/// One message to queue for a busy target.
#[derive(Debug, Clone, PartialEq)]
pub struct NewQueueItem {
    /// The item id (returned as `queue_id`).
    pub id: Uuid,
    /// The target workspace.
    pub workspace_id: WorkspaceId,
    /// The sender (`None` = the user / canvas).
    pub caller_id: Option<Uuid>,
    /// The normalised payload, byte for byte.
    pub body: String,
    /// The normalised method (`None` when empty).
    pub method: Option<String>,
    /// `params.message.messageId`: a second enqueue with the same key while the first is
    /// pending returns the first.
    pub idempotency_key: Option<String>,
    /// After this the item is dropped instead of delivered.
    pub expires_at: Option<DateTime<Utc>>,
    /// Now (the store's precision).
    pub enqueued_at: DateTime<Utc>,
    /// The target's bound: pending (queued or dispatched) items beyond it are refused.
    pub max_pending: i64,
}

/// What an enqueue did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    /// A new item; `depth` = queued items of the target, this one included.
    Queued {
        /// The item id.
        id: Uuid,
        /// Queued items of the target.
        depth: i64,
    },
    /// An item with the same idempotency key is already pending; nothing was written.
    Duplicate {
        /// The pending item's id.
        id: Uuid,
        /// Queued items of the target.
        depth: i64,
    },
    /// The target already has `max_pending` pending items; nothing was written.
    Full {
        /// Pending (queued or dispatched) items of the target.
        pending: i64,
    },
}

/// One stored queue item.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueItem {
    /// Item id.
    pub id: Uuid,
    /// Target workspace.
    pub workspace_id: WorkspaceId,
    /// Sender.
    pub caller_id: Option<Uuid>,
    /// Priority (higher first).
    pub priority: i64,
    /// The normalised payload.
    pub body: String,
    /// The method.
    pub method: Option<String>,
    /// The idempotency key.
    pub idempotency_key: Option<String>,
    /// `queued`, `dispatched`, `completed`, `dropped` or `failed`.
    pub status: String,
    /// Delivery attempts so far (a claim counts one).
    pub attempts: i64,
    /// When it was queued.
    pub enqueued_at: DateTime<Utc>,
    /// When the current delivery started.
    pub dispatched_at: Option<DateTime<Utc>>,
    /// When it reached a final status.
    pub completed_at: Option<DateTime<Utc>>,
    /// When it stops being delivered.
    pub expires_at: Option<DateTime<Utc>>,
    /// Why the last attempt did not deliver it.
    pub last_error: Option<String>,
    /// The agent's answer, for a completed item.
    pub response_body: Option<String>,
}

/// How a claimed (`dispatched`) item ends its attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSettle {
    /// `queued` (back in place, to be retried), `completed`, `failed` or `dropped`.
    pub status: String,
    /// Why it was not delivered (kept as is when `None`).
    pub last_error: Option<String>,
    /// The agent's answer.
    pub response_body: Option<String>,
    /// Whether the attempt counts in `attempts` (`false` takes back the claim's increment: a
    /// target that was busy or unavailable was not really tried).
    pub counts: bool,
    /// Now.
    pub at: DateTime<Utc>,
}

/// One day of a workspace's LLM token usage (§4.14).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenUsage {
    /// The workspace.
    pub workspace_id: WorkspaceId,
    /// Start of the UTC day.
    pub period_start: DateTime<Utc>,
    /// Input tokens.
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// Responses counted.
    pub call_count: i64,
    /// Estimated cost in US dollars.
    pub estimated_cost_usd: f64,
}

const ITEM_COLUMNS: &str = "id, workspace_id, caller_id, priority, body, method, idempotency_key, \
status, attempts, enqueued_at, dispatched_at, completed_at, expires_at, last_error, response_body";

/// Inserts unless the target is full or the key is pending: `$9` is the bound.
pub(crate) const ENQUEUE: &str = "\
INSERT INTO a2a_queue (id, workspace_id, caller_id, body, method, idempotency_key, enqueued_at, \
expires_at, priority) \
SELECT $1, $2, $3, $4, $5, $6, $7, $8, $10 \
WHERE (SELECT COUNT(*) FROM a2a_queue WHERE workspace_id = $2 \
AND status IN ('queued', 'dispatched')) < $9 \
ON CONFLICT DO NOTHING";

pub(crate) const PENDING_WITH_KEY: &str = "\
SELECT id FROM a2a_queue WHERE workspace_id = $1 AND idempotency_key = $2 \
AND status IN ('queued', 'dispatched')";

pub(crate) const QUEUED_DEPTH: &str =
    "SELECT COUNT(*) FROM a2a_queue WHERE workspace_id = $1 AND status = 'queued'";

pub(crate) const PENDING_COUNT: &str = "\
SELECT COUNT(*) FROM a2a_queue WHERE workspace_id = $1 AND status IN ('queued', 'dispatched')";

pub(crate) const WORKSPACE_EXISTS: &str = "SELECT COUNT(*) FROM workspaces WHERE id = $1";

/// Claims the target's head item, only while none of its items is in flight.
pub(crate) fn claim_sql() -> String {
    format!(
        "UPDATE a2a_queue SET status = 'dispatched', dispatched_at = $2, attempts = attempts + 1 \
         WHERE id = (SELECT q.id FROM a2a_queue q WHERE q.workspace_id = $1 AND q.status = 'queued' \
         AND (q.expires_at IS NULL OR q.expires_at > $2) ORDER BY q.priority DESC, q.seq LIMIT 1) \
         AND status = 'queued' \
         AND NOT EXISTS (SELECT 1 FROM a2a_queue d WHERE d.workspace_id = $1 AND d.status = 'dispatched') \
         RETURNING {ITEM_COLUMNS}"
    )
}

pub(crate) fn select_item_sql() -> String {
    format!("SELECT {ITEM_COLUMNS} FROM a2a_queue WHERE id = $1")
}

pub(crate) fn list_items_sql() -> String {
    format!("SELECT {ITEM_COLUMNS} FROM a2a_queue WHERE workspace_id = $1 ORDER BY seq")
}

/// A target's items in the reader's order (see [`page`]), at most `$2`: the database reads the
/// page, not the whole queue.
pub(crate) fn page_items_sql() -> String {
    format!(
        "SELECT {ITEM_COLUMNS} FROM a2a_queue WHERE workspace_id = $1 ORDER BY \
         CASE status WHEN 'dispatched' THEN 0 WHEN 'queued' THEN 1 ELSE 2 END, \
         CASE WHEN status IN ('dispatched', 'queued') THEN -priority ELSE 0 END, \
         CASE WHEN status IN ('dispatched', 'queued') THEN seq ELSE -seq END LIMIT $2"
    )
}

/// The reader's order of a target's items (given oldest first): pending items in delivery order
/// (`dispatched`, then `queued` by priority, then age), then finished ones newest first; at most
/// `limit`. See [`crate::WorkspaceStore::a2a_queue_page`].
pub(crate) fn page(items: Vec<QueueItem>, limit: usize) -> Vec<QueueItem> {
    fn rank(item: &QueueItem) -> u8 {
        match item.status.as_str() {
            "dispatched" => 0,
            "queued" => 1,
            _ => 2,
        }
    }
    let mut ordered: Vec<(usize, QueueItem)> = items.into_iter().enumerate().collect();
    ordered.sort_by(|(ai, a), (bi, b)| {
        rank(a).cmp(&rank(b)).then_with(|| {
            if rank(a) == 2 {
                bi.cmp(ai)
            } else {
                b.priority.cmp(&a.priority).then(ai.cmp(bi))
            }
        })
    });
    ordered
        .into_iter()
        .take(limit)
        .map(|(_, item)| item)
        .collect()
}

pub(crate) const SETTLE: &str = "\
UPDATE a2a_queue SET status = $2, dispatched_at = $3, completed_at = $4, \
last_error = COALESCE($5, last_error), response_body = $6, attempts = attempts - $7 \
WHERE id = $1 AND status = 'dispatched'";

pub(crate) const QUEUED_TARGETS: &str = "\
SELECT DISTINCT workspace_id FROM a2a_queue WHERE status = 'queued' \
AND (expires_at IS NULL OR expires_at > $1)";

pub(crate) const EXPIRE: &str = "\
UPDATE a2a_queue SET status = 'dropped', completed_at = $1, last_error = 'expired before delivery' \
WHERE status = 'queued' AND expires_at IS NOT NULL AND expires_at <= $1";

pub(crate) const REQUEUE_STALE: &str = "\
UPDATE a2a_queue SET status = 'queued', dispatched_at = NULL, \
last_error = 'delivery attempt interrupted; requeued' \
WHERE status = 'dispatched' AND dispatched_at < $1";

pub(crate) const DELETE_FINISHED: &str = "\
DELETE FROM a2a_queue WHERE status IN ('completed', 'failed', 'dropped') AND completed_at < $1";

pub(crate) const DROP_STALE: &str = "\
UPDATE a2a_queue SET status = 'dropped', completed_at = $1, \
last_error = COALESCE(last_error || '; ', '') || 'dropped: queued too long' \
WHERE status = 'queued' AND enqueued_at < $2";

pub(crate) const DROP_STALE_OF: &str = "\
UPDATE a2a_queue SET status = 'dropped', completed_at = $1, \
last_error = COALESCE(last_error || '; ', '') || 'dropped: queued too long' \
WHERE status = 'queued' AND enqueued_at < $2 AND workspace_id = $3";

pub(crate) const TOUCH_OUTBOUND: &str =
    "UPDATE workspaces SET last_outbound_at = $1 WHERE id = $2 AND status <> 'removed'";

pub(crate) const ADD_TOKEN_USAGE: &str = "\
INSERT INTO workspace_token_usage (id, workspace_id, period_start, input_tokens, output_tokens, \
call_count, estimated_cost_usd, updated_at) VALUES ($1, $2, $3, $4, $5, 1, $6, $7) \
ON CONFLICT (workspace_id, period_start) DO UPDATE SET \
input_tokens = workspace_token_usage.input_tokens + excluded.input_tokens, \
output_tokens = workspace_token_usage.output_tokens + excluded.output_tokens, \
call_count = workspace_token_usage.call_count + 1, \
estimated_cost_usd = workspace_token_usage.estimated_cost_usd + excluded.estimated_cost_usd, \
updated_at = excluded.updated_at";

pub(crate) const TOKEN_USAGE: &str = "\
SELECT workspace_id, period_start, input_tokens, output_tokens, call_count, estimated_cost_usd \
FROM workspace_token_usage WHERE workspace_id = $1 ORDER BY period_start";

/// The raw queue row.
#[derive(sqlx::FromRow)]
pub(crate) struct QueueRow {
    pub(crate) id: Uuid,
    pub(crate) workspace_id: Uuid,
    pub(crate) caller_id: Option<Uuid>,
    pub(crate) priority: i64,
    pub(crate) body: String,
    pub(crate) method: Option<String>,
    pub(crate) idempotency_key: Option<String>,
    pub(crate) status: String,
    pub(crate) attempts: i64,
    pub(crate) enqueued_at: DateTime<Utc>,
    pub(crate) dispatched_at: Option<DateTime<Utc>>,
    pub(crate) completed_at: Option<DateTime<Utc>>,
    pub(crate) expires_at: Option<DateTime<Utc>>,
    pub(crate) last_error: Option<String>,
    pub(crate) response_body: Option<String>,
}

impl From<QueueRow> for QueueItem {
    fn from(r: QueueRow) -> Self {
        QueueItem {
            id: r.id,
            workspace_id: WorkspaceId::from(r.workspace_id),
            caller_id: r.caller_id,
            priority: r.priority,
            body: r.body,
            method: r.method,
            idempotency_key: r.idempotency_key,
            status: r.status,
            attempts: r.attempts,
            enqueued_at: r.enqueued_at,
            dispatched_at: r.dispatched_at,
            completed_at: r.completed_at,
            expires_at: r.expires_at,
            last_error: r.last_error,
            response_body: r.response_body,
        }
    }
}

/// The raw token-usage row.
#[derive(sqlx::FromRow)]
pub(crate) struct TokenUsageRow {
    pub(crate) workspace_id: Uuid,
    pub(crate) period_start: DateTime<Utc>,
    pub(crate) input_tokens: i64,
    pub(crate) output_tokens: i64,
    pub(crate) call_count: i64,
    pub(crate) estimated_cost_usd: f64,
}

impl From<TokenUsageRow> for TokenUsage {
    fn from(r: TokenUsageRow) -> Self {
        TokenUsage {
            workspace_id: WorkspaceId::from(r.workspace_id),
            period_start: r.period_start,
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            call_count: r.call_count,
            estimated_cost_usd: r.estimated_cost_usd,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(n: u128, status: &str, priority: i64) -> QueueItem {
        QueueItem {
            id: Uuid::from_u128(n),
            workspace_id: WorkspaceId::from(Uuid::nil()),
            caller_id: None,
            priority,
            body: String::new(),
            method: None,
            idempotency_key: None,
            status: status.into(),
            attempts: 0,
            enqueued_at: DateTime::<Utc>::UNIX_EPOCH,
            dispatched_at: None,
            completed_at: None,
            expires_at: None,
            last_error: None,
            response_body: None,
        }
    }

    #[test]
    fn a_page_lists_pending_in_delivery_order_then_finished_newest_first() {
        // Oldest first, as the store keeps them.
        let items = vec![
            item(1, "completed", QUEUE_PRIORITY_TASK),
            item(2, "queued", QUEUE_PRIORITY_TASK),
            item(3, "dropped", QUEUE_PRIORITY_TASK),
            item(4, "dispatched", QUEUE_PRIORITY_TASK),
            item(5, "queued", QUEUE_PRIORITY_TASK + 10),
            item(6, "failed", QUEUE_PRIORITY_TASK),
            item(7, "queued", QUEUE_PRIORITY_TASK),
        ];
        let ids = |v: Vec<QueueItem>| v.iter().map(|i| i.id.as_u128()).collect::<Vec<_>>();
        assert_eq!(ids(page(items.clone(), 100)), [4, 5, 2, 7, 6, 3, 1]);
        assert_eq!(ids(page(items.clone(), 3)), [4, 5, 2]);
        assert!(page(items, 0).is_empty());
    }
}
