//! The event fan-out scenario (issue 6): many WebSocket subscribers, events produced at a steady
//! rate, delivery latency from the event's own timestamp to its receipt at each subscriber.
//!
//! `fanout` drives either berth (`--producer berth`: an external workspace is created and
//! registered, then its agent heartbeats with a new `current_task` each time, which berth records
//! as a `TASK_UPDATED` event that `/ws` delivers to every admin subscriber) or the baseline
//! server of `serve-fanout` (`--producer emit`: `POST /emit` puts one frame on a bare
//! `tokio::sync::broadcast` that an axum WebSocket route forwards to every subscriber). The
//! subscribers, their sockets and the latency arithmetic are the same code in both runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message as AxumMessage, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, broadcast, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::args::Args;
use crate::stats::Report;

/// WebSocket handshakes in flight at once while the subscribers connect.
const CONNECTING: usize = 64;
/// How long after the last event the subscribers keep listening for late deliveries.
const DRAIN: Duration = Duration::from_secs(3);

/// What one subscriber saw.
#[derive(Default)]
struct Seen {
    latencies_us: Vec<u64>,
    last_at: Option<Instant>,
    frame_bytes: usize,
    error: Option<String>,
}

/// The timestamp of a frame of type `event`, if it is one.
fn frame_time(text: &str, event: &str) -> Option<DateTime<Utc>> {
    let v: Value = serde_json::from_str(text).ok()?;
    if v["event"].as_str() != Some(event) {
        return None;
    }
    DateTime::parse_from_rfc3339(v["timestamp"].as_str()?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// One subscriber: reads frames until `stop` turns true, timing frames of type `event`.
async fn subscribe(
    url: String,
    token: Option<String>,
    event: String,
    permits: Arc<Semaphore>,
    connected: tokio::sync::mpsc::Sender<Result<()>>,
    mut stop: watch::Receiver<bool>,
) -> Seen {
    let mut seen = Seen::default();
    let connect = async {
        let _permit = permits.acquire().await?;
        let mut req = url.as_str().into_client_request()?;
        if let Some(t) = &token {
            req.headers_mut().insert(
                "authorization",
                HeaderValue::from_str(&format!("Bearer {t}"))?,
            );
        }
        let (ws, _) = tokio_tungstenite::connect_async(req).await?;
        anyhow::Ok(ws)
    };
    let mut ws = match connect.await {
        Ok(ws) => {
            let _ = connected.send(Ok(())).await;
            ws
        }
        Err(err) => {
            let _ = connected.send(Err(err)).await;
            return seen;
        }
    };
    drop(connected);
    loop {
        tokio::select! {
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    let now = Utc::now();
                    if let Some(at) = frame_time(&text, &event) {
                        seen.frame_bytes = text.len();
                        seen.last_at = Some(Instant::now());
                        let us = (now - at).num_microseconds().unwrap_or(0).max(0);
                        seen.latencies_us.push(us as u64);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => {
                    seen.error = Some(format!("subscriber socket failed: {err}"));
                    return seen;
                }
                None => {
                    seen.error = Some("the server closed a subscriber's socket".into());
                    return seen;
                }
            },
            _ = stop.changed() => break,
        }
    }
    let _ = ws.close(None).await;
    seen
}

/// Sets up berth's producer: an external workspace whose registered agent will heartbeat.
/// Returns the workspace id and its agent token.
async fn berth_agent(http: &reqwest::Client, base: &str, admin: &str) -> Result<(String, String)> {
    let resp = http
        .post(format!("{base}/workspaces"))
        .bearer_auth(admin)
        .json(&json!({"name": "fanout-source", "external": true}))
        .send()
        .await?;
    ensure!(
        resp.status() == StatusCode::CREATED,
        "create answered {}",
        resp.status()
    );
    let v: Value = resp.json().await?;
    let id = v["id"]
        .as_str()
        .context("create answer without id")?
        .to_owned();
    let token = v["connection"]["auth_token"]
        .as_str()
        .context("create answer without connection.auth_token")?
        .to_owned();
    let resp = http
        .post(format!("{base}/registry/register"))
        .bearer_auth(&token)
        .json(&json!({"id": id, "agent_card": {"name": "fanout source", "skills": []}, "delivery_mode": "poll"}))
        .send()
        .await?;
    ensure!(
        resp.status().is_success(),
        "register answered {}",
        resp.status()
    );
    Ok((id, token))
}

/// `fanout --base URL --token T --producer berth|emit --subscribers N --rate R --secs S`:
/// connects N WebSocket subscribers to `<base>/ws`, produces R events per second for S seconds,
/// and reports every delivery's latency (event timestamp → receipt). `count` is the deliveries,
/// `errors` the deliveries that never arrived plus subscribers that failed, `throughput` the
/// deliveries per second from the first event to the last receipt.
pub async fn fanout(args: &Args) -> Result<Report> {
    let base = args.str("base")?.to_owned();
    let token = args.opt("token").map(str::to_owned);
    let producer = args.str("producer")?.to_owned();
    let subscribers = args.num("subscribers", 1000usize)?.max(1);
    let rate = args.num("rate", 20.0f64)?;
    let secs = args.num("secs", 10.0f64)?;
    ensure!(
        rate > 0.0 && secs > 0.0,
        "--rate and --secs must be positive"
    );
    let events = (rate * secs).round().max(1.0) as usize;
    crate::http::install_tls_provider();
    let http = reqwest::Client::builder().no_proxy().build()?;

    let (event, agent) = match producer.as_str() {
        "berth" => {
            let admin = token.as_deref().context("--token is required for berth")?;
            (
                "TASK_UPDATED",
                Some(berth_agent(&http, &base, admin).await?),
            )
        }
        "emit" => ("BENCH", None),
        other => bail!("--producer must be berth or emit, got {other:?}"),
    };

    let ws_url = format!("{}/ws", base.replacen("http://", "ws://", 1));
    let permits = Arc::new(Semaphore::new(CONNECTING));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (conn_tx, mut conn_rx) = tokio::sync::mpsc::channel(subscribers);
    let connect_started = Instant::now();
    let mut tasks = Vec::with_capacity(subscribers);
    for _ in 0..subscribers {
        tasks.push(tokio::spawn(subscribe(
            ws_url.clone(),
            token.clone(),
            event.to_owned(),
            Arc::clone(&permits),
            conn_tx.clone(),
            stop_rx.clone(),
        )));
    }
    drop(conn_tx);
    let (mut connected, mut failed, mut first_error) = (0usize, 0usize, None);
    while let Some(r) = conn_rx.recv().await {
        match r {
            Ok(()) => connected += 1,
            Err(err) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("subscriber connect: {err:#}"));
            }
        }
    }
    let connect_s = connect_started.elapsed().as_secs_f64();
    ensure!(
        connected > 0,
        "no subscriber connected: {}",
        first_error.unwrap_or_default()
    );
    // Subscriptions exist once the handshake is answered (both servers subscribe first); a
    // moment more lets every subscriber task reach its read loop.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    let mut produced = 0usize;
    for i in 0..events {
        tokio::time::sleep_until((started + Duration::from_secs_f64(i as f64 / rate)).into()).await;
        let req = match &agent {
            Some((id, agent_token)) => http
                .post(format!("{base}/registry/heartbeat"))
                .bearer_auth(agent_token)
                .json(&json!({
                    "workspace_id": id, "error_rate": 0.0, "sample_error": "",
                    "active_tasks": 1, "uptime_seconds": i, "current_task": format!("task-{i}"),
                })),
            None => http.post(format!("{base}/emit")),
        };
        match req.send().await {
            Ok(resp) if resp.status().is_success() => produced += 1,
            Ok(resp) => {
                first_error.get_or_insert_with(|| format!("producer: answered {}", resp.status()));
            }
            Err(err) => {
                first_error.get_or_insert_with(|| format!("producer: {err}"));
            }
        }
    }
    tokio::time::sleep(DRAIN).await;
    let _ = stop_tx.send(true);

    let mut latencies = Vec::with_capacity(produced * connected);
    let (mut last_at, mut frame_bytes) = (started, 0usize);
    for task in tasks {
        let seen = task.await?;
        latencies.extend(seen.latencies_us);
        if let Some(at) = seen.last_at {
            last_at = last_at.max(at);
        }
        frame_bytes = frame_bytes.max(seen.frame_bytes);
        if let Some(err) = seen.error {
            first_error.get_or_insert(err);
        }
    }
    let expected = produced * connected;
    let missed = expected.saturating_sub(latencies.len());
    if missed > 0 {
        first_error.get_or_insert_with(|| format!("{missed} of {expected} deliveries missing"));
    }
    let mut report = Report {
        count: latencies.len(),
        errors: missed + failed,
        duration: last_at.duration_since(started),
        latencies_us: latencies,
        first_error,
        extra: serde_json::Map::new(),
    };
    report.extra.insert("subscribers".into(), json!(connected));
    report.extra.insert("events".into(), json!(produced));
    // Named like the `get` mode's body size, which xtask reads to size the baseline's frames.
    report.extra.insert("body_bytes".into(), json!(frame_bytes));
    report.extra.insert("connect_s".into(), json!(connect_s));
    Ok(report)
}

