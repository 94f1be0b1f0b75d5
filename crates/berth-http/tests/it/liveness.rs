//! The liveness and health sweeps (DECISIONS.md §2.12) and the status machine rows they and the
//! registry drive (REFERENCE.md §1.3), observed through the API.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_domain::WorkspaceId;
use berth_domain::status::Transition;
use berth_provision::NoBackend;
use berth_store::Lapsed;
use serde_json::json;

use crate::helpers::{Setup, TestApp, pg_app, started_provisioner};

/// An app whose liveness windows are zero: every heartbeat is already stale.
async fn zero_window_app(postgres: bool) -> TestApp {
    Setup {
        provisioner: Arc::new(started_provisioner(|_| Ok(true))),
        windows: Some((Duration::ZERO, Duration::ZERO)),
        postgres,
        ..Setup::default()
    }
    .start()
    .await
}

/// Lets the clock move past the last heartbeat (the cutoff comparison is strict).
async fn tick() {
    tokio::time::sleep(Duration::from_millis(5)).await;
}

fn sorted_lapsed(mut v: Vec<Lapsed>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = v
        .drain(..)
        .map(|l| (l.id.to_string(), l.status.to_string()))
        .collect();
    out.sort();
    out
}

async fn liveness_flow(app: TestApp) {
    let (kimi, kimi_token) = app
        .external(json!({"name": "kimi", "runtime": "kimi"}))
        .await;
    let (ext, ext_token) = app
        .external(json!({"name": "ext", "runtime": "external"}))
        .await;
    let (container, container_token) = app.container("box").await;
    let (paused, paused_token) = app.container("paused").await;

    let resp = app.register(kimi, Some(&kimi_token), Some("poll")).await;
    assert_eq!(resp.status, axum::http::StatusCode::OK, "{}", resp.text);
    app.heartbeat_ok(ext, &ext_token, json!({"error_rate": 0.0}))
        .await;
    // The external one is degraded: degraded workspaces lapse too.
    app.heartbeat_ok(ext, &ext_token, json!({"error_rate": 0.9}))
        .await;
    assert_eq!(app.status_of(ext).await, "degraded");
    app.heartbeat_ok(container, &container_token, json!({}))
        .await;
    app.heartbeat_ok(paused, &paused_token, json!({})).await;
    app.force(paused, &[Transition::Paused]).await;
    assert_eq!(app.status_of(kimi).await, "online");
    assert_eq!(app.status_of(container).await, "online");

    tick().await;
    let lapsed = app.service.sweep_liveness().await.expect("sweep");
    let mut expected = vec![
        (kimi.to_string(), "awaiting_agent".to_owned()),
        (ext.to_string(), "awaiting_agent".to_owned()),
        (container.to_string(), "offline".to_owned()),
    ];
    expected.sort();
    assert_eq!(sorted_lapsed(lapsed), expected);
    // A lapsed container is restarted in the background (REFERENCE.md §1.3: the offline
    // callback restarts it): wait for that cycle before looking.
    app.service.drain().await;
    assert_eq!(app.status_of(kimi).await, "awaiting_agent");
    assert_eq!(app.status_of(ext).await, "awaiting_agent");
    assert_eq!(app.status_of(paused).await, "paused");
    let types: Vec<String> = app
        .events_of(container)
        .await
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    let offline_at = types
        .iter()
        .position(|t| t == "WORKSPACE_OFFLINE")
        .expect("offline event");
    assert_eq!(
        types[offline_at..],
        ["WORKSPACE_OFFLINE", "WORKSPACE_PROVISIONING"],
        "offline, then the restart"
    );
    assert_eq!(app.status_of(container).await, "provisioning");
    // The restart re-provisioned it with a fresh token: the old one is gone.
    let resp = app
        .heartbeat(container, Some(&container_token), json!({}))
        .await;
    assert_eq!(resp.status, axum::http::StatusCode::UNAUTHORIZED);
    let container_token = app.admin_mint(container).await;
    assert_eq!(
        app.events_named(kimi, "WORKSPACE_AWAITING_AGENT")
            .await
            .len(),
        2,
        "one from the create, one from the sweep"
    );
    assert_eq!(
        app.events_named(container, "WORKSPACE_OFFLINE").await,
        vec![json!({})]
    );
    assert!(
        app.events_named(paused, "WORKSPACE_OFFLINE")
            .await
            .is_empty()
    );

    // A second pass finds nothing more: the sweep is a compare-and-set.
    assert!(
        app.service
            .sweep_liveness()
            .await
            .expect("sweep")
            .is_empty()
    );
    assert_eq!(
        app.events_named(container, "WORKSPACE_OFFLINE").await.len(),
        1
    );

    // The next heartbeat brings each back.
    app.heartbeat_ok(kimi, &kimi_token, json!({})).await;
    app.heartbeat_ok(container, &container_token, json!({}))
        .await;
    assert_eq!(app.status_of(kimi).await, "online");
    assert_eq!(app.status_of(container).await, "online");
    assert_eq!(
        app.events_named(kimi, "WORKSPACE_ONLINE").await.last(),
        Some(&json!({"recovered_from": "awaiting_agent"}))
    );
    assert_eq!(
        app.events_named(container, "WORKSPACE_ONLINE").await.last(),
        Some(&json!({"recovered_from": "provisioning"}))
    );
    // A re-register works after a lapse too.
    tick().await;
    app.service.sweep_liveness().await.expect("sweep");
    assert_eq!(app.status_of(kimi).await, "awaiting_agent");
    let resp = app.register(kimi, Some(&kimi_token), Some("poll")).await;
    assert_eq!(resp.status, axum::http::StatusCode::OK);
    assert_eq!(app.status_of(kimi).await, "online");
    app.service.drain().await;
}

