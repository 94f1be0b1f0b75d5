//! `GET /templates` and `POST /templates/import` (REFERENCE-2.md §6 with the fixes of §9.6
//! #51–52): shapes, auth, containment, caps, atomic writes, and import → list → create.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use axum::http::{Method, StatusCode};
use berth_core::TemplateCatalog;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, TestApp, app};

/// Every path under `root`, relative, sorted (hidden in-flight imports included).
fn tree(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).expect("read dir").flatten() {
            let p = e.path();
            out.push(p.strip_prefix(root).expect("under root").to_path_buf());
            if e.file_type().expect("file type").is_dir() {
                walk(&p, root, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

impl TestApp {
    fn templates_root(&self) -> PathBuf {
        self.service.templates().root().to_path_buf()
    }

    async fn import(&self, body: Value) -> crate::helpers::Resp {
        self.post("/templates/import", Some(ADMIN_TOKEN), &body)
            .await
    }

    async fn templates(&self) -> Vec<Value> {
        let resp = self.get("/templates").await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
        resp.json.as_array().expect("array").clone()
    }

    /// Imports `body` and expects `status` + `expected`, with the templates directory unchanged.
    async fn assert_import_refused(&self, body: Value, status: StatusCode, expected: Value) {
        let before = tree(&self.templates_root());
        let resp = self.import(body.clone()).await;
        assert_eq!(resp.status, status, "{body}: {}", resp.text);
        assert_eq!(resp.json, expected, "{body}");
        assert_eq!(
            tree(&self.templates_root()),
            before,
            "{body}: the templates directory changed"
        );
    }
}

#[tokio::test]
async fn the_listing_has_the_reference_fields_and_reports_malformed_templates() {
    let app = app().await;
    let list = app.templates().await;
    assert_eq!(
        list,
        vec![
            json!({"id": "echo", "name": "Echo", "description": "", "tier": null, "runtime": "echo",
                   "model": "echo/echo-1", "skills": [], "skill_count": 0,
                   "provision_timeout_seconds": 60}),
            json!({"id": "plain", "name": "Plain", "description": "", "tier": null, "runtime": "",
                   "model": "openai/gpt-4o", "skills": [], "skill_count": 0}),
            json!({"id": "broken", "error": list[2]["error"], "code": "TEMPLATE_INVALID"}),
        ]
    );
    assert!(
        list[2]["error"]
            .as_str()
            .is_some_and(|e| e.contains("yaml")),
        "{}",
        list[2]
    );
}

#[tokio::test]
async fn optional_fields_skills_and_the_default_suffix() {
    let app = app().await;
    let dir = app.templates_root().join("full");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config.yaml"),
        "name: Full\ndescription: Everything\ntier: 2\nruntime: claude-code-default\n\
         skills: [web, code]\n\
         providers:\n  - name: anthropic\n    auth_env: ANTHROPIC_API_KEY\n\
         runtime_config:\n  model: sonnet\n  required_env: [ANTHROPIC_API_KEY]\n\
         \x20 providers: [anthropic]\n  models:\n    - id: sonnet\n      name: Sonnet\n",
    )
    .unwrap();
    // A directory without config.yaml is not a template; a symlinked one is not followed.
    std::fs::create_dir_all(app.templates_root().join("empty")).unwrap();
    std::os::unix::fs::symlink(&dir, app.templates_root().join("link")).unwrap();
    // Wrongly shaped lists are reported, not dropped.
    let bad = app.templates_root().join("badskills");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("config.yaml"), "name: B\nskills: web\n").unwrap();

    let list = app.templates().await;
    let ids: Vec<&str> = list.iter().filter_map(|t| t["id"].as_str()).collect();
    assert_eq!(ids, ["echo", "full", "plain", "badskills", "broken"]);
    assert_eq!(
        list[1],
        json!({"id": "full", "name": "Full", "description": "Everything", "tier": 2,
               "runtime": "claude-code", "model": "sonnet",
               "models": [{"id": "sonnet", "name": "Sonnet"}],
               "required_env": ["ANTHROPIC_API_KEY"], "providers": ["anthropic"],
               "provider_registry": [{"name": "anthropic", "auth_env": "ANTHROPIC_API_KEY"}],
               "skills": ["web", "code"], "skill_count": 2})
    );
    assert_eq!(
        list[3],
        json!({"id": "badskills", "error": "template key skills must be a list of strings",
               "code": "TEMPLATE_INVALID"})
    );
}

#[tokio::test]
async fn the_bundled_echo_template_is_listed() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/templates");
    let listing = TemplateCatalog::load(&fixtures).list();
    assert!(listing.errors.is_empty(), "{:?}", listing.errors);
    let echo = listing
        .templates
        .iter()
        .find(|t| t.id == "echo")
        .expect("bundled echo template");
    assert_eq!(echo.name, "Echo Agent");
    assert_eq!(echo.runtime, "echo");
    assert_eq!(echo.model, "echo/echo-1");
    assert_eq!(echo.tier, Some(2));
    assert_eq!(echo.provision_timeout_seconds, Some(60));
    assert!(echo.skills.is_empty());
}

