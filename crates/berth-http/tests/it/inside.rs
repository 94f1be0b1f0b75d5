//! Files and exec through HTTP (issue #14) on the process provisioner with real child processes
//! and real directories: the reference's wire shapes, raw bytes, the refusals (roots, depth,
//! paths, symbolic links, sizes, auth), `/configs` edits that survive the restart they schedule,
//! exec with exit codes, timeouts and output limits, the audit rows. SQLite and PostgreSQL where
//! the store is involved. The terminal is tested against the release binary (`bins/berth`), which
//! serves it on a real socket.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use berth_core::InsideConfig;
use berth_domain::WorkspaceId;
use berth_provision::{ProcessConfig, ProcessProvisioner};
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, Resp, Setup, TestApp};

/// A server on the process backend whose agents are `sleep`s, with small limits.
struct Inside {
    app: TestApp,
    provisioner: Arc<ProcessProvisioner>,
    _root: tempfile::TempDir,
}

const MAX_FILE: u64 = 64 * 1024;

async fn inside(postgres: bool, process_shell: bool) -> Inside {
    inside_with(postgres, process_shell, Duration::from_millis(200)).await
}

/// With `restart_delay` between a `/configs` change and the restart it schedules.
async fn inside_with(postgres: bool, process_shell: bool, restart_delay: Duration) -> Inside {
    let root = tempfile::tempdir().expect("tempdir");
    let mut config = ProcessConfig::new(root.path().join("workspaces"))
        .with_command("echo", ["/bin/sh", "-c", "exec sleep 600"]);
    config.start_grace = Duration::from_millis(20);
    config.stop_grace = Duration::from_secs(5);
    let provisioner = Arc::new(ProcessProvisioner::new(config));
    let app = Setup {
        provisioner: provisioner.clone(),
        postgres,
        inside: InsideConfig {
            max_file_bytes: MAX_FILE,
            exec_output_limit: 1000,
            exec_max_timeout: Duration::from_secs(20),
            process_shell,
            config_restart_delay: restart_delay,
            ..InsideConfig::default()
        },
        ..Setup::default()
    }
    .start()
    .await;
    Inside {
        app,
        provisioner,
        _root: root,
    }
}

impl Inside {
    async fn workspace(&self, name: &str) -> WorkspaceId {
        let id = self
            .app
            .create_id(json!({"name": name, "template": "echo"}))
            .await;
        self.app.service.drain().await;
        id
    }

    fn configs(&self, id: WorkspaceId) -> PathBuf {
        self.provisioner.workspace_root(id).join("configs")
    }

    fn workspace_dir(&self, id: WorkspaceId) -> PathBuf {
        self.provisioner.workspace_root(id).join("workspace")
    }

