//! Server modes: `--dev` is loopback-only, only `--dev` opens the admin routes, and a secret key
//! ring that cannot open the stored secrets (wrong or missing key) refuses to start.

use std::fs::File;
use std::process::Stdio;
use std::time::Duration;

use crate::server::{Server, berth_command, free_port, repo_root, wait_for};

#[tokio::test]
async fn dev_mode_refuses_a_non_loopback_listen_address() {
    let root = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let listen = format!("0.0.0.0:{port}");
    let stderr = refused_start(&root.path().join("data"), &listen, &["--dev"]).await;
    assert!(
        stderr.contains("--dev only listens on loopback addresses"),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("0.0.0.0:{port}")), "{stderr}");
}

#[tokio::test]
async fn admin_routes_need_the_token_unless_dev() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&root.path().join("data"), &[]).await;
    let (status, body) = server
        .call(reqwest::Method::GET, "/workspaces", None, None)
        .await;
    assert_eq!(status, 401);
    assert_eq!(body, serde_json::json!({"error": "admin auth required"}));
    let (status, body) = server
        .call(reqwest::Method::GET, "/workspaces", Some("wrong"), None)
        .await;
    assert_eq!(status, 401);
    assert_eq!(
        body,
        serde_json::json!({"error": "invalid admin auth token"})
    );
    let (status, body) = server
        .call(
            reqwest::Method::GET,
            "/workspaces",
            Some(&server.admin_token),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body, serde_json::json!([]));
    // Its generation is announced once (the value itself only on a terminal: see below).
    assert!(server.log_text().contains("generated admin token"));
    drop(server);

    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&root.path().join("data"), &["--dev"]).await;
    let (status, body) = server
        .call(reqwest::Method::GET, "/workspaces", None, None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, serde_json::json!([]));
    let (status, _) = server
        .call(
            reqwest::Method::POST,
            "/workspaces",
            None,
            Some(&serde_json::json!({"name": "dev", "external": true})),
        )
        .await;
    assert_eq!(status, 201);
    assert!(server.log_text().contains("DEVELOPMENT MODE"));
}

/// stderr is a file here, not a terminal: the generated admin token's value never appears in
/// it, on the first start or later ones; where the token file is does.
#[tokio::test]
async fn the_admin_token_stays_out_of_stderr_that_is_not_a_terminal() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let token_path = data.join("admin-token").display().to_string();
    let mut server = Server::start(&data, &[]).await;
    let first = server.log_text();
    assert!(
        first.contains("generated admin token (not shown: stderr is not a terminal)"),
        "{first}"
    );
    assert!(
        first.contains(&format!("admin token in {token_path}")),
        "{first}"
    );
    assert!(
        !first.contains(&server.admin_token),
        "token value on stderr"
    );
    let token = server.admin_token.clone();
    server.stop().await;

    // A restart reads the same file and says where it is, again without the value.
    let mut server = Server::start(&data, &[]).await;
    assert_eq!(server.admin_token, token);
    let second = server.log_text();
    assert!(!second.contains("generated admin token"), "{second}");
    assert!(
        second.contains(&format!("admin token in {token_path}")),
        "{second}"
    );
    assert!(!second.contains(&token), "token value on stderr");
    server.stop().await;
}

