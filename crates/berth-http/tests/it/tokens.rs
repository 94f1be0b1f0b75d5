//! Workspace tokens (REFERENCE.md §2.16) and external credentials (§2.15).

use axum::http::{Method, StatusCode};
use berth_domain::status::Transition;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, Setup, TestApp, app, err, keys, pg_app, sorted};

const MINT_MESSAGE: &str = "Save this token now — it cannot be retrieved again.";

fn tokens_uri(id: impl std::fmt::Display) -> String {
    format!("/workspaces/{id}/tokens")
}

/// The listed tokens of `id` as the admin sees them.
async fn listed(app: &TestApp, id: impl std::fmt::Display) -> Value {
    let resp = app
        .call(Method::GET, &tokens_uri(id), Some(ADMIN_TOKEN))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    resp.json
}

async fn token_lifecycle(app: TestApp) {
    let (id, first) = app
        .external(json!({"name": "t", "runtime": "external"}))
        .await;

    // Mint with the workspace's own token.
    let resp = app.call(Method::POST, &tokens_uri(id), Some(&first)).await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text);
    assert_eq!(
        keys(&resp.json),
        sorted(&["auth_token", "message", "workspace_id"])
    );
    assert_eq!(resp.json["message"], MINT_MESSAGE);
    assert_eq!(resp.json["workspace_id"], id.to_string());
    let second = resp.json["auth_token"].as_str().expect("token").to_owned();
    assert_ne!(second, first);
    // The new token authenticates.
    app.heartbeat_ok(id, &second, json!({})).await;

    // List, newest first, without plaintext or hash.
    let resp = app.call(Method::GET, &tokens_uri(id), Some(&second)).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(keys(&resp.json), sorted(&["count", "tokens"]));
    assert_eq!(resp.json["count"], 2);
    let tokens = resp.json["tokens"].as_array().expect("tokens").clone();
    assert_eq!(tokens.len(), 2);
    for t in &tokens {
        assert_eq!(
            keys(t),
            sorted(&["created_at", "id", "last_used_at", "prefix"])
        );
        let text = t.to_string();
        assert!(!text.contains(&first) && !text.contains(&second), "{text}");
    }
    assert_eq!(tokens[0]["prefix"], second[..8]);
    assert_eq!(tokens[1]["prefix"], first[..8]);
    assert!(tokens[0]["created_at"].as_str() >= tokens[1]["created_at"].as_str());

    // Revoke the first; it stops working; revoking again is a 404.
    let first_id = tokens[1]["id"].as_str().expect("id").to_owned();
    let uri = format!("{}/{first_id}", tokens_uri(id));
    let resp = app.call(Method::DELETE, &uri, Some(&second)).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.json, json!({"status": "revoked"}));
    let resp = app.heartbeat(id, Some(&first), json!({})).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    let resp = app.call(Method::DELETE, &uri, Some(&second)).await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND);
    assert_eq!(resp.json, err("token not found or already revoked"));
    for bad in ["not-a-uuid", &uuid::Uuid::new_v4().to_string()] {
        let resp = app
            .call(
                Method::DELETE,
                &format!("{}/{bad}", tokens_uri(id)),
                Some(&second),
            )
            .await;
        assert_eq!(resp.status, StatusCode::NOT_FOUND, "{bad}");
        assert_eq!(resp.json, err("token not found or already revoked"));
    }
    assert_eq!(listed(&app, id).await["count"], 1);
}

#[tokio::test]
async fn token_lifecycle_sqlite() {
    token_lifecycle(app().await).await;
}

#[tokio::test]
async fn token_lifecycle_postgres() {
    token_lifecycle(pg_app().await).await;
}