/// The baseline's state: the broadcast channel and the padded frame size.
#[derive(Clone)]
struct Fanout {
    sender: broadcast::Sender<Arc<str>>,
    bytes: usize,
}

/// `POST /emit`: one frame, stamped now and padded to the configured size, onto the channel.
async fn emit(State(f): State<Fanout>) -> StatusCode {
    let at = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    let bare = json!({"event": "BENCH", "timestamp": at, "payload": {"pad": ""}}).to_string();
    let pad = "x".repeat(f.bytes.saturating_sub(bare.len()));
    let frame = json!({"event": "BENCH", "timestamp": at, "payload": {"pad": pad}}).to_string();
    let _ = f.sender.send(frame.into());
    StatusCode::NO_CONTENT
}

/// `GET /ws`: forwards every frame of the channel to the socket until either side ends.
async fn ws(State(f): State<Fanout>, upgrade: WebSocketUpgrade) -> Response {
    let mut rx = f.sender.subscribe();
    upgrade.on_upgrade(move |mut socket| async move {
        loop {
            tokio::select! {
                incoming = socket.recv() => match incoming {
                    Some(Ok(AxumMessage::Close(_)) | Err(_)) | None => return,
                    Some(Ok(_)) => {}
                },
                frame = rx.recv() => match frame {
                    Ok(text) => {
                        if socket.send(AxumMessage::Text(text.as_ref().into())).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    })
}

/// `serve-fanout --bytes N`: the fan-out baseline, an axum WebSocket route fed by a bare
/// `tokio::sync::broadcast` (no database, no event log, no filtering), frames of N bytes. Prints
/// `listening http://<addr>` and runs until its stdin closes.
pub async fn serve_fanout(args: &Args) -> Result<()> {
    let (sender, _) = broadcast::channel(1024);
    let state = Fanout {
        sender,
        bytes: args.num("bytes", 200usize)?,
    };
    let app = Router::new()
        .route("/ws", get(ws))
        .route("/emit", post(emit))
        .with_state(state);
    crate::fake::serve_until_stdin_closed(app).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_time_reads_only_the_wanted_event() {
        let frame = r#"{"event":"TASK_UPDATED","timestamp":"2026-11-27T13:00:00.123456Z","seq":3}"#;
        let at = frame_time(frame, "TASK_UPDATED").map(|t| t.timestamp_micros());
        assert_eq!(at, Some(1_795_784_400_123_456));
        assert_eq!(frame_time(frame, "BENCH"), None);
        assert_eq!(frame_time("not json", "BENCH"), None);
    }
}
