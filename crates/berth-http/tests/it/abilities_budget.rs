//! `PATCH /workspaces/{id}/abilities` (REFERENCE.md §2.6) and `GET/PATCH …/budget` (§2.7): the
//! reference's bodies, messages and status codes, admin-only writes.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use berth_domain::WorkspaceId;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, Resp, TestApp, app, err, pg_app, request};

async fn raw(app: &TestApp, method: Method, uri: &str, bearer: &str, body: &'static str) -> Resp {
    app.send(
        Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {bearer}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .expect("request"),
    )
    .await
}

async fn patch_json(app: &TestApp, uri: &str, bearer: &str, body: Value) -> Resp {
    app.send(request(Method::PATCH, uri, Some(bearer), Some(&body)))
        .await
}

async fn abilities_flow(app: TestApp) {
    let (id, token) = app.container("abl").await;
    let uri = format!("/workspaces/{id}/abilities");
    let before = app.listed(id).await;
    assert_eq!(
        (
            &before["broadcast_enabled"],
            &before["talk_to_user_enabled"]
        ),
        (&json!(false), &json!(true))
    );

    let resp = patch_json(&app, &uri, ADMIN_TOKEN, json!({"broadcast_enabled": true})).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.json, json!({"status": "updated"}));
    let w = app.listed(id).await;
    assert_eq!(
        (&w["broadcast_enabled"], &w["talk_to_user_enabled"]),
        (&json!(true), &json!(true))
    );
    let resp = patch_json(
        &app,
        &uri,
        ADMIN_TOKEN,
        json!({"talk_to_user_enabled": false}),
    )
    .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    let w = app.listed(id).await;
    assert_eq!(
        (&w["broadcast_enabled"], &w["talk_to_user_enabled"]),
        (&json!(true), &json!(false)),
        "a field left out keeps its value"
    );

    // Refusals, in the reference's order.
    for (body, message) in [
        (json!({}), "at least one ability field required"),
        (
            json!({"broadcast_enabled": null}),
            "at least one ability field required",
        ),
        (
            json!({"unrelated": 1}),
            "at least one ability field required",
        ),
        (json!({"broadcast_enabled": "yes"}), "invalid request body"),
        (json!([true]), "invalid request body"),
    ] {
        let resp = patch_json(&app, &uri, ADMIN_TOKEN, body.clone()).await;
        assert_eq!(
            resp.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            resp.text
        );
        assert_eq!(resp.json, err(message), "{body}");
    }
    let resp = raw(&app, Method::PATCH, &uri, ADMIN_TOKEN, "{nope").await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert_eq!(resp.json, err("invalid request body"));
    let resp = patch_json(
        &app,
        "/workspaces/not-a-uuid/abilities",
        ADMIN_TOKEN,
        json!({"broadcast_enabled": true}),
    )
    .await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert_eq!(resp.json, err("invalid workspace ID"));
    let unknown = WorkspaceId::new_v4();
    let resp = patch_json(
        &app,
        &format!("/workspaces/{unknown}/abilities"),
        ADMIN_TOKEN,
        json!({"broadcast_enabled": true}),
    )
    .await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND);
    assert_eq!(resp.json, err("workspace not found"));

    // Admin only: the workspace's own token cannot grant itself abilities.
    let resp = patch_json(&app, &uri, &token, json!({"broadcast_enabled": false})).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{}", resp.text);
    assert_eq!(app.listed(id).await["broadcast_enabled"], true);

    // Removed: 404.
    assert_eq!(app.delete(id, "").await.status, StatusCode::OK);
    let resp = patch_json(&app, &uri, ADMIN_TOKEN, json!({"broadcast_enabled": false})).await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND);
    assert_eq!(resp.json, err("workspace not found"));
}

#[tokio::test]
async fn abilities_are_set_by_the_admin_only() {
    abilities_flow(app().await).await;
}

#[tokio::test]
async fn abilities_are_set_by_the_admin_only_on_postgres() {
    abilities_flow(pg_app().await).await;
}

