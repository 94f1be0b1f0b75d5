//! `POST /workspaces/{id}/a2a` (REFERENCE-2.md §4): caller rules, normalisation, push delivery
//! to a real A2A server on 127.0.0.1, poll delivery into the inbox, the mock runtime, and every
//! failure answer of §4.15 this slice implements.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{Method, Request, StatusCode, header};
use axum::routing::post;
use berth_domain::WorkspaceId;
use berth_domain::status::Transition;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, Resp, Setup, TestApp, err, started_provisioner};

/// An in-test A2A agent on 127.0.0.1: `/echo` answers JSON-RPC with what it received; other
/// paths misbehave in one way each. Every body it receives is kept, raw.
struct Agent {
    base: String,
    received: Arc<Mutex<Vec<Bytes>>>,
}

impl Agent {
    async fn start() -> Self {
        let received: Arc<Mutex<Vec<Bytes>>> = Arc::default();
        let seen = received.clone();
        let echo = move |body: Bytes| {
            let seen = seen.clone();
            async move {
                seen.lock().expect("received").push(body.clone());
                let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let reply = json!({"jsonrpc": "2.0", "id": req["id"], "result": {"echo": req}});
                ([(header::CONTENT_TYPE, "text/plain")], reply.to_string())
            }
        };
        let router = Router::new()
            .route("/echo", post(echo))
            .route(
                "/hang",
                post(|| async {
                    std::future::pending::<()>().await;
                    ""
                }),
            )
            .route(
                "/redirect",
                post(|| async {
                    (
                        StatusCode::FOUND,
                        [(header::LOCATION, "http://169.254.169.254/latest/meta-data")],
                        "",
                    )
                }),
            )
            .route(
                "/explode",
                post(|| async {
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        r#"{"error":"agent exploded"}"#,
                    )
                }),
            )
            .route(
                "/teapot",
                post(|| async { (StatusCode::IM_A_TEAPOT, "no") }),
            )
            .route("/empty", post(|| async { StatusCode::OK }))
            .route("/garbage", post(|| async { "this is not json" }))
            .route(
                "/huge",
                post(|| async {
                    let filler = "x".repeat(11 * 1024 * 1024);
                    format!("{{\"jsonrpc\":\"2.0\",\"result\":\"{filler}\"}}")
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind agent");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            axum::serve(listener, router).await.expect("agent server");
        });
        Agent { base, received }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn received(&self) -> Vec<Bytes> {
        self.received.lock().expect("received").clone()
    }
}

/// A port nothing listens on.
async fn refused_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    format!("http://127.0.0.1:{port}/")
}

async fn loopback_app() -> TestApp {
    Setup {
        loopback: true,
        ..Setup::default()
    }
    .start()
    .await
}

/// An external workspace online at `url`, with a token.
async fn agent_ws(
    app: &TestApp,
    name: &str,
    url: &str,
    parent: Option<WorkspaceId>,
) -> (WorkspaceId, String) {
    let mut body = json!({"name": name, "runtime": "external", "url": url});
    if let Some(p) = parent {
        body["parent_id"] = json!(p.to_string());
    }
    let id = app.create_id(body).await;
    assert_eq!(app.status_of(id).await, "online");
    (id, app.admin_mint(id).await)
}

/// `POST /workspaces/{target}/a2a` with an optional bearer, `X-Workspace-ID` and `X-Timeout`.
async fn a2a(
    app: &TestApp,
    target: impl std::fmt::Display,
    bearer: Option<&str>,
    caller: Option<&str>,
    body: impl Into<Body>,
) -> Resp {
    a2a_with(app, target, bearer, caller, None, body).await
}

