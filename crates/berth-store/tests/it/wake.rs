//! Event wakeups on PostgreSQL (issue #19 point 1): the `LISTEN` connection is the listener's
//! own, never one of the shared pool's, so no connection that has listened ever serves a query
//! (a notification in the middle of another statement's answer fails it, even after a COMMIT).

use std::time::Duration;

use berth_store::WorkspaceStore as _;
use sqlx::Row as _;

use crate::harness::Backend;

#[tokio::test]
async fn the_listener_never_takes_a_connection_of_the_shared_pool() {
    let Backend::Postgres(store) = Backend::postgres().await else {
        unreachable!("postgres() is PostgreSQL");
    };
    let wakeups = store.event_wakeups().await;
    assert!(wakeups.listens(), "LISTEN works on the test server");

    // Every connection the shared pool can hand out at once: none is the listener's (with the
    // listener on a pool connection, one fewer could be had and the last acquire would time
    // out), and none listens.
    let pool = store.pool();
    let max = pool.options().get_max_connections() as usize;
    let mut held = Vec::new();
    for _ in 0..max {
        let conn = tokio::time::timeout(Duration::from_secs(10), pool.acquire())
            .await
            .expect("the pool hands out all its connections")
            .expect("acquire");
        held.push(conn);
    }
    let mut pids = Vec::new();
    for conn in &mut held {
        let row = sqlx::query(
            "SELECT pg_backend_pid() AS pid, (SELECT count(*) FROM pg_listening_channels()) AS n",
        )
        .fetch_one(&mut **conn)
        .await
        .expect("query");
        assert_eq!(row.get::<i64, _>("n"), 0, "a pool connection listens");
        pids.push(row.get::<i32, _>("pid"));
    }
    // The listener is a session of its own.
    let listeners: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
    )
    .fetch_all(&mut *held[0])
    .await
    .expect("pg_stat_activity");
    assert_eq!(listeners.len(), 1, "{listeners:?}");
    assert!(
        !pids.contains(&listeners[0]),
        "the listener is a pool connection"
    );
    drop(held);

    // Dropping the wakeups closes the listener's session; the pool's connections never listened.
    drop(wakeups);
    let mut conn = pool.acquire().await.expect("acquire");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_listening_channels()")
        .fetch_one(&mut *conn)
        .await
        .expect("query");
    assert_eq!(n, 0);
}
