//! `POST /workspaces/{id}/pause` and `/resume` (REFERENCE.md §2.10, §5.7): recursive pause with
//! stops and events, refusals, recursive resume with starts, external-like workspaces going back
//! to `awaiting_agent`, and the no-backend path.

use axum::http::{Method, StatusCode};
use berth_domain::WorkspaceId;
use serde_json::json;

use crate::helpers::{Call, TestApp, app, err, pg_app, recorder_app};

const NOT_PAUSABLE: &str = "workspace not found or already paused";
const NOT_PAUSED: &str = "workspace not found or not paused";

/// A container `p` with a container child `c`, both started once.
async fn parent_and_child(app: &TestApp) -> (WorkspaceId, WorkspaceId) {
    let p = app
        .create_id(json!({"name": "p", "model": "openai/gpt-4o"}))
        .await;
    let c = app
        .create_id(json!({"name": "c", "model": "openai/gpt-4o", "parent_id": p.to_string()}))
        .await;
    app.service.drain().await;
    (p, c)
}

async fn pause_and_resume_a_subtree(postgres: bool) {
    let (app, rec) = recorder_app(postgres).await;
    let (p, c) = parent_and_child(&app).await;
    let token = app.admin_mint(p).await;

    // Pause with the workspace's own token: both paused, both stopped, one event each.
    let resp = app
        .call(
            Method::POST,
            &format!("/workspaces/{p}/pause"),
            Some(&token),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.json, json!({"status": "paused", "paused_count": 2}));
    for (id, name) in [(p, "p"), (c, "c")] {
        assert_eq!(app.status_of(id).await, "paused");
        assert_eq!(rec.calls_for(id), [Call::Start(id), Call::Stop(id)]);
        assert_eq!(
            app.events_named(id, "WORKSPACE_PAUSED").await,
            [json!({"name": name})]
        );
        assert_eq!(app.listed(id).await["url"], "");
    }
    // Tokens survive a pause.
    let resp = app
        .call(Method::GET, &format!("/workspaces/{p}/state"), Some(&token))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.json["paused"], true);

    // Pausing again, or the paused child, is refused and changes nothing.
    for id in [p, c] {
        let resp = app.lifecycle(id, "pause").await;
        assert_eq!(resp.status, StatusCode::NOT_FOUND, "{}", resp.text);
        assert_eq!(resp.json, err(NOT_PAUSABLE));
        assert_eq!(app.events_named(id, "WORKSPACE_PAUSED").await.len(), 1);
        assert_eq!(rec.calls_for(id).len(), 2);
    }

    // The child cannot resume under its paused parent.
    let resp = app.lifecycle(c, "resume").await;
    assert_eq!(resp.status, StatusCode::CONFLICT, "{}", resp.text);
    assert_eq!(
        resp.json,
        err("parent workspace \"p\" is paused — resume it first")
    );
    app.service.drain().await;
    assert_eq!(app.status_of(c).await, "paused");
    assert_eq!(rec.calls_for(c).len(), 2);

    // Resuming the parent resumes both and starts both.
    let provisioning_before = app.events_named(c, "WORKSPACE_PROVISIONING").await.len();
    let resp = app.lifecycle(p, "resume").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(
        resp.json,
        json!({"status": "provisioning", "resumed_count": 2})
    );
    app.service.drain().await;
    for (id, name) in [(p, "p"), (c, "c")] {
        assert_eq!(app.status_of(id).await, "provisioning");
        assert_eq!(
            rec.calls_for(id),
            [Call::Start(id), Call::Stop(id), Call::Start(id)]
        );
        let events = app.events_named(id, "WORKSPACE_PROVISIONING").await;
        assert_eq!(
            events.last(),
            Some(&json!({"name": name, "tier": 3, "runtime": "claude-code"}))
        );
    }
    assert_eq!(
        app.events_named(c, "WORKSPACE_PROVISIONING").await.len(),
        provisioning_before + 1
    );

    // Resuming what is not paused is refused.
    for id in [p, c] {
        let resp = app.lifecycle(id, "resume").await;
        assert_eq!(resp.status, StatusCode::NOT_FOUND, "{}", resp.text);
        assert_eq!(resp.json, err(NOT_PAUSED));
    }
    app.service.drain().await;
    assert_eq!(rec.calls_for(p).len(), 3);
}

#[tokio::test]
async fn pause_and_resume_a_subtree_sqlite() {
    pause_and_resume_a_subtree(false).await;
}

#[tokio::test]
async fn pause_and_resume_a_subtree_postgres() {
    pause_and_resume_a_subtree(true).await;
}

#[tokio::test]
async fn a_child_pauses_and_resumes_alone() {
    let (app, rec) = recorder_app(false).await;
    let (p, c) = parent_and_child(&app).await;
    let resp = app.lifecycle(c, "pause").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.json, json!({"status": "paused", "paused_count": 1}));
    assert_eq!(app.status_of(p).await, "provisioning");
    assert_eq!(rec.calls_for(p), [Call::Start(p)]);

    // Pausing the parent now pauses only the parent; resuming it resumes both.
    let resp = app.lifecycle(p, "pause").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.json, json!({"status": "paused", "paused_count": 1}));
    assert_eq!(app.events_named(c, "WORKSPACE_PAUSED").await.len(), 1);
    let resp = app.lifecycle(p, "resume").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(
        resp.json,
        json!({"status": "provisioning", "resumed_count": 2})
    );
    app.service.drain().await;
    assert_eq!(app.status_of(c).await, "provisioning");
    assert_eq!(rec.calls_for(c).last(), Some(&Call::Start(c)));
}

