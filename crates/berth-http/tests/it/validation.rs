//! Every 4xx of `POST /workspaces` (REFERENCE.md §2.1, §3; berth's additions from §12.1), with
//! exact bodies, the order in which the checks run, and that a rejected create writes nothing.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::helpers::app;

/// berth's RUNTIME_UNRESOLVED message.
const RUNTIME_UNRESOLVED_MSG: &str = "runtime could not be resolved from the requested template; refusing to silently provision the default runtime. Pass an explicit \"runtime\", or use a template whose config.yaml declares one.";
/// berth's MODEL_REQUIRED message.
const MODEL_REQUIRED_MSG: &str = "model is required and has no platform-side default — pass an explicit \"model\" in the request body, or use a \"template\" whose config.yaml declares one.";

/// A valid container create (`claude-code` with a model) with `extra` merged in.
fn valid(extra: Value) -> Value {
    let mut body = json!({"name": "w", "model": "openai/gpt-4o"});
    let map = body.as_object_mut().expect("object");
    for (k, v) in extra.as_object().expect("extra is an object") {
        map.insert(k.clone(), v.clone());
    }
    body
}

fn unresolved(template: &str) -> Value {
    json!({"error": RUNTIME_UNRESOLVED_MSG, "template": template, "code": "RUNTIME_UNRESOLVED"})
}

fn unknown_runtime(runtime: &str) -> Value {
    json!({
        "error": format!("unknown runtime \"{runtime}\": use a built-in runtime or one declared by a template"),
        "runtime": runtime,
        "code": "RUNTIME_UNKNOWN",
    })
}

fn model_required(runtime: &str, template: &str) -> Value {
    json!({"error": MODEL_REQUIRED_MSG, "runtime": runtime, "template": template, "code": "MODEL_REQUIRED"})
}

fn not_external(runtime: &str) -> Value {
    json!({
        "error": "external workspaces need an external-like runtime (external, kimi, kimi-cli)",
        "runtime": runtime,
        "code": "RUNTIME_NOT_EXTERNAL",
    })
}

#[tokio::test]
async fn unbindable_payloads_are_invalid_workspace_payload() {
    let app = app().await;
    for raw in ["{", "", "[]", "\"x\"", "null", "{\"name\":\"x\",}"] {
        let resp = app.create_raw(raw).await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{raw:?}");
        assert_eq!(
            resp.json,
            json!({"error": "invalid workspace payload"}),
            "{raw:?}"
        );
        app.assert_nothing_written(raw).await;
    }
    for body in [
        valid(json!({"tier": "x"})),
        valid(json!({"tier": 1.5})),
        valid(json!({"external": "yes"})),
        valid(json!({"secrets": {"A": 1}})),
        valid(json!({"secrets": ["A"]})),
        valid(json!({"compute": "big"})),
        valid(json!({"canvas": {"x": "left"}})),
        valid(json!({"parent_id": 7})),
        json!({"model": "openai/gpt-4o"}),
        valid(json!({"name": ""})),
        valid(json!({"name": null})),
        valid(json!({"name": 42})),
    ] {
        app.assert_bad_request(body, "invalid workspace payload")
            .await;
    }
}

#[tokio::test]
async fn field_rules_are_invalid_workspace_fields() {
    let app = app().await;
    for body in [
        valid(json!({"name": "a\nb"})),
        valid(json!({"name": "a\rb"})),
        valid(json!({"role": "line\nbreak"})),
        valid(json!({"model": "openai/gpt-4o\n"})),
        valid(json!({"runtime": "claude-code\r"})),
        valid(json!({"name": "a{b"})),
        valid(json!({"name": "x}"})),
        valid(json!({"role": "[r]"})),
        valid(json!({"role": "a|b"})),
        valid(json!({"name": "a>b"})),
        valid(json!({"name": "*"})),
        valid(json!({"name": "a&b"})),
        valid(json!({"role": "hey!"})),
        valid(json!({"name": "a".repeat(256)})),
        // Lengths are bytes: 128 two-byte characters are 256 bytes.
        valid(json!({"name": "é".repeat(128)})),
        valid(json!({"role": "r".repeat(1001)})),
        valid(json!({"model": format!("openai/{}", "m".repeat(94))})),
        valid(json!({"runtime": "r".repeat(101)})),
    ] {
        app.assert_bad_request(body, "invalid workspace fields")
            .await;
    }
}

