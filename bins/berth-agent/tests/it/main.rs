//! End-to-end tests of the `berth-agent` binary against an in-test fake of the platform registry.
//!
//! Each test runs the real binary as a child process, lets it register and heartbeat against an
//! axum server on `127.0.0.1:0`, talks A2A to it over a real socket and stops it with a signal.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::routing::post;
use axum::{Json, Router};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

mod parent_death;
mod pool;

/// Upper bound for anything the agent is expected to do "soon"; generous for a loaded CI machine.
const PATIENCE: Duration = Duration::from_secs(20);

/// One request the fake registry received.
#[derive(Debug, Clone)]
struct Recorded {
    path: String,
    authorization: Option<String>,
    body: Value,
}

/// The fake registry: records every call and refuses the first `refuse_first` registrations.
#[derive(Clone, Default)]
struct Fake {
    calls: Arc<Mutex<Vec<Recorded>>>,
    refuse_first: usize,
}

impl Fake {
    fn calls(&self, path: &str) -> Vec<Recorded> {
        self.calls
            .lock()
            .expect("fake registry lock")
            .iter()
            .filter(|c| c.path == path)
            .cloned()
            .collect()
    }
}

async fn record(
    State(fake): State<Fake>,
    uri: Uri,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (axum::http::StatusCode, Json<Value>) {
    let path = uri.path().to_owned();
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut calls = fake.calls.lock().expect("fake registry lock");
    calls.push(Recorded {
        path: path.clone(),
        authorization,
        body,
    });
    if path == "/registry/register" {
        let registers = calls.iter().filter(|c| c.path == path).count();
        if registers <= fake.refuse_first {
            return (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": "not yet"})),
            );
        }
        (
            axum::http::StatusCode::OK,
            Json(json!({"status": "registered"})),
        )
    } else {
        (axum::http::StatusCode::OK, Json(json!({"status": "ok"})))
    }
}

/// Starts the fake registry and returns its base URL.
async fn start_fake(fake: Fake) -> String {
    let app = Router::new()
        .route("/registry/register", post(record))
        .route("/registry/heartbeat", post(record))
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind fake registry");
    let addr = listener.local_addr().expect("fake registry address");
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("fake registry");
    });
    format!("http://{addr}")
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind probe port");
    l.local_addr().expect("probe address").port()
}

/// The running agent and where its output goes.
struct Agent {
    child: Child,
    port: u16,
    log: PathBuf,
    /// `WORKSPACE_CONFIG_PATH`.
    configs: PathBuf,
    _dir: tempfile::TempDir,
}

impl Agent {
    /// Runs the binary with a configs dir holding `token` (if any) and the given extra env.
    fn spawn(platform_url: &str, token: Option<&str>, extra: &[(&str, &str)]) -> Agent {
        Agent::spawn_via(&[], platform_url, token, extra)
    }

