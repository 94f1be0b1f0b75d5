//! Prometheus metrics (DECISIONS.md §5), hand-written in the text exposition format 0.0.4 so
//! the dependency tree stays lean: a few histogram families kept behind one mutex each, and the
//! workspaces-by-status gauge computed at scrape time from one aggregate query (never the rows).
//!
//! Cardinality is bounded by construction: HTTP series are keyed by the matched route template
//! (never the raw path), a method from a fixed list, and the status class; provisioning series by
//! backend kind and outcome.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use berth_domain::WorkspaceId;
use berth_domain::status::WorkspaceStatus;
use berth_provision::BackendKind;

use crate::service::WorkspaceService;

/// The `Content-Type` of the exposition.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Request latency buckets, in seconds.
const HTTP_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Provisioning (backend start) buckets, in seconds.
const PROVISION_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];
/// Create → first `online` buckets, in seconds.
const ONLINE_BUCKETS: &[f64] = &[
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// Heartbeats per flushed batch.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// Workspaces created by this process and not yet seen online are remembered at most this
/// long, and at most this many at once (a workspace that never comes online must not leak).
const PENDING_ONLINE_TTL: Duration = Duration::from_secs(24 * 3600);
const PENDING_ONLINE_CAP: usize = 10_000;

/// Every status string, so the gauge reports zeros too.
const STATUSES: &[WorkspaceStatus] = &[
    WorkspaceStatus::Provisioning,
    WorkspaceStatus::Online,
    WorkspaceStatus::Offline,
    WorkspaceStatus::Degraded,
    WorkspaceStatus::Failed,
    WorkspaceStatus::Paused,
    WorkspaceStatus::Hibernating,
    WorkspaceStatus::Hibernated,
    WorkspaceStatus::AwaitingAgent,
];

/// The label of a backend kind.
pub fn backend_label(kind: BackendKind) -> &'static str {
    match kind {
        BackendKind::None => "none",
        BackendKind::Process => "process",
        BackendKind::Docker => "docker",
        BackendKind::ControlPlane => "control_plane",
    }
}

/// The `method` label: one of the standard methods, else `other` (a client cannot mint series).
pub fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

/// The `status` label: the status class (`2xx`, `4xx`, …).
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// One histogram series: per-bucket (non-cumulative) counts, the sum and the count.
#[derive(Debug, Clone)]
struct Series {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

/// A histogram family keyed by its label values.
#[derive(Debug)]
struct HistogramVec {
    buckets: &'static [f64],
    series: Mutex<BTreeMap<Vec<String>, Series>>,
}

impl HistogramVec {
    fn new(buckets: &'static [f64]) -> Self {
        Self {
            buckets,
            series: Mutex::new(BTreeMap::new()),
        }
    }

    fn observe(&self, labels: Vec<String>, seconds: f64) {
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let s = series.entry(labels).or_insert_with(|| Series {
            counts: vec![0; self.buckets.len()],
            sum: 0.0,
            count: 0,
        });
        if let Some(i) = self.buckets.iter().position(|b| seconds <= *b) {
            s.counts[i] += 1;
        }
        s.sum += seconds;
        s.count += 1;
    }

