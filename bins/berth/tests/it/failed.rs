//! A workspace that ends `failed` has no agent left: neither after a provision timeout (its
//! agent never registered) nor after its agent exited while starting, even when the runtime
//! left other processes behind in its process group.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::crash::{KillLeftovers, agents_of, create, processes_of};
use crate::server::{Server, free_port, wait_for};

/// A runtime command whose script leaves a helper process in the agent's process group (as a
/// runtime that spawns tools would) and then becomes the reference agent.
fn runtime_with_a_helper(dir: &Path) -> String {
    let script = dir.join("agent-with-helper.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nsleep 300 &\nexec \"{}\" agent\n",
            env!("CARGO_BIN_EXE_berth")
        ),
    )
    .expect("write runtime script");
    format!("claude-code=/bin/sh {}", script.display())
}

/// Polls until workspace `id` is `failed` and returns it.
async fn wait_failed(server: &Server, id: &str) -> Value {
    wait_for(
        &format!("{id} to fail"),
        Duration::from_secs(60),
        || async {
            let w = server.workspace(id).await;
            if w["status"] == "failed" {
                Ok(w)
            } else {
                Err(w.to_string())
            }
        },
    )
    .await
}

/// Polls until no process works for workspace `id` any more.
async fn wait_no_processes(server: &Server, id: &str) {
    wait_for(
        &format!("the processes of {id} to be gone"),
        Duration::from_secs(30),
        || async {
            let left = processes_of(id);
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{left:?}\n{}", server.log_text()))
            }
        },
    )
    .await;
}

#[tokio::test]
async fn a_provision_timeout_leaves_no_agent_running() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let runtime = runtime_with_a_helper(root.path());
    // The reference agent itself, under a runtime whose deadline is the server's (the `echo`
    // template declares 60 s).
    let plain = format!("codex={} agent", env!("CARGO_BIN_EXE_berth"));
    let server = Server::start(
        &data,
        &[
            "--provisioner",
            "process",
            "--runtime-command",
            &runtime,
            "--runtime-command",
            &plain,
            "--provision-timeout-secs",
            "2",
            "--sweep-interval-secs",
            "1",
        ],
    )
    .await;
    // Nothing listens here: the agents never register, so their workspaces time out.
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let model = "anthropic:claude-sonnet-4-5";
    let plain = create(
        &server,
        json!({"name": "plain-lost", "runtime": "codex", "model": model,
               "secrets": {"PLATFORM_URL": nowhere}}),
    )
    .await;
    let helped = create(
        &server,
        json!({"name": "helped-lost", "runtime": "claude-code", "model": model,
               "secrets": {"PLATFORM_URL": nowhere}}),
    )
    .await;
    let _cleanup = KillLeftovers(vec![plain.clone(), helped.clone()]);

    for id in [&plain, &helped] {
        let w = wait_failed(&server, id).await;
        assert_eq!(w["failure_code"], "TIMEOUT", "{w}");
        // The agent did run (and tried to register) before the timeout.
        let log = std::fs::read_to_string(data.join("workspaces").join(id).join("agent.log"))
            .expect("agent log");
        assert!(log.contains("registration failed"), "{log}");
        wait_no_processes(&server, id).await;
        assert!(agents_of(id).is_empty());
        assert!(
            !data.join("workspaces").join(id).join("agent.pid").exists(),
            "the pid file of a stopped agent is removed"
        );
    }
}

#[tokio::test]
async fn an_agent_that_exits_while_starting_leaves_nothing_of_its_group_behind() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let runtime = runtime_with_a_helper(root.path());
    let server = Server::start(
        &data,
        &["--provisioner", "process", "--runtime-command", &runtime],
    )
    .await;
    let id = create(
        &server,
        json!({"name": "crashing", "runtime": "claude-code",
               "model": "anthropic:claude-sonnet-4-5",
               "secrets": {"AGENT_CRASH_AFTER_MS": "1500"}}),
    )
    .await;
    let _cleanup = KillLeftovers(vec![id.clone()]);
    let w = wait_failed(&server, &id).await;
    assert_eq!(w["failure_code"], "START_FAILED", "{w}");
    wait_no_processes(&server, &id).await;
}
