//! `POST /registry/register`, `/registry/heartbeat` and `/registry/update-card`
//! (REFERENCE.md §2.12–2.14) with berth's closed bootstrap window (DECISIONS.md §2.5).

use std::sync::Arc;

use axum::http::StatusCode;
use berth_domain::WorkspaceId;
use berth_domain::status::Transition;
use serde_json::{Value, json};

use crate::helpers::{
    ADMIN_TOKEN, Setup, TestApp, app, err, keys, pg_app, sorted, started_provisioner,
};

const REGISTER: &str = "/registry/register";
const HEARTBEAT: &str = "/registry/heartbeat";
const UPDATE_CARD: &str = "/registry/update-card";

async fn dev_app() -> TestApp {
    Setup {
        dev: true,
        ..Setup::default()
    }
    .start()
    .await
}

/// An app whose container workspaces start (mock) and stay `provisioning`.
async fn container_app() -> TestApp {
    Setup {
        provisioner: Arc::new(started_provisioner(|_| Ok(true))),
        ..Setup::default()
    }
    .start()
    .await
}

#[tokio::test]
async fn register_rejects_bad_bodies() {
    let app = app().await;
    let (id, token) = app
        .external(json!({"name": "ext", "runtime": "external"}))
        .await;
    let id = id.to_string();
    let bad = [
        json!("not an object"),
        json!({"agent_card": {}}),
        json!({"id": id}),
        json!({"id": id, "agent_card": null}),
        json!({"id": "not-a-uuid", "agent_card": {}}),
        json!({"id": 42, "agent_card": {}}),
        json!({"id": "", "agent_card": {}}),
    ];
    for body in bad {
        let resp = app.post(REGISTER, Some(&token), &body).await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(resp.json, err("invalid request body"), "{body}");
    }
    let resp = app.post_raw(REGISTER, Some(&token), "{not json").await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert_eq!(resp.json, err("invalid request body"));

    for mode in ["carrier-pigeon", "PUSH", "Poll"] {
        let resp = app
            .post(
                REGISTER,
                Some(&token),
                &json!({"id": id, "agent_card": {}, "delivery_mode": mode}),
            )
            .await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{mode}");
        assert_eq!(resp.json, err("delivery_mode must be 'push' or 'poll'"));
    }
    // Nothing of that registered the workspace.
    let id = WorkspaceId::parse(&id).expect("id");
    assert_eq!(app.status_of(id).await, "awaiting_agent");
    assert!(app.events_named(id, "WORKSPACE_ONLINE").await.is_empty());
}

