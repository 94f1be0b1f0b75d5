//! A server killed with `kill -9` leaves no agent behind once it starts again: the reference
//! agent dies with it, the agents of other runtimes are stopped by the next start from their pid
//! files, and the sweeps then start exactly one agent per workspace that should run.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::server::{Server, free_port, wait_for};

/// The processes (not zombies) whose environment holds `WORKSPACE_ID=<id>`, as
/// `(pid, is the agent itself)`: a wrapper script counts, but is not the agent.
pub(crate) fn processes_of(id: &str) -> Vec<(u32, bool)> {
    let needle = format!("WORKSPACE_ID={id}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.trim().chars().next());
            matches!(state, Some(s) if s != 'Z' && s != 'X')
        })
        .filter_map(|pid| {
            let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
            environ
                .split(|b| *b == 0)
                .any(|kv| kv == needle.as_bytes())
                .then_some(pid)
        })
        .map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            (pid, args.get(1) == Some(&&b"agent"[..]))
        })
        .collect()
}

/// The agent processes of workspace `id` (`berth agent`).
pub(crate) fn agents_of(id: &str) -> Vec<u32> {
    processes_of(id)
        .into_iter()
        .filter_map(|(pid, agent)| agent.then_some(pid))
        .collect()
}

/// Kills, when the test ends, every process still working for one of its workspaces, so a
/// failing run leaves nothing behind.
pub(crate) struct KillLeftovers(pub(crate) Vec<String>);

