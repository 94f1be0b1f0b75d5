//! `GET /bundles/export/{id}` and `POST /bundles/import` (REFERENCE-2.md §3, fixes of §9.3):
//! a bundle exported from one server and imported into a fresh one (its own database and its
//! own process provisioner) is the same workspace, provisioned like a created one; bad bundles
//! are refused before anything is written. Each flow runs on SQLite and on PostgreSQL.

use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, StatusCode, header};
use berth_domain::WorkspaceId;
use berth_provision::{ProcessConfig, ProcessProvisioner, Provisioner as _};
use serde_json::{Value, json};

use crate::helpers::{CREATE_TABLES, Recorder, Resp, Setup, TestApp, admin};

/// Tables an import may write to (Create's, plus the bundle's files).
fn tables() -> Vec<&'static str> {
    let mut t = CREATE_TABLES.to_vec();
    t.push("workspace_files");
    t
}

/// A process provisioner whose `echo` runtime is a shell that just stays up.
fn process(root: &Path) -> Arc<ProcessProvisioner> {
    Arc::new(ProcessProvisioner::new(
        ProcessConfig::new(root).with_command("echo", ["/bin/sh", "-c", "exec sleep 300"]),
    ))
}

async fn server(postgres: bool, provisioner: Arc<dyn berth_provision::Provisioner>) -> TestApp {
    Setup {
        postgres,
        provisioner,
        ..Setup::default()
    }
    .start()
    .await
}

fn import_request(body: impl Into<Body>) -> axum::http::Request<Body> {
    admin(Method::POST, "/bundles/import")
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .expect("request")
}

async fn import(app: &TestApp, bundle: &Value) -> Resp {
    app.send(import_request(bundle.to_string())).await
}

async fn export(app: &TestApp, id: impl std::fmt::Display) -> Resp {
    app.get(&format!("/bundles/export/{id}")).await
}

/// Row counts of every table an import writes to.
async fn counts(app: &TestApp) -> Vec<(&'static str, i64)> {
    let mut out = Vec::new();
    for t in tables() {
        out.push((t, app.db.count(t).await));
    }
    out
}

const SYSTEM_PROMPT: &str = "  You echo.\n\nKeep the spacing.  \n";
const SKILL_MD: &str = "---\nname: web\n---\n# Web\n\nFetches pages.\n";
const ECHO_MANIFEST: &str = "name: Echo\nruntime: echo\nruntime_config:\n  model: echo/echo-1\n  provision_timeout_seconds: 60\n";

/// Puts a system prompt and a skill into the `echo` template of `app`.
fn enrich_echo_template(app: &TestApp) {
    let dir = app.service.templates().root().join("echo");
    std::fs::write(dir.join("system-prompt.md"), SYSTEM_PROMPT).expect("prompt");
    std::fs::create_dir_all(dir.join("skills/web/tools")).expect("skill dir");
    std::fs::write(dir.join("skills/web/SKILL.md"), SKILL_MD).expect("skill");
    std::fs::write(dir.join("skills/web/tools/fetch.py"), "print('hi')\n").expect("tool");
}