async fn a2a_with(
    app: &TestApp,
    target: impl std::fmt::Display,
    bearer: Option<&str>,
    caller: Option<&str>,
    timeout: Option<&str>,
    body: impl Into<Body>,
) -> Resp {
    let mut b = Request::builder()
        .method(Method::POST)
        .uri(format!("/workspaces/{target}/a2a"))
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = bearer {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    if let Some(c) = caller {
        b = b.header("X-Workspace-ID", c);
    }
    if let Some(t) = timeout {
        b = b.header("X-Timeout", t);
    }
    app.send(b.body(body.into()).expect("request")).await
}

fn message(text: &str) -> String {
    json!({"method": "message/send", "params": {"message": {"role": "user", "content": text}}})
        .to_string()
}

/// The target's activity rows, newest first, read as admin.
async fn rows(app: &TestApp, id: WorkspaceId) -> Vec<Value> {
    let resp = app.get(&format!("/workspaces/{id}/activity")).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    resp.json.as_array().expect("array").clone()
}

#[tokio::test]
async fn push_delivers_normalised_message_and_relays_the_reply() {
    let app = loopback_app().await;
    let agent = Agent::start().await;
    let (b, _) = agent_ws(&app, "bee", &agent.url("/echo"), None).await;

    let resp = a2a(&app, b, Some(ADMIN_TOKEN), None, message("hello")).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let sent = &resp.json["result"]["echo"];
    assert_eq!(sent["jsonrpc"], "2.0");
    assert_eq!(sent["method"], "message/send");
    assert_eq!(resp.json["id"], sent["id"]);
    assert_eq!(
        sent["params"]["message"]["parts"],
        json!([{"kind": "text", "text": "hello"}])
    );
    assert!(sent["params"]["message"]["messageId"].is_string());

    let logged = rows(&app, b).await;
    assert_eq!(logged.len(), 1, "{logged:?}");
    let row = &logged[0];
    assert_eq!(row["activity_type"], "a2a_receive");
    assert_eq!(row["status"], "ok");
    assert_eq!(row["source_id"], Value::Null);
    assert_eq!(row["target_id"], b.to_string());
    assert_eq!(row["method"], "message/send");
    assert_eq!(row["summary"], "message/send → bee");
    assert_eq!(row["request_body"], *sent);
    assert_eq!(row["response_body"], resp.json);
    assert!(row["duration_ms"].is_i64());

    let logged_events = app.events_named(b, "ACTIVITY_LOGGED").await;
    assert_eq!(logged_events.len(), 1);
    assert_eq!(logged_events[0]["id"], row["id"]);
    assert_eq!(logged_events[0]["activity_type"], "a2a_receive");
    let responses = app.events_named(b, "A2A_RESPONSE").await;
    assert_eq!(
        responses,
        vec![
            json!({"response_body": resp.json, "method": "message/send", "duration_ms": row["duration_ms"]})
        ]
    );
}

#[tokio::test]
async fn envelopes_are_forwarded_byte_for_byte() {
    let app = loopback_app().await;
    let agent = Agent::start().await;
    let (b, _) = agent_ws(&app, "bee", &agent.url("/echo"), None).await;
    let input = r#"{"jsonrpc":"2.0","id":98765432109876543210,"method":"message/send","params":{"z":1,"message":{"role":"user","parts":[{"kind":"text","text":"<&>"}],"messageId":"m-1"},"a":1.0}}"#;
    let resp = a2a(&app, b, Some(ADMIN_TOKEN), None, input).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(agent.received(), vec![Bytes::from_static(input.as_bytes())]);
}

#[tokio::test]
async fn callers_follow_the_hierarchy_and_need_a_credential() {
    let app = loopback_app().await;
    let agent = Agent::start().await;
    let url = agent.url("/echo");
    let (parent, _) = agent_ws(&app, "parent", &url, None).await;
    let (a, a_token) = agent_ws(&app, "a", &url, Some(parent)).await;
    let (b, b_token) = agent_ws(&app, "b", &url, Some(parent)).await;
    let (other, _) = agent_ws(&app, "other", &url, None).await;
    let (_cousin, cousin_token) = agent_ws(&app, "cousin", &url, Some(other)).await;
    let body = message("hi");

    // A sibling may; the row names it as the sender.
    let resp = a2a(&app, b, Some(&a_token), None, body.clone()).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(rows(&app, b).await[0]["source_id"], a.to_string());
    // Naming itself in the header changes nothing.
    let resp = a2a(&app, b, Some(&a_token), Some(&a.to_string()), body.clone()).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);

    // A cousin may not.
    let resp = a2a(&app, b, Some(&cousin_token), None, body.clone()).await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN);
    assert_eq!(
        resp.json,
        err("access denied: workspaces cannot communicate per hierarchy rules")
    );

    // No credential: refused, even when the header names the target itself (no self bypass).
    for caller in [None, Some(b.to_string()), Some(a.to_string())] {
        let resp = a2a(&app, b, None, caller.as_deref(), body.clone()).await;
        assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{caller:?}");
        assert_eq!(resp.json, err("missing caller auth token"));
    }
    // A bearer that is no live token, or a token of another workspace than the header names.
    let resp = a2a(&app, b, Some("not-a-token"), None, body.clone()).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert_eq!(resp.json, err("invalid caller auth token"));
    let resp = a2a(
        &app,
        b,
        Some(&cousin_token),
        Some(&a.to_string()),
        body.clone(),
    )
    .await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert_eq!(resp.json, err("invalid caller auth token"));
    // The target's own token talking to itself is an authenticated self-call.
    let resp = a2a(&app, b, Some(&b_token), None, body.clone()).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);

    // Reserved and malformed caller ids.
    for caller in ["webhook:github", "system:x", "channel:slack", "not-a-uuid"] {
        let resp = a2a(&app, b, Some(ADMIN_TOKEN), Some(caller), body.clone()).await;
        assert_eq!(resp.status, StatusCode::FORBIDDEN, "{caller}");
        assert_eq!(resp.json, err("invalid caller ID"));
    }
    // The admin (the user) may talk to anyone, and may name who it acts for.
    let resp = a2a(
        &app,
        b,
        Some(ADMIN_TOKEN),
        Some(&other.to_string()),
        body.clone(),
    )
    .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(rows(&app, b).await[0]["source_id"], other.to_string());
    // Three deliveries were logged (sibling twice, self once) plus the admin's.
    assert_eq!(rows(&app, b).await.len(), 4);
    assert_eq!(agent.received().len(), 4);
}

#[tokio::test]
async fn dev_mode_believes_a_token_less_caller_only() {
    let app = Setup {
        dev: true,
        ..Setup::default()
    }
    .start()
    .await;
    let agent = Agent::start().await;
    let url = agent.url("/echo");
    let (b, _) = agent_ws(&app, "b", &url, None).await;
    let resp = a2a(&app, b, None, None, message("hi")).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    // A caller that has a token must present it, even in dev.
    let (c, _) = agent_ws(&app, "c", &url, None).await;
    let resp = a2a(&app, b, None, Some(&c.to_string()), message("hi")).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert_eq!(resp.json, err("missing caller auth token"));
}

#[tokio::test]
async fn bad_payloads_and_unknown_targets_are_refused_before_delivery() {
    let app = loopback_app().await;
    let agent = Agent::start().await;
    let (b, _) = agent_ws(&app, "bee", &agent.url("/echo"), None).await;
    for bad in ["[1]", "not json", "\"s\"", ""] {
        let resp = a2a(&app, b, Some(ADMIN_TOKEN), None, bad).await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(resp.json, err("invalid JSON"), "{bad}");
    }
    let resp = a2a(
        &app,
        b,
        Some(ADMIN_TOKEN),
        None,
        r#"{"method":"message/send","params":{"message":{"content":5}}}"#,
    )
    .await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        resp.json,
        json!({"error": "invalid params.message.content type", "hint": "content must be a string (v0.2 compat) or omitted in favour of parts (v0.3)"})
    );
    let resp = a2a(
        &app,
        b,
        Some(ADMIN_TOKEN),
        None,
        r#"{"method":"message/send","params":{"message":{"role":"user"}}}"#,
    )
    .await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        resp.json["error"],
        "params.message must contain either 'parts' (v0.3) or 'content' (v0.2 compat)"
    );
    // Past the body limit: a clear 413, never a silently truncated message.
    let big = format!(
        r#"{{"method":"message/send","params":{{"message":{{"content":"{}"}}}}}}"#,
        "y".repeat(2 * 1024 * 1024)
    );
    let resp = a2a(&app, b, Some(ADMIN_TOKEN), None, big).await;
    assert_eq!(resp.status, StatusCode::PAYLOAD_TOO_LARGE);
    let resp = a2a(
        &app,
        WorkspaceId::new_v4(),
        Some(ADMIN_TOKEN),
        None,
        message("x"),
    )
    .await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND);
    assert_eq!(resp.json, err("workspace not found"));
    let resp = a2a(&app, "nope", Some(ADMIN_TOKEN), None, message("x")).await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert_eq!(resp.json, err("invalid workspace ID"));
    // Removed targets are gone.
    assert_eq!(app.delete(b, "").await.status, StatusCode::OK);
    let resp = a2a(&app, b, Some(ADMIN_TOKEN), None, message("x")).await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND, "{}", resp.text);
    // Over budget.
    let (c, _) = agent_ws(&app, "cee", &agent.url("/echo"), None).await;
    app.db
        .exec("UPDATE workspaces SET budget_limit = 10, monthly_spend = 10 WHERE name = 'cee'")
        .await;
    let resp = a2a(&app, c, Some(ADMIN_TOKEN), None, message("x")).await;
    assert_eq!(resp.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(resp.json, err("workspace budget limit exceeded"));
    assert!(agent.received().is_empty());
    assert!(rows(&app, c).await.is_empty());
}