#[tokio::test]
async fn liveness_sweep_sqlite() {
    liveness_flow(zero_window_app(false).await).await;
}

#[tokio::test]
async fn liveness_sweep_postgres() {
    liveness_flow(zero_window_app(true).await).await;
}

#[tokio::test]
async fn fresh_heartbeats_do_not_lapse() {
    // Default windows (180 s / 90 s): a workspace that just heartbeat stays.
    let app = Setup {
        provisioner: Arc::new(started_provisioner(|_| Ok(true))),
        ..Setup::default()
    }
    .start()
    .await;
    let (ext, token) = app
        .external(json!({"name": "ext", "runtime": "external"}))
        .await;
    app.heartbeat_ok(ext, &token, json!({})).await;
    let (c, ctoken) = app.container("c").await;
    app.heartbeat_ok(c, &ctoken, json!({})).await;
    assert!(
        app.service
            .sweep_liveness()
            .await
            .expect("sweep")
            .is_empty()
    );
    assert_eq!(app.status_of(ext).await, "online");
    assert_eq!(app.status_of(c).await, "online");
}

#[tokio::test]
async fn a_provisioning_or_awaiting_workspace_never_lapses() {
    let app = zero_window_app(false).await;
    let (ext, _) = app
        .external(json!({"name": "ext", "runtime": "external"}))
        .await;
    let (c, _) = app.container("c").await;
    tick().await;
    assert!(
        app.service
            .sweep_liveness()
            .await
            .expect("sweep")
            .is_empty()
    );
    assert_eq!(app.status_of(ext).await, "awaiting_agent");
    assert_eq!(app.status_of(c).await, "provisioning");
}