#[tokio::test]
async fn both_routes_need_the_admin_bearer() {
    let app = app().await;
    let resp = app.get_anon("/templates").await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert_eq!(resp.json, json!({"error": "admin auth required"}));
    let body = json!({"name": "x", "files": {"a.md": "a"}});
    for bearer in [None, Some("wrong")] {
        let before = tree(&app.templates_root());
        let resp = app.post("/templates/import", bearer, &body).await;
        assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{bearer:?}");
        assert_eq!(tree(&app.templates_root()), before);
    }
}

#[tokio::test]
async fn an_imported_template_is_listed_and_creates_workspaces() {
    let app = app().await;
    let resp = app
        .import(json!({"name": "My Agent", "files": {
            "system-prompt.md": "You are helpful.",
            "skills/web/SKILL.md": "# web",
            "notes/extra.txt": "x",
        }}))
        .await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text);
    assert_eq!(
        resp.json,
        json!({"status": "imported", "id": "my-agent", "name": "My Agent"})
    );

    let root = app.templates_root();
    assert_eq!(
        tree(&root.join("my-agent")),
        [
            "config.yaml",
            "notes",
            "notes/extra.txt",
            "skills",
            "skills/web",
            "skills/web/SKILL.md",
            "system-prompt.md"
        ]
        .map(PathBuf::from)
    );
    let mode = |p: &str| {
        std::fs::metadata(root.join("my-agent").join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("system-prompt.md"), 0o600);
    assert_eq!(mode("config.yaml"), 0o600);
    assert_eq!(mode("skills/web"), 0o755);
    assert!(
        tree(&root)
            .iter()
            .all(|p| !p.to_string_lossy().starts_with('.')),
        "a temporary import directory was left behind"
    );

    let listed = app.templates().await;
    let entry = listed
        .iter()
        .find(|t| t["id"] == "my-agent")
        .expect("imported template listed");
    assert_eq!(entry["name"], "My Agent");
    assert_eq!(entry["runtime"], "claude-code");
    assert_eq!(entry["model"], "anthropic:claude-haiku-4-5-20251001");
    assert_eq!(entry["tier"], 3);
    assert_eq!(entry["skills"], json!(["web"]));
    assert_eq!(entry["skill_count"], 1);

    // The generated config declares its runtime, so Create resolves it (§9.6 #51).
    let id = app
        .create_id(json!({"name": "from-import", "template": "my-agent"}))
        .await;
    let row = app.row(id).await;
    assert_eq!(row.runtime, "claude-code");

    // The same name again is a 409, and nothing changes.
    app.assert_import_refused(
        json!({"name": "my agent", "files": {"a.md": "a"}}),
        StatusCode::CONFLICT,
        json!({"error": "template already exists", "id": "my-agent"}),
    )
    .await;
}

#[tokio::test]
async fn an_imported_runtime_becomes_known_without_a_restart() {
    let app = app().await;
    let create = json!({"name": "n", "runtime": "newrt", "model": "m/1"});
    let resp = app.create(create.clone()).await;
    assert_eq!(
        resp.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        resp.text
    );
    assert_eq!(resp.json["code"], "RUNTIME_UNKNOWN");

    let resp = app
        .import(json!({"name": "New RT", "files": {
            "config.yaml": "name: New RT\nruntime: newrt\nruntime_config:\n  model: m/1\n  provision_timeout_seconds: 90\n",
        }}))
        .await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text);
    assert_eq!(resp.json["id"], "new-rt");
    assert!(app.service.templates().is_known_runtime("newrt"));
    assert_eq!(
        app.service.templates().provision_timeout_secs("newrt"),
        Some(90)
    );
    let id = app.create_id(create).await;
    assert_eq!(app.row(id).await.runtime, "newrt");
    let id = app
        .create_id(json!({"name": "t", "template": "new-rt"}))
        .await;
    assert_eq!(app.row(id).await.runtime, "newrt");
}

#[tokio::test]
async fn unicode_names_keep_their_letters() {
    let app = app().await;
    let resp = app
        .import(json!({"name": "Agent Ünï", "files": {"a.md": "a"}}))
        .await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text);
    assert_eq!(resp.json["id"], "agent-ünï");
    let resp = app
        .import(json!({"name": "日本語", "files": {"a.md": "a"}}))
        .await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text);
    assert_eq!(resp.json["id"], "日本語");
}

