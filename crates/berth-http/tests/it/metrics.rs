//! `GET /metrics`: Prometheus text that parses, with request, provisioning and create → online
//! histograms and the workspaces-by-status gauge; admin-only unless configured open (§9.5 #48).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::json;

use crate::helpers::{Recorder, Setup, TestApp, app};

/// Label names to values.
type Labels = BTreeMap<String, String>;

/// One sample: metric name, labels, value.
type Sample = (String, Labels, f64);

/// Parses the text exposition strictly enough for these tests: every line is a `# HELP`, a
/// `# TYPE` or a sample `name{k="v",…} value`; every sample belongs to a declared family.
fn parse(text: &str) -> Vec<Sample> {
    let mut families: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            assert!(rest.split_once(' ').is_some(), "bad HELP line {line:?}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE line");
            assert!(
                ["counter", "gauge", "histogram"].contains(&kind),
                "bad type {line:?}"
            );
            families.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "bad line {line:?}"
        );
        let (series, value) = line.rsplit_once(' ').expect("sample has a value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("closing brace");
                let mut labels = BTreeMap::new();
                for pair in split_labels(body) {
                    let (k, v) = pair.split_once('=').expect("label pair");
                    let v = v
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .expect("quoted label value");
                    labels.insert(k.to_owned(), v.replace("\\\"", "\"").replace("\\\\", "\\"));
                }
                (name.to_owned(), labels)
            }
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name {name:?}"
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|base| families.get(*base).is_some_and(|k| k == "histogram"))
            })
            .unwrap_or(&name);
        assert!(
            families.contains_key(family),
            "undeclared family of {line:?}"
        );
        samples.push((name, labels, value));
    }
    samples
}

/// Splits `a="x",b="y,z"` at the commas outside quotes.
fn split_labels(body: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut escaped) = (false, false);
    for c in body.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The value of one sample, if present.
fn value(samples: &[Sample], name: &str, pairs: &[(&str, &str)]) -> Option<f64> {
    let want = labels(pairs);
    samples
        .iter()
        .find(|(n, l, _)| n == name && *l == want)
        .map(|(_, _, v)| *v)
}

/// Every histogram series: buckets non-decreasing, `le` increasing, `+Inf` equal to `_count`.
fn assert_histograms_consistent(samples: &[Sample]) -> usize {
    let mut series: BTreeMap<(String, Labels), Vec<(f64, f64)>> = BTreeMap::new();
    for (name, l, v) in samples {
        if let Some(base) = name.strip_suffix("_bucket") {
            let mut key = l.clone();
            let le = key.remove("le").expect("bucket has le");
            let le: f64 = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().expect("le is a number")
            };
            series
                .entry((base.to_owned(), key))
                .or_default()
                .push((le, *v));
        }
    }
    for ((base, key), buckets) in &series {
        for w in buckets.windows(2) {
            assert!(w[0].0 < w[1].0, "{base} {key:?}: le not increasing");
            assert!(w[0].1 <= w[1].1, "{base} {key:?}: buckets not monotonic");
        }
        let (last_le, last) = *buckets.last().expect("buckets");
        assert!(last_le.is_infinite(), "{base} {key:?}: no +Inf bucket");
        let pairs: Vec<(&str, &str)> = key.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            value(samples, &format!("{base}_count"), &pairs),
            Some(last),
            "{base} {key:?}: +Inf != _count"
        );
        assert!(value(samples, &format!("{base}_sum"), &pairs).is_some());
    }
    series.len()
}

