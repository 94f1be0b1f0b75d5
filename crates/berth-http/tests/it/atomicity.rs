//! DECISIONS.md §2.9: a create is one transaction. A fault injected between two of its writes
//! answers 500 with the public message only, and leaves nothing behind.

use axum::http::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, app, pg_app};

const SQLITE_FAULT: &str = "CREATE TRIGGER berth_fail BEFORE INSERT ON canvas_layouts \
     BEGIN SELECT RAISE(ABORT, 'injected fault'); END;";

const PG_FAULT: &str = "CREATE FUNCTION berth_fail() RETURNS trigger LANGUAGE plpgsql AS $$ \
     BEGIN RAISE EXCEPTION 'injected fault'; END; $$; \
     CREATE TRIGGER berth_fail BEFORE INSERT ON canvas_layouts \
     FOR EACH ROW EXECUTE FUNCTION berth_fail();";

/// The layout insert comes after the row and its secrets; failing it must undo both.
async fn a_fault_mid_create_leaves_nothing(app: TestApp, fault: &str) {
    app.db.exec(fault).await;
    for body in [
        json!({"name": "f", "model": "openai/gpt-4o", "secrets": {"API_KEY": "sk-123"}}),
        json!({"name": "g", "runtime": "external"}),
        json!({"name": "h", "runtime": "external", "url": "http://agent.example.com"}),
    ] {
        let resp = app.create(body.clone()).await;
        assert_eq!(
            resp.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{body}: {}",
            resp.text
        );
        assert_eq!(resp.json, json!({"error": "failed to create workspace"}));
        assert!(!resp.text.contains("injected"), "internal text leaked");
        app.service.drain().await;
        app.assert_nothing_written(&body.to_string()).await;
    }
}

#[tokio::test]
async fn a_fault_mid_create_leaves_nothing_sqlite() {
    let app = app().await;
    a_fault_mid_create_leaves_nothing(app, SQLITE_FAULT).await;
}

#[tokio::test]
async fn a_fault_mid_create_leaves_nothing_postgres() {
    let app = pg_app().await;
    a_fault_mid_create_leaves_nothing(app, PG_FAULT).await;
}

#[tokio::test]
async fn a_missing_parent_rolls_back_on_postgres() {
    let app = pg_app().await;
    app.assert_bad_request(
        json!({"name": "c", "model": "openai/gpt-4o", "secrets": {"K": "v"},
               "parent_id": uuid::Uuid::new_v4().to_string()}),
        "parent workspace not found",
    )
    .await;
}