async fn refusals(app: TestApp) {
    let unknown = WorkspaceId::new_v4();
    let resp = app.lifecycle(unknown, "pause").await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND, "{}", resp.text);
    assert_eq!(resp.json, err(NOT_PAUSABLE));
    let resp = app.lifecycle(unknown, "resume").await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND, "{}", resp.text);
    assert_eq!(resp.json, err(NOT_PAUSED));

    let (id, _) = app
        .external(json!({"name": "e", "runtime": "external"}))
        .await;
    let (_, other_token) = app
        .external(json!({"name": "o", "runtime": "external"}))
        .await;
    // Not paused: resume is refused.
    let resp = app.lifecycle(id, "resume").await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND, "{}", resp.text);
    assert_eq!(resp.json, err(NOT_PAUSED));
    // Another workspace's token may do neither.
    for action in ["pause", "resume"] {
        let resp = app
            .call(
                Method::POST,
                &format!("/workspaces/{id}/{action}"),
                Some(&other_token),
            )
            .await;
        assert_eq!(
            resp.status,
            StatusCode::UNAUTHORIZED,
            "{action}: {}",
            resp.text
        );
    }
    assert_eq!(app.status_of(id).await, "awaiting_agent");

    // Removed: neither.
    assert_eq!(app.delete(id, "").await.status, StatusCode::OK);
    let resp = app.lifecycle(id, "pause").await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND, "{}", resp.text);
    assert_eq!(resp.json, err(NOT_PAUSABLE));
    let resp = app.lifecycle(id, "resume").await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND, "{}", resp.text);
    assert_eq!(resp.json, err(NOT_PAUSED));
    assert_eq!(app.status_of(id).await, "removed");
    assert!(app.events_named(id, "WORKSPACE_PAUSED").await.is_empty());
}

#[tokio::test]
async fn refusals_sqlite() {
    refusals(app().await).await;
}

#[tokio::test]
async fn refusals_postgres() {
    refusals(pg_app().await).await;
}

#[tokio::test]
async fn a_paused_external_workspace_resumes_to_awaiting_agent() {
    let (app, rec) = recorder_app(false).await;
    let (e, token) = app
        .external(json!({"name": "e", "runtime": "external"}))
        .await;
    let (k, _) = app
        .external(json!({"name": "k", "runtime": "kimi", "parent_id": e.to_string()}))
        .await;
    app.heartbeat_ok(e, &token, json!({})).await;
    assert_eq!(app.status_of(e).await, "online");
    let provisioning = [
        app.events_named(e, "WORKSPACE_PROVISIONING").await,
        app.events_named(k, "WORKSPACE_PROVISIONING").await,
    ];

    let resp = app.lifecycle(e, "pause").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.json, json!({"status": "paused", "paused_count": 2}));
    let resp = app.lifecycle(e, "resume").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(
        resp.json,
        json!({"status": "provisioning", "resumed_count": 2})
    );
    app.service.drain().await;
    for ((id, name), provisioning) in [(e, "e"), (k, "k")].into_iter().zip(provisioning) {
        assert_eq!(app.status_of(id).await, "awaiting_agent");
        assert!(
            rec.calls_for(id).is_empty(),
            "no stop and no start for {name}"
        );
        assert_eq!(
            app.events_named(id, "WORKSPACE_AWAITING_AGENT")
                .await
                .last(),
            Some(&json!({"name": name, "external": true}))
        );
        assert_eq!(
            app.events_named(id, "WORKSPACE_PROVISIONING").await,
            provisioning,
            "{name} was not provisioned"
        );
    }
    // Its agent comes back with the same token.
    app.heartbeat_ok(e, &token, json!({})).await;
    assert_eq!(app.status_of(e).await, "online");
}

#[tokio::test]
async fn without_a_backend() {
    let app = app().await;
    // External workspaces pause and resume without any backend.
    let (e, _) = app
        .external(json!({"name": "e", "runtime": "external"}))
        .await;
    let resp = app.lifecycle(e, "pause").await;
    assert_eq!(resp.json, json!({"status": "paused", "paused_count": 1}));
    let resp = app.lifecycle(e, "resume").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(
        resp.json,
        json!({"status": "provisioning", "resumed_count": 1})
    );
    assert_eq!(app.status_of(e).await, "awaiting_agent");

    // A container workspace pauses, but cannot resume.
    let c = app
        .create_id(json!({"name": "c", "model": "openai/gpt-4o", "parent_id": e.to_string()}))
        .await;
    app.service.drain().await;
    assert_eq!(app.status_of(c).await, "failed");
    let resp = app.lifecycle(c, "pause").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.json, json!({"status": "paused", "paused_count": 1}));
    let provisioning = app.events_named(c, "WORKSPACE_PROVISIONING").await;
    let resp = app.lifecycle(c, "resume").await;
    assert_eq!(
        resp.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        resp.text
    );
    assert_eq!(resp.json, err("provisioner not available"));
    assert_eq!(app.status_of(c).await, "paused");

    // A subtree with a container in it resumes not at all.
    let resp = app.lifecycle(c, "pause").await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND);
    let resp = app.lifecycle(e, "pause").await;
    assert_eq!(resp.json, json!({"status": "paused", "paused_count": 1}));
    let resp = app.lifecycle(e, "resume").await;
    assert_eq!(
        resp.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        resp.text
    );
    assert_eq!(resp.json, err("provisioner not available"));
    assert_eq!(app.status_of(e).await, "paused");
    assert_eq!(app.status_of(c).await, "paused");
    app.service.drain().await;
    assert_eq!(
        app.events_named(c, "WORKSPACE_PROVISIONING").await,
        provisioning,
        "resume did not provision"
    );
    assert!(app.events_named(e, "WORKSPACE_AWAITING_AGENT").await.len() >= 2);
}
