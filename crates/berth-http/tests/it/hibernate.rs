//! Hibernation (REFERENCE.md §2.11, §5.7, §11.3) and berth's wake (DECISIONS.md §2.14):
//! `POST /workspaces/{id}/hibernate` with its 404/409 refusals and `?force=true`, the
//! hibernate → wake → online round trip through the provisioner, resume of a hibernated
//! workspace, and the idle monitor driven with an explicit clock.

use axum::http::{Method, StatusCode};
use berth_domain::WorkspaceId;
use berth_domain::status::Transition;
use serde_json::json;

use crate::helpers::{ADMIN_TOKEN, Call, TestApp, app, err, recorder_app};

const NOT_HIBERNATABLE: &str =
    "workspace not found or not in a hibernatable state (must be online or degraded)";
const BUSY: &str = "workspace has active tasks; use ?force=true to terminate them";

/// A started container workspace whose agent registered; returns its id and a token.
async fn online(app: &TestApp, name: &str) -> (WorkspaceId, String) {
    let (id, token) = app.container(name).await;
    app.force(id, &[Transition::AgentRegistered]).await;
    assert_eq!(app.status_of(id).await, "online");
    (id, token)
}

async fn post(app: &TestApp, id: WorkspaceId, action: &str, bearer: &str) -> crate::helpers::Resp {
    app.call(
        Method::POST,
        &format!("/workspaces/{id}/{action}"),
        Some(bearer),
    )
    .await
}

/// The status-changing events of a workspace, by name, oldest first.
async fn status_events(app: &TestApp, id: WorkspaceId) -> Vec<String> {
    app.events_of(id)
        .await
        .into_iter()
        .map(|(t, _)| t)
        .filter(|t| t.starts_with("WORKSPACE_"))
        .collect()
}

async fn hibernate_wake_round_trip(postgres: bool) {
    let (app, rec) = recorder_app(postgres).await;
    let (id, token) = online(&app, "sleeper").await;

    let resp = post(&app, id, "hibernate", &token).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.json, json!({"status": "hibernated"}));
    assert_eq!(app.status_of(id).await, "hibernated");
    assert_eq!(rec.calls_for(id), [Call::Start(id), Call::Stop(id)]);
    assert_eq!(
        app.events_named(id, "WORKSPACE_HIBERNATED").await,
        [json!({"name": "sleeper", "tier": 3})]
    );
    assert_eq!(app.listed(id).await["url"], "");

    // Hibernated: a second hibernate is a 404; restart refuses it; nothing is stopped again.
    let resp = post(&app, id, "hibernate", &token).await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND, "{}", resp.text);
    assert_eq!(resp.json, err(NOT_HIBERNATABLE));
    let resp = post(&app, id, "restart", &token).await;
    assert_eq!(resp.status, StatusCode::CONFLICT, "{}", resp.text);
    app.service.drain().await;
    assert_eq!(rec.calls_for(id).len(), 2);

    // Wake really provisions again.
    let resp = post(&app, id, "wake", &token).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.json, json!({"status": "provisioning"}));
    app.service.drain().await;
    assert_eq!(app.status_of(id).await, "provisioning");
    assert_eq!(
        rec.calls_for(id),
        [Call::Start(id), Call::Stop(id), Call::Start(id)]
    );
    assert_eq!(
        app.events_named(id, "WORKSPACE_PROVISIONING").await.last(),
        Some(&json!({"name": "sleeper", "tier": 3, "runtime": "claude-code"}))
    );
    // Waking twice is refused and starts nothing.
    let resp = post(&app, id, "wake", ADMIN_TOKEN).await;
    assert_eq!(resp.status, StatusCode::CONFLICT, "{}", resp.text);
    assert_eq!(resp.json, err("workspace not found or not hibernated"));
    app.service.drain().await;
    assert_eq!(rec.calls_for(id).len(), 3);

    // The new agent registers with the token its start carried: online again.
    let fresh = rec.auth_token_of_start(id, 1);
    let resp = app.register(id, Some(&fresh), Some("poll")).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(app.status_of(id).await, "online");
    assert_eq!(
        status_events(&app, id).await,
        [
            "WORKSPACE_PROVISIONING",
            "WORKSPACE_ONLINE",
            "WORKSPACE_HIBERNATED",
            "WORKSPACE_PROVISIONING",
            "WORKSPACE_ONLINE",
        ]
    );
}