#[tokio::test]
async fn register_needs_a_live_token_of_that_workspace() {
    let app = app().await;
    let (a, token_a) = app
        .external(json!({"name": "a", "runtime": "external"}))
        .await;
    let (b, token_b) = app
        .external(json!({"name": "b", "runtime": "external"}))
        .await;

    let resp = app.register(a, None, Some("poll")).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert_eq!(resp.json, err("missing workspace auth token"));

    for wrong in ["nope", ADMIN_TOKEN, token_b.as_str()] {
        let resp = app.register(a, Some(wrong), Some("poll")).await;
        assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{wrong}");
        assert_eq!(resp.json, err("invalid workspace auth token"));
    }
    // Cross-workspace misuse the other way round, too.
    let resp = app.register(b, Some(&token_a), Some("poll")).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert_eq!(resp.json, err("invalid workspace auth token"));
    assert_eq!(app.status_of(a).await, "awaiting_agent");
    assert_eq!(app.status_of(b).await, "awaiting_agent");

    // A revoked token.
    let listed = app
        .call(
            axum::http::Method::GET,
            &format!("/workspaces/{a}/tokens"),
            Some(ADMIN_TOKEN),
        )
        .await;
    let token_id = listed.json["tokens"][0]["id"]
        .as_str()
        .expect("token id")
        .to_owned();
    let resp = app
        .call(
            axum::http::Method::DELETE,
            &format!("/workspaces/{a}/tokens/{token_id}"),
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    let resp = app.register(a, Some(&token_a), Some("poll")).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert_eq!(resp.json, err("invalid workspace auth token"));

    // A token of a removed workspace (deleted through this server: its cached token is
    // forgotten at once).
    let resp = app.delete(b, "").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    let resp = app.register(b, Some(&token_b), Some("poll")).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert_eq!(resp.json, err("invalid workspace auth token"));
    let resp = app.heartbeat(b, Some(&token_b), json!({})).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert_eq!(resp.json, err("invalid workspace auth token"));
    assert_eq!(app.status_of(b).await, "removed");
}

#[tokio::test]
async fn register_never_creates_a_row() {
    let app = dev_app().await;
    app.create_id(json!({"name": "other", "runtime": "external"}))
        .await;
    let before = app.db.count("workspaces").await;
    let unknown = WorkspaceId::new_v4();
    // In dev mode an unknown id has no token, so the gate lets it through to the lookup.
    let resp = app.register(unknown, None, Some("poll")).await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND, "{}", resp.text);
    assert_eq!(resp.json, err("workspace not found"));
    assert_eq!(app.db.count("workspaces").await, before);
    assert_eq!(
        app.get(&format!("/workspaces/{unknown}")).await.status,
        StatusCode::NOT_FOUND
    );

    // Outside dev mode the same request is refused by the gate.
    let app = self::app().await;
    let resp = app.register(unknown, None, Some("poll")).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert_eq!(resp.json, err("missing workspace auth token"));
    assert_eq!(app.db.count("workspaces").await, 0);
}

#[tokio::test]
async fn register_does_not_revive_stopped_or_failed_rows() {
    let app = container_app().await;
    let cases: [(&str, &[Transition]); 4] = [
        ("paused", &[Transition::Paused]),
        ("failed", &[Transition::ProvisionFailed]),
        (
            "hibernated",
            &[
                Transition::HeartbeatRecovered,
                Transition::HibernateStarted,
                Transition::Hibernated,
            ],
        ),
        (
            "hibernating",
            &[Transition::HeartbeatRecovered, Transition::HibernateStarted],
        ),
    ];
    for (status, path) in cases {
        let (id, token) = app.container(status).await;
        assert_eq!(app.status_of(id).await, "provisioning");
        app.force(id, path).await;
        assert_eq!(app.status_of(id).await, status);
        let events_before = app.events_of(id).await.len();
        let resp = app.register(id, Some(&token), Some("poll")).await;
        assert_eq!(resp.status, StatusCode::CONFLICT, "{status}: {}", resp.text);
        assert_eq!(
            resp.json,
            json!({"error": format!("workspace is {status}"), "status": status})
        );
        assert_eq!(app.status_of(id).await, status);
        // A heartbeat is accepted but does not move the row either.
        let hb = app
            .heartbeat_ok(id, &token, json!({"error_rate": 0.0}))
            .await;
        assert_eq!(hb["status"], "ok");
        assert_eq!(app.status_of(id).await, status);
        assert_eq!(app.events_of(id).await.len(), events_before, "{status}");
    }
}

#[tokio::test]
async fn register_of_a_removed_row_in_dev_mode_is_gone() {
    let app = dev_app().await;
    // An external workspace created with its URL has no token: dev mode lets it bootstrap.
    let id = app
        .create_id(
            json!({"name": "gone", "runtime": "external", "url": "http://agent.example.com/a2a"}),
        )
        .await;
    app.force(id, &[Transition::Removed]).await;
    let resp = app.register(id, None, Some("poll")).await;
    assert_eq!(resp.status, StatusCode::GONE, "{}", resp.text);
    assert_eq!(resp.json, err("workspace removed"));
    let resp = app.heartbeat(id, None, json!({})).await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND, "{}", resp.text);
    assert_eq!(resp.json, err("workspace not found"));
    assert_eq!(app.status_of(id).await, "removed");
    // Only the create's event: nothing revived it.
    assert_eq!(app.events_named(id, "WORKSPACE_ONLINE").await.len(), 1);
}

