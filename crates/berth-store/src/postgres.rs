//! The PostgreSQL store: berth's production backend.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection as _, PgPool, Postgres};
use std::str::FromStr;

use crate::wake::{EventSignal, EventWakeups, PG_CHANNEL, Tx};
use crate::{KeyRing, PING_IDLE_AFTER, Result};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");

/// A [`crate::WorkspaceStore`] over a PostgreSQL database.
#[derive(Clone, Debug)]
pub struct PgStore {
    pub(crate) pool: PgPool,
    pub(crate) keys: KeyRing,
    pub(crate) events: EventSignal,
    /// Token uses waiting to be written (`group.rs`); clones share them.
    pub(crate) touches: std::sync::Arc<crate::GroupCommit<uuid::Uuid, ()>>,
}

impl PgStore {
    /// Connects to `url` (a `postgres://` URL) and runs the migrations. sqlx's migrator takes
    /// an advisory lock, so several instances starting at once migrate exactly once.
    pub async fn connect(url: &str, keys: KeyRing) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(32)
            .acquire_timeout(Duration::from_secs(10))
            // sqlx pings every connection on acquire by default: a round trip per query. Only
            // connections that sat idle (where a server restart or idle timeout may have cut
            // them) are pinged; a failed ping discards the connection and acquire tries another.
            // sqlx still checks every connection when it is released to the pool.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for > PING_IDLE_AFTER {
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
        })
    }

    /// The underlying pool, for tests and tools that need raw SQL (fault injection, schema checks).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(crate) async fn begin(&self) -> Result<Tx<Postgres>> {
        Ok(Tx::new(self.pool.begin().await?, &self.events))
    }

    /// Wakeups from this store's commits and, through `LISTEN`, other instances'; only this
    /// store's when the `LISTEN` connection cannot be opened (the tailer's poll covers the rest).
    ///
    /// The listener runs on a connection of its own, from a one-connection pool that nothing
    /// else uses, never from the shared pool: a connection that has ever listened must never
    /// serve a query again (a notification arriving in the middle of another statement's answer
    /// fails that statement, `unexpected message: NotificationResponse`, even after a COMMIT
    /// went through). The listener re-opens that connection when it breaks, with backoff.
    pub(crate) async fn open_event_wakeups(&self) -> EventWakeups {
        let listening = async {
            let options = (*self.pool.connect_options()).clone();
            let own = PgPoolOptions::new()
                .max_connections(1)
                .min_connections(0)
                .idle_timeout(None)
                .max_lifetime(None)
                .acquire_timeout(LISTEN_CONNECT_TIMEOUT)
                .connect_lazy_with(options);
            let mut listener = sqlx::postgres::PgListener::connect_with(&own).await?;
            listener.listen(PG_CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        match listening.await {
            Ok(listener) => self.events.wakeups_with(listener),
            Err(e) => {
                tracing::warn!(error = %e, "event wakeups: LISTEN failed; other instances' events are polled");
                self.events.local_wakeups()
            }
        }
    }
}

/// Bound on opening the `LISTEN` connection.
const LISTEN_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl Tx<Postgres> {
    /// Commits; when the transaction recorded events, it first queues a `NOTIFY` (which
    /// PostgreSQL delivers only if the commit succeeds) for other instances, and wakes this
    /// store's tailer after the commit.
    pub(crate) async fn commit(mut self) -> Result<()> {
        if self.recorded {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(PG_CHANNEL)
                .bind(&*self.signal.origin)
                .execute(&mut *self.inner)
                .await?;
        }
        self.inner.commit().await?;
        if self.recorded {
            self.signal.raise();
        }
        Ok(())
    }
}

crate::sql::impl_workspace_store!(PgStore, sqlx::Postgres);
