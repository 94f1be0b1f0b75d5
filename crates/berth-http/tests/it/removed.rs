//! Every per-workspace route against a removed workspace (issue 19 point 6): each answers 404 or
//! 410 (or its documented answer) and writes nothing. The walk covers every route of the router
//! whose path names a workspace (`{id}`, `{workspace_id}`), checked against the route table in
//! the crate's sources, so a new route cannot be left out; the registry routes that take the id
//! in the body are walked too.

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use berth_domain::WorkspaceId;
use berth_store::NewQueueItem;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, Setup, TestApp};

/// What a route must answer for a removed workspace.
#[derive(Debug, Clone)]
enum Expect {
    /// 404 or 410 with a JSON `error`.
    Gone,
    /// Exactly this answer (a documented one).
    Exactly(StatusCode, Value),
    /// 200 with a JSON document: what the workspace left behind stays readable where the
    /// README says so (its event log, a queue item's fate).
    Readable,
}

/// One request of the walk.
struct Step {
    /// The route's path template as the router declares it.
    route: &'static str,
    method: Method,
    uri: String,
    body: Option<Value>,
    /// `X-Workspace-ID`.
    caller: Option<WorkspaceId>,
    expect: Expect,
}

/// The removed workspace and what it owned before removal, plus a live one.
struct Removed {
    id: WorkspaceId,
    token_id: String,
    queue_id: uuid::Uuid,
    live: WorkspaceId,
}

fn step(route: &'static str, method: Method, uri: String, body: Option<Value>) -> Step {
    Step {
        route,
        method,
        uri,
        body,
        caller: None,
        expect: Expect::Gone,
    }
}

