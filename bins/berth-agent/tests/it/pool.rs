//! Warm-pool mode (`berth.pool.v1`, docs/warm-pool.md): a member started with `.pool_secret`
//! and no token serves but does not register until the platform claims it, then registers and
//! heartbeats as the claimed workspace; with a token the pool routes do not exist.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::StatusCode;

use super::*;

/// The id every spawned agent gets (`Agent::spawn_in`).
const WORKSPACE_ID: &str = "6f1d2c3b-4a5e-4f60-8a7b-9c0d1e2f3a4b";
const SECRET: &str = "pool-s3cret-9f8e7d";
const TOKEN: &str = "tok-pool-4b3a";
const INBOUND: &str = "inbound-s3cret-1c2d";
const ENV_SECRET: &str = "env-s3cret-value-5e6f";

fn http() -> reqwest::Client {
    berth_agent::install_tls_provider();
    reqwest::Client::new()
}

/// Every path under `dir`, relative and sorted (directories too).
fn tree(dir: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).expect("read dir") {
            let path = entry.expect("dir entry").path();
            let rel = path.strip_prefix(root).expect("under root");
            out.insert(rel.to_string_lossy().into_owned());
            if path.is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// `GET /berth/pool` with `bearer` (none when `None`).
async fn pool_status(agent: &Agent, bearer: Option<&str>) -> reqwest::Response {
    let mut req = http().get(format!("{}/berth/pool", agent.url()));
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    req.send().await.expect("GET /berth/pool")
}

/// `POST /berth/pool/claim` with the pool secret and `body` as raw JSON text.
async fn claim_raw(agent: &Agent, body: String) -> reqwest::Response {
    http()
        .post(format!("{}/berth/pool/claim", agent.url()))
        .bearer_auth(SECRET)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("POST /berth/pool/claim")
}

async fn claim(agent: &Agent, body: &Value) -> reqwest::Response {
    claim_raw(agent, body.to_string()).await
}

/// Waits until the member answers its readiness probe, as the platform does after a start.
async fn wait_until_serving(agent: &Agent) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Ok(answer) = http()
            .get(format!("{}/berth/pool", agent.url()))
            .bearer_auth(SECRET)
            .send()
            .await
            && answer.status() == StatusCode::OK
        {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "the pool member never answered its probe; output:\n{}",
                agent.output()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn file(path: &str, content: &str, mode: Option<u32>) -> Value {
    let mut f = json!({"path": path, "content_b64": STANDARD.encode(content)});
    if let Some(m) = mode {
        f["mode"] = json!(m);
    }
    f
}

/// A good claim of the member's workspace.
fn good_claim() -> Value {
    json!({
        "workspace_id": WORKSPACE_ID,
        "name": "Pool Test",
        "files": [
            file("config.yaml", "name: From Manifest\nruntime: echo\n", Some(420)),
            file(".auth_token", &format!("{TOKEN}\n"), Some(384)),
            file(".platform_inbound_secret", INBOUND, Some(384)),
            file("skills/echo/SKILL.md", "# Echo\n", None),
        ],
        "removed_files": ["stale", "never-existed.txt"],
        "env": {"MODEL": "m-1", "SOME_SECRET": ENV_SECRET},
    })
}

#[tokio::test]
async fn a_pool_member_waits_then_registers_as_the_claimed_workspace() {
    let fake = Fake::default();
    let platform = start_fake(fake.clone()).await;
    let mut agent = Agent::spawn_pool(&platform, SECRET, &[]);
    let configs = agent.configs.clone();
    std::fs::create_dir_all(configs.join("stale/deep")).expect("stale dir");
    std::fs::write(configs.join("stale/deep/old.txt"), "old").expect("stale file");
    let before: BTreeSet<String> = [".pool_secret", "stale", "stale/deep", "stale/deep/old.txt"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    wait_until_serving(&agent).await;

    // Serving, probed, and not registered: a member has nothing to register with.
    assert!(fake.calls("/registry/register").is_empty());
    let answer = pool_status(&agent, Some(SECRET)).await;
    assert_eq!(answer.status(), StatusCode::OK);
    let answer: Value = answer.json().await.expect("pool status");
    assert_eq!(
        answer,
        json!({"protocol": "berth.pool.v1", "state": "waiting"})
    );
    let health = http()
        .get(format!("{}/health", agent.url()))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), StatusCode::OK);

    // Without the pool secret: 401 with a JSON error, on both routes.
    for bearer in [None, Some("wrong-secret"), Some("")] {
        let answer = pool_status(&agent, bearer).await;
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED, "{bearer:?}");
        let body: Value = answer.json().await.expect("401 body");
        assert!(body["error"].is_string(), "{body}");
    }
    let unauthorized = http()
        .post(format!("{}/berth/pool/claim", agent.url()))
        .bearer_auth("wrong-secret")
        .json(&good_claim())
        .send()
        .await
        .expect("claim");
    assert_eq!(unauthorized.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(tree(&configs), before);

    // Another workspace's claim: 409, nothing written.
    let mut other = good_claim();
    other["workspace_id"] = json!("00000000-0000-4000-8000-000000000000");
    let answer = claim(&agent, &other).await;
    assert_eq!(answer.status(), StatusCode::CONFLICT);
    let body: Value = answer.json().await.expect("409 body");
    assert!(body["error"].is_string(), "{body}");
    assert_eq!(tree(&configs), before);

    // A path out of the config dir, after a good one: 400, and not even the good one is written.
    for (field, bad) in [
        ("files", file("../x", "escaped", None)),
        ("files", file("/abs", "escaped", None)),
        ("files", file("", "empty", None)),
        ("removed_files", json!("../x")),
        ("removed_files", json!("a/../../x")),
    ] {
        let mut body = good_claim();
        body[field]
            .as_array_mut()
            .expect("a list")
            .push(bad.clone());
        let answer = claim(&agent, &body).await;
        assert_eq!(answer.status(), StatusCode::BAD_REQUEST, "{field}: {bad}");
        let body: Value = answer.json().await.expect("400 body");
        assert!(body["error"].is_string(), "{body}");
        assert_eq!(tree(&configs), before, "{field}: {bad}");
    }
    assert!(!configs.with_file_name("x").exists());
    assert!(!Path::new("/abs").exists());

    // Malformed JSON and bad base64: 400, nothing written.
    let answer = claim_raw(&agent, "{not json".into()).await;
    assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
    let mut bad_b64 = good_claim();
    bad_b64["files"][0]["content_b64"] = json!("%%% not base64 %%%");
    let answer = claim(&agent, &bad_b64).await;
    assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
    assert_eq!(tree(&configs), before);
    assert!(fake.calls("/registry/register").is_empty());

    // The claim: 200 once the files are written.
    let answer = claim(&agent, &good_claim()).await;
    assert_eq!(answer.status(), StatusCode::OK);
    let body: Value = answer.json().await.expect("claim answer");
    assert_eq!(
        body,
        json!({"protocol": "berth.pool.v1", "state": "claimed"})
    );

    let after: BTreeSet<String> = [
        ".auth_token",
        ".platform_inbound_secret",
        "config.yaml",
        "skills",
        "skills/echo",
        "skills/echo/SKILL.md",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(tree(&configs), after, "stale removed, .pool_secret gone");
    assert_eq!(mode(&configs.join(".auth_token")), 0o600);
    assert_eq!(mode(&configs.join(".platform_inbound_secret")), 0o600);
    assert_eq!(mode(&configs.join("config.yaml")), 0o644);
    assert_eq!(mode(&configs.join("skills/echo/SKILL.md")), 0o644);
    assert_eq!(
        std::fs::read_to_string(configs.join(".auth_token")).expect("token file"),
        format!("{TOKEN}\n")
    );
    assert_eq!(
        std::fs::read_to_string(configs.join("skills/echo/SKILL.md")).expect("skill"),
        "# Echo\n"
    );

    // Then it registers as the workspace, with the delivered token and name, and heartbeats.
    let register = eventually(&agent, "a registration after the claim", || {
        fake.calls("/registry/register").into_iter().next()
    })
    .await;
    let bearer = format!("Bearer {TOKEN}");
    assert_eq!(register.authorization.as_deref(), Some(bearer.as_str()));
    assert_eq!(
        register.body,
        json!({
            "id": WORKSPACE_ID,
            "url": agent.url(),
            "agent_card": {
                "name": "Pool Test",
                "description": "berth echo agent",
                "version": env!("CARGO_PKG_VERSION"),
                "skills": [{"id": "echo", "name": "Echo"}],
            },
        })
    );
    let beat = eventually(&agent, "a heartbeat", || {
        fake.calls("/registry/heartbeat").into_iter().next()
    })
    .await;
    assert_eq!(beat.authorization.as_deref(), Some(bearer.as_str()));
    for path in ["/.well-known/agent-card.json", "/.well-known/agent.json"] {
        let card: Value = http()
            .get(format!("{}{path}", agent.url()))
            .send()
            .await
            .expect("card request")
            .json()
            .await
            .expect("card");
        assert_eq!(card, register.body["agent_card"], "{path}");
    }

    // Claimed once and for all.
    let again = claim(&agent, &good_claim()).await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let body: Value = again.json().await.expect("409 body");
    assert!(body["error"].is_string(), "{body}");
    let answer: Value = pool_status(&agent, Some(SECRET))
        .await
        .json()
        .await
        .expect("pool status");
    assert_eq!(
        answer,
        json!({"protocol": "berth.pool.v1", "state": "claimed"})
    );
    assert_eq!(
        pool_status(&agent, Some("wrong-secret")).await.status(),
        StatusCode::UNAUTHORIZED
    );

    agent.signal(Signal::SIGTERM);
    let status = agent.exit_status().await;
    assert_eq!(status.code(), Some(0), "output:\n{}", agent.output());
    let log = agent.output();
    for secret in [SECRET, TOKEN, INBOUND, ENV_SECRET] {
        assert!(!log.contains(secret), "{secret} was logged:\n{log}");
    }
}

#[tokio::test]
async fn concurrent_claims_of_a_member_are_serialized() {
    let fake = Fake::default();
    let platform = start_fake(fake.clone()).await;
    let mut agent = Agent::spawn_pool(&platform, SECRET, &[]);
    wait_until_serving(&agent).await;

    let body = good_claim();
    let (a, b, c) = tokio::join!(
        claim(&agent, &body),
        claim(&agent, &body),
        claim(&agent, &body)
    );
    let mut statuses = [a.status(), b.status(), c.status()];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::CONFLICT, StatusCode::CONFLICT]
    );

    let register = eventually(&agent, "a registration after the claim", || {
        fake.calls("/registry/register").into_iter().next()
    })
    .await;
    assert_eq!(register.body["agent_card"]["name"], "Pool Test");

    agent.signal(Signal::SIGTERM);
    assert_eq!(agent.exit_status().await.code(), Some(0));
}

