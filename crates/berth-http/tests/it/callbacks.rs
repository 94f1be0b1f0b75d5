//! The control-plane callbacks (REFERENCE.md §2.21): `POST /admin/workspaces/{id}/bootstrap-failed`
//! with its 8192-byte, UTF-8-safe tail rules, and `GET /workspaces/{id}/console`, which only a
//! control-plane provisioner can answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use berth_core::lifecycle::{BOOTSTRAP_DEFAULT_ERROR, BOOTSTRAP_TAIL_CAP, TRUNCATION_MARKER};
use berth_domain::WorkspaceId;
use serde_json::json;

use crate::helpers::{ADMIN_TOKEN, Recorder, Setup, TestApp, app, err, started_provisioner};

fn uri(id: impl std::fmt::Display) -> String {
    format!("/admin/workspaces/{id}/bootstrap-failed")
}

async fn provisioning_app(postgres: bool) -> TestApp {
    Setup {
        provisioner: Recorder::new(),
        postgres,
        ..Setup::default()
    }
    .start()
    .await
}

async fn bootstrap_failed_flow(app: TestApp) {
    let id = app
        .create_id(json!({"name": "boot", "model": "openai/gpt-4o"}))
        .await;
    app.service.drain().await;
    assert_eq!(app.status_of(id).await, "provisioning");

    let resp = app
        .post(
            &uri(id),
            Some(ADMIN_TOKEN),
            &json!({"error": "cloud-init exploded", "log_tail": "step 1\nstep 2 failed"}),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.json, json!({"ok": true}));
    let row = app.row(id).await;
    assert_eq!(app.status_of(id).await, "failed");
    assert_eq!(row.failure_code.as_deref(), Some("BOOTSTRAP_FAILED"));
    assert_eq!(
        row.last_sample_error.as_deref(),
        Some("cloud-init exploded\n\nstep 1\nstep 2 failed")
    );
    assert_eq!(
        app.events_named(id, "WORKSPACE_PROVISION_FAILED").await,
        [json!({
            "error": "cloud-init exploded", "log_tail": "step 1\nstep 2 failed",
            "code": "BOOTSTRAP_FAILED", "source": "bootstrap_watcher",
        })]
    );

    // Not provisioning any more: no change, no second event.
    let resp = app
        .post(&uri(id), Some(ADMIN_TOKEN), &json!({"error": "again"}))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.json, json!({"ok": true, "no_change": true}));
    assert_eq!(
        app.events_named(id, "WORKSPACE_PROVISION_FAILED")
            .await
            .len(),
        1
    );
    assert_eq!(
        app.row(id).await.last_sample_error.as_deref(),
        Some("cloud-init exploded\n\nstep 1\nstep 2 failed")
    );
}

#[tokio::test]
async fn bootstrap_failed_fails_a_provisioning_workspace_once() {
    bootstrap_failed_flow(provisioning_app(false).await).await;
}

#[tokio::test]
async fn bootstrap_failed_fails_a_provisioning_workspace_once_on_postgres() {
    bootstrap_failed_flow(provisioning_app(true).await).await;
}

#[tokio::test]
async fn bootstrap_failed_keeps_a_utf8_safe_tail_and_caps_the_reason() {
    let app = provisioning_app(false).await;
    let id = app
        .create_id(json!({"name": "tail", "model": "openai/gpt-4o"}))
        .await;
    app.service.drain().await;
    // 3-byte characters, so the 8192-byte cut lands inside one and must move forward.
    let log = format!("{}END", "€".repeat(3001));
    assert!(log.len() > BOOTSTRAP_TAIL_CAP);
    assert_ne!((log.len() - BOOTSTRAP_TAIL_CAP) % 3, 0);
    let resp = app
        .post(&uri(id), Some(ADMIN_TOKEN), &json!({"log_tail": log}))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.json, json!({"ok": true}));

    let event = app.events_named(id, "WORKSPACE_PROVISION_FAILED").await;
    assert_eq!(event.len(), 1);
    assert_eq!(event[0]["error"], BOOTSTRAP_DEFAULT_ERROR, "default error");
    assert_eq!(event[0]["source"], "bootstrap_watcher");
    let tail = event[0]["log_tail"].as_str().expect("log_tail");
    let kept = tail
        .strip_prefix(TRUNCATION_MARKER)
        .expect("a cut tail carries the marker");
    assert!(log.ends_with(kept), "the tail is the end of the log");
    assert!(kept.ends_with("END"));
    assert!(
        (BOOTSTRAP_TAIL_CAP - 2..=BOOTSTRAP_TAIL_CAP).contains(&kept.len()),
        "{} bytes kept",
        kept.len()
    );

    let reason = app.row(id).await.last_sample_error.expect("reason");
    assert!(reason.len() <= BOOTSTRAP_TAIL_CAP, "{} bytes", reason.len());
    let full = format!("{BOOTSTRAP_DEFAULT_ERROR}\n\n{tail}");
    assert!(full.len() > BOOTSTRAP_TAIL_CAP);
    assert!(
        full.starts_with(&reason),
        "the reason is the head of error + tail"
    );
    assert!(
        reason.len() > BOOTSTRAP_TAIL_CAP - 4,
        "cut only to a char boundary"
    );

    // A short tail is kept whole, without a marker.
    let id2 = app
        .create_id(json!({"name": "tail2", "model": "openai/gpt-4o"}))
        .await;
    app.service.drain().await;
    let resp = app
        .post(
            &uri(id2),
            Some(ADMIN_TOKEN),
            &json!({"error": "x", "log_tail": "€uro"}),
        )
        .await;
    assert_eq!(resp.json, json!({"ok": true}));
    assert_eq!(
        app.row(id2).await.last_sample_error.as_deref(),
        Some("x\n\n€uro")
    );
}

