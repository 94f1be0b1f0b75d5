//! The event log as a live stream: an in-process bus fed, after commit, by a log tailer.
//!
//! Every event is written to `structure_events` in the transaction of the change it describes
//! (the store does that); nothing is published before it is committed. The tailer reads the log
//! for rows after the last sequence id it published and publishes them, in sequence order, on a
//! `tokio::sync::broadcast` channel that the WebSocket and SSE handlers subscribe to. It reads
//! when the store wakes it ([`berth_store::EventWakeups`]: right after this instance commits a
//! transaction that recorded events and, on PostgreSQL, on another instance's `NOTIFY` after its
//! commit), and every `poll_interval` (200 ms by default) as a fallback for lost wakes.
//!
//! Why a tailer rather than publishing from each write path or carrying events in `NOTIFY`
//! payloads: the wake is only a hint, so the log stays the one source of truth; the tailer cannot
//! publish an event whose transaction rolled back, and works unchanged when several `berth`
//! instances share one PostgreSQL: each instance tails the same log, so an event recorded by one
//! reaches the subscribers of all of them, in sequence order.
//!
//! Each event is published once as a [`LiveEvent`], which memoises its wire encodings: the HTTP
//! layer serialises a frame once per event, not once per subscriber.
//!
//! PostgreSQL allocates identity values before commit, so a transaction can commit a lower `seq`
//! after a higher one is visible. The tailer therefore publishes only contiguous runs: at a gap it
//! waits up to `gap_grace` for the missing row (an in-flight transaction) before skipping it (a
//! rolled-back one, which leaves a permanent hole). SQLite never leaves holes.
//!
//! The tailer starts with the first subscription (or [`WorkspaceService::spawn_event_tailer`]) and
//! stops when the service is dropped. Clients that reconnect resume from the log itself
//! (`Last-Event-ID`), not from the bus.

use std::any::Any;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use berth_domain::WorkspaceId;
use berth_store::{EventFilter, EventRecord, EventWakeups, WorkspaceStore};
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
    /// How often the tailer polls the log when nothing woke it (a fallback: commits wake it).
    pub poll_interval: Duration,
    /// How long the tailer waits for a missing sequence id before skipping it.
    pub gap_grace: Duration,
    /// Events queued for one live subscriber (a WebSocket or SSE client) that its connection has
    /// not written yet (see [`LiveEvents`]).
    pub subscriber_queue: usize,
    /// How long a subscriber's full queue may go without its connection taking an event before
    /// the subscriber is cut off (see [`LiveEvents`]).
    pub stall_timeout: Duration,
    /// How long a live stream waits for its client to accept one frame before it drops the
    /// connection (a client that stopped reading cannot even be sent a close frame).
    pub send_timeout: Duration,
    /// Largest event payload (serialised JSON bytes) carried on the live stream. A larger one is
    /// sent live as `{"payload_truncated": true, "payload_bytes": N}` — the log keeps it whole
    /// (`GET /events`, an SSE resume from `Last-Event-ID`) — so the bus and every subscriber
    /// queue hold at most this much per event.
    pub live_payload_max: usize,
    /// Bytes of events one live subscriber may have queued and not yet written. At the bound
    /// its pump waits, as for a full queue; one that makes no room within
    /// [`EventConfig::stall_timeout`] is cut off ([`CutOff::Backlog`]).
    pub subscriber_bytes: usize,
    /// Bytes of events all live subscribers together may have queued; a subscriber whose event
    /// would pass it waits the same way, and is cut off ([`CutOff::Backlog`]) when no room
    /// comes within the stall timeout.
    pub total_subscriber_bytes: usize,
}

impl Default for EventConfig {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(30 * 24 * 3600),
            buffer: 1024,
            poll_interval: Duration::from_millis(200),
            gap_grace: Duration::from_secs(2),
            subscriber_queue: 256,
            stall_timeout: Duration::from_secs(5),
            send_timeout: Duration::from_secs(10),
            live_payload_max: 64 * 1024,
            subscriber_bytes: 4 * 1024 * 1024,
            total_subscriber_bytes: 128 * 1024 * 1024,
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
pub type EventReceiver = broadcast::Receiver<Arc<LiveEvent>>;

/// A wire encoding of live events, memoised per event by [`LiveEvent::encoded`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// The `GET /ws` frame.
    WebSocket,
    /// The SSE frame of a workspace's event stream.
    Sse,
}

