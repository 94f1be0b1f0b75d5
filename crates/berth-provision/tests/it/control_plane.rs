//! The control-plane provisioner against a `wiremock` fake of the control plane (REFERENCE.md
//! §5.2): what it sends, how it reads the answers, and how it fails.

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use berth_domain::WorkspaceId;
use berth_provision::{
    BackendKind, ControlPlaneConfig, ControlPlaneProvisioner, Error, ProvisionRequest, Provisioner,
    Started,
};
use secrecy::SecretString;
use serde_json::{Value, json};
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

/// Upper bound for a call that is expected to give up on its own much sooner.
const PATIENCE: Duration = Duration::from_secs(20);

const PROVISION: &str = "/cp/workspaces/provision";

fn secret(s: &str) -> SecretString {
    SecretString::from(s.to_owned())
}

/// Settings for the fake at `server`, with fast stop retries and no credentials.
fn config(server: &MockServer) -> ControlPlaneConfig {
    let mut config = ControlPlaneConfig::new(server.uri(), "org-1");
    config.stop_backoff = Duration::from_millis(10);
    // The fake speaks plain HTTP (the TLS tests are in `control_plane_tls.rs`).
    config.allow_plain_http = true;
    config
}

fn provisioner(config: ControlPlaneConfig) -> ControlPlaneProvisioner {
    ControlPlaneProvisioner::new(config).expect("valid control-plane config")
}

/// A minimal request: no template, no files, no compute.
fn request() -> ProvisionRequest {
    ProvisionRequest {
        workspace_id: WorkspaceId::new_v4(),
        name: "Test Agent".into(),
        runtime: "claude-code".into(),
        tier: 4,
        template_path: None,
        config_files: BTreeMap::new(),
        removed_config_files: Vec::new(),
        workspace_dir: None,
        workspace_access: "none".into(),
        compute: json!({}),
        platform_url: "http://platform.internal:8080".into(),
        env: vec![],
        secret_files: vec![],
    }
}

fn created(instance_id: &str, private_ip: &str) -> ResponseTemplate {
    ResponseTemplate::new(201).set_body_json(json!({
        "instance_id": instance_id,
        "private_ip": private_ip,
        "state": "pending",
        "error": "",
    }))
}

/// Answers every provision call with 201 for instance `i-1` at 10.0.0.5.
async fn accept_provision(server: &MockServer) {
    Mock::given(method("POST"))
        .and(path(PROVISION))
        .respond_with(created("i-1", "10.0.0.5"))
        .mount(server)
        .await;
}

async fn requests(server: &MockServer) -> Vec<Request> {
    server.received_requests().await.expect("recording is on")
}

fn body(request: &Request) -> Value {
    request.body_json().expect("JSON body")
}

fn header<'r>(request: &'r Request, name: &str) -> Option<&'r str> {
    request
        .headers
        .get(name)
        .map(|v| v.to_str().expect("ASCII header"))
}

fn b64(s: &str) -> String {
    BASE64.encode(s)
}