#[tokio::test]
async fn health_sweep_takes_only_a_definite_no_for_death() {
    let dead: Arc<Mutex<HashSet<WorkspaceId>>> = Arc::default();
    let broken: Arc<Mutex<HashSet<WorkspaceId>>> = Arc::default();
    let asked: Arc<Mutex<Vec<WorkspaceId>>> = Arc::default();
    let (d, b, a) = (dead.clone(), broken.clone(), asked.clone());
    let provisioner = started_provisioner(move |id| {
        a.lock().expect("lock").push(id);
        if d.lock().expect("lock").contains(&id) {
            Ok(false)
        } else if b.lock().expect("lock").contains(&id) {
            Err(berth_provision::Error::Backend("daemon unreachable".into()))
        } else {
            Ok(true)
        }
    });
    let app = Setup {
        provisioner: Arc::new(provisioner),
        ..Setup::default()
    }
    .start()
    .await;
    let (gone, gone_token) = app.container("gone").await;
    let (flaky, flaky_token) = app.container("flaky").await;
    let (fine, fine_token) = app.container("fine").await;
    let (ext, ext_token) = app
        .external(json!({"name": "ext", "runtime": "external"}))
        .await;
    let (waiting, _) = app.container("waiting").await;
    for (id, token) in [
        (gone, &gone_token),
        (flaky, &flaky_token),
        (fine, &fine_token),
        (ext, &ext_token),
    ] {
        app.heartbeat_ok(id, token, json!({})).await;
    }
    // A degraded one is checked as well.
    app.heartbeat_ok(fine, &fine_token, json!({"error_rate": 0.7}))
        .await;
    dead.lock().expect("lock").insert(gone);
    broken.lock().expect("lock").insert(flaky);

    let offline = app.service.sweep_health().await.expect("sweep");
    assert_eq!(offline, vec![gone]);
    // The dead workspace went offline and its (coalesced) restart took it back to
    // provisioning; wait for that background cycle before looking.
    app.service.drain().await;
    assert_eq!(app.status_of(gone).await, "provisioning");
    assert_eq!(app.status_of(flaky).await, "online");
    assert_eq!(app.status_of(fine).await, "degraded");
    assert_eq!(app.status_of(ext).await, "online");
    assert_eq!(app.status_of(waiting).await, "provisioning");
    assert_eq!(
        app.events_named(gone, "WORKSPACE_OFFLINE").await,
        vec![json!({})]
    );
    assert!(
        app.events_named(flaky, "WORKSPACE_OFFLINE")
            .await
            .is_empty()
    );
    let asked_now: HashSet<WorkspaceId> = asked.lock().expect("lock").iter().copied().collect();
    assert_eq!(
        asked_now,
        HashSet::from([gone, flaky, fine]),
        "only online/degraded containers"
    );

    // The dead one is restarted in the background; afterwards it is provisioning again and
    // not asked about any more.
    app.service.drain().await;
    assert_eq!(app.status_of(gone).await, "provisioning");
    asked.lock().expect("lock").clear();
    assert!(app.service.sweep_health().await.expect("sweep").is_empty());
    assert!(!asked.lock().expect("lock").contains(&gone));
    assert_eq!(app.events_named(gone, "WORKSPACE_OFFLINE").await.len(), 1);
    // The restarted agent comes back with its new token.
    let resp = app.heartbeat(gone, Some(&gone_token), json!({})).await;
    assert_eq!(resp.status, axum::http::StatusCode::UNAUTHORIZED);
    let gone_token = app.admin_mint(gone).await;
    app.heartbeat_ok(gone, &gone_token, json!({})).await;
    assert_eq!(app.status_of(gone).await, "online");
}

#[tokio::test]
async fn health_sweep_does_nothing_without_a_backend() {
    let app = Setup {
        provisioner: Arc::new(NoBackend),
        ..Setup::default()
    }
    .start()
    .await;
    let id = app
        .create_id(json!({"name": "c", "model": "openai/gpt-4o"}))
        .await;
    app.service.drain().await;
    assert_eq!(app.status_of(id).await, "failed");
    // Bring the row online by hand (NoBackend says "not running" for everything).
    app.force(id, &[Transition::Reprovision]).await;
    let token = app.admin_mint(id).await;
    app.heartbeat_ok(id, &token, json!({})).await;
    assert_eq!(app.status_of(id).await, "online");
    assert!(app.service.sweep_health().await.expect("sweep").is_empty());
    assert_eq!(app.status_of(id).await, "online");
}

