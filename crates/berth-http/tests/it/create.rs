//! Successful creates: the three 201 shapes, what each writes (row, secrets, events, token), name
//! auto-suffixing, and what background provisioning does afterwards.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Method, StatusCode, header};
use berth_domain::status::Transition;
use berth_provision::{BackendKind, MockProvisioner, ProvisionRequest, Started};
use berth_store::{EventFilter, StatusChange};
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};

use crate::helpers::{Setup, TestApp, admin, app, id_of, keys, pg_app, sorted};

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

/// Events of one workspace as `(type, payload)`.
async fn events_of(app: &TestApp, id: berth_domain::WorkspaceId) -> Vec<(String, Value)> {
    app.store
        .events(EventFilter {
            workspace_id: Some(id),
            ..EventFilter::default()
        })
        .await
        .expect("events")
        .into_iter()
        .map(|e| (e.event_type, e.payload))
        .collect()
}

#[tokio::test]
async fn container_create_answers_provisioning_with_access() {
    let app = app().await;
    let body = app
        .create_ok(json!({"name": "c", "model": "openai/gpt-4o"}))
        .await;
    let id = id_of(&body);
    assert_eq!(
        body,
        json!({"id": id.to_string(), "status": "provisioning", "workspace_access": "none"})
    );
    let body = app
        .create_ok(json!({
            "name": "d", "model": "openai/gpt-4o",
            "workspace_dir": "/home/u/project", "workspace_access": "read_only",
        }))
        .await;
    assert_eq!(
        body,
        json!({"id": body["id"], "status": "provisioning", "workspace_access": "read_only"})
    );
    let listed = app.listed(id_of(&body)).await;
    assert_eq!(listed["workspace_dir"], "/home/u/project");
    assert_eq!(listed["runtime"], "claude-code");
}

#[tokio::test]
async fn external_create_with_url_is_online_at_once() {
    let app = app().await;
    let body = app
        .create_ok(
            json!({"name": "e", "external": true, "url": "http://agent.example.com:9000/a2a"}),
        )
        .await;
    let id = id_of(&body);
    assert_eq!(
        body,
        json!({"id": id.to_string(), "external": true, "status": "online"})
    );
    let listed = app.listed(id).await;
    assert_eq!(listed["status"], "online");
    assert_eq!(listed["url"], "http://agent.example.com:9000/a2a");
    // berth: `external: true` without a runtime persists `external`, not claude-code (§12.1 #3).
    assert_eq!(listed["runtime"], "external");
    assert_eq!(
        events_of(&app, id).await,
        vec![
            (
                "WORKSPACE_PROVISIONING".to_owned(),
                json!({"name": "e", "tier": 3, "runtime": "external"})
            ),
            (
                "WORKSPACE_ONLINE".to_owned(),
                json!({"name": "e", "external": true})
            ),
        ]
    );
    // An external-like runtime without the flag takes the same branch; an IP literal needs no DNS.
    let body = app
        .create_ok(json!({"name": "k", "runtime": "kimi", "url": "http://93.184.216.34:8000"}))
        .await;
    assert_eq!(
        body,
        json!({"id": body["id"], "external": true, "status": "online"})
    );
    assert_eq!(app.listed(id_of(&body)).await["runtime"], "kimi");
}

#[tokio::test]
async fn external_create_without_url_shows_the_token_once() {
    let app = app().await;
    let req = admin(Method::POST, "/workspaces")
        .header(header::HOST, "berth.example:8443")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({"name": "Remote Agent", "runtime": "external"}).to_string(),
        ))
        .expect("request");
    let resp = app.send(req).await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text);
    let body = resp.json;
    let id = id_of(&body);
    assert_eq!(
        keys(&body),
        sorted(&["id", "external", "status", "connection"])
    );
    assert_eq!(body["external"], true);
    assert_eq!(body["status"], "awaiting_agent");
    let conn = &body["connection"];
    assert_eq!(keys(conn), sorted(CONNECTION_KEYS));
    assert_eq!(conn["workspace_id"], id.to_string());
    assert_eq!(conn["platform_url"], "http://berth.example:8443");
    assert_eq!(
        conn["registry_endpoint"],
        "http://berth.example:8443/registry/register"
    );
    assert_eq!(
        conn["heartbeat_endpoint"],
        "http://berth.example:8443/registry/heartbeat"
    );
    let token = conn["auth_token"].as_str().expect("token").to_owned();
    assert_eq!(token.len(), 43, "{token}");
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{token} is not base64url"
    );
    for key in CONNECTION_KEYS.iter().filter(|k| k.ends_with("_snippet")) {
        assert!(
            conn[*key].as_str().is_some_and(|s| !s.is_empty()),
            "{key} empty"
        );
    }

    // Stored as a hash only; never shown again.
    assert_eq!(app.db.count("workspace_auth_tokens").await, 1);
    let get = app.get_anon(&format!("/workspaces/{id}")).await;
    assert_eq!(get.status, StatusCode::OK);
    assert_eq!(get.json["status"], "awaiting_agent");
    assert!(!get.text.contains(&token), "GET shows the token");
    let list = app.get("/workspaces").await;
    assert!(!list.text.contains(&token), "list shows the token");
    assert!(!list.text.contains("auth_token"));

    assert_eq!(
        events_of(&app, id).await,
        vec![
            (
                "WORKSPACE_PROVISIONING".to_owned(),
                json!({"name": "Remote Agent", "tier": 3, "runtime": "external"})
            ),
            (
                "WORKSPACE_AWAITING_AGENT".to_owned(),
                json!({"name": "Remote Agent", "external": true})
            ),
        ]
    );
}

