//! The first hour of a new user (issue #12), run the way the README tells a user to: the
//! release-built `berth serve` with its default flags (no `--dev`), from a directory that looks
//! like a fresh clone (the bundled `fixtures/templates`, data under `./berth-data`).
//!
//! The README's "Trying it" section is [`quick_start`]: read the admin token file, create the
//! demo workspace, wait for `online`, send it a `message/send` and get the echo back, list,
//! delete with purge. It runs once with the default process backend and once with Docker (the
//! locally built image, the default tier 3: the container reaches the platform through the
//! bridge listener). When the README changes, this file changes with it. The only departure
//! from the README: the port is a free one instead of 8080, so tests can run side by side.
//!
//! Beside it, what a new user met and a test now pins: an agent that dies before it registers
//! fails its workspace at once (not at the 600 s provision timeout), and hundreds of agents
//! started at once all come online, each with its URL before it reads `online`.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::server::{Server, free_port, release_binary, repo_root, wait_for};

/// A directory shaped like a fresh clone: `fixtures/templates` where `berth serve` looks by
/// default, and nothing else (the data directory `./berth-data` is created by the server).
fn fresh_clone() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::symlink(repo_root().join("fixtures"), dir.path().join("fixtures"))
        .expect("link fixtures");
    dir
}

/// `berth serve` from the release binary in `clone`, with the README's flags plus `extra`.
async fn serve_like_the_readme(clone: &Path, extra: &[&str]) -> (Server, u16) {
    let port = free_port();
    // A clean environment, as every server test has: nothing of the caller's leaks in.
    let mut cmd = Command::new(release_binary());
    cmd.env_clear();
    for key in ["PATH", "HOME", "LANG", "TMPDIR"] {
        if let Some(v) = std::env::var_os(key) {
            cmd.env(key, v);
        }
    }
    cmd.current_dir(clone)
        .arg("serve")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .args(extra);
    let server = Server::launch(cmd, port, &clone.join("berth-data")).await;
    (server, port)
}

