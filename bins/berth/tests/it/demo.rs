//! The bundled demo: the `echo` template under the process provisioner (the default) comes
//! online, answers A2A, and goes away with the server.

use std::time::Duration;

use serde_json::json;

use crate::server::{Server, wait_for};

#[tokio::test]
async fn echo_template_runs_answers_and_stops_with_the_server() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(&root.path().join("data"), &[]).await;

    let (status, created) = server
        .admin_post("/workspaces", &json!({"name": "demo", "template": "echo"}))
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["status"], "provisioning");
    let id = created["id"].as_str().expect("id").to_owned();

    server
        .wait_status(&id, "online", Duration::from_secs(20))
        .await;
    // The agent may register before the provisioner has returned and recorded the URL the
    // platform reaches it at; the URL follows within the provisioner's start grace.
    let w = wait_for(
        "the agent URL to be recorded",
        Duration::from_secs(20),
        || async {
            let w = server.workspace(&id).await;
            if w["url"].as_str().is_some_and(|u| !u.is_empty()) {
                Ok(w)
            } else {
                Err(w.to_string())
            }
        },
    )
    .await;
    assert_eq!(w["runtime"], "echo");
    let url = w["url"].as_str().expect("url").to_owned();
    let port: u16 = url
        .strip_prefix("http://127.0.0.1:")
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("agent url {url:?} is not http://127.0.0.1:<port>"));

    let rpc = json!({
        "jsonrpc": "2.0", "id": 1, "method": "message/send",
        "params": {"message": {"role": "user", "messageId": "m-1", "contextId": "c-1",
                               "parts": [{"kind": "text", "text": "hello berth"}]}},
    });
    let resp = server
        .http
        .post(&url)
        .json(&rpc)
        .send()
        .await
        .expect("agent answers");
    assert_eq!(resp.status().as_u16(), 200);
    let answer: serde_json::Value = resp.json().await.expect("json-rpc body");
    assert_eq!(answer["jsonrpc"], "2.0");
    assert_eq!(answer["id"], 1);
    assert_eq!(answer["result"]["role"], "agent");
    assert_eq!(answer["result"]["parts"][0]["text"], "echo: hello berth");

    // A clean stop: exit 0, and the agent process is gone with it.
    let status = server.stop().await;
    assert!(
        status.success(),
        "berth exited with {status}: {}",
        server.log_text()
    );
    wait_for(
        "the agent port to close",
        Duration::from_secs(10),
        || async {
            match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                Ok(_) => Err("still accepting".to_owned()),
                Err(_) => Ok(()),
            }
        },
    )
    .await;
}