fn write(path: &Path, content: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

/// A template directory holding what the control plane gets and what it must not.
fn template(root: &Path) {
    write(&root.join("config.yaml"), "name: t\n");
    write(&root.join("prompts/system.md"), "be brief\n");
    write(&root.join("prompts/deep/more.md"), "more\n");
    write(&root.join("setup.sh"), "echo not shipped\n");
    write(&root.join("skills/x/SKILL.md"), "not shipped\n");
    write(&root.join("outside.md"), "linked, not shipped\n");
    symlink(root.join("outside.md"), root.join("prompts/linked.md")).unwrap();
    symlink(root.join("skills"), root.join("prompts/linked-dir")).unwrap();
}

#[tokio::test]
async fn start_sends_the_reference_body_and_returns_the_instance() {
    let server = MockServer::start().await;
    accept_provision(&server).await;
    let cp = provisioner(config(&server));
    let dir = tempfile::tempdir().unwrap();
    template(dir.path());

    let mut req = request();
    req.template_path = Some(dir.path().to_path_buf());
    req.config_files
        .insert("prompts/system.md".into(), b"overridden\n".to_vec());
    req.config_files
        .insert("./extra/settings.json".into(), b"{}".to_vec());
    req.secret_files = vec![(".platform_inbound_secret".into(), secret("inbound"))];
    req.compute = json!({
        "instance_type": "t3.large",
        "volume": {"root_gb": 60},
        "display": {"mode": "desktop-control", "protocol": "dcv"},
    });
    req.env = [
        ("MODEL", "sonnet"),
        ("GITEA_TOKEN", "x"),
        ("GITHUB_TOKEN", "x"),
        ("GH_TOKEN", "x"),
        ("GITLAB_TOKEN", "x"),
        ("GL_TOKEN", "x"),
        ("BITBUCKET_TOKEN", "x"),
        ("GH_PAT", "kept: no alias on this backend"),
        ("MODEL", "opus"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), secret(v)))
    .collect();
    let id = req.workspace_id;

    let started = cp.start(req).await.unwrap();
    assert_eq!(
        started,
        Started {
            url: Some("http://10.0.0.5:8000".into()),
            instance_id: Some("i-1".into()),
        }
    );
    let seen = requests(&server).await;
    assert_eq!(seen.len(), 1);
    assert_eq!(
        header(&seen[0], "content-type"),
        Some("application/json"),
        "JSON is declared"
    );
    assert_eq!(
        body(&seen[0]),
        json!({
            "org_id": "org-1",
            "workspace_id": id.to_string(),
            "runtime": "claude-code",
            "tier": 4,
            "instance_type": "t3.large",
            "disk_gb": 60,
            "display": {"mode": "desktop-control", "protocol": "dcv"},
            "platform_url": "http://platform.internal:8080",
            "env": {"MODEL": "opus", "GH_PAT": "kept: no alias on this backend"},
            "config_files": {
                "config.yaml": b64("name: t\n"),
                "prompts/system.md": b64("overridden\n"),
                "prompts/deep/more.md": b64("more\n"),
                "extra/settings.json": b64("{}"),
                ".platform_inbound_secret": b64("inbound"),
            },
        })
    );
}

#[tokio::test]
async fn start_omits_empty_fields_and_keeps_an_empty_display() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(PROVISION))
        .respond_with(created("i-2", ""))
        .mount(&server)
        .await;
    let cp = provisioner(config(&server));
    let req = request();
    let id = req.workspace_id;

    let started = cp.start(req).await.unwrap();
    assert_eq!(
        started,
        Started {
            url: None,
            instance_id: Some("i-2".into()),
        },
        "no private IP, no URL"
    );
    assert_eq!(
        body(&requests(&server).await[0]),
        json!({
            "org_id": "org-1",
            "workspace_id": id.to_string(),
            "runtime": "claude-code",
            "tier": 4,
            "display": {},
            "platform_url": "http://platform.internal:8080",
            "env": {},
        })
    );
}

