//! Admin authentication (DECISIONS.md §2.1–2.2): List and Create need the admin bearer outside
//! `--dev`; Get is open.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::json;

use crate::helpers::{ADMIN_TOKEN, Setup, app};

fn with_auth(method: Method, uri: &str, auth: Option<&str>) -> Request<Body> {
    let mut b = Request::builder().method(method.clone()).uri(uri);
    if let Some(a) = auth {
        b = b.header(header::AUTHORIZATION, a);
    }
    let body = if method == Method::POST {
        b = b.header(header::CONTENT_TYPE, "application/json");
        Body::from(json!({"name": "x", "model": "openai/gpt-4o"}).to_string())
    } else {
        Body::empty()
    };
    b.body(body).expect("request")
}

#[tokio::test]
async fn admin_routes_need_the_admin_bearer() {
    let app = app().await;
    let wrong_case = format!("bearer {ADMIN_TOKEN}");
    let upper_case = format!("BEARER {ADMIN_TOKEN}");
    let basic = format!("Basic {ADMIN_TOKEN}");
    let no_space = format!("Bearer{ADMIN_TOKEN}");
    let wrong_token = format!("Bearer {ADMIN_TOKEN}x");
    let prefix_only = format!("Bearer {}", &ADMIN_TOKEN[..10]);
    let cases: [(Option<&str>, &str); 9] = [
        (None, "admin auth required"),
        (Some(""), "admin auth required"),
        (Some("Bearer "), "admin auth required"),
        (Some(&wrong_case), "admin auth required"),
        (Some(&upper_case), "admin auth required"),
        (Some(&basic), "admin auth required"),
        (Some(&no_space), "admin auth required"),
        (Some(&wrong_token), "invalid admin auth token"),
        (Some(&prefix_only), "invalid admin auth token"),
    ];
    for method in [Method::GET, Method::POST] {
        for (auth, message) in &cases {
            let resp = app
                .send(with_auth(method.clone(), "/workspaces", *auth))
                .await;
            assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{method} {auth:?}");
            assert_eq!(resp.json, json!({"error": message}), "{method} {auth:?}");
        }
    }
    app.assert_nothing_written("unauthenticated creates").await;

    // The right bearer, with surrounding whitespace trimmed, is admitted.
    let ok = format!("Bearer  {ADMIN_TOKEN} ");
    let resp = app
        .send(with_auth(Method::POST, "/workspaces", Some(&ok)))
        .await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text);
    let resp = app
        .send(with_auth(Method::GET, "/workspaces", Some(&ok)))
        .await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.json.as_array().expect("array").len(), 1);
}

#[tokio::test]
async fn authentication_comes_before_the_body() {
    let app = app().await;
    let req = Request::builder()
        .method(Method::POST)
        .uri("/workspaces")
        .body(Body::from("{not json"))
        .expect("request");
    let resp = app.send(req).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert_eq!(resp.json, json!({"error": "admin auth required"}));
}

#[tokio::test]
async fn dev_mode_opens_admin_routes() {
    let app = Setup {
        dev: true,
        ..Setup::default()
    }
    .start()
    .await;
    let resp = app.send(with_auth(Method::POST, "/workspaces", None)).await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text);
    // Even a wrong bearer passes: dev mode does not look at credentials.
    let resp = app
        .send(with_auth(Method::GET, "/workspaces", Some("Bearer nope")))
        .await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.json.as_array().expect("array").len(), 1);
    // And loopback agent URLs are allowed in dev mode only.
    let resp = app
        .create(json!({"name": "local", "runtime": "external", "url": "http://localhost:9000"}))
        .await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text);
    let resp = app
        .create(json!({"name": "meta", "runtime": "external", "url": "http://169.254.169.254"}))
        .await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn get_is_open() {
    let app = app().await;
    let id = app
        .create_id(json!({"name": "open", "runtime": "external"}))
        .await;
    for auth in [None, Some("Bearer wrong")] {
        let resp = app
            .send(with_auth(Method::GET, &format!("/workspaces/{id}"), auth))
            .await;
        assert_eq!(resp.status, StatusCode::OK, "{auth:?}");
        assert_eq!(resp.json["name"], "open");
    }
}
