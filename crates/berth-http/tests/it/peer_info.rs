//! `GET /workspaces/{id}/activity?include=peer_info` (REFERENCE-2.md §2.5) on SQLite and
//! PostgreSQL: sender name and role, the agent card URL, attachments, and nothing extra without
//! the flag or for rows without a sender.

use berth_core::ActivityEntry;
use serde_json::{Value, json};

use crate::helpers::Setup;

async fn rows_carry_their_peer(postgres: bool) {
    let app = Setup {
        postgres,
        ..Setup::default()
    }
    .start()
    .await;
    let (target, _) = app.container("Target").await;
    let sender = app
        .create_id(json!({"name": "Sender", "role": "researcher", "model": "openai/gpt-4o"}))
        .await;
    app.service.drain().await;
    let log = |entry: ActivityEntry| {
        let svc = app.service.clone();
        async move {
            svc.log_activity(target, entry, Vec::new())
                .await
                .expect("log")
        }
    };
    let envelope = json!({"params": {"message": {"parts": [
        {"kind": "text", "text": "see attached"},
        {"kind": "file", "file": {"uri": "https://files.example/r.pdf", "mime_type": "application/pdf", "name": "r.pdf"}},
    ]}}});
    log(ActivityEntry {
        activity_type: "a2a_receive".into(),
        source_id: Some(sender.into()),
        method: Some("message/send".into()),
        request_body: Some(envelope),
        ..ActivityEntry::default()
    })
    .await;
    log(ActivityEntry {
        activity_type: "agent_log".into(),
        ..ActivityEntry::default()
    })
    .await;

    let uri = format!("/workspaces/{target}/activity");
    let plain = app.get(&uri).await;
    assert_eq!(plain.status, 200, "{}", plain.text);
    for row in plain.json.as_array().expect("array") {
        for key in ["peer_name", "peer_role", "agent_card_url", "attachments"] {
            assert!(row.get(key).is_none(), "{key} without include: {row}");
        }
    }

    let resp = app
        .send(
            crate::helpers::admin(
                axum::http::Method::GET,
                &format!("{uri}?include=%20peer_info"),
            )
            .header("host", "berth.example:8080")
            .body(axum::body::Body::empty())
            .unwrap(),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let rows = resp.json.as_array().expect("array").clone();
    assert_eq!(rows.len(), 2);
    // Newest first: the sender-less row has no peer keys.
    let (own, received) = (&rows[0], &rows[1]);
    assert_eq!(own["activity_type"], "agent_log");
    for key in ["peer_name", "peer_role", "agent_card_url", "attachments"] {
        assert_eq!(own.get(key), None, "{key}: {own}");
    }
    assert_eq!(received["peer_name"], "Sender");
    assert_eq!(received["peer_role"], "researcher");
    assert_eq!(
        received["agent_card_url"],
        Value::from(format!(
            "http://berth.example:8080/registry/discover/{sender}"
        ))
    );
    assert_eq!(
        received["attachments"],
        json!([{"kind": "file", "uri": "https://files.example/r.pdf", "mime_type": "application/pdf", "name": "r.pdf"}])
    );
}

#[tokio::test]
async fn rows_carry_their_peer_sqlite() {
    rows_carry_their_peer(false).await;
}

#[tokio::test]
async fn rows_carry_their_peer_postgres() {
    rows_carry_their_peer(true).await;
}
