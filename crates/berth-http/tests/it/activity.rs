//! `POST` and `GET /workspaces/{id}/activity` (REFERENCE-2.md §2.3, §2.5): validation and
//! errors, the `ACTIVITY_LOGGED` event, filters, ordering and the `since_id` cursor.

use axum::http::{Method, StatusCode};
use berth_domain::WorkspaceId;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, Resp, TestApp, app, err, pg_app};

fn uri(id: impl std::fmt::Display) -> String {
    format!("/workspaces/{id}/activity")
}

async fn log(app: &TestApp, id: WorkspaceId, token: &str, body: Value) -> Resp {
    app.post(&uri(id), Some(token), &body).await
}

async fn list(app: &TestApp, id: WorkspaceId, token: &str, query: &str) -> Resp {
    app.call(Method::GET, &format!("{}{query}", uri(id)), Some(token))
        .await
}

async fn list_ok(app: &TestApp, id: WorkspaceId, token: &str, query: &str) -> Vec<Value> {
    let resp = list(app, id, token, query).await;
    assert_eq!(resp.status, StatusCode::OK, "{query}: {}", resp.text);
    resp.json.as_array().expect("array").clone()
}

async fn agent(app: &TestApp, name: &str) -> (WorkspaceId, String) {
    app.external(json!({"name": name, "runtime": "external"}))
        .await
}

#[tokio::test]
async fn a_report_is_stored_with_its_event() {
    let app = app().await;
    let (id, token) = agent(&app, "alpha").await;
    let peer = WorkspaceId::new_v4();
    let resp = log(
        &app,
        id,
        &token,
        json!({
            "activity_type": "task_update", "method": "", "summary": "did a thing",
            "target_id": peer.to_string(), "status": "", "duration_ms": 12,
            "metadata": {"k": [1, 2]}, "response_body": {"ok": true},
            "error_detail": "failed with Bearer abcdefghijklmnopqrstuvwxyz0123456789", "unknown": 1
        }),
    )
    .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.json, json!({"status": "logged"}));

    let rows = list_ok(&app, id, &token, "").await;
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    let mut keys: Vec<&str> = row
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "activity_type",
            "created_at",
            "duration_ms",
            "error_detail",
            "id",
            "method",
            "request_body",
            "response_body",
            "source_id",
            "status",
            "summary",
            "target_id",
            "workspace_id"
        ]
    );
    assert_eq!(row["workspace_id"], id.to_string());
    assert_eq!(row["source_id"], id.to_string());
    assert_eq!(row["target_id"], peer.to_string());
    assert_eq!(row["method"], Value::Null);
    assert_eq!(row["status"], "ok");
    assert_eq!(row["duration_ms"], 12);
    assert_eq!(row["request_body"], json!({"k": [1, 2]}));
    assert_eq!(row["response_body"], json!({"ok": true}));
    // The row keeps the raw text; the event's copy is redacted.
    assert_eq!(
        row["error_detail"],
        "failed with Bearer abcdefghijklmnopqrstuvwxyz0123456789"
    );
    assert!(
        chrono::DateTime::parse_from_rfc3339(row["created_at"].as_str().unwrap()).is_ok(),
        "{row}"
    );

    let events = app.events_named(id, "ACTIVITY_LOGGED").await;
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e["id"], row["id"]);
    assert_eq!(e["activity_type"], "task_update");
    assert_eq!(e["summary"], "did a thing");
    assert_eq!(e["request_body"], json!({"k": [1, 2]}));
    let detail = e["error_detail"].as_str().unwrap();
    assert!(
        !detail.contains("abcdefghijklmnopqrstuvwxyz0123456789"),
        "{detail}"
    );
}