async fn budget_flow(app: TestApp) {
    let (id, token) = app.container("budget").await;
    let uri = format!("/workspaces/{id}/budget");

    let resp = app.call(Method::GET, &uri, Some(&token)).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(
        resp.json,
        json!({"budget_limit": null, "monthly_spend": 0, "budget_remaining": null})
    );

    let resp = patch_json(&app, &uri, ADMIN_TOKEN, json!({"budget_limit": 1000})).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(
        resp.json,
        json!({"budget_limit": 1000, "monthly_spend": 0, "budget_remaining": 1000})
    );
    // Spend reported by the agent's heartbeat counts against it.
    app.heartbeat_ok(id, &token, json!({"monthly_spend": 250}))
        .await;
    let resp = app.call(Method::GET, &uri, Some(&token)).await;
    assert_eq!(
        resp.json,
        json!({"budget_limit": 1000, "monthly_spend": 250, "budget_remaining": 750})
    );
    // Fractions are truncated; zero is allowed; overspend shows as a negative remainder.
    let resp = patch_json(&app, &uri, ADMIN_TOKEN, json!({"budget_limit": 99.9})).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(
        resp.json,
        json!({"budget_limit": 99, "monthly_spend": 250, "budget_remaining": -151})
    );
    let resp = patch_json(&app, &uri, ADMIN_TOKEN, json!({"budget_limit": 0})).await;
    assert_eq!(resp.json["budget_limit"], 0);
    // null clears.
    let resp = patch_json(&app, &uri, ADMIN_TOKEN, json!({"budget_limit": null})).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(
        resp.json,
        json!({"budget_limit": null, "monthly_spend": 250, "budget_remaining": null})
    );

    for (body, message) in [
        (json!({}), "budget_limit field is required"),
        (json!({"limit": 5}), "budget_limit field is required"),
        (
            json!({"budget_limit": -1}),
            "budget_limit must be >= 0 (USD cents)",
        ),
        (
            json!({"budget_limit": -0.5}),
            "budget_limit must be >= 0 (USD cents)",
        ),
        (
            json!({"budget_limit": "100"}),
            "budget_limit must be an integer (USD cents) or null",
        ),
        (
            json!({"budget_limit": true}),
            "budget_limit must be an integer (USD cents) or null",
        ),
        (
            json!({"budget_limit": 1e300}),
            "budget_limit must be an integer (USD cents) or null",
        ),
    ] {
        let resp = patch_json(&app, &uri, ADMIN_TOKEN, body.clone()).await;
        assert_eq!(
            resp.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            resp.text
        );
        assert_eq!(resp.json, err(message), "{body}");
    }
    assert_eq!(
        app.row(id).await.budget_limit,
        None,
        "refusals wrote nothing"
    );

    // The workspace cannot raise its own budget (DECISIONS.md §2.4).
    let resp = patch_json(&app, &uri, &token, json!({"budget_limit": 1_000_000})).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{}", resp.text);
    assert_eq!(app.row(id).await.budget_limit, None);

    // Unknown and removed: 404 on both methods.
    let unknown = format!("/workspaces/{}/budget", WorkspaceId::new_v4());
    let resp = app.call(Method::GET, &unknown, Some(ADMIN_TOKEN)).await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND);
    assert_eq!(resp.json, err("workspace not found"));
    let resp = patch_json(&app, &unknown, ADMIN_TOKEN, json!({"budget_limit": 1})).await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND);
    assert_eq!(resp.json, err("workspace not found"));
    assert_eq!(app.delete(id, "").await.status, StatusCode::OK);
    let resp = app.call(Method::GET, &uri, Some(ADMIN_TOKEN)).await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND);
    let resp = patch_json(&app, &uri, ADMIN_TOKEN, json!({"budget_limit": 1})).await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND);
    assert_eq!(resp.json, err("workspace not found"));
}

#[tokio::test]
async fn budget_reads_and_admin_writes() {
    budget_flow(app().await).await;
}

#[tokio::test]
async fn budget_reads_and_admin_writes_on_postgres() {
    budget_flow(pg_app().await).await;
}
