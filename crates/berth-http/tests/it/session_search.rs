//! `GET /workspaces/{id}/session-search` (REFERENCE-2.md §2.6) on SQLite and PostgreSQL: the
//! workspace's own activity rows, newest first, filtered case-insensitively with `%`/`_`
//! matching themselves, limit default 50 / cap 200, behind the workspace guard.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Setup, TestApp};

async fn log(app: &TestApp, id: impl std::fmt::Display, token: &str, body: Value) {
    let resp = app
        .post(&format!("/workspaces/{id}/activity"), Some(token), &body)
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
}

fn contents(resp: &crate::helpers::Resp) -> Vec<String> {
    resp.json
        .as_array()
        .unwrap_or_else(|| panic!("array: {}", resp.text))
        .iter()
        .map(|i| i["content"].as_str().expect("content").to_owned())
        .collect()
}

async fn searching_the_log(postgres: bool) {
    let app = Setup {
        postgres,
        ..Setup::default()
    }
    .start()
    .await;
    let (id, token) = app.container("Searcher").await;
    let (other, other_token) = app.container("Other").await;
    log(&app, id, &token, json!({"activity_type": "agent_log", "summary": "Deployed build 50% faster", "status": "ok"})).await;
    log(&app, id, &token, json!({"activity_type": "agent_log", "summary": "deployed build 50x faster", "method": "deploy"})).await;
    log(&app, id, &token, json!({"activity_type": "task_update", "summary": "snake_case rename", "response_body": {"note": "Needle in a body"}})).await;
    log(
        &app,
        id,
        &token,
        json!({"activity_type": "agent_log", "summary": "snakeXcase"}),
    )
    .await;
    log(
        &app,
        other,
        &other_token,
        json!({"activity_type": "agent_log", "summary": "deployed elsewhere"}),
    )
    .await;

    let search = |q: &str| {
        let uri = format!("/workspaces/{id}/session-search{q}");
        let token = token.clone();
        let app = &app;
        async move {
            app.send(crate::helpers::request(
                axum::http::Method::GET,
                &uri,
                Some(&token),
                None,
            ))
            .await
        }
    };

    // No term: every row of this workspace (only), newest first, in the item shape.
    let all = search("").await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.text);
    assert_eq!(
        contents(&all),
        [
            "snakeXcase",
            "snake_case rename",
            "deployed build 50x faster",
            "Deployed build 50% faster"
        ]
    );
    let item = &all.json[1];
    let mut keys: Vec<&str> = item
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "content",
            "created_at",
            "id",
            "kind",
            "label",
            "method",
            "response_body",
            "status",
            "workspace_id"
        ]
    );
    assert_eq!(item["kind"], "activity");
    assert_eq!(item["label"], "task_update");
    assert_eq!(item["workspace_id"], id.to_string());
    assert_eq!(item["response_body"], json!({"note": "Needle in a body"}));

    // Case-insensitive substring over summary, label, method, status and documents.
    assert_eq!(
        contents(&search("?q=DEPLOYED").await),
        ["deployed build 50x faster", "Deployed build 50% faster"]
    );
    assert_eq!(contents(&search("?q=needle").await), ["snake_case rename"]);
    assert_eq!(contents(&search("?q=TASK_up").await), ["snake_case rename"]);
    assert_eq!(
        contents(&search("?q=deploy&limit=1").await),
        ["deployed build 50x faster"]
    );
    // `%` and `_` match themselves, not any character (the reference's bug).
    assert_eq!(
        contents(&search("?q=50%25").await),
        ["Deployed build 50% faster"]
    );
    assert_eq!(
        contents(&search("?q=snake_case").await),
        ["snake_case rename"]
    );
    assert!(contents(&search("?q=%25%25%25").await).is_empty());
    assert!(contents(&search("?q=nothing-like-this").await).is_empty());

    // A term longer than the cap is a 400.
    let resp = search(&format!("?q={}", "a".repeat(1001))).await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{}", resp.text);

    // The workspace guard: no credential 401, another workspace's token refused.
    let anon = app
        .get_anon(&format!("/workspaces/{id}/session-search"))
        .await;
    assert_eq!(anon.status, StatusCode::UNAUTHORIZED, "{}", anon.text);
    let foreign = app
        .send(crate::helpers::request(
            axum::http::Method::GET,
            &format!("/workspaces/{id}/session-search"),
            Some(&other_token),
            None,
        ))
        .await;
    assert_eq!(foreign.status, StatusCode::UNAUTHORIZED, "{}", foreign.text);
    assert_eq!(
        foreign.json,
        json!({"error": "invalid workspace auth token"})
    );
}

async fn limit_default_and_cap(postgres: bool) {
    let app = Setup {
        postgres,
        ..Setup::default()
    }
    .start()
    .await;
    let (id, token) = app.container("Busy").await;
    for i in 0..205 {
        log(
            &app,
            id,
            &token,
            json!({"activity_type": "agent_log", "summary": format!("row {i}")}),
        )
        .await;
    }
    for (query, expected) in [
        ("", 50),
        ("?limit=abc", 50),
        ("?limit=0", 50),
        ("?limit=-3", 50),
        ("?limit=7", 7),
        ("?limit=200", 200),
        ("?limit=5000", 200),
    ] {
        let resp = app
            .get(&format!("/workspaces/{id}/session-search{query}"))
            .await;
        assert_eq!(resp.status, StatusCode::OK, "{query}: {}", resp.text);
        assert_eq!(
            resp.json.as_array().map(Vec::len),
            Some(expected),
            "{query}"
        );
    }
    let newest = app
        .get(&format!("/workspaces/{id}/session-search?limit=1"))
        .await;
    assert_eq!(newest.json[0]["content"], "row 204");
}

#[tokio::test]
async fn searching_the_log_sqlite() {
    searching_the_log(false).await;
}

#[tokio::test]
async fn searching_the_log_postgres() {
    searching_the_log(true).await;
}

#[tokio::test]
async fn limit_default_and_cap_sqlite() {
    limit_default_and_cap(false).await;
}

#[tokio::test]
async fn limit_default_and_cap_postgres() {
    limit_default_and_cap(true).await;
}
