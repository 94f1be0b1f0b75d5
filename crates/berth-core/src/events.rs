//! The event log as a live stream: an in-process bus fed, after commit, by a log tailer.
//!
//! Every event is written to `structure_events` in the transaction of the change it describes
//! (the store does that); nothing is published before it is committed. The tailer polls the log
//! for rows after the last sequence id it published (every `poll_interval`, 200 ms by default) and
//! publishes them, in sequence order, on a `tokio::sync::broadcast` channel that the WebSocket and
//! SSE handlers subscribe to.
//!
//! Why a tailer rather than publishing from each write path or PostgreSQL `LISTEN/NOTIFY`: it
//! needs no change to any write path, cannot publish an event whose transaction rolled back, and
//! works unchanged when several `berth` instances share one PostgreSQL: each instance tails the
//! same log, so an event recorded by one reaches the subscribers of all of them, in sequence order,
//! at the cost of up to one poll interval of latency and one cheap indexed query per interval.
//!
//! PostgreSQL allocates identity values before commit, so a transaction can commit a lower `seq`
//! after a higher one is visible. The tailer therefore publishes only contiguous runs: at a gap it
//! waits up to `gap_grace` for the missing row (an in-flight transaction) before skipping it (a
//! rolled-back one, which leaves a permanent hole). SQLite never leaves holes.
//!
//! The tailer starts with the first subscription (or [`WorkspaceService::spawn_event_tailer`]) and
//! stops when the service is dropped. Clients that reconnect resume from the log itself
//! (`Last-Event-ID`), not from the bus.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use berth_domain::WorkspaceId;
use berth_store::{EventFilter, EventRecord, WorkspaceStore};
use tokio::sync::broadcast;

use crate::registry::Principal;
use crate::service::WorkspaceService;

/// Settings of the event log and the live bus.
#[derive(Debug, Clone)]
pub struct EventConfig {
    /// Events older than this are pruned (by the sweeper, at most once an hour).
    pub retention: Duration,
    /// Events the bus holds for its slowest subscriber; one that falls further behind is cut off.
    pub buffer: usize,
    /// How often the tailer polls the log.
    pub poll_interval: Duration,
    /// How long the tailer waits for a missing sequence id before skipping it.
    pub gap_grace: Duration,
}

impl Default for EventConfig {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(30 * 24 * 3600),
            buffer: 1024,
            poll_interval: Duration::from_millis(200),
            gap_grace: Duration::from_secs(2),
        }
    }
}

/// How often the sweeper prunes the event log at most.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Rows the tailer reads per query.
const TAIL_PAGE: i64 = 1000;

/// A subscription to the live events of every workspace, in sequence order. A receiver that
/// falls more than [`EventConfig::buffer`] events behind gets `RecvError::Lagged`: it has lost
/// events and must be cut off (the client resumes from the log).
pub type EventReceiver = broadcast::Receiver<Arc<EventRecord>>;

/// The in-process bus and its tailer's state.
pub(crate) struct EventBus {
    config: EventConfig,
    sender: broadcast::Sender<Arc<EventRecord>>,
    tailer: tokio::sync::OnceCell<()>,
    last_prune: std::sync::Mutex<Option<Instant>>,
}

impl EventBus {
    pub(crate) fn new(config: EventConfig) -> Self {
        let (sender, _) = broadcast::channel(config.buffer.max(1));
        Self {
            config,
            sender,
            tailer: tokio::sync::OnceCell::new(),
            last_prune: std::sync::Mutex::new(None),
        }
    }
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("config", &self.config)
            .field("subscribers", &self.sender.receiver_count())
            .finish_non_exhaustive()
    }
}

/// The tailer's cursor: the highest sequence id published (or skipped), and since when it has
/// been waiting at a gap.
struct Tail {
    cursor: i64,
    gap_since: Option<Instant>,
}

impl Tail {
    /// Publishes the contiguous run of `rows` (ascending) after the cursor.
    fn publish(&mut self, rows: Vec<EventRecord>, bus: &EventBus, now: Instant) {
        for row in rows {
            if row.seq <= self.cursor {
                continue;
            }
            if row.seq != self.cursor + 1 {
                let since = *self.gap_since.get_or_insert(now);
                if now.duration_since(since) < bus.config.gap_grace {
                    return;
                }
                tracing::debug!(
                    from = self.cursor + 1,
                    to = row.seq - 1,
                    "event sequence gap skipped"
                );
            }
            self.gap_since = None;
            self.cursor = row.seq;
            // No receivers is not an error: nobody is listening right now.
            let _ = bus.sender.send(Arc::new(row));
        }
    }
}

async fn run_tailer(bus: Weak<EventBus>, store: Arc<dyn WorkspaceStore>, mut tail: Tail) {
    let interval = match bus.upgrade() {
        Some(b) => b.config.poll_interval,
        None => return,
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(bus) = bus.upgrade() else { return };
        if bus.sender.receiver_count() == 0 {
            // Nobody listens: keep the cursor current instead of reading rows.
            match store.last_event_seq().await {
                Ok(seq) => {
                    tail.cursor = tail.cursor.max(seq.unwrap_or(0));
                    tail.gap_since = None;
                }
                Err(e) => tracing::warn!(error = %e, "event tailer: reading the log failed"),
            }
            continue;
        }
        loop {
            let filter = EventFilter {
                workspace_id: None,
                after_seq: Some(tail.cursor),
                limit: Some(TAIL_PAGE),
            };
            match store.events(filter).await {
                Ok(rows) => {
                    let full = i64::try_from(rows.len()).unwrap_or(i64::MAX) >= TAIL_PAGE;
                    let before = tail.cursor;
                    tail.publish(rows, &bus, Instant::now());
                    if !full || tail.cursor == before {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "event tailer: reading the log failed");
                    break;
                }
            }
        }
    }
}