impl Encoding {
    const COUNT: usize = 2;

    fn index(self) -> usize {
        match self {
            Encoding::WebSocket => 0,
            Encoding::Sse => 1,
        }
    }
}

/// One event on the live bus: its record (it dereferences to [`EventRecord`]) and its wire
/// encodings, each made by the first subscriber that needs it and shared by all the others, so
/// a frame is serialised once per event, not once per subscriber.
pub struct LiveEvent {
    record: EventRecord,
    encoded: [OnceLock<Box<dyn Any + Send + Sync>>; Encoding::COUNT],
    /// What the event weighs in a subscriber's queue: its payload's serialised size plus a
    /// fixed allowance for the rest of the frame.
    size: usize,
}

/// Bytes counted for an event besides its payload (ids, type, timestamps, framing).
const EVENT_OVERHEAD: usize = 256;

impl LiveEvent {
    /// An event not yet encoded, its payload whole.
    pub fn new(record: EventRecord) -> Self {
        Self::bounded(record, usize::MAX)
    }

    /// An event for the live stream: a payload over `max_payload` serialised bytes is replaced
    /// by `{"payload_truncated": true, "payload_bytes": N}` (the log keeps it whole).
    pub fn bounded(mut record: EventRecord, max_payload: usize) -> Self {
        let payload_bytes = serde_json::to_vec(&record.payload).map_or(0, |v| v.len());
        let payload_bytes = if payload_bytes > max_payload {
            record.payload = serde_json::json!({
                "payload_truncated": true,
                "payload_bytes": payload_bytes,
            });
            64
        } else {
            payload_bytes
        };
        Self {
            record,
            encoded: [OnceLock::new(), OnceLock::new()],
            size: payload_bytes + EVENT_OVERHEAD,
        }
    }

    /// What the event weighs in a subscriber's queue (see [`EventConfig::subscriber_bytes`]).
    pub fn size(&self) -> usize {
        self.size
    }

    /// The event as recorded in the log.
    pub fn record(&self) -> &EventRecord {
        &self.record
    }

    /// The event in `encoding`: `encode`d by the first caller, a clone of that for every later
    /// one (so `T` should be cheap to clone, e.g. `Bytes`). A caller asking for one encoding as
    /// another type than the first did gets a fresh encoding, not a wrong one.
    pub fn encoded<T>(&self, encoding: Encoding, encode: impl FnOnce(&EventRecord) -> T) -> T
    where
        T: Any + Clone + Send + Sync,
    {
        let cell = &self.encoded[encoding.index()];
        if let Some(done) = cell.get() {
            return match done.downcast_ref::<T>() {
                Some(value) => value.clone(),
                None => encode(&self.record),
            };
        }
        // Subscribers racing for the first encoding may each make one; the first one kept wins
        // and they are all equal.
        let value = encode(&self.record);
        let _ = cell.set(Box::new(value.clone()));
        value
    }
}

impl std::ops::Deref for LiveEvent {
    type Target = EventRecord;

    fn deref(&self) -> &EventRecord {
        &self.record
    }
}

impl std::fmt::Debug for LiveEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.record.fmt(f)
    }
}

/// Two live events are equal when their records are (encodings are derived from them).
impl PartialEq for LiveEvent {
    fn eq(&self, other: &Self) -> bool {
        self.record == other.record
    }
}

/// The in-process bus and its tailer's state.
pub(crate) struct EventBus {
    config: EventConfig,
    sender: broadcast::Sender<Arc<LiveEvent>>,
    tailer: tokio::sync::OnceCell<()>,
    last_prune: std::sync::Mutex<Option<Instant>>,
    /// Live subscriptions ([`LiveEvents`]) whose pump still runs.
    live: Arc<AtomicUsize>,
    /// Live subscriptions cut off, by reason (indexed by [`CutOff::index`]).
    cut: [AtomicU64; CutOff::ALL.len()],
    /// Bytes of events queued for all live subscribers and not yet taken
    /// ([`EventConfig::total_subscriber_bytes`]).
    queued_bytes: Arc<AtomicUsize>,
    /// Live connections dropped because their client took no frame within the send timeout.
    dropped: AtomicU64,
}

