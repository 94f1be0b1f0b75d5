//! The rest of the routes: an external agent through the registry (register, heartbeat, card,
//! peers, access, discovery) until its workspace is online; the workspace settings; activity,
//! notify, session search; bundles; the system routes.

use std::time::Duration;

use berth_client::berth_api::activity::{ActivityQuery, LogActivity, Notify, SessionSearchQuery};
use berth_client::berth_api::registry::{CheckAccess, Heartbeat, Register, UpdateCard};
use berth_client::berth_api::system::ViewportPatch;
use berth_client::berth_api::workspaces::{Abilities, CreateWorkspace};
use berth_domain::WorkspaceStatus;
use serde_json::json;

use crate::both_stores;
use crate::harness::Berth;

both_stores!(
    an_external_agent_comes_online_through_the_registry,
    settings_activity_and_system
);

async fn an_external_agent_comes_online_through_the_registry(b: &Berth) {
    let created = b
        .client
        .create_workspace(&CreateWorkspace {
            name: "laptop".into(),
            external: true,
            ..Default::default()
        })
        .await
        .expect("create");
    let id = created.id;
    let token = created.connection.expect("a connection").auth_token;
    let agent = b.anonymous().with_token(token);

    // The workspace waits for its agent; the client's wait sees it come online.
    let waiter = {
        let client = b.client.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let ws = client
                .wait_until_settled(id, |w| seen.push(w.status))
                .await
                .expect("online");
            (ws, seen)
        })
    };
    let registered = agent
        .register(&Register {
            id: id.to_string(),
            url: String::new(),
            agent_card: json!({"name": "laptop agent", "skills": []}),
            delivery_mode: Some("poll".into()),
        })
        .await
        .expect("register");
    assert_eq!(registered.delivery_mode, "poll");
    let ack = agent
        .heartbeat(&Heartbeat {
            workspace_id: id.to_string(),
            error_rate: 0.0,
            sample_error: String::new(),
            active_tasks: 0,
            uptime_seconds: 5,
            current_task: String::new(),
            monthly_spend: 0,
            runtime_state: String::new(),
            runtime_metadata: Default::default(),
        })
        .await
        .expect("heartbeat");
    assert!(!ack.status.is_empty());
    let (ws, seen) = tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .expect("online within 30 s")
        .expect("the waiter");
    assert_eq!(ws.status, WorkspaceStatus::Online);
    assert_eq!(
        seen.first(),
        Some(&WorkspaceStatus::AwaitingAgent),
        "{seen:?}"
    );

    agent
        .update_card(&UpdateCard {
            workspace_id: id.to_string(),
            agent_card: json!({"name": "renamed agent"}),
        })
        .await
        .expect("update card");
    let ws = b.client.workspace(id).await.expect("get");
    assert_eq!(
        ws.agent_card.as_ref().and_then(|c| c.get("name").cloned()),
        Some(json!("renamed agent"))
    );

    // Discovery and the hierarchy rule, from a sibling.
    let sibling = b
        .client
        .create_workspace(&CreateWorkspace {
            name: "sibling".into(),
            external: true,
            ..Default::default()
        })
        .await
        .expect("sibling");
    let peer = b
        .anonymous()
        .with_token(sibling.connection.expect("connection").auth_token);
    let decision = peer
        .check_access(&CheckAccess {
            caller_id: sibling.id.to_string(),
            target_id: id.to_string(),
        })
        .await
        .expect("check access");
    assert!(decision.allowed, "root siblings may talk");
    let peers = peer.peers(sibling.id, None).await.expect("peers");
    assert!(peers.iter().any(|p| p.id == id), "{peers:?}");
    // A poll-mode agent has no URL to hand out: discovery says so with the server's 503 body.
    let err = peer
        .discover(id, sibling.id)
        .await
        .expect_err("nothing to discover");
    let berth_client::Error::Api { status, body, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(status.as_u16(), 503);
    assert_eq!(body["error"], "workspace not available");
    assert_eq!(body["status"], "online");

    // External credentials.
    let connection = b.client.external_connection(id).await.expect("connection");
    assert_eq!(connection.connection.workspace_id, id.to_string());
    let rotated = b.client.rotate_external(id).await.expect("rotate");
    assert!(!rotated.connection.auth_token.is_empty());
}

