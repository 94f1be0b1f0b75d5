//! The security headers of REFERENCE-2.md §5 are on every kind of response: success, JSON
//! errors from handlers and extractors, the 404 fallback, 405, and the body limit's 413.

use axum::body::Body;
use axum::http::{Method, StatusCode, header};
use serde_json::json;

use crate::helpers::{Resp, Setup, admin, app};

fn assert_headers(resp: &Resp, what: &str) {
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        (
            "strict-transport-security",
            "max-age=31536000; includeSubDomains",
        ),
        ("referrer-policy", "strict-origin-when-cross-origin"),
        (
            "permissions-policy",
            "camera=(), microphone=(), geolocation=()",
        ),
        ("content-security-policy", "default-src 'self'"),
    ] {
        assert_eq!(resp.header(name), Some(value), "{what}: {name}");
    }
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let app = app().await;
    let resp = app.get_anon("/health").await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_headers(&resp, "health");
    let resp = app.get_anon("/canvas/viewport").await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_headers(&resp, "viewport");
    let resp = app.get_anon("/workspaces").await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert_headers(&resp, "401");
    let resp = app.get("/no/such/route").await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND);
    assert_headers(&resp, "404 fallback");
    let resp = app
        .send(admin(Method::PATCH, "/health").body(Body::empty()).unwrap())
        .await;
    assert_eq!(resp.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_headers(&resp, "405");
    let resp = app.create(json!({"name": ""})).await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert_headers(&resp, "400");
}

#[tokio::test]
async fn a_body_over_the_limit_gets_them_too() {
    let app = Setup {
        body_limit: 64,
        ..Setup::default()
    }
    .start()
    .await;
    let req = admin(Method::POST, "/workspaces")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(format!(r#"{{"name":"{}"}}"#, "x".repeat(200))))
        .unwrap();
    let resp = app.send(req).await;
    assert_eq!(resp.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", resp.text);
    assert_headers(&resp, "413");
}
