//! A workspace of the bundled `echo` template on the process backend (the reference agent):
//! wait for online over the event stream, message/send, restart, pause/resume,
//! hibernate/wake, and a start that fails with its `failure_code`.

use std::time::Duration;

use berth_client::berth_api::workspaces::{CreateWorkspace, Workspace};
use berth_client::{Client, DeleteOptions, Error, reply_text};
use berth_domain::{WorkspaceId, WorkspaceStatus};

use crate::both_stores;
use crate::harness::Berth;

both_stores!(
    an_echo_workspace_lives_through_its_lifecycle,
    a_failed_start_reports_its_failure_code
);

/// Waits (at most 60 s) until `id` is online; the statuses seen on the way. On a timeout or
/// an error, the panic shows the workspace and its agent's log.
async fn online(
    b: &Berth,
    client: &Client,
    id: WorkspaceId,
) -> (Workspace<'static>, Vec<WorkspaceStatus>) {
    let mut seen = Vec::new();
    let waited = tokio::time::timeout(
        Duration::from_secs(60),
        client.wait_until_settled(id, |w| seen.push(w.status)),
    )
    .await;
    match waited {
        Ok(Ok(ws)) => (ws, seen),
        other => panic!(
            "not online: {other:?} (statuses seen {seen:?})\nnow: {:?}\n--- agent log ---\n{}",
            b.client.workspace(id).await,
            b.agent_log(id)
        ),
    }
}

async fn an_echo_workspace_lives_through_its_lifecycle(b: &Berth) {
    let created = b
        .client
        .create_workspace(&CreateWorkspace {
            name: "echo".into(),
            template: "echo".into(),
            ..Default::default()
        })
        .await
        .expect("create");
    assert_eq!(created.status, WorkspaceStatus::Provisioning);
    let id = created.id;
    let (ws, seen) = online(b, &b.client, id).await;
    assert_eq!(ws.status, WorkspaceStatus::Online);
    assert!(ws.url.starts_with("http://127.0.0.1:"), "{}", ws.url);
    assert_eq!(seen.last(), Some(&WorkspaceStatus::Online), "{seen:?}");

    // A2A message/send through the server's proxy to the real agent.
    let reply = b
        .client
        .send_message(id, "hello")
        .await
        .expect("message/send");
    assert_eq!(
        reply_text(&reply).as_deref(),
        Some("echo: hello"),
        "{reply}"
    );
    assert_eq!(reply["role"], "agent");

    // Restart: the answer comes before the row changes; restart_and_wait waits for the new
    // start, not the old agent's `online`.
    let old_url = ws.url.to_string();
    let mut seen = Vec::new();
    let (restarted, ws) = tokio::time::timeout(
        Duration::from_secs(60),
        b.client.restart_and_wait(id, None, |w| seen.push(w.status)),
    )
    .await
    .expect("online within 60 s")
    .expect("restarted");
    assert_eq!(restarted.status, "provisioning");
    assert_eq!(ws.status, WorkspaceStatus::Online);
    assert_eq!(
        seen.first(),
        Some(&WorkspaceStatus::Provisioning),
        "{seen:?}"
    );
    assert_ne!(ws.url, old_url, "a new agent");
    let reply = b
        .client
        .send_message(id, "restarted")
        .await
        .expect("message/send");
    assert_eq!(reply_text(&reply).as_deref(), Some("echo: restarted"));

    // Pause, resume.
    let paused = b.client.pause_workspace(id).await.expect("pause");
    assert_eq!(paused.status, "paused");
    assert_eq!(
        b.client.workspace(id).await.expect("get").status,
        WorkspaceStatus::Paused
    );
    // Waiting on a paused workspace ends at once: it will not start by itself.
    let err = b
        .client
        .wait_until_settled(id, |_| {})
        .await
        .expect_err("paused");
    assert!(
        matches!(
            err,
            Error::Stopped {
                status: WorkspaceStatus::Paused,
                ..
            }
        ),
        "{err:?}"
    );
    let resumed = b.client.resume_workspace(id).await.expect("resume");
    assert_eq!(resumed.status, "provisioning");
    online(b, &b.client, id).await;

    // Hibernate, wake.
    let hibernated = b
        .client
        .hibernate_workspace(id, false)
        .await
        .expect("hibernate");
    assert_eq!(hibernated.status, "hibernated");
    assert_eq!(
        b.client.workspace(id).await.expect("get").status,
        WorkspaceStatus::Hibernated
    );
    let woken = b.client.wake_workspace(id).await.expect("wake");
    assert_eq!(woken.status, "provisioning");
    let (_, seen) = online(b, &b.client, id).await;
    assert_eq!(seen.last(), Some(&WorkspaceStatus::Online));
    let reply = b
        .client
        .send_message(id, "again")
        .await
        .expect("message/send");
    assert_eq!(reply_text(&reply).as_deref(), Some("echo: again"));

    // A workspace token can wait on its own workspace too (the stream takes it).
    let token = b.client.create_token(id).await.expect("token").auth_token;
    let own = b.anonymous().with_token(token);
    let (ws, _) = online(b, &own, id).await;
    assert_eq!(ws.id, id);

    b.client
        .delete_workspace(
            id,
            DeleteOptions {
                purge: true,
                ..Default::default()
            },
        )
        .await
        .expect("purge");
    let err = b.client.send_message(id, "gone").await.expect_err("purged");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(404));
}

async fn a_failed_start_reports_its_failure_code(b: &Berth) {
    // A runtime the process backend has no command for fails at once.
    let created = b
        .client
        .create_workspace(&CreateWorkspace {
            name: "nowhere".into(),
            runtime: "claude-code".into(),
            model: "anthropic/claude-sonnet-4".into(),
            ..Default::default()
        })
        .await
        .expect("create");
    let mut seen = Vec::new();
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        b.client
            .wait_until_settled(created.id, |w| seen.push(w.status)),
    )
    .await
    .expect("settled within 60 s")
    .expect_err("failed");
    let Error::WorkspaceFailed {
        id,
        failure_code,
        message,
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(*id, created.id);
    assert_eq!(seen.last(), Some(&WorkspaceStatus::Failed));
    let ws = b.client.workspace(created.id).await.expect("get");
    assert_eq!(failure_code.as_deref(), ws.failure_code.as_deref());
    assert!(failure_code.is_some(), "{err}");
    assert!(!message.is_empty());
    assert_ne!(
        message, "the workspace failed to start",
        "the event's message: {err}"
    );
}