/// Every per-workspace request, in router order.
fn steps(r: &Removed, dev: bool) -> Vec<Step> {
    let id = r.id;
    let w = |suffix: &str| format!("/workspaces/{id}{suffix}");
    let message = json!({"jsonrpc": "2.0", "id": 1, "method": "message/send",
                         "params": {"message": {"role": "user", "parts": [{"kind": "text", "text": "hi"}]}}});
    let mut out = vec![
        // 410 with `removed_at` (the reference's answer).
        step("/workspaces/{id}", Method::GET, w(""), None),
        step(
            "/workspaces/{id}",
            Method::PATCH,
            w(""),
            Some(json!({"name": "renamed", "role": "r"})),
        ),
        // Deleting again is allowed and changes nothing (README).
        Step {
            expect: Expect::Exactly(
                StatusCode::OK,
                json!({"status": "removed", "cascade_deleted": 0}),
            ),
            ..step("/workspaces/{id}", Method::DELETE, w(""), None)
        },
        // The reference's answer, which the canvas polls for.
        Step {
            expect: Expect::Exactly(
                StatusCode::NOT_FOUND,
                json!({"workspace_id": id, "status": "removed", "deleted": true}),
            ),
            ..step("/workspaces/{id}/state", Method::GET, w("/state"), None)
        },
        // README: restarting a removed workspace is a 409.
        Step {
            expect: Expect::Exactly(
                StatusCode::CONFLICT,
                json!({"error": "workspace is removed", "status": "removed"}),
            ),
            ..step(
                "/workspaces/{id}/restart",
                Method::POST,
                w("/restart"),
                Some(json!({})),
            )
        },
        step("/workspaces/{id}/pause", Method::POST, w("/pause"), None),
        step("/workspaces/{id}/resume", Method::POST, w("/resume"), None),
        step(
            "/workspaces/{id}/hibernate",
            Method::POST,
            w("/hibernate?force=true"),
            None,
        ),
        // The reference's answer (README: waking what is not hibernated is a 409).
        Step {
            expect: Expect::Exactly(
                StatusCode::CONFLICT,
                json!({"error": "workspace not found or not hibernated"}),
            ),
            ..step("/workspaces/{id}/wake", Method::POST, w("/wake"), None)
        },
        step(
            "/workspaces/{id}/abilities",
            Method::PATCH,
            w("/abilities"),
            Some(json!({"broadcast_enabled": true, "talk_to_user_enabled": true})),
        ),
        step("/workspaces/{id}/budget", Method::GET, w("/budget"), None),
        step(
            "/workspaces/{id}/budget",
            Method::PATCH,
            w("/budget"),
            Some(json!({"budget_limit": 500})),
        ),
        step("/workspaces/{id}/config", Method::GET, w("/config"), None),
        step(
            "/workspaces/{id}/config",
            Method::PATCH,
            w("/config"),
            Some(json!({"k": "v"})),
        ),
        step("/workspaces/{id}/console", Method::GET, w("/console"), None),
        step(
            "/workspaces/{id}/exec",
            Method::POST,
            w("/exec"),
            Some(json!({"cmd": ["true"]})),
        ),
        step("/workspaces/{id}/files", Method::GET, w("/files"), None),
        step(
            "/workspaces/{id}/files",
            Method::PUT,
            w("/files"),
            Some(json!({"files": {"a.md": "x"}})),
        ),
        step(
            "/workspaces/{id}/files/{path}",
            Method::GET,
            w("/files/a.md"),
            None,
        ),
        step(
            "/workspaces/{id}/files/{path}",
            Method::PUT,
            w("/files/a.md"),
            Some(json!({"content": "x"})),
        ),
        step(
            "/workspaces/{id}/files/{path}",
            Method::DELETE,
            w("/files/a.md"),
            None,
        ),
        step(
            "/workspaces/{id}/terminal",
            Method::GET,
            w("/terminal"),
            None,
        ),
        step(
            "/workspaces/{id}/terminal/diagnose",
            Method::GET,
            w("/terminal/diagnose"),
            None,
        ),
        step(
            "/admin/workspaces/{id}/bootstrap-failed",
            Method::POST,
            format!("/admin/workspaces/{id}/bootstrap-failed"),
            Some(json!({"error": "boom", "log_tail": "t"})),
        ),
        step("/workspaces/{id}/tokens", Method::GET, w("/tokens"), None),
        step("/workspaces/{id}/tokens", Method::POST, w("/tokens"), None),
        step(
            "/workspaces/{id}/tokens/{token_id}",
            Method::DELETE,
            w(&format!("/tokens/{}", r.token_id)),
            None,
        ),
        step(
            "/admin/workspaces/{id}/tokens",
            Method::POST,
            format!("/admin/workspaces/{id}/tokens"),
            None,
        ),
        step(
            "/workspaces/{id}/external/rotate",
            Method::POST,
            w("/external/rotate"),
            None,
        ),
        step(
            "/workspaces/{id}/external/connection",
            Method::GET,
            w("/external/connection"),
            None,
        ),
        step("/workspaces/{id}/secrets", Method::GET, w("/secrets"), None),
        step(
            "/workspaces/{id}/secrets",
            Method::POST,
            w("/secrets"),
            Some(json!({"key": "NEW_KEY", "value": "v"})),
        ),
        step(
            "/workspaces/{id}/secrets",
            Method::PUT,
            w("/secrets"),
            Some(json!({"key": "API_KEY", "value": "changed"})),
        ),
        step(
            "/workspaces/{id}/secrets/values",
            Method::GET,
            w("/secrets/values"),
            None,
        ),
        step(
            "/workspaces/{id}/secrets/values",
            Method::DELETE,
            w("/secrets/values"),
            None,
        ),
        step(
            "/workspaces/{id}/secrets/{key}",
            Method::DELETE,
            w("/secrets/API_KEY"),
            None,
        ),
        step("/workspaces/{id}/model", Method::GET, w("/model"), None),
        step(
            "/workspaces/{id}/model",
            Method::PUT,
            w("/model"),
            Some(json!({"model": "anthropic/claude"})),
        ),
        step(
            "/workspaces/{id}/provider",
            Method::GET,
            w("/provider"),
            None,
        ),
        step(
            "/workspaces/{id}/provider",
            Method::PUT,
            w("/provider"),
            Some(json!({"provider": "anthropic"})),
        ),
        // The event log keeps a removed workspace's events (its audit trail, ending with
        // `WORKSPACE_REMOVED`), as `GET /events` does.
        Step {
            expect: Expect::Readable,
            ..step(
                "/events/{workspace_id}",
                Method::GET,
                format!("/events/{id}"),
                None,
            )
        },
        step(
            "/workspaces/{id}/events/stream",
            Method::GET,
            w("/events/stream"),
            None,
        ),
        step(
            "/workspaces/{id}/activity",
            Method::GET,
            w("/activity"),
            None,
        ),
        step(
            "/workspaces/{id}/activity",
            Method::POST,
            w("/activity"),
            Some(json!({"activity_type": "agent_log", "summary": "after removal"})),
        ),
        step(
            "/workspaces/{id}/notify",
            Method::POST,
            w("/notify"),
            Some(json!({"message": "hello"})),
        ),
        step(
            "/workspaces/{id}/broadcast",
            Method::POST,
            w("/broadcast"),
            Some(json!({"message": "hello all"})),
        ),
        step("/workspaces/{id}/display", Method::GET, w("/display"), None),
        step(
            "/workspaces/{id}/a2a",
            Method::POST,
            w("/a2a"),
            Some(message.clone()),
        ),
        // The queue listing is the workspace's own view: gone with it.
        step(
            "/workspaces/{id}/a2a/queue",
            Method::GET,
            w("/a2a/queue"),
            None,
        ),
        // A queue item stays readable: its status tells the sender what became of the
        // message (the sweeper fails it with `workspace removed`).
        Step {
            expect: Expect::Readable,
            ..step(
                "/workspaces/{id}/a2a/queue/{queue_id}",
                Method::GET,
                w(&format!("/a2a/queue/{}", r.queue_id)),
                None,
            )
        },
        step(
            "/workspaces/{id}/session-search",
            Method::GET,
            w("/session-search?q=hello"),
            None,
        ),
        step(
            "/bundles/export/{id}",
            Method::GET,
            format!("/bundles/export/{id}"),
            None,
        ),
        // The registry: the removed workspace as the subject, and as the target of a live one.
        step(
            "/registry/register",
            Method::POST,
            "/registry/register".into(),
            Some(
                json!({"id": id.to_string(), "url": "https://agent.example.com/a2a",
                        "agent_card": {"name": "back"}, "delivery_mode": "push"}),
            ),
        ),
        step(
            "/registry/heartbeat",
            Method::POST,
            "/registry/heartbeat".into(),
            Some(json!({"workspace_id": id.to_string(), "active_tasks": 1,
                        "current_task": "resurrecting"})),
        ),
        step(
            "/registry/update-card",
            Method::POST,
            "/registry/update-card".into(),
            Some(json!({"workspace_id": id.to_string(), "agent_card": {"name": "x"}})),
        ),
        // REFERENCE-2.md §1.3 step 7: a target found in another status than online/degraded
        // is a 503 naming the status.
        Step {
            caller: Some(r.live),
            expect: Expect::Exactly(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "workspace not available", "status": "removed"}),
            ),
            ..step(
                "/registry/discover/{id}",
                Method::GET,
                format!("/registry/discover/{id}"),
                None,
            )
        },
        // REFERENCE-2.md §1.1: the hierarchy rule ignores status (two roots are siblings);
        // it answers a question and writes nothing.
        Step {
            expect: Expect::Exactly(StatusCode::OK, json!({"allowed": true})),
            ..step(
                "/registry/check-access",
                Method::POST,
                "/registry/check-access".into(),
                Some(json!({"caller_id": r.live.to_string(), "target_id": id.to_string()})),
            )
        },
        step(
            "/registry/{id}/peers",
            Method::GET,
            format!("/registry/{id}/peers"),
            None,
        ),
    ];
    if dev {
        out.push(step(
            "/admin/workspaces/{id}/test-token",
            Method::GET,
            format!("/admin/workspaces/{id}/test-token"),
            None,
        ));
    }
    out
}

