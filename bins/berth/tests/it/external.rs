//! An external agent's life as a user sees it through `GET /workspaces/{id}`: create → register
//! → degrade → recover → go stale.

use std::time::Duration;

use serde_json::json;

use crate::server::Server;

#[tokio::test]
async fn external_agent_lifecycle() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(
        &root.path().join("data"),
        &[
            // Long enough that the steps before the stale check never race the sweep on a busy
            // machine, short enough to keep the test quick.
            "--remote-stale-after-secs",
            "5",
            "--sweep-interval-secs",
            "1",
        ],
    )
    .await;

    let (status, created) = server
        .admin_post("/workspaces", &json!({"name": "remote", "external": true}))
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["status"], "awaiting_agent");
    assert_eq!(created["external"], true);
    let id = created["id"].as_str().expect("id").to_owned();
    let token = created["connection"]["auth_token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_eq!(created["connection"]["workspace_id"], id.as_str());
    server.expect_status(&id, "awaiting_agent").await;

    // Without the token the agent is turned away.
    let card = json!({"name": "remote agent"});
    let register = json!({"id": id, "agent_card": card, "delivery_mode": "poll"});
    let (status, body) = server
        .call(
            reqwest::Method::POST,
            "/registry/register",
            None,
            Some(&register),
        )
        .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body, json!({"error": "missing workspace auth token"}));

    let (status, body) = server
        .agent_post("/registry/register", &token, &register)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "registered");
    assert_eq!(body["delivery_mode"], "poll");
    let secret = body["platform_inbound_secret"].clone();
    assert!(secret.as_str().is_some_and(|s| !s.is_empty()));
    let w = server.expect_status(&id, "online").await;
    assert_eq!(w["agent_card"]["name"], "remote agent");

    let heartbeat = |rate: f64| json!({"workspace_id": id, "error_rate": rate, "sample_error": "flaky upstream"});
    let (status, body) = server
        .agent_post("/registry/heartbeat", &token, &heartbeat(0.9))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"status": "ok", "platform_inbound_secret": secret})
    );
    server.expect_status(&id, "degraded").await;

    let (status, _) = server
        .agent_post("/registry/heartbeat", &token, &heartbeat(0.0))
        .await;
    assert_eq!(status, 200);
    server.expect_status(&id, "online").await;

    // The agent stops heartbeating: after the stale window a sweep marks it awaiting its agent.
    server
        .wait_status(&id, "awaiting_agent", Duration::from_secs(20))
        .await;
    // And a heartbeat brings it back.
    let (status, _) = server
        .agent_post("/registry/heartbeat", &token, &heartbeat(0.0))
        .await;
    assert_eq!(status, 200);
    let w = server.workspace(&id).await;
    assert!(
        w["status"] == "online" || w["status"] == "awaiting_agent",
        "{w}"
    );
}
