//! Waking the event tailer after a commit that recorded events.
//!
//! Every write transaction is a [`Tx`]: [`Tx::recorded_event`] marks it when an event is
//! appended, and its commit (per backend, in `sqlite.rs` and `postgres.rs`) raises the store's
//! [`EventSignal`] once the rows are visible. On PostgreSQL the same commit also announces itself
//! with `NOTIFY` on [`PG_CHANNEL`] (delivered only if the transaction commits), so the tailers of
//! other instances sharing the database wake too. [`EventWakeups`] waits for either.
//!
//! A wake is a hint, never a delivery: the tailer still reads the log itself, in sequence order,
//! and still polls as a fallback, so a lost wake costs at most one poll interval.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use sqlx::{Database, Transaction};
use tokio::sync::watch;

/// The `LISTEN/NOTIFY` channel on which PostgreSQL instances announce commits with events.
#[cfg(feature = "postgres")]
pub(crate) const PG_CHANNEL: &str = "berth_events";

/// How long a failing `LISTEN` connection waits before trying again.
#[cfg(feature = "postgres")]
const LISTEN_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// Raised after this store commits a transaction that recorded events. Clones share it.
#[derive(Clone, Debug)]
pub(crate) struct EventSignal {
    sender: Arc<watch::Sender<()>>,
    /// This store's id in `NOTIFY` payloads, so its own listener skips its own commits (the
    /// local signal has woken the tailer already).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) origin: Arc<str>,
}

impl EventSignal {
    pub(crate) fn new() -> Self {
        Self {
            sender: Arc::new(watch::Sender::new(())),
            origin: uuid::Uuid::new_v4().simple().to_string().into(),
        }
    }

    pub(crate) fn raise(&self) {
        self.sender.send_replace(());
    }

    /// Wakeups from this store's own commits only.
    pub(crate) fn local_wakeups(&self) -> EventWakeups {
        EventWakeups {
            local: self.sender.subscribe(),
            remote: None,
        }
    }

    /// Wakeups from this store's commits and from other instances' `NOTIFY`s.
    #[cfg(feature = "postgres")]
    pub(crate) fn wakeups_with(&self, listener: sqlx::postgres::PgListener) -> EventWakeups {
        EventWakeups {
            local: self.sender.subscribe(),
            remote: Some(Remote {
                listener,
                origin: self.origin.clone(),
            }),
        }
    }
}

/// A write transaction that remembers whether it recorded an event, so that its commit can wake
/// the event tailer. It dereferences to the connection, like [`Transaction`].
pub(crate) struct Tx<DB: Database> {
    pub(crate) inner: Transaction<'static, DB>,
    pub(crate) signal: EventSignal,
    pub(crate) recorded: bool,
    /// SQLite: this process's writer slot, held until the transaction ends (see
    /// `SqliteStore::begin`); dropped after `inner`, as fields drop in order.
    pub(crate) _writer: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl<DB: Database> Tx<DB> {
    pub(crate) fn new(inner: Transaction<'static, DB>, signal: &EventSignal) -> Self {
        Self {
            inner,
            signal: signal.clone(),
            recorded: false,
            _writer: None,
        }
    }

    /// Marks the transaction as one that appended to the event log.
    pub(crate) fn recorded_event(&mut self) {
        self.recorded = true;
    }
}

impl<DB: Database> Deref for Tx<DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &DB::Connection {
        &self.inner
    }
}

impl<DB: Database> DerefMut for Tx<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        &mut self.inner
    }
}

#[cfg(feature = "postgres")]
struct Remote {
    listener: sqlx::postgres::PgListener,
    origin: Arc<str>,
}

/// Without PostgreSQL there is no other instance to hear from.
#[cfg(not(feature = "postgres"))]
enum Remote {}

/// Wakes whoever tails the event log when events may have been committed: after this store
/// commits a transaction that recorded events and, on PostgreSQL, when another instance sharing
/// the database does (`LISTEN`). Obtained from [`crate::WorkspaceStore::event_wakeups`]; dropping
/// it closes its `LISTEN` connection.
pub struct EventWakeups {
    local: watch::Receiver<()>,
    remote: Option<Remote>,
}

impl std::fmt::Debug for EventWakeups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventWakeups")
            .field("listening", &self.remote.is_some())
            .finish_non_exhaustive()
    }
}

impl EventWakeups {
    /// Whether other instances' commits wake this too (PostgreSQL with a working `LISTEN`).
    pub fn listens(&self) -> bool {
        self.remote.is_some()
    }

    /// Returns after the next commit with events, by this store or (when [`Self::listens`])
    /// another instance. Commits since the previous call count: one made while the caller was
    /// busy returns at once. Cancel-safe, though a `NOTIFY` received by a cancelled call may be
    /// lost (the caller's poll covers it).
    pub async fn wait(&mut self) {
        tokio::select! {
            () = local_commit(&mut self.local) => {}
            () = remote_commit(&mut self.remote) => {}
        }
    }
}

async fn local_commit(local: &mut watch::Receiver<()>) {
    if local.changed().await.is_err() {
        // The store is gone: nothing local will commit again.
        std::future::pending::<()>().await;
    }
}

#[cfg(not(feature = "postgres"))]
async fn remote_commit(_: &mut Option<Remote>) {
    std::future::pending().await
}

#[cfg(feature = "postgres")]
async fn remote_commit(remote: &mut Option<Remote>) {
    loop {
        let Some(r) = remote.as_mut() else {
            return std::future::pending().await;
        };
        match r.listener.recv().await {
            Ok(n) if n.payload() == &*r.origin => {}
            Ok(_) => return,
            Err(sqlx::Error::PoolClosed) => *remote = None,
            Err(e) => {
                // `recv` reconnects on its next call; until then the tailer's poll covers.
                tracing::warn!(error = %e, "event wakeups: LISTEN connection failed");
                tokio::time::sleep(LISTEN_RETRY).await;
            }
        }
    }
}