async fn a_bundle_round_trips_into_a_fresh_server(postgres: bool) {
    // Server A: a workspace from the `echo` template, whose agent registered a card.
    let root_a = tempfile::tempdir().expect("tempdir");
    let prov_a = process(root_a.path());
    let a = server(postgres, prov_a.clone()).await;
    enrich_echo_template(&a);
    let id = a
        .create_id(json!({"name": "Echo", "template": "echo", "tier": 2, "role": "greeter"}))
        .await;
    a.service.drain().await;
    let token = a.admin_mint(id).await;
    let card =
        json!({"name": "Echo", "skills": [{"id": "echo", "name": "Echo"}], "version": "2.1"});
    let resp = a
        .post(
            "/registry/update-card",
            Some(&token),
            &json!({"workspace_id": id.to_string(), "agent_card": card}),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "update-card: {}", resp.text);

    let resp = export(&a, id).await;
    assert_eq!(resp.status, StatusCode::OK, "export: {}", resp.text);
    let bundle = resp.json;
    assert_eq!(bundle["schema"], "1.0");
    assert_eq!(bundle["id"], id.to_string());
    assert_eq!(bundle["name"], "Echo");
    assert_eq!(bundle["description"], "greeter");
    assert_eq!(bundle["tier"], 2);
    assert_eq!(bundle["runtime"], "echo");
    assert_eq!(bundle["model"], "echo/echo-1");
    assert_eq!(bundle["agent_card"], card);
    assert_eq!(bundle["system_prompt"], SYSTEM_PROMPT, "not trimmed");
    assert_eq!(bundle["prompts"], json!({"config.yaml": ECHO_MANIFEST}));
    assert_eq!(
        bundle["skills"],
        json!([{"id": "web", "name": "web", "description": "Fetches pages.",
                "files": {"SKILL.md": SKILL_MD, "tools/fetch.py": "print('hi')\n"}}])
    );
    assert_eq!(bundle["tools"], json!([]));
    assert_eq!(bundle["sub_workspaces"], json!([]));
    assert_eq!(bundle["author"], "");
    assert_eq!(bundle["version"], "1.0.0");

    // Server B: its own database, its own provisioner, the same templates.
    let root_b = tempfile::tempdir().expect("tempdir");
    let prov_b = process(root_b.path());
    let b = server(postgres, prov_b.clone()).await;
    let resp = import(&b, &bundle).await;
    assert_eq!(resp.status, StatusCode::CREATED, "import: {}", resp.text);
    assert_eq!(resp.json["name"], "Echo");
    assert_eq!(resp.json["status"], "provisioning");
    let new = WorkspaceId::parse(resp.json["workspace_id"].as_str().expect("workspace_id"))
        .expect("uuid");
    assert_ne!(new, id);
    b.service.drain().await;

    let row = b.row(new).await;
    assert_eq!(row.name, "Echo");
    assert_eq!(row.tier, 2);
    assert_eq!(row.runtime, "echo");
    assert_eq!(row.role.as_deref(), Some("greeter"));
    assert_eq!(row.agent_card, Some(card.clone()));
    assert_eq!(b.listed(new).await["agent_card"], card);
    let secrets = b.store.workspace_secrets(new).await.expect("secrets");
    let model = secrets.iter().find(|(k, _)| k == "MODEL").expect("MODEL");
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(&model.1),
        "echo/echo-1"
    );

    // Provisioned like any created workspace: the agent runs, with a token and the bundle's
    // files in its configs directory, and the row records where it listens.
    assert!(prov_b.is_running(new).await.expect("is_running"));
    assert!(row.url.is_some(), "the provisioner's URL is recorded");
    let configs = prov_b.workspace_root(new).join("configs");
    let read =
        |p: &str| std::fs::read_to_string(configs.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    assert_eq!(read("system-prompt.md"), SYSTEM_PROMPT);
    assert_eq!(read("config.yaml"), ECHO_MANIFEST);
    assert_eq!(read("skills/web/SKILL.md"), SKILL_MD);
    assert_eq!(read("skills/web/tools/fetch.py"), "print('hi')\n");
    assert!(
        !read(".auth_token").is_empty(),
        "a workspace token was minted"
    );
    let provisioning = b.events_named(new, "WORKSPACE_PROVISIONING").await;
    assert_eq!(provisioning.len(), 1, "{provisioning:?}");
    assert_eq!(provisioning[0]["source_bundle_id"], id.to_string());
    assert_eq!(provisioning[0]["runtime"], "echo");

    // Re-exporting from B gives the same bundle (new id; everything else equal).
    let again = export(&b, new).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    let mut expected = bundle.clone();
    expected["id"] = Value::from(new.to_string());
    assert_eq!(again.json, expected);

    prov_a.shutdown().await;
    prov_b.shutdown().await;
}

#[tokio::test]
async fn a_bundle_round_trips_into_a_fresh_server_sqlite() {
    a_bundle_round_trips_into_a_fresh_server(false).await;
}

#[tokio::test]
async fn a_bundle_round_trips_into_a_fresh_server_postgres() {
    a_bundle_round_trips_into_a_fresh_server(true).await;
}

