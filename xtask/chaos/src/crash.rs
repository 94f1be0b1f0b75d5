//! Scenario 1: creates of the `echo` template at concurrency 16 on the process backend,
//! `kill -9` of the server mid-load, a restart over the same data directory (and database).
//!
//! Asserts: every create answered 201 exists and is complete (`GET` answers 200 with the same
//! name); no workspace is still `provisioning` past its timeout; once the sweeps settled, exactly
//! one agent process per running (`online`/`degraded`) workspace and none for the others.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use reqwest::Method;
use serde_json::{Value, json};

use crate::Opts;
use crate::procs::{agents_by_workspace, kill_all};
use crate::report::Report;
use crate::server::{Berth, Store, data_dir, store_flags};

/// Concurrent creates.
const CONCURRENCY: usize = 16;
/// `--provision-timeout-secs`: short, so a workspace whose agent never came stops waiting soon.
const PROVISION_TIMEOUT_SECS: u64 = 20;
/// The `echo` template's own `provision_timeout_seconds`, which wins over the flag.
const ECHO_TIMEOUT_SECS: u64 = 60;
/// How long after the restart everything must have settled: the longest timeout, then time
/// for the sweeps (every second) to restart what they found dead.
const SETTLE: Duration = Duration::from_secs(ECHO_TIMEOUT_SECS + 45);
/// Each worker waits this long between its creates, so that agents come online while creates
/// are still arriving: the kill then meets workspaces in every state.
const PACE: Duration = Duration::from_millis(1500);
/// How long the creates run unpaced before the kill.
const BURST: Duration = Duration::from_millis(250);
/// The whole load phase may take no longer.
const LOAD_LIMIT: Duration = Duration::from_secs(180);

/// Runs the scenario on `store`.
pub async fn run(opts: &Opts, store: Store, report: &mut Report) -> Result<()> {
    let what = format!("crash/{}", store.name());
    // The kill comes after `kill_at` creates were answered 201 (and the burst); `creates` only
    // bounds the load.
    let kill_at = opts.pick(24, 80);
    let creates = opts.pick(200, 400);
    let data = data_dir(opts, &format!("crash-{}", store.name()))?;
    let mut flags: Vec<String> = [
        "--provisioner",
        "process",
        "--provision-timeout-secs",
        &PROVISION_TIMEOUT_SECS.to_string(),
        "--sweep-interval-secs",
        "1",
    ]
    .map(String::from)
    .to_vec();
    flags.extend(store_flags(opts, store, "chaos_crash").await?);

    let mut first = Berth::start(opts, &data, 1, &flags).await?;
    let created: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let next = Arc::new(AtomicUsize::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    let burst = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for worker in 0..CONCURRENCY {
        // Staggered starts spread the creates evenly, so some are always in flight.
        let stagger = PACE * worker as u32 / CONCURRENCY as u32;
        let burst = Arc::clone(&burst);
        let (created, next, killed, sent, answered) = (
            Arc::clone(&created),
            Arc::clone(&next),
            Arc::clone(&killed),
            Arc::clone(&sent),
            Arc::clone(&answered),
        );
        let http = first.http.clone();
        let url = format!("{}/workspaces", first.base);
        let admin = first.admin.clone();
        workers.push(tokio::spawn(async move {
            tokio::time::sleep(stagger).await;
            let start = Instant::now();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= creates || killed.load(Ordering::SeqCst) || start.elapsed() > LOAD_LIMIT {
                    return;
                }
                let name = format!("crash-{i}");
                sent.fetch_add(1, Ordering::SeqCst);
                let resp = http
                    .post(&url)
                    .bearer_auth(&admin)
                    .json(&json!({"name": name, "template": "echo"}))
                    .send()
                    .await;
                let Ok(resp) = resp else { continue };
                answered.fetch_add(1, Ordering::SeqCst);
                if resp.status().as_u16() == 201
                    && let Ok(v) = resp.json::<Value>().await
                    && let Some(id) = v["id"].as_str()
                {
                    created.lock().expect("lock").push((name, id.to_owned()));
                }
                if !burst.load(Ordering::SeqCst) {
                    tokio::time::sleep(PACE).await;
                }
            }
        }));
    }
    // Kill once `kill_at` creates were answered 201 and a third of those are online (or 30 s
    // later), just after the burst: other creates are in flight.
    let deadline = Instant::now() + LOAD_LIMIT;
    let mut half_at: Option<Instant> = None;
    let mut online_at_kill = 0;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let n = created.lock().expect("lock").len();
        if n < kill_at {
            continue;
        }
        let since = *half_at.get_or_insert_with(Instant::now);
        online_at_kill = list(&first)
            .await
            .map(|all| all.iter().filter(|(_, _, s)| s == "online").count())
            .unwrap_or(0);
        if online_at_kill * 3 >= n || since.elapsed() > Duration::from_secs(30) {
            break;
        }
    }
    // The creates stop pacing themselves, so that the kill meets creates in flight.
    burst.store(true, Ordering::SeqCst);
    tokio::time::sleep(BURST).await;
    first.kill9();
    killed.store(true, Ordering::SeqCst);
    for w in workers {
        let _ = w.await;
    }
    let created = created.lock().expect("lock").clone();
    let sent = sent.load(Ordering::SeqCst);
    let unanswered = sent - answered.load(Ordering::SeqCst);
    report.requests += sent as u64;

    let mut second = Berth::start(opts, &data, 2, &flags).await?;
    let result = check(&second, &created, &what, report).await;
    // Clean up whatever the check found, even on failure.
    let ids = list_ids(&second).await.unwrap_or_default();
    second.stop();
    kill_all(&ids);
    for panic in first.panics().into_iter().chain(second.panics()) {
        report.violation(&what, format!("panic in the server log: {panic}"));
    }
    report.note(format!(
        "{what}: {sent} creates sent, {} answered 201 before kill -9 ({online_at_kill} online at the kill, {unanswered} cut off unanswered), {} workspaces after restart",
        created.len(),
        ids.len()
    ));
    result
}