#[tokio::test]
async fn names_are_suffixed_up_to_twenty_one_then_conflict() {
    let app = app().await;
    for _ in 0..21 {
        app.create_ok(json!({"name": "n", "runtime": "external"}))
            .await;
    }
    let mut expected: Vec<String> = vec!["n".to_owned()];
    expected.extend((2..=21).map(|k| format!("n ({k})")));
    expected.sort();
    let names = |list: Vec<Value>| {
        let mut n: Vec<String> = list
            .iter()
            .map(|w| w["name"].as_str().expect("name").to_owned())
            .collect();
        n.sort();
        n
    };
    assert_eq!(names(app.list().await), expected);

    let resp = app
        .create(json!({"name": "n", "runtime": "external"}))
        .await;
    assert_eq!(resp.status, StatusCode::CONFLICT);
    assert_eq!(
        resp.json,
        json!({"error": "workspace name already in use; please pick a different name"})
    );
    assert_eq!(app.db.count("workspaces").await, 21);
    assert_eq!(names(app.list().await), expected);

    // Other names, and other parents, are separate buckets.
    let parent = app
        .create_id(json!({"name": "other", "runtime": "external"}))
        .await;
    let child = app
        .create_id(json!({"name": "n", "runtime": "external", "parent_id": parent.to_string()}))
        .await;
    let child = app.listed(child).await;
    assert_eq!(child["name"], "n");
    assert_eq!(child["parent_id"], parent.to_string());
}

#[tokio::test]
async fn a_removed_workspace_frees_its_name() {
    let app = app().await;
    let first = app
        .create_id(json!({"name": "same", "runtime": "external"}))
        .await;
    let second = app
        .create_id(json!({"name": "same", "runtime": "external"}))
        .await;
    assert_eq!(app.listed(second).await["name"], "same (2)");
    let removed = StatusChange::new(Transition::Removed);
    assert!(app.store.transition(first, removed).await.expect("remove"));
    let third = app
        .create_id(json!({"name": "same", "runtime": "external"}))
        .await;
    assert_eq!(app.listed(third).await["name"], "same");
}

#[tokio::test]
async fn secrets_are_stored_encrypted_with_model_and_provider() {
    let app = app().await;
    let plaintext = "sk-xyz-0123456789abcdef-very-secret";
    let id = app
        .create_id(json!({
            "name": "s",
            "model": "openai/gpt-4o",
            "secrets": {"API_KEY": plaintext, "MODEL": "from-the-request"},
        }))
        .await;
    let secrets: Vec<(String, String)> = app
        .store
        .workspace_secrets(id)
        .await
        .expect("secrets")
        .into_iter()
        .map(|(k, v)| (k, v.expose_secret().to_owned()))
        .collect();
    assert_eq!(
        secrets,
        vec![
            ("API_KEY".to_owned(), plaintext.to_owned()),
            ("LLM_PROVIDER".to_owned(), "openrouter".to_owned()),
            ("MODEL".to_owned(), "openai/gpt-4o".to_owned()),
        ]
    );
    let blobs = app.db.raw_secret_blobs().await;
    assert_eq!(blobs.len(), 3);
    for blob in blobs {
        assert!(
            !blob
                .windows(plaintext.len())
                .any(|w| w == plaintext.as_bytes()),
            "a secret is stored in plaintext"
        );
        assert!(!blob.windows(6).any(|w| w == b"openai"));
    }
}

