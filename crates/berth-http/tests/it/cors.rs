//! CORS (REFERENCE.md §2.0, REFERENCE-2.md §5) and the `/ws` origin check (REFERENCE.md §8.3)
//! over one origin list: allowed origins get the CORS headers, preflights are answered 204,
//! other origins 403 before any handler or the rate limiter runs; requests without `Origin`
//! (agents, curl) and same-origin requests are untouched.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::json;

use crate::helpers::{ADMIN_TOKEN, Resp, Setup, TestApp, app};

async fn with_origin(app: &TestApp, method: Method, uri: &str, origin: &str) -> Resp {
    app.send(
        Request::builder()
            .method(method)
            .uri(uri)
            .header(header::ORIGIN, origin)
            .header(header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
            .body(Body::empty())
            .expect("request"),
    )
    .await
}

async fn preflight(app: &TestApp, uri: &str, origin: &str) -> Resp {
    app.send(
        Request::builder()
            .method(Method::OPTIONS)
            .uri(uri)
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "PATCH")
            .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "authorization")
            .body(Body::empty())
            .expect("request"),
    )
    .await
}

#[tokio::test]
async fn the_default_origins_get_cors_headers_and_others_are_refused() {
    let app = app().await;
    // An allowed origin (case-insensitively): the handler runs, the CORS headers are added.
    for origin in ["http://localhost:3000", "HTTP://LOCALHOST:3001"] {
        let resp = with_origin(&app, Method::GET, "/workspaces", origin).await;
        assert_eq!(resp.status, StatusCode::OK, "{origin}: {}", resp.text);
        assert_eq!(resp.header("access-control-allow-origin"), Some(origin));
        assert_eq!(
            resp.header("access-control-allow-credentials"),
            Some("true")
        );
        assert_eq!(resp.header("vary"), Some("Origin"));
        assert_eq!(resp.header("x-content-type-options"), Some("nosniff"));
    }

    // A preflight: 204, the reference's methods and headers, no handler.
    let resp = preflight(
        &app,
        "/workspaces/00000000-0000-0000-0000-000000000001",
        "http://localhost:3000",
    )
    .await;
    assert_eq!(resp.status, StatusCode::NO_CONTENT, "{}", resp.text);
    assert_eq!(
        resp.header("access-control-allow-methods"),
        Some("GET,POST,PUT,PATCH,DELETE,OPTIONS")
    );
    assert_eq!(
        resp.header("access-control-allow-headers"),
        Some("Origin,Content-Type,X-Workspace-ID,Authorization")
    );
    assert_eq!(
        resp.header("access-control-allow-origin"),
        Some("http://localhost:3000")
    );
    assert_eq!(
        resp.header("access-control-allow-credentials"),
        Some("true")
    );
    assert!(resp.text.is_empty());

    // Another origin: 403 for a plain request and a preflight, nothing reaches the handler.
    let before = app.db.count("workspaces").await;
    let resp = app
        .send(
            Request::builder()
                .method(Method::POST)
                .uri("/workspaces")
                .header(header::ORIGIN, "https://evil.example")
                .header(header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(
                    json!({"name": "x", "runtime": "external", "external": true}).to_string(),
                ))
                .expect("request"),
        )
        .await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN, "{}", resp.text);
    assert_eq!(resp.json, json!({"error": "origin not allowed"}));
    assert_eq!(resp.header("access-control-allow-origin"), None);
    assert_eq!(app.db.count("workspaces").await, before);
    let resp = preflight(&app, "/workspaces", "http://localhost:3002").await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN, "{}", resp.text);
    assert_eq!(resp.header("access-control-allow-methods"), None);

    // No Origin (agents, curl): untouched, no CORS headers; an OPTIONS without a preflight
    // header is routed as usual.
    let resp = app.get("/workspaces").await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.header("access-control-allow-origin"), None);

    // Same origin (Origin = this server's Host): not a CORS request.
    let resp = app
        .send(
            Request::builder()
                .uri("/health")
                .header(header::HOST, "berth.example:8080")
                .header(header::ORIGIN, "https://berth.example:8080")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.header("access-control-allow-origin"), None);
}

#[tokio::test]
async fn the_configured_list_replaces_the_default_and_also_guards_the_websocket() {
    let app = Setup {
        cors_origins: berth_http::CorsOrigins::new(["https://canvas.example/", " "]),
        ..Setup::default()
    }
    .start()
    .await;
    let resp = with_origin(&app, Method::GET, "/health", "https://canvas.example").await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(
        resp.header("access-control-allow-origin"),
        Some("https://canvas.example")
    );
    let resp = with_origin(&app, Method::GET, "/health", "http://localhost:3000").await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN, "{}", resp.text);

    // `/ws` from a foreign origin is refused before any credential check or upgrade (cross-site
    // WebSocket hijacking); from the allowed origin it gets as far as the upgrade check.
    let ws = |origin: &'static str| {
        Request::builder()
            .uri(format!("/ws?token={ADMIN_TOKEN}"))
            .header(header::ORIGIN, origin)
            .body(Body::empty())
            .expect("request")
    };
    let resp = app.send(ws("https://evil.example")).await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN, "{}", resp.text);
    assert_eq!(resp.json, json!({"error": "origin not allowed"}));
    let resp = app.send(ws("https://canvas.example")).await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{}", resp.text);
    assert_eq!(resp.json, json!({"error": "websocket upgrade required"}));

    // An empty list allows no foreign origin at all.
    let closed = Setup {
        cors_origins: berth_http::CorsOrigins::new(Vec::<String>::new()),
        ..Setup::default()
    }
    .start()
    .await;
    let resp = with_origin(&closed, Method::GET, "/health", "http://localhost:3000").await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN, "{}", resp.text);
    let resp = closed.get_anon("/health").await;
    assert_eq!(resp.status, StatusCode::OK);
}
