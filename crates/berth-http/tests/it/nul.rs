//! berth's one rule for client text (issue 19 point 3): a NUL character (U+0000) anywhere in a
//! request's JSON strings or keys, or in a query parameter, is a 400 naming the field, on SQLite
//! and PostgreSQL alike, and changes nothing. PostgreSQL refuses NUL in TEXT and JSONB, so each
//! of these routes used to answer 500 there while SQLite stored the text.

use axum::http::{Method, StatusCode};
use berth_domain::WorkspaceId;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, Resp, Setup, TestApp};

/// The 400 naming `field`.
fn refusal(field: &str) -> Value {
    json!({"error": format!("{field} must not contain NUL characters"), "field": field})
}

/// Sends `method uri` with `body` (raw JSON text) and an optional bearer.
async fn send(
    app: &TestApp,
    method: Method,
    uri: &str,
    bearer: Option<&str>,
    body: Option<&Value>,
) -> Resp {
    app.send(crate::helpers::request(method, uri, bearer, body))
        .await
}

/// The workspaces every case runs against: `container` (provisioning, no backend), and
/// `external`, a registered poll-mode external workspace, with its token.
struct Fixture {
    container: WorkspaceId,
    external: WorkspaceId,
    token: String,
}

async fn fixture(app: &TestApp) -> Fixture {
    let container = app
        .create_id(json!({"name": "box", "model": "openai/gpt-4o"}))
        .await;
    // Its provisioning (no backend: it fails) settles before any snapshot is taken.
    app.service.drain().await;
    let (external, token) = app
        .external(json!({"name": "ext", "runtime": "external"}))
        .await;
    let resp = app.register(external, Some(&token), Some("poll")).await;
    assert_eq!(resp.status, StatusCode::OK, "register: {}", resp.text);
    // Something for the reads to find.
    let resp = send(
        app,
        Method::POST,
        &format!("/workspaces/{external}/activity"),
        Some(&token),
        Some(&json!({"activity_type": "agent_log", "summary": "hello"})),
    )
    .await;
    assert_eq!(resp.status, StatusCode::OK, "activity: {}", resp.text);
    Fixture {
        container,
        external,
        token,
    }
}

/// One refused request: what to send and which field the answer must name.
struct Case {
    what: &'static str,
    method: Method,
    uri: String,
    bearer: String,
    body: Option<Value>,
    field: &'static str,
}

fn cases(f: &Fixture) -> Vec<Case> {
    let admin = ADMIN_TOKEN.to_owned();
    let (c, e, token) = (f.container, f.external, f.token.clone());
    let case = |what, method, uri: String, bearer: &String, body: Option<Value>, field| Case {
        what,
        method,
        uri,
        bearer: bearer.clone(),
        body,
        field,
    };
    vec![
        case(
            "create name",
            Method::POST,
            "/workspaces".into(),
            &admin,
            Some(json!({"name": "a\u{0}b", "model": "openai/gpt-4o"})),
            "name",
        ),
        case(
            "create role",
            Method::POST,
            "/workspaces".into(),
            &admin,
            Some(json!({"name": "r", "role": "\u{0}", "model": "openai/gpt-4o"})),
            "role",
        ),
        case(
            "bundle import",
            Method::POST,
            "/bundles/import".into(),
            &admin,
            Some(json!({"name": "B\u{0}", "runtime": "echo", "model": "echo/echo-1"})),
            "name",
        ),
        case(
            "PATCH name",
            Method::PATCH,
            format!("/workspaces/{c}"),
            &admin,
            Some(json!({"name": "n\u{0}"})),
            "name",
        ),
        case(
            "config key",
            Method::PATCH,
            format!("/workspaces/{c}/config"),
            &admin,
            Some(json!({"k\u{0}": 1})),
            "k\\u0000",
        ),
        case(
            "config value",
            Method::PATCH,
            format!("/workspaces/{c}/config"),
            &admin,
            Some(json!({"k": {"deep": ["v\u{0}"]}})),
            "k.deep[0]",
        ),
        case(
            "activity summary",
            Method::POST,
            format!("/workspaces/{e}/activity"),
            &token,
            Some(json!({"activity_type": "agent_log", "summary": "s\u{0}"})),
            "summary",
        ),
        case(
            "activity metadata",
            Method::POST,
            format!("/workspaces/{e}/activity"),
            &token,
            Some(json!({"activity_type": "agent_log", "metadata": {"x": "\u{0}"}})),
            "metadata.x",
        ),
        case(
            "notify",
            Method::POST,
            format!("/workspaces/{e}/notify"),
            &token,
            Some(json!({"message": "m\u{0}"})),
            "message",
        ),
        case(
            "bootstrap-failed",
            Method::POST,
            format!("/admin/workspaces/{c}/bootstrap-failed"),
            &admin,
            Some(json!({"error": "boom\u{0}", "log_tail": ""})),
            "error",
        ),
        case(
            "register url",
            Method::POST,
            "/registry/register".into(),
            &token,
            Some(
                json!({"id": e.to_string(), "url": "https://agent.example.com/\u{0}",
                        "agent_card": {"name": "ext"}}),
            ),
            "url",
        ),
        case(
            "heartbeat sample_error",
            Method::POST,
            "/registry/heartbeat".into(),
            &token,
            Some(json!({"workspace_id": e.to_string(), "sample_error": "\u{0}"})),
            "sample_error",
        ),
        case(
            "heartbeat current_task",
            Method::POST,
            "/registry/heartbeat".into(),
            &token,
            Some(json!({"workspace_id": e.to_string(), "current_task": "t\u{0}"})),
            "current_task",
        ),
        case(
            "A2A to a poll target",
            Method::POST,
            format!("/workspaces/{e}/a2a"),
            &admin,
            Some(json!({"jsonrpc": "2.0", "id": 1, "method": "message/send",
                        "params": {"message": {"role": "user",
                                               "parts": [{"kind": "text", "text": "hi\u{0}"}]}}})),
            "params.message.parts[0].text",
        ),
        case(
            "activity ?type=",
            Method::GET,
            format!("/workspaces/{e}/activity?type=%00"),
            &token,
            None,
            "type",
        ),
        case(
            "session-search ?q=",
            Method::GET,
            format!("/workspaces/{e}/session-search?q=a%00"),
            &token,
            None,
            "q",
        ),
    ]
}