    fn snapshot(&self) -> Vec<(Vec<String>, Series)> {
        let series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        series.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// The process-wide metrics registry (one per [`WorkspaceService`], shared by its clones).
#[derive(Debug)]
pub struct Metrics {
    http: HistogramVec,
    provision: HistogramVec,
    create_to_online: HistogramVec,
    /// Workspaces created by this process and not yet online: create time and backend label.
    pending_online: Mutex<HashMap<WorkspaceId, (Instant, &'static str)>>,
    /// Terminal sessions open now, and opened since start.
    terminals_open: std::sync::atomic::AtomicI64,
    terminals_opened: std::sync::atomic::AtomicU64,
    /// Execs by outcome (`ok`, `nonzero`, `timed_out`, `error`).
    exec: HistogramVec,
    /// Heartbeats per store transaction (`heartbeats.rs`).
    heartbeat_batches: HistogramVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            http: HistogramVec::new(HTTP_BUCKETS),
            provision: HistogramVec::new(PROVISION_BUCKETS),
            create_to_online: HistogramVec::new(ONLINE_BUCKETS),
            pending_online: Mutex::new(HashMap::new()),
            terminals_open: Default::default(),
            terminals_opened: Default::default(),
            exec: HistogramVec::new(PROVISION_BUCKETS),
            heartbeat_batches: HistogramVec::new(BATCH_BUCKETS),
        }
    }
}

impl Metrics {
    /// Records one HTTP request: `route` is the matched route template (or `unmatched`).
    pub fn observe_http(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        self.http.observe(
            vec![
                method_label(method).to_owned(),
                route.to_owned(),
                status_class(status).to_owned(),
            ],
            elapsed.as_secs_f64(),
        );
    }

    /// Records one provisioning attempt of `backend`.
    pub fn observe_provision(&self, backend: BackendKind, success: bool, elapsed: Duration) {
        let outcome = if success { "success" } else { "failure" };
        self.provision.observe(
            vec![backend_label(backend).to_owned(), outcome.to_owned()],
            elapsed.as_secs_f64(),
        );
    }

    /// A terminal session opened.
    pub fn terminal_opened(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        self.terminals_open.fetch_add(1, Relaxed);
        self.terminals_opened.fetch_add(1, Relaxed);
    }