impl TestApp {
    async fn scrape(&self) -> (String, Vec<Sample>) {
        let resp = self.get("/metrics").await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
        assert_eq!(
            resp.header("content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        let samples = parse(&resp.text);
        (resp.text, samples)
    }
}

#[tokio::test]
async fn metrics_need_the_admin_bearer_by_default() {
    let app = app().await;
    let resp = app.get_anon("/metrics").await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert_eq!(resp.json, json!({"error": "admin auth required"}));
    let resp = app
        .call(Method::GET, "/metrics", Some("not-the-admin-token"))
        .await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert_eq!(resp.json, json!({"error": "invalid admin auth token"}));
    // A workspace token is not enough either.
    let (_, token) = app
        .external(json!({"name": "ext", "runtime": "external"}))
        .await;
    let resp = app.call(Method::GET, "/metrics", Some(&token)).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn metrics_can_be_configured_open() {
    let app = Setup {
        metrics_open: true,
        ..Setup::default()
    }
    .start()
    .await;
    let resp = app.get_anon("/metrics").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    parse(&resp.text);
    // Only /metrics opens: other admin routes still need the bearer.
    assert_eq!(
        app.get_anon("/templates").await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn requests_are_counted_by_route_template_method_and_status_class() {
    let app = app().await;
    let id = app
        .create_id(json!({"name": "m", "model": "openai/gpt-4o"}))
        .await;
    app.service.drain().await;
    for _ in 0..2 {
        assert_eq!(
            app.get(&format!("/workspaces/{id}")).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(
        app.get_anon("/no/such/route").await.status,
        StatusCode::NOT_FOUND
    );
    let resp = app
        .send(
            Request::builder()
                .method("BREW")
                .uri("/health")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(resp.status, StatusCode::METHOD_NOT_ALLOWED);

    let (text, samples) = app.scrape().await;
    let total = "berth_http_requests_total";
    assert_eq!(
        value(
            &samples,
            total,
            &[
                ("method", "GET"),
                ("route", "/workspaces/{id}"),
                ("status", "2xx")
            ]
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        value(
            &samples,
            total,
            &[
                ("method", "POST"),
                ("route", "/workspaces"),
                ("status", "2xx")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            total,
            &[("method", "GET"), ("route", "unmatched"), ("status", "4xx")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            total,
            &[("method", "other"), ("route", "/health"), ("status", "4xx")]
        ),
        Some(1.0)
    );
    // Bounded cardinality: no raw path, no client-chosen method.
    assert!(!text.contains(&id.to_string()), "a raw path leaked: {text}");
    assert!(!text.contains("BREW") && !text.contains("/no/such/route"));
    assert!(
        text.contains(
            "berth_http_request_duration_seconds_bucket{method=\"GET\",route=\"/workspaces/{id}\",status=\"2xx\",le=\"+Inf\"} 2\n"
        ),
        "{text}"
    );
    assert!(text.contains("# TYPE berth_http_request_duration_seconds histogram\n"));
    assert!(text.contains("# TYPE berth_http_requests_total counter\n"));
    assert!(assert_histograms_consistent(&samples) >= 4);

    // NoBackend: the provisioning attempt failed, and the gauge counts the failed workspace.
    assert_eq!(
        value(
            &samples,
            "berth_provisions_total",
            &[("backend", "none"), ("outcome", "failure")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(
            &samples,
            "berth_provision_duration_seconds_count",
            &[("backend", "none"), ("outcome", "failure")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&samples, "berth_workspaces", &[("status", "failed")]),
        Some(1.0)
    );
    assert_eq!(
        value(&samples, "berth_workspaces", &[("status", "online")]),
        Some(0.0)
    );
    assert!(text.contains("# TYPE berth_workspaces gauge\n"));
}

#[tokio::test]
async fn provisioning_and_create_to_online_are_measured_per_backend() {
    let app = Setup {
        provisioner: Recorder::new(),
        ..Setup::default()
    }
    .start()
    .await;
    let (id, token) = app.container("c2o").await;
    let (_, samples) = app.scrape().await;
    assert_eq!(
        value(
            &samples,
            "berth_provisions_total",
            &[("backend", "process"), ("outcome", "success")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "berth_workspace_create_to_online_seconds_count",
            &[("backend", "process")]
        ),
        None,
        "not online yet"
    );
    assert_eq!(
        value(&samples, "berth_workspaces", &[("status", "provisioning")]),
        Some(1.0)
    );

    let resp = app.register(id, Some(&token), None).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    // A second register and a heartbeat do not observe it again.
    assert_eq!(
        app.register(id, Some(&token), None).await.status,
        StatusCode::OK
    );
    app.heartbeat_ok(id, &token, json!({})).await;

    let (text, samples) = app.scrape().await;
    assert_eq!(
        value(
            &samples,
            "berth_workspace_create_to_online_seconds_count",
            &[("backend", "process")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(
            &samples,
            "berth_workspace_create_to_online_seconds_bucket",
            &[("backend", "process"), ("le", "+Inf")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&samples, "berth_workspaces", &[("status", "online")]),
        Some(1.0)
    );
    assert!(
        text.contains(
            "berth_http_requests_total{method=\"POST\",route=\"/registry/register\",status=\"2xx\"} 2\n"
        ),
        "{text}"
    );
    assert_histograms_consistent(&samples);
}

#[tokio::test]
async fn external_workspaces_have_their_own_create_to_online_series() {
    let app = Setup {
        provisioner: Arc::new(crate::helpers::started_provisioner(|_| Ok(true))),
        ..Setup::default()
    }
    .start()
    .await;
    let (id, token) = app
        .external(json!({"name": "ext", "runtime": "external"}))
        .await;
    let body = json!({"id": id.to_string(), "url": "https://agent.example.com/a2a",
                      "agent_card": {"name": "agent"}});
    let resp = app.post("/registry/register", Some(&token), &body).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    let (text, samples) = app.scrape().await;
    assert_eq!(
        value(
            &samples,
            "berth_workspace_create_to_online_seconds_count",
            &[("backend", "external")]
        ),
        Some(1.0),
        "{text}"
    );
}
