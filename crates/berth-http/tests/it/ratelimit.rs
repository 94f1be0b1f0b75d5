//! The rate limiter (REFERENCE-2.md §5, fixing REFERENCE.md §12 #78 and REFERENCE-2.md §9.5
//! #50): a fixed window per client address (the TCP peer, or the right-most untrusted
//! `X-Forwarded-For` hop behind a trusted proxy) or per bearer credential; client-chosen
//! headers never pick a fresh bucket; 401s on bearer requests count against the address; 429s
//! are counted by the request metrics; test apps are never throttled by default.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::json;

use crate::helpers::{ADMIN_TOKEN, Resp, Setup, TestApp, app};

fn limited(per_minute: u32) -> Setup {
    Setup {
        rate_limit: Some(berth_http::RateLimit { per_minute }),
        ..Setup::default()
    }
}

/// `GET uri` from `peer` with extra headers.
async fn from(app: &TestApp, peer: &str, uri: &str, headers: &[(&str, &str)]) -> Resp {
    let mut b = Request::builder().method(Method::GET).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let mut req = b.body(Body::empty()).expect("request");
    let addr: SocketAddr = format!("{peer}:40000").parse().expect("peer");
    req.extensions_mut().insert(ConnectInfo(addr));
    app.send(req).await
}

fn remaining(resp: &Resp) -> Option<u32> {
    resp.header("x-ratelimit-remaining")
        .and_then(|v| v.parse().ok())
}

