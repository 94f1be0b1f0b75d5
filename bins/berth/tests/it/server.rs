//! The harness: spawn `berth serve`, wait for `/health`, stop it with SIGTERM, and always kill it
//! (and so its agents) when a test ends, passing or not.

use std::fs::File;
use std::future::Future;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// A loopback port that is free now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The release binary `cargo xtask test` built (`BERTH_RELEASE_BIN`); the debug one when the
/// tests run without xtask.
pub fn release_binary() -> PathBuf {
    match std::env::var_os("BERTH_RELEASE_BIN") {
        Some(path) => PathBuf::from(path),
        None => {
            eprintln!(
                "BERTH_RELEASE_BIN is not set (run `cargo xtask test`): using the debug binary"
            );
            PathBuf::from(env!("CARGO_BIN_EXE_berth"))
        }
    }
}

/// `berth` with a clean environment: no `BERTH_*` or `DATABASE_URL` from the caller leaks in.
pub fn berth_command() -> Command {
    clean(Command::new(env!("CARGO_BIN_EXE_berth")))
}

/// [`berth_command`] for the release binary (see [`release_binary`]): what a user runs.
pub fn berth_release_command() -> Command {
    clean(Command::new(release_binary()))
}

/// `cmd` without `BERTH_*`, `DATABASE_URL` and the server's other variables from the caller.
fn clean(mut cmd: Command) -> Command {
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("BERTH_") || ["DATABASE_URL", "CORS_ORIGINS", "RATE_LIMIT"].contains(&&*k)
        {
            cmd.env_remove(&key);
        }
    }
    cmd.env("RUST_LOG", "info");
    cmd
}

/// Polls `check` until it yields a value or `deadline` passes; `what` names the wait in the
/// panic message, `last` says what was seen last.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let end = Instant::now() + deadline;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) if Instant::now() >= end => {
                panic!("timed out after {deadline:?} waiting for {what}; last: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// A running `berth serve`.
pub struct Server {
    child: Option<Child>,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// Where its stderr goes.
    pub log: PathBuf,
    /// The admin token from `<data-dir>/admin-token`.
    pub admin_token: String,
    /// An HTTP client.
    pub http: reqwest::Client,
}

impl Server {
    /// Starts `berth serve` over `data_dir` with `extra` flags and waits until `/health`
    /// answers and the admin token file exists. The rate limiter is off (`RATE_LIMIT=0`) unless
    /// `extra` passes `--rate-limit`, so polling tests are never throttled.
    pub async fn start(data_dir: &Path, extra: &[&str]) -> Server {
        let port = free_port();
        let templates = repo_root().join("fixtures/templates");
        let mut cmd = berth_command();
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--templates-dir")
            .arg(&templates)
            .env("RATE_LIMIT", "0")
            .args(extra);
        Self::launch(cmd, port, data_dir).await
    }

    /// Starts the release binary's `berth serve` the way the README does: from the repository
    /// (so the bundled templates are found where the README's command finds them), over
    /// `data_dir`, with `extra` flags (the rate limiter off, as in [`Server::start`]).
    pub async fn start_release(data_dir: &Path, extra: &[&str]) -> Server {
        let port = free_port();
        let mut cmd = berth_release_command();
        cmd.current_dir(repo_root())
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env("RATE_LIMIT", "0")
            .args(extra);
        Self::launch(cmd, port, data_dir).await
    }

    /// Runs `cmd` (a `serve` listening on `127.0.0.1:port` over `data_dir`), waits until
    /// `/health` answers and reads the admin token file.
    pub async fn launch(mut cmd: Command, port: u16, data_dir: &Path) -> Server {
        let log = data_dir.with_extension(format!("{port}.log"));
        let stderr = File::create(&log).expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn berth");
        let mut server = Server {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            log,
            admin_token: String::new(),
            http: {
                berth_provision::install_tls_provider();
                reqwest::Client::new()
            },
        };
        let health = format!("{}/health", server.base);
        wait_for("/health", Duration::from_secs(30), || {
            let exited = server
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            let http = server.http.clone();
            let health = health.clone();
            let log = server.log.clone();
            async move {
                if let Some(status) = exited {
                    panic!(
                        "berth exited early with {status}: {}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                match http.get(&health).send().await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(format!("status {}", r.status())),
                    Err(e) => Err(e.to_string()),
                }
            }
        })
        .await;
        let token_path = data_dir.join("admin-token");
        let mode = std::fs::metadata(&token_path)
            .expect("admin-token exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "admin-token mode {mode:o}");
        server.admin_token = std::fs::read_to_string(&token_path)
            .expect("read admin-token")
            .trim()
            .to_owned();
        assert!(!server.admin_token.is_empty());
        server
    }

    /// The server's stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// `GET`/`POST` `path` with `bearer`, returning the status and the JSON body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// `POST path` as admin; returns status and body.
    pub async fn admin_post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.call(
            reqwest::Method::POST,
            path,
            Some(&self.admin_token),
            Some(body),
        )
        .await
    }

    /// `POST path` with a workspace token.
    pub async fn agent_post(&self, path: &str, token: &str, body: &Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(token), Some(body))
            .await
    }

    /// `GET /workspaces/{id}` (open); must be 200.
    pub async fn workspace(&self, id: &str) -> Value {
        let (status, body) = self
            .call(
                reqwest::Method::GET,
                &format!("/workspaces/{id}"),
                None,
                None,
            )
            .await;
        assert_eq!(status, 200, "get {id}: {body}");
        body
    }

    /// Asserts the status `GET /workspaces/{id}` shows now, with the server log on failure.
    pub async fn expect_status(&self, id: &str, want: &str) -> Value {
        let w = self.workspace(id).await;
        assert_eq!(
            w["status"],
            want,
            "{w}\n--- server log ---\n{}",
            self.log_text()
        );
        w
    }

    /// Polls `GET /workspaces/{id}` until its status is `want` (panics on `failed` unless that
    /// is what is wanted).
    pub async fn wait_status(&self, id: &str, want: &str, deadline: Duration) -> Value {
        wait_for(&format!("{id} to be {want}"), deadline, || async move {
            let w = self.workspace(id).await;
            if w["status"] == want {
                Ok(w)
            } else if w["status"] == "failed" {
                panic!("workspace failed: {w}\n{}", self.log_text());
            } else {
                Err(w.to_string())
            }
        })
        .await
    }

    /// Sends SIGTERM and waits for the exit.
    pub async fn stop(&mut self) -> ExitStatus {
        let pid = self.pid();
        let killed = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(killed.success());
        let child = self.child.as_mut().expect("running");
        let status = wait_for("berth to exit", Duration::from_secs(45), || {
            let r = child.try_wait();
            async move {
                match r {
                    Ok(Some(s)) => Ok(s),
                    Ok(None) => Err("still running".to_owned()),
                    Err(e) => Err(e.to_string()),
                }
            }
        })
        .await;
        self.child = None;
        status
    }

    /// Kills the server with SIGKILL, as a crash would: it stops nothing on its way out.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL berth");
        child.wait().expect("wait for berth");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SIGTERM first so the server stops its agent processes; SIGKILL if it lingers.
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}