#[tokio::test]
async fn hibernate_then_wake_provisions_again_and_comes_online() {
    hibernate_wake_round_trip(false).await;
}

#[tokio::test]
async fn hibernate_then_wake_provisions_again_and_comes_online_on_postgres() {
    hibernate_wake_round_trip(true).await;
}

#[tokio::test]
async fn active_tasks_need_force_and_force_really_hibernates() {
    let (app, rec) = recorder_app(false).await;
    let (id, token) = online(&app, "busy").await;
    app.heartbeat_ok(id, &token, json!({"active_tasks": 2}))
        .await;

    let resp = post(&app, id, "hibernate", &token).await;
    assert_eq!(resp.status, StatusCode::CONFLICT, "{}", resp.text);
    assert_eq!(resp.json, json!({"error": BUSY, "active_tasks": 2}));
    assert_eq!(app.status_of(id).await, "online");
    assert_eq!(rec.calls_for(id), [Call::Start(id)], "nothing stopped");
    assert!(
        app.events_named(id, "WORKSPACE_HIBERNATED")
            .await
            .is_empty()
    );

    let resp = app
        .call(
            Method::POST,
            &format!("/workspaces/{id}/hibernate?force=true"),
            Some(&token),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.json, json!({"status": "hibernated"}));
    assert_eq!(app.status_of(id).await, "hibernated");
    assert_eq!(rec.calls_for(id), [Call::Start(id), Call::Stop(id)]);
    assert_eq!(app.events_named(id, "WORKSPACE_HIBERNATED").await.len(), 1);
}

#[tokio::test]
async fn only_online_or_degraded_container_workspaces_hibernate() {
    let (app, rec) = recorder_app(false).await;
    // Provisioning.
    let (booting, token) = app.container("booting").await;
    let resp = post(&app, booting, "hibernate", &token).await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND, "{}", resp.text);
    assert_eq!(resp.json, err(NOT_HIBERNATABLE));
    // Unknown.
    let resp = post(&app, WorkspaceId::new_v4(), "hibernate", ADMIN_TOKEN).await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND, "{}", resp.text);
    assert_eq!(resp.json, err(NOT_HIBERNATABLE));
    // Degraded hibernates.
    let (sick, sick_token) = online(&app, "sick").await;
    app.force(sick, &[Transition::Degraded]).await;
    let resp = post(&app, sick, "hibernate", &sick_token).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(app.status_of(sick).await, "hibernated");
    // External-like: operator-driven, nothing to stop.
    let (ext, ext_token) = app
        .external(json!({"name": "ext", "external": true, "runtime": "external"}))
        .await;
    app.force(ext, &[Transition::AgentRegistered]).await;
    let resp = post(&app, ext, "hibernate", &ext_token).await;
    assert_eq!(resp.status, StatusCode::CONFLICT, "{}", resp.text);
    assert_eq!(
        resp.json,
        err("external workspaces are operator-driven — the platform has nothing to hibernate")
    );
    assert_eq!(app.status_of(ext).await, "online");
    assert!(rec.calls_for(ext).is_empty());
    // Removed.
    assert_eq!(app.delete(booting, "").await.status, StatusCode::OK);
    let resp = post(&app, booting, "hibernate", ADMIN_TOKEN).await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND, "{}", resp.text);
    // Another workspace's token.
    let resp = post(&app, sick, "wake", &ext_token).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{}", resp.text);
    assert_eq!(app.status_of(sick).await, "hibernated");
}