fn assert_throttled(resp: &Resp) {
    assert_eq!(resp.status, StatusCode::TOO_MANY_REQUESTS, "{}", resp.text);
    let retry: u64 = resp
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert_eq!(
        resp.json,
        json!({"error": "rate limit exceeded", "retry_after": retry})
    );
    assert_eq!(resp.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(
        resp.header("x-ratelimit-reset"),
        Some(retry.to_string().as_str())
    );
}

#[tokio::test]
async fn test_apps_are_not_throttled_by_default() {
    let app = app().await;
    for _ in 0..700 {
        let resp = from(&app, "192.0.2.1", "/health", &[]).await;
        assert_eq!(resp.status, StatusCode::OK);
        assert_eq!(resp.header("x-ratelimit-limit"), None);
    }
}

#[tokio::test]
async fn one_address_gets_its_limit_per_window_whatever_headers_it_sends() {
    let app = limited(3).start().await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let resp = from(&app, "192.0.2.1", "/health", &[]).await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
        assert_eq!(resp.header("x-ratelimit-limit"), Some("3"));
        let reset: u64 = resp
            .header("x-ratelimit-reset")
            .and_then(|v| v.parse().ok())
            .expect("reset");
        assert!((1..=60).contains(&reset), "reset {reset}");
        seen.push(remaining(&resp));
    }
    assert_eq!(seen, [Some(2), Some(1), Some(0)]);
    let resp = from(&app, "192.0.2.1", "/health", &[]).await;
    assert_throttled(&resp);
    // 429s still carry the security headers.
    assert_eq!(resp.header("x-content-type-options"), Some("nosniff"));

    // Rotating client-chosen headers buys nothing (REFERENCE-2.md §9.5 #50): an untrusted peer's
    // X-Forwarded-For and the reference's org header are ignored.
    for (name, value) in [
        ("x-forwarded-for", "203.0.113.77"),
        ("x-real-ip", "203.0.113.78"),
        ("x-molecule-org-id", "org-fresh"),
    ] {
        assert_throttled(&from(&app, "192.0.2.1", "/health", &[(name, value)]).await);
    }
    // Another address has its own bucket; an IPv6 client's whole /64 shares one.
    let resp = from(&app, "192.0.2.2", "/health", &[]).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(remaining(&resp), Some(2));
    for host in ["1", "2", "3"] {
        let resp = from(&app, &format!("[2001:db8::{host}]"), "/health", &[]).await;
        assert_eq!(resp.status, StatusCode::OK);
    }
    assert_throttled(&from(&app, "[2001:db8::ffff]", "/health", &[]).await);

    // Unmatched paths are limited too (the 404 fallback sits behind the limiter).
    assert_throttled(&from(&app, "192.0.2.1", "/no/such/path", &[]).await);
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_right_most_untrusted_hop_is_the_client() {
    let app = Setup {
        trusted_proxies: berth_http::TrustedProxies::new(vec![
            berth_http::parse_trusted_proxy("10.0.0.0/8").expect("cidr"),
        ]),
        ..limited(2)
    }
    .start()
    .await;
    let via_proxy = |client: &'static str| [("x-forwarded-for", client)];
    // Two clients behind one load balancer get a bucket each.
    for _ in 0..2 {
        let resp = from(&app, "10.1.1.1", "/health", &via_proxy("198.51.100.1")).await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    }
    assert_throttled(&from(&app, "10.1.1.1", "/health", &via_proxy("198.51.100.1")).await);
    let resp = from(&app, "10.1.1.1", "/health", &via_proxy("198.51.100.2")).await;
    assert_eq!(resp.status, StatusCode::OK);
    // A client prepending hops of its own does not escape: the proxy appended the real one.
    assert_throttled(
        &from(
            &app,
            "10.1.1.1",
            "/health",
            &via_proxy("1.2.3.4, 198.51.100.1"),
        )
        .await,
    );
    // A second trusted hop is skipped.
    assert_throttled(
        &from(
            &app,
            "10.1.1.1",
            "/health",
            &via_proxy("198.51.100.1, 10.9.9.9"),
        )
        .await,
    );
}

#[tokio::test]
async fn bearer_traffic_is_counted_per_credential_and_failed_bearers_per_address() {
    let app = limited(3).start().await;
    let nat = "192.0.2.50";
    // Anonymous traffic exhausts the address's bucket …
    for _ in 0..3 {
        assert_eq!(from(&app, nat, "/health", &[]).await.status, StatusCode::OK);
    }
    assert_throttled(&from(&app, nat, "/health", &[]).await);
    // … but agents (and the admin) behind the same address each have their own.
    let (a, token_a) = app.external(json!({"name": "A", "external": true})).await;
    let (b, token_b) = app.external(json!({"name": "B", "external": true})).await;
    for (id, token) in [(a, &token_a), (b, &token_b)] {
        let bearer = format!("Bearer {token}");
        for left in [2, 1, 0] {
            let resp = from(
                &app,
                nat,
                &format!("/workspaces/{id}/activity"),
                &[("authorization", bearer.as_str())],
            )
            .await;
            assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
            assert_eq!(remaining(&resp), Some(left));
        }
        assert_throttled(
            &from(
                &app,
                nat,
                &format!("/workspaces/{id}/activity"),
                &[("authorization", bearer.as_str())],
            )
            .await,
        );
    }

    // Made-up bearers do not buy fresh buckets: their 401s count against the address, and once
    // that is exhausted every bearer request from it is refused, a valid one included.
    let spray = "192.0.2.60";
    let (c, token_c) = app.external(json!({"name": "C", "external": true})).await;
    for n in 0..3 {
        let fake = format!("Bearer made-up-{n}");
        let resp = from(
            &app,
            spray,
            &format!("/workspaces/{c}/activity"),
            &[("authorization", fake.as_str())],
        )
        .await;
        assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{}", resp.text);
    }
    let good = format!("Bearer {token_c}");
    assert_throttled(
        &from(
            &app,
            spray,
            &format!("/workspaces/{c}/activity"),
            &[("authorization", good.as_str())],
        )
        .await,
    );
    // Anonymous traffic from that address still has its own budget.
    assert_eq!(
        from(&app, spray, "/health", &[]).await.status,
        StatusCode::OK
    );
    // Elsewhere the valid token works.
    let resp = from(
        &app,
        "192.0.2.61",
        &format!("/workspaces/{c}/activity"),
        &[("authorization", good.as_str())],
    )
    .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
}

#[tokio::test]
async fn refused_origins_are_not_counted_and_429s_are() {
    let app = limited(1).start().await;
    // A CORS-refused request ends before the limiter: the address's budget is intact.
    let resp = from(
        &app,
        "192.0.2.9",
        "/health",
        &[("origin", "https://evil.example")],
    )
    .await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN);
    assert_eq!(resp.header("x-ratelimit-limit"), None);
    assert_eq!(
        from(&app, "192.0.2.9", "/health", &[]).await.status,
        StatusCode::OK
    );
    assert_throttled(&from(&app, "192.0.2.9", "/health", &[]).await);

    // The 429 is in the request metrics (REFERENCE-2.md §9.5 #48).
    let metrics = app
        .send(
            Request::builder()
                .uri("/metrics")
                .header(header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(metrics.status, StatusCode::OK, "{}", metrics.text);
    assert!(
        metrics.text.contains(
            "berth_http_requests_total{method=\"GET\",route=\"/health\",status=\"4xx\"} 1\n"
        ),
        "{}",
        metrics.text
    );
}
