//! The agent's side of the platform registry: register until accepted, then heartbeat forever.
//!
//! Both calls carry the workspace bearer token; it is only ever put in the header, never logged.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::config::Token;

/// First delay between registration attempts.
const BACKOFF_START: Duration = Duration::from_millis(200);
/// Longest delay between registration attempts.
const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// Per-request timeout, so a hung platform cannot stall the loop.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A client for `/registry/register` and `/registry/heartbeat`.
#[derive(Debug)]
pub struct Registry {
    http: reqwest::Client,
    platform_url: String,
    workspace_id: String,
    token: Option<Token>,
}

impl Registry {
    /// A client talking to `platform_url` as `workspace_id`.
    pub fn new(
        platform_url: String,
        workspace_id: String,
        token: Option<Token>,
    ) -> anyhow::Result<Self> {
        crate::install_tls_provider();
        let mut http = reqwest::Client::builder().timeout(REQUEST_TIMEOUT);
        if !platform_url
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("https://")
        {
            // Plain HTTP needs no CA roots, and a minimal image (the test image has none) has
            // none to load; an https:// platform is verified against the system's roots.
            http = http.tls_certs_only(std::iter::empty());
        }
        let http = http.build()?;
        Ok(Self {
            http,
            platform_url,
            workspace_id,
            token,
        })
    }

    /// Sets the token (a pool member's, delivered by its claim).
    pub fn set_token(&mut self, token: Option<Token>) {
        self.token = token;
    }

    /// Opens a connection to the platform (`GET /health`, answer ignored) that the client keeps
    /// for the next request.
    pub async fn warm_up(&self) {
        let url = format!("{}/health", self.platform_url);
        if let Ok(response) = self.http.get(url).send().await {
            // Read to the end, so the connection goes back to the pool.
            let _ = response.bytes().await;
        }
    }

    fn post(&self, path: &str, body: &Value) -> reqwest::RequestBuilder {
        let req = self
            .http
            .post(format!("{}{path}", self.platform_url))
            .json(body);
        match &self.token {
            Some(t) => req.bearer_auth(t.expose()),
            None => req,
        }
    }

    /// Registers `agent_url` with `card`, retrying with capped exponential backoff until a 2xx.
    ///
    /// An auth or not-found answer (401/403/404/410) will not fix itself quickly, so it waits the
    /// full cap before the next try instead of hammering the platform.
    pub async fn register_until_accepted(&mut self, agent_url: &str, card: &Value) {
        let body = json!({"id": self.workspace_id, "url": agent_url, "agent_card": card});
        let mut delay = BACKOFF_START;
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let wait = match self.post("/registry/register", &body).send().await {
                Ok(resp) if resp.status().is_success() => {
                    // The platform hands out a token on the first register of a workspace that
                    // had none (REFERENCE.md §2.12 step 9); adopt it for the heartbeats.
                    if let Ok(answer) = resp.json::<Value>().await
                        && let Some(t) = answer.get("auth_token").and_then(Value::as_str)
                        && !t.is_empty()
                    {
                        self.token = Some(Token::new(t.to_owned()));
                    }
                    tracing::info!(attempt, "registered with the platform");
                    return;
                }
                Ok(resp) => {
                    let status = resp.status();
                    let permanent_looking = matches!(
                        status,
                        StatusCode::UNAUTHORIZED
                            | StatusCode::FORBIDDEN
                            | StatusCode::NOT_FOUND
                            | StatusCode::GONE
                    );
                    tracing::warn!(
                        attempt,
                        http.status = status.as_u16(),
                        "registration refused"
                    );
                    if permanent_looking {
                        BACKOFF_CAP
                    } else {
                        delay
                    }
                }
                Err(e) => {
                    tracing::warn!(attempt, error = %e, "registration failed");
                    delay
                }
            };
            tokio::time::sleep(wait).await;
            delay = (delay * 2).min(BACKOFF_CAP);
        }
    }

    /// Sends one heartbeat reporting `active_tasks` and the uptime since `started`.
    pub async fn heartbeat(&self, active_tasks: u64, started: Instant) -> anyhow::Result<()> {
        let body = json!({
            "workspace_id": self.workspace_id,
            "error_rate": 0.0,
            "sample_error": "",
            "active_tasks": active_tasks,
            "uptime_seconds": started.elapsed().as_secs(),
            "current_task": "",
        });
        let resp = self.post("/registry/heartbeat", &body).send().await?;
        anyhow::ensure!(
            resp.status().is_success(),
            "heartbeat answered {}",
            resp.status()
        );
        Ok(())
    }

    /// Registers, then heartbeats every `interval` until the future is dropped.
    pub async fn run(
        mut self,
        agent_url: String,
        card: Value,
        interval: Duration,
        in_flight: Arc<AtomicU64>,
        started: Instant,
    ) -> Infallible {
        self.register_until_accepted(&agent_url, &card).await;
        let mut ticker = tokio::time::interval(interval);
        // The first tick fires at once: a heartbeat right after registering is harmless and tells
        // the platform our counters immediately.
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if let Err(e) = self
                .heartbeat(in_flight.load(Ordering::Relaxed), started)
                .await
            {
                tracing::warn!(error = %e, "heartbeat failed");
            }
        }
    }
}
