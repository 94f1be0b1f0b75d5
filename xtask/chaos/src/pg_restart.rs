//! Scenario 2: PostgreSQL restarted under create/get load, with CPU contention from busy loops
//! of our own (the 500s showed only under contention).
//!
//! Asserts, per restart: `/health` answers 200 within 5 s of PostgreSQL being back; no request
//! sent more than [`GRACE`] after that answers 5xx or fails (a 5xx that persists); and at the
//! end, no create that was answered 5xx exists in the database (checked by name), while every
//! create answered 201 does.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{Value, json};
use sqlx::Connection;

use crate::Opts;
use crate::report::Report;
use crate::server::{Berth, Store, data_dir, store_flags};

/// `/health` must answer 200 this soon after PostgreSQL accepts connections again.
const RECOVERY_BOUND: Duration = Duration::from_secs(5);
/// After `/health` recovered, requests sent later than this must not fail.
const GRACE: Duration = Duration::from_secs(5);
/// Load workers.
const WORKERS: usize = 8;
/// Busy-loop threads competing for the CPU.
const BUSY_THREADS: usize = 2;
/// No worker sends more than this many requests in all.
const MAX_REQUESTS_PER_WORKER: usize = 50_000;

/// One answered (or failed) request of the load.
#[derive(Clone)]
struct Sample {
    at: Instant,
    /// When the answer (or the failure) came.
    done: Instant,
    create: bool,
    /// `None`: no answer (connection error or timeout).
    status: Option<u16>,
    name: String,
}