/// A small valid bundle with one child.
fn family() -> Value {
    json!({
        "schema": "1.0", "id": "src-1", "name": "Parent", "description": "", "tier": 2,
        "runtime": "echo", "model": "echo/echo-1", "system_prompt": "Lead.",
        "skills": [], "tools": [], "prompts": {}, "agent_card": null,
        "author": "", "version": "1.0.0",
        "sub_workspaces": [{
            "name": "Child", "tier": 3, "system_prompt": "Follow.",
            "prompts": {"config.yaml": "runtime: echo\nruntime_config:\n  model: echo/echo-1\n", "notes/a.md": "A"}
        }]
    })
}

async fn children_importing_twice_and_restarts(postgres: bool) {
    let rec = Recorder::new();
    let app = server(postgres, rec.clone()).await;
    let resp = import(&app, &family()).await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text);
    let parent = WorkspaceId::parse(resp.json["workspace_id"].as_str().unwrap()).unwrap();
    let child_report = &resp.json["children"][0];
    assert_eq!(child_report["name"], "Child");
    assert_eq!(child_report["status"], "provisioning");
    let child = WorkspaceId::parse(child_report["workspace_id"].as_str().unwrap()).unwrap();
    app.service.drain().await;
    assert_eq!(app.row(child).await.parent_id, Some(parent));
    assert_eq!(app.row(child).await.tier, 3);
    assert_eq!(app.row(child).await.agent_card, None);

    // Each was handed to the provisioner with its own files over the template.
    let files = |id: WorkspaceId, n: usize| rec.requests_for(id)[n].config_files.clone();
    assert_eq!(files(parent, 0)["system-prompt.md"], b"Lead.".to_vec());
    assert_eq!(files(child, 0)["system-prompt.md"], b"Follow.".to_vec());
    assert_eq!(files(child, 0)["notes/a.md"], b"A".to_vec());
    // A restart provisions the stored files again.
    let resp = app.lifecycle(child, "restart").await;
    assert!(resp.status.is_success(), "restart: {}", resp.text);
    rec.wait_for_starts(3).await;
    app.service.drain().await;
    assert_eq!(files(child, 1), files(child, 0));

    // The parent's export carries the child.
    let exported = export(&app, parent).await.json;
    assert_eq!(exported["sub_workspaces"][0]["name"], "Child");
    assert_eq!(exported["sub_workspaces"][0]["prompts"]["notes/a.md"], "A");

    // Importing again makes new, independent workspaces; the taken root name is auto-suffixed.
    let resp = import(&app, &family()).await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text);
    assert_eq!(resp.json["name"], "Parent (2)");
    assert_ne!(resp.json["workspace_id"], parent.to_string());
    assert_eq!(
        resp.json["children"][0]["name"], "Child",
        "a new parent, so no clash"
    );
    assert_eq!(app.db.count("workspaces").await, 4);
}

#[tokio::test]
async fn children_importing_twice_and_restarts_sqlite() {
    children_importing_twice_and_restarts(false).await;
}

#[tokio::test]
async fn children_importing_twice_and_restarts_postgres() {
    children_importing_twice_and_restarts(true).await;
}

