//! `POST /workspaces/{id}/broadcast` (REFERENCE.md §2.22) on SQLite and PostgreSQL: the message
//! reaches every other live workspace under the sender's root (one `broadcast_receive` row with
//! its `ACTIVITY_LOGGED` and `BROADCAST_MESSAGE` events each), the sender gets a `broadcast_sent`
//! row, and every refusal writes nothing.

use axum::http::{Method, StatusCode};
use berth_domain::WorkspaceId;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, Setup, TestApp, request};

async fn rows_and_events(app: &TestApp) -> (i64, i64) {
    (
        app.db.count("activity_logs").await,
        app.db.count("structure_events").await,
    )
}

/// A container workspace named `name` under `parent`, provisioned (by the mock backend).
async fn child(app: &TestApp, name: &str, parent: WorkspaceId) -> WorkspaceId {
    let id = app
        .create_id(json!({"name": name, "model": "openai/gpt-4o", "parent_id": parent.to_string()}))
        .await;
    app.service.drain().await;
    id
}

async fn set_broadcast(app: &TestApp, id: WorkspaceId, enabled: bool) {
    let resp = app
        .send(request(
            Method::PATCH,
            &format!("/workspaces/{id}/abilities"),
            Some(ADMIN_TOKEN),
            Some(&json!({"broadcast_enabled": enabled})),
        ))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
}

/// The activity rows of `id`, newest first (as admin).
async fn activity(app: &TestApp, id: WorkspaceId) -> Vec<Value> {
    let resp = app.get(&format!("/workspaces/{id}/activity")).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    resp.json.as_array().expect("array").clone()
}