impl EventBus {
    pub(crate) fn new(config: EventConfig) -> Self {
        let (sender, _) = broadcast::channel(config.buffer.max(1));
        Self {
            config,
            sender,
            tailer: tokio::sync::OnceCell::new(),
            last_prune: std::sync::Mutex::new(None),
            live: Arc::new(AtomicUsize::new(0)),
            cut: std::array::from_fn(|_| AtomicU64::new(0)),
            queued_bytes: Arc::new(AtomicUsize::new(0)),
            dropped: AtomicU64::new(0),
        }
    }
}

/// Which events a live subscription receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventScope {
    /// Every event this principal may see ([`WorkspaceService::event_visible_to`]): `GET /ws`.
    Principal(Principal),
    /// The events of one workspace: its SSE stream.
    Workspace(WorkspaceId),
}

/// Why a live subscription was cut off. After the cut the subscription holds no place on the bus;
/// the client is told why and resumes from the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutOff {
    /// Its queue ([`EventConfig::subscriber_queue`]) stayed full for
    /// [`EventConfig::stall_timeout`]: the client stopped reading, or reads slower than events
    /// arrive.
    QueueFull,
    /// It fell more than [`EventConfig::buffer`] events behind the bus itself.
    Lagged,
    /// Deciding whether an event is visible to it failed (the store was unreachable).
    FilterFailed,
    /// The bytes it had queued stayed at [`EventConfig::subscriber_bytes`], or all subscribers'
    /// together at [`EventConfig::total_subscriber_bytes`], for [`EventConfig::stall_timeout`].
    Backlog,
}

impl CutOff {
    const ALL: [CutOff; 4] = [
        CutOff::QueueFull,
        CutOff::Lagged,
        CutOff::FilterFailed,
        CutOff::Backlog,
    ];

    fn index(self) -> usize {
        match self {
            CutOff::QueueFull => 0,
            CutOff::Lagged => 1,
            CutOff::FilterFailed => 2,
            CutOff::Backlog => 3,
        }
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            CutOff::QueueFull => "queue_full",
            CutOff::Lagged => "lagged",
            CutOff::FilterFailed => "filter_failed",
            CutOff::Backlog => "backlog",
        }
    }

    /// The reason told to the client (at most 123 bytes: it fits a WebSocket close frame).
    pub fn reason(self) -> &'static str {
        match self {
            CutOff::QueueFull | CutOff::Lagged => {
                "client too slow: events not read in time; reconnect to resume"
            }
            CutOff::Backlog => "client too slow: too much event data queued; reconnect to resume",
            CutOff::FilterFailed => "event filter failed; reconnect to resume",
        }
    }
}

/// What a live subscription yields.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// The next event in sequence order.
    Event(Arc<LiveEvent>),
    /// The subscription was cut off; every event queued before the cut has been delivered
    /// and nothing follows.
    CutOff(CutOff),
}

/// A live subscription with an explicit slow-consumer policy: a pump task moves the events of
/// its [`EventScope`] from the bus into a bounded queue of [`EventConfig::subscriber_queue`]
/// events. The queue never grows past that. When it is full, the pump waits (the bus holds up
/// to [`EventConfig::buffer`] events for it meanwhile, which absorbs bursts); when the
/// connection takes nothing for [`EventConfig::stall_timeout`], or the pump falls more than
/// `buffer` events behind the bus, the subscription is cut off: the pump leaves the bus and
/// records the reason, and [`LiveEvents::next`] yields the events queued before the cut, in
/// order, followed by [`Delivery::CutOff`]. Events are never skipped silently, and one slow
/// client costs the others nothing: the bus never waits for a subscriber.
pub struct LiveEvents {
    rx: tokio::sync::mpsc::Receiver<Arc<LiveEvent>>,
    cut: Arc<OnceLock<CutOff>>,
    reported: bool,
    bytes: Backlog,
}

