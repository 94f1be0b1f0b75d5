//! Starts that must fail, with the right code and nothing left behind, and daemon errors that
//! must stay errors.

use axum::http::StatusCode;
use berth_provision::Provisioner;

use super::*;

/// A platform URL for starts that fail before their agent could use it: not a loopback one (a
/// bridge container could never reach that, which fails the start first), and a reserved name
/// that resolves nowhere.
const UNUSED_PLATFORM: &str = "http://platform.invalid:9";

#[tokio::test]
async fn a_bridge_container_handed_a_loopback_platform_url_is_platform_unreachable() {
    let sandbox = Sandbox::new().await;
    let p = sandbox.provisioner().await;
    let req = sandbox.request(2, "http://127.0.0.1:9");
    let id = req.workspace_id;

    let err = p.start(req).await.unwrap_err();
    assert_eq!(err.code(), "PLATFORM_UNREACHABLE");
    let msg = err.to_string();
    for fix in ["--listen", "--platform-url", "--docker-network", "tier 4"] {
        assert!(msg.contains(fix), "names {fix}: {msg}");
    }
    // Refused before anything was created.
    assert_eq!(sandbox.leftovers(id).await, Vec::<String>::new());

    // With an address on the bridge, the same request gets that URL instead.
    let p = sandbox
        .provisioner_with(|c| c.bridge_platform_url = Some(UNUSED_PLATFORM.to_owned()))
        .await;
    let mut req = sandbox.request(2, "http://127.0.0.1:9");
    req.env
        .push(("AGENT_HOST".into(), secret("not-an-address")));
    let err = p.start(req).await.unwrap_err();
    assert_eq!(err.code(), "START_FAILED", "{err}");
}

#[tokio::test]
async fn a_runtime_without_an_image_is_image_not_found() {
    let sandbox = Sandbox::new().await;
    let p = sandbox.provisioner().await;
    let mut req = sandbox.request(2, UNUSED_PLATFORM);
    let id = req.workspace_id;
    req.runtime = "hermes".into();

    let err = p.start(req).await.unwrap_err();
    assert_eq!(err.code(), "IMAGE_NOT_FOUND");
    assert!(err.to_string().contains("hermes"), "{err}");
    assert_eq!(sandbox.leftovers(id).await, Vec::<String>::new());
}

#[tokio::test]
async fn an_image_that_cannot_be_pulled_is_image_not_found() {
    let sandbox = Sandbox::new().await;
    // A registry on a closed loopback port: the daemon's pull fails at once, reaching nothing.
    let missing = format!("127.0.0.1:9/berth-missing:{}", WorkspaceId::new_v4());
    let p = sandbox
        .provisioner_with(|c| {
            c.images.insert("ghost".into(), missing.clone());
            c.pull_timeout = Duration::from_secs(30);
        })
        .await;
    let mut req = sandbox.request(2, UNUSED_PLATFORM);
    let id = req.workspace_id;
    req.runtime = "ghost".into();

    let err = tokio::time::timeout(PATIENCE, p.start(req))
        .await
        .expect("the pull is bounded")
        .unwrap_err();
    assert_eq!(err.code(), "IMAGE_NOT_FOUND");
    let msg = err.to_string();
    assert!(
        msg.contains("ghost") && msg.contains("berth-missing"),
        "{msg}"
    );
    assert!(msg.contains("pulling it failed"), "{msg}");
    assert_eq!(sandbox.leftovers(id).await, Vec::<String>::new());
}

#[tokio::test]
async fn an_agent_that_exits_at_once_fails_the_start_with_its_log() {
    let sandbox = Sandbox::new().await;
    let p = sandbox.provisioner().await;
    let mut req = sandbox.request(2, UNUSED_PLATFORM);
    let id = req.workspace_id;
    // berth-agent refuses to start on a bad AGENT_HOST and says why.
    req.env
        .push(("AGENT_HOST".into(), secret("not-an-address")));

    let err = p.start(req).await.unwrap_err();
    assert_eq!(err.code(), "START_FAILED");
    let msg = err.to_string();
    // The exit code is the one the daemon shows when it looks: 1, or (when the restart policy
    // has already started the container again) the new run's; the restart count says which.
    assert!(
        msg.contains("exit code 1") || msg.contains("restarts: "),
        "{msg}"
    );
    assert!(msg.contains("exited at once"), "{msg}");
    assert!(msg.contains("AGENT_HOST"), "{msg}");
    assert!(!p.is_running(id).await.unwrap());
    // The failed container is gone; the volumes stay for the next attempt (or purge).
    let leftovers = sandbox.leftovers(id).await;
    assert!(
        leftovers.iter().all(|l| !l.starts_with('/')),
        "{leftovers:?}"
    );
}

#[tokio::test]
async fn a_start_the_daemon_refuses_is_start_failed() {
    let sandbox = Sandbox::new().await;
    let p = sandbox.provisioner().await;
    let mut req = sandbox.request(2, UNUSED_PLATFORM);
    let id = req.workspace_id;
    req.workspace_dir = Some(format!("/nonexistent/berth-test-{id}"));
    req.workspace_access = "read_write".into();

    let err = p.start(req).await.unwrap_err();
    assert_eq!(err.code(), "START_FAILED");
    assert!(err.to_string().contains("berth-test-"), "{err}");
    assert!(!p.is_running(id).await.unwrap());
}

/// A daemon that answers the handshake and fails everything else with a 500.
async fn hiccuping_daemon(socket: &std::path::Path) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::UnixListener::bind(socket).unwrap();
    let app = Router::new().fallback(|uri: Uri| async move {
        let path = uri.path();
        if path.ends_with("/_ping") {
            (StatusCode::OK, "OK".to_owned())
        } else if path.ends_with("/version") {
            (
                StatusCode::OK,
                r#"{"ApiVersion":"1.41","Version":"20.10.0"}"#.to_owned(),
            )
        } else {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                r#"{"message":"daemon hiccup"}"#.to_owned(),
            )
        }
    });
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    })
}

#[tokio::test]
async fn daemon_errors_are_errors_never_not_running() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    let server = hiccuping_daemon(&socket).await;
    let mut config = DockerConfig::new().with_image(RUNTIME, IMAGE);
    config.socket = socket.display().to_string();
    let p = DockerProvisioner::connect(config)
        .await
        .expect("the handshake succeeds");
    let id = WorkspaceId::new_v4();

    let err = p.is_running(id).await.unwrap_err();
    assert_eq!(err.code(), "BACKEND_ERROR");
    assert!(err.to_string().contains("daemon hiccup"), "{err}");
    assert_eq!(p.stop(id).await.unwrap_err().code(), "BACKEND_ERROR");
    assert_eq!(p.list_managed().await.unwrap_err().code(), "BACKEND_ERROR");
    assert_eq!(
        p.remove_volumes(id).await.unwrap_err().code(),
        "BACKEND_ERROR"
    );
    server.abort();
}

#[tokio::test]
async fn connect_fails_without_a_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = DockerConfig::new();
    config.socket = dir.path().join("absent.sock").display().to_string();
    let err = DockerProvisioner::connect(config).await.unwrap_err();
    assert_eq!(err.code(), "BACKEND_ERROR");
    assert!(err.to_string().contains("absent.sock"), "{err}");
}