async fn a_broadcast_reaches_the_organisation(postgres: bool) {
    let app = Setup {
        postgres,
        ..Setup::default()
    }
    .start()
    .await;
    // Org ─┬─ Sender ── SenderChild
    //      ├─ Peer ──── PeerChild
    //      └─ Gone (removed)
    // Other (another organisation)
    let (root, _) = app.container("Org").await;
    let sender = child(&app, "Sender", root).await;
    let sender_token = app.admin_mint(sender).await;
    let sender_child = child(&app, "SenderChild", sender).await;
    let peer = child(&app, "Peer", root).await;
    let peer_token = app.admin_mint(peer).await;
    let peer_child = child(&app, "PeerChild", peer).await;
    let gone = child(&app, "Gone", root).await;
    let resp = app.delete(gone, "").await;
    assert!(resp.status.is_success(), "{}", resp.text);
    let (other, _) = app.container("Other").await;

    let uri = format!("/workspaces/{sender}/broadcast");
    let message = "é".repeat(130);

    // Off by default: 403 with a hint, nothing written.
    let before = rows_and_events(&app).await;
    let resp = app
        .post(&uri, Some(&sender_token), &json!({"message": message}))
        .await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN, "{}", resp.text);
    assert_eq!(resp.json["error"], "broadcast_disabled");
    assert!(
        resp.json["hint"]
            .as_str()
            .is_some_and(|h| h.contains("broadcast_enabled")),
        "{}",
        resp.text
    );
    assert_eq!(rows_and_events(&app).await, before);

    set_broadcast(&app, sender, true).await;

    // Bad bodies: a clear 400, nothing written.
    let before = rows_and_events(&app).await;
    let too_long = "x".repeat(64 * 1024 + 1);
    for (body, expected) in [
        (json!({}), "message is required"),
        (json!({"message": ""}), "message is required"),
        (json!({"message": " \n\t "}), "message is required"),
        (json!({"message": null}), "message is required"),
        (json!({"message": 5}), "message is required"),
        (json!(["message"]), "message is required"),
        (
            json!({"message": too_long}),
            "message must be at most 65536 bytes",
        ),
    ] {
        let resp = app.post(&uri, Some(&sender_token), &body).await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{}", resp.text);
        assert_eq!(resp.json, json!({"error": expected}), "{body}");
    }
    let resp = app.post_raw(&uri, Some(&sender_token), "not json").await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{}", resp.text);
    assert_eq!(resp.json, json!({"error": "message is required"}));
    let resp = app
        .post(
            "/workspaces/not-a-uuid/broadcast",
            Some(ADMIN_TOKEN),
            &json!({"message": "m"}),
        )
        .await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{}", resp.text);
    assert_eq!(resp.json, json!({"error": "invalid workspace ID"}));

    // Auth: no token, or another workspace's token, is a 401.
    let resp = app.post(&uri, None, &json!({"message": "m"})).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{}", resp.text);
    assert_eq!(resp.json, json!({"error": "missing workspace auth token"}));
    let resp = app
        .post(&uri, Some(&peer_token), &json!({"message": "m"}))
        .await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{}", resp.text);
    assert_eq!(resp.json, json!({"error": "invalid workspace auth token"}));
    assert_eq!(rows_and_events(&app).await, before);

    // The broadcast: the root, the sender's child, its sibling and the sibling's child.
    let resp = app
        .post(&uri, Some(&sender_token), &json!({"message": message}))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.json, json!({"status": "sent", "delivered": 4}));

    let payload = json!({"message": message, "sender_id": sender.to_string(), "sender": "Sender"});
    let summary = format!("{}…", "é".repeat(120));
    for recipient in [root, sender_child, peer, peer_child] {
        let rows = activity(&app, recipient).await;
        assert_eq!(rows.len(), 1, "{recipient}: {rows:?}");
        let row = &rows[0];
        assert_eq!(row["activity_type"], "broadcast_receive");
        assert_eq!(row["method"], "broadcast");
        assert_eq!(row["status"], "ok");
        assert_eq!(row["source_id"], sender.to_string());
        assert_eq!(row["target_id"], recipient.to_string());
        assert_eq!(row["summary"], summary.as_str());
        assert_eq!(row["request_body"], payload);
        assert_eq!(
            app.events_named(recipient, "BROADCAST_MESSAGE").await,
            vec![payload.clone()]
        );
        let logged = app.events_named(recipient, "ACTIVITY_LOGGED").await;
        assert_eq!(logged.len(), 1, "{recipient}");
        assert_eq!(logged[0]["id"], row["id"]);
    }
    // Removed workspaces and other organisations hear nothing (a removed workspace's activity
    // route is gone: its rows are counted in the table).
    assert_eq!(activity(&app, other).await, Vec::<Value>::new());
    assert_eq!(
        app.db
            .count_for("activity_logs", "workspace_id", gone)
            .await,
        0
    );
    for outsider in [gone, other] {
        assert!(
            app.events_named(outsider, "BROADCAST_MESSAGE")
                .await
                .is_empty()
        );
    }
    // The sender's own record names who received it.
    let rows = activity(&app, sender).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let sent = &rows[0];
    assert_eq!(sent["activity_type"], "broadcast_sent");
    assert_eq!(sent["method"], "broadcast");
    assert_eq!(sent["source_id"], sender.to_string());
    assert_eq!(sent["target_id"], Value::Null);
    assert_eq!(sent["summary"], summary.as_str());
    assert_eq!(sent["request_body"], json!({"message": message}));
    assert_eq!(sent["response_body"]["delivered"], 4);
    let mut recipients: Vec<String> = sent["response_body"]["recipients"]
        .as_array()
        .expect("recipients")
        .iter()
        .map(|r| r.as_str().expect("id").to_owned())
        .collect();
    recipients.sort();
    let mut expected: Vec<String> = [root, sender_child, peer, peer_child]
        .iter()
        .map(ToString::to_string)
        .collect();
    expected.sort();
    assert_eq!(recipients, expected);
    assert!(
        app.events_named(sender, "BROADCAST_MESSAGE")
            .await
            .is_empty()
    );
    assert_eq!(app.events_named(sender, "ACTIVITY_LOGGED").await.len(), 1);

    // A lone root reaches nobody; the admin may send for it. The sender's row is still written.
    set_broadcast(&app, other, true).await;
    let other_uri = format!("/workspaces/{other}/broadcast");
    let resp = app
        .post(
            &other_uri,
            Some(ADMIN_TOKEN),
            &json!({"message": "anyone?"}),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.json, json!({"status": "sent", "delivered": 0}));
    let rows = activity(&app, other).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["activity_type"], "broadcast_sent");
    assert_eq!(
        rows[0]["response_body"],
        json!({"delivered": 0, "recipients": []})
    );

    // Removed or unknown senders are not found, and nothing is written.
    let resp = app.delete(other, "").await;
    assert!(resp.status.is_success(), "{}", resp.text);
    let before = rows_and_events(&app).await;
    let resp = app
        .post(&other_uri, Some(ADMIN_TOKEN), &json!({"message": "m"}))
        .await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND, "{}", resp.text);
    assert_eq!(resp.json, json!({"error": "workspace not found"}));
    let resp = app
        .post(
            &format!("/workspaces/{}/broadcast", WorkspaceId::new_v4()),
            Some(ADMIN_TOKEN),
            &json!({"message": "m"}),
        )
        .await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND, "{}", resp.text);
    assert_eq!(resp.json, json!({"error": "workspace not found"}));
    assert_eq!(rows_and_events(&app).await, before);
}

#[tokio::test]
async fn a_broadcast_reaches_the_organisation_sqlite() {
    a_broadcast_reaches_the_organisation(false).await;
}

#[tokio::test]
async fn a_broadcast_reaches_the_organisation_postgres() {
    a_broadcast_reaches_the_organisation(true).await;
}