#[tokio::test]
async fn list_paging_is_validated() {
    let app = app().await;
    let (id, token) = app
        .external(json!({"name": "p", "runtime": "external"}))
        .await;
    app.call(Method::POST, &tokens_uri(id), Some(&token)).await;
    for (query, message) in [
        ("limit=0", "invalid limit"),
        ("limit=201", "invalid limit"),
        ("limit=x", "invalid limit"),
        ("offset=-1", "invalid offset"),
        ("offset=x", "invalid offset"),
    ] {
        let resp = app
            .call(
                Method::GET,
                &format!("{}?{query}", tokens_uri(id)),
                Some(&token),
            )
            .await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(resp.json, err(message), "{query}");
    }
    let resp = app
        .call(
            Method::GET,
            &format!("{}?limit=1", tokens_uri(id)),
            Some(&token),
        )
        .await;
    assert_eq!(resp.json["count"], 1);
    let newest = resp.json["tokens"][0]["id"].clone();
    let resp = app
        .call(
            Method::GET,
            &format!("{}?limit=1&offset=1", tokens_uri(id)),
            Some(&token),
        )
        .await;
    assert_eq!(resp.json["count"], 1);
    assert_ne!(resp.json["tokens"][0]["id"], newest);
    let resp = app
        .call(
            Method::GET,
            &format!("{}?offset=2", tokens_uri(id)),
            Some(&token),
        )
        .await;
    assert_eq!(resp.json, json!({"tokens": [], "count": 0}));
}

#[tokio::test]
async fn the_fifty_first_live_token_is_refused() {
    let app = app().await;
    let (id, token) = app
        .external(json!({"name": "cap", "runtime": "external"}))
        .await;
    // The create's token is the first; 49 more make 50.
    for i in 0..49 {
        let resp = app.call(Method::POST, &tokens_uri(id), Some(&token)).await;
        assert_eq!(resp.status, StatusCode::CREATED, "mint {i}: {}", resp.text);
    }
    let expected = err("maximum 50 active tokens per workspace");
    let resp = app.call(Method::POST, &tokens_uri(id), Some(&token)).await;
    assert_eq!(resp.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.json, expected);
    let resp = app
        .call(
            Method::POST,
            &format!("/admin/workspaces/{id}/tokens"),
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(resp.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.json, expected);
    assert_eq!(app.db.count("workspace_auth_tokens").await, 50);
    assert_eq!(listed(&app, id).await["count"], 50);

    // Revoking one frees a slot.
    let some = listed(&app, id).await["tokens"][3]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let resp = app
        .call(
            Method::DELETE,
            &format!("{}/{some}", tokens_uri(id)),
            Some(&token),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK);
    let resp = app.call(Method::POST, &tokens_uri(id), Some(&token)).await;
    assert_eq!(resp.status, StatusCode::CREATED);
}

#[tokio::test]
async fn workspace_token_routes_need_that_workspaces_token() {
    let app = app().await;
    let (a, token_a) = app
        .external(json!({"name": "a", "runtime": "external"}))
        .await;
    let (b, _) = app
        .external(json!({"name": "b", "runtime": "external"}))
        .await;
    for method in [Method::GET, Method::POST] {
        let resp = app
            .call(method.clone(), &tokens_uri(b), Some(&token_a))
            .await;
        assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{method}");
        assert_eq!(resp.json, err("invalid workspace auth token"));
        let resp = app.call(method.clone(), &tokens_uri(b), None).await;
        assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{method}");
        assert_eq!(resp.json, err("missing workspace auth token"));
        let resp = app
            .call(method.clone(), &tokens_uri("nope"), Some(&token_a))
            .await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{method}");
        assert_eq!(resp.json, err("invalid workspace id"));
    }
    // A's token cannot revoke B's token either.
    let b_token = listed(&app, b).await["tokens"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let resp = app
        .call(
            Method::DELETE,
            &format!("{}/{b_token}", tokens_uri(b)),
            Some(&token_a),
        )
        .await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    // … nor through its own path.
    let resp = app
        .call(
            Method::DELETE,
            &format!("{}/{b_token}", tokens_uri(a)),
            Some(&token_a),
        )
        .await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND);
    assert_eq!(resp.json, err("token not found or already revoked"));
    assert_eq!(listed(&app, b).await["count"], 1);
    assert_eq!(listed(&app, a).await["count"], 1);
}

#[tokio::test]
async fn admin_mint() {
    let app = app().await;
    let (id, token) = app
        .external(json!({"name": "adm", "runtime": "external"}))
        .await;
    let uri = format!("/admin/workspaces/{id}/tokens");
    let resp = app.call(Method::POST, &uri, None).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert_eq!(resp.json, err("admin auth required"));
    let resp = app.call(Method::POST, &uri, Some(&token)).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert_eq!(resp.json, err("invalid admin auth token"));

    let resp = app.call(Method::POST, &uri, Some(ADMIN_TOKEN)).await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text);
    assert_eq!(
        keys(&resp.json),
        sorted(&["auth_token", "message", "workspace_id"])
    );
    assert_eq!(resp.json["message"], MINT_MESSAGE);
    assert_eq!(resp.json["workspace_id"], id.to_string());
    let minted = resp.json["auth_token"].as_str().expect("token");
    app.heartbeat_ok(id, minted, json!({})).await;

    let resp = app
        .call(
            Method::POST,
            "/admin/workspaces/nope/tokens",
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert_eq!(resp.json, err("invalid workspace id"));
    let unknown = uuid::Uuid::new_v4();
    let resp = app
        .call(
            Method::POST,
            &format!("/admin/workspaces/{unknown}/tokens"),
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND);
    assert_eq!(resp.json, err("workspace not found"));
    assert_eq!(app.db.count("workspace_auth_tokens").await, 2);

    app.force(id, &[Transition::Removed]).await;
    let resp = app.call(Method::POST, &uri, Some(ADMIN_TOKEN)).await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND, "{}", resp.text);
    assert_eq!(resp.json, err("workspace not found"));
}