    /// [`Agent::spawn`], run by the command line `via` (program and arguments; the agent's
    /// path is appended) in the agent's temporary directory when it is not empty.
    fn spawn_via(
        via: &[&str],
        platform_url: &str,
        token: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Agent {
        let (dir, configs) = configs_dir();
        if let Some(t) = token {
            std::fs::write(configs.join(".auth_token"), format!("{t}\n")).expect("token file");
        }
        Agent::spawn_in(dir, via, platform_url, extra)
    }

    /// Runs the binary as a warm-pool member: no token, `.pool_secret` (mode 0600) holding
    /// `secret` in its configs dir.
    fn spawn_pool(platform_url: &str, secret: &str, extra: &[(&str, &str)]) -> Agent {
        use std::os::unix::fs::PermissionsExt;
        let (dir, configs) = configs_dir();
        let path = configs.join(".pool_secret");
        std::fs::write(&path, format!("{secret}\n")).expect("pool secret file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .expect("pool secret mode");
        Agent::spawn_in(dir, &[], platform_url, extra)
    }

    /// Runs the binary with `dir/configs` as its configs dir (see [`Agent::spawn_via`]).
    fn spawn_in(
        dir: tempfile::TempDir,
        via: &[&str],
        platform_url: &str,
        extra: &[(&str, &str)],
    ) -> Agent {
        let configs = dir.path().join("configs");
        let log = dir.path().join("agent.log");
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file clone");
        let port = free_port();
        let agent = env!("CARGO_BIN_EXE_berth-agent");
        let mut cmd = match via {
            [] => Command::new(agent),
            [program, args @ ..] => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(agent).current_dir(dir.path());
                cmd
            }
        };
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "debug")
            .env("WORKSPACE_ID", "6f1d2c3b-4a5e-4f60-8a7b-9c0d1e2f3a4b")
            .env("PLATFORM_URL", platform_url)
            .env("WORKSPACE_CONFIG_PATH", &configs)
            .env("AGENT_HOST", "127.0.0.1")
            .env("AGENT_PORT", port.to_string())
            .env("HEARTBEAT_INTERVAL_SECS", "1")
            .envs(extra.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        let child = cmd.spawn().expect("spawn berth-agent");
        Agent {
            child,
            port,
            log,
            configs,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn output(&self) -> String {
        read_log(&self.log)
    }

    fn signal(&self, signal: Signal) {
        let pid = self.child.id().expect("agent still has a pid");
        let pid = i32::try_from(pid).expect("pid fits i32");
        kill(Pid::from_raw(pid), signal).expect("send signal");
    }

    /// Waits for the agent to exit on its own, failing the test if it takes too long.
    async fn exit_status(&mut self) -> ExitStatus {
        match tokio::time::timeout(PATIENCE, self.child.wait()).await {
            Ok(status) => status.expect("wait for agent"),
            Err(_) => panic!(
                "berth-agent did not exit after the signal; output:\n{}",
                self.output()
            ),
        }
    }
}

/// A temporary directory with an empty `configs` directory in it.
fn configs_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let configs = dir.path().join("configs");
    std::fs::create_dir(&configs).expect("configs dir");
    (dir, configs)
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("<no log: {e}>"))
}

/// Polls `check` until it returns `Some`, or panics with `what` and the agent's output.
async fn eventually<T>(agent: &Agent, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "timed out waiting for {what}; agent output:\n{}",
                agent.output()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn registers_heartbeats_echoes_and_exits_cleanly_on_sigterm() {
    let fake = Fake::default();
    let platform = start_fake(fake.clone()).await;
    let mut agent = Agent::spawn(
        &platform,
        Some("tok-abc"),
        &[("WORKSPACE_NAME", "Echo Test")],
    );

    let register = eventually(&agent, "a registration", || {
        fake.calls("/registry/register").into_iter().next()
    })
    .await;
    assert_eq!(register.authorization.as_deref(), Some("Bearer tok-abc"));
    assert_eq!(
        register.body,
        json!({
            "id": "6f1d2c3b-4a5e-4f60-8a7b-9c0d1e2f3a4b",
            "url": agent.url(),
            "agent_card": {
                "name": "Echo Test",
                "description": "berth echo agent",
                "version": env!("CARGO_PKG_VERSION"),
                "skills": [{"id": "echo", "name": "Echo"}],
            },
        })
    );

    let beats = eventually(&agent, "two heartbeats", || {
        let beats = fake.calls("/registry/heartbeat");
        (beats.len() >= 2).then_some(beats)
    })
    .await;
    for beat in &beats {
        assert_eq!(beat.authorization.as_deref(), Some("Bearer tok-abc"));
        let body = &beat.body;
        assert_eq!(body["workspace_id"], "6f1d2c3b-4a5e-4f60-8a7b-9c0d1e2f3a4b");
        assert_eq!(body["error_rate"], 0.0);
        assert_eq!(body["sample_error"], "");
        assert_eq!(body["active_tasks"], 0);
        assert_eq!(body["current_task"], "");
        assert!(body["uptime_seconds"].is_u64(), "{body}");
    }

    berth_agent::install_tls_provider();
    let http = reqwest::Client::new();
    for path in ["/", "/a2a"] {
        let answer: Value = http
            .post(format!("{}{path}", agent.url()))
            .json(&json!({
                "jsonrpc": "2.0", "id": "req-1", "method": "message/send",
                "params": {"message": {"role": "user", "messageId": "m-1",
                    "parts": [{"kind": "text", "text": "hi "}, {"kind": "text", "text": "there"}]}},
            }))
            .send()
            .await
            .expect("A2A request")
            .json()
            .await
            .expect("A2A answer");
        assert_eq!(answer["jsonrpc"], "2.0");
        assert_eq!(answer["id"], "req-1");
        assert_eq!(answer["result"]["kind"], "message");
        assert_eq!(answer["result"]["role"], "agent");
        assert_eq!(
            answer["result"]["parts"],
            json!([{"kind": "text", "text": "echo: hi there"}])
        );
        assert!(
            answer["result"]["messageId"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }

    let unknown = http
        .post(agent.url())
        .json(&json!({"jsonrpc": "2.0", "id": 3, "method": "tasks/cancel"}))
        .send()
        .await
        .expect("A2A request");
    assert_eq!(unknown.status(), 200);
    let unknown: Value = unknown.json().await.expect("A2A answer");
    assert_eq!(unknown["error"]["code"], -32601);
    assert_eq!(unknown["id"], 3);

    let malformed = http
        .post(agent.url())
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await
        .expect("A2A request");
    assert_eq!(malformed.status(), 200);
    let malformed: Value = malformed.json().await.expect("A2A answer");
    assert_eq!(malformed["error"]["code"], -32700);

    let card: Value = http
        .get(format!("{}/.well-known/agent.json", agent.url()))
        .send()
        .await
        .expect("card request")
        .json()
        .await
        .expect("card");
    assert_eq!(card, register.body["agent_card"]);

    let health: Value = http
        .get(format!("{}/health", agent.url()))
        .send()
        .await
        .expect("health request")
        .json()
        .await
        .expect("health");
    assert_eq!(health, json!({"status": "ok"}));

    agent.signal(Signal::SIGTERM);
    let status = agent.exit_status().await;
    assert_eq!(status.code(), Some(0), "output:\n{}", agent.output());

    let log = agent.output();
    assert!(!log.contains("tok-abc"), "the token was logged:\n{log}");
}

#[tokio::test]
async fn retries_a_refused_registration_and_stops_on_sigint() {
    let fake = Fake {
        refuse_first: 2,
        ..Fake::default()
    };
    let platform = start_fake(fake.clone()).await;
    let mut agent = Agent::spawn(&platform, None, &[]);

    eventually(&agent, "an accepted registration and a heartbeat", || {
        let registers = fake.calls("/registry/register");
        let beats = fake.calls("/registry/heartbeat");
        (registers.len() >= 3 && !beats.is_empty()).then_some(())
    })
    .await;
    let registers = fake.calls("/registry/register");
    assert_eq!(registers.len(), 3, "no register after the accepted one");
    for r in &registers {
        assert_eq!(r.authorization, None, "no token, no header");
        // Without a configured name, the card carries the id and the platform fills in the name.
        assert_eq!(
            r.body["agent_card"]["name"],
            "6f1d2c3b-4a5e-4f60-8a7b-9c0d1e2f3a4b"
        );
    }

    agent.signal(Signal::SIGINT);
    let status = agent.exit_status().await;
    assert_eq!(status.code(), Some(0), "output:\n{}", agent.output());
}
