//! The HTTP scenarios against a running berth (or the fixed-body baseline server).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use crate::args::Args;
use crate::stats::{Plan, Report, drive};

/// How long a single request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A keep-alive client with room for one idle connection per worker; never uses a proxy, since
/// every target is loopback.
fn client(concurrency: usize) -> Result<Client> {
    install_tls_provider();
    Ok(Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(concurrency)
        .timeout(REQUEST_TIMEOUT)
        .build()?)
}

/// Count, concurrency, time bound and, with `--rate`, open-loop pacing.
fn plan(args: &Args) -> Result<Plan> {
    Ok(Plan {
        count: args.count()?,
        concurrency: args.concurrency()?,
        max_time: args.max_time()?,
        rate: args.opt("rate").map(str::parse).transpose()?,
    })
}

/// Fails with the status and a short body when `status` is not `want`.
async fn expect(resp: reqwest::Response, want: StatusCode) -> Result<axum::body::Bytes> {
    // `axum::body::Bytes` is the `bytes` crate's type, the one reqwest returns.
    let status = resp.status();
    let body = resp.bytes().await?;
    if status != want {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        bail!("answered {status}: {text}");
    }
    Ok(body)
}

/// Reads `id token` lines written by `create --out`.
fn read_agents(path: &str) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let agents: Vec<(String, String)> = text
        .lines()
        .filter_map(|line| {
            let (id, token) = line.split_once(' ')?;
            Some((id.to_owned(), token.to_owned()))
        })
        .collect();
    ensure!(!agents.is_empty(), "{path} lists no agents");
    Ok(agents)
}

/// `create --base URL --token T --prefix P [--out FILE] [--rate R]`: external creates, names
/// `<P>-<i>`.
pub async fn create(args: &Args) -> Result<Report> {
    let plan = plan(args)?;
    let http = client(plan.concurrency)?;
    let url = format!("{}/workspaces", args.str("base")?);
    let token = args.str("token")?.to_owned();
    let prefix = args.opt("prefix").unwrap_or("bench").to_owned();
    let keep = args.opt("out").is_some();
    let created = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&created);
    let report = drive(plan, move |i| {
        let req = http
            .post(&url)
            .bearer_auth(&token)
            .json(&json!({"name": format!("{prefix}-{i}"), "external": true}));
        let sink = Arc::clone(&sink);
        async move {
            let body = expect(req.send().await?, StatusCode::CREATED).await?;
            if keep {
                let v: Value = serde_json::from_slice(&body)?;
                let id = v["id"].as_str().context("create answer without id")?;
                let token = v["connection"]["auth_token"]
                    .as_str()
                    .context("create answer without connection.auth_token")?;
                if let Ok(mut list) = sink.lock() {
                    list.push(format!("{id} {token}\n"));
                }
            }
            Ok(None)
        }
    })
    .await;
    if let Some(out) = args.opt("out") {
        let lines = created.lock().map(|l| l.concat()).unwrap_or_default();
        std::fs::write(out, lines).with_context(|| format!("writing {out}"))?;
    }
    Ok(report)
}

/// `get --url URL [--token T]`: repeated GETs expecting 200; reports the last body's size.
pub async fn get(args: &Args) -> Result<Report> {
    let plan = plan(args)?;
    let http = client(plan.concurrency)?;
    let url = args.str("url")?.to_owned();
    let token = args.opt("token").map(str::to_owned);
    let size = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&size);
    let mut report = drive(plan, move |_| {
        let mut req = http.get(&url);
        if let Some(token) = &token {
            req = req.bearer_auth(token);
        }
        let seen = Arc::clone(&seen);
        async move {
            let body = expect(req.send().await?, StatusCode::OK).await?;
            seen.store(body.len(), Ordering::Relaxed);
            Ok(None)
        }
    })
    .await;
    report
        .extra
        .insert("body_bytes".into(), json!(size.load(Ordering::Relaxed)));
    Ok(report)
}