#[tokio::test]
async fn credentials_go_only_where_they_belong() {
    let server = MockServer::start().await;
    accept_provision(&server).await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"output": "", "state": ""})))
        .mount(&server)
        .await;

    // Everything set: provision routes carry the shared secret, admin routes the admin key.
    let mut all = config(&server);
    all.shared_secret = Some(secret("shared"));
    all.tenant_token = Some(secret("tenant"));
    all.admin_api_key = Some(secret("admin-key"));
    let cp = provisioner(all);
    let req = request();
    let id = req.workspace_id;
    cp.start(req).await.unwrap();
    cp.status(id, "i-1").await.unwrap();
    cp.console(id).await.unwrap();
    let seen = requests(&server).await;
    for provision_route in &seen[..2] {
        assert_eq!(
            header(provision_route, "authorization"),
            Some("Bearer shared")
        );
        assert_eq!(
            header(provision_route, "x-molecule-admin-token"),
            Some("tenant")
        );
    }
    assert_eq!(header(&seen[2], "authorization"), Some("Bearer admin-key"));
    assert_eq!(header(&seen[2], "x-molecule-admin-token"), Some("tenant"));
    server.reset().await;

    // No admin key: the admin route falls back to the shared secret.
    accept_provision(&server).await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"output": ""})))
        .mount(&server)
        .await;
    let mut shared_only = config(&server);
    shared_only.shared_secret = Some(secret("shared"));
    shared_only.admin_api_key = Some(secret(""));
    provisioner(shared_only).console(id).await.unwrap();
    let seen = requests(&server).await;
    assert_eq!(header(&seen[0], "authorization"), Some("Bearer shared"));
    assert_eq!(header(&seen[0], "x-molecule-admin-token"), None);
    server.reset().await;

    // Nothing set (or set empty): no credential header at all.
    accept_provision(&server).await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"output": ""})))
        .mount(&server)
        .await;
    let mut none = config(&server);
    none.tenant_token = Some(secret(""));
    let cp = provisioner(none);
    cp.start(request()).await.unwrap();
    cp.console(id).await.unwrap();
    for request in requests(&server).await {
        assert_eq!(header(&request, "authorization"), None);
        assert_eq!(header(&request, "x-molecule-admin-token"), None);
    }
}

#[tokio::test]
async fn a_refused_start_quotes_only_the_error_field() {
    let server = MockServer::start().await;
    let raw = json!({"error": "quota", "detail": "RAW-BODY-DETAIL"});
    Mock::given(method("POST"))
        .and(path(PROVISION))
        .respond_with(ResponseTemplate::new(500).set_body_json(&raw))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(PROVISION))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": "unknown runtime"})))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(PROVISION))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>SECRET-PAGE</html>"))
        .mount(&server)
        .await;
    let cp = provisioner(config(&server));

    let err = cp.start(request()).await.unwrap_err();
    assert_eq!(err.code(), "BACKEND_ERROR", "a 5xx is the backend failing");
    let text = err.to_string();
    assert!(text.contains("quota"), "{text}");
    assert!(text.contains("500"), "{text}");
    assert!(!text.contains("RAW-BODY-DETAIL"), "{text}");

    let err = cp.start(request()).await.unwrap_err();
    assert_eq!(err.code(), "START_FAILED");
    assert!(err.to_string().contains("unknown runtime"), "{err}");

    let err = cp.start(request()).await.unwrap_err();
    assert_eq!(err.code(), "START_FAILED", "only 201 is success");
    assert!(!err.to_string().contains("SECRET-PAGE"), "{err}");
}

#[tokio::test]
async fn a_hanging_control_plane_times_out() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(created("i-1", "10.0.0.5").set_delay(Duration::from_secs(60)))
        .mount(&server)
        .await;
    let mut short = config(&server);
    short.timeout = Duration::from_millis(300);
    let cp = provisioner(short);

    let err = tokio::time::timeout(PATIENCE, cp.start(request()))
        .await
        .expect("the configured timeout, not the test's, ends the call")
        .unwrap_err();
    assert!(matches!(err, Error::Timeout), "{err:?}");
    assert_eq!(err.code(), "TIMEOUT");
}

#[tokio::test]
async fn an_unreachable_control_plane_is_a_backend_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cp = provisioner(ControlPlaneConfig {
        allow_plain_http: true,
        ..ControlPlaneConfig::new(format!("http://127.0.0.1:{port}"), "org-1")
    });
    let id = WorkspaceId::new_v4();
    assert_eq!(
        cp.start(request()).await.unwrap_err().code(),
        "BACKEND_ERROR"
    );
    assert_eq!(
        cp.status(id, "i-1").await.unwrap_err().code(),
        "BACKEND_ERROR",
        "not knowing is never \"not running\""
    );
    assert_eq!(cp.console(id).await.unwrap_err().code(), "BACKEND_ERROR");
}