    /// A terminal session closed.
    pub fn terminal_closed(&self) {
        self.terminals_open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// One exec and how it ended.
    pub fn observe_exec(&self, outcome: &str, elapsed: Duration) {
        self.exec
            .observe(vec![outcome.to_owned()], elapsed.as_secs_f64());
    }

    /// One flushed batch of `size` heartbeats.
    pub fn observe_heartbeat_batch(&self, size: usize) {
        self.heartbeat_batches.observe(Vec::new(), size as f64);
    }

    /// Remembers when a workspace was created (its create transaction committed).
    pub fn workspace_created(&self, id: WorkspaceId, backend: &'static str) {
        let mut pending = self
            .pending_online
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if pending.len() >= PENDING_ONLINE_CAP {
            pending.retain(|_, (at, _)| at.elapsed() < PENDING_ONLINE_TTL);
            if pending.len() >= PENDING_ONLINE_CAP {
                return;
            }
        }
        pending.insert(id, (Instant::now(), backend));
    }

    /// A workspace went `online`: the first time after its create, its create → online time is
    /// observed. Later calls (heartbeats, re-registers) find nothing and do nothing.
    pub fn workspace_online(&self, id: WorkspaceId) {
        let entry = self
            .pending_online
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        if let Some((created, backend)) = entry {
            self.create_to_online
                .observe(vec![backend.to_owned()], created.elapsed().as_secs_f64());
        }
    }

    /// The exposition: every family, then the status gauge from `by_status`, then the loops'
    /// last ticks (Unix seconds).
    pub fn render(
        &self,
        by_status: &BTreeMap<String, u64>,
        loop_ticks: &[(&'static str, Option<f64>)],
    ) -> String {
        let mut out = String::new();
        let http = self.http.snapshot();
        family(
            &mut out,
            "berth_http_requests_total",
            "counter",
            "HTTP requests by method, matched route template and status class.",
        );
        for (labels, s) in &http {
            sample(
                &mut out,
                "berth_http_requests_total",
                &zip(&["method", "route", "status"], labels),
                s.count as f64,
            );
        }
        histogram(
            &mut out,
            "berth_http_request_duration_seconds",
            "HTTP request latency by method, matched route template and status class.",
            &["method", "route", "status"],
            HTTP_BUCKETS,
            &http,
        );

        use std::sync::atomic::Ordering::Relaxed;
        family(
            &mut out,
            "berth_terminal_sessions",
            "gauge",
            "Terminal sessions open now.",
        );
        sample(
            &mut out,
            "berth_terminal_sessions",
            &[],
            self.terminals_open.load(Relaxed) as f64,
        );
        family(
            &mut out,
            "berth_terminal_sessions_opened_total",
            "counter",
            "Terminal sessions opened since the server started.",
        );
        sample(
            &mut out,
            "berth_terminal_sessions_opened_total",
            &[],
            self.terminals_opened.load(Relaxed) as f64,
        );
        let exec = self.exec.snapshot();
        family(
            &mut out,
            "berth_exec_total",
            "counter",
            "One-shot commands (POST /workspaces/{id}/exec) by outcome.",
        );
        for (labels, s) in &exec {
            sample(
                &mut out,
                "berth_exec_total",
                &zip(&["outcome"], labels),
                s.count as f64,
            );
        }
        histogram(
            &mut out,
            "berth_exec_duration_seconds",
            "One-shot command duration by outcome.",
            &["outcome"],
            PROVISION_BUCKETS,
            &exec,
        );

        histogram(
            &mut out,
            "berth_heartbeat_batch_size",
            "Heartbeats applied per store transaction (group commit).",
            &[],
            BATCH_BUCKETS,
            &self.heartbeat_batches.snapshot(),
        );

        let provision = self.provision.snapshot();
        family(
            &mut out,
            "berth_provisions_total",
            "counter",
            "Provisioning attempts by backend and outcome.",
        );
        for (labels, s) in &provision {
            sample(
                &mut out,
                "berth_provisions_total",
                &zip(&["backend", "outcome"], labels),
                s.count as f64,
            );
        }
        histogram(
            &mut out,
            "berth_provision_duration_seconds",
            "Provisioning duration (preparation and backend start) by backend and outcome.",
            &["backend", "outcome"],
            PROVISION_BUCKETS,
            &provision,
        );
        histogram(
            &mut out,
            "berth_workspace_create_to_online_seconds",
            "Time from a workspace's create commit to its first online transition, by backend.",
            &["backend"],
            ONLINE_BUCKETS,
            &self.create_to_online.snapshot(),
        );

        family(
            &mut out,
            "berth_workspaces",
            "gauge",
            "Live workspaces by status, counted at scrape time.",
        );
        for status in STATUSES {
            let n = by_status.get(status.as_str()).copied().unwrap_or(0);
            sample(
                &mut out,
                "berth_workspaces",
                &[("status", status.as_str())],
                n as f64,
            );
        }

        family(
            &mut out,
            "berth_loop_last_tick_timestamp_seconds",
            "gauge",
            "Unix time of each background loop's last completed pass.",
        );
        for (name, at) in loop_ticks {
            if let Some(at) = at {
                sample(
                    &mut out,
                    "berth_loop_last_tick_timestamp_seconds",
                    &[("loop", name)],
                    *at,
                );
            }
        }
        out
    }
}

/// `# HELP` and `# TYPE` lines.
pub(crate) fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn zip<'a>(names: &[&'a str], values: &'a [String]) -> Vec<(&'a str, &'a str)> {
    names
        .iter()
        .copied()
        .zip(values.iter().map(String::as_str))
        .collect()
}

/// Escapes a label value: backslash, double quote and line feed.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub(crate) fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape(v));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {}", number(value));
}

/// Prometheus number formatting (`+Inf`, integers without a fraction).
fn number(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

fn histogram(
    out: &mut String,
    name: &str,
    help: &str,
    label_names: &[&str],
    buckets: &[f64],
    series: &[(Vec<String>, Series)],
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    let bucket_name = format!("{name}_bucket");
    for (values, s) in series {
        let labels = zip(label_names, values);
        let mut cumulative = 0u64;
        for (bound, n) in buckets.iter().zip(&s.counts) {
            cumulative += n;
            let le = number(*bound);
            let mut with_le = labels.clone();
            with_le.push(("le", &le));
            sample(out, &bucket_name, &with_le, cumulative as f64);
        }
        let mut inf = labels.clone();
        inf.push(("le", "+Inf"));
        sample(out, &bucket_name, &inf, s.count as f64);
        sample(out, &format!("{name}_sum"), &labels, s.sum);
        sample(out, &format!("{name}_count"), &labels, s.count as f64);
    }
}

impl WorkspaceService {
    /// The metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The whole exposition; the status gauge comes from one `GROUP BY status` count.
    pub async fn render_metrics(&self) -> Result<String, berth_store::Error> {
        let by_status: BTreeMap<String, u64> = self
            .store
            .count_by_status()
            .await?
            .into_iter()
            .map(|(status, n)| (status, n.max(0) as u64))
            .collect();
        let ticks: Vec<_> = self
            .loop_liveness(chrono::Utc::now())
            .into_iter()
            .map(|l| {
                let at = l.last_tick_at.map(|t| t.timestamp_millis() as f64 / 1000.0);
                (l.name, at)
            })
            .collect();
        let mut out = self.metrics.render(&by_status, &ticks);
        self.render_event_metrics(&mut out);
        self.render_pool_metrics(&mut out).await?;
        Ok(out)
    }

    /// Starts the create → online clock of a workspace whose create just committed.
    pub(crate) fn note_created(&self, id: WorkspaceId, external: bool) {
        let backend = if external {
            "external"
        } else {
            backend_label(self.provisioner.kind())
        };
        self.metrics.workspace_created(id, backend);
    }

    /// Observes the create → online time when `status` is `online` (first time only).
    pub(crate) fn note_status(&self, id: WorkspaceId, status: WorkspaceStatus) {
        if status == WorkspaceStatus::Online {
            self.metrics.workspace_online(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_cumulative_buckets_and_bounded_labels() {
        let m = Metrics::default();
        m.observe_http("GET", "/workspaces/{id}", 404, Duration::from_millis(20));
        m.observe_http("GET", "/workspaces/{id}", 404, Duration::from_secs(20));
        m.observe_http("BREW", "unmatched", 200, Duration::from_millis(1));
        let text = m.render(&BTreeMap::new(), &[]);
        assert!(text.contains(
            "berth_http_requests_total{method=\"GET\",route=\"/workspaces/{id}\",status=\"4xx\"} 2\n"
        ));
        assert!(text.contains(
            "berth_http_request_duration_seconds_bucket{method=\"GET\",route=\"/workspaces/{id}\",status=\"4xx\",le=\"0.025\"} 1\n"
        ));
        assert!(text.contains(
            "berth_http_request_duration_seconds_bucket{method=\"GET\",route=\"/workspaces/{id}\",status=\"4xx\",le=\"10\"} 1\n"
        ));
        assert!(text.contains(
            "berth_http_request_duration_seconds_bucket{method=\"GET\",route=\"/workspaces/{id}\",status=\"4xx\",le=\"+Inf\"} 2\n"
        ));
        assert!(text.contains("method=\"other\",route=\"unmatched\",status=\"2xx\""));
        assert!(text.contains("berth_workspaces{status=\"online\"} 0\n"));
    }

    #[test]
    fn create_to_online_is_observed_once() {
        let m = Metrics::default();
        let id = WorkspaceId::new_v4();
        m.workspace_online(id);
        m.workspace_created(id, "process");
        m.workspace_online(id);
        m.workspace_online(id);
        let text = m.render(&BTreeMap::new(), &[]);
        assert!(
            text.contains(
                "berth_workspace_create_to_online_seconds_count{backend=\"process\"} 1\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(number(0.5), "0.5");
        assert_eq!(number(3.0), "3");
        assert_eq!(number(f64::INFINITY), "+Inf");
    }
}
