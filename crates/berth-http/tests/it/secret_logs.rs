//! Secret values never reach a log line (issue #6, DECISIONS.md §2.8): the whole path of a
//! secret — written at create, through the workspace and global secret routes, read back through
//! `/secrets/values`, and handed to the provisioner at a start and a restart — runs under a
//! TRACE-level log capture, and no captured line carries a value.

use axum::http::{Method, StatusCode};
use secrecy::ExposeSecret as _;
use serde_json::json;

use crate::helpers::{ADMIN_TOKEN, Recorder, Setup, id_of};

const AT_CREATE: &str = "create-value-7c1e94b2";
const WORKSPACE_VALUE: &str = "workspace-value-5d80aa31";
const GLOBAL_VALUE: &str = "global-value-e3b9c7f4";

#[tokio::test]
async fn secret_values_are_never_logged_from_write_to_provisioning() {
    let logs = crate::helpers::capture_logs(tracing::Level::TRACE);
    let rec = Recorder::new();
    let app = Setup {
        provisioner: rec.clone(),
        ..Setup::default()
    }
    .start()
    .await;

    let resp = app
        .post(
            "/admin/secrets",
            Some(ADMIN_TOKEN),
            &json!({"key": "GLOBAL_KEY", "value": GLOBAL_VALUE}),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    let created = app
        .create_ok(json!({
            "name": "sealed",
            "model": "openai/gpt-4o",
            "secrets": {"AT_CREATE": AT_CREATE},
        }))
        .await;
    let id = id_of(&created);
    app.service.drain().await;
    let token = app.admin_mint(id).await;
    let resp = app
        .post(
            &format!("/workspaces/{id}/secrets"),
            Some(&token),
            &json!({"key": "WORKSPACE_KEY", "value": WORKSPACE_VALUE}),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    // The admin reads the values back (the write's restart may already have replaced the
    // workspace's token).
    let values = app
        .call(
            Method::GET,
            &format!("/workspaces/{id}/secrets/values"),
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(values.status, StatusCode::OK, "{}", values.text);
    assert!(values.text.contains(WORKSPACE_VALUE), "{}", values.text);
    // The secret change restarts the workspace; an explicit restart provisions it again too.
    app.service.drain().await;
    let resp = app
        .call(
            Method::POST,
            &format!("/workspaces/{id}/restart"),
            Some(ADMIN_TOKEN),
        )
        .await;
    assert!(resp.status.is_success(), "{}", resp.text);
    app.service.drain().await;

    // The values really went down the provisioning path…
    let starts = rec.requests_for(id);
    assert!(starts.len() >= 2, "{} starts", starts.len());
    let env_of = |n: usize| -> Vec<(String, String)> {
        starts[n]
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.expose_secret().to_owned()))
            .collect()
    };
    let last = env_of(starts.len() - 1);
    for (key, value) in [
        ("AT_CREATE", AT_CREATE),
        ("WORKSPACE_KEY", WORKSPACE_VALUE),
        ("GLOBAL_KEY", GLOBAL_VALUE),
    ] {
        assert!(
            last.iter().any(|(k, v)| k == key && v == value),
            "{key} in the environment of the last start"
        );
    }
    assert!(
        env_of(0)
            .iter()
            .any(|(k, v)| k == "AT_CREATE" && v == AT_CREATE)
    );

    // …and no log line carries one.
    let captured = logs.text();
    assert!(
        captured.contains(&id.to_string()),
        "logs about the workspace were captured: {captured}"
    );
    for value in [AT_CREATE, WORKSPACE_VALUE, GLOBAL_VALUE] {
        assert!(
            !captured.contains(value),
            "a log line carries a secret value"
        );
    }
}
