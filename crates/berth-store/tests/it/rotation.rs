//! Key rotation when PostgreSQL drops the connection mid-rotation (issue #6): the backend that
//! serves the rotation is terminated (`pg_terminate_backend`) inside a batch. The rotation
//! reports an error, the batches committed before stay under the new key, the interrupted one
//! rolls back, every secret stays readable, the pool replaces the dead connection, and a resumed
//! rotation finishes with every secret readable under the new key alone.

use berth_domain::WorkspaceId;
use berth_domain::event::EventType;
use berth_store::{KeyRing, NewEvent, NewWorkspace, PgStore, SecretScope, WorkspaceStore};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use crate::harness::{Backend, secret};

/// Workspaces written, each with [`SECRETS_EACH`] secrets.
const WORKSPACES: usize = 12;
const SECRETS_EACH: usize = 3;
/// Rows per rotation batch.
const BATCH: u32 = 4;
/// The row update (counted across committed batches) on which the backend kills itself.
const KILL_AT: i32 = 10;

fn ring(lines: &[&SecretString]) -> KeyRing {
    let text: Vec<&str> = lines.iter().map(|l| l.expose_secret()).collect();
    KeyRing::parse(&SecretString::from(text.join("\n"))).expect("key ring")
}

fn workspace(name: &str) -> NewWorkspace {
    NewWorkspace {
        secrets: (0..SECRETS_EACH)
            .map(|i| (format!("KEY_{i}"), secret(&format!("{name}-value-{i}"))))
            .collect(),
        events: vec![NewEvent {
            event_type: EventType::WorkspaceProvisioning,
            payload: json!({"name": name}),
        }],
        provisioning_started_at: Some(berth_store::now()),
        ..crate::harness::new_workspace(name)
    }
}

/// Every workspace secret opens to the value it was written with.
async fn assert_all_readable(store: &dyn WorkspaceStore, ids: &[(WorkspaceId, String)]) {
    for (id, name) in ids {
        let got: Vec<(String, String)> = store
            .workspace_secrets(*id)
            .await
            .expect("secrets readable")
            .into_iter()
            .map(|(k, v)| (k, v.expose_secret().to_owned()))
            .collect();
        let want: Vec<(String, String)> = (0..SECRETS_EACH)
            .map(|i| (format!("KEY_{i}"), format!("{name}-value-{i}")))
            .collect();
        assert_eq!(got, want, "secrets of {name}");
    }
    let global = store
        .open_secrets(SecretScope::Global)
        .await
        .expect("globals");
    assert_eq!(global.len(), 1);
    assert_eq!(
        global[0].value.as_ref().expect("opens").expose_secret(),
        "global-value"
    );
}

async fn key_ids(store: &PgStore) -> Vec<String> {
    let mut ids: Vec<String> = sqlx::query_scalar(
        "SELECT key_id FROM workspace_secrets UNION ALL SELECT key_id FROM global_secrets",
    )
    .fetch_all(store.pool())
    .await
    .expect("key ids");
    ids.sort();
    ids
}