#[tokio::test]
async fn test_token_exists_only_in_dev_mode() {
    let app = app().await;
    let (id, _) = app
        .external(json!({"name": "tt", "runtime": "external"}))
        .await;
    for bearer in [None, Some(ADMIN_TOKEN)] {
        let resp = app
            .call(
                Method::GET,
                &format!("/admin/workspaces/{id}/test-token"),
                bearer,
            )
            .await;
        assert_eq!(resp.status, StatusCode::NOT_FOUND, "{bearer:?}");
        assert_eq!(resp.json, err("not found"));
    }
    assert_eq!(app.db.count("workspace_auth_tokens").await, 1);

    let app = Setup {
        dev: true,
        ..Setup::default()
    }
    .start()
    .await;
    let (id, _) = app
        .external(json!({"name": "tt", "runtime": "external"}))
        .await;
    let resp = app
        .call(
            Method::GET,
            &format!("/admin/workspaces/{id}/test-token"),
            None,
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(keys(&resp.json), sorted(&["auth_token", "workspace_id"]));
    assert_eq!(resp.json["workspace_id"], id.to_string());
    let token = resp.json["auth_token"].as_str().expect("token");
    app.heartbeat_ok(id, token, json!({})).await;
    let resp = app
        .call(Method::GET, "/admin/workspaces/nope/test-token", None)
        .await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert_eq!(resp.json, err("invalid workspace id"));
    let resp = app
        .call(
            Method::GET,
            &format!("/admin/workspaces/{}/test-token", uuid::Uuid::new_v4()),
            None,
        )
        .await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND);
    assert_eq!(resp.json, err("workspace not found"));
}

#[tokio::test]
async fn last_used_at_is_set_by_a_use() {
    let app = app().await;
    let (id, token) = app
        .external(json!({"name": "used", "runtime": "external"}))
        .await;
    let before = listed(&app, id).await;
    assert_eq!(before["tokens"][0]["last_used_at"], Value::Null);
    app.heartbeat_ok(id, &token, json!({})).await;
    let after = listed(&app, id).await;
    let used = after["tokens"][0]["last_used_at"]
        .as_str()
        .expect("set after use");
    let created = after["tokens"][0]["created_at"].as_str().expect("created");
    assert!(used >= created, "{used} < {created}");
}

/// The 13 keys of the external connection payload (REFERENCE.md §9).
const CONNECTION_KEYS: &[&str] = &[
    "workspace_id",
    "platform_url",
    "auth_token",
    "registry_endpoint",
    "heartbeat_endpoint",
    "curl_register_template",
    "python_snippet",
    "claude_code_channel_snippet",
    "universal_mcp_snippet",
    "hermes_channel_snippet",
    "codex_snippet",
    "openclaw_snippet",
    "kimi_snippet",
];