impl Drop for KillLeftovers {
    fn drop(&mut self) {
        for id in &self.0 {
            for (pid, _) in processes_of(id) {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

/// A runtime command that runs the reference agent under a shell, not `exec`'d: its parent is
/// the shell, so it cannot follow the server's death, and only the pid file stops it.
fn wrapper_script(dir: &Path) -> String {
    let script = dir.join("wrapped-agent.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\n\"{}\" agent\n", env!("CARGO_BIN_EXE_berth")),
    )
    .expect("write wrapper script");
    format!("claude-code=/bin/sh {}", script.display())
}

pub(crate) async fn create(server: &Server, body: Value) -> String {
    let (status, created) = server.admin_post("/workspaces", &body).await;
    assert_eq!(status, 201, "{created}\n{}", server.log_text());
    created["id"].as_str().expect("id").to_owned()
}

/// Waits until every workspace of `want` has exactly that many agent processes.
async fn wait_agents(server: &Server, want: &[(&str, &str, usize)], what: &str) {
    wait_for(what, Duration::from_secs(60), || async {
        let seen: Vec<(&str, usize)> = want
            .iter()
            .map(|(name, id, _)| (*name, agents_of(id).len()))
            .collect();
        if want.iter().zip(&seen).all(|((_, _, n), (_, s))| n == s) {
            Ok(())
        } else {
            Err(format!(
                "agents per workspace: {seen:?}\n{}",
                server.log_text()
            ))
        }
    })
    .await;
}

#[tokio::test]
async fn after_kill_9_the_next_start_runs_one_agent_per_workspace_that_should_run() {
    kill_9_and_restart(&[]).await;
}

#[tokio::test]
async fn after_kill_9_the_next_start_runs_one_agent_per_workspace_that_should_run_on_postgres() {
    let url = crate::leader::fresh_database_named("crash").await;
    kill_9_and_restart(&["--database-url", &url]).await;
}

/// Five workspaces on the process backend over the store `store_flags` pick: two reference
/// agents, one wrapped agent, and one of each whose agent never registers. The server is
/// killed, then started again over the same data directory.
async fn kill_9_and_restart(store_flags: &[&str]) {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let runtime = wrapper_script(root.path());
    let mut flags = vec![
        "--provisioner",
        "process",
        "--runtime-command",
        &runtime,
        "--sweep-interval-secs",
        "1",
    ];
    flags.extend_from_slice(store_flags);
    let mut first = Server::start(&data, &flags).await;

    // Nothing listens here: an agent told to register there never does.
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let model = "anthropic:claude-sonnet-4-5";
    let echo_1 = create(&first, json!({"name": "echo-1", "template": "echo"})).await;
    let echo_2 = create(&first, json!({"name": "echo-2", "template": "echo"})).await;
    let wrapped = create(
        &first,
        json!({"name": "wrapped", "runtime": "claude-code", "model": model}),
    )
    .await;
    let echo_lost = create(
        &first,
        json!({"name": "echo-lost", "template": "echo", "secrets": {"PLATFORM_URL": nowhere}}),
    )
    .await;
    let wrapped_lost = create(
        &first,
        json!({"name": "wrapped-lost", "runtime": "claude-code", "model": model,
               "secrets": {"PLATFORM_URL": nowhere}}),
    )
    .await;
    let ids = [&echo_1, &echo_2, &wrapped, &echo_lost, &wrapped_lost];
    let _cleanup = KillLeftovers(ids.iter().map(|id| (*id).clone()).collect());

    for id in [&echo_1, &echo_2, &wrapped] {
        first
            .wait_status(id, "online", Duration::from_secs(30))
            .await;
    }
    let everyone_once = [
        ("echo-1", echo_1.as_str(), 1),
        ("echo-2", echo_2.as_str(), 1),
        ("wrapped", wrapped.as_str(), 1),
        ("echo-lost", echo_lost.as_str(), 1),
        ("wrapped-lost", wrapped_lost.as_str(), 1),
    ];
    wait_agents(&first, &everyone_once, "one agent per workspace").await;
    for id in [&echo_lost, &wrapped_lost] {
        first.expect_status(id, "provisioning").await;
    }
    let wrapped_before: Vec<(u32, bool)> = [&wrapped, &wrapped_lost]
        .iter()
        .flat_map(|id| processes_of(id))
        .collect();
    // Each wrapped workspace is a shell and its agent.
    assert_eq!(wrapped_before.len(), 4, "{wrapped_before:?}");

    first.kill();

    // The reference agents follow the server's death; the wrapped ones cannot.
    wait_agents(
        &first,
        &[
            ("echo-1", echo_1.as_str(), 0),
            ("echo-2", echo_2.as_str(), 0),
            ("echo-lost", echo_lost.as_str(), 0),
            ("wrapped", wrapped.as_str(), 1),
            ("wrapped-lost", wrapped_lost.as_str(), 1),
        ],
        "the reference agents to die with their server",
    )
    .await;
    for id in [&wrapped, &wrapped_lost] {
        assert!(
            data.join("workspaces").join(id).join("agent.pid").exists(),
            "no pid file for {id}"
        );
    }

    // The next start stops the leftovers before it serves (so before `/health` answers) …
    let second = Server::start(&data, &flags).await;
    let now: Vec<u32> = [&wrapped, &wrapped_lost]
        .iter()
        .flat_map(|id| processes_of(id))
        .map(|(pid, _)| pid)
        .collect();
    for (pid, _) in &wrapped_before {
        assert!(
            !now.contains(pid),
            "process {pid} of the previous run survived the restart\n{}",
            second.log_text()
        );
    }
    assert!(
        second
            .log_text()
            .contains("stopped the agents a previous run of the server left running"),
        "{}",
        second.log_text()
    );

    // … and the sweeps start one agent again for each workspace that was online, and none for
    // those whose start died with the server (they stay `provisioning` until their timeout).
    let settled = [
        ("echo-1", echo_1.as_str(), 1),
        ("echo-2", echo_2.as_str(), 1),
        ("wrapped", wrapped.as_str(), 1),
        ("echo-lost", echo_lost.as_str(), 0),
        ("wrapped-lost", wrapped_lost.as_str(), 0),
    ];
    wait_agents(&second, &settled, "one agent per running workspace").await;
    // A new agent runs only once its workspace went through `provisioning`: online now means
    // the new agent registered.
    for id in [&echo_1, &echo_2, &wrapped] {
        second
            .wait_status(id, "online", Duration::from_secs(60))
            .await;
    }
    let restarted = second.log_text().matches("agent process is gone").count();
    assert_eq!(restarted, 3, "{}", second.log_text());
    // Still so after a few more sweeps (one runs every second).
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (name, id, want) in settled {
        assert_eq!(
            agents_of(id).len(),
            want,
            "{name}: {:?}\n{}",
            processes_of(id),
            second.log_text()
        );
    }
    // A wrapped workspace is its shell and its agent again, nothing more.
    assert_eq!(
        processes_of(&wrapped).len(),
        2,
        "{:?}",
        processes_of(&wrapped)
    );
    for id in [&echo_lost, &wrapped_lost] {
        second.expect_status(id, "provisioning").await;
    }
}
