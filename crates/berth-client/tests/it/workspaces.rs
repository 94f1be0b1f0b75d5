//! Create (with an idempotency key), list (a page at a time and as a stream), get, update,
//! delete.

use berth_client::berth_api::workspaces::{CreateWorkspace, UpdateWorkspace};
use berth_client::{DeleteOptions, Error};
use berth_domain::WorkspaceStatus;
use futures_util::TryStreamExt as _;

use crate::both_stores;
use crate::harness::Berth;

both_stores!(
    an_idempotency_key_replays_the_first_create,
    pages_stream_over_every_workspace,
    get_update_and_delete,
);

async fn an_idempotency_key_replays_the_first_create(b: &Berth) {
    let req = CreateWorkspace {
        name: "laptop".into(),
        external: true,
        ..Default::default()
    };
    let first = b
        .client
        .create_workspace_with_key(&req, "key-1")
        .await
        .expect("create");
    assert!(!first.replayed);
    assert_eq!(first.workspace.external, Some(true));
    let connection = first
        .workspace
        .connection
        .as_ref()
        .expect("a connection payload");
    assert!(!connection.auth_token.is_empty());

    let again = b
        .client
        .create_workspace_with_key(&req, "key-1")
        .await
        .expect("replay");
    assert!(again.replayed);
    assert_eq!(
        again.workspace, first.workspace,
        "the same answer, token included"
    );
    assert_eq!(b.client.list_workspaces().await.expect("list").len(), 1);

    // The same key with another request is refused with its code.
    let other = CreateWorkspace {
        name: "other".into(),
        ..req.clone()
    };
    let err = b
        .client
        .create_workspace_with_key(&other, "key-1")
        .await
        .expect_err("reused key");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(422));
    let Error::Api { code, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(code.as_deref(), Some("IDEMPOTENCY_KEY_REUSED"));

    // A new key creates again (the name gets a suffix).
    let third = b
        .client
        .create_workspace_with_key(&req, "key-2")
        .await
        .expect("create");
    assert!(!third.replayed);
    assert_ne!(third.workspace.id, first.workspace.id);
}

async fn pages_stream_over_every_workspace(b: &Berth) {
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(b.external(&format!("ws-{i}")).await);
    }
    let first = b
        .client
        .list_workspaces_page(3, None)
        .await
        .expect("page 1");
    assert_eq!(first.items.len(), 3);
    let cursor = first.next_cursor.expect("a next page");
    let second = b
        .client
        .list_workspaces_page(3, Some(&cursor))
        .await
        .expect("page 2");
    assert_eq!(second.items.len(), 3);
    let third = b
        .client
        .list_workspaces_page(3, second.next_cursor.as_deref())
        .await
        .expect("page 3");
    assert_eq!(third.items.len(), 1);
    assert_eq!(third.next_cursor, None, "the last page has no cursor");

    let streamed: Vec<_> = b
        .client
        .workspaces(3)
        .map_ok(|w| w.id)
        .try_collect()
        .await
        .expect("stream");
    let paged: Vec<_> = [first.items, second.items, third.items]
        .into_iter()
        .flatten()
        .map(|w| w.id)
        .collect();
    assert_eq!(streamed, paged, "the stream reads the pages in order");
    let mut sorted = streamed.clone();
    sorted.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(sorted, expected, "every workspace once");

    // One page holding everything.
    let all: Vec<_> = b
        .client
        .workspaces(1000)
        .try_collect()
        .await
        .expect("stream");
    assert_eq!(all.len(), 7);
    // A bad page size is the server's 400.
    let err = b
        .client
        .list_workspaces_page(0, None)
        .await
        .expect_err("limit 0");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(400));
}

async fn get_update_and_delete(b: &Berth) {
    let id = b.external("before").await;
    let ws = b.client.workspace(id).await.expect("get");
    assert_eq!(ws.name, "before");
    assert_eq!(ws.status, WorkspaceStatus::AwaitingAgent);
    assert_eq!(ws.runtime, "external");

    let updated = b
        .client
        .update_workspace(
            id,
            &UpdateWorkspace {
                name: Some("after".into()),
                role: Some("reviewer".into()),
                ..Default::default()
            },
        )
        .await
        .expect("update");
    assert_eq!(updated.status, "updated");
    let ws = b.client.workspace(id).await.expect("get");
    assert_eq!(ws.name, "after");
    assert_eq!(ws.role.as_deref(), Some("reviewer"));

    let state = b.client.workspace_state(id).await.expect("state");
    assert_eq!(state.status, Some(WorkspaceStatus::AwaitingAgent));
    assert!(!state.deleted);

    let deleted = b
        .client
        .delete_workspace(id, DeleteOptions::default())
        .await
        .expect("delete");
    assert_eq!(deleted.status, "removed");
    // Gone: 410 with the server's body.
    let err = b.client.workspace(id).await.expect_err("removed");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(410));
    let Error::Api { body, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(body["error"], "workspace removed");

    let id = b.external("purged").await;
    let purged = b
        .client
        .delete_workspace(
            id,
            DeleteOptions {
                purge: true,
                ..Default::default()
            },
        )
        .await
        .expect("purge");
    assert_eq!(purged.status, "purged");
    let err = b.client.workspace(id).await.expect_err("purged");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(404));
}