async fn without_a_backend_a_container_create_ends_failed(app: TestApp) {
    let id = app
        .create_id(json!({"name": "nb", "model": "openai/gpt-4o"}))
        .await;
    app.service.drain().await;
    let listed = app.listed(id).await;
    assert_eq!(listed["status"], "failed");
    assert_eq!(listed["failure_code"], "NO_BACKEND");
    let error = listed["last_sample_error"].as_str().expect("error text");
    assert!(
        error.starts_with("no provisioning backend available"),
        "{error}"
    );
    let events = events_of(&app, id).await;
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        ["WORKSPACE_PROVISIONING", "WORKSPACE_PROVISION_FAILED"]
    );
    assert_eq!(events[1].1["code"], "NO_BACKEND");
    assert_eq!(
        app.store.workspace_config(id).await.expect("config"),
        Some(json!({"name": "nb", "runtime": "claude-code", "tier": 3, "template": ""}))
    );
}

#[tokio::test]
async fn without_a_backend_a_container_create_ends_failed_sqlite() {
    without_a_backend_a_container_create_ends_failed(app().await).await;
}

#[tokio::test]
async fn without_a_backend_a_container_create_ends_failed_postgres() {
    without_a_backend_a_container_create_ends_failed(pg_app().await).await;
}

#[tokio::test]
async fn a_template_supplies_runtime_model_and_provision_timeout() {
    let app = app().await;
    let echo = app
        .create_id(json!({"name": "ec", "template": "echo", "tier": 2}))
        .await;
    let plain = app
        .create_id(json!({"name": "cc", "model": "openai/gpt-4o"}))
        .await;
    app.service.drain().await;
    let listed = app.listed(echo).await;
    assert_eq!(listed["runtime"], "echo");
    assert_eq!(listed["provision_timeout_ms"], 60000);
    assert!(
        app.listed(plain)
            .await
            .as_object()
            .expect("object")
            .get("provision_timeout_ms")
            .is_none()
    );
    let get = app.get_anon(&format!("/workspaces/{echo}")).await;
    assert_eq!(get.json["provision_timeout_ms"], 60000);
    assert_eq!(
        app.store.workspace_config(echo).await.expect("config"),
        Some(json!({"name": "ec", "runtime": "echo", "tier": 2, "template": "echo"}))
    );
    let secrets = app.store.workspace_secrets(echo).await.expect("secrets");
    let model = secrets
        .iter()
        .find(|(k, _)| k == "MODEL")
        .map(|(_, v)| v.expose_secret().to_owned());
    assert_eq!(model.as_deref(), Some("echo/echo-1"));
}

#[tokio::test]
async fn the_provisioner_gets_the_plan_and_the_row_stays_provisioning() {
    let seen: Arc<Mutex<Vec<ProvisionRequest>>> = Arc::default();
    let mut mock = MockProvisioner::new();
    mock.expect_kind().return_const(BackendKind::Docker);
    let record = seen.clone();
    mock.expect_start().times(1).returning(move |req| {
        record.lock().expect("lock").push(req);
        Ok(Started {
            url: None,
            instance_id: Some("i-1".into()),
        })
    });
    let app = Setup {
        provisioner: Arc::new(mock),
        ..Setup::default()
    }
    .start()
    .await;
    let id = app
        .create_id(json!({"name": "pv", "template": "echo", "role": "builder"}))
        .await;
    app.service.drain().await;
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 1);
    let req = &seen[0];
    assert_eq!(req.workspace_id, id);
    assert_eq!(req.name, "pv");
    assert_eq!(req.runtime, "echo");
    assert_eq!(req.tier, 3);
    assert_eq!(req.platform_url, "http://127.0.0.1:8080");
    assert_eq!(req.workspace_access, "none");
    let template = req.template_path.as_ref().expect("template path");
    assert!(
        template.ends_with("templates/echo"),
        "{}",
        template.display()
    );
    assert!(req.config_files.is_empty());
    let listed = app.listed(id).await;
    assert_eq!(listed["status"], "provisioning");
    assert_eq!(listed["failure_code"], Value::Null);
}

#[tokio::test]
async fn a_panicking_provisioner_still_fails_the_workspace() {
    let mut mock = MockProvisioner::new();
    mock.expect_kind().return_const(BackendKind::Docker);
    mock.expect_start()
        .returning(|_| panic!("backend exploded"));
    let app = Setup {
        provisioner: Arc::new(mock),
        ..Setup::default()
    }
    .start()
    .await;
    let id = app
        .create_id(json!({"name": "boom", "model": "openai/gpt-4o"}))
        .await;
    app.service.drain().await;
    let listed = app.listed(id).await;
    assert_eq!(listed["status"], "failed");
    assert_eq!(listed["failure_code"], "START_FAILED");
    let error = listed["last_sample_error"].as_str().expect("error text");
    assert!(error.ends_with("backend exploded"), "{error}");
    // Only the no-backend path writes workspace_config.
    assert_eq!(app.store.workspace_config(id).await.expect("config"), None);
}

