//! `Idempotency-Key` on create (DECISIONS.md §5): a retry replays the first result, a reused key
//! with another request is refused, and concurrent retries create one workspace.

use axum::body::Body;
use axum::http::{Method, StatusCode, header};
use serde_json::{Value, json};

use crate::helpers::{Resp, TestApp, admin, app, pg_app, send};

fn keyed(key: &str, body: &Value) -> axum::http::Request<Body> {
    admin(Method::POST, "/workspaces")
        .header(header::CONTENT_TYPE, "application/json")
        .header("idempotency-key", key)
        .body(Body::from(body.to_string()))
        .expect("request")
}

async fn post_keyed(app: &TestApp, key: &str, body: &Value) -> Resp {
    app.send(keyed(key, body)).await
}

#[tokio::test]
async fn a_retry_replays_the_first_response() {
    let app = app().await;
    let body = json!({"name": "idem", "runtime": "external"});
    let first = post_keyed(&app, "key-1", &body).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    assert_eq!(first.header("idempotent-replayed"), None);
    let second = post_keyed(&app, "key-1", &body).await;
    assert_eq!(second.status, StatusCode::CREATED, "{}", second.text);
    assert_eq!(second.header("idempotent-replayed"), Some("true"));
    // The same body, token included: the client may have lost the first answer.
    assert_eq!(second.json, first.json);
    assert_eq!(app.list().await.len(), 1);
    assert_eq!(app.db.count("workspaces").await, 1);
    assert_eq!(app.db.count("workspace_auth_tokens").await, 1);

    // Another key is another create.
    let third = post_keyed(&app, "key-2", &body).await;
    assert_eq!(third.status, StatusCode::CREATED);
    assert_ne!(third.json["id"], first.json["id"]);
    assert_eq!(app.list().await.len(), 2);
}

#[tokio::test]
async fn a_reused_key_with_another_request_is_refused() {
    let app = app().await;
    let first = post_keyed(
        &app,
        "key-1",
        &json!({"name": "a", "model": "openai/gpt-4o"}),
    )
    .await;
    assert_eq!(first.status, StatusCode::CREATED);
    let other = post_keyed(
        &app,
        "key-1",
        &json!({"name": "b", "model": "openai/gpt-4o"}),
    )
    .await;
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        other.json,
        json!({
            "error": "Idempotency-Key was already used with a different request",
            "code": "IDEMPOTENCY_KEY_REUSED",
        })
    );
    assert_eq!(app.db.count("workspaces").await, 1);
}

#[tokio::test]
async fn a_rejected_create_does_not_burn_its_key() {
    let app = app().await;
    let bad = post_keyed(&app, "key-1", &json!({"name": "x"})).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    app.assert_nothing_written("rejected keyed create").await;
    let good = post_keyed(
        &app,
        "key-1",
        &json!({"name": "x", "model": "openai/gpt-4o"}),
    )
    .await;
    assert_eq!(good.status, StatusCode::CREATED, "{}", good.text);
    assert_eq!(good.header("idempotent-replayed"), None);
}

#[tokio::test]
async fn malformed_keys_are_refused() {
    let app = app().await;
    let body = json!({"name": "x", "model": "openai/gpt-4o"});
    for key in ["", "   ", &"k".repeat(256)] {
        let resp = post_keyed(&app, key, &body).await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{key:?}");
        assert_eq!(
            resp.json,
            json!({"error": "Idempotency-Key must be 1 to 255 visible ASCII characters"})
        );
        app.assert_nothing_written(key).await;
    }
    let resp = post_keyed(&app, &"k".repeat(255), &body).await;
    assert_eq!(resp.status, StatusCode::CREATED);
}

/// Twenty concurrent requests with one key: all answer 201 with the same workspace.
async fn concurrent_retries_create_one_workspace(app: TestApp) {
    let body = json!({"name": "race", "model": "openai/gpt-4o", "secrets": {"K": "v"}});
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let router = app.router.clone();
        let req = keyed("race-key", &body);
        tasks.push(tokio::spawn(async move { send(&router, req).await }));
    }
    let mut ids = Vec::new();
    let mut replays = 0;
    for task in tasks {
        let resp = task.await.expect("request task");
        assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text);
        if resp.header("idempotent-replayed") == Some("true") {
            replays += 1;
        }
        ids.push(resp.json["id"].clone());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "different workspaces: {ids:?}");
    assert_eq!(replays, 19);
    app.service.drain().await;
    assert_eq!(app.db.count("workspaces").await, 1);
    assert_eq!(app.db.count("idempotency_keys").await, 1);
    assert_eq!(app.list().await.len(), 1);
    assert_eq!(app.list().await[0]["name"], "race");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_retries_create_one_workspace_sqlite() {
    concurrent_retries_create_one_workspace(app().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_retries_create_one_workspace_postgres() {
    concurrent_retries_create_one_workspace(pg_app().await).await;
}