#[tokio::test]
async fn push_mode_needs_a_safe_url() {
    let app = app().await;
    let (id, token) = app
        .external(json!({"name": "p", "runtime": "external"}))
        .await;
    let resp = app.register(id, Some(&token), Some("push")).await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert_eq!(resp.json, err("url is required for push-mode workspaces"));

    let cases = [
        (
            "http://169.254.169.254",
            "url targets a blocked address: link-local address (cloud metadata endpoint)",
        ),
        (
            "ftp://agent.example.com",
            "url scheme must be http or https, got \"ftp\"",
        ),
    ];
    for (url, reason) in cases {
        let body =
            json!({"id": id.to_string(), "url": url, "agent_card": {}, "delivery_mode": "push"});
        let resp = app.post(REGISTER, Some(&token), &body).await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{url}");
        assert_eq!(resp.json, err(reason), "{url}");
    }
    for url in ["http://internal.example.com", "http://127.0.0.1:9000"] {
        let body =
            json!({"id": id.to_string(), "url": url, "agent_card": {}, "delivery_mode": "push"});
        let resp = app.post(REGISTER, Some(&token), &body).await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{url}: {}", resp.text);
    }
    assert_eq!(app.status_of(id).await, "awaiting_agent");

    let body = json!({"id": id.to_string(), "url": "http://agent.example.com/a2a", "agent_card": {}, "delivery_mode": "push"});
    let resp = app.post(REGISTER, Some(&token), &body).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.json["delivery_mode"], "push");
    let got = app.get(&format!("/workspaces/{id}")).await.json;
    assert_eq!(got["status"], "online");
    assert_eq!(got["url"], "http://agent.example.com/a2a");
}

#[tokio::test]
async fn poll_mode_needs_no_url() {
    let app = app().await;
    let (id, token) = app
        .external(json!({"name": "poller", "runtime": "external"}))
        .await;
    // Even a URL that would fail the policy is not checked in poll mode.
    let resp = app.register(id, Some(&token), Some("poll")).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(
        keys(&resp.json),
        sorted(&["delivery_mode", "platform_inbound_secret", "status"])
    );
    assert_eq!(resp.json["status"], "registered");
    assert_eq!(resp.json["delivery_mode"], "poll");
    let secret = resp.json["platform_inbound_secret"]
        .as_str()
        .expect("secret");
    assert!(secret.len() >= 32, "{secret}");
    assert_eq!(app.status_of(id).await, "online");
}

#[tokio::test]
async fn an_external_workspace_without_url_defaults_to_poll() {
    let app = app().await;
    let (id, token) = app
        .external(json!({"name": "x", "runtime": "external"}))
        .await;
    let resp = app.register(id, Some(&token), None).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.json["delivery_mode"], "poll");
    // kimi is external-like too.
    let (id, token) = app.external(json!({"name": "k", "runtime": "kimi"})).await;
    let resp = app.register(id, Some(&token), None).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.json["delivery_mode"], "poll");
    // With a URL in the register body the row's mode (push) applies.
    let (id, token) = app
        .external(json!({"name": "y", "runtime": "external"}))
        .await;
    let body = json!({"id": id.to_string(), "url": "http://agent.example.com", "agent_card": {}});
    let resp = app.post(REGISTER, Some(&token), &body).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.json["delivery_mode"], "push");
}