#[tokio::test]
async fn a_waiting_member_exits_cleanly_on_sigterm() {
    let fake = Fake::default();
    let platform = start_fake(fake.clone()).await;
    let mut agent = Agent::spawn_pool(&platform, SECRET, &[("WORKSPACE_NAME", "")]);
    wait_until_serving(&agent).await;
    // Before a claim the card carries the id, as for any agent without a name.
    let card: Value = http()
        .get(format!("{}/.well-known/agent-card.json", agent.url()))
        .send()
        .await
        .expect("card request")
        .json()
        .await
        .expect("card");
    assert_eq!(card["name"], WORKSPACE_ID);

    agent.signal(Signal::SIGTERM);
    let status = agent.exit_status().await;
    assert_eq!(status.code(), Some(0), "output:\n{}", agent.output());
    assert!(fake.calls("/registry/register").is_empty());
    assert!(agent.configs.join(".pool_secret").exists());
}

#[tokio::test]
async fn with_a_token_the_pool_routes_do_not_exist() {
    let fake = Fake::default();
    let platform = start_fake(fake.clone()).await;
    // A token file, and a token from the environment next to a pool secret file: both normal mode.
    let from_file = Agent::spawn(&platform, Some("tok-n"), &[]);
    let from_env = Agent::spawn_pool(&platform, SECRET, &[("WORKSPACE_AUTH_TOKEN", "tok-e")]);
    eventually(&from_env, "both agents to register", || {
        let registers = fake.calls("/registry/register");
        let tokens: BTreeSet<_> = registers
            .iter()
            .filter_map(|r| r.authorization.clone())
            .collect();
        (tokens.contains("Bearer tok-n") && tokens.contains("Bearer tok-e")).then_some(())
    })
    .await;

    for agent in [&from_file, &from_env] {
        for bearer in [None, Some(SECRET)] {
            assert_eq!(
                pool_status(agent, bearer).await.status(),
                StatusCode::NOT_FOUND
            );
        }
        let answer = claim(agent, &good_claim()).await;
        assert_eq!(answer.status(), StatusCode::NOT_FOUND);
    }
    assert!(!from_env.configs.join("config.yaml").exists());
    assert!(from_env.configs.join(".pool_secret").exists());
}

#[tokio::test]
async fn agent_crash_after_ms_still_crashes_with_or_without_a_pool_secret() {
    let fake = Fake::default();
    let platform = start_fake(fake.clone()).await;
    let crash = [("AGENT_CRASH_AFTER_MS", "300")];
    let mut member = Agent::spawn_pool(&platform, SECRET, &crash);
    let mut normal = Agent::spawn(&platform, Some("tok-c"), &crash);
    for agent in [&mut member, &mut normal] {
        let status = agent.exit_status().await;
        assert_eq!(status.code(), Some(3), "output:\n{}", agent.output());
        assert!(agent.output().contains("crashing on purpose"));
    }
    assert!(fake.calls("/registry/register").is_empty());
}