impl WorkspaceService {
    /// Replaces the event settings (call before the service is used).
    pub fn with_event_config(mut self, config: EventConfig) -> Self {
        self.events = Arc::new(EventBus::new(config));
        self
    }

    /// The event settings.
    pub fn event_config(&self) -> &EventConfig {
        &self.events.config
    }

    /// Starts the log tailer that feeds the live bus, once; later calls do nothing. It starts
    /// at the end of the log (earlier events are read from the log, not the bus) and stops when
    /// the service is dropped.
    pub async fn spawn_event_tailer(&self) -> Result<(), berth_store::Error> {
        self.events
            .tailer
            .get_or_try_init(|| async {
                let cursor = self.store.last_event_seq().await?.unwrap_or(0);
                let tail = Tail {
                    cursor,
                    gap_since: None,
                };
                tokio::spawn(run_tailer(
                    Arc::downgrade(&self.events),
                    self.store.clone(),
                    tail,
                ));
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// Subscribes to live events (starting the tailer if needed). Every event committed after
    /// this call returns is delivered, in sequence order, unless the receiver lags.
    pub async fn subscribe_events(&self) -> Result<EventReceiver, berth_store::Error> {
        self.spawn_event_tailer().await?;
        Ok(self.events.sender.subscribe())
    }

    /// Events after `after` in sequence order (oldest first), optionally of one workspace.
    pub async fn events_after(
        &self,
        workspace_id: Option<WorkspaceId>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<EventRecord>, berth_store::Error> {
        self.store
            .events(EventFilter {
                workspace_id,
                after_seq: Some(after),
                limit: Some(limit),
            })
            .await
    }

    /// The newest events first, optionally of one workspace.
    pub async fn latest_events(
        &self,
        workspace_id: Option<WorkspaceId>,
        limit: i64,
    ) -> Result<Vec<EventRecord>, berth_store::Error> {
        self.store.latest_events(workspace_id, limit).await
    }

    /// Whether `principal` may see `event` on a live stream: the admin (and `--dev`) sees every
    /// event; a workspace only events of workspaces it may communicate with (REFERENCE-2.md
    /// §1.1), never events without a workspace (global secret audits).
    pub async fn event_visible_to(
        &self,
        principal: Principal,
        event: &EventRecord,
    ) -> Result<bool, berth_store::Error> {
        match principal {
            Principal::Admin | Principal::Dev => Ok(true),
            Principal::Workspace(caller) => match event.workspace_id {
                None => Ok(false),
                Some(target) if target == caller => Ok(true),
                Some(target) => Ok(self.hierarchy().await?.can_communicate(caller, target)),
            },
        }
    }

    /// Deletes events older than the retention, at most once per hour (called by the sweeper).
    /// Returns how many went (`None` when it was not due).
    pub async fn prune_events_if_due(&self) -> Result<Option<u64>, berth_store::Error> {
        {
            let mut last = self
                .events
                .last_prune
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.is_some_and(|t| t.elapsed() < PRUNE_EVERY) {
                return Ok(None);
            }
            *last = Some(Instant::now());
        }
        let Some(cutoff) = chrono::Duration::from_std(self.events.config.retention)
            .ok()
            .and_then(|d| berth_store::now().checked_sub_signed(d))
        else {
            // A retention longer than the calendar keeps everything.
            return Ok(Some(0));
        };
        let n = self.store.prune_events(cutoff).await?;
        if n > 0 {
            tracing::info!(events = n, "old events pruned");
        }
        Ok(Some(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: i64) -> EventRecord {
        EventRecord {
            seq,
            id: uuid::Uuid::new_v4(),
            event_type: "WORKSPACE_ONLINE".into(),
            workspace_id: None,
            payload: serde_json::json!({}),
            created_at: berth_store::now(),
        }
    }

    fn drain(rx: &mut EventReceiver) -> Vec<i64> {
        let mut seqs = Vec::new();
        while let Ok(e) = rx.try_recv() {
            seqs.push(e.seq);
        }
        seqs
    }

    #[test]
    fn publishes_contiguous_runs_and_waits_at_gaps() {
        let bus = EventBus::new(EventConfig {
            gap_grace: Duration::from_secs(2),
            ..EventConfig::default()
        });
        let mut rx = bus.sender.subscribe();
        let mut tail = Tail {
            cursor: 0,
            gap_since: None,
        };
        let t0 = Instant::now();
        tail.publish(vec![ev(1), ev(2), ev(4), ev(5)], &bus, t0);
        assert_eq!(drain(&mut rx), vec![1, 2]);
        assert_eq!(tail.cursor, 2);
        // 3 commits late: the run continues in order.
        tail.publish(
            vec![ev(3), ev(4), ev(5)],
            &bus,
            t0 + Duration::from_millis(500),
        );
        assert_eq!(drain(&mut rx), vec![3, 4, 5]);
        // A hole that never fills is skipped once the grace has passed.
        tail.publish(vec![ev(7)], &bus, t0 + Duration::from_secs(3));
        assert!(drain(&mut rx).is_empty());
        tail.publish(vec![ev(7)], &bus, t0 + Duration::from_secs(6));
        assert_eq!(drain(&mut rx), vec![7]);
        // Rows at or below the cursor are never published twice.
        tail.publish(vec![ev(6), ev(7), ev(8)], &bus, t0 + Duration::from_secs(7));
        assert_eq!(drain(&mut rx), vec![8]);
    }
}