#[tokio::test]
async fn reports_are_validated() {
    let app = app().await;
    let (id, token) = agent(&app, "alpha").await;
    let bad = [
        json!("x"),
        json!({}),
        json!({"activity_type": ""}),
        json!({"activity_type": 5}),
        json!({"activity_type": "agent_log", "summary": 5}),
        json!({"activity_type": "agent_log", "duration_ms": "fast"}),
        json!({"activity_type": "agent_log", "duration_ms": 1.5}),
        json!({"activity_type": "agent_log", "target_id": "not-a-uuid"}),
    ];
    for body in bad {
        let resp = log(&app, id, &token, body.clone()).await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(resp.json, err("invalid request body"), "{body}");
    }
    let resp = app.post_raw(&uri(id), Some(&token), "{not json").await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    let resp = log(&app, id, &token, json!({"activity_type": "delegation"})).await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        resp.json,
        err(
            "invalid activity_type, must be one of: a2a_send, a2a_receive, task_update, agent_log, skill_promotion, memory_write, error"
        )
    );
    let other = WorkspaceId::new_v4();
    let resp = log(
        &app,
        id,
        &token,
        json!({"activity_type": "agent_log", "source_id": other.to_string()}),
    )
    .await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN);
    assert_eq!(
        resp.json,
        err("source_id must match authenticated workspace")
    );
    // Its own id is fine.
    let resp = log(
        &app,
        id,
        &token,
        json!({"activity_type": "agent_log", "source_id": id.to_string()}),
    )
    .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(list_ok(&app, id, &token, "").await.len(), 1);
    assert_eq!(app.events_named(id, "ACTIVITY_LOGGED").await.len(), 1);
}

#[tokio::test]
async fn activity_routes_need_the_workspace_or_the_admin() {
    let app = app().await;
    let (id, token) = agent(&app, "alpha").await;
    let (_, other_token) = agent(&app, "beta").await;
    let body = json!({"activity_type": "agent_log"});
    let resp = app.post(&uri(id), None, &body).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    let resp = app.post(&uri(id), Some(&other_token), &body).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    let resp = list(&app, id, &other_token, "").await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        log(&app, id, ADMIN_TOKEN, body.clone()).await.status,
        StatusCode::OK
    );
    assert_eq!(list_ok(&app, id, &token, "").await.len(), 1);
    // berth: a report for a workspace that does not exist is an error, not a silent 200.
    let resp = log(&app, WorkspaceId::new_v4(), ADMIN_TOKEN, body).await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND);
    assert_eq!(resp.json, err("workspace not found"));
}

#[tokio::test]
async fn listing_queries_are_validated() {
    let app = app().await;
    let (id, token) = agent(&app, "alpha").await;
    let cases = [
        (
            "?peer_id=nope",
            StatusCode::BAD_REQUEST,
            err("peer_id must be a UUID"),
        ),
        (
            "?before_ts=yesterday",
            StatusCode::BAD_REQUEST,
            err("before_ts must be an RFC3339 timestamp (e.g. 2026-05-01T00:00:00Z)"),
        ),
        (
            "?since_secs=0",
            StatusCode::BAD_REQUEST,
            err("since_secs must be a positive integer"),
        ),
        (
            "?since_secs=abc",
            StatusCode::BAD_REQUEST,
            err("since_secs must be a positive integer"),
        ),
        (
            "?source=robot",
            StatusCode::BAD_REQUEST,
            err("source must be 'canvas' or 'agent'"),
        ),
        (
            "?since_id=nope",
            StatusCode::BAD_REQUEST,
            err("since_id must be a UUID"),
        ),
        (
            &format!("?since_id={}", WorkspaceId::new_v4()),
            StatusCode::GONE,
            err(
                "since_id cursor not found (row may have been pruned or belongs to a different workspace); omit since_id to reset",
            ),
        ),
    ];
    for (query, status, body) in cases {
        let resp = list(&app, id, &token, query).await;
        assert_eq!(resp.status, status, "{query}: {}", resp.text);
        assert_eq!(resp.json, body, "{query}");
    }
    // limit never errors; unknown types give an empty list.
    for q in [
        "?limit=abc",
        "?limit=-1",
        "?limit=100000",
        "?type=nope",
        "?since_secs=99999999",
    ] {
        assert_eq!(
            list_ok(&app, id, &token, q).await,
            Vec::<Value>::new(),
            "{q}"
        );
    }
}