/// Every transition-table row the API reaches, in one place: create, provisioning failure,
/// register, heartbeat, the sweeps, and the refusals.
#[tokio::test]
async fn status_machine_rows_through_the_api() {
    let app = zero_window_app(false).await;

    // ExternalConnected / ExternalAwaiting (create).
    let connected = app
        .create_id(
            json!({"name": "conn", "runtime": "external", "url": "http://agent.example.com"}),
        )
        .await;
    assert_eq!(app.status_of(connected).await, "online");
    let (ext, ext_token) = app
        .external(json!({"name": "wait", "runtime": "external"}))
        .await;
    assert_eq!(app.status_of(ext).await, "awaiting_agent");

    // AgentRegistered from awaiting_agent, online, degraded, offline, provisioning.
    let reg = |id: WorkspaceId, token: String| {
        let app = &app;
        async move {
            let resp = app.register(id, Some(&token), Some("poll")).await;
            assert_eq!(resp.status, axum::http::StatusCode::OK, "{}", resp.text);
            app.status_of(id).await
        }
    };
    assert_eq!(reg(ext, ext_token.clone()).await, "online");
    assert_eq!(reg(ext, ext_token.clone()).await, "online");
    app.heartbeat_ok(ext, &ext_token, json!({"error_rate": 0.6}))
        .await;
    assert_eq!(app.status_of(ext).await, "degraded");
    assert_eq!(reg(ext, ext_token.clone()).await, "online");
    let (c, c_token) = app.container("c").await;
    assert_eq!(reg(c, c_token.clone()).await, "online");
    app.force(c, &[Transition::WentOffline]).await;
    assert_eq!(app.status_of(c).await, "offline");
    assert_eq!(reg(c, c_token.clone()).await, "online");

    // AgentLost (external) and WentOffline (container) through the liveness sweep.
    tick().await;
    let lapsed = app.service.sweep_liveness().await.expect("sweep");
    app.service.drain().await;
    let mut expected = vec![
        (connected.to_string(), "awaiting_agent".to_owned()),
        (ext.to_string(), "awaiting_agent".to_owned()),
        (c.to_string(), "offline".to_owned()),
    ];
    expected.sort();
    assert_eq!(sorted_lapsed(lapsed), expected);
    assert_eq!(app.status_of(connected).await, "awaiting_agent");
    // HeartbeatRecovered from awaiting_agent.
    app.heartbeat_ok(ext, &ext_token, json!({})).await;
    assert_eq!(app.status_of(ext).await, "online");

    // ProvisionFailed (no backend) and its refusal to revive.
    let nb = Setup::default().start().await;
    let failed = nb
        .create_id(json!({"name": "f", "model": "openai/gpt-4o"}))
        .await;
    nb.service.drain().await;
    let listed = nb.listed(failed).await;
    assert_eq!(listed["status"], "failed");
    assert_eq!(listed["failure_code"], "NO_BACKEND");
    let token = nb.admin_mint(failed).await;
    let resp = nb.register(failed, Some(&token), Some("poll")).await;
    assert_eq!(resp.status, axum::http::StatusCode::CONFLICT);
    nb.heartbeat_ok(failed, &token, json!({})).await;
    assert_eq!(nb.status_of(failed).await, "failed");
}

#[tokio::test]
async fn a_restarted_server_resumes_liveness_from_the_database() {
    // The sweep's clock is `last_heartbeat_at`: a second service over the same store (as after
    // a restart) sees the same stale heartbeat.
    let app = pg_app().await;
    let (ext, token) = app
        .external(json!({"name": "e", "runtime": "external"}))
        .await;
    app.heartbeat_ok(ext, &token, json!({})).await;
    assert!(
        app.service
            .sweep_liveness()
            .await
            .expect("sweep")
            .is_empty()
    );
    let restarted = berth_core::WorkspaceService::new(
        app.store.clone(),
        Arc::new(NoBackend),
        Arc::new(crate::helpers::TableResolver::default()),
        berth_core::TemplateCatalog::load(std::path::Path::new("/nonexistent")),
        berth_core::CoreConfig {
            remote_stale_after: Duration::ZERO,
            ..berth_core::CoreConfig::default()
        },
    );
    tick().await;
    let lapsed = restarted.sweep_liveness().await.expect("sweep");
    assert_eq!(
        sorted_lapsed(lapsed),
        vec![(ext.to_string(), "awaiting_agent".to_owned())]
    );
    assert_eq!(app.status_of(ext).await, "awaiting_agent");
}