async fn settings_activity_and_system(b: &Berth) {
    let id = b.external("settings").await;

    let budget = b.client.set_budget(id, Some(1_500)).await.expect("budget");
    assert_eq!(budget.budget_limit, Some(1_500));
    assert_eq!(
        b.client.budget(id).await.expect("budget").budget_limit,
        Some(1_500)
    );
    let budget = b.client.set_budget(id, None).await.expect("unlimited");
    assert_eq!(budget.budget_limit, None);

    b.client
        .set_abilities(
            id,
            &Abilities {
                talk_to_user_enabled: Some(true),
                broadcast_enabled: Some(true),
            },
        )
        .await
        .expect("abilities");
    let ws = b.client.workspace(id).await.expect("get");
    assert!(ws.talk_to_user_enabled && ws.broadcast_enabled);

    let mut patch = serde_json::Map::new();
    patch.insert("theme".into(), json!("dark"));
    b.client.patch_config(id, &patch).await.expect("config");
    assert_eq!(
        b.client.config(id).await.expect("config").data["theme"],
        "dark"
    );

    b.client
        .set_model(id, "openai/gpt-4o")
        .await
        .expect("model");
    assert_eq!(
        b.client.model(id).await.expect("model").model,
        "openai/gpt-4o"
    );
    b.client.set_provider(id, "openai").await.expect("provider");
    assert_eq!(
        b.client.provider(id).await.expect("provider").provider,
        "openai"
    );

    // Activity, a notify to the user, session search.
    b.client
        .log_activity(
            id,
            &LogActivity {
                activity_type: "agent_log".into(),
                summary: Some("indexed the repository".into()),
                ..Default::default()
            },
        )
        .await
        .expect("log");
    b.client
        .notify(
            id,
            &Notify {
                message: "done".into(),
                attachments: None,
            },
        )
        .await
        .expect("notify");
    let logs = b
        .client
        .activity(
            id,
            &ActivityQuery {
                activity_type: Some("agent_log".into()),
                ..Default::default()
            },
        )
        .await
        .expect("activity");
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert_eq!(logs[0].summary.as_deref(), Some("indexed the repository"));
    let hits = b
        .client
        .session_search(
            id,
            &SessionSearchQuery {
                q: Some("REPOSITORY".into()),
                limit: Some("5".into()),
            },
        )
        .await
        .expect("search");
    assert_eq!(hits.len(), 1, "{hits:?}");
    let err = b
        .client
        .session_search(
            id,
            &SessionSearchQuery {
                q: Some("x".repeat(1001)),
                limit: None,
            },
        )
        .await
        .expect_err("a query over 1000 bytes");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(400));

    let display = b.client.display(id).await.expect("display");
    assert!(!display.available);
    let bundle = b.client.export_bundle(id).await.expect("export");
    assert_eq!(bundle["name"], "settings", "{bundle}");

    // System.
    assert_eq!(b.client.health().await.expect("health").status, "ok");
    assert_eq!(
        b.client.build_info().await.expect("build info").git_sha,
        "berth-testkit"
    );
    b.client.liveness().await.expect("liveness");
    // A test server keeps no warm pool.
    assert!(b.client.pools().await.expect("pools").pools.is_empty());
    let metrics = b.client.metrics().await.expect("metrics");
    assert!(metrics.contains("# TYPE"), "{metrics}");
    let doc = b.client.openapi().await.expect("openapi");
    assert!(doc["paths"]["/workspaces"].is_object());
    b.client
        .set_viewport(&ViewportPatch {
            x: Some(10.0),
            y: Some(20.0),
            zoom: Some(1.5),
        })
        .await
        .expect("viewport");
    let viewport = b.client.viewport().await.expect("viewport");
    assert_eq!((viewport.x, viewport.y, viewport.zoom), (10.0, 20.0, 1.5));
    let report = b.client.rotate_secrets(None).await.expect("rotate");
    assert!(report.remaining_by_key_id.is_empty());
}