#[tokio::test]
async fn a_provisioner_error_keeps_its_code() {
    let mut mock = MockProvisioner::new();
    mock.expect_kind().return_const(BackendKind::Docker);
    mock.expect_start()
        .returning(|req| Err(berth_provision::Error::ImageNotFound(req.runtime)));
    let app = Setup {
        provisioner: Arc::new(mock),
        ..Setup::default()
    }
    .start()
    .await;
    let id = app
        .create_id(json!({"name": "img", "runtime": "hermes", "model": "openai/gpt-4o"}))
        .await;
    app.service.drain().await;
    let listed = app.listed(id).await;
    assert_eq!(listed["status"], "failed");
    assert_eq!(listed["failure_code"], "IMAGE_NOT_FOUND");
    assert_eq!(
        listed["last_sample_error"],
        "no image for runtime \"hermes\""
    );
}

#[tokio::test]
async fn create_stores_the_request_fields() {
    let app = app().await;
    let id = app
        .create_id(json!({
            "name": "full",
            "role": "",
            "model": "anthropic/claude-sonnet",
            "runtime": "codex",
            "tier": 1,
            "max_concurrent_tasks": 0,
            "budget_limit": 1234,
            "canvas": {"x": 10.5, "y": -3.25},
            "compute": {"instance_type": "t3.large", "volume": {"root_gb": 0}, "display": {"mode": ""}},
            "delivery_mode": "poll",
            "parent_id": null,
            "initial_memories": [{"content": "hello", "scope": "LOCAL"}],
            "unknown_field": "ignored",
        }))
        .await;
    let listed = app.listed(id).await;
    assert_eq!(listed["role"], Value::Null, "empty role is stored as NULL");
    assert_eq!(listed["runtime"], "codex");
    assert_eq!(listed["tier"], 1);
    assert_eq!(listed["max_concurrent_tasks"], 1);
    assert_eq!(listed["budget_limit"], 1234);
    assert_eq!(listed["x"], 10.5);
    assert_eq!(listed["y"], -3.25);
    assert_eq!(listed["compute"], json!({"instance_type": "t3.large"}));
    assert_eq!(listed["parent_id"], Value::Null);
}

/// BUG (fails today): REFERENCE.md §2.1 step 14 checks `url` for every create but ignores it for
/// container workspaces (step 18 does not insert it; only the external branch stores it). berth
/// stores the client's URL on a container row, so List/Get show it and routing could use it.
#[tokio::test]
async fn a_container_create_ignores_the_url() {
    let app = app().await;
    let id = app
        .create_id(
            json!({"name": "c", "model": "openai/gpt-4o", "url": "http://agent.example.com/a2a"}),
        )
        .await;
    assert_eq!(app.listed(id).await["url"], "");
    let get = app.get_anon(&format!("/workspaces/{id}")).await;
    assert_eq!(get.json["url"], "");
}

/// BUG (fails today): concurrent creates with one name must all succeed with ` (2)` … suffixes
/// (REFERENCE.md §3.5 retries on the unique violation up to 21 names). berth picks a name from a
/// read outside the transaction and retries a lost race only `NAME_RACE_RETRIES` (3) times
/// (crates/berth-core/src/create.rs), so most of 20 concurrent creates get a false 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_with_one_name_all_get_a_name() {
    let app = app().await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let router = app.router.clone();
        let req = crate::helpers::create_request(&json!({"name": "c", "runtime": "external"}));
        tasks.push(tokio::spawn(async move {
            crate::helpers::send(&router, req).await
        }));
    }
    let mut refused = Vec::new();
    for task in tasks {
        let resp = task.await.expect("request task");
        if resp.status != StatusCode::CREATED {
            refused.push((resp.status, resp.text));
        }
    }
    assert_eq!(
        refused,
        vec![],
        "creates refused although free names remain"
    );
    let mut names: Vec<String> = app
        .list()
        .await
        .iter()
        .map(|w| w["name"].as_str().expect("name").to_owned())
        .collect();
    names.sort();
    let mut expected: Vec<String> = vec!["c".to_owned()];
    expected.extend((2..=20).map(|k| format!("c ({k})")));
    expected.sort();
    assert_eq!(names, expected);
}