#[tokio::test]
async fn bad_imports_are_400s_that_write_nothing() {
    let app = app().await;
    let bad_path = |p: &str| json!({"error": "invalid file path", "path": p});
    let many: BTreeMap<String, String> = (0..201)
        .map(|i| (format!("f{i}.md"), "x".to_owned()))
        .collect();
    let cases = [
        (
            json!({"name": "t", "files": {"../evil.md": "x"}}),
            bad_path("../evil.md"),
        ),
        (
            json!({"name": "t", "files": {"ok.md": "x", "a/../../evil": "x"}}),
            bad_path("a/../../evil"),
        ),
        (
            json!({"name": "t", "files": {"/etc/evil": "x", "ok.md": "x"}}),
            bad_path("/etc/evil"),
        ),
        (json!({"name": "t", "files": {"": "x"}}), bad_path("")),
        (json!({"name": "t", "files": {".": "x"}}), bad_path(".")),
        (
            json!({"name": "t", "files": {"a//b": "x"}}),
            bad_path("a//b"),
        ),
        (
            json!({"name": "t", "files": {"a": "x", "a/b": "y"}}),
            bad_path("a"),
        ),
        (
            json!({"name": "t", "files": many}),
            json!({"error": "too many files (201), max 200"}),
        ),
        (
            json!({"name": "t", "files": {}}),
            json!({"error": "files must not be empty"}),
        ),
        (
            json!({"name": "t", "files": null}),
            json!({"error": "invalid request body"}),
        ),
        (
            json!({"name": "t"}),
            json!({"error": "invalid request body"}),
        ),
        (
            json!({"files": {"a.md": "x"}}),
            json!({"error": "invalid request body"}),
        ),
        (
            json!({"name": "t", "files": {"a.md": 5}}),
            json!({"error": "invalid request body"}),
        ),
        (
            json!({"name": "  ", "files": {"a.md": "x"}}),
            json!({"error": "name is required"}),
        ),
        (
            json!({"name": "../..", "files": {"a.md": "x"}}),
            json!({"error": "template name must contain a letter or a digit"}),
        ),
        (
            json!({"name": "x".repeat(65), "files": {"a.md": "x"}}),
            json!({"error": "template name is too long"}),
        ),
        (
            json!({"name": "t", "files": {"config.yaml": "runtime: [a, b]\n"}}),
            json!({"error": "invalid config.yaml: template key runtime must be a string"}),
        ),
        (
            json!({"name": "t", "files": {"a.md": "x"}, "runtime": "nope"}),
            json!({"error": "unknown runtime: use a built-in runtime or one declared by a template",
                   "runtime": "nope", "code": "RUNTIME_UNKNOWN"}),
        ),
    ];
    for (body, expected) in cases {
        app.assert_import_refused(body, StatusCode::BAD_REQUEST, expected)
            .await;
    }
    // An existing template (created by hand) is never overwritten.
    app.assert_import_refused(
        json!({"name": "Echo", "files": {"config.yaml": "name: evil\n"}}),
        StatusCode::CONFLICT,
        json!({"error": "template already exists", "id": "echo"}),
    )
    .await;
    let resp = app
        .send(
            crate::helpers::admin(Method::POST, "/templates/import")
                .header("content-type", "application/json")
                .body(axum::body::Body::from("{not json"))
                .unwrap(),
        )
        .await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert_eq!(resp.json, json!({"error": "invalid request body"}));
}

/// `provision_timeout_seconds` becomes a deadline added to the clock when provisioning starts:
/// past a week it is refused at import (it overflowed the deadline, a panic in the provisioning
/// task), and a week is still fine.
#[tokio::test]
async fn a_provision_timeout_past_a_week_is_refused() {
    let app = app().await;
    let listed = app.templates().await;
    for huge in ["604801", "9223372036854775807", "18446744073709551615"] {
        let config = format!(
            "runtime: slow\nruntime_config:\n  model: m/1\n  provision_timeout_seconds: {huge}\n"
        );
        app.assert_import_refused(
            json!({"name": "slow", "files": {"config.yaml": config}}),
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid config.yaml: template key runtime_config.provision_timeout_seconds must be at most 604800 (one week)"}),
        )
        .await;
        assert_eq!(app.templates().await, listed, "{huge}");
        assert!(!app.service.templates().is_known_runtime("slow"), "{huge}");
    }
    let config =
        "runtime: slow\nruntime_config:\n  model: m/1\n  provision_timeout_seconds: 604800\n";
    let resp = app
        .import(json!({"name": "slow", "files": {"config.yaml": config}}))
        .await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text);
    assert_eq!(
        app.service.templates().provision_timeout_secs("slow"),
        Some(604_800)
    );
}

#[tokio::test]
async fn exactly_two_hundred_files_are_accepted() {
    let app = app().await;
    let files: BTreeMap<String, String> = (0..200)
        .map(|i| (format!("f{i}.md"), "x".to_owned()))
        .collect();
    let resp = app.import(json!({"name": "many", "files": files})).await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text);
    // 200 files plus the generated config.yaml.
    assert_eq!(tree(&app.templates_root().join("many")).len(), 201);
}

#[tokio::test]
async fn a_forced_tier_is_the_tier_of_every_listed_template() {
    let app = crate::helpers::Setup {
        forced_tier: Some(berth_domain::validation::Tier::resolve(4).expect("tier")),
        ..crate::helpers::Setup::default()
    }
    .start()
    .await;
    let listed = app.templates().await;
    let valid: Vec<&Value> = listed.iter().filter(|t| t.get("code").is_none()).collect();
    assert!(!valid.is_empty(), "{listed:?}");
    for t in valid {
        assert_eq!(t["tier"], 4, "{t}");
    }
}