/// `register --base URL --agents FILE`: registers every agent once, in poll mode.
pub async fn register(args: &Args) -> Result<Report> {
    let agents = Arc::new(read_agents(args.str("agents")?)?);
    let mut plan = plan(args)?;
    plan.count = agents.len();
    let http = client(plan.concurrency)?;
    let url = format!("{}/registry/register", args.str("base")?);
    Ok(drive(plan, move |i| {
        let (id, token) = &agents[i];
        let req = http.post(&url).bearer_auth(token).json(&json!({
            "id": id,
            "agent_card": {"name": "bench agent", "skills": []},
            "delivery_mode": "poll",
        }));
        async move {
            expect(req.send().await?, StatusCode::OK).await?;
            Ok(None)
        }
    })
    .await)
}

/// `heartbeat --base URL --agents FILE [--rate R]`: heartbeats round-robin over the agents;
/// with `--rate`, paced open-loop at R per second (background load).
pub async fn heartbeat(args: &Args) -> Result<Report> {
    let agents = Arc::new(read_agents(args.str("agents")?)?);
    let plan = plan(args)?;
    let http = client(plan.concurrency)?;
    let url = format!("{}/registry/heartbeat", args.str("base")?);
    Ok(drive(plan, move |i| {
        let (id, token) = &agents[i % agents.len()];
        let req = http.post(&url).bearer_auth(token).json(&json!({
            "workspace_id": id,
            "error_rate": 0.0,
            "sample_error": "",
            "active_tasks": 0,
            "uptime_seconds": i,
            "current_task": "",
        }));
        async move {
            expect(req.send().await?, StatusCode::OK).await?;
            Ok(None)
        }
    })
    .await)
}

/// `create-online --base URL --token T --template NAME --prefix P`: creates one workspace at a
/// time (`--concurrency N` for N at once) and polls `GET /workspaces/{id}` until it is
/// `online` (every `--poll-us` µs, default 2,000; 0 polls back to back); the latency is
/// create → online.
pub async fn create_online(args: &Args) -> Result<Report> {
    let plan = plan(args)?;
    let http = client(plan.concurrency)?;
    let base = args.str("base")?.to_owned();
    let token = args.str("token")?.to_owned();
    let template = args.str("template")?.to_owned();
    let prefix = args.opt("prefix").unwrap_or("b").to_owned();
    let tier: Option<i64> = args.opt("tier").map(str::parse).transpose()?;
    let poll_every = Duration::from_micros(args.num("poll-us", 2_000u64)?);
    Ok(drive(plan, move |i| {
        let create = http
            .post(format!("{base}/workspaces"))
            .bearer_auth(&token)
            .json(&match tier {
                Some(t) => {
                    json!({"name": format!("{prefix}-{i}"), "template": template, "tier": t})
                }
                None => json!({"name": format!("{prefix}-{i}"), "template": template}),
            });
        let (http, base) = (http.clone(), base.clone());
        async move {
            let body = expect(create.send().await?, StatusCode::CREATED).await?;
            let created: Value = serde_json::from_slice(&body)?;
            let id = created["id"].as_str().context("create answer without id")?;
            let url = format!("{base}/workspaces/{id}");
            let deadline = Instant::now() + REQUEST_TIMEOUT;
            loop {
                let body = expect(http.get(&url).send().await?, StatusCode::OK).await?;
                let ws: Value = serde_json::from_slice(&body)?;
                match ws["status"].as_str() {
                    Some("online") => return Ok(None),
                    Some("failed") => bail!("workspace failed: {}", ws["failure_code"]),
                    _ if Instant::now() >= deadline => {
                        bail!("not online within {} s", REQUEST_TIMEOUT.as_secs())
                    }
                    _ if poll_every.is_zero() => {}
                    _ => tokio::time::sleep(poll_every).await,
                }
            }
        }
    })
    .await)
}

/// Installs rustls' ring provider as the process default (reqwest is built with rustls and no
/// provider of its own; see `berth_provision::install_tls_provider`, which this mirrors because
/// the load generator depends on no berth crate).
pub fn install_tls_provider() {
    #[allow(deprecated)] // ring lacks post-quantum key exchange; aws-lc needs cmake.
    let ring = rustls::crypto::ring::default_provider();
    let _ = ring.install_default();
}