#[tokio::test]
async fn postgres_rotation_survives_the_connection_dropping_mid_batch_and_resumes() {
    let Backend::Postgres(pg) = Backend::postgres().await else {
        unreachable!()
    };
    let (k1, k2) = (KeyRing::generate_line("k1"), KeyRing::generate_line("k2"));
    let old = pg.with_key_ring(ring(&[&k1]));
    let mut ids = Vec::new();
    for i in 0..WORKSPACES {
        let n = workspace(&format!("ws{i}"));
        ids.push((n.id, n.name.clone()));
        old.create_workspace(n).await.expect("create");
    }
    old.set_secret(
        SecretScope::Global,
        "G".into(),
        secret("global-value"),
        json!({}),
    )
    .await
    .expect("global");
    let total = WORKSPACES * SECRETS_EACH + 1;

    // The fault: the KILL_AT-th re-sealing UPDATE terminates its own backend, like a database
    // restart or a network cut in the middle of a batch.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE rotation_fault (updates INT NOT NULL); \
         INSERT INTO rotation_fault VALUES (0); \
         CREATE FUNCTION drop_connection() RETURNS trigger AS $$ BEGIN \
           UPDATE rotation_fault SET updates = updates + 1; \
           IF (SELECT updates FROM rotation_fault) >= {KILL_AT} THEN \
             PERFORM pg_terminate_backend(pg_backend_pid()); \
           END IF; \
           RETURN NEW; \
         END $$ LANGUAGE plpgsql; \
         CREATE TRIGGER drop_connection BEFORE UPDATE ON workspace_secrets \
           FOR EACH ROW EXECUTE FUNCTION drop_connection();"
    )))
    .execute(pg.pool())
    .await
    .expect("install the fault");

    let both = pg.with_key_ring(ring(&[&k2, &k1]));
    let err = both
        .reencrypt(BATCH, None)
        .await
        .expect_err("the rotation fails when its connection drops");
    let berth_store::Error::Backend(cause) = &err else {
        panic!("expected a database error, got {err:?}");
    };
    assert!(
        cause.to_string().contains("terminating connection"),
        "the backend really went away: {cause}"
    );
    // The batches before the fault committed; the interrupted batch rolled back as a whole.
    let committed: i32 = sqlx::query_scalar("SELECT updates FROM rotation_fault")
        .fetch_one(pg.pool())
        .await
        .expect("the pool replaced the dead connection");
    let committed = usize::try_from(committed).unwrap();
    assert_eq!(committed % BATCH as usize, 0, "whole batches only: {err}");
    assert!(committed > 0 && committed < KILL_AT as usize);
    let now = key_ids(&pg).await;
    let under_k2 = now.iter().filter(|k| *k == "k2").count();
    assert_eq!(under_k2, committed, "{now:?}");
    // Nothing is lost meanwhile: with both keys every secret opens.
    assert_all_readable(&both, &ids).await;

    // The database is healthy again; the rotation is re-run and completes.
    sqlx::raw_sql("DROP TRIGGER drop_connection ON workspace_secrets")
        .execute(pg.pool())
        .await
        .expect("remove the fault");
    let report = both.reencrypt(BATCH, None).await.expect("resumed rotation");
    assert_eq!(report.rows, u64::try_from(total - committed).unwrap());
    assert!(
        report.remaining_by_key_id.is_empty(),
        "{:?}",
        report.remaining_by_key_id
    );
    assert_eq!(key_ids(&pg).await, vec!["k2".to_owned(); total]);
    // The old key can go: the new one alone opens everything.
    assert_all_readable(&pg.with_key_ring(ring(&[&k2])), &ids).await;
}

/// `unreadable_key_ids` names the key ids in use that the ring lacks or holds different bytes for.
async fn the_key_check_names_missing_and_wrong_keys(b: Backend) {
    let (k1, k2) = (KeyRing::generate_line("k1"), KeyRing::generate_line("k2"));
    let impostor = KeyRing::generate_line("k1");
    let rekeyed = |keys: KeyRing| -> Box<dyn WorkspaceStore> {
        match &b {
            Backend::Sqlite(s, _) => Box::new(s.with_key_ring(keys)),
            Backend::Postgres(s) => Box::new(s.with_key_ring(keys)),
        }
    };
    let old = rekeyed(ring(&[&k1]));
    // Nothing sealed yet: any ring is fine.
    assert!(
        rekeyed(ring(&[&k2]))
            .unreadable_key_ids()
            .await
            .unwrap()
            .is_empty()
    );
    let n = workspace("sealed");
    let id = n.id;
    old.create_workspace(n).await.unwrap();
    old.set_inbound_secret(id, secret("inbound")).await.unwrap();
    old.set_secret(SecretScope::Global, "G".into(), secret("g"), json!({}))
        .await
        .unwrap();

    assert!(old.unreadable_key_ids().await.unwrap().is_empty());
    assert!(
        rekeyed(ring(&[&k2, &k1]))
            .unreadable_key_ids()
            .await
            .unwrap()
            .is_empty()
    );
    let missing = rekeyed(ring(&[&k2])).unreadable_key_ids().await.unwrap();
    assert_eq!(missing.len(), 1);
    assert!(
        matches!(&missing[0], (k, berth_store::CipherError::UnknownKey(u)) if k == "k1" && u == "k1")
    );
    let wrong = rekeyed(ring(&[&impostor]))
        .unreadable_key_ids()
        .await
        .unwrap();
    assert_eq!(wrong.len(), 1);
    assert!(matches!(&wrong[0], (k, berth_store::CipherError::Corrupt(_)) if k == "k1"));
    // One damaged row is not a wrong key: another sample under the key still opens.
    let n = workspace("second");
    rekeyed(ring(&[&k1])).create_workspace(n).await.unwrap();
    b.exec(&format!(
        "UPDATE workspace_secrets SET encrypted_value = encrypted_value || {} WHERE key = 'KEY_0'",
        if b.is_postgres() {
            "'\\x00'::bytea"
        } else {
            "x'00'"
        }
    ))
    .await;
    assert!(old.unreadable_key_ids().await.unwrap().is_empty());
}

#[tokio::test]
async fn sqlite_key_check_names_missing_and_wrong_keys() {
    the_key_check_names_missing_and_wrong_keys(Backend::sqlite().await).await;
}

#[tokio::test]
async fn postgres_key_check_names_missing_and_wrong_keys() {
    the_key_check_names_missing_and_wrong_keys(Backend::postgres().await).await;
}