async fn bad_bundles_change_nothing(postgres: bool) {
    let root = tempfile::tempdir().expect("tempdir");
    let prov = process(root.path());
    let app = server(postgres, prov.clone()).await;
    // Something stored already, so "unchanged" is not just "empty".
    let existing = app
        .create_id(json!({"name": "Existing", "template": "echo"}))
        .await;
    app.service.drain().await;
    let before = counts(&app).await;
    let dirs_before = std::fs::read_dir(root.path()).unwrap().count();
    let templates_before = std::fs::read_dir(app.service.templates().root())
        .unwrap()
        .count();

    let with = |patch: Value| {
        let mut b = family();
        for (k, v) in patch.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let path_err = |p: &str| json!({"error": "invalid file path", "path": p});
    let cases: Vec<(String, StatusCode, Value)> = vec![
        // Path traversal and names that could reach outside the configs directory.
        (with(json!({"prompts": {"../evil.md": "x"}})).to_string(), StatusCode::BAD_REQUEST, path_err("../evil.md")),
        (with(json!({"prompts": {"/etc/passwd": "x"}})).to_string(), StatusCode::BAD_REQUEST, path_err("/etc/passwd")),
        (with(json!({"prompts": {"a/../../x": "x"}})).to_string(), StatusCode::BAD_REQUEST, path_err("a/../../x")),
        (with(json!({"prompts": {"..\\..\\x": "x"}})).to_string(), StatusCode::BAD_REQUEST, path_err("..\\..\\x")),
        (with(json!({"prompts": {".auth_token": "stolen"}})).to_string(), StatusCode::BAD_REQUEST, path_err(".auth_token")),
        (with(json!({"prompts": {"skills/x/y": "x"}})).to_string(), StatusCode::BAD_REQUEST, path_err("skills/x/y")),
        (with(json!({"skills": [{"id": "../../etc", "files": {"x": "y"}}]})).to_string(), StatusCode::BAD_REQUEST, path_err("skills/../../etc")),
        (with(json!({"skills": [{"id": "web", "files": {"../../../tmp/pwn": "y"}}]})).to_string(), StatusCode::BAD_REQUEST, path_err("skills/web/../../../tmp/pwn")),
        (with(json!({"skills": [{"id": "web", "files": {"/abs": "y"}}]})).to_string(), StatusCode::BAD_REQUEST, path_err("skills/web//abs")),
        // A bad name deep in the tree refuses the whole bundle (the root is not created either).
        (with(json!({"sub_workspaces": [{"name": "C", "runtime": "echo", "model": "echo/echo-1", "prompts": {"../../x": "y"}}]})).to_string(), StatusCode::BAD_REQUEST, path_err("../../x")),
        // Text PostgreSQL cannot store, and an oversized source id.
        (with(json!({"system_prompt": "a\0b"})).to_string(), StatusCode::BAD_REQUEST, json!({"error": "system_prompt must not contain NUL characters", "field": "system_prompt"})),
        (with(json!({"agent_card": {"name": "x\0"}})).to_string(), StatusCode::BAD_REQUEST, json!({"error": "agent_card.name must not contain NUL characters", "field": "agent_card.name"})),
        (with(json!({"sub_workspaces": [{"name": "C", "prompts": {"a.md": "\0"}}]})).to_string(), StatusCode::BAD_REQUEST, json!({"error": "sub_workspaces[0].prompts.a.md must not contain NUL characters", "field": "sub_workspaces[0].prompts.a.md"})),
        (with(json!({"id": "x".repeat(300)})).to_string(), StatusCode::BAD_REQUEST, json!({"error": "bundle id must be at most 255 bytes"})),
        // Binding and required fields.
        ("{not json".to_owned(), StatusCode::BAD_REQUEST, json!({"error": "invalid bundle"})),
        ("[]".to_owned(), StatusCode::BAD_REQUEST, json!({"error": "invalid bundle"})),
        (json!({"name": 5}).to_string(), StatusCode::BAD_REQUEST, json!({"error": "invalid bundle"})),
        (json!({"name": "x", "skills": "no"}).to_string(), StatusCode::BAD_REQUEST, json!({"error": "invalid bundle"})),
        (json!({}).to_string(), StatusCode::BAD_REQUEST, json!({"error": "bundle name is required"})),
        (with(json!({"name": "   "})).to_string(), StatusCode::BAD_REQUEST, json!({"error": "bundle name is required"})),
        (with(json!({"sub_workspaces": [{"name": ""}]})).to_string(), StatusCode::BAD_REQUEST, json!({"error": "bundle name is required"})),
        (with(json!({"prompts": {"config.yaml": "runtime: [unclosed"}})).to_string(), StatusCode::BAD_REQUEST, Value::Null),
        // Create's own checks, for the root and for a child.
        (with(json!({"tier": 9})).to_string(), StatusCode::BAD_REQUEST, json!({"error": "tier must be between 1 and 4", "workspace": "Parent"})),
        (with(json!({"runtime": "nope"})).to_string(), StatusCode::UNPROCESSABLE_ENTITY, Value::Null),
        (with(json!({"sub_workspaces": [{"name": "C", "runtime": "echo"}]})).to_string(), StatusCode::UNPROCESSABLE_ENTITY, Value::Null),
    ];
    for (body, status, expected) in cases {
        let resp = app.send(import_request(body.clone())).await;
        assert_eq!(resp.status, status, "{body}: {}", resp.text);
        if expected.is_null() {
            assert!(resp.json["error"].is_string(), "{body}: {}", resp.text);
        } else {
            assert_eq!(resp.json, expected, "{body}");
        }
        assert_eq!(counts(&app).await, before, "{body} wrote rows");
    }
    let resp = app
        .send(import_request(
            with(json!({"sub_workspaces": [{"name": "C", "runtime": "echo"}]})).to_string(),
        ))
        .await;
    assert_eq!(resp.json["code"], "MODEL_REQUIRED");
    assert_eq!(resp.json["workspace"], "C");

    // 50 MB: refused by the route's body limit.
    let big = format!(
        r#"{{"name":"Big","runtime":"echo","model":"echo/echo-1","system_prompt":"{}"}}"#,
        "a".repeat(50 * 1024 * 1024)
    );
    let resp = app.send(import_request(big)).await;
    assert_eq!(resp.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", resp.text);
    assert_eq!(resp.json, json!({"error": "request body too large"}));
    assert_eq!(counts(&app).await, before, "the 50 MB bundle wrote rows");

    // Without the admin credential.
    let req = axum::http::Request::builder()
        .method(Method::POST)
        .uri("/bundles/import")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(family().to_string()))
        .unwrap();
    assert_eq!(app.send(req).await.status, StatusCode::UNAUTHORIZED);
    let req = axum::http::Request::builder()
        .method(Method::POST)
        .uri("/bundles/import")
        .header(header::AUTHORIZATION, "Bearer wrong")
        .body(Body::from(family().to_string()))
        .unwrap();
    assert_eq!(app.send(req).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        counts(&app).await,
        before,
        "unauthenticated imports wrote rows"
    );

    // Nothing reached the provisioner or the templates directory.
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), dirs_before);
    assert_eq!(
        std::fs::read_dir(app.service.templates().root())
            .unwrap()
            .count(),
        templates_before
    );

    // Export: unknown and malformed ids are 404, and it is admin-only.
    let missing = export(&app, WorkspaceId::new_v4()).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.json, json!({"error": "bundle not found"}));
    assert_eq!(
        export(&app, "not-a-uuid").await.status,
        StatusCode::NOT_FOUND
    );
    let anon = app.get_anon(&format!("/bundles/export/{existing}")).await;
    assert_eq!(anon.status, StatusCode::UNAUTHORIZED);
    let wrong = app
        .call(
            Method::GET,
            &format!("/bundles/export/{existing}"),
            Some("wrong"),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);

    prov.shutdown().await;
}