#[tokio::test]
async fn config_files_over_the_cap_fail_the_start_and_a_raised_cap_passes() {
    let server = MockServer::start().await;
    accept_provision(&server).await;
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("config.yaml"), "name: t\n");
    write(&dir.path().join("prompts/big.md"), &"p".repeat(13_000));
    let mut req = request();
    req.template_path = Some(dir.path().to_path_buf());

    let err = provisioner(config(&server))
        .start(req.clone())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "START_FAILED");
    let text = err.to_string();
    assert!(text.contains("13008"), "names the total size: {text}");
    assert!(text.contains("12288"), "names the limit: {text}");
    assert!(requests(&server).await.is_empty(), "nothing was sent");

    // Files outside config.yaml and prompts/ do not count.
    write(&dir.path().join("data/huge.bin"), &"d".repeat(100_000));
    let mut raised = config(&server);
    raised.config_files_cap = 64 * 1024;
    provisioner(raised).start(req).await.unwrap();
    let files = body(&requests(&server).await[0])["config_files"].clone();
    assert_eq!(
        files.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["config.yaml", "prompts/big.md"]
    );
}

#[tokio::test]
async fn in_memory_files_count_towards_the_cap() {
    let server = MockServer::start().await;
    accept_provision(&server).await;
    let mut small = config(&server);
    small.config_files_cap = 10;
    let mut req = request();
    req.config_files
        .insert("config.yaml".into(), b"0123456789".to_vec());
    req.secret_files = vec![(".auth_token".into(), secret("t"))];

    let err = provisioner(small).start(req).await.unwrap_err();
    assert_eq!(err.code(), "START_FAILED");
    assert!(err.to_string().contains("11 bytes"), "{err}");
}

#[tokio::test]
async fn unsafe_template_roots_and_paths_are_refused() {
    let server = MockServer::start().await;
    accept_provision(&server).await;
    let cp = provisioner(config(&server));
    let dir = tempfile::tempdir().unwrap();
    template(&dir.path().join("real"));
    symlink(dir.path().join("real"), dir.path().join("link")).unwrap();

    let mut linked = request();
    linked.template_path = Some(dir.path().join("link"));
    let err = cp.start(linked).await.unwrap_err();
    assert_eq!(err.code(), "START_FAILED");
    assert!(err.to_string().contains("symlink"), "{err}");

    for bad in ["../escape.yaml", "/etc/passwd", "a/../../b", ""] {
        let mut req = request();
        req.config_files.insert(bad.into(), b"x".to_vec());
        let err = cp.start(req).await.unwrap_err();
        assert_eq!(err.code(), "START_FAILED", "{bad}");
    }
    assert!(requests(&server).await.is_empty(), "nothing was sent");
}

