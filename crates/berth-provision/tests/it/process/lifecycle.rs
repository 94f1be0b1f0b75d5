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
