//! `GET /admin/liveness`: every background loop with its last tick and staleness (REFERENCE-2.md
//! §5, fixing §9.5 #49).

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::helpers::app;

const LOOPS: [&str; 7] = [
    "a2a_queue_drain",
    "event_retention_sweep",
    "health_sweep",
    "hibernation_monitor",
    "liveness_sweep",
    "orphan_sweep",
    "provision_timeout_sweep",
];

#[tokio::test]
async fn liveness_needs_the_admin_bearer() {
    let app = app().await;
    let resp = app.get_anon("/admin/liveness").await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert_eq!(resp.json, json!({"error": "admin auth required"}));
}

#[tokio::test]
async fn before_the_sweeper_runs_every_loop_is_listed_without_ticks() {
    let app = app().await;
    let resp = app.get("/admin/liveness").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.json["sweeps_started"], false);
    assert_eq!(resp.json["stale"], json!([]));
    let subsystems = resp.json["subsystems"].as_object().expect("object");
    let names: Vec<&str> = subsystems.keys().map(String::as_str).collect();
    assert_eq!(names, LOOPS);
    assert_eq!(
        subsystems["liveness_sweep"],
        json!({"last_tick_at": null, "seconds_ago": null, "interval_seconds": 15,
               "stale_after_seconds": 45, "stale": false})
    );
    assert_eq!(subsystems["hibernation_monitor"]["interval_seconds"], 120);
    assert_eq!(
        subsystems["hibernation_monitor"]["stale_after_seconds"],
        360
    );
}

#[tokio::test]
async fn sweeps_record_ticks_and_silence_turns_stale() {
    let app = app().await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let svc = app.service.clone();
    let sweeper = tokio::spawn(async move { svc.run_sweeps(stopped).await });

    // The orphan sweep runs at start and the first interval tick fires at once: wait (bounded)
    // until those five loops have ticked.
    let ticked = |body: &Value, name: &str| !body["subsystems"][name]["last_tick_at"].is_null();
    let expected = [
        "a2a_queue_drain",
        "event_retention_sweep",
        "health_sweep",
        "liveness_sweep",
        "orphan_sweep",
        "provision_timeout_sweep",
    ];
    let body = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let body = app.get("/admin/liveness").await.json;
            if expected.iter().all(|n| ticked(&body, n)) {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the sweeps ticked within 30 s");
    stop.send(true).expect("sweeper alive");
    sweeper.await.expect("sweeper stopped");

    assert_eq!(body["sweeps_started"], true);
    assert_eq!(body["stale"], json!([]));
    let tick = &body["subsystems"]["liveness_sweep"];
    let at = tick["last_tick_at"].as_str().expect("rfc 3339 time");
    chrono::DateTime::parse_from_rfc3339(at).expect("parses as RFC 3339");
    assert!(tick["seconds_ago"].as_i64().is_some_and(|s| s >= 0));
    assert_eq!(tick["stale"], false);
    // The hibernation monitor first runs after two minutes.
    assert!(body["subsystems"]["hibernation_monitor"]["last_tick_at"].is_null());

    // An hour of silence later every loop is stale, including the one that never ticked.
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    let report = app.service.loop_liveness(later);
    assert_eq!(report.len(), LOOPS.len());
    assert!(report.iter().all(|l| l.stale), "{report:?}");
    // Within its window a loop is not stale.
    let soon = chrono::Utc::now() + chrono::Duration::seconds(10);
    let report = app.service.loop_liveness(soon);
    assert!(report.iter().all(|l| !l.stale), "{report:?}");

    // The metrics expose the ticks too.
    let resp = app.get("/metrics").await;
    assert!(
        resp.text
            .contains("berth_loop_last_tick_timestamp_seconds{loop=\"liveness_sweep\"} "),
        "{}",
        resp.text
    );
}