#[tokio::test]
async fn targets_that_are_not_online_get_503() {
    let app = loopback_app().await;
    let agent = Agent::start().await;
    // No URL yet.
    let (waiting, _) = app
        .external(json!({"name": "waiting", "runtime": "external"}))
        .await;
    let resp = a2a(&app, waiting, Some(ADMIN_TOKEN), None, message("x")).await;
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        resp.json,
        json!({"error": "workspace has no URL", "status": "awaiting_agent"})
    );
    // A URL but offline.
    let (off, _) = agent_ws(&app, "off", &agent.url("/echo"), None).await;
    app.force(off, &[Transition::WentOffline]).await;
    let resp = a2a(&app, off, Some(ADMIN_TOKEN), None, message("x")).await;
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        resp.json,
        json!({"error": "workspace not available", "status": "offline"})
    );
    // Hibernated: the wake is requested and the caller told to retry.
    let (sleepy, _) = agent_ws(&app, "sleepy", &agent.url("/echo"), None).await;
    app.force(
        sleepy,
        &[Transition::HibernateStarted, Transition::Hibernated],
    )
    .await;
    let resp = a2a(&app, sleepy, Some(ADMIN_TOKEN), None, message("x")).await;
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.header("retry-after"), Some("15"));
    assert_eq!(
        resp.json,
        json!({"error": "workspace is waking from hibernation — retry in ~15 seconds", "waking": true, "retry_after": 15})
    );
    assert!(agent.received().is_empty());
}

#[tokio::test]
async fn unsafe_urls_and_redirects_are_never_followed() {
    let app = loopback_app().await;
    let agent = Agent::start().await;
    let (b, _) = agent_ws(&app, "bee", &agent.url("/redirect"), None).await;
    let resp = a2a(&app, b, Some(ADMIN_TOKEN), None, message("x")).await;
    assert_eq!(resp.status, StatusCode::BAD_GATEWAY, "{}", resp.text);
    assert_eq!(
        resp.json,
        json!({"error": "workspace agent answered with a redirect; redirects are not followed", "status": 302})
    );
    let row = &rows(&app, b).await[0];
    assert_eq!(row["status"], "error");

    // A stored URL that resolves to a private address is refused at dispatch.
    let (c, _) = agent_ws(&app, "cee", &agent.url("/echo"), None).await;
    app.db
        .exec("UPDATE workspaces SET url = 'http://internal.example.com:8000/' WHERE name = 'cee'")
        .await;
    let resp = a2a(&app, c, Some(ADMIN_TOKEN), None, message("x")).await;
    assert_eq!(resp.status, StatusCode::BAD_GATEWAY);
    assert_eq!(resp.json, err("workspace URL is not publicly routable"));
    // So is loopback when the policy does not allow it.
    let strict = Setup::default().start().await;
    let id = strict
        .create_id(json!({"name": "ext", "runtime": "external"}))
        .await;
    strict
        .db
        .exec(&format!(
            "UPDATE workspaces SET url = '{}', status = 'online' WHERE name = 'ext'",
            agent.url("/echo")
        ))
        .await;
    let resp = a2a(&strict, id, Some(ADMIN_TOKEN), None, message("x")).await;
    assert_eq!(resp.status, StatusCode::BAD_GATEWAY);
    assert_eq!(resp.json, err("workspace URL is not publicly routable"));
    assert!(agent.received().is_empty());
}

#[tokio::test]
async fn agent_failures_map_to_defined_answers() {
    let app = loopback_app().await;
    let agent = Agent::start().await;
    let cases = [
        (
            "/explode",
            StatusCode::INTERNAL_SERVER_ERROR,
            err("agent exploded"),
        ),
        ("/teapot", StatusCode::IM_A_TEAPOT, err("I'm a teapot")),
        (
            "/empty",
            StatusCode::OK,
            err("agent returned empty response body"),
        ),
        (
            "/garbage",
            StatusCode::BAD_GATEWAY,
            err("agent returned invalid JSON"),
        ),
        (
            "/huge",
            StatusCode::BAD_GATEWAY,
            err("agent response too large"),
        ),
    ];
    for (i, (path, status, body)) in cases.into_iter().enumerate() {
        let (id, _) = agent_ws(&app, &format!("w{i}"), &agent.url(path), None).await;
        let resp = a2a(&app, id, Some(ADMIN_TOKEN), None, message("x")).await;
        assert_eq!(resp.status, status, "{path}: {}", resp.text);
        assert_eq!(resp.json, body, "{path}");
        // No A2A_RESPONSE for a failed call.
        assert!(
            app.events_named(id, "A2A_RESPONSE").await.is_empty(),
            "{path}"
        );
    }
}

#[tokio::test]
async fn an_agent_that_never_answers_is_cut_off_by_x_timeout() {
    let app = loopback_app().await;
    let agent = Agent::start().await;
    let (b, _) = agent_ws(&app, "bee", &agent.url("/hang"), None).await;
    let resp = a2a_with(&app, b, Some(ADMIN_TOKEN), None, Some("1"), message("x")).await;
    assert_eq!(resp.status, StatusCode::GATEWAY_TIMEOUT, "{}", resp.text);
    assert_eq!(
        resp.json,
        json!({"error": "workspace agent did not answer in time", "timeout_seconds": 1})
    );
    let row = &rows(&app, b).await[0];
    assert_eq!(row["status"], "error");
    assert_eq!(row["error_detail"], "no answer within 1 s");
}