/// Every workspace id the server lists.
async fn list_ids(berth: &Berth) -> Result<Vec<String>> {
    Ok(list(berth)
        .await?
        .into_iter()
        .map(|(id, _, _)| id)
        .collect())
}

/// `(id, name, status)` of every workspace.
async fn list(berth: &Berth) -> Result<Vec<(String, String, String)>> {
    let (status, v) = berth
        .call(Method::GET, "/workspaces", Some(&berth.admin), None)
        .await?;
    anyhow::ensure!(status == 200, "GET /workspaces answered {status}");
    let items = v
        .as_array()
        .or_else(|| v["workspaces"].as_array())
        .cloned()
        .unwrap_or_default();
    Ok(items
        .iter()
        .map(|w| {
            let s = |k: &str| w[k].as_str().unwrap_or_default().to_owned();
            (s("id"), s("name"), s("status"))
        })
        .collect())
}

/// The assertions after the restart.
async fn check(
    berth: &Berth,
    created: &[(String, String)],
    what: &str,
    report: &mut Report,
) -> Result<()> {
    for (name, id) in created {
        let (status, v) = berth
            .call(
                Method::GET,
                &format!("/workspaces/{id}"),
                Some(&berth.admin),
                None,
            )
            .await?;
        report.requests += 1;
        if status != 200 || v["name"].as_str() != Some(name) {
            report.violation(
                what,
                format!("create of {name} answered 201 ({id}), after the restart GET answers {status} {v}"),
            );
        }
    }

    // Settled: nothing provisioning or offline (the sweeps restart those), and the agent count of
    // every workspace is what its status asks for, twice in a row 3 s apart.
    let deadline = Instant::now() + SETTLE;
    let mut stable = 0;
    let mut last: Vec<String>;
    loop {
        let workspaces = list(berth).await?;
        report.requests += 1;
        let ids: Vec<String> = workspaces.iter().map(|(id, _, _)| id.clone()).collect();
        let agents = agents_by_workspace(&ids);
        last = problems(&workspaces, &agents);
        if last.is_empty() {
            stable += 1;
            if stable == 2 {
                let by_status = tally(&workspaces);
                report.note(format!("{what}: settled: {by_status}"));
                return Ok(());
            }
        } else {
            stable = 0;
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let n = last.len();
    for problem in last {
        report.violation(
            what,
            format!("{} s after the restart: {problem}", SETTLE.as_secs()),
        );
    }
    report.note(format!("{what}: {n} workspaces not settled"));
    Ok(())
}

/// Counts of workspaces per status, for the summary.
fn tally(workspaces: &[(String, String, String)]) -> String {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for (_, _, status) in workspaces {
        *counts.entry(status.as_str()).or_default() += 1;
    }
    let mut parts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    parts.sort();
    parts.join(", ")
}

/// What is not (yet) right: a transitional status, or an agent count its status forbids.
fn problems(
    workspaces: &[(String, String, String)],
    agents: &HashMap<String, Vec<u32>>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (id, name, status) in workspaces {
        let n = agents.get(id).map_or(0, Vec::len);
        let want = match status.as_str() {
            "online" | "degraded" => 1,
            "provisioning" | "offline" | "hibernating" => {
                out.push(format!("{name} ({id}) still {status} ({n} agents)"));
                continue;
            }
            _ => 0,
        };
        if n != want {
            out.push(format!(
                "{name} ({id}) is {status} with {n} agent processes (want {want}): pids {:?}",
                agents.get(id).cloned().unwrap_or_default()
            ));
        }
    }
    out
}
