//! The server with the Docker provisioner, against the real daemon and the locally built image
//! `berth-agent:test` (`cargo xtask image`; `cargo xtask test` builds it). The workspace runs at
//! tier 4 (host network), so the agent inside reaches the server on loopback.

use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::server::{Server, wait_for};

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn require_image() {
    let ok = Command::new("docker")
        .args(["image", "inspect", "berth-agent:test"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "the image berth-agent:test is missing: run `cargo xtask image` (or `cargo xtask test`)"
    );
}

#[tokio::test]
async fn docker_workspace_comes_online_is_revived_after_a_kill_and_is_purged() {
    require_image();
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(
        &root.path().join("data"),
        &[
            "--provisioner",
            "docker",
            "--docker-image",
            "echo=berth-agent:test",
            "--sweep-interval-secs",
            "1",
        ],
    )
    .await;
    let (status, created) = server
        .admin_post(
            "/workspaces",
            &json!({"name": "boxed", "template": "echo", "tier": 4}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    let label = format!("label=berth.workspace_id={id}");
    let w = server
        .wait_status(&id, "online", Duration::from_secs(60))
        .await;
    assert_eq!(w["runtime"], "echo");
    let container = docker(&["ps", "-q", "--filter", &label]);
    assert!(!container.is_empty(), "no running container for {id}");
    assert_eq!(
        docker(&["inspect", "-f", "{{.Name}}", &container]),
        format!("/berth-ws-{id}")
    );
    let env = docker(&[
        "inspect",
        "-f",
        "{{range .Config.Env}}{{println .}}{{end}}",
        &container,
    ]);
    assert!(
        env.lines().any(|l| l == format!("WORKSPACE_ID={id}")),
        "{env}"
    );
    assert!(
        !env.contains("ADMIN_TOKEN"),
        "the admin credential reached a workspace: {env}"
    );

    // Killed behind the server's back: the health sweep notices and the coalesced restart
    // brings a new container online.
    docker(&["kill", &container]);
    wait_for(
        "the restart to replace the container",
        Duration::from_secs(60),
        || async {
            let now = docker(&["ps", "-q", "--filter", &label]);
            let w = server.workspace(&id).await;
            if !now.is_empty() && now != container && w["status"] == "online" {
                Ok(())
            } else {
                Err(format!("container {now:?}, workspace {w}"))
            }
        },
    )
    .await;
    let (status, _) = server
        .call(
            reqwest::Method::GET,
            "/events",
            Some(server.admin_token.as_str()),
            None,
        )
        .await;
    assert_eq!(status, 200);

    // Purge removes every container and volume of the workspace.
    let (status, body) = server
        .call(
            reqwest::Method::DELETE,
            &format!("/workspaces/{id}?purge=true"),
            Some(server.admin_token.as_str()),
            None,
        )
        .await;
    assert_eq!(
        (status, body["status"].clone()),
        (200, json!("purged")),
        "{body}"
    );
    assert_eq!(docker(&["ps", "-aq", "--filter", &label]), "");
    assert_eq!(docker(&["volume", "ls", "-q", "--filter", &label]), "");
}
