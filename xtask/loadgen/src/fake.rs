//! Stand-ins for the limits berth is compared with: an axum route with a fixed body (the HTTP
//! stack alone), and a fake registry that times how fast `berth agent` starts and registers.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::body::Bytes;
use axum::http::header::CONTENT_TYPE;
use axum::routing::{get, post};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{Mutex, mpsc};

use crate::args::Args;
use crate::stats::{Plan, Report, drive};

/// A JSON object of exactly `bytes` bytes (at least the 10 of `{"pad":""}`).
fn fixed_body(bytes: usize) -> Bytes {
    let pad = bytes.saturating_sub(r#"{"pad":""}"#.len());
    Bytes::from(format!(r#"{{"pad":"{}"}}"#, "x".repeat(pad)))
}

/// `serve-fixed --bytes N`: serves `GET /fixed` with a fixed JSON body of N bytes on a free
/// loopback port, prints `listening http://<addr>` and runs until its stdin closes (xtask holds
/// the other end, so the server never outlives the bench).
pub async fn serve_fixed(args: &Args) -> Result<()> {
    let body = fixed_body(args.num("bytes", 1000usize)?);
    let app = Router::new().route(
        "/fixed",
        get(move || {
            let body = body.clone();
            async move { ([(CONTENT_TYPE, "application/json")], body) }
        }),
    );
    serve_until_stdin_closed(app).await
}

/// Serves `app` on a free loopback port, prints `listening http://<addr>` and runs until stdin
/// closes (the baseline servers of `serve-fixed` and `serve-fanout`).
pub(crate) async fn serve_until_stdin_closed(app: Router) -> Result<()> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening http://{}", listener.local_addr()?)?;
    stdout.flush()?;
    drop(stdout);
    axum::serve(listener, app)
        .with_graceful_shutdown(stdin_closed())
        .await?;
    Ok(())
}

/// Resolves when stdin reaches end of file (or fails); read on a blocking thread.
async fn stdin_closed() {
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        std::io::stdin().lock().read_to_end(&mut sink)
    })
    .await;
}

/// A free loopback port (probed by binding and releasing it).
fn free_port() -> Result<u16> {
    Ok(StdListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// `agent-start --berth PATH`: starts `berth agent` `--count` times, one at a time, with the
/// environment the process provisioner gives it, and times spawn → its first
/// `POST /registry/register` at a fake registry. The agent is killed after each registration.
/// With `--docker-image IMAGE` the agent is that image's, started by a bare
/// `docker run --network host` instead (the baseline of Docker's own start).
pub async fn agent_start(args: &Args) -> Result<Report> {
    let berth = args.opt("berth").unwrap_or_default().to_owned();
    let image = args.opt("docker-image").map(str::to_owned);
    let (tx, rx) = mpsc::unbounded_channel::<Instant>();
    let registry = Router::new()
        .route(
            "/registry/register",
            post(move || {
                // Timestamped on arrival, before any answer is written.
                let _ = tx.send(Instant::now());
                async {
                    axum::Json(json!({
                        "status": "registered",
                        "delivery_mode": "push",
                        "platform_inbound_secret": "bench",
                    }))
                }
            }),
        )
        .route(
            "/registry/heartbeat",
            post(|| async { axum::Json(json!({"status": "ok"})) }),
        );
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let platform: SocketAddr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, registry).await });

    let plan = Plan {
        count: args.count()?,
        concurrency: 1,
        max_time: args.max_time()?,
        rate: None,
    };
    let rx = Arc::new(Mutex::new(rx));
    let report = drive(plan, move |i| {
        let (berth, image, rx) = (berth.clone(), image.clone(), Arc::clone(&rx));
        async move {
            let port = free_port()?;
            let mut rx = rx.lock().await;
            // Stale registrations of an earlier agent must not count for this one.
            while rx.try_recv().is_ok() {}
            let env = [
                ("WORKSPACE_ID", format!("00000000-0000-4000-8000-{i:012}")),
                ("PLATFORM_URL", format!("http://{platform}")),
                ("WORKSPACE_AUTH_TOKEN", "bench-token".to_owned()),
                ("WORKSPACE_NAME", format!("b-{i}")),
                ("AGENT_HOST", "127.0.0.1".to_owned()),
                ("AGENT_PORT", port.to_string()),
                ("AGENT_URL", format!("http://127.0.0.1:{port}")),
            ];
            let container = format!("berth-bench-run-{}-{i}", std::process::id());
            let mut command = match &image {
                Some(image) => {
                    let mut c = tokio::process::Command::new("docker");
                    c.args(["run", "--rm", "--network", "host", "--name", &container]);
                    for (k, v) in &env {
                        c.arg("-e").arg(format!("{k}={v}"));
                    }
                    c.arg(image);
                    c
                }
                None => {
                    let mut c = tokio::process::Command::new(&berth);
                    c.arg("agent")
                        .env_clear()
                        .envs(env.iter().map(|(k, v)| (k, v)));
                    c
                }
            };
            let spawned = Instant::now();
            let mut child = command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting the agent ({berth} {image:?})"))?;
            let registered =
                tokio::time::timeout(std::time::Duration::from_secs(30), rx.recv()).await;
            if image.is_some() {
                let _ = tokio::process::Command::new("docker")
                    .args(["rm", "-f", &container])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .await;
            }
            let _ = child.start_kill();
            let _ = child.wait().await;
            match registered {
                Ok(Some(at)) if at >= spawned => Ok(Some(at - spawned)),
                Ok(_) => bail!("fake registry stopped"),
                Err(_) => bail!("the agent did not register within 30 s"),
            }
        }
    })
    .await;
    server.abort();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_body_has_the_requested_size() {
        for n in [0, 10, 11, 1234] {
            let body = fixed_body(n);
            assert_eq!(body.len(), n.max(10));
            let parsed: serde_json::Value =
                serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
            assert!(parsed.is_object());
        }
    }
}