/// The bytes of events queued for one subscriber, and for all of them together.
#[derive(Clone)]
struct Backlog {
    mine: Arc<AtomicUsize>,
    all: Arc<AtomicUsize>,
    /// Woken when this subscriber's connection takes an event.
    freed: Arc<tokio::sync::Notify>,
}

impl Backlog {
    /// Counts `size` more bytes unless that passes a bound; `false` then (nothing counted).
    /// A subscriber with nothing queued may always take one event.
    fn take(&self, size: usize, mine_max: usize, all_max: usize) -> bool {
        let mine = self.mine.load(Ordering::Relaxed);
        if mine > 0 && mine + size > mine_max {
            return false;
        }
        let all = self.all.fetch_add(size, Ordering::Relaxed);
        if all + size > all_max && mine > 0 {
            self.all.fetch_sub(size, Ordering::Relaxed);
            return false;
        }
        self.mine.fetch_add(size, Ordering::Relaxed);
        true
    }

    /// Uncounts `size` bytes (the event was written, or dropped).
    fn give(&self, size: usize) {
        self.mine.fetch_sub(size, Ordering::Relaxed);
        self.all.fetch_sub(size, Ordering::Relaxed);
        self.freed.notify_one();
    }
}

/// How often a pump waiting for room under the bound for all subscribers looks again (room made
/// by another subscriber does not wake it).
const BACKLOG_RECHECK: Duration = Duration::from_millis(50);

impl Drop for LiveEvents {
    fn drop(&mut self) {
        // Events still queued leave with the subscriber: uncount them.
        self.rx.close();
        while let Ok(e) = self.rx.try_recv() {
            self.bytes.give(e.size());
        }
    }
}

impl std::fmt::Debug for LiveEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveEvents")
            .field("queued", &self.rx.len())
            .field("cut", &self.cut.get())
            .finish_non_exhaustive()
    }
}

impl LiveEvents {
    /// The next delivery; `None` once a cut has been reported (or the bus has closed).
    pub async fn next(&mut self) -> Option<Delivery> {
        if let Some(e) = self.rx.recv().await {
            self.bytes.give(e.size());
            return Some(Delivery::Event(e));
        }
        if self.reported {
            return None;
        }
        self.reported = true;
        self.cut.get().copied().map(Delivery::CutOff)
    }
}