async fn register_flow(app: TestApp) {
    let (id, token) = app
        .external(json!({"name": "Reviewer", "role": "reviews", "runtime": "external"}))
        .await;
    let card = json!({"name": id.to_string(), "skills": [{"id": "s"}]});
    let body = json!({"id": id.to_string(), "agent_card": card, "delivery_mode": "poll"});
    let resp = app.post(REGISTER, Some(&token), &body).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    // The workspace had a token (from the create), so none is minted.
    assert!(resp.json.get("auth_token").is_none(), "{}", resp.json);
    let secret = resp.json["platform_inbound_secret"].clone();
    assert!(secret.as_str().is_some_and(|s| !s.is_empty()));

    let reconciled = json!({
        "name": "Reviewer", "description": "Reviewer", "role": "reviews", "skills": [{"id": "s"}],
    });
    let got = app.get(&format!("/workspaces/{id}")).await.json;
    assert_eq!(got["status"], "online");
    assert_eq!(got["agent_card"], reconciled);
    let online = app.events_named(id, "WORKSPACE_ONLINE").await;
    assert_eq!(
        online,
        vec![json!({"url": "", "agent_card": reconciled, "delivery_mode": "poll"})]
    );

    // Register again (online → online) and heartbeat: the same inbound secret every time.
    let resp = app.post(REGISTER, Some(&token), &body).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.json["platform_inbound_secret"], secret);
    let hb = app.heartbeat_ok(id, &token, json!({})).await;
    assert_eq!(
        hb,
        json!({"status": "ok", "platform_inbound_secret": secret})
    );
    assert_eq!(app.events_named(id, "WORKSPACE_ONLINE").await.len(), 2);
}

#[tokio::test]
async fn register_records_the_reconciled_card_sqlite() {
    register_flow(app().await).await;
}

#[tokio::test]
async fn register_records_the_reconciled_card_postgres() {
    register_flow(pg_app().await).await;
}

#[tokio::test]
async fn an_agent_card_over_256_kib_is_refused() {
    let app = app().await;
    let (id, token) = app
        .external(json!({"name": "big", "runtime": "external"}))
        .await;
    let big = "x".repeat(300 * 1024);
    let body = json!({"id": id.to_string(), "agent_card": {"name": "big", "blob": big}, "delivery_mode": "poll"});
    let resp = app.post(REGISTER, Some(&token), &body).await;
    assert_eq!(
        resp.status,
        StatusCode::BAD_REQUEST,
        "{}",
        &resp.text[..resp.text.len().min(200)]
    );
    assert_eq!(resp.json, err("agent_card must be at most 256 KiB"));
    assert_eq!(app.status_of(id).await, "awaiting_agent");
    let body =
        json!({"workspace_id": id.to_string(), "agent_card": {"blob": "x".repeat(300 * 1024)}});
    let resp = app.post(UPDATE_CARD, Some(&token), &body).await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert_eq!(resp.json, err("agent_card must be at most 256 KiB"));
}

/// PostgreSQL's JSONB cannot store `\u0000`: a card holding one is a 400 naming the field (the
/// one NUL rule of every request body) on both stores, never a store error, and changes nothing.
#[tokio::test]
async fn an_agent_card_with_a_nul_character_is_refused() {
    for app in [app().await, pg_app().await] {
        let (id, token) = app
            .external(json!({"name": "nul", "runtime": "external"}))
            .await;
        let cards = [
            (json!({"name": "a\u{0}b"}), "agent_card.name"),
            (
                json!({"skills": [{"id": "x", "tags": ["\u{0}"]}]}),
                "agent_card.skills[0].tags[0]",
            ),
            (json!({"x\u{0}": 1}), "agent_card.x\\u0000"),
        ];
        for (card, field) in cards {
            let refusal = json!({"error": format!("{field} must not contain NUL characters"), "field": field});
            let body = json!({"id": id.to_string(), "agent_card": card, "delivery_mode": "poll"});
            let resp = app.post(REGISTER, Some(&token), &body).await;
            assert_eq!(
                resp.status,
                StatusCode::BAD_REQUEST,
                "{card}: {}",
                resp.text
            );
            assert_eq!(resp.json, refusal);
            assert_eq!(app.status_of(id).await, "awaiting_agent");
            let body = json!({"workspace_id": id.to_string(), "agent_card": card});
            let resp = app.post(UPDATE_CARD, Some(&token), &body).await;
            assert_eq!(
                resp.status,
                StatusCode::BAD_REQUEST,
                "{card}: {}",
                resp.text
            );
            assert_eq!(resp.json, refusal);
        }
        // A backslash-u text that is not a NUL is an ordinary card.
        let body = json!({"id": id.to_string(), "agent_card": {"name": "nul", "note": "\\u0000"}, "delivery_mode": "poll"});
        let resp = app.post(REGISTER, Some(&token), &body).await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    }
}

