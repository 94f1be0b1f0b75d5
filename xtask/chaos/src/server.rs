//! Runs the release `berth serve` as a user would: a data directory, a loopback port, the admin
//! token read from `<data-dir>/admin-token`; stops it with SIGTERM or `kill -9`.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use reqwest::{Client, Method};
use serde_json::Value;
use sqlx::Connection;

use crate::Opts;

/// Installs ring as rustls's provider (reqwest is built without one; loopback is plain HTTP,
/// but the client still wants a provider).
pub fn install_tls_provider() {
    #[allow(deprecated)] // ring lacks post-quantum key exchange; aws-lc needs cmake.
    let ring = rustls::crypto::ring::default_provider();
    let _ = ring.install_default();
}

/// Which store a scenario runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    /// `<data-dir>/berth.db`.
    Sqlite,
    /// A fresh database on the throwaway cluster.
    Postgres,
}

impl Store {
    /// `sqlite` or `postgres`.
    pub fn name(self) -> &'static str {
        match self {
            Store::Sqlite => "sqlite",
            Store::Postgres => "postgres",
        }
    }
}

/// A fresh data directory `<work>/<name>` (emptied first).
pub fn data_dir(opts: &Opts, name: &str) -> Result<PathBuf> {
    let dir = opts.work.join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("emptying {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Creates database `name` (dropping an older one) and returns its URL.
pub async fn fresh_database(opts: &Opts, name: &str) -> Result<String> {
    let mut admin = sqlx::PgConnection::connect(&opts.pg_admin_url)
        .await
        .context("connecting to the PostgreSQL admin database")?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await?;
    let base = opts
        .pg_admin_url
        .rsplit_once('/')
        .map(|(base, _)| base)
        .context("admin URL without a database")?;
    Ok(format!("{base}/{name}"))
}

/// The store flags for `store`: none for SQLite (the default file), `--database-url` otherwise.
pub async fn store_flags(opts: &Opts, store: Store, db: &str) -> Result<Vec<String>> {
    Ok(match store {
        Store::Sqlite => Vec::new(),
        Store::Postgres => vec!["--database-url".into(), fresh_database(opts, db).await?],
    })
}

/// A loopback port that is free now.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// An HTTP client for loopback: no proxy, bounded requests.
pub fn client(timeout: Duration) -> Result<Client> {
    Ok(Client::builder()
        .no_proxy()
        .timeout(timeout)
        .pool_max_idle_per_host(64)
        .build()?)
}

/// A running `berth serve`; killed with `kill -9` when dropped.
pub struct Berth {
    child: Option<Child>,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// Its stderr.
    pub log: PathBuf,
    /// The admin token from `<data-dir>/admin-token`.
    pub admin: String,
    /// A client with a 30 s timeout.
    pub http: Client,
}

impl Berth {
    /// Starts `berth serve` over `data` with `extra` flags (the rate limiter off, templates from
    /// `fixtures/templates`), waits for `/health` and reads the admin token. `run` numbers the
    /// log file, so a restart keeps the earlier log.
    pub async fn start(opts: &Opts, data: &Path, run: u32, extra: &[String]) -> Result<Berth> {
        let port = free_port()?;
        let log = data.with_extension(format!("{run}.log"));
        let mut cmd = Command::new(&opts.berth);
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if k.starts_with("BERTH_")
                || ["DATABASE_URL", "CORS_ORIGINS", "RATE_LIMIT"].contains(&&*k)
            {
                cmd.env_remove(&key);
            }
        }
        cmd.env("RUST_LOG", "info")
            .arg("serve")
            .arg("--data-dir")
            .arg(data)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--templates-dir")
            .arg(opts.root.join("fixtures/templates"))
            .args(["--rate-limit", "0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).with_context(|| format!("creating {}", log.display()))?);
        let child = cmd.spawn().context("starting berth serve")?;
        let mut berth = Berth {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            log,
            admin: String::new(),
            http: client(Duration::from_secs(30))?,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = berth
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("berth exited early with {status}:\n{}", berth.log_tail());
            }
            let ok = berth
                .http
                .get(format!("{}/health", berth.base))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "berth did not answer /health within 60 s:\n{}",
                    berth.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let token = data.join("admin-token");
        berth.admin = std::fs::read_to_string(&token)
            .with_context(|| format!("reading {}", token.display()))?
            .trim()
            .to_owned();
        Ok(berth)
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `kill -9`, and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits up to 30 s for a graceful exit before `kill -9`.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Whether the process has exited (crashed) on its own.
    pub fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_some())
    }

    /// The server's stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last 40 lines of the log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// `method path` with `bearer` and an optional JSON body: status and JSON answer (`Null`
    /// when it is not JSON).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(u16, Value)> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = bearer {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// Creates an external workspace as admin: `(id, workspace token)`.
    pub async fn create_external(&self, name: &str) -> Result<(String, String)> {
        let body = serde_json::json!({"name": name, "external": true});
        let (status, v) = self
            .call(Method::POST, "/workspaces", Some(&self.admin), Some(&body))
            .await?;
        if status != 201 {
            bail!("creating external workspace {name}: {status} {v}");
        }
        let id = v["id"].as_str().context("create answer without id")?;
        let token = v["connection"]["auth_token"]
            .as_str()
            .context("create answer without connection.auth_token")?;
        Ok((id.to_owned(), token.to_owned()))
    }

    /// Lines of the log that report a panic.
    pub fn panics(&self) -> Vec<String> {
        self.log_text()
            .lines()
            .filter(|l| l.contains("panicked"))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        self.kill9();
    }
}
