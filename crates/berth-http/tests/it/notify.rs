//! `POST /workspaces/{id}/notify` (REFERENCE-2.md §2.6) on SQLite and PostgreSQL: the message
//! becomes an `AGENT_MESSAGE` event and an activity row in one transaction; refusals write
//! nothing.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, Setup, TestApp};

async fn rows_and_events(app: &TestApp) -> (i64, i64) {
    (
        app.db.count("activity_logs").await,
        app.db.count("structure_events").await,
    )
}

async fn an_agent_messages_its_user(postgres: bool) {
    let app = Setup {
        postgres,
        ..Setup::default()
    }
    .start()
    .await;
    let (id, token) = app.container("Writer").await;
    let (other, _) = app.container("Other").await;
    let uri = format!("/workspaces/{id}/notify");
    let long = "x".repeat(100);
    let body = json!({"message": long, "attachments": [
        {"uri": "https://files.example/a.txt", "name": "a.txt", "mimeType": "text/plain", "size": 3}
    ]});
    let resp = app.post(&uri, Some(&token), &body).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.json, json!({"status": "sent"}));

    let file = json!({"uri": "https://files.example/a.txt", "name": "a.txt", "mimeType": "text/plain", "size": 3});
    let events = app.events_named(id, "AGENT_MESSAGE").await;
    assert_eq!(
        events,
        vec![
            json!({"message": long, "workspace_id": id.to_string(), "name": "Writer", "attachments": [file]})
        ]
    );
    let log = app.get(&format!("/workspaces/{id}/activity")).await;
    let row = &log.json[0];
    assert_eq!(row["activity_type"], "a2a_receive");
    assert_eq!(row["method"], "notify");
    assert_eq!(row["source_id"], Value::Null);
    assert_eq!(
        row["summary"],
        Value::from(format!("Agent message: {}…", "x".repeat(80)))
    );
    assert_eq!(
        row["response_body"],
        json!({"result": long, "parts": [{"kind": "file", "file": file}]})
    );
    assert_eq!(app.events_named(id, "ACTIVITY_LOGGED").await.len(), 1);

    // Refusals write nothing.
    let before = rows_and_events(&app).await;
    for (body, status, expected) in [
        (
            json!({}),
            StatusCode::BAD_REQUEST,
            json!({"error": "message is required"}),
        ),
        (
            json!({"message": ""}),
            StatusCode::BAD_REQUEST,
            json!({"error": "message is required"}),
        ),
        (
            json!({"message": 5}),
            StatusCode::BAD_REQUEST,
            json!({"error": "message is required"}),
        ),
        (
            json!({"message": "m", "attachments": [{"uri": "u", "name": "n"}, {"uri": "u"}]}),
            StatusCode::BAD_REQUEST,
            json!({"error": "attachment[1]: uri and name are required"}),
        ),
    ] {
        let resp = app.post(&uri, Some(&token), &body).await;
        assert_eq!(resp.status, status, "{body}: {}", resp.text);
        assert_eq!(resp.json, expected, "{body}");
    }
    // Only the workspace itself (or the admin) may speak for it.
    let resp = app
        .post(
            &format!("/workspaces/{other}/notify"),
            Some(&token),
            &json!({"message": "m"}),
        )
        .await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{}", resp.text);
    let resp = app.post(&uri, None, &json!({"message": "m"})).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{}", resp.text);
    assert_eq!(rows_and_events(&app).await, before);

    // talk_to_user disabled: 403 with the reference's hint, nothing written.
    let resp = app
        .send(crate::helpers::request(
            Method::PATCH,
            &format!("/workspaces/{id}/abilities"),
            Some(ADMIN_TOKEN),
            Some(&json!({"talk_to_user_enabled": false})),
        ))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    let before = rows_and_events(&app).await;
    let resp = app.post(&uri, Some(&token), &json!({"message": "m"})).await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN, "{}", resp.text);
    assert_eq!(resp.json["error"], "talk_to_user_disabled");
    assert!(
        resp.json["hint"]
            .as_str()
            .is_some_and(|h| h.contains("delegate_task"))
    );
    assert_eq!(rows_and_events(&app).await, before);

    // A removed workspace is not found (the admin may still call the route).
    let resp = app.delete(other, "").await;
    assert!(resp.status.is_success(), "{}", resp.text);
    let resp = app
        .post(
            &format!("/workspaces/{other}/notify"),
            Some(ADMIN_TOKEN),
            &json!({"message": "m"}),
        )
        .await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND, "{}", resp.text);
    assert_eq!(resp.json, json!({"error": "workspace not found"}));
}

#[tokio::test]
async fn an_agent_messages_its_user_sqlite() {
    an_agent_messages_its_user(false).await;
}

#[tokio::test]
async fn an_agent_messages_its_user_postgres() {
    an_agent_messages_its_user(true).await;
}