#[tokio::test]
async fn stop_retries_until_the_control_plane_agrees() {
    let server = MockServer::start().await;
    let id = WorkspaceId::new_v4();
    let route = format!("/cp/workspaces/{id}");
    Mock::given(method("DELETE"))
        .and(path(&route))
        .and(query_param("instance_id", "i-1"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path(&route))
        .and(query_param("instance_id", "i-1"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let mut shared = config(&server);
    shared.shared_secret = Some(secret("shared"));

    provisioner(shared).stop_instance(id, "i-1").await.unwrap();
    let seen = requests(&server).await;
    assert_eq!(seen.len(), 3);
    assert!(
        seen.iter()
            .all(|r| header(r, "authorization") == Some("Bearer shared")),
        "stop is a provision route"
    );
}

#[tokio::test]
async fn stop_gives_up_after_the_configured_attempts() {
    let server = MockServer::start().await;
    Mock::given(method("DELETE"))
        .respond_with(ResponseTemplate::new(500).set_body_string("x".repeat(5000)))
        .mount(&server)
        .await;
    let cp = provisioner(config(&server));
    let id = WorkspaceId::new_v4();

    let err = cp.stop_instance(id, "i-1").await.unwrap_err();
    assert_eq!(err.code(), "BACKEND_ERROR");
    let text = err.to_string();
    assert!(text.contains("500"), "{text}");
    assert!(text.contains("xxxx"), "quotes the body: {text}");
    assert!(!text.contains(&"x".repeat(513)), "at most 512 bytes of it");
    assert_eq!(requests(&server).await.len(), 3);

    server.reset().await;
    Mock::given(method("DELETE"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;
    let mut once = config(&server);
    once.stop_retries = 1;
    provisioner(once)
        .stop_instance(id, "i-1")
        .await
        .unwrap_err();
    assert_eq!(requests(&server).await.len(), 1);
}

#[tokio::test]
async fn stopping_without_an_instance_id_sends_nothing() {
    let server = MockServer::start().await;
    let cp = provisioner(config(&server));
    let id = WorkspaceId::new_v4();

    cp.stop_instance(id, "").await.unwrap();
    cp.stop(id).await.unwrap();
    assert!(!cp.status(id, "").await.unwrap());
    assert!(!cp.is_running(id).await.unwrap());
    assert!(requests(&server).await.is_empty());
    assert_eq!(cp.kind(), BackendKind::ControlPlane);
}

#[tokio::test]
async fn status_is_running_only_for_the_running_state() {
    let server = MockServer::start().await;
    let id = WorkspaceId::new_v4();
    let route = format!("/cp/workspaces/{id}/status");
    for (instance, answer) in [
        (
            "i-run",
            ResponseTemplate::new(200).set_body_json(json!({"state": "running"})),
        ),
        (
            "i-stop",
            ResponseTemplate::new(200).set_body_json(json!({"state": "stopped"})),
        ),
        (
            "i-500",
            ResponseTemplate::new(500).set_body_json(json!({"error": "db down"})),
        ),
        (
            "i-junk",
            ResponseTemplate::new(200).set_body_string("not json"),
        ),
    ] {
        Mock::given(method("GET"))
            .and(path(&route))
            .and(query_param("instance_id", instance))
            .respond_with(answer)
            .mount(&server)
            .await;
    }
    let cp = provisioner(config(&server));

    assert!(cp.status(id, "i-run").await.unwrap());
    assert!(!cp.status(id, "i-stop").await.unwrap());
    let err = cp.status(id, "i-500").await.unwrap_err();
    assert_eq!(err.code(), "BACKEND_ERROR");
    assert!(err.to_string().contains("db down"), "{err}");
    assert_eq!(
        cp.status(id, "i-junk").await.unwrap_err().code(),
        "BACKEND_ERROR"
    );
}

#[tokio::test]
async fn the_trait_reaches_the_instance_it_started() {
    let server = MockServer::start().await;
    accept_provision(&server).await;
    let cp = provisioner(config(&server));
    let req = request();
    let id = req.workspace_id;
    Mock::given(method("GET"))
        .and(path(format!("/cp/workspaces/{id}/status")))
        .and(query_param("instance_id", "i-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"state": "running"})))
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path(format!("/cp/workspaces/{id}")))
        .and(query_param("instance_id", "i-1"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;

    cp.start(req).await.unwrap();
    assert!(cp.is_running(id).await.unwrap());
    cp.stop(id).await.unwrap();
    // Stopped and forgotten: a second stop and a status check send nothing.
    cp.stop(id).await.unwrap();
    assert!(!cp.is_running(id).await.unwrap());
    let methods: Vec<String> = requests(&server)
        .await
        .iter()
        .map(|r| r.method.to_string())
        .collect();
    assert_eq!(methods, ["POST", "GET", "DELETE"]);
}

#[tokio::test]
async fn a_restart_stops_the_previous_instance_first() {
    let server = MockServer::start().await;
    accept_provision(&server).await;
    let req = request();
    let id = req.workspace_id;
    Mock::given(method("DELETE"))
        .and(path(format!("/cp/workspaces/{id}")))
        .and(query_param("instance_id", "i-old"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let cp = provisioner(config(&server));
    cp.track(id, "i-old");

    cp.start(req).await.unwrap();
    let methods: Vec<String> = requests(&server)
        .await
        .iter()
        .map(|r| r.method.to_string())
        .collect();
    assert_eq!(methods, ["DELETE", "POST"]);
}

#[tokio::test]
async fn the_instance_id_is_url_escaped() {
    let server = MockServer::start().await;
    let id = WorkspaceId::new_v4();
    let instance = "i-1 & x=y#z";
    Mock::given(method("DELETE"))
        .and(path(format!("/cp/workspaces/{id}")))
        .and(query_param("instance_id", instance))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/cp/workspaces/{id}/status")))
        .and(query_param("instance_id", instance))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"state": "running"})))
        .mount(&server)
        .await;
    let cp = provisioner(config(&server));

    cp.stop_instance(id, instance).await.unwrap();
    assert!(cp.status(id, instance).await.unwrap());
    for request in requests(&server).await {
        assert_eq!(request.url.query(), Some("instance_id=i-1+%26+x%3Dy%23z"));
        assert_eq!(
            request.url.query_pairs().collect::<Vec<_>>(),
            [("instance_id".into(), instance.into())],
            "one parameter, nothing injected"
        );
    }
}

#[tokio::test]
async fn console_returns_the_output_from_the_admin_route() {
    let server = MockServer::start().await;
    let id = WorkspaceId::new_v4();
    let route = format!("/cp/admin/workspaces/{id}/console");
    Mock::given(method("GET"))
        .and(path(&route))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"output": "boot ok\n"})))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    let long = format!("{}END", "l".repeat(300 * 1024));
    Mock::given(method("GET"))
        .and(path(&route))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"output": long})))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(&route))
        .respond_with(
            ResponseTemplate::new(404).set_body_json(json!({"error": "no such instance"})),
        )
        .mount(&server)
        .await;
    let mut admin = config(&server);
    admin.admin_api_key = Some(secret("admin-key"));
    let cp = provisioner(admin);

    assert_eq!(cp.console(id).await.unwrap(), "boot ok\n");
    let capped = cp.console(id).await.unwrap();
    assert_eq!(capped.len(), 256 * 1024, "capped at 256 KiB");
    assert!(capped.ends_with("END"), "keeps the most recent output");
    let err = cp.console(id).await.unwrap_err();
    assert_eq!(err.code(), "BACKEND_ERROR");
    assert!(err.to_string().contains("no such instance"), "{err}");
    assert_eq!(
        header(&requests(&server).await[0], "authorization"),
        Some("Bearer admin-key")
    );
}

