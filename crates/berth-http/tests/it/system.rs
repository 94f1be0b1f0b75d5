//! `/health`, `/buildinfo`, the JSON 404 fallback and the request body limit.

use axum::http::StatusCode;
use serde_json::json;

use crate::helpers::{Db, GIT_SHA, Setup, app};

#[tokio::test]
async fn health_and_buildinfo_are_open() {
    let app = app().await;
    let resp = app.get_anon("/health").await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.json, json!({"status": "ok"}));
    let resp = app.get_anon("/buildinfo").await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.json["git_sha"], GIT_SHA);
    assert!(resp.json["version"].is_string());
}

#[tokio::test]
async fn health_reports_an_unreachable_database() {
    let app = app().await;
    let Db::Sqlite(store) = &app.db else {
        unreachable!("the default app runs on SQLite")
    };
    store.pool().close().await;
    let resp = app.get_anon("/health").await;
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.json, json!({"status": "unavailable"}));
}

#[tokio::test]
async fn unknown_routes_are_json_404s() {
    let app = app().await;
    for uri in ["/nope", "/workspaces/a/b/c", "/"] {
        let resp = app.get_anon(uri).await;
        assert_eq!(resp.status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(resp.json, json!({"error": "not found"}), "{uri}");
    }
}

#[tokio::test]
async fn bodies_over_the_limit_are_413() {
    let app = Setup {
        body_limit: 256,
        ..Setup::default()
    }
    .start()
    .await;
    let big = json!({"name": "x", "model": "openai/gpt-4o", "role": "r".repeat(300)});
    let resp = app.create(big).await;
    assert_eq!(resp.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(resp.json, json!({"error": "request body too large"}));
    app.assert_nothing_written("413").await;
    let small = json!({"name": "x", "model": "openai/gpt-4o", "role": "r".repeat(100)});
    assert_eq!(app.create(small).await.status, StatusCode::CREATED);
}

#[tokio::test]
async fn the_default_limit_is_one_mebibyte() {
    let app = app().await;
    let over = format!(
        "{{\"name\":\"x\",\"model\":\"openai/gpt-4o\",\"role\":\"{}\"}}",
        "r".repeat(berth_http::DEFAULT_BODY_LIMIT)
    );
    let resp = app.create_raw(over).await;
    assert_eq!(resp.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(resp.json, json!({"error": "request body too large"}));
    app.assert_nothing_written("1 MiB").await;
    // Just under the limit the body is read (and then refused for its 1000-byte role cap).
    let under = format!(
        "{{\"name\":\"x\",\"model\":\"openai/gpt-4o\",\"role\":\"{}\"}}",
        "r".repeat(berth_http::DEFAULT_BODY_LIMIT - 100)
    );
    let resp = app.create_raw(under).await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert_eq!(resp.json, json!({"error": "invalid workspace fields"}));
}
