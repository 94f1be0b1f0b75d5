//! `--wait`: follow a workspace until it is `online` or `failed`, showing its status
//! transitions on stderr — with a spinner on a terminal, as plain lines otherwise (a log, a CI
//! job). Hand-written: one line redrawn with `\r`, which is all a spinner is.

use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

use berth_client::berth_api::workspaces::Workspace;
use berth_client::{Client, Error};
use berth_domain::WorkspaceId;

use crate::cli::Failure;
use crate::cli::args::WaitArgs;

const FRAMES: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

/// Waits (at most `timeout`) until `id` is online; the workspace then. Status changes are
/// shown on stderr as they happen.
pub async fn wait_online(
    client: &Client,
    id: WorkspaceId,
    timeout: Duration,
) -> Result<Workspace<'static>, Failure> {
    follow(id, timeout, |show| client.wait_until_settled(id, show)).await
}

/// Restarts `id` and waits (at most `wait.timeout`) until its new start is online.
pub async fn restart_and_wait(
    client: &Client,
    id: WorkspaceId,
    template: Option<&str>,
    wait: &WaitArgs,
) -> Result<Workspace<'static>, Failure> {
    follow(id, Duration::from_secs(wait.timeout), |show| async move {
        client
            .restart_and_wait(id, template, show)
            .await
            .map(|(_, ws)| ws)
    })
    .await
}

/// Runs `wait` (given the callback that shows each status) under `timeout`, with the spinner.
async fn follow<F, Fut>(
    id: WorkspaceId,
    timeout: Duration,
    wait: F,
) -> Result<Workspace<'static>, Failure>
where
    F: FnOnce(Box<dyn FnMut(&Workspace<'static>) + Send>) -> Fut,
    Fut: std::future::Future<Output = Result<Workspace<'static>, Error>>,
{
    let terminal = std::io::stderr().is_terminal();
    let started = Instant::now();
    let status = std::sync::Arc::new(std::sync::Mutex::new(String::from("waiting")));
    let shown = status.clone();
    let show = move |ws: &Workspace<'static>| {
        let s = ws.status.as_str().to_owned();
        if terminal {
            eprint!("\r\x1b[2K");
        }
        eprintln!(
            "{} {s} ({:.1}s)",
            match s.as_str() {
                "online" => "✓",
                "failed" => "✗",
                _ => "→",
            },
            started.elapsed().as_secs_f64()
        );
        *shown.lock().expect("status") = s;
    };
    let wait = wait(Box::new(show));
    let spin = async {
        if !terminal {
            return std::future::pending::<()>().await;
        }
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        for frame in FRAMES.iter().cycle() {
            tick.tick().await;
            let s = status.lock().expect("status").clone();
            eprint!("\r\x1b[2K{frame} {s} ({}s)", started.elapsed().as_secs());
            let _ = std::io::stderr().flush();
        }
    };
    let result = tokio::select! {
        r = tokio::time::timeout(timeout, wait) => r,
        () = spin => unreachable!("the spinner never ends"),
    };
    if terminal {
        eprint!("\r\x1b[2K");
        let _ = std::io::stderr().flush();
    }
    match result {
        Ok(Ok(ws)) => Ok(ws),
        Ok(Err(e)) => Err(Failure::Client(e)),
        Err(_) => Err(Failure::Usage(format!(
            "workspace {id} is still {} after {}s (--timeout)",
            status.lock().expect("status"),
            timeout.as_secs()
        ))),
    }
}
