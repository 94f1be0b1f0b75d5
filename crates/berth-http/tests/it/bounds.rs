//! Client-supplied numbers that reach date or duration arithmetic are bounded at the edge (a
//! 400 that changes nothing) and checked in the core, so no value panics a handler or a sweep
//! (issue 19 point 2). The template manifest's `provision_timeout_seconds` is covered in
//! `templates.rs`; `since_secs` (capped at 30 days), `X-Timeout` (only lowers the configured
//! ceiling) and `expires_in_seconds` (capped) were bounded already.

use axum::http::StatusCode;
use berth_domain::WorkspaceId;
use berth_domain::status::Transition;
use berth_store::{NewQueueItem, WorkspacePatch};
use serde_json::json;

use crate::helpers::{ADMIN_TOKEN, TestApp, app, err, recorder_app};

const DROP_STALE: &str = "/admin/a2a-queue/drop-stale";

/// Queues one message for `target` as if it had been enqueued `days` ago.
async fn queue_old_item(app: &TestApp, target: WorkspaceId, days: i64) -> uuid::Uuid {
    let id = uuid::Uuid::new_v4();
    let enqueued = app
        .store
        .enqueue_a2a(NewQueueItem {
            id,
            workspace_id: target,
            caller_id: None,
            body: r#"{"jsonrpc":"2.0","id":1,"method":"message/send","params":{}}"#.to_owned(),
            method: Some("message/send".to_owned()),
            idempotency_key: None,
            expires_at: None,
            enqueued_at: berth_store::now() - chrono::Duration::days(days),
            max_pending: 10,
        })
        .await
        .expect("enqueue");
    assert!(
        matches!(enqueued, berth_store::Enqueued::Queued { .. }),
        "{enqueued:?}"
    );
    id
}

async fn queue_statuses(app: &TestApp, target: WorkspaceId) -> Vec<String> {
    app.store
        .a2a_queue_of(target)
        .await
        .expect("queue")
        .into_iter()
        .map(|i| i.status)
        .collect()
}

/// `max_age_minutes=140000000000` reached back past the calendar's start and panicked the
/// handler (an empty reply); now anything past ten years is a 400 that drops nothing, and ten
/// years itself still works.
#[tokio::test]
async fn drop_stale_refuses_an_age_past_ten_years_and_drops_nothing() {
    let app = app().await;
    let target = app
        .create_id(json!({"name": "t", "runtime": "external"}))
        .await;
    queue_old_item(&app, target, 9 * 365).await;
    for huge in ["5256001", "140000000000", "18446744073709551615"] {
        let resp = app
            .post(
                &format!("{DROP_STALE}?max_age_minutes={huge}"),
                Some(ADMIN_TOKEN),
                &json!({}),
            )
            .await;
        assert_eq!(
            resp.status,
            StatusCode::BAD_REQUEST,
            "{huge}: {}",
            resp.text
        );
        assert_eq!(
            resp.json,
            err("max_age_minutes must be at most 5256000 (ten years)"),
            "{huge}"
        );
        assert_eq!(queue_statuses(&app, target).await, ["queued"], "{huge}");
    }
    // Ten years: the nine-year-old item is younger; eight years: it is dropped.
    for (minutes, dropped, status) in [(5_256_000, 0, "queued"), (8 * 525_600, 1, "dropped")] {
        let resp = app
            .post(
                &format!("{DROP_STALE}?max_age_minutes={minutes}&workspace_id={target}"),
                Some(ADMIN_TOKEN),
                &json!({}),
            )
            .await;
        assert_eq!(resp.status, StatusCode::OK, "{minutes}: {}", resp.text);
        assert_eq!(resp.json, json!({"dropped": dropped}), "{minutes}");
        assert_eq!(queue_statuses(&app, target).await, [status], "{minutes}");
    }
}

/// The core does checked arithmetic too: an embedder passing an age past the calendar gets
/// "nothing is that old", not a panic.
#[tokio::test]
async fn the_core_drops_nothing_for_an_age_past_the_calendar() {
    let app = app().await;
    let target = app
        .create_id(json!({"name": "t", "runtime": "external"}))
        .await;
    queue_old_item(&app, target, 1).await;
    for age in [
        std::time::Duration::from_secs(140_000_000_000 * 60),
        std::time::Duration::MAX,
    ] {
        assert_eq!(
            app.service
                .drop_stale_a2a(age, None)
                .await
                .expect("drop stale"),
            0,
            "{age:?}"
        );
    }
    assert_eq!(queue_statuses(&app, target).await, ["queued"]);
}

/// `hibernation_idle_minutes` is added to a timestamp by the hibernation monitor: past ten
/// years it is a 400 and the row keeps its value.
#[tokio::test]
async fn hibernation_idle_minutes_past_ten_years_is_refused() {
    let app = app().await;
    let id = app
        .create_id(json!({"name": "w", "model": "openai/gpt-4o"}))
        .await;
    app.service.drain().await;
    app.patch_ok(id, json!({"hibernation_idle_minutes": 5_256_000}))
        .await;
    for huge in [
        json!(5_256_001),
        json!(140_000_000_000_i64),
        json!(i64::MAX),
    ] {
        let before = app.get(&format!("/workspaces/{id}")).await.json;
        let resp = app
            .patch(
                id,
                Some(ADMIN_TOKEN),
                &json!({"hibernation_idle_minutes": huge}),
            )
            .await;
        assert_eq!(
            resp.status,
            StatusCode::BAD_REQUEST,
            "{huge}: {}",
            resp.text
        );
        assert_eq!(
            resp.json,
            err("hibernation_idle_minutes must be at most 5256000 (ten years)"),
            "{huge}"
        );
        assert_eq!(app.db.hibernation_idle_minutes(id).await, Some(5_256_000));
        assert_eq!(app.get(&format!("/workspaces/{id}")).await.json, before);
    }
}

/// A window stored before the bound existed (or by an embedder through the store) never
/// panics the hibernation monitor: a window past the calendar is simply never over.
#[tokio::test]
async fn the_hibernation_monitor_survives_a_window_past_the_calendar() {
    let (app, _rec) = recorder_app(false).await;
    let (id, _token) = app.container("idle").await;
    app.force(id, &[Transition::AgentRegistered]).await;
    for minutes in [i64::MAX, 140_000_000_000] {
        app.store
            .update_workspace(
                id,
                WorkspacePatch {
                    hibernation_idle_minutes: Some(Some(minutes)),
                    ..WorkspacePatch::default()
                },
            )
            .await
            .expect("store the window");
        let later = berth_store::now() + chrono::Duration::days(365);
        let hibernated = app
            .service
            .sweep_hibernation(later)
            .await
            .expect("hibernation pass");
        assert!(hibernated.is_empty(), "{minutes}: {hibernated:?}");
        assert_eq!(app.status_of(id).await, "online", "{minutes}");
    }
}
