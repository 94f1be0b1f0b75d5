//! `GET/PATCH /workspaces/{id}/config` (REFERENCE.md §2.19 with the REFERENCE-2.md §9.6 #53
//! fixes): a JSON object only, 256 KiB cap, shallow merge with `null` deleting a key, 404 for
//! unknown or removed workspaces.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use berth_domain::WorkspaceId;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, Resp, TestApp, app, err, pg_app};

async fn patch_raw(app: &TestApp, id: impl std::fmt::Display, bearer: &str, body: String) -> Resp {
    app.send(
        Request::builder()
            .method(Method::PATCH)
            .uri(format!("/workspaces/{id}/config"))
            .header(header::AUTHORIZATION, format!("Bearer {bearer}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .expect("request"),
    )
    .await
}

async fn get_data(app: &TestApp, id: WorkspaceId, bearer: &str) -> Value {
    let resp = app
        .call(
            Method::GET,
            &format!("/workspaces/{id}/config"),
            Some(bearer),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(
        resp.json.as_object().map(|o| o.len()),
        Some(1),
        "{}",
        resp.json
    );
    resp.json["data"].clone()
}

async fn merge_flow(app: TestApp) {
    let (id, token) = app.container("cfg").await;
    // No backend: create stored the reference's no-backend document; start from a fresh one.
    let start = get_data(&app, id, &token).await;
    assert!(start.is_object(), "{start}");

    let resp = patch_raw(&app, id, &token, json!({"a": 1, "b": {"x": 1}}).to_string()).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.json, json!({"status": "updated"}));
    let mut expected = start.as_object().cloned().unwrap_or_default();
    expected.insert("a".into(), json!(1));
    expected.insert("b".into(), json!({"x": 1}));
    assert_eq!(
        get_data(&app, id, &token).await,
        Value::Object(expected.clone())
    );

    // Shallow: `b` replaced whole; `a: null` deletes `a` (berth; the reference stored null).
    let resp = patch_raw(
        &app,
        id,
        &token,
        json!({"a": null, "b": {"y": 2}, "c": [1]}).to_string(),
    )
    .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    expected.remove("a");
    expected.insert("b".into(), json!({"y": 2}));
    expected.insert("c".into(), json!([1]));
    assert_eq!(
        get_data(&app, id, &token).await,
        Value::Object(expected.clone())
    );
    // Deleting every key leaves an empty object, never null.
    let all_null: serde_json::Map<String, Value> =
        expected.keys().map(|k| (k.clone(), Value::Null)).collect();
    let resp = patch_raw(&app, id, ADMIN_TOKEN, Value::Object(all_null).to_string()).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(get_data(&app, id, ADMIN_TOKEN).await, json!({}));
}

#[tokio::test]
async fn config_merges_shallowly_and_null_deletes() {
    merge_flow(app().await).await;
}

#[tokio::test]
async fn config_merges_shallowly_and_null_deletes_on_postgres() {
    merge_flow(pg_app().await).await;
}

#[tokio::test]
async fn config_refuses_non_objects_bad_json_and_big_bodies() {
    let app = app().await;
    let (id, token) = app.container("cfg-bad").await;
    let before = get_data(&app, id, &token).await;

    for body in ["[1, 2]", "null", "\"text\"", "42", "true"] {
        let resp = patch_raw(&app, id, &token, body.to_owned()).await;
        assert_eq!(
            resp.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            resp.text
        );
        assert_eq!(resp.json, err("config must be a JSON object"), "{body}");
    }
    for body in ["", "{bad", "{\"a\": 1"] {
        let resp = patch_raw(&app, id, &token, body.to_owned()).await;
        assert_eq!(
            resp.status,
            StatusCode::BAD_REQUEST,
            "{body:?}: {}",
            resp.text
        );
        assert_eq!(resp.json, err("invalid JSON"), "{body:?}");
    }

    // Exactly 256 KiB is accepted; one byte more is 413; so is a body past the router's limit.
    let limit = 256 * 1024;
    let frame = "{\"pad\":\"\"}".len();
    let fits = format!("{{\"pad\":\"{}\"}}", "x".repeat(limit - frame));
    assert_eq!(fits.len(), limit);
    let resp = patch_raw(&app, id, &token, fits).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(
        get_data(&app, id, &token).await["pad"]
            .as_str()
            .map(str::len),
        Some(limit - frame)
    );
    for size in [limit + 1, berth_http::DEFAULT_BODY_LIMIT + 1] {
        let body = format!("{{\"big\":\"{}\"}}", "y".repeat(size - frame + 1));
        assert!(body.len() >= size);
        let resp = patch_raw(&app, id, &token, body).await;
        assert_eq!(resp.status, StatusCode::PAYLOAD_TOO_LARGE, "{size}");
        assert_eq!(resp.json, err("body too large or unreadable"));
    }
    let after = get_data(&app, id, &token).await;
    assert!(after.get("big").is_none(), "refused bodies wrote nothing");
    assert_eq!(
        after.as_object().map(|o| o.len()),
        before.as_object().map(|o| o.len() + 1)
    );
}

#[tokio::test]
async fn config_of_unknown_removed_or_foreign_workspaces_is_refused() {
    let app = app().await;
    let (id, token) = app.container("cfg-own").await;
    let (other, _) = app.container("cfg-other").await;

    // Another workspace's token.
    let resp = app
        .call(
            Method::GET,
            &format!("/workspaces/{other}/config"),
            Some(&token),
        )
        .await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{}", resp.text);
    let resp = patch_raw(&app, other, &token, "{\"x\":1}".into()).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{}", resp.text);

    // Unknown: 404 on both (the reference answered GET with {} and PATCH with a 500).
    let unknown = WorkspaceId::new_v4();
    let resp = app
        .call(
            Method::GET,
            &format!("/workspaces/{unknown}/config"),
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND);
    assert_eq!(resp.json, err("workspace not found"));
    let rows = app.db.count("workspace_config").await;
    let resp = patch_raw(&app, unknown, ADMIN_TOKEN, "{\"x\":1}".into()).await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND);
    assert_eq!(resp.json, err("workspace not found"));

    // Removed: 404, nothing written.
    assert_eq!(app.delete(id, "").await.status, StatusCode::OK);
    let resp = patch_raw(&app, id, ADMIN_TOKEN, "{\"x\":1}".into()).await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND);
    assert_eq!(resp.json, err("workspace not found"));
    let resp = app
        .call(
            Method::GET,
            &format!("/workspaces/{id}/config"),
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND);
    assert_eq!(app.db.count("workspace_config").await, rows);
    let resp = patch_raw(&app, "not-a-uuid", ADMIN_TOKEN, "{}".into()).await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert_eq!(resp.json, err("invalid workspace ID"));
}