async fn every_route_refuses_a_nul(postgres: bool) {
    let app = Setup {
        postgres,
        ..Setup::default()
    }
    .start()
    .await;
    let f = fixture(&app).await;
    let ids = [f.container, f.external];
    for case in cases(&f) {
        let before = app.snapshot(&ids).await;
        let resp = send(
            &app,
            case.method.clone(),
            &case.uri,
            Some(&case.bearer),
            case.body.as_ref(),
        )
        .await;
        assert_eq!(
            resp.status,
            StatusCode::BAD_REQUEST,
            "{} ({}): {}",
            case.what,
            if postgres { "postgres" } else { "sqlite" },
            resp.text
        );
        assert_eq!(resp.json, refusal(case.field), "{}", case.what);
        app.service.drain().await;
        assert_eq!(app.snapshot(&ids).await, before, "{} wrote", case.what);
    }
    // The same requests without the NUL still work: the rule is about the character only.
    let resp = send(
        &app,
        Method::GET,
        &format!("/workspaces/{}/session-search?q=hello", f.external),
        Some(&f.token),
        None,
    )
    .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert!(resp.json.is_array(), "{}", resp.text);
    let resp = send(
        &app,
        Method::PATCH,
        &format!("/workspaces/{}/config", f.container),
        Some(ADMIN_TOKEN),
        Some(&json!({"k": "\\u0000 is six characters here"})),
    )
    .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
}

#[tokio::test]
async fn every_route_refuses_a_nul_sqlite() {
    every_route_refuses_a_nul(false).await;
}

#[tokio::test]
async fn every_route_refuses_a_nul_postgres() {
    every_route_refuses_a_nul(true).await;
}

/// A NUL in any query parameter, even one the route does not read, and in a body the route
/// reads only in part (restart's `template`), is refused the same way.
#[tokio::test]
async fn unread_parameters_and_partly_read_bodies_are_checked_too() {
    let app = crate::helpers::app().await;
    let id = app
        .create_id(json!({"name": "w", "model": "openai/gpt-4o"}))
        .await;
    app.service.drain().await;
    let before = app.snapshot(&[id]).await;
    let resp = app
        .get(&format!("/workspaces/{id}/activity?limit=5&x%00=1"))
        .await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{}", resp.text);
    assert_eq!(resp.json, refusal("x\\u0000"));
    let resp = send(
        &app,
        Method::POST,
        &format!("/workspaces/{id}/restart"),
        Some(ADMIN_TOKEN),
        Some(&json!({"template": "echo", "note": "\u{0}"})),
    )
    .await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{}", resp.text);
    assert_eq!(resp.json, refusal("note"));
    app.service.drain().await;
    assert_eq!(app.snapshot(&[id]).await, before);
}
