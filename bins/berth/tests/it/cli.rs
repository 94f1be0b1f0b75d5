//! Server modes: `--dev` is loopback-only, and only `--dev` opens the admin routes.

use std::fs::File;
use std::process::Stdio;
use std::time::Duration;

use crate::server::{Server, berth_command, free_port, repo_root, wait_for};

#[tokio::test]
async fn dev_mode_refuses_a_non_loopback_listen_address() {
    let root = tempfile::tempdir().expect("tempdir");
    let log = root.path().join("stderr.log");
    let port = free_port();
    let mut child = berth_command()
        .arg("serve")
        .arg("--dev")
        .arg("--data-dir")
        .arg(root.path().join("data"))
        .arg("--listen")
        .arg(format!("0.0.0.0:{port}"))
        .arg("--templates-dir")
        .arg(repo_root().join("fixtures/templates"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log).expect("log"))
        .spawn()
        .expect("spawn");
    let status = wait_for("berth --dev to refuse", Duration::from_secs(20), || {
        let r = child.try_wait();
        async move {
            match r {
                Ok(Some(s)) => Ok(s),
                Ok(None) => Err("still running".to_owned()),
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await
    .to_owned();
    if child.try_wait().ok().flatten().is_none() {
        let _ = child.kill();
    }
    assert!(
        !status.success(),
        "berth --dev on 0.0.0.0 exited with {status}"
    );
    let stderr = std::fs::read_to_string(&log).expect("stderr");
    assert!(
        stderr.contains("--dev only listens on loopback addresses"),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("0.0.0.0:{port}")), "{stderr}");
}

#[tokio::test]
async fn admin_routes_need_the_token_unless_dev() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&root.path().join("data"), &[]).await;
    let (status, body) = server
        .call(reqwest::Method::GET, "/workspaces", None, None)
        .await;
    assert_eq!(status, 401);
    assert_eq!(body, serde_json::json!({"error": "admin auth required"}));
    let (status, body) = server
        .call(reqwest::Method::GET, "/workspaces", Some("wrong"), None)
        .await;
    assert_eq!(status, 401);
    assert_eq!(
        body,
        serde_json::json!({"error": "invalid admin auth token"})
    );
    let (status, body) = server
        .call(
            reqwest::Method::GET,
            "/workspaces",
            Some(&server.admin_token),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body, serde_json::json!([]));
    // The token is shown on the terminal once, at generation.
    assert!(server.log_text().contains("generated admin token"));
    drop(server);

    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&root.path().join("data"), &["--dev"]).await;
    let (status, body) = server
        .call(reqwest::Method::GET, "/workspaces", None, None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, serde_json::json!([]));
    let (status, _) = server
        .call(
            reqwest::Method::POST,
            "/workspaces",
            None,
            Some(&serde_json::json!({"name": "dev", "external": true})),
        )
        .await;
    assert_eq!(status, 201);
    assert!(server.log_text().contains("DEVELOPMENT MODE"));
}