/// Decrements the live-subscriber gauge when a pump ends, however it ends.
struct LiveGuard(Arc<AtomicUsize>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Moves visible events from the bus into the subscriber's queue until the subscriber goes
/// away or is cut off.
async fn pump(
    service: WorkspaceService,
    scope: EventScope,
    mut bus: EventReceiver,
    tx: tokio::sync::mpsc::Sender<Arc<LiveEvent>>,
    cut: Arc<OnceLock<CutOff>>,
    bytes: Backlog,
    _guard: LiveGuard,
) {
    let config = &service.events.config;
    let stall = config.stall_timeout;
    let outcome = loop {
        let received = tokio::select! {
            // The client went away: leave the bus at once.
            () = tx.closed() => return,
            r = bus.recv() => r,
        };
        let event = match received {
            Ok(e) => e,
            Err(broadcast::error::RecvError::Lagged(_)) => break CutOff::Lagged,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let visible = match scope {
            EventScope::Workspace(id) => event.workspace_id == Some(id),
            EventScope::Principal(p) => match service.event_visible_to(p, &event).await {
                Ok(v) => v,
                Err(e) => {
                    tracing::error!(error = %e, "event filter failed");
                    break CutOff::FilterFailed;
                }
            },
        };
        if !visible {
            continue;
        }
        // Over a byte bound the pump waits, as for a full queue, for the connection to take
        // events; a subscriber that does not make room within the stall timeout is cut off.
        let size = event.size();
        let deadline = tokio::time::Instant::now() + stall;
        let mut room = bytes.take(size, config.subscriber_bytes, config.total_subscriber_bytes);
        while !room {
            let freed = bytes.freed.notified();
            tokio::select! {
                () = tx.closed() => return,
                () = freed => {}
                () = tokio::time::sleep(BACKLOG_RECHECK) => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
            room = bytes.take(size, config.subscriber_bytes, config.total_subscriber_bytes);
            if !room && tokio::time::Instant::now() >= deadline {
                break;
            }
        }
        if !room {
            break CutOff::Backlog;
        }
        match tx.try_send(event) {
            Ok(()) => {}
            Err(tokio::sync::mpsc::error::TrySendError::Full(event)) => {
                match tx.send_timeout(event, stall).await {
                    Ok(()) => {}
                    Err(tokio::sync::mpsc::error::SendTimeoutError::Timeout(_)) => {
                        bytes.give(size);
                        break CutOff::QueueFull;
                    }
                    Err(tokio::sync::mpsc::error::SendTimeoutError::Closed(_)) => {
                        bytes.give(size);
                        return;
                    }
                }
            }
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {
                bytes.give(size);
                return;
            }
        }
    };
    // Leave the bus before anything else: a cut subscriber holds no place on it.
    drop(bus);
    let _ = cut.set(outcome);
    service.events.cut[outcome.index()].fetch_add(1, Ordering::Relaxed);
    tracing::warn!(reason = outcome.label(), "live event subscriber cut off");
    // Dropping `tx` ends the queue: the consumer drains it, then sees the cut.
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
            let _ = bus.sender.send(Arc::new(LiveEvent::bounded(
                row,
                bus.config.live_payload_max,
            )));
        }
    }
}

async fn run_tailer(
    bus: Weak<EventBus>,
    store: Arc<dyn WorkspaceStore>,
    mut tail: Tail,
    mut wakeups: EventWakeups,
) {
    let interval = match bus.upgrade() {
        Some(b) => b.config.poll_interval,
        None => return,
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let woken = tokio::select! {
            _ = tick.tick() => false,
            () = wakeups.wait() => true,
        };
        let Some(bus) = bus.upgrade() else { return };
        if bus.sender.receiver_count() == 0 {
            if woken {
                // Nobody listens: the poll keeps the cursor current, not every commit.
                continue;
            }
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
        if woken {
            // A commit with events: read now, and poll again only after a quiet interval. A
            // commit made while the log is being read below wakes this again at once.
            tick.reset();
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
                // Wakeups first, so no commit falls between them and the cursor.
                let wakeups = self.store.event_wakeups().await;
                let cursor = self.store.last_event_seq().await?.unwrap_or(0);
                let tail = Tail {
                    cursor,
                    gap_since: None,
                };
                tokio::spawn(run_tailer(
                    Arc::downgrade(&self.events),
                    self.store.clone(),
                    tail,
                    wakeups,
                ));
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// The sequence number of the newest event in the log (0 when the log is empty): where a
    /// reader that wants everything from now on resumes after a drop.
    pub async fn last_event_seq(&self) -> Result<i64, berth_store::Error> {
        Ok(self.store.last_event_seq().await?.unwrap_or(0))
    }

    /// Subscribes to live events (starting the tailer if needed). Every event committed after
    /// this call returns is delivered, in sequence order, unless the receiver lags.
    pub async fn subscribe_events(&self) -> Result<EventReceiver, berth_store::Error> {
        self.spawn_event_tailer().await?;
        Ok(self.events.sender.subscribe())
    }

    /// Subscribes to the live events of `scope` with a bounded queue and the cut-off policy
    /// of [`LiveEvents`] (starting the tailer if needed). Every event committed after this call
    /// returns is delivered in sequence order, up to a cut.
    pub async fn subscribe_live(
        &self,
        scope: EventScope,
    ) -> Result<LiveEvents, berth_store::Error> {
        let bus = self.subscribe_events().await?;
        let (tx, rx) = tokio::sync::mpsc::channel(self.events.config.subscriber_queue.max(1));
        let cut = Arc::new(OnceLock::new());
        self.events.live.fetch_add(1, Ordering::Relaxed);
        let guard = LiveGuard(self.events.live.clone());
        let bytes = Backlog {
            mine: Arc::new(AtomicUsize::new(0)),
            all: self.events.queued_bytes.clone(),
            freed: Arc::new(tokio::sync::Notify::new()),
        };
        tokio::spawn(pump(
            self.clone(),
            scope,
            bus,
            tx,
            cut.clone(),
            bytes.clone(),
            guard,
        ));
        Ok(LiveEvents {
            rx,
            cut,
            reported: false,
            bytes,
        })
    }

    /// Bytes of events queued for all live subscribers and not yet written.
    pub fn live_queued_bytes(&self) -> usize {
        self.events.queued_bytes.load(Ordering::Relaxed)
    }

    /// Live subscriptions currently holding a place on the bus (cut-off or closed ones do not).
    pub fn live_subscribers(&self) -> usize {
        self.events.live.load(Ordering::Relaxed)
    }

    /// Live subscriptions cut off so far, for one reason.
    pub fn live_subscribers_cut(&self, reason: CutOff) -> u64 {
        self.events.cut[reason.index()].load(Ordering::Relaxed)
    }

    /// Records that a live connection was dropped because its client took no frame within
    /// [`EventConfig::send_timeout`] (called by the HTTP layer).
    pub fn note_live_connection_dropped(&self) {
        self.events.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Live connections dropped so far because their client stopped reading.
    pub fn live_connections_dropped(&self) -> u64 {
        self.events.dropped.load(Ordering::Relaxed)
    }

    /// The live-event gauges in the Prometheus text format.
    pub(crate) fn render_event_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = writeln!(
            out,
            "# HELP berth_event_subscribers Live event subscribers (WebSocket and SSE clients) on the bus."
        );
        let _ = writeln!(out, "# TYPE berth_event_subscribers gauge");
        let _ = writeln!(out, "berth_event_subscribers {}", self.live_subscribers());
        let _ = writeln!(
            out,
            "# HELP berth_event_subscribers_cut_total Live event subscribers cut off, by reason."
        );
        let _ = writeln!(out, "# TYPE berth_event_subscribers_cut_total counter");
        for reason in CutOff::ALL {
            let _ = writeln!(
                out,
                "berth_event_subscribers_cut_total{{reason=\"{}\"}} {}",
                reason.label(),
                self.live_subscribers_cut(reason)
            );
        }
        let _ = writeln!(
            out,
            "# HELP berth_event_connections_dropped_total Live connections dropped because the client took no frame within the send timeout."
        );
        let _ = writeln!(out, "# TYPE berth_event_connections_dropped_total counter");
        let _ = writeln!(
            out,
            "berth_event_connections_dropped_total {}",
            self.live_connections_dropped()
        );
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

#[cfg(test)]
mod backlog_tests {
    use super::*;

    #[test]
    fn a_backlog_is_bounded_per_subscriber_and_for_all_together() {
        let all = Arc::new(AtomicUsize::new(0));
        let backlog = || Backlog {
            mine: Arc::new(AtomicUsize::new(0)),
            all: all.clone(),
            freed: Arc::new(tokio::sync::Notify::new()),
        };
        let (a, b) = (backlog(), backlog());
        // Per subscriber: 100 bytes.
        assert!(a.take(60, 100, 1000));
        assert!(!a.take(60, 100, 1000), "past its own bound");
        assert_eq!(all.load(Ordering::Relaxed), 60, "a refusal counts nothing");
        // All together: 150 bytes; b's first event always fits, its second does not.
        assert!(b.take(80, 1000, 150));
        assert!(!b.take(20, 1000, 150), "past the bound for all");
        a.give(60);
        assert!(
            b.take(20, 1000, 150),
            "room again once a's event is written"
        );
        b.give(100);
        assert_eq!(all.load(Ordering::Relaxed), 0);
        // One event larger than the bound still passes when nothing is queued.
        assert!(a.take(500, 100, 150));
    }

    #[test]
    fn a_payload_over_the_live_maximum_becomes_a_stub() {
        let record = |payload| EventRecord {
            seq: 1,
            id: uuid::Uuid::new_v4(),
            event_type: "X".into(),
            workspace_id: None,
            payload,
            created_at: berth_store::now(),
        };
        let small = LiveEvent::bounded(record(serde_json::json!({"a": 1})), 100);
        assert_eq!(small.record().payload, serde_json::json!({"a": 1}));
        let big = LiveEvent::bounded(record(serde_json::json!({"a": "x".repeat(500)})), 100);
        assert_eq!(big.record().payload["payload_truncated"], true);
        assert!(big.record().payload["payload_bytes"].as_u64().unwrap() > 500);
        assert!(big.size() < small.size() + 100, "the stub weighs little");
    }
}