/// The `GET /workspaces` element of `id` (it carries `last_sample_error`; `GET
/// /workspaces/{id}` does not, as in the reference).
async fn listed(server: &Server, id: &str) -> Value {
    let (status, list) = server
        .call(Method::GET, "/workspaces", Some(&server.admin_token), None)
        .await;
    assert_eq!(status, 200, "{list}");
    list.as_array()
        .expect("list")
        .iter()
        .find(|w| w["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("{id} not listed: {list}"))
}

/// `DELETE /workspaces/{id}?purge=true` with the admin bearer; must be 200.
async fn purge(server: &Server, id: &str, backend: &str) {
    let (status, deleted) = server
        .call(
            Method::DELETE,
            &format!("/workspaces/{id}?purge=true"),
            Some(&server.admin_token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{backend}: {deleted}");
}

fn message(text: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "message/send",
           "params": {"message": {"role": "user", "messageId": "m-1",
                                  "parts": [{"kind": "text", "text": text}]}}})
}

/// The README's "Trying it", step by step.
async fn quick_start(server: &Server, backend: &str) {
    // TOKEN=$(cat berth-data/admin-token) — read by the harness, mode 0600 checked there.
    let (status, created) = server
        .admin_post("/workspaces", &json!({"name": "demo", "template": "echo"}))
        .await;
    assert_eq!(status, 201, "{backend}: {created}");
    assert_eq!(created["status"], "provisioning");
    let id = created["id"].as_str().expect("id").to_owned();
    let _cleanup = DockerLeftovers(id.clone());

    // `online` comes with the URL the platform reaches the agent at.
    let w = server
        .wait_status(&id, "online", Duration::from_secs(60))
        .await;
    assert!(
        w["url"].as_str().is_some_and(|u| !u.is_empty()),
        "{backend}: online without a url: {w}"
    );
    assert_eq!(w["tier"], 3, "{backend}: the demo runs on the default tier");

    // The message round trip, with the admin bearer, outside --dev.
    let (status, reply) = server
        .call(
            Method::POST,
            &format!("/workspaces/{id}/a2a"),
            Some(&server.admin_token),
            Some(&message("hello berth")),
        )
        .await;
    assert_eq!(
        status,
        200,
        "{backend}: {reply}\n--- server log ---\n{}",
        server.log_text()
    );
    assert_eq!(reply["jsonrpc"], "2.0", "{backend}: {reply}");
    assert_eq!(
        reply["result"]["parts"][0]["text"], "echo: hello berth",
        "{backend}: {reply}"
    );

    let (status, list) = server
        .call(Method::GET, "/workspaces", Some(&server.admin_token), None)
        .await;
    assert_eq!(status, 200, "{list}");
    assert!(
        list.as_array()
            .expect("list")
            .iter()
            .any(|w| w["id"] == id.as_str()),
        "{list}"
    );

    purge(server, &id, backend).await;
    let (status, _) = server
        .call(Method::GET, &format!("/workspaces/{id}"), None, None)
        .await;
    assert!(
        status == 404 || status == 410,
        "{backend}: purged workspace answered {status}"
    );
}

/// Serves like the README with `extra` flags, checks the server's log says `expect` (which
/// backend or store the flags picked), runs the quick start, and stops the server cleanly.
async fn quick_start_with(extra: &[&str], expect: &str, backend: &str) {
    let clone = fresh_clone();
    let (mut server, _) = serve_like_the_readme(clone.path(), extra).await;
    assert!(
        server.log_text().contains(expect),
        "{backend}: expected {expect:?} in the log: {}",
        server.log_text()
    );
    quick_start(&server, backend).await;
    let status = server.stop().await;
    assert!(status.success(), "{status}: {}", server.log_text());
}

#[tokio::test]
async fn quick_start_on_the_process_backend() {
    // The README's own command: no flags, so the process backend and SQLite.
    quick_start_with(&[], "provisioner=Process", "process").await;
}

/// The same steps with the production store: `--database-url` names a PostgreSQL database.
#[tokio::test]
async fn quick_start_on_the_process_backend_with_postgres() {
    let url = crate::leader::fresh_database_named("quickstart").await;
    quick_start_with(
        &["--database-url", &url],
        "store=postgres",
        "process on postgres",
    )
    .await;
}

#[tokio::test]
async fn quick_start_on_docker() {
    crate::docker::require_image();
    quick_start_with(
        &["--docker-image", "echo=berth-agent:test"],
        "provisioner=Docker",
        "docker",
    )
    .await;
}

/// Removes whatever Docker holds for a workspace when a test ends, passing or not.
struct DockerLeftovers(String);

impl Drop for DockerLeftovers {
    fn drop(&mut self) {
        let name = format!("berth-ws-{}", self.0);
        let _ = Command::new("docker").args(["rm", "-f", &name]).output();
        let _ = Command::new("docker")
            .args([
                "volume",
                "rm",
                "-f",
                &format!("{name}-configs"),
                &format!("{name}-workspace"),
            ])
            .output();
    }
}

/// An agent that dies before it registers (here: after 1.5 s, past the start grace) fails its
/// workspace within seconds with `START_FAILED` and its last output, the workspace's secrets
/// redacted, instead of sitting in `provisioning` until the provision timeout.
async fn dying_agent_fails_fast(server: &Server, backend: &str, extra: Value) {
    let secret = "sup3r-s3cret-value-do-not-log";
    let mut body = json!({
        "name": "dies",
        "template": "echo",
        "secrets": {"AGENT_CRASH_AFTER_MS": "1500", "MY_API_KEY": secret},
    });
    for (k, v) in extra.as_object().expect("object") {
        body[k] = v.clone();
    }
    let (status, created) = server.admin_post("/workspaces", &body).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    let _cleanup = DockerLeftovers(id.clone());
    let w = wait_for(
        &format!("{backend}: the dying agent's workspace to fail"),
        Duration::from_secs(30),
        || async {
            let w = server.workspace(&id).await;
            match w["status"].as_str() {
                Some("failed") => Ok(w),
                Some("online") => panic!("{backend}: the dying agent came online: {w}"),
                _ => Err(w.to_string()),
            }
        },
    )
    .await;
    assert_eq!(w["failure_code"], "START_FAILED", "{backend}: {w}");
    let w = listed(server, &id).await;
    let said = w["last_sample_error"].as_str().unwrap_or_default();
    assert!(
        said.contains("crashing on purpose"),
        "{backend}: the agent's last output is quoted: {w}"
    );
    assert!(!said.contains(secret), "{backend}: a secret leaked: {said}");
    assert!(
        !server.log_text().contains(secret),
        "{backend}: a secret was logged"
    );
    purge(server, &id, backend).await;
}

#[tokio::test]
async fn an_agent_that_dies_while_starting_fails_its_workspace_at_once() {
    let clone = fresh_clone();
    let (server, _) = serve_like_the_readme(clone.path(), &[]).await;
    dying_agent_fails_fast(&server, "process", json!({})).await;
}

#[tokio::test]
async fn a_container_whose_agent_dies_while_starting_fails_its_workspace_at_once() {
    crate::docker::require_image();
    let clone = fresh_clone();
    let (server, _) =
        serve_like_the_readme(clone.path(), &["--docker-image", "echo=berth-agent:test"]).await;
    dying_agent_fails_fast(&server, "docker", json!({})).await;
}

/// With the platform URL an explicit loopback address, a bridge container could never reach
/// it: the start fails at once with `PLATFORM_UNREACHABLE` and a message naming the fixes.
#[tokio::test]
async fn a_bridge_container_that_cannot_reach_the_platform_fails_fast_and_says_why() {
    crate::docker::require_image();
    let clone = fresh_clone();
    let (server, port) = serve_like_the_readme(
        clone.path(),
        &[
            "--docker-image",
            "echo=berth-agent:test",
            "--platform-url",
            "http://127.0.0.1:1",
        ],
    )
    .await;
    let _ = port;
    let (status, created) = server
        .admin_post(
            "/workspaces",
            &json!({"name": "stranded", "template": "echo"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    let _cleanup = DockerLeftovers(id.clone());
    let w = wait_for(
        "the stranded workspace to fail",
        Duration::from_secs(30),
        || async {
            let w = server.workspace(&id).await;
            if w["status"] == "failed" {
                Ok(w)
            } else {
                Err(w.to_string())
            }
        },
    )
    .await;
    assert_eq!(w["failure_code"], "PLATFORM_UNREACHABLE", "{w}");
    let w = listed(&server, &id).await;
    let said = w["last_sample_error"].as_str().unwrap_or_default();
    for fix in ["--listen", "--platform-url", "--docker-network"] {
        assert!(said.contains(fix), "the message names {fix}: {said}");
    }
}

/// Hundreds of process agents started at once: none fails on a taken port, and no reader ever
/// sees a workspace `online` without its `url`.
#[tokio::test]
async fn hundreds_of_agents_start_at_once_each_online_with_its_url() {
    const AGENTS: usize = 200;
    const CONCURRENCY: usize = 16;
    let root = tempfile::tempdir().expect("tempdir");
    let server = Arc::new(Server::start(&root.path().join("data"), &[]).await);

    // A reader that lists every workspace as fast as it can until told to stop, and remembers
    // any online row without a URL.
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (server, stop, reads) = (server.clone(), stop.clone(), reads.clone());
        tokio::spawn(async move {
            let mut violations = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let (status, list) = server
                    .call(Method::GET, "/workspaces", Some(&server.admin_token), None)
                    .await;
                assert_eq!(status, 200, "{list}");
                reads.fetch_add(1, Ordering::Relaxed);
                for w in list.as_array().expect("list") {
                    let url = w["url"].as_str().unwrap_or_default();
                    if w["status"] == "online" && url.is_empty() {
                        violations.push(w.clone());
                    }
                }
            }
            violations
        })
    };

    let next = Arc::new(AtomicUsize::new(0));
    let mut creators = Vec::new();
    for _ in 0..CONCURRENCY {
        let (server, next) = (server.clone(), next.clone());
        creators.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= AGENTS {
                    return ids;
                }
                let (status, created) = server
                    .admin_post(
                        "/workspaces",
                        &json!({"name": format!("agent-{n}"), "template": "echo"}),
                    )
                    .await;
                assert_eq!(status, 201, "{created}");
                ids.push(created["id"].as_str().expect("id").to_owned());
            }
        }));
    }
    let mut ids = Vec::new();
    for c in creators {
        ids.extend(c.await.expect("creator"));
    }
    assert_eq!(ids.len(), AGENTS);

    let online = wait_for("every agent online", Duration::from_secs(300), || async {
        let (_, list) = server
            .call(Method::GET, "/workspaces", Some(&server.admin_token), None)
            .await;
        let list = list.as_array().cloned().unwrap_or_default();
        let failed: Vec<&Value> = list.iter().filter(|w| w["status"] == "failed").collect();
        assert!(
            failed.is_empty(),
            "{} agents failed, e.g. {}",
            failed.len(),
            failed[0]
        );
        let online = list.iter().filter(|w| w["status"] == "online").count();
        if online == AGENTS {
            Ok(list)
        } else {
            Err(format!("{online} of {AGENTS} online"))
        }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let violations = reader.await.expect("reader");
    assert!(
        violations.is_empty(),
        "online without a url, {} times, e.g. {}",
        violations.len(),
        violations[0]
    );
    assert!(reads.load(Ordering::Relaxed) > 0);
    let mut urls: Vec<&str> = online.iter().filter_map(|w| w["url"].as_str()).collect();
    urls.sort_unstable();
    urls.dedup();
    assert_eq!(urls.len(), AGENTS, "every agent has a port of its own");
}
