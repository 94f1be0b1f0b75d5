//! Which instance runs the background sweeps (DECISIONS.md §4: one leader among the instances
//! sharing a PostgreSQL, chosen by an advisory lock). With SQLite there is one instance.

use std::time::Duration;

use berth_core::WorkspaceService;
use sqlx::Connection as _;
use tokio::sync::watch;

/// The advisory lock key ("berth" in ASCII).
const SWEEP_LOCK_KEY: i64 = 0x0062_6572_7468;
/// How often a follower retries and a leader checks it still holds the lock.
const CHECK_EVERY: Duration = Duration::from_secs(10);

/// How leadership is decided.
pub enum Leadership {
    /// The only instance (SQLite).
    Sole,
    /// The holder of a PostgreSQL session advisory lock on this database.
    Postgres(String),
}

/// Runs `service.run_sweeps` while this instance leads, until `stop` turns true.
pub async fn run_sweeps(
    service: WorkspaceService,
    leadership: Leadership,
    mut stop: watch::Receiver<bool>,
) {
    let url = match leadership {
        Leadership::Sole => return service.run_sweeps(stop).await,
        Leadership::Postgres(url) => url,
    };
    loop {
        if *stop.borrow() {
            return;
        }
        match sqlx::PgConnection::connect(&url).await {
            Err(e) => tracing::warn!(error = %e, "leader election: cannot connect"),
            Ok(mut conn) => {
                let won: Result<bool, sqlx::Error> =
                    sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                        .bind(SWEEP_LOCK_KEY)
                        .fetch_one(&mut conn)
                        .await;
                match won {
                    Ok(true) => {
                        tracing::info!("leading the background sweeps");
                        let (stop_sweeps, sweeps_stopped) = watch::channel(false);
                        let s = service.clone();
                        let sweeps =
                            tokio::spawn(async move { s.run_sweeps(sweeps_stopped).await });
                        // Hold the connection (and with it the lock) while it is healthy.
                        loop {
                            tokio::select! {
                                _ = stop.changed() => {
                                    let _ = stop_sweeps.send(true);
                                    let _ = sweeps.await;
                                    return;
                                }
                                () = tokio::time::sleep(CHECK_EVERY) => {}
                            }
                            if sqlx::query("SELECT 1").execute(&mut conn).await.is_err() {
                                tracing::warn!(
                                    "lost the sweep leadership (database connection failed)"
                                );
                                let _ = stop_sweeps.send(true);
                                let _ = sweeps.await;
                                break;
                            }
                        }
                    }
                    Ok(false) => tracing::debug!("another instance leads the background sweeps"),
                    Err(e) => tracing::warn!(error = %e, "leader election failed"),
                }
            }
        }
        tokio::select! {
            _ = stop.changed() => {}
            () = tokio::time::sleep(CHECK_EVERY) => {}
        }
    }
}
