//! Refusals arrive as `Error::Api` with the HTTP status, the server's body and its code; a
//! server that is not there is a transport error.

use berth_client::berth_api::workspaces::CreateWorkspace;
use berth_client::{Client, Error};
use berth_domain::WorkspaceId;

use crate::both_stores;
use crate::harness::Berth;

both_stores!(refusals_keep_status_body_and_code);

async fn refusals_keep_status_body_and_code(b: &Berth) {
    // 404: an unknown workspace.
    let err = b
        .client
        .workspace(WorkspaceId::new_v4())
        .await
        .expect_err("unknown id");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(404));
    assert_eq!(err.server_message().as_deref(), Some("workspace not found"));
    assert_eq!(err.to_string(), "404 Not Found: workspace not found");
    assert_eq!(
        err.error_body().expect("a typed error body").error,
        "workspace not found"
    );

    // 401: no credential, then a wrong one.
    let err = b.anonymous().list_workspaces().await.expect_err("no token");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(401));
    assert_eq!(err.server_message().as_deref(), Some("admin auth required"));
    let err = b
        .anonymous()
        .with_token("wrong")
        .list_workspaces()
        .await
        .expect_err("wrong token");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(401));
    assert_eq!(
        err.server_message().as_deref(),
        Some("invalid admin auth token")
    );

    // 400: a field the server refuses.
    let err = b
        .client
        .create_workspace(&CreateWorkspace {
            name: "x".into(),
            tier: 9,
            external: true,
            ..Default::default()
        })
        .await
        .expect_err("tier 9");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(400));
    assert_eq!(
        err.server_message().as_deref(),
        Some("tier must be between 1 and 4")
    );

    // 422 with a machine-readable code and the extra fields of its body.
    let err = b
        .client
        .create_workspace(&CreateWorkspace {
            name: "x".into(),
            ..Default::default()
        })
        .await
        .expect_err("no model");
    let Error::Api { status, body, code } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(status.as_u16(), 422);
    assert_eq!(code.as_deref(), Some("MODEL_REQUIRED"));
    assert_eq!(body["code"], "MODEL_REQUIRED");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|m| m.contains("model is required"))
    );

    // 409 with a body of its own shape: kept as sent.
    let parent = b.external("parent").await;
    b.client
        .create_workspace(&CreateWorkspace {
            name: "child".into(),
            external: true,
            parent_id: Some(parent.to_string()),
            ..Default::default()
        })
        .await
        .expect("child");
    let err = b
        .client
        .delete_workspace(parent, Default::default())
        .await
        .expect_err("has children");
    let Error::Api { status, body, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(status.as_u16(), 409);
    assert_eq!(body["status"], "confirmation_required");
    assert_eq!(body["children_count"], 1);
    assert!(
        err.server_message()
            .is_some_and(|m| m.contains("?confirm=true"))
    );

    // Nobody listening: a transport error, not an API error.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let err = Client::new(format!("http://127.0.0.1:{port}"))
        .expect("client")
        .health()
        .await
        .expect_err("nothing listens");
    assert!(matches!(err, Error::Transport(_)), "{err:?}");
    assert_eq!(err.status(), None);
}
