//! Start failures, supervision, stop and shutdown.

use berth_provision::{BackendKind, Provisioner};

use super::*;

/// Traps TERM (writing a marker) and announces it is ready only once the trap is set.
const POLITE: &str =
    r#"trap 'echo bye > term.marker; exit 0' TERM; echo $$ > ready; while :; do sleep 0.1; done"#;

/// Ignores TERM, for itself and (inherited) for every command it runs.
const STUBBORN: &str = r#"trap '' TERM; echo $$ > ready; while :; do sleep 0.1; done"#;

#[tokio::test]
async fn kind_is_process_and_unknown_ids_are_not_running() {
    let root = tempfile::tempdir().unwrap();
    let p = provisioner(root.path(), &[]);
    assert_eq!(p.kind(), BackendKind::Process);
    let id = WorkspaceId::new_v4();
    assert!(!p.is_running(id).await.unwrap());
    p.stop(id).await.unwrap();
}

#[tokio::test]
async fn a_runtime_without_a_command_is_image_not_found() {
    let root = tempfile::tempdir().unwrap();
    let mut config = ProcessConfig::new(root.path());
    config.commands.insert("empty".into(), vec![]);
    let p = ProcessProvisioner::new(config);
    for runtime in ["hermes", "empty"] {
        let err = p.start(request(runtime)).await.unwrap_err();
        assert_eq!(err.code(), "IMAGE_NOT_FOUND");
        assert!(err.to_string().contains(runtime), "{err}");
    }
}

#[tokio::test]
async fn an_immediate_exit_fails_the_start_with_the_log_tail() {
    let root = tempfile::tempdir().unwrap();
    let p = provisioner(
        root.path(),
        &[("crash", "echo config missing: boom-marker >&2; exit 3")],
    );
    let req = request("crash");
    let id = req.workspace_id;
    let err = p.start(req).await.unwrap_err();
    assert_eq!(err.code(), "START_FAILED");
    let msg = err.to_string();
    assert!(msg.contains("exit status 3"), "{msg}");
    assert!(msg.contains("config missing: boom-marker"), "{msg}");
    assert!(!p.is_running(id).await.unwrap());

    // A missing program is a start failure too, not a panic or a hang.
    let mut config = ProcessConfig::new(root.path());
    config = config.with_command("ghost", ["/nonexistent/berth-agent"]);
    let p = ProcessProvisioner::new(config);
    assert_eq!(
        p.start(request("ghost")).await.unwrap_err().code(),
        "START_FAILED"
    );
}

#[tokio::test]
async fn stop_sends_sigterm_and_the_agent_may_clean_up() {
    let root = tempfile::tempdir().unwrap();
    let p = provisioner(root.path(), &[("polite", POLITE)]);
    let req = request("polite");
    let id = req.workspace_id;
    let work = root.path().join(id.to_string()).join("workspace");

    let started = p.start(req).await.unwrap();
    let pid = wait_for_file(&work.join("ready")).await;
    assert_eq!(started.instance_id.as_deref(), Some(pid.trim()));
    assert!(p.is_running(id).await.unwrap());

    tokio::time::timeout(PATIENCE, p.stop(id))
        .await
        .expect("stop finished")
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(work.join("term.marker")).unwrap(),
        "bye\n"
    );
    assert!(!p.is_running(id).await.unwrap());
    assert!(!pid_alive(&pid));
    // Stopping again is fine.
    p.stop(id).await.unwrap();
}

#[tokio::test]
async fn stop_sends_sigkill_when_sigterm_is_ignored() {
    let root = tempfile::tempdir().unwrap();
    let p = provisioner_with(
        root.path(),
        &[("stubborn", STUBBORN)],
        Duration::from_millis(300),
    );
    let req = request("stubborn");
    let id = req.workspace_id;
    let work = root.path().join(id.to_string()).join("workspace");

    p.start(req).await.unwrap();
    let pid = wait_for_file(&work.join("ready")).await;
    assert!(p.is_running(id).await.unwrap());

    tokio::time::timeout(PATIENCE, p.stop(id))
        .await
        .expect("stop finished")
        .unwrap();
    assert!(!p.is_running(id).await.unwrap());
    assert!(!pid_alive(&pid), "the stubborn agent was killed");
}

#[tokio::test]
async fn an_agent_that_dies_later_is_not_running() {
    let root = tempfile::tempdir().unwrap();
    // Lives past the start grace, then exits when told to through a file.
    let script = r#"echo $$ > ready; while [ ! -f quit ]; do sleep 0.05; done; exit 0"#;
    let p = provisioner(root.path(), &[("short", script)]);
    let req = request("short");
    let id = req.workspace_id;
    let work = root.path().join(id.to_string()).join("workspace");

    p.start(req).await.unwrap();
    wait_for_file(&work.join("ready")).await;
    assert!(p.is_running(id).await.unwrap());
    std::fs::write(work.join("quit"), "now").unwrap();

    let deadline = tokio::time::Instant::now() + PATIENCE;
    while p.is_running(id).await.unwrap() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agent should have exited"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    p.stop(id).await.unwrap();
}