#[tokio::test]
async fn resume_wakes_a_hibernated_workspace() {
    let (app, rec) = recorder_app(false).await;
    let (id, token) = online(&app, "resumable").await;
    assert_eq!(
        post(&app, id, "hibernate", &token).await.status,
        StatusCode::OK
    );
    let resp = post(&app, id, "resume", &token).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(
        resp.json,
        json!({"status": "provisioning", "resumed_count": 1})
    );
    app.service.drain().await;
    assert_eq!(app.status_of(id).await, "provisioning");
    assert_eq!(
        rec.calls_for(id),
        [Call::Start(id), Call::Stop(id), Call::Start(id)]
    );
}

#[tokio::test]
async fn wake_without_a_backend_is_503_and_changes_nothing() {
    let app = app().await;
    let (id, _) = app.container("nobackend").await; // failed: no backend
    app.force(
        id,
        &[
            Transition::Reprovision,
            Transition::AgentRegistered,
            Transition::HibernateStarted,
            Transition::Hibernated,
        ],
    )
    .await;
    let resp = post(&app, id, "wake", ADMIN_TOKEN).await;
    assert_eq!(
        resp.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        resp.text
    );
    assert_eq!(resp.json, err("provisioner not available"));
    assert_eq!(app.status_of(id).await, "hibernated");
}

async fn idle_monitor(postgres: bool) {
    let (app, rec) = recorder_app(postgres).await;
    let (idle, idle_token) = online(&app, "idle").await;
    let (no_window, nw_token) = online(&app, "no-window").await;
    let (busy, busy_token) = online(&app, "busy").await;
    app.heartbeat_ok(idle, &idle_token, json!({"active_tasks": 0}))
        .await;
    app.heartbeat_ok(no_window, &nw_token, json!({"active_tasks": 0}))
        .await;
    app.heartbeat_ok(busy, &busy_token, json!({"active_tasks": 1}))
        .await;
    // `hibernation_idle_minutes` is admin-only and settable through PATCH.
    for id in [idle, busy] {
        app.patch_ok(id, json!({"hibernation_idle_minutes": 60}))
            .await;
    }

    let now = berth_store::now();
    assert!(
        app.service.sweep_hibernation(now).await.unwrap().is_empty(),
        "an hour has not passed since the last activity"
    );
    let later = now + chrono::Duration::minutes(61);
    // Heartbeats that change nothing are not activity: the idle agent is still idle later.
    app.heartbeat_ok(idle, &idle_token, json!({"active_tasks": 0}))
        .await;
    assert_eq!(app.service.sweep_hibernation(later).await.unwrap(), [idle]);
    assert_eq!(app.status_of(idle).await, "hibernated");
    assert_eq!(rec.calls_for(idle), [Call::Start(idle), Call::Stop(idle)]);
    assert_eq!(
        app.events_named(idle, "WORKSPACE_HIBERNATED").await,
        [json!({"name": "idle", "tier": 3})]
    );
    for id in [no_window, busy] {
        assert_eq!(app.status_of(id).await, "online");
        assert_eq!(rec.calls_for(id), [Call::Start(id)]);
    }
    // A second pass, even a day later, finds nothing more to do.
    let tomorrow = now + chrono::Duration::days(1);
    assert!(
        app.service
            .sweep_hibernation(tomorrow)
            .await
            .unwrap()
            .is_empty()
    );

    // A woken workspace starts a new idle window from its new activity.
    assert_eq!(
        post(&app, idle, "wake", ADMIN_TOKEN).await.status,
        StatusCode::OK
    );
    app.service.drain().await;
    let fresh = rec.auth_token_of_start(idle, 1);
    assert_eq!(
        app.register(idle, Some(&fresh), Some("poll")).await.status,
        StatusCode::OK
    );
    assert!(
        app.service
            .sweep_hibernation(berth_store::now())
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(app.status_of(idle).await, "online");
}

#[tokio::test]
async fn idle_monitor_hibernates_idle_workspaces_only() {
    idle_monitor(false).await;
}

#[tokio::test]
async fn idle_monitor_hibernates_idle_workspaces_only_on_postgres() {
    idle_monitor(true).await;
}