#[tokio::test]
async fn field_limits_are_inclusive() {
    let app = app().await;
    let body = valid(json!({
        "name": "a".repeat(255),
        "role": "r".repeat(1000),
        "model": format!("openai/{}", "m".repeat(93)),
    }));
    let id = app.create_id(body).await;
    let listed = app.listed(id).await;
    assert_eq!(listed["name"], "a".repeat(255));
    assert_eq!(listed["role"], "r".repeat(1000));
}

#[tokio::test]
async fn tier_outside_one_to_four_is_refused() {
    let app = app().await;
    for tier in [7, -1, 5] {
        app.assert_bad_request(valid(json!({"tier": tier})), "tier must be between 1 and 4")
            .await;
    }
    let default = app.create_id(valid(json!({"name": "t0", "tier": 0}))).await;
    let four = app.create_id(valid(json!({"name": "t4", "tier": 4}))).await;
    assert_eq!(app.listed(default).await["tier"], 3);
    assert_eq!(app.listed(four).await["tier"], 4);
}

#[tokio::test]
async fn bad_templates_are_invalid_template() {
    let app = app().await;
    for template in ["../x", "/etc", "a/../../x", "broken"] {
        // berth: checked even when runtime and model are both given (REFERENCE.md §12.1 #1).
        app.assert_bad_request(
            valid(json!({"template": template, "runtime": "claude-code"})),
            "invalid template",
        )
        .await;
        app.assert_bad_request(
            json!({"name": "w", "template": template}),
            "invalid template",
        )
        .await;
    }
}

#[tokio::test]
async fn a_template_without_runtime_is_runtime_unresolved() {
    let app = app().await;
    for template in ["plain", "does-not-exist"] {
        app.assert_rejected(
            json!({"name": "w", "template": template}),
            StatusCode::UNPROCESSABLE_ENTITY,
            unresolved(template),
        )
        .await;
    }
}

#[tokio::test]
async fn runtime_must_be_known() {
    let app = app().await;
    app.assert_rejected(
        valid(json!({"runtime": "nope"})),
        StatusCode::UNPROCESSABLE_ENTITY,
        unknown_runtime("nope"),
    )
    .await;
    // Case matters: runtimes are exact labels.
    app.assert_rejected(
        valid(json!({"runtime": "Claude-Code"})),
        StatusCode::UNPROCESSABLE_ENTITY,
        unknown_runtime("Claude-Code"),
    )
    .await;
}

#[tokio::test]
async fn container_runtimes_need_a_model() {
    let app = app().await;
    // A bare `{"name":"x"}` gets MODEL_REQUIRED, as in the seed.
    app.assert_rejected(
        json!({"name": "x"}),
        StatusCode::UNPROCESSABLE_ENTITY,
        model_required("claude-code", ""),
    )
    .await;
    app.assert_rejected(
        json!({"name": "x", "runtime": "mock"}),
        StatusCode::UNPROCESSABLE_ENTITY,
        model_required("mock", ""),
    )
    .await;
    app.assert_rejected(
        json!({"name": "x", "runtime": "hermes", "model": ""}),
        StatusCode::UNPROCESSABLE_ENTITY,
        model_required("hermes", ""),
    )
    .await;
}

#[tokio::test]
async fn external_flag_with_a_container_runtime_is_refused() {
    let app = app().await;
    app.assert_rejected(
        json!({"name": "x", "external": true, "runtime": "claude-code", "model": "openai/gpt-4o"}),
        StatusCode::UNPROCESSABLE_ENTITY,
        not_external("claude-code"),
    )
    .await;
    // External workspaces need no model, so the mismatch is what a model-less request gets.
    app.assert_rejected(
        json!({"name": "x", "external": true, "runtime": "hermes"}),
        StatusCode::UNPROCESSABLE_ENTITY,
        not_external("hermes"),
    )
    .await;
}

#[tokio::test]
async fn workspace_dir_rules() {
    let app = app().await;
    for dir in [
        "/etc/x",
        "/etc",
        "/usr/lib",
        "/var",
        "relative",
        "./x",
        "/home/a/../b",
        "/a..b",
    ] {
        app.assert_bad_request(
            valid(json!({"workspace_dir": dir})),
            "invalid workspace directory",
        )
        .await;
    }
}

#[tokio::test]
async fn workspace_access_rules() {
    let app = app().await;
    for extra in [
        json!({"workspace_access": "bogus"}),
        json!({"workspace_access": "READ_ONLY", "workspace_dir": "/home/u/p"}),
        json!({"workspace_access": "read_only"}),
        json!({"workspace_access": "read_write"}),
    ] {
        app.assert_bad_request(valid(extra), "invalid workspace access")
            .await;
    }
}

