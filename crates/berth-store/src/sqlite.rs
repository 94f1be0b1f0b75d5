//! The SQLite store: berth's embedded default.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection as _, Sqlite, SqlitePool};

use crate::wake::{EventSignal, EventWakeups, Tx};
use crate::{KeyRing, Result};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

/// A [`crate::WorkspaceStore`] over one SQLite database file (WAL mode, foreign keys on).
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pub(crate) pool: SqlitePool,
    pub(crate) keys: KeyRing,
    pub(crate) events: EventSignal,
    /// Token uses waiting to be written (`group.rs`); clones share them.
    pub(crate) touches: std::sync::Arc<crate::GroupCommit<uuid::Uuid, ()>>,
    /// One write transaction at a time, queued in arrival order (see [`Self::begin`]).
    writer: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and runs the migrations.
    pub async fn open(path: &Path, keys: KeyRing) -> Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        Self::with_options(options, keys).await
    }

    /// Opens a database from a `sqlite:` URL and runs the migrations.
    pub async fn connect(url: &str, keys: KeyRing) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        Self::with_options(options, keys).await
    }

    async fn with_options(options: SqliteConnectOptions, keys: KeyRing) -> Result<Self> {
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            // As for PostgreSQL: no ping (a round trip to the connection's worker thread) on
            // every acquire, only for connections that sat idle.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for > crate::PING_IDLE_AFTER {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self {
            pool,
            keys,
            events: EventSignal::new(),
            touches: Default::default(),
            writer: Default::default(),
        })
    }

    /// The underlying pool, for tests and tools that need raw SQL (fault injection, schema checks).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Starts a write transaction. SQLite has one writer at a time: writers of this process
    /// first queue, in arrival order, on an in-process lock (taken before a pooled connection,
    /// so waiting writers hold none), then `BEGIN IMMEDIATE` takes the file's write lock up
    /// front. Without the queue, writers polled SQLite's busy handler and an unlucky one could
    /// lose every retry to a steady stream of others until `busy_timeout` (found by the soak: a
    /// create answered 500 "database is locked" after 10 s among 333 heartbeat flushes a
    /// second). `busy_timeout` still covers the rest: another process on the file, a
    /// transaction whose rollback is still pending, single-statement writes.
    pub(crate) async fn begin(&self) -> Result<Tx<Sqlite>> {
        let writer = self.writer.clone().lock_owned().await;
        let mut tx = Tx::new(self.pool.begin_with("BEGIN IMMEDIATE").await?, &self.events);
        tx._writer = Some(writer);
        Ok(tx)
    }

    /// Wakeups from this store's commits (one SQLite file has one writer process).
    pub(crate) async fn open_event_wakeups(&self) -> EventWakeups {
        self.events.local_wakeups()
    }
}

impl Tx<Sqlite> {
    /// Commits, then wakes this store's tailer when the transaction recorded events.
    pub(crate) async fn commit(self) -> Result<()> {
        self.inner.commit().await?;
        if self.recorded {
            self.signal.raise();
        }
        Ok(())
    }
}

crate::sql::impl_workspace_store!(SqliteStore, sqlx::Sqlite);
