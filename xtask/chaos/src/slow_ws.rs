//! Scenario 4: `/ws` clients (admin, `?token=`) that never read, while activity events of
//! ≈900 KB, and of ≈60 KB between them, are written. Samples the server's resident memory (`VmRSS`) throughout.
//!
//! Asserts: the peak stays under [`PEAK_BOUND_MB`], and once the clients are cut off and gone
//! the memory settles within [`SETTLED_MARGIN_MB`] of the baseline taken before the events.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;

use crate::Opts;
use crate::report::Report;
use crate::server::{Berth, data_dir};

/// The bound on the peak: the issue saw 1.95 GB before the live-event memory fix; with it, 200
/// clients and 60 events peaked at 71 MB (long form, 2026-12-07).
const PEAK_BOUND_MB: f64 = 256.0;
/// How far above the baseline memory may stay once the slow clients are gone.
const SETTLED_MARGIN_MB: f64 = 64.0;
/// The size of a large activity event's payload.
const EVENT_BYTES: usize = 900_000;
/// The size of the events between the large ones: just under the live stream's 64 KiB limit.
const SMALL_EVENT_BYTES: usize = 60_000;

/// Runs the scenario (SQLite: the store does not matter to the live bus).
pub async fn run(opts: &Opts, report: &mut Report) -> Result<()> {
    let what = "slow-ws";
    let clients = opts.pick(20, 200);
    let events = opts.pick(40, 120);
    let data = data_dir(opts, "slow-ws")?;
    let flags: Vec<String> = ["--provisioner", "none"].map(String::from).to_vec();
    let mut berth = Berth::start(opts, &data, 1, &flags).await?;
    let pid = berth.pid().context("server pid")?;
    let (id, token) = berth.create_external("slow-ws").await?;

    let url = format!(
        "{}/ws?token={}",
        berth.base.replace("http://", "ws://"),
        berth.admin
    );
    let mut sockets = Vec::new();
    for _ in 0..clients {
        let connect = tokio_tungstenite::connect_async(url.as_str());
        match tokio::time::timeout(Duration::from_secs(10), connect).await {
            Ok(Ok((socket, _))) => sockets.push(socket),
            Ok(Err(err)) => report.violation(what, format!("/ws connect failed: {err}")),
            Err(_) => report.violation(what, "/ws connect took over 10 s"),
        }
    }
    report.requests += clients as u64;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline = rss_mb(pid).context("reading VmRSS")?;

    let peak_kib = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak_kib, stop) = (Arc::clone(&peak_kib), Arc::clone(&stop));
        tokio::spawn(async move {
            let end = Instant::now() + Duration::from_secs(900);
            while !stop.load(Ordering::SeqCst) && Instant::now() < end {
                if let Some(kib) = rss_kib(pid) {
                    peak_kib.fetch_max(kib, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    // Alternately ≈900 KB (past the live stream's per-event size limit, so it travels as a
    // reference) and ≈60 KB (under it, so it fills the subscribers' queues up to their byte
    // bounds).
    let (large, small) = ("x".repeat(EVENT_BYTES), "y".repeat(SMALL_EVENT_BYTES));
    let mut statuses = Vec::new();
    for i in 0..events {
        let blob = if i % 2 == 0 { &large } else { &small };
        let body = json!({
            "activity_type": "agent_log",
            "summary": format!("large event {i}"),
            "request_body": {"blob": blob},
        });
        let status = berth
            .http
            .post(format!("{}/workspaces/{id}/activity", berth.base))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .ok();
        statuses.push(status);
    }
    report.requests += events as u64;
    let logged = statuses.iter().filter(|s| **s == Some(200)).count();
    if logged < events {
        report.note(format!(
            "{what}: {logged} of {events} large activity posts answered 200 (others: {:?})",
            statuses
                .iter()
                .filter(|s| **s != Some(200))
                .collect::<Vec<_>>()
        ));
    }
    // The server cuts a subscriber whose queue stays full for its stall timeout (5 s).
    tokio::time::sleep(Duration::from_secs(8)).await;
    let held = rss_mb(pid).unwrap_or(0.0);
    drop(sockets);
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::SeqCst);
    let _ = sampler.await;
    let settled = rss_mb(pid).unwrap_or(0.0);
    let peak = (peak_kib.load(Ordering::SeqCst) as f64 / 1024.0).max(held);
    report.rss_mb = Some((baseline, peak, settled));
    report.note(format!(
        "{what}: {clients} non-reading clients, {logged} events of {} and {} KB: RSS baseline {baseline:.0} MB, peak {peak:.0} MB, {held:.0} MB after the stall timeout, settled {settled:.0} MB after the clients left (bounds: peak < {PEAK_BOUND_MB:.0} MB, settled < baseline + {SETTLED_MARGIN_MB:.0} MB)",
        EVENT_BYTES / 1000,
        SMALL_EVENT_BYTES / 1000
    ));
    if peak >= PEAK_BOUND_MB {
        report.violation(
            what,
            format!("peak RSS {peak:.0} MB, bound {PEAK_BOUND_MB:.0} MB"),
        );
    }
    if settled > baseline + SETTLED_MARGIN_MB {
        report.violation(
            what,
            format!("RSS settled at {settled:.0} MB after the clients left, baseline {baseline:.0} MB (margin {SETTLED_MARGIN_MB:.0} MB)"),
        );
    }
    if berth.exited() {
        report.violation(what, format!("the server exited:\n{}", berth.log_tail()));
    }
    berth.stop();
    for panic in berth.panics() {
        report.violation(what, format!("panic in the server log: {panic}"));
    }
    Ok(())
}

/// `VmRSS` of `pid` in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `VmRSS` of `pid` in MB.
fn rss_mb(pid: u32) -> Option<f64> {
    rss_kib(pid).map(|k| k as f64 / 1024.0)
}