#[tokio::test]
async fn compute_rules_answer_with_their_own_message() {
    let app = app().await;
    for (compute, message) in [
        (
            json!({"instance_type": "x1.huge"}),
            "unsupported compute.instance_type",
        ),
        (
            json!({"volume": {"root_gb": 10}}),
            "compute.volume.root_gb must be between 30 and 500",
        ),
        (
            json!({"volume": {"root_gb": 501}}),
            "compute.volume.root_gb must be between 30 and 500",
        ),
        (
            json!({"display": {"mode": "vr"}}),
            "unsupported compute.display.mode",
        ),
        (
            json!({"display": {"protocol": "rdp"}}),
            "unsupported compute.display.protocol",
        ),
        (
            json!({"display": {"width": -1}}),
            "compute.display width/height must be non-negative",
        ),
        (
            json!({"display": {"width": 640}}),
            "compute.display.width must be between 800 and 3840",
        ),
        (
            json!({"display": {"height": 2161}}),
            "compute.display.height must be between 600 and 2160",
        ),
    ] {
        app.assert_bad_request(valid(json!({"compute": compute})), message)
            .await;
    }
}

#[tokio::test]
async fn unsafe_agent_urls_are_refused() {
    let app = app().await;
    for (url, reason) in [
        (
            "http://169.254.169.254/latest/meta-data",
            "url targets a blocked address: link-local address (cloud metadata endpoint)",
        ),
        (
            "http://127.0.0.1:8000",
            "url targets a blocked address: loopback address",
        ),
        (
            "http://localhost:8000",
            "url targets a blocked address: loopback address",
        ),
        (
            "http://[::1]:8000",
            "url targets a blocked address: IPv6 loopback address",
        ),
        (
            "http://10.0.0.8",
            "url targets a blocked address: RFC-1918 private address",
        ),
        (
            "http://internal.example.com:9000/a2a",
            "hostname \"internal.example.com\" resolves to forbidden address: url targets a blocked address: RFC-1918 private address",
        ),
        (
            "http://mixed.example.com",
            "hostname \"mixed.example.com\" resolves to forbidden address: url targets a blocked address: link-local address (cloud metadata endpoint)",
        ),
        (
            "http://nx.example.com",
            "hostname \"nx.example.com\" cannot be resolved (DNS error): no such host",
        ),
        (
            "ftp://agent.example.com",
            "url scheme must be http or https, got \"ftp\"",
        ),
    ] {
        let message = format!("unsafe workspace URL: {reason}");
        // External and container workspaces alike: the reference checks every non-empty url.
        app.assert_bad_request(
            json!({"name": "e", "runtime": "external", "url": url}),
            &message,
        )
        .await;
        app.assert_bad_request(valid(json!({"url": url})), &message)
            .await;
    }
}

#[tokio::test]
async fn delivery_mode_must_be_push_or_poll() {
    let app = app().await;
    for mode in ["pull", "PUSH", " poll"] {
        app.assert_bad_request(
            valid(json!({"delivery_mode": mode})),
            "delivery_mode must be 'push' or 'poll'",
        )
        .await;
    }
}

#[tokio::test]
async fn secrets_must_be_environment_variables() {
    let app = app().await;
    for key in ["A B", "1ABC", "A=B", "", "KEY-NAME"] {
        app.assert_bad_request(
            valid(json!({"secrets": {key: "v"}})),
            &format!(
                "invalid secret {key:?}: keys must be environment variable names and values at most 64 KiB"
            ),
        )
        .await;
    }
    app.assert_bad_request(
        valid(json!({"secrets": {"BIG": "x".repeat(64 * 1024 + 1)}})),
        "invalid secret \"BIG\": keys must be environment variable names and values at most 64 KiB",
    )
    .await;
}

#[tokio::test]
async fn parent_must_be_an_existing_workspace() {
    let app = app().await;
    for parent in ["nope", "123", "6f1d2c3b-4a5e-4f60-8a7b"] {
        app.assert_bad_request(valid(json!({"parent_id": parent})), "invalid parent_id")
            .await;
    }
    // Checked inside the create transaction: the row insert is rolled back.
    app.assert_bad_request(
        valid(json!({"parent_id": uuid::Uuid::new_v4().to_string()})),
        "parent workspace not found",
    )
    .await;
}

