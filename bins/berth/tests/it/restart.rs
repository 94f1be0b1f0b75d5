//! A clean stop and a start over the same data directory keep the admin token, the secret key
//! and every workspace with its encrypted secrets.

use std::os::unix::fs::PermissionsExt as _;

use serde_json::json;

use crate::server::Server;

#[tokio::test]
async fn restart_reuses_the_admin_token_and_the_secret_key() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let mut first = Server::start(&data, &[]).await;
    let key_path = data.join("secret-keys");
    let keys_before = std::fs::read(&key_path).expect("secret-keys written");
    let mode = std::fs::metadata(&key_path)
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "secret-keys mode {mode:o}");

    let (status, created) = first
        .admin_post(
            "/workspaces",
            &json!({"name": "keeper", "external": true, "secrets": {"API_KEY": "s3cret-value"}}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    let token = created["connection"]["auth_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let (status, registered) = first
        .agent_post(
            "/registry/register",
            &token,
            &json!({"id": id, "agent_card": {"name": "keeper"}, "delivery_mode": "poll"}),
        )
        .await;
    assert_eq!(status, 200, "{registered}");
    let inbound = registered["platform_inbound_secret"].clone();
    let admin_token = first.admin_token.clone();

    let status = first.stop().await;
    assert!(status.success(), "{status}: {}", first.log_text());
    drop(first);

    let second = Server::start(&data, &[]).await;
    assert_eq!(
        second.admin_token, admin_token,
        "admin token file rewritten"
    );
    assert!(!second.log_text().contains("generated admin token"));
    assert_eq!(std::fs::read(&key_path).expect("secret-keys"), keys_before);

    // The old admin token is the admin token, and the workspace is still there.
    let (status, list) = second
        .call(
            reqwest::Method::GET,
            "/workspaces",
            Some(&admin_token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{list}");
    let listed = list
        .as_array()
        .expect("array")
        .iter()
        .find(|w| w["id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} not listed after restart: {list}"))
        .clone();
    assert_eq!(listed["name"], "keeper");
    // The workspace token still works, and the encrypted inbound secret decrypts to the same
    // value: the secret key was reused, not regenerated.
    let (status, body) = second
        .agent_post("/registry/heartbeat", &token, &json!({"workspace_id": id}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["platform_inbound_secret"], inbound);
}