#[tokio::test]
async fn dev_mode_bootstraps_a_workspace_without_a_token_once() {
    let app = dev_app().await;
    let id = app
        .create_id(
            json!({"name": "boot", "runtime": "external", "url": "http://agent.example.com/a2a"}),
        )
        .await;
    assert_eq!(app.db.count("workspace_auth_tokens").await, 0);
    let resp = app.register(id, None, Some("push")).await;
    // Push without a URL in the body: the row's URL does not count for an external workspace.
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    let resp = app.register(id, None, Some("poll")).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(
        keys(&resp.json),
        sorted(&[
            "auth_token",
            "delivery_mode",
            "platform_inbound_secret",
            "status"
        ])
    );
    let token = resp.json["auth_token"].as_str().expect("token").to_owned();
    // The minted token works …
    let hb = app.heartbeat_ok(id, &token, json!({})).await;
    assert_eq!(
        hb["platform_inbound_secret"],
        resp.json["platform_inbound_secret"]
    );
    let again = app.register(id, Some(&token), Some("poll")).await;
    assert_eq!(again.status, StatusCode::OK);
    assert!(again.json.get("auth_token").is_none());
    // … and now that the workspace has one, the window is closed even in dev mode.
    let resp = app.register(id, None, Some("poll")).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert_eq!(resp.json, err("missing workspace auth token"));
    let resp = app.heartbeat(id, None, json!({})).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert_eq!(resp.json, err("missing workspace auth token"));
}