#[tokio::test]
async fn a_removed_parent_is_not_found() {
    let app = app().await;
    let parent = app
        .create_id(json!({"name": "p", "runtime": "external"}))
        .await;
    let removed = berth_store::StatusChange::new(berth_domain::status::Transition::Removed);
    assert!(app.store.transition(parent, removed).await.expect("remove"));
    let before = app.db.count("workspaces").await;
    let resp = app
        .create(valid(json!({"parent_id": parent.to_string()})))
        .await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert_eq!(resp.json, json!({"error": "parent workspace not found"}));
    assert_eq!(app.db.count("workspaces").await, before);
}

#[tokio::test]
async fn negative_budget_is_refused() {
    let app = app().await;
    app.assert_bad_request(
        valid(json!({"budget_limit": -1})),
        "budget_limit must not be negative",
    )
    .await;
}

/// A request that breaks two rules gets the error of the rule checked first (REFERENCE.md §2.1).
#[tokio::test]
async fn the_earlier_check_wins() {
    let app = app().await;
    let bad_request = |m: &str| (StatusCode::BAD_REQUEST, json!({"error": m}));
    let unprocessable = |v: Value| (StatusCode::UNPROCESSABLE_ENTITY, v);
    let cases = [
        // payload before everything
        (
            json!({"name": "", "tier": 7, "template": "../x"}),
            bad_request("invalid workspace payload"),
        ),
        // fields before tier
        (
            valid(json!({"name": "a{b", "tier": 7})),
            bad_request("invalid workspace fields"),
        ),
        // tier before template
        (
            valid(json!({"tier": 9, "template": "../x"})),
            bad_request("tier must be between 1 and 4"),
        ),
        // template before model
        (
            json!({"name": "w", "template": "../x"}),
            bad_request("invalid template"),
        ),
        // template before unknown runtime
        (
            valid(json!({"template": "broken", "runtime": "nope"})),
            bad_request("invalid template"),
        ),
        // unresolved runtime before everything after it
        (
            json!({"name": "w", "template": "plain", "workspace_dir": "/etc", "url": "http://127.0.0.1"}),
            unprocessable(unresolved("plain")),
        ),
        // unknown runtime before model
        (
            json!({"name": "w", "runtime": "nope"}),
            unprocessable(unknown_runtime("nope")),
        ),
        // model before workspace_dir
        (
            json!({"name": "w", "workspace_dir": "/etc/x"}),
            unprocessable(model_required("claude-code", "")),
        ),
        // external mismatch before workspace_dir
        (
            json!({"name": "w", "external": true, "runtime": "codex", "workspace_dir": "/etc/x"}),
            unprocessable(not_external("codex")),
        ),
        // workspace_dir before access
        (
            valid(json!({"workspace_dir": "/etc/x", "workspace_access": "bogus"})),
            bad_request("invalid workspace directory"),
        ),
        // workspace_dir before compute
        (
            valid(json!({"workspace_dir": "relative", "compute": {"instance_type": "x"}})),
            bad_request("invalid workspace directory"),
        ),
        // access before compute
        (
            valid(json!({"workspace_access": "bogus", "compute": {"instance_type": "x"}})),
            bad_request("invalid workspace access"),
        ),
        // compute before url
        (
            valid(json!({"compute": {"volume": {"root_gb": 1}}, "url": "http://169.254.169.254"})),
            bad_request("compute.volume.root_gb must be between 30 and 500"),
        ),
        // compute fields in table order
        (
            valid(json!({"compute": {"instance_type": "x", "volume": {"root_gb": 1}}})),
            bad_request("unsupported compute.instance_type"),
        ),
        // url before delivery mode
        (
            valid(json!({"url": "http://127.0.0.1:9", "delivery_mode": "pull"})),
            bad_request("unsafe workspace URL: url targets a blocked address: loopback address"),
        ),
        // delivery mode before secrets
        (
            valid(json!({"delivery_mode": "pull", "secrets": {"A B": "v"}})),
            bad_request("delivery_mode must be 'push' or 'poll'"),
        ),
        // secrets before parent
        (
            valid(json!({"secrets": {"A B": "v"}, "parent_id": "nope"})),
            bad_request(
                "invalid secret \"A B\": keys must be environment variable names and values at most 64 KiB",
            ),
        ),
        // parent id format before budget
        (
            valid(json!({"parent_id": "nope", "budget_limit": -5})),
            bad_request("invalid parent_id"),
        ),
        // budget (no I/O) before parent existence (checked in the transaction)
        (
            valid(json!({"parent_id": uuid::Uuid::new_v4().to_string(), "budget_limit": -5})),
            bad_request("budget_limit must not be negative"),
        ),
    ];
    for (body, (status, expected)) in cases {
        app.assert_rejected(body, status, expected).await;
    }
}