#[tokio::test]
async fn bad_bundles_change_nothing_sqlite() {
    bad_bundles_change_nothing(false).await;
}

#[tokio::test]
async fn bad_bundles_change_nothing_postgres() {
    bad_bundles_change_nothing(true).await;
}

/// An external-like runtime takes Create's external branch: no provisioning, `awaiting_agent`,
/// and the once-only connection payload in the import's answer.
async fn an_external_bundle_gets_its_connection(postgres: bool) {
    let rec = Recorder::new();
    let app = server(postgres, rec.clone()).await;
    let bundle = json!({"name": "Laptop", "runtime": "external", "agent_card": {"name": "laptop"}});
    let resp = import(&app, &bundle).await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text);
    assert_eq!(resp.json["status"], "awaiting_agent");
    let id = WorkspaceId::parse(resp.json["workspace_id"].as_str().unwrap()).unwrap();
    assert_eq!(resp.json["connection"]["workspace_id"], id.to_string());
    let token = resp.json["connection"]["auth_token"]
        .as_str()
        .expect("token");
    app.service.drain().await;
    assert!(rec.requests_for(id).is_empty(), "nothing to provision");
    assert_eq!(
        app.row(id).await.agent_card,
        Some(json!({"name": "laptop"}))
    );
    // The token is live: the agent can connect back with it.
    let resp = app.heartbeat(id, Some(token), json!({})).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
}

#[tokio::test]
async fn an_external_bundle_gets_its_connection_sqlite() {
    an_external_bundle_gets_its_connection(false).await;
}

#[tokio::test]
async fn an_external_bundle_gets_its_connection_postgres() {
    an_external_bundle_gets_its_connection(true).await;
}