#[tokio::test]
async fn bootstrap_failed_refusals() {
    let app = provisioning_app(false).await;
    let (id, token) = app.container("guarded").await;
    // A workspace token is not the admin credential.
    let resp = app
        .post(&uri(id), Some(&token), &json!({"error": "x"}))
        .await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{}", resp.text);
    let resp = app.post(&uri(id), None, &json!({"error": "x"})).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{}", resp.text);
    assert_eq!(app.status_of(id).await, "provisioning");
    // Bad id, unknown id, bad body.
    let resp = app
        .post(&uri("nope"), Some(ADMIN_TOKEN), &json!({"error": "x"}))
        .await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert_eq!(resp.json, err("invalid workspace ID"));
    let resp = app
        .post(&uri(WorkspaceId::new_v4()), Some(ADMIN_TOKEN), &json!({}))
        .await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND);
    assert_eq!(resp.json, err("workspace not found"));
    let resp = app.post_raw(&uri(id), Some(ADMIN_TOKEN), "{not json").await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert_eq!(resp.json, err("invalid request body"));
    let resp = app
        .post(&uri(id), Some(ADMIN_TOKEN), &json!({"error": 5}))
        .await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        app.status_of(id).await,
        "provisioning",
        "refusals change nothing"
    );
    // An empty body is a report with defaults.
    let resp = app.post_raw(&uri(id), Some(ADMIN_TOKEN), "").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.json, json!({"ok": true}));
    assert_eq!(
        app.row(id).await.last_sample_error.as_deref(),
        Some(BOOTSTRAP_DEFAULT_ERROR)
    );
}

fn console_uri(id: impl std::fmt::Display) -> String {
    format!("/workspaces/{id}/console")
}

#[tokio::test]
async fn console_is_501_without_a_control_plane() {
    let app = app().await;
    let (id, token) = app.container("no-cp").await;
    let resp = app
        .call(Method::GET, &console_uri(id), Some(ADMIN_TOKEN))
        .await;
    assert_eq!(resp.status, StatusCode::NOT_IMPLEMENTED, "{}", resp.text);
    assert_eq!(
        resp.json,
        err("console output unavailable on this deployment (no control plane)")
    );
    // Admin only.
    let resp = app.call(Method::GET, &console_uri(id), Some(&token)).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{}", resp.text);
    let resp = app
        .call(
            Method::GET,
            &console_uri(WorkspaceId::new_v4()),
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND);
    assert_eq!(resp.json, err("workspace not found"));
    let resp = app
        .call(Method::GET, &console_uri("nope"), Some(ADMIN_TOKEN))
        .await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert_eq!(resp.json, err("invalid workspace ID"));
}

#[tokio::test]
async fn console_relays_a_control_plane_and_maps_its_errors_to_502() {
    let mut mock = started_provisioner(|_| Ok(true));
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    mock.expect_console()
        .returning(move |_| match seen.fetch_add(1, Ordering::SeqCst) {
            0 => Ok(Some("[    0.000] Linux version\nlogin: ".into())),
            _ => Err(berth_provision::Error::Backend(
                "control plane console answered 500: secret internals".into(),
            )),
        });
    let app = Setup {
        provisioner: Arc::new(mock),
        ..Setup::default()
    }
    .start()
    .await;
    let (id, _) = app.container("cp").await;

    let resp = app
        .call(Method::GET, &console_uri(id), Some(ADMIN_TOKEN))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(
        resp.json,
        json!({"output": "[    0.000] Linux version\nlogin: "})
    );

    let resp = app
        .send(
            Request::builder()
                .method(Method::GET)
                .uri(console_uri(id))
                .header(header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(resp.status, StatusCode::BAD_GATEWAY, "{}", resp.text);
    assert_eq!(
        resp.json,
        err("control plane returned an error fetching console output"),
        "the backend's text is not passed on"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}