/// Runs the scenario (PostgreSQL only, by its nature).
pub async fn run(opts: &Opts, report: &mut Report) -> Result<()> {
    let what = "pg-restart";
    let rounds = opts.pick(2, 10);
    let data = data_dir(opts, "pg-restart")?;
    let mut flags: Vec<String> = vec!["--provisioner".into(), "none".into()];
    flags.extend(store_flags(opts, Store::Postgres, "chaos_pg").await?);
    let db_url = flags.last().cloned().context("database URL")?;
    let mut berth = Berth::start(opts, &data, 1, &flags).await?;

    // Upper bound on the whole scenario's load, whatever happens to the rounds.
    let limit = Duration::from_secs(30 * rounds as u64 + 60);
    let stop = Arc::new(AtomicBool::new(false));
    let busy: Vec<_> = (0..BUSY_THREADS)
        .map(|_| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let start = Instant::now();
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) && start.elapsed() < limit {
                    for i in 0..100_000u64 {
                        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
                    }
                }
                x
            })
        })
        .collect();

    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let next = Arc::new(AtomicUsize::new(0));
    let http = crate::server::client(Duration::from_secs(10))?;
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let (stop, samples, next, http) = (
            Arc::clone(&stop),
            Arc::clone(&samples),
            Arc::clone(&next),
            http.clone(),
        );
        let (base, admin) = (berth.base.clone(), berth.admin.clone());
        workers.push(tokio::spawn(async move {
            let start = Instant::now();
            for _ in 0..MAX_REQUESTS_PER_WORKER / 2 {
                if stop.load(Ordering::SeqCst) || start.elapsed() > limit {
                    return;
                }
                let name = format!("pgr-{}", next.fetch_add(1, Ordering::SeqCst));
                let at = Instant::now();
                let resp = http
                    .post(format!("{base}/workspaces"))
                    .bearer_auth(&admin)
                    .json(&json!({"name": name, "external": true}))
                    .send()
                    .await;
                let (status, body) = match resp {
                    Ok(r) => {
                        let s = r.status().as_u16();
                        (Some(s), r.json::<Value>().await.unwrap_or(Value::Null))
                    }
                    Err(_) => (None, Value::Null),
                };
                let failed = status.is_none_or(|s| s >= 500);
                samples.lock().expect("lock").push(Sample {
                    at,
                    done: Instant::now(),
                    create: true,
                    status,
                    name: name.clone(),
                });
                if let Some(id) = body["id"].as_str() {
                    let at = Instant::now();
                    let status = http
                        .get(format!("{base}/workspaces/{id}"))
                        .bearer_auth(&admin)
                        .send()
                        .await
                        .ok()
                        .map(|r| r.status().as_u16());
                    samples.lock().expect("lock").push(Sample {
                        at,
                        done: Instant::now(),
                        create: false,
                        status,
                        name,
                    });
                }
                if failed {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }

    // (must be clean from, until) per round.
    let mut windows: Vec<(Instant, Instant)> = Vec::new();
    let mut outage_health = Vec::new();
    let result: Result<()> = async {
        for round in 1..=rounds {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let down_at = Instant::now();
            if let Some(w) = windows.last_mut() {
                w.1 = down_at;
            }
            sh(&opts.pg_stop).await.context("stopping PostgreSQL")?;
            // /health while the database is down: how long it takes to say so.
            let t = Instant::now();
            let status = berth
                .http
                .get(format!("{}/health", berth.base))
                .timeout(Duration::from_secs(20))
                .send()
                .await
                .ok()
                .map(|r| r.status().as_u16());
            outage_health.push((t.elapsed().as_secs_f64(), status));
            let down_for = Duration::from_secs(2).saturating_sub(down_at.elapsed());
            tokio::time::sleep(down_for).await;
            sh(&opts.pg_start).await.context("starting PostgreSQL")?;
            let back = Instant::now();
            report.restarts += 1;
            let recovered = wait_health(&berth, Duration::from_secs(30)).await;
            let took = back.elapsed();
            report.recoveries.push(took.as_secs_f64());
            eprintln!("chaos: pg-restart round {round}: /health 200 again {:.2} s after PostgreSQL was back", took.as_secs_f64());
            if !recovered || took > RECOVERY_BOUND {
                report.violation(
                    what,
                    format!("round {round}: /health answered 200 only {:.2} s after PostgreSQL was back (bound {} s){}",
                        took.as_secs_f64(), RECOVERY_BOUND.as_secs(),
                        if recovered { "" } else { "; never within 30 s" }),
                );
            }
            let clean_from = Instant::now() + GRACE;
            windows.push((clean_from, clean_from + Duration::from_secs(3600)));
            tokio::time::sleep(GRACE + Duration::from_secs(4)).await;
            if berth.exited() {
                anyhow::bail!("berth exited during round {round}:\n{}", berth.log_tail());
            }
        }
        Ok(())
    }
    .await;
    let end = Instant::now();
    if let Some(w) = windows.last_mut() {
        w.1 = end;
    }
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        let _ = w.await;
    }
    for b in busy {
        let _ = b.join();
    }
    // A round that failed half-way may have left PostgreSQL down: start it for what follows
    // (an error only means it is running already).
    if result.is_err() {
        let _ = sh(&opts.pg_start).await;
    }
    result?;

    let samples = samples.lock().expect("lock").clone();
    report.requests += samples.len() as u64;
    for (round, (from, until)) in windows.iter().enumerate() {
        let bad: Vec<&Sample> = samples
            .iter()
            // Sent after the grace and answered before the next stop began: a request still in
            // flight when PostgreSQL goes down again belongs to that outage.
            .filter(|s| s.at >= *from && s.done < *until && s.status.is_none_or(|c| c >= 500))
            .collect();
        if let Some(first) = bad.first() {
            report.violation(
                what,
                format!(
                    "round {}: {} requests failed more than {} s after /health recovered (first: {} of {} answered {:?}, {:.1} s after the window opened)",
                    round + 1,
                    bad.len(),
                    GRACE.as_secs(),
                    if first.create { "create" } else { "get" },
                    first.name,
                    first.status,
                    first.at.duration_since(*from).as_secs_f64(),
                ),
            );
        }
    }

    let failed: Vec<String> = samples
        .iter()
        .filter(|s| s.create && s.status.is_some_and(|c| c >= 500))
        .map(|s| s.name.clone())
        .collect();
    let created: Vec<String> = samples
        .iter()
        .filter(|s| s.create && s.status == Some(201))
        .map(|s| s.name.clone())
        .collect();
    let mut db = sqlx::PgConnection::connect(&db_url).await?;
    let committed: Vec<String> =
        sqlx::query_scalar("SELECT name FROM workspaces WHERE name = ANY($1)")
            .bind(&failed)
            .fetch_all(&mut db)
            .await?;
    for name in &committed {
        report.violation(
            what,
            format!("create of {name} answered 5xx, yet it committed"),
        );
    }
    let present: i64 = sqlx::query_scalar("SELECT count(*) FROM workspaces WHERE name = ANY($1)")
        .bind(&created)
        .fetch_one(&mut db)
        .await?;
    if present != created.len() as i64 {
        report.violation(
            what,
            format!(
                "{} creates answered 201 but only {present} exist",
                created.len()
            ),
        );
    }
    berth.stop();
    for panic in berth.panics() {
        report.violation(what, format!("panic in the server log: {panic}"));
    }
    let errors = samples
        .iter()
        .filter(|s| s.status.is_none_or(|c| c >= 500))
        .count();
    let max_outage = outage_health.iter().map(|(s, _)| *s).fold(0.0, f64::max);
    report.note(format!(
        "pg-restart: {} requests ({} creates answered 201, {} creates 5xx of which {} committed, {errors} failed in all, most during outages); /health while PostgreSQL was down answered in at most {max_outage:.2} s ({:?})",
        samples.len(),
        created.len(),
        failed.len(),
        committed.len(),
        outage_health.iter().map(|(_, s)| *s).collect::<Vec<_>>(),
    ));
    Ok(())
}

/// Polls `/health` every 50 ms until it answers 200 (true) or `limit` passes (false).
async fn wait_health(berth: &Berth, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        let ok = berth
            .http
            .get(format!("{}/health", berth.base))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status().as_u16() == 200);
        if ok {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Runs `command` with `sh -c` and fails unless it succeeds.
async fn sh(command: &str) -> Result<()> {
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "`{command}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