/// A process-kind provisioner whose workspaces run at `url` and are never running.
fn dead_provisioner(url: String) -> berth_provision::MockProvisioner {
    let mut mock = berth_provision::MockProvisioner::new();
    mock.expect_kind()
        .return_const(berth_provision::BackendKind::Process);
    mock.expect_start().returning(move |_| {
        Ok(berth_provision::Started {
            url: Some(url.clone()),
            instance_id: Some("proc-1".into()),
        })
    });
    mock.expect_stop().returning(|_| Ok(()));
    mock.expect_is_running().returning(|_| Ok(false));
    mock.expect_wait_exit().returning(|_| Ok(None));
    mock
}

/// Issue #12: outside `--dev`, the platform talks to the agents it started itself. A URL its own
/// provisioner reported (here a loopback one, as the process backend's) is dispatched to as
/// reported; the same loopback URL supplied by a user at create is still refused by the SSRF
/// policy (502), on both stores.
async fn provisioner_urls_are_trusted_and_supplied_ones_checked(postgres: bool) {
    let agent = Agent::start().await;
    let app = Setup {
        postgres,
        provisioner: Arc::new(dead_provisioner(agent.url("/echo"))),
        ..Setup::default()
    }
    .start()
    .await;
    let (id, token) = app.container("ours").await;
    let resp = app.register(id, Some(&token), None).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    let row = app.row(id).await;
    assert_eq!(row.url.as_deref(), Some(agent.url("/echo").as_str()));
    assert!(row.url_from_provisioner);
    let resp = a2a(&app, id, Some(ADMIN_TOKEN), None, message("hi")).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(agent.received().len(), 1);

    // A user-supplied loopback URL: refused at create outside --dev, as before.
    let resp = app
        .post(
            "/workspaces",
            Some(ADMIN_TOKEN),
            &json!({"name": "theirs", "runtime": "external", "url": agent.url("/echo")}),
        )
        .await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{}", resp.text);
    assert_eq!(agent.received().len(), 1, "nothing reached the agent");
}

#[tokio::test]
async fn provisioner_urls_are_trusted_and_supplied_ones_checked_sqlite() {
    provisioner_urls_are_trusted_and_supplied_ones_checked(false).await;
}

#[tokio::test]
async fn provisioner_urls_are_trusted_and_supplied_ones_checked_postgres() {
    provisioner_urls_are_trusted_and_supplied_ones_checked(true).await;
}