#[tokio::test]
async fn rotate_replaces_every_token() {
    let app = app().await;
    let (id, old) = app
        .external(json!({"name": "rot", "runtime": "external"}))
        .await;
    let extra = app.admin_mint(id).await;
    let uri = format!("/workspaces/{id}/external/rotate");
    let resp = app.call(Method::POST, &uri, None).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert_eq!(resp.json, err("missing workspace auth token"));

    let resp = app.call(Method::POST, &uri, Some(&old)).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(keys(&resp.json), sorted(&["connection"]));
    let connection = &resp.json["connection"];
    assert_eq!(keys(connection), sorted(CONNECTION_KEYS));
    assert_eq!(connection["workspace_id"], id.to_string());
    let new = connection["auth_token"].as_str().expect("token").to_owned();
    assert!(!new.is_empty() && new != old && new != extra);

    for gone in [&old, &extra] {
        let resp = app.heartbeat(id, Some(gone), json!({})).await;
        assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
        assert_eq!(resp.json, err("invalid workspace auth token"));
    }
    let resp = app.register(id, Some(&new), Some("poll")).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(listed(&app, id).await["count"], 1);
    assert_eq!(
        app.events_named(id, "EXTERNAL_CREDENTIALS_ROTATED").await,
        vec![json!({"workspace_id": id.to_string()})]
    );

    // The admin may rotate too.
    let resp = app.call(Method::POST, &uri, Some(ADMIN_TOKEN)).await;
    assert_eq!(resp.status, StatusCode::OK);
    let resp = app.heartbeat(id, Some(&new), json!({})).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn connection_has_no_token() {
    let app = app().await;
    let (id, token) = app
        .external(json!({"name": "conn", "runtime": "kimi"}))
        .await;
    let uri = format!("/workspaces/{id}/external/connection");
    for bearer in [token.as_str(), ADMIN_TOKEN] {
        let resp = app.call(Method::GET, &uri, Some(bearer)).await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
        assert_eq!(keys(&resp.json), sorted(&["connection"]));
        assert_eq!(keys(&resp.json["connection"]), sorted(CONNECTION_KEYS));
        assert_eq!(resp.json["connection"]["auth_token"], "");
        assert_eq!(resp.json["connection"]["workspace_id"], id.to_string());
        assert!(!resp.text.contains(&token));
    }
    // Reading the connection revokes nothing.
    app.heartbeat_ok(id, &token, json!({})).await;
    assert!(
        app.events_named(id, "EXTERNAL_CREDENTIALS_ROTATED")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn rotate_and_connection_refuse_container_workspaces() {
    let app = app().await;
    let id = app
        .create_id(json!({"name": "box", "model": "openai/gpt-4o"}))
        .await;
    let resp = app
        .call(
            Method::POST,
            &format!("/workspaces/{id}/external/rotate"),
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        resp.json,
        json!({
            "error": "rotate is only valid for external/BYO-compute workspaces",
            "runtime": "claude-code",
            "hint": "use POST /workspaces/:id/restart for container-backed runtimes",
        })
    );
    let resp = app
        .call(
            Method::GET,
            &format!("/workspaces/{id}/external/connection"),
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        resp.json,
        json!({
            "error": "connection payload is only valid for external/BYO-compute workspaces",
            "runtime": "claude-code",
        })
    );
    assert!(
        app.events_named(id, "EXTERNAL_CREDENTIALS_ROTATED")
            .await
            .is_empty()
    );

    // Unknown and removed workspaces are 404.
    let unknown = uuid::Uuid::new_v4();
    for path in ["external/rotate", "external/connection"] {
        let method = if path.ends_with("rotate") {
            Method::POST
        } else {
            Method::GET
        };
        let resp = app
            .call(
                method,
                &format!("/workspaces/{unknown}/{path}"),
                Some(ADMIN_TOKEN),
            )
            .await;
        assert_eq!(resp.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(resp.json, err("workspace not found"));
    }
    let (ext, _) = app
        .external(json!({"name": "ext", "runtime": "external"}))
        .await;
    app.force(ext, &[Transition::Removed]).await;
    let resp = app
        .call(
            Method::POST,
            &format!("/workspaces/{ext}/external/rotate"),
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND);
    assert_eq!(resp.json, err("workspace not found"));
}
