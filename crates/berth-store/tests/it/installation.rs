//! The installation identity: created once per database, the same for every store that opens
//! it, and the same across restarts; two databases get two identities.

use berth_store::{PgStore, SqliteStore, WorkspaceStore};

use crate::harness::{fresh_pg_database, test_keys};

#[tokio::test]
async fn sqlite_installation_id_is_created_once_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("berth.db");
    let first = {
        let store = SqliteStore::open(&path, test_keys()).await.unwrap();
        let id = store.installation_id().await.unwrap();
        assert!(!id.is_nil());
        assert_eq!(store.installation_id().await.unwrap(), id);
        id
    };
    // A restart on the same file reads the same identity.
    let reopened = SqliteStore::open(&path, test_keys()).await.unwrap();
    assert_eq!(reopened.installation_id().await.unwrap(), first);
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM installation")
        .fetch_one(reopened.pool())
        .await
        .unwrap();
    assert_eq!(rows, 1);

    // Another database is another installation.
    let other_dir = tempfile::tempdir().unwrap();
    let other = SqliteStore::open(&other_dir.path().join("berth.db"), test_keys())
        .await
        .unwrap();
    assert_ne!(other.installation_id().await.unwrap(), first);
}

#[tokio::test]
async fn postgres_instances_sharing_a_database_share_the_installation_id() {
    let url = fresh_pg_database().await;
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(PgStore::connect(&url, test_keys()).await.unwrap());
    }
    // Four servers starting at once on a fresh database agree on one identity.
    let (a, b, c, d) = tokio::join!(
        stores[0].installation_id(),
        stores[1].installation_id(),
        stores[2].installation_id(),
        stores[3].installation_id(),
    );
    let ids = [a.unwrap(), b.unwrap(), c.unwrap(), d.unwrap()];
    assert!(!ids[0].is_nil());
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM installation")
        .fetch_one(stores[0].pool())
        .await
        .unwrap();
    assert_eq!(rows, 1);
    // A later start reads it back.
    let later = PgStore::connect(&url, test_keys()).await.unwrap();
    assert_eq!(later.installation_id().await.unwrap(), ids[0]);

    // Another database is another installation.
    let other = PgStore::connect(&fresh_pg_database().await, test_keys())
        .await
        .unwrap();
    assert_ne!(other.installation_id().await.unwrap(), ids[0]);
}