#[tokio::test]
async fn a_dead_container_gets_a_restart() {
    let app = Setup {
        loopback: true,
        provisioner: Arc::new(dead_provisioner(refused_url().await)),
        ..Setup::default()
    }
    .start()
    .await;
    let (id, token) = app.container("dead").await;
    let resp = app.register(id, Some(&token), None).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(app.status_of(id).await, "online");
    let before = app.events_named(id, "WORKSPACE_PROVISIONING").await.len();

    let resp = a2a(&app, id, Some(ADMIN_TOKEN), None, message("x")).await;
    assert_eq!(
        resp.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        resp.text
    );
    assert_eq!(
        resp.json,
        json!({"error": "workspace agent unreachable — container restart triggered", "restarting": true})
    );
    app.service.drain().await;
    assert_eq!(
        app.events_named(id, "WORKSPACE_PROVISIONING").await.len(),
        before + 1,
        "a restart cycle ran"
    );
    let failure = rows(&app, id)
        .await
        .into_iter()
        .find(|r| r["status"] == "error")
        .expect("failure row");
    assert!(
        failure["summary"]
            .as_str()
            .unwrap()
            .starts_with("A2A request to dead failed: "),
        "{failure}"
    );
    assert!(
        !failure["error_detail"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1"),
        "the agent URL stays out of the row: {failure}"
    );
}

#[tokio::test]
async fn a_refused_connection_to_a_running_agent_is_a_502() {
    let app = Setup {
        loopback: true,
        provisioner: Arc::new(started_provisioner(|_| Ok(true))),
        ..Setup::default()
    }
    .start()
    .await;
    let (id, _) = agent_ws(&app, "ext", &refused_url().await, None).await;
    let resp = a2a(&app, id, Some(ADMIN_TOKEN), None, message("x")).await;
    assert_eq!(resp.status, StatusCode::BAD_GATEWAY, "{}", resp.text);
    assert_eq!(resp.json, err("failed to reach workspace agent"));
    assert_eq!(app.service.restarts_in_flight().await, 0);
}

#[tokio::test]
async fn mock_runtime_answers_with_a_canned_reply() {
    let app = loopback_app().await;
    let id = app
        .create_id(json!({"name": "mocky", "runtime": "mock", "model": "openai/gpt-4o"}))
        .await;
    let body = r#"{"jsonrpc":"2.0","id":"req-1","method":"message/send","params":{"message":{"role":"user","parts":[]}}}"#;
    let first = a2a(&app, id, Some(ADMIN_TOKEN), None, body).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    assert_eq!(first.json["id"], "req-1");
    assert!(first.json["result"]["parts"][0]["text"].is_string());
    let again = a2a(&app, id, Some(ADMIN_TOKEN), None, body).await;
    assert_eq!(again.json, first.json, "deterministic");
    let logged = rows(&app, id).await;
    assert_eq!(logged.len(), 2);
    assert_eq!(logged[0]["duration_ms"], 0);
}

/// Poll mode on both backends: the message lands in the inbox, the target reads it with its
/// own token and pages with `since_id`.
async fn poll_mode_queues_into_the_inbox(app: TestApp) {
    let (parent, parent_token) = app
        .external(json!({"name": "parent", "runtime": "external"}))
        .await;
    let created = app
        .create_ok(json!({"name": "poller", "runtime": "external", "delivery_mode": "poll", "parent_id": parent.to_string()}))
        .await;
    let poller = crate::helpers::id_of(&created);
    let poller_token = app.admin_mint(poller).await;

    let resp = a2a(&app, poller, Some(&parent_token), None, message("first")).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(
        resp.json,
        json!({"status": "queued", "delivery_mode": "poll", "method": "message/send"})
    );
    let inbox = app
        .call(
            Method::GET,
            &format!("/workspaces/{poller}/activity?type=a2a_receive"),
            Some(&poller_token),
        )
        .await;
    assert_eq!(inbox.status, StatusCode::OK, "{}", inbox.text);
    let first = inbox.json[0].clone();
    assert_eq!(first["source_id"], parent.to_string());
    assert_eq!(first["summary"], "message/send → poller (queued for poll)");
    assert_eq!(
        first["request_body"]["params"]["message"]["parts"][0]["text"],
        "first"
    );

    for text in ["second", "third"] {
        let resp = a2a(&app, poller, Some(&parent_token), None, message(text)).await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    }
    let page = app
        .call(
            Method::GET,
            &format!(
                "/workspaces/{poller}/activity?since_id={}",
                first["id"].as_str().unwrap()
            ),
            Some(&poller_token),
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    let texts: Vec<&str> = page
        .json
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r["request_body"]["params"]["message"]["parts"][0]["text"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(texts, ["second", "third"]);
    assert_eq!(app.events_named(poller, "ACTIVITY_LOGGED").await.len(), 3);
}

#[tokio::test]
async fn poll_mode_queues_into_the_inbox_sqlite() {
    poll_mode_queues_into_the_inbox(Setup::default().start().await).await;
}

#[tokio::test]
async fn poll_mode_queues_into_the_inbox_postgres() {
    poll_mode_queues_into_the_inbox(crate::helpers::pg_app().await).await;
}

#[tokio::test]
async fn a_message_to_a_hibernated_container_wakes_it() {
    let app = Setup {
        loopback: true,
        provisioner: Arc::new(started_provisioner(|_| Ok(true))),
        ..Setup::default()
    }
    .start()
    .await;
    let (id, token) = app.container("sleepy").await;
    let resp = app.register(id, Some(&token), None).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    app.force(id, &[Transition::HibernateStarted, Transition::Hibernated])
        .await;
    let resp = a2a(&app, id, Some(ADMIN_TOKEN), None, message("wake up")).await;
    assert_eq!(
        resp.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        resp.text
    );
    assert_eq!(resp.header("retry-after"), Some("15"));
    assert_eq!(resp.json["waking"], true);
    app.service.drain().await;
    assert_eq!(app.status_of(id).await, "provisioning");
    // A second message while it wakes is told to retry, not queued or lost silently.
    let resp = a2a(&app, id, Some(ADMIN_TOKEN), None, message("again")).await;
    assert_eq!(
        resp.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        resp.text
    );
}

// ---- The busy queue (§4.12) -------------------------------------------------------------

/// An A2A agent whose listener closes every new connection unanswered while `busy` is set
/// (what a saturated agent does), and otherwise echoes the text of each message, with token
/// usage, recording the order it received them in.
struct BusyAgent {
    url: String,
    busy: Arc<std::sync::atomic::AtomicBool>,
    texts: Arc<Mutex<Vec<String>>>,
    /// When non-zero, every message is answered with this status and `{"error":"overloaded"}`.
    fail_with: Arc<std::sync::atomic::AtomicU16>,
}

struct SwitchListener {
    inner: tokio::net::TcpListener,
    busy: Arc<std::sync::atomic::AtomicBool>,
}

impl axum::serve::Listener for SwitchListener {
    type Io = tokio::net::TcpStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (io, addr) = axum::serve::Listener::accept(&mut self.inner).await;
            if self.busy.load(std::sync::atomic::Ordering::SeqCst) {
                drop(io);
                continue;
            }
            return (io, addr);
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

impl BusyAgent {
    async fn start() -> Self {
        let busy = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let texts: Arc<Mutex<Vec<String>>> = Arc::default();
        let fail_with = Arc::new(std::sync::atomic::AtomicU16::new(0));
        let seen = texts.clone();
        let failing = fail_with.clone();
        let handler = move |body: Bytes| {
            let seen = seen.clone();
            let failing = failing.clone();
            async move {
                let code = failing.load(std::sync::atomic::Ordering::SeqCst);
                if code != 0 {
                    return (
                        StatusCode::from_u16(code).expect("status"),
                        [(header::CONTENT_TYPE, "application/json")],
                        r#"{"error":"overloaded"}"#.to_owned(),
                    );
                }
                let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let text = req["params"]["message"]["parts"][0]["text"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                seen.lock().expect("texts").push(text.clone());
                let reply = json!({"jsonrpc": "2.0", "id": req["id"], "result": {
                    "parts": [{"kind": "text", "text": format!("echo: {text}")}],
                    "usage": {"input_tokens": 10, "output_tokens": 4},
                }});
                (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/json")],
                    reply.to_string(),
                )
            }
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind agent");
        let url = format!("http://{}/", listener.local_addr().expect("addr"));
        let switch = SwitchListener {
            inner: listener,
            busy: busy.clone(),
        };
        tokio::spawn(async move {
            axum::serve(switch, Router::new().route("/", post(handler)))
                .await
                .expect("agent server");
        });
        BusyAgent {
            url,
            busy,
            texts,
            fail_with,
        }
    }

    fn set_busy(&self, busy: bool) {
        self.busy.store(busy, std::sync::atomic::Ordering::SeqCst);
    }

    fn texts(&self) -> Vec<String> {
        self.texts.lock().expect("texts").clone()
    }
}

fn message_with_id(text: &str, id: &str) -> String {
    json!({"method": "message/send", "params": {"message": {"role": "user", "messageId": id, "parts": [{"kind": "text", "text": text}]}}})
        .to_string()
}

async fn queue_item(
    app: &TestApp,
    path: WorkspaceId,
    queue_id: &str,
    bearer: Option<&str>,
) -> Resp {
    app.call(
        Method::GET,
        &format!("/workspaces/{path}/a2a/queue/{queue_id}"),
        bearer,
    )
    .await
}

/// Polls the item (as admin) until its status is `want`; bounded so a hang fails the test.
async fn wait_item(app: &TestApp, target: WorkspaceId, queue_id: &str, want: &str) -> Value {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let resp = queue_item(app, target, queue_id, Some(ADMIN_TOKEN)).await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
        if resp.json["status"] == want {
            return resp.json;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "queue item never became {want}: {}",
            resp.json
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A busy agent's messages are queued (202), wait while it stays busy, and are delivered in
/// order once a heartbeat reports spare capacity; the caller's bookkeeping follows.
async fn a_busy_agent_gets_its_messages_queued_then_delivered_in_order(app: TestApp) {
    let agent = BusyAgent::start().await;
    let (parent, _) = agent_ws(&app, "parent", &agent.url, None).await;
    let (a, a_token) = agent_ws(&app, "a", &agent.url, Some(parent)).await;
    let (b, b_token) = agent_ws(&app, "b", &agent.url, Some(parent)).await;
    let (outsider, outsider_token) = agent_ws(&app, "outsider", &agent.url, None).await;

    agent.set_busy(true);
    let mut ids = Vec::new();
    for (n, text) in ["one", "two", "three"].into_iter().enumerate() {
        let resp = a2a(
            &app,
            b,
            Some(&a_token),
            None,
            message_with_id(text, &format!("m-{n}")),
        )
        .await;
        assert_eq!(resp.status, StatusCode::ACCEPTED, "{}", resp.text);
        assert_eq!(resp.json["queued"], true);
        assert_eq!(resp.json["queue_depth"], n + 1);
        assert_eq!(
            resp.json["message"],
            "workspace agent busy — request queued, will dispatch when capacity available"
        );
        ids.push(resp.json["queue_id"].as_str().expect("queue_id").to_owned());
    }
    // The same message again is the same item.
    let again = a2a(&app, b, Some(&a_token), None, message_with_id("one", "m-0")).await;
    assert_eq!(again.status, StatusCode::ACCEPTED, "{}", again.text);
    assert_eq!(again.json["queue_id"], ids[0].as_str());
    assert_eq!(again.json["queue_depth"], 3);

    let logged = rows(&app, b).await;
    assert_eq!(logged.len(), 4, "{logged:?}");
    assert!(
        logged
            .iter()
            .all(|r| r["summary"] == "message/send → b (queued: target busy)"
                && r["status"] == "ok"
                && r["source_id"] == a.to_string())
    );

    // The sender and the target may read an item (through their own id); nobody else may.
    let item = queue_item(&app, a, &ids[0], Some(&a_token)).await;
    assert_eq!(item.status, StatusCode::OK, "{}", item.text);
    assert_eq!(item.json["status"], "queued");
    assert_eq!(item.json["workspace_id"], b.to_string());
    assert_eq!(item.json["priority"], 50);
    assert_eq!(item.json["attempts"], 0);
    assert!(item.json.get("body").is_none() && item.json.get("caller_id").is_none());
    assert_eq!(
        queue_item(&app, b, &ids[0], Some(&b_token)).await.status,
        StatusCode::OK
    );
    for (path, token) in [(outsider, &outsider_token), (b, &a_token)] {
        let resp = queue_item(&app, path, &ids[0], Some(token)).await;
        assert_eq!(resp.status, StatusCode::NOT_FOUND, "{}", resp.text);
        assert_eq!(resp.json, err("queue item not found"));
    }
    assert_eq!(
        queue_item(&app, a, &ids[0], None).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        queue_item(&app, a, "not-a-uuid", Some(ADMIN_TOKEN))
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // Still busy: a drain puts the head back in place, nothing is lost or reordered.
    let report = app.service.drain_a2a_queue(b).await.expect("drain");
    assert_eq!((report.delivered, report.requeued), (0, 1));
    let head = queue_item(&app, b, &ids[0], Some(ADMIN_TOKEN)).await.json;
    assert_eq!(head["status"], "queued");
    // A busy bounce is not counted as an attempt.
    assert_eq!(head["attempts"], 0);
    assert_eq!(head["last_error"], "workspace agent busy");
    assert!(agent.texts().is_empty());

    // Capacity frees up: the heartbeat starts the drain, which delivers all three in order.
    agent.set_busy(false);
    app.heartbeat_ok(b, &b_token, json!({"active_tasks": 0}))
        .await;
    let last = wait_item(&app, b, &ids[2], "completed").await;
    assert_eq!(agent.texts(), ["one", "two", "three"]);
    assert_eq!(
        last["response_body"]["result"]["parts"][0]["text"],
        "echo: three"
    );
    for id in &ids[..2] {
        assert_eq!(
            queue_item(&app, b, id, Some(ADMIN_TOKEN)).await.json["status"],
            "completed"
        );
    }
    // Drained deliveries are logged like direct ones, and the caller's bookkeeping follows.
    let delivered: Vec<Value> = rows(&app, b)
        .await
        .into_iter()
        .filter(|r| r["summary"] == "message/send → b")
        .collect();
    assert_eq!(delivered.len(), 3, "{delivered:?}");
    assert!(delivered.iter().all(|r| r["source_id"] == a.to_string()));
    // The caller learns each answer on its own log, in order.
    let notes: Vec<Value> = rows(&app, a)
        .await
        .into_iter()
        .filter(|r| r["activity_type"] == "a2a_send")
        .collect();
    let answers: Vec<&str> = notes
        .iter()
        .rev()
        .map(|r| {
            r["response_body"]["result"]["parts"][0]["text"]
                .as_str()
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(answers, ["echo: one", "echo: two", "echo: three"]);
    assert_eq!(
        notes[0]["summary"],
        "message/send → b (delivered from the queue)"
    );
    assert_eq!(notes[0]["target_id"], b.to_string());
    let caller = app.get(&format!("/workspaces/{a}")).await.json;
    assert!(caller["last_outbound_at"].is_string(), "{caller}");
    let usage = app.store.token_usage(b).await.expect("usage");
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0].call_count, 3);
    assert_eq!((usage[0].input_tokens, usage[0].output_tokens), (30, 12));
}

#[tokio::test]
async fn a_busy_agent_gets_its_messages_queued_then_delivered_in_order_sqlite() {
    a_busy_agent_gets_its_messages_queued_then_delivered_in_order(loopback_app().await).await;
}

#[tokio::test]
async fn a_busy_agent_gets_its_messages_queued_then_delivered_in_order_postgres() {
    let app = Setup {
        loopback: true,
        postgres: true,
        ..Setup::default()
    }
    .start()
    .await;
    a_busy_agent_gets_its_messages_queued_then_delivered_in_order(app).await;
}

/// `GET /workspaces/{id}/a2a/queue` (berth, the console's queue panel): the target's pending
/// items in delivery order with their positions, then finished ones newest first, without the
/// agent's answers; the admin or the workspace's own token only; `limit` bounds the page.
async fn the_queue_lists_pending_items_in_order_then_finished_ones(app: TestApp) {
    let agent = BusyAgent::start().await;
    let (_, a_token) = agent_ws(&app, "a", &agent.url, None).await;
    let (b, b_token) = agent_ws(&app, "b", &agent.url, None).await;
    let list = |bearer: Option<&str>, query: &str| {
        let uri = format!("/workspaces/{b}/a2a/queue{query}");
        let bearer = bearer.map(str::to_owned);
        let app = &app;
        async move { app.call(Method::GET, &uri, bearer.as_deref()).await }
    };
    let empty = list(Some(ADMIN_TOKEN), "").await;
    assert_eq!(empty.status, StatusCode::OK, "{}", empty.text);
    assert_eq!(empty.json, json!([]));

    agent.set_busy(true);
    let mut ids = Vec::new();
    for text in ["one", "two", "three"] {
        let resp = a2a(&app, b, Some(ADMIN_TOKEN), None, message(text)).await;
        assert_eq!(resp.status, StatusCode::ACCEPTED, "{}", resp.text);
        ids.push(resp.json["queue_id"].as_str().expect("queue_id").to_owned());
    }
    let queued = list(Some(&b_token), "").await;
    assert_eq!(queued.status, StatusCode::OK, "{}", queued.text);
    let items = queued.json.as_array().expect("array");
    let listed: Vec<(&str, &str, u64)> = items
        .iter()
        .map(|i| {
            (
                i["queue_id"].as_str().unwrap_or_default(),
                i["status"].as_str().unwrap_or_default(),
                i["position"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            (ids[0].as_str(), "queued", 1),
            (ids[1].as_str(), "queued", 2),
            (ids[2].as_str(), "queued", 3)
        ]
    );
    assert!(items.iter().all(|i| i["method"] == "message/send"
        && i["workspace_id"] == b.to_string()
        && i["enqueued_at"].is_string()
        && i.get("body").is_none()));
    let page = list(Some(ADMIN_TOKEN), "?limit=2").await;
    assert_eq!(page.json.as_array().map(Vec::len), Some(2), "{}", page.text);
    assert_eq!(page.json[0]["queue_id"], ids[0].as_str());

    // Only the admin and the workspace itself: not the sender's token, nor nobody.
    for bearer in [Some(a_token.as_str()), None] {
        let resp = list(bearer, "").await;
        assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{}", resp.text);
    }
    for bad in ["0", "-1", "many"] {
        let resp = list(Some(ADMIN_TOKEN), &format!("?limit={bad}")).await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{bad}: {}", resp.text);
        assert_eq!(resp.json, err("limit must be a positive integer"));
    }
    let unknown = app
        .call(
            Method::GET,
            &format!("/workspaces/{}/a2a/queue", WorkspaceId::new_v4()),
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.text);
    assert_eq!(unknown.json, err("workspace not found"));

    // Delivered: finished items newest first, no positions, no answers in the listing.
    agent.set_busy(false);
    app.heartbeat_ok(b, &b_token, json!({"active_tasks": 0}))
        .await;
    wait_item(&app, b, &ids[2], "completed").await;
    let done = list(Some(ADMIN_TOKEN), "?limit=100000").await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text);
    let order: Vec<&str> = done
        .json
        .as_array()
        .expect("array")
        .iter()
        .map(|i| {
            assert_eq!(i["status"], "completed", "{i}");
            assert!(
                i.get("position").is_none() && i.get("response_body").is_none(),
                "{i}"
            );
            i["queue_id"].as_str().unwrap_or_default()
        })
        .collect();
    assert_eq!(order, [ids[2].as_str(), ids[1].as_str(), ids[0].as_str()]);
}

#[tokio::test]
async fn the_queue_lists_pending_items_in_order_then_finished_ones_sqlite() {
    the_queue_lists_pending_items_in_order_then_finished_ones(loopback_app().await).await;
}

#[tokio::test]
async fn the_queue_lists_pending_items_in_order_then_finished_ones_postgres() {
    let app = Setup {
        loopback: true,
        postgres: true,
        ..Setup::default()
    }
    .start()
    .await;
    the_queue_lists_pending_items_in_order_then_finished_ones(app).await;
}

#[tokio::test]
async fn a_full_queue_answers_429_and_queues_nothing_more() {
    let app = Setup {
        loopback: true,
        a2a: Some(berth_core::A2aSettings {
            queue_max_per_target: 2,
            ..Default::default()
        }),
        ..Setup::default()
    }
    .start()
    .await;
    let agent = BusyAgent::start().await;
    let (b, _) = agent_ws(&app, "b", &agent.url, None).await;
    agent.set_busy(true);
    for n in 0..2 {
        let resp = a2a(&app, b, Some(ADMIN_TOKEN), None, message(&format!("m{n}"))).await;
        assert_eq!(resp.status, StatusCode::ACCEPTED, "{}", resp.text);
    }
    let full = a2a(&app, b, Some(ADMIN_TOKEN), None, message("m2")).await;
    assert_eq!(full.status, StatusCode::TOO_MANY_REQUESTS, "{}", full.text);
    assert_eq!(full.header("retry-after"), Some("30"));
    assert_eq!(full.json["busy"], true);
    assert_eq!(full.json["queue_full"], true);
    assert_eq!(full.json["pending"], 2);
    assert_eq!(app.store.a2a_queue_of(b).await.expect("queue").len(), 2);
    let failure = &rows(&app, b).await[0];
    assert_eq!(failure["status"], "error");
    assert!(
        failure["summary"].as_str().is_some_and(
            |s| s.starts_with("A2A request to b failed:") && s.ends_with("(queue full)")
        ),
        "{failure}"
    );
}

#[tokio::test]
async fn drop_stale_needs_the_admin_and_valid_numbers() {
    let app = loopback_app().await;
    let agent = BusyAgent::start().await;
    let (b, b_token) = agent_ws(&app, "b", &agent.url, None).await;
    agent.set_busy(true);
    let queued = a2a(&app, b, Some(ADMIN_TOKEN), None, message("old")).await;
    assert_eq!(queued.status, StatusCode::ACCEPTED, "{}", queued.text);

    let denied = app
        .post("/admin/a2a-queue/drop-stale", Some(&b_token), &json!({}))
        .await;
    assert_eq!(denied.status, StatusCode::UNAUTHORIZED);
    for bad in ["0", "-1", "soon"] {
        let resp = app
            .post(
                &format!("/admin/a2a-queue/drop-stale?max_age_minutes={bad}"),
                Some(ADMIN_TOKEN),
                &json!({}),
            )
            .await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(resp.json, err("max_age_minutes must be a positive integer"));
    }
    let resp = app
        .post(
            "/admin/a2a-queue/drop-stale?workspace_id=nope",
            Some(ADMIN_TOKEN),
            &json!({}),
        )
        .await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    // Nothing is an hour old yet.
    let resp = app
        .post("/admin/a2a-queue/drop-stale", Some(ADMIN_TOKEN), &json!({}))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.json, json!({"dropped": 0}));
    assert_eq!(
        app.store.a2a_queue_of(b).await.expect("queue")[0].status,
        "queued"
    );
}

/// Drains follow the target: no drain while a heartbeat reports it saturated; the sweeper's
/// pass delivers into a poll inbox when the target switched to poll mode meanwhile; an item
/// whose target was removed fails instead of waiting forever.
#[tokio::test]
async fn drains_follow_the_targets_state() {
    let app = loopback_app().await;
    let agent = BusyAgent::start().await;
    let (parent, _) = agent_ws(&app, "parent", &agent.url, None).await;
    let (a, a_token) = agent_ws(&app, "a", &agent.url, Some(parent)).await;
    let (b, b_token) = agent_ws(&app, "b", &agent.url, Some(parent)).await;
    let (c, _) = agent_ws(&app, "c", &agent.url, Some(parent)).await;
    agent.set_busy(true);
    let to_b = a2a(&app, b, Some(&a_token), None, message("for b")).await;
    assert_eq!(to_b.status, StatusCode::ACCEPTED, "{}", to_b.text);
    let to_c = a2a(&app, c, Some(&a_token), None, message("for c")).await;
    assert_eq!(to_c.status, StatusCode::ACCEPTED, "{}", to_c.text);
    let (b_item, c_item) = (
        to_b.json["queue_id"].as_str().unwrap().to_owned(),
        to_c.json["queue_id"].as_str().unwrap().to_owned(),
    );

    // Saturated (1 of 1 tasks): the heartbeat starts no drain.
    app.heartbeat_ok(b, &b_token, json!({"active_tasks": 1}))
        .await;
    app.service.drain().await;
    let item = queue_item(&app, b, &b_item, Some(ADMIN_TOKEN)).await.json;
    assert_eq!(
        (item["status"].clone(), item["attempts"].clone()),
        (json!("queued"), json!(0))
    );

    // B now polls; C is removed. The sweeper's pass settles both.
    let resp = app.register(b, Some(&b_token), Some("poll")).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    let resp = app.delete(c, "").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(app.service.sweep_a2a_queue().await.expect("sweep"), 2);
    app.service.drain().await;

    let item = queue_item(&app, b, &b_item, Some(ADMIN_TOKEN)).await.json;
    assert_eq!(item["status"], "completed", "{item}");
    let inbox = rows(&app, b).await;
    assert_eq!(inbox[0]["summary"], "message/send → b (queued for poll)");
    assert_eq!(inbox[0]["source_id"], a.to_string());
    assert_eq!(
        inbox[0]["request_body"]["params"]["message"]["parts"][0]["text"],
        "for b"
    );
    let item = queue_item(&app, c, &c_item, Some(ADMIN_TOKEN)).await.json;
    assert_eq!(item["status"], "failed", "{item}");
    assert_eq!(item["last_error"], "workspace removed");
    assert!(agent.texts().is_empty());
    // Nothing is left to drain.
    assert_eq!(app.service.sweep_a2a_queue().await.expect("sweep"), 0);
}

/// Failed deliveries of a queued item: a 5xx answer is retried up to the attempt limit, then
/// the item is `failed`; a 4xx answer fails it at once. Busy retries do not count.
#[tokio::test]
async fn failed_deliveries_are_retried_up_to_the_limit() {
    let app = Setup {
        loopback: true,
        a2a: Some(berth_core::A2aSettings {
            queue_max_attempts: 3,
            ..Default::default()
        }),
        ..Setup::default()
    }
    .start()
    .await;
    let agent = BusyAgent::start().await;
    let (b, _) = agent_ws(&app, "b", &agent.url, None).await;
    agent.set_busy(true);
    let first = a2a(&app, b, Some(ADMIN_TOKEN), None, message("5xx")).await;
    let second = a2a(&app, b, Some(ADMIN_TOKEN), None, message("4xx")).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text);
    assert_eq!(second.status, StatusCode::ACCEPTED, "{}", second.text);
    let (first, second) = (
        first.json["queue_id"].as_str().unwrap().to_owned(),
        second.json["queue_id"].as_str().unwrap().to_owned(),
    );
    // A busy attempt first: it does not count towards the limit.
    app.service.drain_a2a_queue(b).await.expect("drain");
    agent.set_busy(false);
    agent
        .fail_with
        .store(503, std::sync::atomic::Ordering::SeqCst);
    let report = app.service.drain_a2a_queue(b).await.expect("drain");
    assert_eq!(
        (report.delivered, report.requeued, report.failed),
        (0, 1, 0)
    );
    let item = queue_item(&app, b, &first, Some(ADMIN_TOKEN)).await.json;
    assert_eq!(item["status"], "queued", "{item}");
    assert_eq!(item["last_error"], "agent answered 503: overloaded");
    let report = app.service.drain_a2a_queue(b).await.expect("drain");
    assert_eq!(report.requeued, 1, "{report:?}");
    // The first item fails; the same drain moves on to the next one, which is retried.
    let report = app.service.drain_a2a_queue(b).await.expect("drain");
    assert_eq!((report.failed, report.requeued), (1, 1), "{report:?}");
    let item = queue_item(&app, b, &first, Some(ADMIN_TOKEN)).await.json;
    assert_eq!(item["status"], "failed", "{item}");
    assert_eq!(item["attempts"], 3);
    // A 4xx answer fails an item at once, with attempts left.
    agent
        .fail_with
        .store(400, std::sync::atomic::Ordering::SeqCst);
    let report = app.service.drain_a2a_queue(b).await.expect("drain");
    assert_eq!(report.failed, 1, "{report:?}");
    let item = queue_item(&app, b, &second, Some(ADMIN_TOKEN)).await.json;
    assert_eq!(item["status"], "failed", "{item}");
    assert_eq!(item["attempts"], 2);
    assert_eq!(item["last_error"], "agent answered 400: overloaded");
    assert!(item.get("response_body").is_none());
}