/// Filters, limits, ordering and the cursor (shared by both backends).
async fn listing_filters_and_pages(app: TestApp) {
    let (id, token) = agent(&app, "alpha").await;
    let (other, other_token) = agent(&app, "beta").await;
    let peer = WorkspaceId::new_v4();
    for (kind, summary) in [
        ("agent_log", "one"),
        ("task_update", "two"),
        ("agent_log", "three"),
        ("agent_log", "four"),
    ] {
        let mut body = json!({"activity_type": kind, "summary": summary});
        if summary == "two" {
            body["target_id"] = json!(peer.to_string());
        }
        assert_eq!(log(&app, id, &token, body).await.status, StatusCode::OK);
    }
    assert_eq!(
        log(
            &app,
            other,
            &other_token,
            json!({"activity_type": "agent_log"})
        )
        .await
        .status,
        StatusCode::OK
    );
    let summaries = |rows: Vec<Value>| -> Vec<String> {
        rows.iter()
            .map(|r| r["summary"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        summaries(list_ok(&app, id, &token, "").await),
        ["four", "three", "two", "one"]
    );
    assert_eq!(
        summaries(list_ok(&app, id, &token, "?type=agent_log&limit=2").await),
        ["four", "three"]
    );
    assert_eq!(
        summaries(list_ok(&app, id, &token, &format!("?peer_id={peer}")).await),
        ["two"]
    );
    assert_eq!(
        summaries(list_ok(&app, id, &token, "?source=agent&since_secs=60").await).len(),
        4
    );
    assert!(list_ok(&app, id, &token, "?source=canvas").await.is_empty());
    assert!(
        list_ok(&app, id, &token, "?before_ts=2000-01-01T00:00:00.5Z")
            .await
            .is_empty()
    );
    // Page forward from the oldest row: oldest first, nothing skipped or repeated.
    let all = list_ok(&app, id, &token, "").await;
    let oldest = all.last().unwrap()["id"].as_str().unwrap().to_owned();
    let mut cursor = oldest;
    let mut seen = Vec::new();
    loop {
        let page = list_ok(&app, id, &token, &format!("?since_id={cursor}&limit=2")).await;
        if page.is_empty() {
            break;
        }
        cursor = page.last().unwrap()["id"].as_str().unwrap().to_owned();
        seen.extend(summaries(page));
    }
    assert_eq!(seen, ["two", "three", "four"]);
    // A cursor of another workspace is not ours.
    let theirs = list_ok(&app, other, &other_token, "").await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let resp = list(&app, id, &token, &format!("?since_id={theirs}")).await;
    assert_eq!(resp.status, StatusCode::GONE);
}

#[tokio::test]
async fn listing_filters_and_pages_sqlite() {
    listing_filters_and_pages(app().await).await;
}

#[tokio::test]
async fn listing_filters_and_pages_postgres() {
    listing_filters_and_pages(pg_app().await).await;
}

#[tokio::test]
async fn retention_prunes_old_rows() {
    let app = app().await;
    let (id, token) = agent(&app, "alpha").await;
    for _ in 0..3 {
        log(&app, id, &token, json!({"activity_type": "agent_log"})).await;
    }
    app.db
        .exec("UPDATE activity_logs SET created_at = '2000-01-01 00:00:00+00:00' WHERE summary IS NULL")
        .await;
    log(
        &app,
        id,
        &token,
        json!({"activity_type": "agent_log", "summary": "fresh"}),
    )
    .await;
    let pruned = app
        .service
        .prune_activity(std::time::Duration::from_secs(24 * 3600))
        .await
        .expect("prune");
    assert_eq!(pruned, 3);
    let left = list_ok(&app, id, &token, "").await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["summary"], "fresh");
}

#[tokio::test]
async fn the_retention_loop_stops_on_request() {
    let app = app().await;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let svc = app.service.clone();
    let handle = tokio::spawn(async move {
        svc.run_activity_retention(berth_core::ActivityRetention::default(), rx)
            .await;
    });
    tx.send(true).expect("send stop");
    tokio::time::timeout(std::time::Duration::from_secs(30), handle)
        .await
        .expect("loop stopped")
        .expect("loop did not panic");
}
