//! `GET /workspaces/{id}/display` (admin, REFERENCE.md §2.20) on SQLite and PostgreSQL: berth has
//! no display backend, so a workspace without a display is `display_not_enabled` and one with a
//! configured display is reported unavailable with its settings; unknown and removed workspaces
//! are 404s.

use axum::http::{Method, StatusCode};
use berth_domain::WorkspaceId;
use serde_json::json;

use crate::helpers::{ADMIN_TOKEN, Setup, TestApp};

async fn display(
    app: &TestApp,
    id: impl std::fmt::Display,
    bearer: Option<&str>,
) -> (StatusCode, serde_json::Value, String) {
    let resp = app
        .call(Method::GET, &format!("/workspaces/{id}/display"), bearer)
        .await;
    (resp.status, resp.json, resp.text)
}

async fn the_display_is_reported(postgres: bool) {
    let app = Setup {
        postgres,
        ..Setup::default()
    }
    .start()
    .await;
    let (plain, plain_token) = app.container("Plain").await;
    let (_, other_token) = app.container("Other").await;
    let desktop = app
        .create_id(json!({
            "name": "Desktop", "model": "openai/gpt-4o",
            "compute": {"display": {"mode": "desktop-control", "protocol": "dcv", "width": 1920, "height": 1080}},
        }))
        .await;
    let none = app
        .create_id(json!({
            "name": "NoDisplay", "model": "openai/gpt-4o",
            "compute": {"display": {"mode": "none"}},
        }))
        .await;
    app.service.drain().await;

    let (status, body, text) = display(&app, plain, Some(ADMIN_TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(
        body,
        json!({"available": false, "reason": "display_not_enabled"})
    );
    let (status, body, text) = display(&app, none, Some(ADMIN_TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(
        body,
        json!({"available": false, "reason": "display_not_enabled"})
    );
    let (status, body, text) = display(&app, desktop, Some(ADMIN_TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(
        body,
        json!({
            "available": false, "reason": "display_session_unavailable",
            "mode": "desktop-control", "protocol": "dcv", "width": 1920, "height": 1080,
            "status": "not_configured",
        })
    );

    // Admin only: no token, the workspace's own token and another's are all refused.
    let (status, body, _) = display(&app, plain, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body, json!({"error": "admin auth required"}));
    for token in [&plain_token, &other_token] {
        let (status, body, _) = display(&app, plain, Some(token)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body, json!({"error": "invalid admin auth token"}));
    }

    // A malformed id is a 400; unknown and removed workspaces are 404s.
    let (status, body, _) = display(&app, "not-a-uuid", Some(ADMIN_TOKEN)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body, json!({"error": "invalid workspace ID"}));
    let (status, body, _) = display(&app, WorkspaceId::new_v4(), Some(ADMIN_TOKEN)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, json!({"error": "workspace not found"}));
    let resp = app.delete(none, "").await;
    assert!(resp.status.is_success(), "{}", resp.text);
    let (status, body, _) = display(&app, none, Some(ADMIN_TOKEN)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, json!({"error": "workspace not found"}));

    // A stored configuration that is not valid (written behind berth's back) is a 500 that
    // names no detail.
    app.db
        .exec(r#"UPDATE workspaces SET compute = '{"display":{"mode":"vnc"}}' WHERE name = 'Desktop'"#)
        .await;
    let (status, body, _) = display(&app, desktop, Some(ADMIN_TOKEN)).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body, json!({"error": "invalid display config"}));
}

#[tokio::test]
async fn the_display_is_reported_sqlite() {
    the_display_is_reported(false).await;
}

#[tokio::test]
async fn the_display_is_reported_postgres() {
    the_display_is_reported(true).await;
}