#[tokio::test]
async fn a_base_url_with_a_path_prefix_is_kept() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("/prefix{PROVISION}")))
        .respond_with(created("i-1", "10.0.0.5"))
        .mount(&server)
        .await;
    let mut prefixed = config(&server);
    prefixed.base_url = format!("{}/prefix/", server.uri());

    provisioner(prefixed).start(request()).await.unwrap();
}

#[tokio::test]
async fn the_provisioner_port_hands_out_the_console_only_for_a_control_plane() {
    let server = MockServer::start().await;
    let id = WorkspaceId::new_v4();
    Mock::given(method("GET"))
        .and(path(format!("/cp/admin/workspaces/{id}/console")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"output": "login:"})))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/cp/admin/workspaces/{id}/console")))
        .respond_with(ResponseTemplate::new(502).set_body_json(json!({"error": "ec2 down"})))
        .mount(&server)
        .await;
    let mut admin = config(&server);
    admin.admin_api_key = Some(secret("admin-key"));
    let cp: Box<dyn berth_provision::Provisioner> = Box::new(provisioner(admin));
    assert_eq!(cp.console(id).await.unwrap().as_deref(), Some("login:"));
    assert_eq!(cp.console(id).await.unwrap_err().code(), "BACKEND_ERROR");
    let none: Box<dyn berth_provision::Provisioner> = Box::new(berth_provision::NoBackend);
    assert_eq!(
        none.console(id).await.unwrap(),
        None,
        "no console without a control plane"
    );
}