/// The routes of the router whose path names a workspace, read from the OpenAPI document (which
/// lists exactly the router's routes, `openapi.rs`), so that the walk fails when a new one is
/// not in it.
fn per_workspace_routes() -> BTreeSet<String> {
    let doc = berth_http::openapi();
    let out: BTreeSet<String> = doc["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .filter(|route| route.contains("{id}") || route.contains("{workspace_id}"))
        .cloned()
        .collect();
    assert!(out.len() > 30, "the route table was not found: {out:?}");
    out
}

/// A removed external workspace that had a token, a secret, config, activity and a queued
/// message; and a live one.
async fn removed_workspace(app: &TestApp) -> Removed {
    let (id, token) = app
        .external(json!({"name": "gone", "runtime": "external",
                         "secrets": {"API_KEY": "k"}}))
        .await;
    let (live, _live_token) = app
        .external(json!({"name": "live", "runtime": "external"}))
        .await;
    let resp = app.register(id, Some(&token), Some("poll")).await;
    assert_eq!(resp.status, StatusCode::OK, "register: {}", resp.text);
    let resp = app
        .post(
            &format!("/workspaces/{id}/activity"),
            Some(&token),
            &json!({"activity_type": "agent_log", "summary": "hello"}),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "activity: {}", resp.text);
    let resp = app
        .send(crate::helpers::request(
            Method::PATCH,
            &format!("/workspaces/{id}/config"),
            Some(ADMIN_TOKEN),
            Some(&json!({"k": "before"})),
        ))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "config: {}", resp.text);
    let tokens = app.get(&format!("/workspaces/{id}/tokens")).await;
    let token_id = tokens.json["tokens"][0]["id"]
        .as_str()
        .expect("a token id")
        .to_owned();
    let queue_id = uuid::Uuid::new_v4();
    app.store
        .enqueue_a2a(NewQueueItem {
            id: queue_id,
            workspace_id: id,
            caller_id: None,
            body: r#"{"jsonrpc":"2.0","id":1,"method":"message/send","params":{}}"#.to_owned(),
            method: Some("message/send".to_owned()),
            idempotency_key: None,
            expires_at: None,
            enqueued_at: berth_store::now(),
            max_pending: 10,
        })
        .await
        .expect("enqueue");
    let resp = app.delete(id, "").await;
    assert_eq!(resp.status, StatusCode::OK, "delete: {}", resp.text);
    app.service.drain().await;
    Removed {
        id,
        token_id,
        queue_id,
        live,
    }
}

