//! Tokens, workspace and global secrets, templates.

use berth_client::berth_api::templates::TemplateListing;

use crate::both_stores;
use crate::harness::Berth;

both_stores!(
    tokens_are_minted_listed_and_revoked,
    secrets_are_set_listed_and_deleted,
    templates_are_listed,
    the_queue_is_listed
);

async fn tokens_are_minted_listed_and_revoked(b: &Berth) {
    let id = b.external("tokens").await;
    let before = b.client.list_tokens(id).await.expect("list");
    let minted = b.client.create_token(id).await.expect("mint");
    assert_eq!(minted.workspace_id, id);
    assert!(!minted.auth_token.is_empty());
    let listed = b.client.list_tokens(id).await.expect("list");
    assert_eq!(listed.count, before.count + 1);
    let new = listed
        .tokens
        .iter()
        .find(|t| minted.auth_token.starts_with(&t.prefix))
        .expect("the new token is listed by its prefix");

    // The token works for its workspace.
    let own = b.anonymous().with_token(minted.auth_token.clone());
    assert_eq!(
        own.list_tokens(id).await.expect("own list").count,
        listed.count
    );

    let revoked = b.client.revoke_token(id, new.id).await.expect("revoke");
    assert_eq!(revoked.status, "revoked");
    assert_eq!(
        b.client.list_tokens(id).await.expect("list").count,
        before.count
    );
    let err = b.client.revoke_token(id, new.id).await.expect_err("twice");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(404));
    let err = own.list_tokens(id).await.expect_err("a revoked token");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(401));
}

async fn secrets_are_set_listed_and_deleted(b: &Berth) {
    let id = b.external("secrets").await;
    let saved = b
        .client
        .set_secret(id, "API_KEY", "v-1")
        .await
        .expect("set");
    assert_eq!(saved.status, "saved");
    b.client
        .set_secret(id, "API_KEY", "v-2")
        .await
        .expect("replace");
    let listed = b.client.list_secrets(id).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key, "API_KEY");
    assert!(listed[0].has_value);
    let values = b.client.secret_values(id).await.expect("values");
    assert_eq!(values.get("API_KEY").map(String::as_str), Some("v-2"));
    let deleted = b.client.delete_secret(id, "API_KEY").await.expect("delete");
    assert_eq!(deleted.status, "deleted");
    assert!(b.client.list_secrets(id).await.expect("list").is_empty());
    let err = b
        .client
        .delete_secret(id, "API_KEY")
        .await
        .expect_err("gone");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(404));
    // An invalid key is the server's 400.
    let err = b
        .client
        .set_secret(id, "", "x")
        .await
        .expect_err("empty key");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(400));

    let saved = b
        .client
        .set_global_secret("GLOBAL_KEY", "g")
        .await
        .expect("global set");
    assert_eq!(saved.scope.as_deref(), Some("global"));
    let listed = b.client.list_global_secrets().await.expect("global list");
    assert_eq!(
        listed.iter().map(|s| s.key.as_str()).collect::<Vec<_>>(),
        ["GLOBAL_KEY"]
    );
    b.client
        .delete_global_secret("GLOBAL_KEY")
        .await
        .expect("global delete");
    assert!(
        b.client
            .list_global_secrets()
            .await
            .expect("list")
            .is_empty()
    );
}

async fn templates_are_listed(b: &Berth) {
    let templates = b.client.templates().await.expect("templates");
    let echo = templates
        .iter()
        .find_map(|t| match t {
            TemplateListing::Valid(t) if t.id == "echo" => Some(t),
            _ => None,
        })
        .expect("the bundled echo template");
    assert_eq!(echo.runtime, "echo");
    assert_eq!(echo.model, "echo/echo-1");
    let err = b.anonymous().templates().await.expect_err("admin only");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(401));
}

/// `queue`: a workspace with nothing queued lists nothing; the server's refusals come through.
async fn the_queue_is_listed(b: &Berth) {
    use berth_client::berth_api::a2a::QueueListQuery;
    let id = b.external("queue").await;
    let all = QueueListQuery::default();
    assert!(b.client.queue(id, &all).await.expect("list").is_empty());
    let zero = QueueListQuery {
        limit: Some("0".into()),
    };
    let err = b.client.queue(id, &zero).await.expect_err("limit 0");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(400));
    let err = b
        .client
        .queue(berth_domain::WorkspaceId::new_v4(), &all)
        .await
        .expect_err("unknown workspace");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(404));
}