/// A free loopback address to listen on.
fn loopback() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// Runs `berth serve` on `listen` expecting it to refuse to start; returns its stderr.
async fn refused_start(data_dir: &std::path::Path, listen: &str, extra: &[&str]) -> String {
    let log = data_dir.with_extension("refused.log");
    let mut child = berth_command()
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--listen")
        .arg(listen)
        .arg("--templates-dir")
        .arg(repo_root().join("fixtures/templates"))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log).expect("log"))
        .spawn()
        .expect("spawn");
    let status = wait_for("berth to refuse to start", Duration::from_secs(30), || {
        let r = child.try_wait();
        async move {
            match r {
                Ok(Some(s)) => Ok(s),
                Ok(None) => Err("still running".to_owned()),
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await
    .to_owned();
    if child.try_wait().ok().flatten().is_none() {
        let _ = child.kill();
    }
    let stderr = std::fs::read_to_string(&log).expect("stderr");
    assert!(!status.success(), "berth started: {stderr}");
    stderr
}

#[tokio::test]
async fn a_wrong_or_missing_secret_key_refuses_to_start_and_the_right_one_serves() {
    use secrecy::ExposeSecret as _;
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let mut server = Server::start(&data, &[]).await;
    let (status, body) = server
        .admin_post(
            "/admin/secrets",
            &serde_json::json!({"key": "API_KEY", "value": "sealed-value-1"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    server.stop().await;
    let key_file = data.join("secret-keys");
    let original = std::fs::read_to_string(&key_file).expect("generated key file");
    assert!(original.starts_with("k1:"));

    // A wrong key under the right id (a key file regenerated or copied from elsewhere).
    let impostor = berth_store::KeyRing::generate_line("k1");
    std::fs::write(&key_file, format!("{}\n", impostor.expose_secret())).unwrap();
    let stderr = refused_start(&data, &loopback(), &[]).await;
    assert!(stderr.contains("refusing to start"), "{stderr}");
    assert!(
        stderr.contains("\"k1\" (present, but it does not open the values sealed with it)"),
        "{stderr}"
    );
    assert!(stderr.contains(&key_file.display().to_string()), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "secret key ring ({}) cannot open",
            key_file.display()
        )),
        "the message reads as one sentence: {stderr}"
    );
    assert!(
        !stderr.contains(impostor.expose_secret()),
        "key material logged"
    );
    assert!(!stderr.contains(original.trim()), "key material logged");

    // A missing key file: a new key is generated, which cannot open the old values either.
    std::fs::remove_file(&key_file).unwrap();
    let stderr = refused_start(&data, &loopback(), &[]).await;
    assert!(
        stderr.contains("\"k1\" (present, but it does not open"),
        "{stderr}"
    );

    // A configured ring that lacks the key in use.
    let other = berth_store::KeyRing::generate_line("k2");
    let stderr = refused_start(
        &data,
        &loopback(),
        &["--secret-keys", other.expose_secret()],
    )
    .await;
    assert!(
        stderr.contains("\"k1\" (missing from the key ring)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("--secret-keys / BERTH_SECRET_KEYS"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(other.expose_secret()),
        "key material logged"
    );

    // The right key (restored file) serves, and the secret is still there; a ring with a new
    // key first and the old one after it serves too (the rotation set-up).
    std::fs::write(&key_file, &original).unwrap();
    let mut server = Server::start(&data, &[]).await;
    let (status, body) = server
        .call(
            reqwest::Method::GET,
            "/admin/secrets",
            Some(&server.admin_token),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body[0]["key"], "API_KEY", "{body}");
    server.stop().await;
    let ring = format!("{}\n{}", other.expose_secret(), original.trim());
    let mut server = Server::start(&data, &["--secret-keys", &ring]).await;
    server.stop().await;
}

/// `--rate-limit`, `--cors-origins` and `--trusted-proxies` parse and take effect; a bad
/// proxy entry refuses to start.
#[tokio::test]
async fn rate_limit_cors_and_proxy_flags() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(
        &root.path().join("data"),
        &[
            "--rate-limit",
            "2",
            "--cors-origins",
            "https://canvas.example,https://other.example",
            "--trusted-proxies",
            "10.0.0.0/8,192.0.2.7",
        ],
    )
    .await;
    let get = |origin: Option<&str>| {
        let mut req = server
            .http
            .get(format!("{}/workspaces", server.base))
            .bearer_auth(&server.admin_token);
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        req.send()
    };
    // A refused origin ends before the limiter.
    let resp = get(Some("http://localhost:3000")).await.expect("request");
    assert_eq!(resp.status(), 403);
    let resp = get(Some("https://canvas.example")).await.expect("request");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://canvas.example"
    );
    assert_eq!(resp.headers()["x-ratelimit-limit"], "2");
    assert_eq!(resp.headers()["x-ratelimit-remaining"], "1");
    let resp = get(None).await.expect("request");
    assert_eq!(resp.status(), 200);
    let resp = get(None).await.expect("request");
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["error"], "rate limit exceeded");
    drop(server);

    // The harness default (`RATE_LIMIT=0`): no limiter, no headers.
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&root.path().join("data"), &[]).await;
    let resp = server
        .http
        .get(format!("{}/health", server.base))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    assert!(!resp.headers().contains_key("x-ratelimit-limit"));
    drop(server);

    let root = tempfile::tempdir().expect("tempdir");
    let stderr = refused_start(
        &root.path().join("data"),
        &loopback(),
        &["--trusted-proxies", "10.0.0.0/8,not-an-address"],
    )
    .await;
    assert!(
        stderr.contains("`not-an-address` is neither an IP address nor a CIDR network"),
        "{stderr}"
    );
}