/// Sends `req`; an answer that is a stream (an SSE stream that was opened) is reported by its
/// head, without waiting for a body that never ends.
async fn answer(app: &TestApp, req: Request<Body>) -> (StatusCode, Value, String) {
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;
    let resp = app.router.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let streaming = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if streaming {
        return (status, Value::Null, "(an event stream)".to_owned());
    }
    let bytes = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        resp.into_body().collect(),
    )
    .await
    .expect("the answer's body within 10 s")
    .expect("read body")
    .to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, json, String::from_utf8_lossy(&bytes).into_owned())
}

/// Walks every step against `app` with `bearer`; returns the steps that answered otherwise or
/// wrote something, as readable lines.
async fn walk(app: &TestApp, r: &Removed, bearer: Option<&str>, dev: bool) -> Vec<String> {
    let mut wrong = Vec::new();
    for s in steps(r, dev) {
        let before = app.snapshot(&[r.id, r.live]).await;
        let mut req = Request::builder().method(s.method.clone()).uri(&s.uri);
        if let Some(t) = bearer {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if let Some(c) = s.caller {
            req = req.header("x-workspace-id", c.to_string());
        }
        let req = match &s.body {
            Some(b) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        }
        .expect("request");
        let (status, json, text) = answer(app, req).await;
        app.service.drain().await;
        let ok = match &s.expect {
            Expect::Gone => {
                matches!(status, StatusCode::NOT_FOUND | StatusCode::GONE)
                    && json["error"].is_string()
            }
            Expect::Exactly(expected, body) => status == *expected && json == *body,
            Expect::Readable => status == StatusCode::OK && (json.is_array() || json.is_object()),
        };
        if !ok {
            wrong.push(format!(
                "{} {} answered {status} {text} (expected {:?})",
                s.method, s.uri, s.expect
            ));
        }
        if app.snapshot(&[r.id, r.live]).await != before {
            wrong.push(format!("{} {} wrote to the database", s.method, s.uri));
        }
    }
    wrong
}

async fn every_route_refuses_a_removed_workspace(postgres: bool) {
    let walked: BTreeSet<String> = steps(
        &Removed {
            id: WorkspaceId::new_v4(),
            token_id: String::new(),
            queue_id: uuid::Uuid::nil(),
            live: WorkspaceId::new_v4(),
        },
        true,
    )
    .iter()
    .map(|s| s.route.to_owned())
    .collect();
    let routes = per_workspace_routes();
    let missing: Vec<&String> = routes.difference(&walked).collect();
    assert!(missing.is_empty(), "routes not walked: {missing:?}");

    // The admin bearer (the registry's token-only routes answer 401 to it: it is no
    // workspace), then `--dev` without a credential, where every route reaches its state check.
    for dev in [false, true] {
        let app = Setup {
            postgres,
            dev,
            ..Setup::default()
        }
        .start()
        .await;
        let r = removed_workspace(&app).await;
        let bearer = (!dev).then_some(ADMIN_TOKEN);
        let mut wrong = walk(&app, &r, bearer, dev).await;
        if !dev {
            // Token-only routes: the admin bearer is refused before any state check.
            let token_only = [
                "/registry/register",
                "/registry/heartbeat",
                "/registry/update-card",
                "/registry/discover/",
                "/peers",
            ];
            wrong.retain(|line| {
                !(token_only.iter().any(|t| line.contains(t)) && line.contains(" answered 401 "))
            });
        }
        assert!(
            wrong.is_empty(),
            "{} (dev: {dev}):\n{}",
            if postgres { "postgres" } else { "sqlite" },
            wrong.join("\n")
        );
    }
}

#[tokio::test]
async fn every_route_refuses_a_removed_workspace_sqlite() {
    every_route_refuses_a_removed_workspace(false).await;
}

#[tokio::test]
async fn every_route_refuses_a_removed_workspace_postgres() {
    every_route_refuses_a_removed_workspace(true).await;
}
