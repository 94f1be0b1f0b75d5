//! Driving an operation `count` times at a fixed concurrency, and the JSON line it reports.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

/// The outcome of one run.
pub struct Report {
    /// Successful operations.
    pub count: usize,
    /// Failed operations.
    pub errors: usize,
    /// Wall time of the run.
    pub duration: Duration,
    /// Latencies of the successful operations, in microseconds.
    pub latencies_us: Vec<u64>,
    /// The first failure, for the log.
    pub first_error: Option<String>,
    /// Mode-specific figures (all flat scalars: xtask parses one level only).
    pub extra: Map<String, Value>,
}

impl Report {
    /// The one-line JSON xtask reads.
    pub fn to_json(&self) -> String {
        let mut sorted = self.latencies_us.clone();
        sorted.sort_unstable();
        let secs = self.duration.as_secs_f64();
        let mean = if sorted.is_empty() {
            0.0
        } else {
            sorted.iter().sum::<u64>() as f64 / sorted.len() as f64 / 1000.0
        };
        let mut out = json!({
            "count": self.count,
            "errors": self.errors,
            "duration_s": secs,
            "throughput": if secs > 0.0 { self.count as f64 / secs } else { 0.0 },
            "p50_ms": percentile(&sorted, 0.50),
            "p99_ms": percentile(&sorted, 0.99),
            "mean_ms": mean,
            "first_error": self.first_error,
        });
        if let Value::Object(map) = &mut out {
            map.extend(self.extra.clone());
        }
        out.to_string()
    }
}

/// The `q` quantile of sorted microsecond latencies, in milliseconds (nearest rank).
fn percentile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1000.0
}

/// How a run is bounded and paced.
#[derive(Clone, Copy)]
pub struct Plan {
    /// Operations to start at most.
    pub count: usize,
    /// Operations in flight at once.
    pub concurrency: usize,
    /// No operation starts after this much time.
    pub max_time: Duration,
    /// Open-loop pacing: operation `i` starts no earlier than `i / rate` seconds in.
    pub rate: Option<f64>,
}

/// Runs `op(i)` for `i` in `0..plan.count` on `plan.concurrency` tasks and times each call. An
/// operation that measures a narrower interval itself returns it (`Ok(Some(latency))`); `Ok(None)`
/// records the whole call.
pub async fn drive<F, Fut>(plan: Plan, op: F) -> Report
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<Option<Duration>>> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + plan.max_time;
    let mut workers = Vec::with_capacity(plan.concurrency);
    for _ in 0..plan.concurrency {
        let (op, next) = (Arc::clone(&op), Arc::clone(&next));
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let (mut errors, mut first_error) = (0usize, None);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= plan.count || Instant::now() >= deadline {
                    break;
                }
                if let Some(rate) = plan.rate {
                    let due = start + Duration::from_secs_f64(i as f64 / rate);
                    if due >= deadline {
                        break;
                    }
                    tokio::time::sleep_until(due.into()).await;
                }
                let began = Instant::now();
                match op(i).await {
                    Ok(measured) => {
                        let latency = measured.unwrap_or_else(|| began.elapsed());
                        latencies.push(latency.as_micros() as u64);
                    }
                    Err(err) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{err:#}"));
                    }
                }
            }
            (latencies, errors, first_error)
        }));
    }
    let mut report = Report {
        count: 0,
        errors: 0,
        duration: Duration::ZERO,
        latencies_us: Vec::new(),
        first_error: None,
        extra: Map::new(),
    };
    for worker in workers {
        match worker.await {
            Ok((latencies, errors, first_error)) => {
                report.latencies_us.extend(latencies);
                report.errors += errors;
                if report.first_error.is_none() {
                    report.first_error = first_error;
                }
            }
            Err(err) => {
                report.errors += 1;
                report.first_error = Some(format!("worker panicked: {err}"));
            }
        }
    }
    report.duration = start.elapsed();
    report.count = report.latencies_us.len();
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<u64> = (1..=100).map(|ms| ms * 1000).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[7000], 0.99), 7.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[tokio::test]
    async fn drive_is_bounded_by_count() {
        let plan = Plan {
            count: 10,
            concurrency: 3,
            max_time: Duration::from_secs(10),
            rate: None,
        };
        let report = drive(plan, |i| async move {
            anyhow::ensure!(i != 3, "three fails");
            Ok(None)
        })
        .await;
        assert_eq!((report.count, report.errors), (9, 1));
        assert!(report.to_json().contains("\"errors\":1"));
    }
}