    async fn req(
        &self,
        method: Method,
        uri: &str,
        bearer: Option<&str>,
        content_type: Option<&str>,
        accept: Option<&str>,
        body: impl Into<Body>,
    ) -> Resp {
        let mut b = Request::builder().method(method).uri(uri);
        if let Some(t) = bearer {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if let Some(c) = content_type {
            b = b.header(header::CONTENT_TYPE, c);
        }
        if let Some(a) = accept {
            b = b.header(header::ACCEPT, a);
        }
        self.app.send(b.body(body.into()).expect("request")).await
    }

    async fn get(&self, uri: &str) -> Resp {
        self.req(
            Method::GET,
            uri,
            Some(ADMIN_TOKEN),
            None,
            None,
            Body::empty(),
        )
        .await
    }

    async fn put_json(&self, uri: &str, body: &Value) -> Resp {
        self.req(
            Method::PUT,
            uri,
            Some(ADMIN_TOKEN),
            Some("application/json"),
            None,
            body.to_string(),
        )
        .await
    }

    async fn put_bytes(&self, uri: &str, bytes: Vec<u8>) -> Resp {
        self.req(
            Method::PUT,
            uri,
            Some(ADMIN_TOKEN),
            Some("application/octet-stream"),
            None,
            bytes,
        )
        .await
    }

    async fn delete(&self, uri: &str) -> Resp {
        self.req(
            Method::DELETE,
            uri,
            Some(ADMIN_TOKEN),
            None,
            None,
            Body::empty(),
        )
        .await
    }

    async fn exec(&self, id: WorkspaceId, body: &Value) -> Resp {
        self.req(
            Method::POST,
            &format!("/workspaces/{id}/exec"),
            Some(ADMIN_TOKEN),
            Some("application/json"),
            None,
            body.to_string(),
        )
        .await
    }

    /// Waits until the workspace's agent was started `n` times.
    async fn wait_starts(&self, id: WorkspaceId, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            self.app.service.drain().await;
            let starts = self
                .app
                .events_named(id, "WORKSPACE_PROVISIONING")
                .await
                .len();
            if starts >= n && self.app.service.restarts_in_flight().await == 0 {
                self.app.service.drain().await;
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{id} was not started {n} times (only {starts})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn paths(listing: &Value) -> Vec<String> {
    listing
        .as_array()
        .expect("listing")
        .iter()
        .map(|e| e["path"].as_str().expect("path").to_owned())
        .collect()
}

async fn round_trip(postgres: bool) {
    // The scheduled restart (which rebuilds /configs) is kept out of this test's way.
    let s = inside_with(postgres, false, Duration::from_secs(300)).await;
    let id = s.workspace("files").await;

    // The template's copy is there, in the reference's listing shape plus size and time.
    let resp = s.get(&format!("/workspaces/{id}/files")).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    let config = resp
        .json
        .as_array()
        .expect("array")
        .iter()
        .find(|e| e["path"] == "config.yaml");
    let config = config.unwrap_or_else(|| panic!("config.yaml listed: {}", resp.text));
    assert_eq!(config["dir"], false);
    assert!(config["size"].as_u64().expect("size") > 0);
    assert!(
        config["modified"]
            .as_str()
            .expect("modified")
            .ends_with('Z')
    );

    // A JSON write under /configs, read back exactly (whitespace kept), as the reference's shape.
    let text = "  You are terse.\n\n";
    let resp = s
        .put_json(
            &format!("/workspaces/{id}/files/notes/prompt.md"),
            &json!({"content": text}),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(
        resp.json,
        json!({"status": "saved", "path": "notes/prompt.md", "root": "/configs", "source": "container", "restart_scheduled": true})
    );
    let resp = s
        .get(&format!("/workspaces/{id}/files/notes/prompt.md"))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(
        resp.json,
        json!({"path": "notes/prompt.md", "content": text, "size": text.len()})
    );
    assert_eq!(
        std::fs::read_to_string(s.configs(id).join("notes/prompt.md")).expect("on disk"),
        text
    );

    // Bytes that are not UTF-8 round-trip as application/octet-stream, under /workspace.
    let bytes: Vec<u8> = vec![0, 159, 146, 150, b'\n', b' ', 255];
    let uri = format!("/workspaces/{id}/files/bin/blob.bin?root=/workspace");
    let resp = s.put_bytes(&uri, bytes.clone()).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(
        resp.json["restart_scheduled"], false,
        "no restart for /workspace"
    );
    let resp = s
        .req(
            Method::GET,
            &uri,
            Some(ADMIN_TOKEN),
            None,
            Some("application/octet-stream"),
            Body::empty(),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(
        resp.header("content-type"),
        Some("application/octet-stream")
    );
    let resp_bytes = std::fs::read(s.workspace_dir(id).join("bin/blob.bin")).expect("on disk");
    assert_eq!(resp_bytes, bytes);
    let listing = s
        .get(&format!("/workspaces/{id}/files?root=/workspace&depth=2"))
        .await;
    assert_eq!(listing.status, StatusCode::OK, "{}", listing.text);
    assert_eq!(paths(&listing.json), ["bin", "bin/blob.bin"]);
    assert_eq!(listing.json[0]["dir"], true);
    assert_eq!(listing.json[0]["size"], 0);
    assert_eq!(listing.json[1]["size"], bytes.len());
    // `?path=` lists a sub-directory, paths relative to it.
    let sub = s
        .get(&format!("/workspaces/{id}/files?root=/workspace&path=bin"))
        .await;
    assert_eq!(paths(&sub.json), ["blob.bin"]);

    // The bulk overlay writes several files and keeps the others.
    let resp = s
        .put_json(
            &format!("/workspaces/{id}/files?root=/workspace"),
            &json!({"files": {"a.txt": "A", "deep/b.txt": "B"}}),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.json["status"], "replaced");
    assert_eq!(resp.json["files"], 2);
    assert_eq!(resp.json["workspace"], id.to_string());
    let listing = s
        .get(&format!("/workspaces/{id}/files?root=/workspace&depth=5"))
        .await;
    assert_eq!(
        paths(&listing.json),
        ["a.txt", "bin", "bin/blob.bin", "deep", "deep/b.txt"]
    );

    // Delete goes through the router (the reference refused every routed delete), files and
    // whole directories; a missing file is 404 and a read of a deleted file too.
    let resp = s
        .delete(&format!("/workspaces/{id}/files/bin?root=/workspace"))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.json["status"], "deleted");
    assert_eq!(resp.json["path"], "bin");
    assert!(!s.workspace_dir(id).join("bin").exists());
    let resp = s
        .delete(&format!("/workspaces/{id}/files/bin?root=/workspace"))
        .await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND, "{}", resp.text);
    assert_eq!(resp.json, json!({"error": "file not found"}));
    let resp = s.get(&format!("/workspaces/{id}/files/missing.md")).await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND);
    assert_eq!(resp.json, json!({"error": "file not found"}));

    // Every change is an activity row saying who did what, never the content.
    let rows = s
        .get(&format!("/workspaces/{id}/activity?type=files"))
        .await;
    assert_eq!(rows.status, StatusCode::OK, "{}", rows.text);
    let rows = rows.json.as_array().expect("rows").clone();
    assert!(rows.len() >= 4, "{rows:?}");
    assert!(rows.iter().all(|r| r["request_body"]["by"] == "admin"));
    assert!(
        !serde_json::to_string(&rows)
            .expect("json")
            .contains("terse")
    );
}

#[tokio::test]
async fn files_round_trip_sqlite() {
    round_trip(false).await;
}

#[tokio::test]
async fn files_round_trip_postgres() {
    round_trip(true).await;
}

/// `/configs` is rebuilt at every start: what was written or deleted there through the API is
/// applied again by the restart the change scheduled (and by every later start).
async fn configs_edits_survive_restarts(postgres: bool) {
    let s = inside(postgres, false).await;
    let id = s.workspace("configs").await;
    assert!(s.configs(id).join("config.yaml").exists());

    let resp = s
        .put_json(
            &format!("/workspaces/{id}/files/system-prompt.md"),
            &json!({"content": "v1"}),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    let resp = s
        .put_json(
            &format!("/workspaces/{id}/files/system-prompt.md"),
            &json!({"content": "v2"}),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    let resp = s
        .delete(&format!("/workspaces/{id}/files/config.yaml"))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.json["restart_scheduled"], true);

    // One restart after the burst (trailing edge), not one per change.
    s.wait_starts(id, 2).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    s.app.service.drain().await;
    assert_eq!(
        s.app.events_named(id, "WORKSPACE_PROVISIONING").await.len(),
        2,
        "one restart for the burst"
    );
    assert_eq!(
        std::fs::read_to_string(s.configs(id).join("system-prompt.md")).expect("kept"),
        "v2"
    );
    assert!(
        !s.configs(id).join("config.yaml").exists(),
        "the deletion holds"
    );
    // The agent's secrets are still written by the start.
    assert!(s.configs(id).join(".auth_token").exists());

    // A restart asked for later applies them again.
    let resp = s.app.lifecycle(id, "restart").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    s.wait_starts(id, 3).await;
    assert_eq!(
        std::fs::read_to_string(s.configs(id).join("system-prompt.md")).expect("kept"),
        "v2"
    );
    assert!(!s.configs(id).join("config.yaml").exists());

    // Writing the deleted file again brings it back for good.
    let resp = s
        .put_json(
            &format!("/workspaces/{id}/files/config.yaml"),
            &json!({"content": "name: mine\n"}),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    s.wait_starts(id, 4).await;
    assert_eq!(
        std::fs::read_to_string(s.configs(id).join("config.yaml")).expect("back"),
        "name: mine\n"
    );
}

#[tokio::test]
async fn configs_edits_survive_restarts_sqlite() {
    configs_edits_survive_restarts(false).await;
}

#[tokio::test]
async fn configs_edits_survive_restarts_postgres() {
    configs_edits_survive_restarts(true).await;
}

/// Every malformed or too large request is a 4xx and changes nothing.
#[tokio::test]
async fn bad_requests_are_refused_and_change_nothing() {
    let s = inside(false, false).await;
    let id = s.workspace("bad").await;
    let base = format!("/workspaces/{id}/files");
    let roots =
        json!({"error": "root must be one of: /configs, /workspace, /home, /plugins, /agent-home"});
    for q in ["?root=", "?root=/etc", "?root=configs", "?root=/configs/"] {
        let resp = s.get(&format!("{base}{q}")).await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{q}");
        assert_eq!(resp.json, roots, "{q}");
    }
    let resp = s.get(&format!("{base}?root=/agent-home")).await;
    assert_eq!(resp.status, StatusCode::NOT_IMPLEMENTED, "{}", resp.text);
    let resp = s.get(&format!("{base}?root=/home")).await;
    assert_eq!(
        resp.status,
        StatusCode::NOT_IMPLEMENTED,
        "the process backend has no /home: {}",
        resp.text
    );
    for d in ["0", "6", "x", "-1"] {
        let resp = s.get(&format!("{base}?depth={d}")).await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "depth {d}");
        assert_eq!(resp.json, json!({"error": "depth must be 1-5"}));
    }
    for p in [
        "a/../../etc/passwd",
        "..",
        "/etc/passwd",
        "a/%2E%2E/%2E%2E/x",
        "a%00b",
        "a%0Ab",
    ] {
        let resp = s.get(&format!("{base}/{p}")).await;
        assert_eq!(
            resp.status,
            StatusCode::BAD_REQUEST,
            "read {p}: {}",
            resp.text
        );
        assert_eq!(resp.json["error"], "invalid path", "{p}");
        let resp = s
            .put_json(&format!("{base}/{p}"), &json!({"content": "x"}))
            .await;
        assert_eq!(
            resp.status,
            StatusCode::BAD_REQUEST,
            "write {p}: {}",
            resp.text
        );
        let resp = s.delete(&format!("{base}/{p}")).await;
        assert_eq!(
            resp.status,
            StatusCode::BAD_REQUEST,
            "delete {p}: {}",
            resp.text
        );
    }
    let resp = s.get(&format!("{base}?path=../x")).await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    // A name merely containing `..` is a name.
    let resp = s
        .put_json(&format!("{base}/notes..md"), &json!({"content": "ok"}))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);

    // Bodies: not JSON, a non-string content, too large (413 by JSON and by bytes).
    let edits_before = s.app.store.config_edits(id).await.expect("edits").len();
    for body in ["not json", "{\"content\": 3}", "[]"] {
        let resp = s
            .req(
                Method::PUT,
                &format!("{base}/x.md"),
                Some(ADMIN_TOKEN),
                Some("application/json"),
                None,
                body,
            )
            .await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(resp.json, json!({"error": "invalid request body"}));
    }
    let big = "x".repeat(usize::try_from(MAX_FILE).expect("fits") + 1);
    let resp = s
        .put_json(&format!("{base}/big.md"), &json!({"content": big}))
        .await;
    assert_eq!(resp.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", resp.text);
    let resp = s
        .put_bytes(&format!("{base}/big.bin"), big.clone().into_bytes())
        .await;
    assert_eq!(resp.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", resp.text);
    let huge = "x".repeat(usize::try_from(MAX_FILE).expect("fits") * 3);
    let resp = s
        .put_json(&format!("{base}/huge.md"), &json!({"content": huge}))
        .await;
    assert_eq!(resp.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", resp.text);
    // A file over the limit on disk is not read either (413, not a silently cut answer).
    std::fs::write(s.configs(id).join("large.bin"), big.as_bytes()).expect("write");
    let resp = s.get(&format!("{base}/large.bin")).await;
    assert_eq!(resp.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", resp.text);

    // The bulk overlay: too many files, a bad key (nothing written then), not an object.
    let many: serde_json::Map<String, Value> =
        (0..201).map(|i| (format!("f{i}"), json!("x"))).collect();
    let resp = s.put_json(&base, &json!({"files": many})).await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert_eq!(resp.json, json!({"error": "too many files (201), max 200"}));
    let resp = s
        .put_json(&base, &json!({"files": {"good.md": "x", "../evil": "x"}}))
        .await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{}", resp.text);
    assert_eq!(
        resp.json,
        json!({"error": "invalid path", "path": "../evil"})
    );
    assert!(
        !s.configs(id).join("good.md").exists(),
        "nothing of a refused bulk is written"
    );
    for body in [json!({"files": null}), json!({"files": []}), json!({})] {
        let resp = s.put_json(&base, &body).await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{body}");
    }
    for name in ["x.md", "big.md", "big.bin", "huge.md", "good.md"] {
        assert!(!s.configs(id).join(name).exists(), "{name} was not written");
    }
    assert_eq!(
        s.app.store.config_edits(id).await.expect("edits").len(),
        edits_before,
        "no refused request recorded an edit"
    );
}

/// A symbolic link the agent planted never leads a request out of the root.
/// The agent's credentials (`/configs/.auth_token`, `/configs/.platform_inbound_secret`, written by
/// each start) are not listed, and reading, writing or deleting them is a 403 that changes
/// nothing and stores no edit; the same names elsewhere are ordinary files.
async fn the_agents_credentials_are_hidden_and_refused(postgres: bool) {
    // No scheduled restart in this test's way (a refused write must not schedule one anyway).
    let s = inside_with(postgres, false, Duration::from_secs(300)).await;
    let id = s.workspace("creds").await;
    let files = |p: &str| format!("/workspaces/{id}/files{p}");
    let on_disk = |name: &str| std::fs::read(s.configs(id).join(name)).expect("credential file");
    let token = on_disk(".auth_token");
    let inbound = on_disk(".platform_inbound_secret");
    assert!(!token.is_empty() && !inbound.is_empty());

    for query in ["", "?depth=3", "?root=/configs&path=."] {
        let listed = s.get(&files(query)).await;
        assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
        let names = paths(&listed.json);
        assert!(names.iter().any(|p| p == "config.yaml"), "{names:?}");
        assert!(
            !names
                .iter()
                .any(|p| p == ".auth_token" || p == ".platform_inbound_secret"),
            "{query}: {names:?}"
        );
    }

    let refused = |resp: &Resp, what: &str| {
        assert_eq!(resp.status, StatusCode::FORBIDDEN, "{what}: {}", resp.text);
        let error = resp.json["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("is the agent's credential"),
            "{what}: {error}"
        );
        assert!(
            !resp
                .text
                .contains(&String::from_utf8_lossy(&token).into_owned())
        );
    };
    for path in [
        "/.auth_token",
        "/.platform_inbound_secret",
        "/./.auth_token",
        "/.auth_token?root=/configs",
    ] {
        refused(&s.get(&files(path)).await, path);
        let octets = s
            .req(
                Method::GET,
                &files(path),
                Some(ADMIN_TOKEN),
                None,
                Some("application/octet-stream"),
                Body::empty(),
            )
            .await;
        refused(&octets, path);
        refused(
            &s.put_json(&files(path), &json!({"content": "mine"})).await,
            path,
        );
        refused(&s.put_bytes(&files(path), b"mine".to_vec()).await, path);
        refused(&s.delete(&files(path)).await, path);
    }
    // A bulk overlay naming one is refused whole: its other file is not written either.
    let bulk = s
        .put_json(
            &files(""),
            &json!({"files": {"ok.md": "fine", ".platform_inbound_secret": "mine"}}),
        )
        .await;
    refused(&bulk, "bulk");
    assert!(!s.configs(id).join("ok.md").exists());

    // Nothing changed, nothing was stored for the next start, nothing restarts.
    assert_eq!(on_disk(".auth_token"), token);
    assert_eq!(on_disk(".platform_inbound_secret"), inbound);
    assert_eq!(s.app.db.count("workspace_config_edits").await, 0);

    // The names are ordinary elsewhere: below /configs' top, and under /workspace.
    for path in ["/sub/.auth_token", "/.auth_token?root=/workspace"] {
        let resp = s.put_json(&files(path), &json!({"content": "x"})).await;
        assert_eq!(resp.status, StatusCode::OK, "{path}: {}", resp.text);
        let resp = s.get(&files(path)).await;
        assert_eq!(resp.status, StatusCode::OK, "{path}: {}", resp.text);
        assert_eq!(resp.json["content"], "x");
    }
    let listed = s.get(&files("?root=/workspace")).await;
    assert!(paths(&listed.json).iter().any(|p| p == ".auth_token"));
}

#[tokio::test]
async fn the_agents_credentials_are_hidden_and_refused_sqlite() {
    the_agents_credentials_are_hidden_and_refused(false).await;
}

#[tokio::test]
async fn the_agents_credentials_are_hidden_and_refused_postgres() {
    the_agents_credentials_are_hidden_and_refused(true).await;
}

#[tokio::test]
async fn symlinks_planted_by_the_agent_are_refused() {
    let s = inside(false, false).await;
    let id = s.workspace("links").await;
    let dir = s.workspace_dir(id);
    std::os::unix::fs::symlink("/etc", dir.join("etc")).expect("link");
    let data = s.provisioner.config().root.clone();
    std::os::unix::fs::symlink(&data, dir.join("data")).expect("link");
    std::os::unix::fs::symlink("/etc/hostname", dir.join("hostname")).expect("link");
    let base = format!("/workspaces/{id}/files");
    for p in ["etc/passwd", "data", "hostname"] {
        let resp = s.get(&format!("{base}/{p}?root=/workspace")).await;
        assert_eq!(
            resp.status,
            StatusCode::BAD_REQUEST,
            "read {p}: {}",
            resp.text
        );
    }
    let resp = s.get(&format!("{base}?root=/workspace&path=etc")).await;
    assert_eq!(
        resp.status,
        StatusCode::BAD_REQUEST,
        "list through a link: {}",
        resp.text
    );
    let resp = s
        .put_json(
            &format!("{base}/etc/berth-owned?root=/workspace"),
            &json!({"content": "x"}),
        )
        .await;
    assert_eq!(
        resp.status,
        StatusCode::BAD_REQUEST,
        "write through a link: {}",
        resp.text
    );
    assert!(!std::path::Path::new("/etc/berth-owned").exists());
    let resp = s
        .put_json(
            &format!("{base}/data/x?root=/workspace"),
            &json!({"content": "x"}),
        )
        .await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{}", resp.text);
    // Deleting the link removes the link, never what it points at.
    let resp = s.delete(&format!("{base}/etc?root=/workspace")).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert!(std::path::Path::new("/etc/passwd").exists());
    assert!(!dir.join("etc").exists());
    // The listing does not show links.
    let listing = s.get(&format!("{base}?root=/workspace")).await;
    assert_eq!(listing.status, StatusCode::OK);
    assert!(paths(&listing.json).is_empty(), "{}", listing.text);
}

/// The guard: the admin bearer or the workspace's own live token.
#[tokio::test]
async fn only_the_admin_and_the_workspaces_own_token_get_in() {
    let s = inside(false, true).await;
    let id = s.workspace("mine").await;
    let other = s.workspace("other").await;
    let own = s.app.admin_mint(id).await;
    let foreign = s.app.admin_mint(other).await;
    let uri = format!("/workspaces/{id}/files");
    let exec = format!("/workspaces/{id}/exec");
    let cmd = json!({"cmd": ["true"]}).to_string();
    for (bearer, want) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some("nonsense"), StatusCode::UNAUTHORIZED),
        (Some(foreign.as_str()), StatusCode::UNAUTHORIZED),
        (Some(own.as_str()), StatusCode::OK),
        (Some(ADMIN_TOKEN), StatusCode::OK),
    ] {
        let resp = s
            .req(Method::GET, &uri, bearer, None, None, Body::empty())
            .await;
        assert_eq!(resp.status, want, "list with {bearer:?}: {}", resp.text);
        let resp = s
            .req(
                Method::POST,
                &exec,
                bearer,
                Some("application/json"),
                None,
                cmd.clone(),
            )
            .await;
        assert_eq!(resp.status, want, "exec with {bearer:?}: {}", resp.text);
        let resp = s
            .req(
                Method::GET,
                &format!("/workspaces/{id}/terminal/diagnose"),
                bearer,
                None,
                None,
                Body::empty(),
            )
            .await;
        assert_eq!(resp.status, want, "diagnose with {bearer:?}: {}", resp.text);
    }
    // A revoked token is refused.
    let tokens = s
        .req(
            Method::GET,
            &format!("/workspaces/{id}/tokens"),
            Some(ADMIN_TOKEN),
            None,
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.text);
    for t in tokens.json["tokens"].as_array().expect("tokens") {
        let tid = t["id"].as_str().expect("id");
        let resp = s
            .req(
                Method::DELETE,
                &format!("/workspaces/{id}/tokens/{tid}"),
                Some(ADMIN_TOKEN),
                None,
                None,
                Body::empty(),
            )
            .await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    }
    let resp = s
        .req(Method::GET, &uri, Some(&own), None, None, Body::empty())
        .await;
    assert_eq!(
        resp.status,
        StatusCode::UNAUTHORIZED,
        "revoked: {}",
        resp.text
    );
    let resp = s
        .req(
            Method::POST,
            &exec,
            Some(&own),
            Some("application/json"),
            None,
            cmd,
        )
        .await;
    assert_eq!(
        resp.status,
        StatusCode::UNAUTHORIZED,
        "revoked: {}",
        resp.text
    );
    // The terminal takes the credential as ?token= too, and refuses a foreign one before any
    // upgrade.
    let resp = s
        .req(
            Method::GET,
            &format!("/workspaces/{id}/terminal?token={foreign}"),
            None,
            None,
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{}", resp.text);
    let resp = s
        .req(
            Method::GET,
            &format!("/workspaces/{id}/terminal"),
            None,
            None,
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{}", resp.text);
}

/// External workspaces have their files on the agent's machine; a backend without a way in
/// says so; a removed workspace is gone.
#[tokio::test]
async fn external_and_unknown_workspaces_are_refused() {
    let s = inside(false, true).await;
    let (ext, _) = s
        .app
        .external(json!({"name": "ext", "runtime": "external"}))
        .await;
    let resp = s.get(&format!("/workspaces/{ext}/files")).await;
    assert_eq!(resp.status, StatusCode::CONFLICT, "{}", resp.text);
    assert!(
        resp.json["error"]
            .as_str()
            .expect("error")
            .contains("agent's machine")
    );
    let resp = s.exec(ext, &json!({"cmd": ["true"]})).await;
    assert_eq!(resp.status, StatusCode::CONFLICT, "{}", resp.text);
    let unknown = WorkspaceId::new_v4();
    let resp = s.get(&format!("/workspaces/{unknown}/files")).await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND);
    assert_eq!(resp.json, json!({"error": "workspace not found"}));
    let id = s.workspace("gone").await;
    assert_eq!(s.app.delete(id, "").await.status, StatusCode::OK);
    s.app.service.drain().await;
    let resp = s.get(&format!("/workspaces/{id}/files")).await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND, "{}", resp.text);

    // No backend: 501 with the reason.
    let none = Setup::default().start().await;
    let id = none
        .create_id(json!({"name": "nothing", "template": "echo"}))
        .await;
    none.service.drain().await;
    let resp = none
        .send(
            Request::builder()
                .uri(format!("/workspaces/{id}/files"))
                .header(header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(resp.status, StatusCode::NOT_IMPLEMENTED, "{}", resp.text);
}

/// A stopped process workspace keeps its files on the host: they stay readable, and a
/// `/configs` write is applied and kept for the next start.
#[tokio::test]
async fn a_paused_workspaces_files_stay_readable() {
    let s = inside(false, false).await;
    let id = s.workspace("paused").await;
    let resp = s.app.lifecycle(id, "pause").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    s.app.service.drain().await;
    let resp = s.get(&format!("/workspaces/{id}/files/config.yaml")).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    let resp = s
        .put_json(
            &format!("/workspaces/{id}/files/later.md"),
            &json!({"content": "L"}),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(
        resp.json["restart_scheduled"], false,
        "a paused workspace is not restarted"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    s.app.service.drain().await;
    assert_eq!(
        s.app.status_of(id).await,
        "paused",
        "a paused workspace is not restarted"
    );
    let resp = s.app.lifecycle(id, "resume").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    s.app.service.drain().await;
    assert_eq!(
        std::fs::read_to_string(s.configs(id).join("later.md")).expect("applied"),
        "L"
    );
}

async fn exec_runs_commands(postgres: bool) {
    let s = inside(postgres, true).await;
    let id = s.workspace("exec").await;
    let resp = s
        .exec(
            id,
            &json!({"cmd": ["sh", "-c", "echo out; echo err >&2; exit 3"]}),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(
        resp.json,
        json!({"exit_code": 3, "stdout": "out\n", "stderr": "err\n", "timed_out": false, "truncated": false})
    );
    // stdin, env, cwd as the workspace sees it.
    std::fs::create_dir_all(s.workspace_dir(id).join("sub")).expect("mkdir");
    let resp = s
        .exec(
            id,
            &json!({"cmd": ["sh", "-c", "cat; printf ' %s ' \"$GREETING\"; pwd"], "stdin": "in", "env": {"GREETING": "hi"}, "cwd": "/workspace/sub"}),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    let expected_dir = std::fs::canonicalize(s.workspace_dir(id).join("sub")).expect("canonical");
    assert_eq!(
        resp.json["stdout"],
        format!("in hi {}\n", expected_dir.display())
    );
    // Output past the limit is cut and flagged.
    let resp = s
        .exec(
            id,
            &json!({"cmd": ["sh", "-c", "head -c 5000 /dev/zero | tr '\\0' x"]}),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.json["truncated"], true);
    assert_eq!(resp.json["stdout"].as_str().expect("stdout").len(), 1000);
    assert_eq!(resp.json["exit_code"], 0);
    // A timeout kills the command and what it started.
    let started = std::time::Instant::now();
    let resp = s
        .exec(
            id,
            &json!({"cmd": ["sh", "-c", "sleep 30 & echo $!; sleep 30"], "timeout_secs": 1}),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the timeout held"
    );
    assert_eq!(resp.json["timed_out"], true);
    assert_eq!(resp.json["exit_code"], Value::Null);
    let child: u32 = resp.json["stdout"]
        .as_str()
        .expect("stdout")
        .trim()
        .parse()
        .expect("the background pid");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !crate::model::alive(child),
        "the background sleep {child} was killed"
    );
    // Refusals.
    for (body, want) in [
        (json!({"cmd": []}), StatusCode::BAD_REQUEST),
        (json!({"cmd": [""]}), StatusCode::BAD_REQUEST),
        (json!({"cmd": "ls"}), StatusCode::BAD_REQUEST),
        (
            json!({"cmd": ["ls"], "timeout_secs": 0}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"cmd": ["ls"], "cwd": "relative"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"cmd": ["ls"], "cwd": "/etc"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"cmd": ["ls"], "env": {"A=B": "x"}}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"cmd": ["no-such-program-berth"]}),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let resp = s.exec(id, &body).await;
        assert_eq!(resp.status, want, "{body}: {}", resp.text);
    }
    // Recorded: who and the command, never the input or the output.
    let rows = s.get(&format!("/workspaces/{id}/activity?type=exec")).await;
    let rows = rows.json.as_array().expect("rows").clone();
    assert!(rows.len() >= 4, "{rows:?}");
    let text = serde_json::to_string(&rows).expect("json");
    assert!(
        text.contains("echo out; echo err"),
        "the command is recorded"
    );
    assert!(!text.contains("\"in hi"), "the output is not");
    let metrics = s.get("/metrics").await;
    assert!(
        metrics
            .text
            .contains("berth_exec_total{outcome=\"nonzero\"} 1"),
        "{}",
        metrics.text
    );
    assert!(
        metrics
            .text
            .contains("berth_exec_total{outcome=\"timed_out\"} 1")
    );
    assert!(metrics.text.contains("berth_terminal_sessions 0"));
}

#[tokio::test]
async fn exec_runs_commands_sqlite() {
    exec_runs_commands(false).await;
}

#[tokio::test]
async fn exec_runs_commands_postgres() {
    exec_runs_commands(true).await;
}

/// The process backend's exec and terminal are a command or a shell on the host: off unless
/// the operator turns them on.
#[tokio::test]
async fn host_shell_is_off_by_default() {
    let s = inside(false, false).await;
    let id = s.workspace("locked").await;
    let resp = s.exec(id, &json!({"cmd": ["id"]})).await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN, "{}", resp.text);
    assert!(
        resp.json["error"]
            .as_str()
            .expect("error")
            .contains("--process-shell")
    );
    let resp = s.get(&format!("/workspaces/{id}/terminal/diagnose")).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.json["ok"], false);
    assert_eq!(resp.json["first_failure"], "terminal-enabled");
    assert_eq!(resp.json["remote"], false);
    let rows = s.get(&format!("/workspaces/{id}/activity?type=exec")).await;
    assert_eq!(
        rows.json,
        json!([]),
        "a refused exec ran nothing and recorded nothing"
    );

    let on = inside(false, true).await;
    let id = on.workspace("open").await;
    let resp = on.get(&format!("/workspaces/{id}/terminal/diagnose")).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.json["ok"], true, "{}", resp.text);
    let names: Vec<&str> = resp.json["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        ["workspace", "terminal-enabled", "running", "shell-probe"]
    );
}
