//! `GET /workspaces/{id}/state` (REFERENCE.md §2.8): live, paused, removed, purged and unknown.

use axum::http::{Method, StatusCode};
use berth_domain::WorkspaceId;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, TestApp, app, pg_app};

async fn state(app: &TestApp, id: WorkspaceId, bearer: Option<&str>) -> (StatusCode, Value) {
    let resp = app
        .call(Method::GET, &format!("/workspaces/{id}/state"), bearer)
        .await;
    (resp.status, resp.json)
}

async fn state_follows_the_lifecycle(app: TestApp) {
    let (id, token) = app
        .external(json!({"name": "w", "runtime": "external"}))
        .await;
    let ws = id.to_string();
    let live = |status: &str, paused: bool| json!({"workspace_id": ws, "status": status, "paused": paused, "deleted": false});
    for bearer in [ADMIN_TOKEN, token.as_str()] {
        assert_eq!(
            state(&app, id, Some(bearer)).await,
            (StatusCode::OK, live("awaiting_agent", false))
        );
    }
    app.heartbeat_ok(id, &token, json!({})).await;
    assert_eq!(
        state(&app, id, Some(&token)).await,
        (StatusCode::OK, live("online", false))
    );

    let resp = app.lifecycle(id, "pause").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    for bearer in [ADMIN_TOKEN, token.as_str()] {
        assert_eq!(
            state(&app, id, Some(bearer)).await,
            (StatusCode::OK, live("paused", true))
        );
    }
    let resp = app.lifecycle(id, "resume").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(
        state(&app, id, Some(&token)).await,
        (StatusCode::OK, live("awaiting_agent", false))
    );

    // Removed: 404 with the tombstone's status (its tokens are revoked, so only the admin asks).
    assert_eq!(app.delete(id, "").await.status, StatusCode::OK);
    assert_eq!(
        state(&app, id, Some(ADMIN_TOKEN)).await,
        (
            StatusCode::NOT_FOUND,
            json!({"workspace_id": ws, "status": "removed", "deleted": true})
        )
    );
    let (status, _) = state(&app, id, Some(&token)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Purged, and never existed: 404 without a status.
    assert_eq!(app.delete(id, "?purge=true").await.status, StatusCode::OK);
    assert_eq!(
        state(&app, id, Some(ADMIN_TOKEN)).await,
        (
            StatusCode::NOT_FOUND,
            json!({"workspace_id": ws, "deleted": true})
        )
    );
    let unknown = WorkspaceId::new_v4();
    assert_eq!(
        state(&app, unknown, Some(ADMIN_TOKEN)).await,
        (
            StatusCode::NOT_FOUND,
            json!({"workspace_id": unknown.to_string(), "deleted": true})
        )
    );
}

#[tokio::test]
async fn state_follows_the_lifecycle_sqlite() {
    state_follows_the_lifecycle(app().await).await;
}

#[tokio::test]
async fn state_follows_the_lifecycle_postgres() {
    state_follows_the_lifecycle(pg_app().await).await;
}

#[tokio::test]
async fn state_of_a_failed_container() {
    let app = app().await;
    let id = app
        .create_id(json!({"name": "c", "model": "openai/gpt-4o"}))
        .await;
    app.service.drain().await;
    assert_eq!(
        state(&app, id, Some(ADMIN_TOKEN)).await,
        (
            StatusCode::OK,
            json!({"workspace_id": id.to_string(), "status": "failed", "paused": false, "deleted": false})
        )
    );
}

#[tokio::test]
async fn state_needs_a_credential_of_that_workspace() {
    let app = app().await;
    let (a, _) = app
        .external(json!({"name": "a", "runtime": "external"}))
        .await;
    let (_, b_token) = app
        .external(json!({"name": "b", "runtime": "external"}))
        .await;
    assert_eq!(
        state(&app, a, None).await,
        (
            StatusCode::UNAUTHORIZED,
            json!({"error": "missing workspace auth token"})
        )
    );
    assert_eq!(
        state(&app, a, Some(&b_token)).await,
        (
            StatusCode::UNAUTHORIZED,
            json!({"error": "invalid workspace auth token"})
        )
    );
}