#[tokio::test]
async fn heartbeat_token_errors() {
    let app = app().await;
    let (a, token_a) = app
        .external(json!({"name": "a", "runtime": "external"}))
        .await;
    let (b, _) = app
        .external(json!({"name": "b", "runtime": "external"}))
        .await;
    let resp = app.heartbeat(a, None, json!({})).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert_eq!(resp.json, err("missing workspace auth token"));
    for wrong in ["nope", ADMIN_TOKEN] {
        let resp = app.heartbeat(a, Some(wrong), json!({})).await;
        assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
        assert_eq!(resp.json, err("invalid workspace auth token"));
    }
    let resp = app.heartbeat(b, Some(&token_a), json!({})).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert_eq!(resp.json, err("invalid workspace auth token"));
    assert_eq!(app.status_of(b).await, "awaiting_agent");

    // An unknown workspace can hold no token.
    let unknown = WorkspaceId::new_v4();
    for bearer in [Some(token_a.as_str()), Some(ADMIN_TOKEN), None] {
        let resp = app.heartbeat(unknown, bearer, json!({})).await;
        assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{bearer:?}");
    }
    assert_eq!(
        app.get(&format!("/workspaces/{unknown}")).await.status,
        StatusCode::NOT_FOUND
    );

    for body in [
        json!({"error_rate": 0.1}),
        json!({"workspace_id": "nope"}),
        json!({"workspace_id": a.to_string(), "error_rate": "high"}),
        json!({"workspace_id": a.to_string(), "active_tasks": 1.5}),
    ] {
        let resp = app.post(HEARTBEAT, Some(&token_a), &body).await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(resp.json, err("invalid request body"), "{body}");
    }
    // Nulls are the zero values.
    let resp = app
        .post(
            HEARTBEAT,
            Some(&token_a),
            &json!({"workspace_id": a.to_string(), "error_rate": null, "sample_error": null, "runtime_metadata": null}),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
}

async fn heartbeat_flow(app: TestApp) {
    let (id, token) = app
        .external(json!({"name": "hb", "runtime": "external"}))
        .await;
    // awaiting_agent → online, with `recovered_from`.
    app.heartbeat_ok(id, &token, json!({"error_rate": 0.9}))
        .await;
    assert_eq!(app.status_of(id).await, "online");
    let online = app.events_named(id, "WORKSPACE_ONLINE").await;
    assert_eq!(online, vec![json!({"recovered_from": "awaiting_agent"})]);

    // A rate just under the threshold changes nothing.
    app.heartbeat_ok(id, &token, json!({"error_rate": 0.49}))
        .await;
    assert_eq!(app.status_of(id).await, "online");
    // 0.5 degrades, with the sample error.
    app.heartbeat_ok(
        id,
        &token,
        json!({"error_rate": 0.5, "sample_error": "boom"}),
    )
    .await;
    assert_eq!(app.status_of(id).await, "degraded");
    assert_eq!(
        app.events_named(id, "WORKSPACE_DEGRADED").await,
        vec![json!({"error_rate": 0.5, "sample_error": "boom"})]
    );
    // 0.1 is not yet a recovery; 0.09 is.
    app.heartbeat_ok(id, &token, json!({"error_rate": 0.1}))
        .await;
    assert_eq!(app.status_of(id).await, "degraded");
    // Wedged keeps it degraded whatever the rate.
    app.heartbeat_ok(
        id,
        &token,
        json!({"error_rate": 0.0, "runtime_state": "wedged"}),
    )
    .await;
    assert_eq!(app.status_of(id).await, "degraded");
    app.heartbeat_ok(id, &token, json!({"error_rate": 0.09}))
        .await;
    assert_eq!(app.status_of(id).await, "online");
    assert_eq!(app.events_named(id, "WORKSPACE_ONLINE").await.len(), 2);

    // Wedged degrades an online workspace.
    app.heartbeat_ok(
        id,
        &token,
        json!({"runtime_state": "wedged", "sample_error": "stuck"}),
    )
    .await;
    assert_eq!(app.status_of(id).await, "degraded");
    let degraded = app.events_named(id, "WORKSPACE_DEGRADED").await;
    assert_eq!(
        degraded.last(),
        Some(&json!({"runtime_state": "wedged", "sample_error": "stuck"}))
    );
    app.heartbeat_ok(id, &token, json!({})).await;
    assert_eq!(app.status_of(id).await, "online");

    // An adapter that manages its own status is not degraded by its error rate.
    let managed =
        json!({"error_rate": 1.0, "runtime_metadata": {"capabilities": {"status_mgmt": true}}});
    app.heartbeat_ok(id, &token, managed).await;
    assert_eq!(app.status_of(id).await, "online");
    let listed = app.listed(id).await;
    assert_eq!(listed["last_error_rate"], 1.0);
    let unmanaged =
        json!({"error_rate": 1.0, "runtime_metadata": {"capabilities": {"status_mgmt": false}}});
    app.heartbeat_ok(id, &token, unmanaged).await;
    assert_eq!(app.status_of(id).await, "degraded");
}

#[tokio::test]
async fn heartbeat_moves_the_status_sqlite() {
    heartbeat_flow(app().await).await;
}

#[tokio::test]
async fn heartbeat_moves_the_status_postgres() {
    heartbeat_flow(pg_app().await).await;
}

#[tokio::test]
async fn heartbeat_recovers_a_provisioning_container() {
    let app = container_app().await;
    let (id, token) = app.container("c").await;
    assert_eq!(app.status_of(id).await, "provisioning");
    app.heartbeat_ok(id, &token, json!({"error_rate": 0.0}))
        .await;
    assert_eq!(app.status_of(id).await, "online");
    assert_eq!(
        app.events_named(id, "WORKSPACE_ONLINE").await,
        vec![json!({"recovered_from": "provisioning"})]
    );
}

#[tokio::test]
async fn heartbeat_writes_the_report_and_clamps_spend() {
    let app = app().await;
    let (id, token) = app
        .external(json!({"name": "spend", "runtime": "external"}))
        .await;
    app.heartbeat_ok(
        id,
        &token,
        json!({"monthly_spend": 500, "active_tasks": 2, "uptime_seconds": 60,
               "current_task": "reviewing", "sample_error": "e", "error_rate": 0.25}),
    )
    .await;
    let listed = app.listed(id).await;
    assert_eq!(listed["monthly_spend"], 500);
    assert_eq!(listed["active_tasks"], 2);
    assert_eq!(listed["uptime_seconds"], 60);
    assert_eq!(listed["current_task"], "reviewing");
    assert_eq!(listed["last_sample_error"], "e");
    assert_eq!(listed["last_error_rate"], 0.25);
    // Negative and zero spend are ignored.
    for spend in [-5, 0] {
        app.heartbeat_ok(id, &token, json!({"monthly_spend": spend}))
            .await;
        assert_eq!(app.listed(id).await["monthly_spend"], 500, "{spend}");
    }
    // Negative counters are floored at zero.
    app.heartbeat_ok(
        id,
        &token,
        json!({"active_tasks": -3, "uptime_seconds": -1}),
    )
    .await;
    let listed = app.listed(id).await;
    assert_eq!(listed["active_tasks"], 0);
    assert_eq!(listed["uptime_seconds"], 0);
    // Huge spend is clamped to 1e12 cents.
    app.heartbeat_ok(id, &token, json!({"monthly_spend": i64::MAX}))
        .await;
    assert_eq!(app.listed(id).await["monthly_spend"], 1_000_000_000_000_i64);
}

#[tokio::test]
async fn heartbeat_offline_recovery_has_an_empty_payload() {
    let app = container_app().await;
    let (id, token) = app.container("off").await;
    app.force(
        id,
        &[Transition::HeartbeatRecovered, Transition::WentOffline],
    )
    .await;
    assert_eq!(app.status_of(id).await, "offline");
    app.heartbeat_ok(id, &token, json!({"error_rate": 0.9}))
        .await;
    assert_eq!(app.status_of(id).await, "online");
    let online = app.events_named(id, "WORKSPACE_ONLINE").await;
    assert_eq!(online.last(), Some(&json!({})));
}

#[tokio::test]
async fn update_card() {
    let app = app().await;
    let (a, token_a) = app
        .external(json!({"name": "a", "runtime": "external"}))
        .await;
    let (b, token_b) = app
        .external(json!({"name": "b", "runtime": "external"}))
        .await;
    let card = json!({"name": "A", "skills": []});
    let body = json!({"workspace_id": a.to_string(), "agent_card": card});

    let resp = app.post(UPDATE_CARD, None, &body).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert_eq!(resp.json, err("missing workspace auth token"));
    for wrong in ["nope", token_b.as_str(), ADMIN_TOKEN] {
        let resp = app.post(UPDATE_CARD, Some(wrong), &body).await;
        assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
        assert_eq!(resp.json, err("invalid workspace auth token"));
    }
    for bad in [
        json!({"agent_card": {}}),
        json!({"workspace_id": a.to_string()}),
        json!({"workspace_id": a.to_string(), "agent_card": null}),
        json!({"workspace_id": "x", "agent_card": {}}),
    ] {
        let resp = app.post(UPDATE_CARD, Some(&token_a), &bad).await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(resp.json, err("invalid request body"));
    }
    assert!(app.events_named(a, "AGENT_CARD_UPDATED").await.is_empty());

    let resp = app.post(UPDATE_CARD, Some(&token_a), &body).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.json, json!({"status": "updated"}));
    assert_eq!(
        app.get(&format!("/workspaces/{a}")).await.json["agent_card"],
        card
    );
    assert_eq!(
        app.events_named(a, "AGENT_CARD_UPDATED").await,
        vec![json!({"agent_card": card})]
    );
    // The card update does not change the status, nor touch the other workspace.
    assert_eq!(app.status_of(a).await, "awaiting_agent");
    assert_eq!(
        app.get(&format!("/workspaces/{b}")).await.json["agent_card"],
        Value::Null
    );
}