#[tokio::test]
async fn a_second_start_replaces_the_running_agent() {
    let root = tempfile::tempdir().unwrap();
    let p = provisioner(root.path(), &[("polite", POLITE)]);
    let req = request("polite");
    let id = req.workspace_id;
    let work = root.path().join(id.to_string()).join("workspace");

    let first = p.start(req.clone()).await.unwrap();
    let first_pid = wait_for_file(&work.join("ready")).await;
    std::fs::remove_file(work.join("ready")).unwrap();

    let second = p.start(req).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(work.join("term.marker")).unwrap(),
        "bye\n"
    );
    assert!(!pid_alive(&first_pid), "the first agent was stopped");
    let second_pid = wait_for_file(&work.join("ready")).await;
    assert_ne!(first.instance_id, second.instance_id);
    assert_eq!(second.instance_id.as_deref(), Some(second_pid.trim()));
    assert!(p.is_running(id).await.unwrap());

    p.stop(id).await.unwrap();
}

#[tokio::test]
async fn shutdown_stops_every_agent() {
    let root = tempfile::tempdir().unwrap();
    let p = provisioner(root.path(), &[("polite", POLITE)]);
    let mut agents = Vec::new();
    for _ in 0..2 {
        let req = request("polite");
        let id = req.workspace_id;
        p.start(req).await.unwrap();
        let work = root.path().join(id.to_string()).join("workspace");
        let pid = wait_for_file(&work.join("ready")).await;
        agents.push((id, work, pid));
    }

    tokio::time::timeout(PATIENCE, p.shutdown())
        .await
        .expect("shutdown finished");
    for (id, work, pid) in agents {
        assert!(!p.is_running(id).await.unwrap());
        assert!(!pid_alive(&pid));
        assert_eq!(
            std::fs::read_to_string(work.join("term.marker")).unwrap(),
            "bye\n"
        );
    }
}

/// Fails like an agent whose port was taken on its first run, then runs on the next.
const PORT_TAKEN_ONCE: &str = r#"if [ ! -f tried ]; then echo "$AGENT_PORT" > tried; echo "Error: binding 127.0.0.1:$AGENT_PORT: Address already in use (os error 98)" >&2; exit 1; fi; echo "$AGENT_PORT" > second; while :; do sleep 0.1; done"#;

#[tokio::test]
async fn a_start_whose_port_was_taken_is_tried_again_on_another() {
    let root = tempfile::tempdir().unwrap();
    let p = provisioner(root.path(), &[("flaky", PORT_TAKEN_ONCE)]);
    let req = request("flaky");
    let id = req.workspace_id;
    let work = root.path().join(id.to_string()).join("workspace");

    let started = p.start(req).await.unwrap();
    let first = std::fs::read_to_string(work.join("tried")).unwrap();
    let second = wait_for_file(&work.join("second")).await;
    assert_ne!(first.trim(), second.trim(), "a fresh port for the retry");
    assert_eq!(
        started.url.as_deref(),
        Some(format!("http://127.0.0.1:{}", second.trim()).as_str())
    );
    assert!(p.is_running(id).await.unwrap());
    p.stop(id).await.unwrap();

    // An agent that always finds its port taken fails after a bounded number of tries.
    let always = r#"echo x >> tries; echo "Address already in use" >&2; exit 1"#;
    let p = provisioner(root.path(), &[("taken", always)]);
    let req = request("taken");
    let work = root
        .path()
        .join(req.workspace_id.to_string())
        .join("workspace");
    let err = p.start(req).await.unwrap_err();
    assert_eq!(err.code(), "START_FAILED");
    assert!(err.to_string().contains("Address already in use"), "{err}");
    let tries = std::fs::read_to_string(work.join("tries")).unwrap();
    assert_eq!(
        tries.lines().count(),
        berth_provision::ports::START_ATTEMPTS
    );
}

#[tokio::test]
async fn wait_exit_reports_an_agent_that_exits_and_ends_quietly_on_stop() {
    let root = tempfile::tempdir().unwrap();
    let script = r#"echo $$ > ready; while [ ! -f quit ]; do sleep 0.05; done; echo going-away-marker >&2; exit 4"#;
    let p = provisioner(root.path(), &[("short", script)]);
    let req = request("short");
    let id = req.workspace_id;
    let work = root.path().join(id.to_string()).join("workspace");
    p.start(req).await.unwrap();
    wait_for_file(&work.join("ready")).await;
    std::fs::write(work.join("quit"), "now").unwrap();
    let said = tokio::time::timeout(PATIENCE, p.wait_exit(id))
        .await
        .expect("the exit is noticed")
        .unwrap()
        .expect("an exit to report");
    assert!(said.contains("exit status 4"), "{said}");
    assert!(said.contains("going-away-marker"), "{said}");
    p.stop(id).await.unwrap();

    // A stopped agent's watch ends with nothing to report.
    let p = std::sync::Arc::new(p);
    let req = request("short");
    let id = req.workspace_id;
    let work = root.path().join(id.to_string()).join("workspace");
    p.start(req).await.unwrap();
    wait_for_file(&work.join("ready")).await;
    let watch = tokio::spawn({
        let p = p.clone();
        async move { p.wait_exit(id).await }
    });
    p.stop(id).await.unwrap();
    let out = tokio::time::timeout(PATIENCE, watch)
        .await
        .expect("the watch ends")
        .expect("watch task");
    assert_eq!(out.unwrap(), None);
}
