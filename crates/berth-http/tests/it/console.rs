//! The web console's server side (issue #18): the page and its hashed, immutable assets; the
//! sign-in that trades a token for an `HttpOnly`, `SameSite=Strict` session cookie; the cookie
//! standing in for the bearer on every route; CSRF on state-changing requests; a workspace
//! token's session seeing only what that token may; sign-out. (The browser tests are in
//! `bins/berth/tests/it/console.rs`.)

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::json;

use crate::helpers::{ADMIN_TOKEN, Resp, TestApp, app};

async fn sign_in(app: &TestApp, token: &str) -> Resp {
    app.send(
        Request::builder()
            .method(Method::POST)
            .uri("/console/session")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(json!({"token": token}).to_string()))
            .expect("request"),
    )
    .await
}

/// The cookie's `name=value` from a sign-in answer.
fn cookie_of(resp: &Resp) -> String {
    let set = resp.header("set-cookie").expect("a Set-Cookie");
    set.split(';').next().expect("name=value").to_owned()
}

async fn with_cookie(
    app: &TestApp,
    method: Method,
    uri: &str,
    cookie: &str,
    csrf: Option<&str>,
    body: Option<serde_json::Value>,
) -> Resp {
    let mut b = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::COOKIE, cookie);
    if let Some(c) = csrf {
        b = b.header("x-csrf-token", c);
    }
    let req = match body {
        Some(v) => b
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(v.to_string())),
        None => b.body(Body::empty()),
    }
    .expect("request");
    app.send(req).await
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_with_the_policy() {
    let app = app().await;
    for path in ["/", "/console"] {
        let resp = app.get_anon(path).await;
        assert_eq!(resp.status, StatusCode::OK, "{path}");
        assert!(
            resp.header("content-type")
                .is_some_and(|c| c.starts_with("text/html"))
        );
        assert_eq!(resp.header("cache-control"), Some("no-cache"));
        assert_eq!(
            resp.header("content-security-policy"),
            Some("default-src 'self'")
        );
        assert!(!resp.text.contains("<script>"), "no inline script");
    }
    let page = app.get_anon("/").await.text;
    let script = page
        .split("src=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("the script's URL")
        .to_owned();
    assert!(
        script.starts_with("/console/assets/") && script.ends_with("/app.js"),
        "{script}"
    );
    let hash = script.split('/').nth(3).expect("the hash").to_owned();
    assert_eq!(hash.len(), 16);
    let resp = app.get_anon(&script).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert!(
        resp.header("content-type")
            .is_some_and(|c| c.starts_with("text/javascript"))
    );
    assert_eq!(
        resp.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    let css = app
        .get_anon(&format!("/console/assets/{hash}/style.css"))
        .await;
    assert_eq!(css.status, StatusCode::OK);
    assert!(
        css.header("content-type")
            .is_some_and(|c| c.starts_with("text/css"))
    );
    // Another build's hash, or a file that is not there, is a 404.
    for bad in [
        "/console/assets/0000000000000000/app.js".to_owned(),
        format!("/console/assets/{hash}/nope.js"),
        format!("/console/assets/{hash}/..%2Fbuild.rs"),
    ] {
        let resp = app.get_anon(&bad).await;
        assert_eq!(resp.status, StatusCode::NOT_FOUND, "{bad}");
    }
}

#[tokio::test]
async fn an_admin_session_stands_in_for_the_bearer_with_csrf_on_writes() {
    let app = app().await;
    // A wrong token is refused and sets nothing.
    let resp = sign_in(&app, "nope").await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert_eq!(resp.json, json!({"error": "invalid token"}));
    assert!(resp.header("set-cookie").is_none());
    for body in ["", "[]", "{\"token\": 3}"] {
        let resp = app
            .send(
                Request::builder()
                    .method(Method::POST)
                    .uri("/console/session")
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(body))
                    .expect("request"),
            )
            .await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{body:?}");
    }

    let resp = sign_in(&app, ADMIN_TOKEN).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    let set = resp.header("set-cookie").expect("cookie").to_owned();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(set.contains(attr), "{set}");
    }
    assert!(!set.contains("Secure"), "plain http: no Secure");
    assert!(!set.contains(ADMIN_TOKEN), "the token is not the cookie");
    assert_eq!(resp.header("cache-control"), Some("no-store"));
    assert_eq!(resp.json["principal"], "admin");
    let csrf = resp.json["csrf"].as_str().expect("csrf").to_owned();
    let cookie = cookie_of(&resp);

    let who = with_cookie(&app, Method::GET, "/console/session", &cookie, None, None).await;
    assert_eq!(who.status, StatusCode::OK);
    assert_eq!(who.json["csrf"], csrf.as_str());
    // Reads need nothing more than the cookie.
    let list = with_cookie(&app, Method::GET, "/workspaces", &cookie, None, None).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    // A write without the CSRF token (or with another) is refused and writes nothing.
    let body = json!({"name": "from-console", "model": "openai/gpt-4o"});
    for bad in [None, Some("wrong")] {
        let resp = with_cookie(
            &app,
            Method::POST,
            "/workspaces",
            &cookie,
            bad,
            Some(body.clone()),
        )
        .await;
        assert_eq!(resp.status, StatusCode::FORBIDDEN, "{}", resp.text);
        assert_eq!(resp.json, json!({"error": "missing or invalid CSRF token"}));
    }
    app.assert_nothing_written("a write without CSRF").await;
    let resp = with_cookie(
        &app,
        Method::POST,
        "/workspaces",
        &cookie,
        Some(&csrf),
        Some(body),
    )
    .await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text);

    // An explicit bearer wins over the cookie (a script keeps working as before).
    let resp = app
        .send(
            Request::builder()
                .uri("/workspaces")
                .header(header::COOKIE, &cookie)
                .header(header::AUTHORIZATION, "Bearer wrong")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);

    // Sign-out needs the CSRF token too, then the cookie opens nothing.
    let resp = with_cookie(
        &app,
        Method::DELETE,
        "/console/session",
        &cookie,
        None,
        None,
    )
    .await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN);
    let resp = with_cookie(
        &app,
        Method::DELETE,
        "/console/session",
        &cookie,
        Some(&csrf),
        None,
    )
    .await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.json, json!({"status": "signed_out"}));
    assert!(
        resp.header("set-cookie")
            .is_some_and(|c| c.contains("Max-Age=0"))
    );
    let resp = with_cookie(&app, Method::GET, "/workspaces", &cookie, None, None).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    let resp = with_cookie(&app, Method::GET, "/console/session", &cookie, None, None).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert_eq!(resp.json, json!({"error": "not signed in"}));
    // A made-up cookie is no session.
    let resp = with_cookie(
        &app,
        Method::GET,
        "/workspaces",
        "berth_session=forged",
        None,
        None,
    )
    .await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_workspace_tokens_session_sees_what_the_token_may() {
    let app = app().await;
    let (id, token) = app
        .external(json!({"name": "mine", "runtime": "external"}))
        .await;
    let resp = sign_in(&app, &token).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.json["principal"], "workspace");
    assert_eq!(resp.json["workspace_id"], id.to_string());
    let cookie = cookie_of(&resp);
    let own = with_cookie(
        &app,
        Method::GET,
        &format!("/workspaces/{id}/tokens"),
        &cookie,
        None,
        None,
    )
    .await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.text);
    let list = with_cookie(&app, Method::GET, "/workspaces", &cookie, None, None).await;
    assert_eq!(
        list.status,
        StatusCode::UNAUTHORIZED,
        "the admin list is not a workspace's"
    );
    // Revoking the token ends what the session can do.
    let tokens = app.get(&format!("/workspaces/{id}/tokens")).await;
    for t in tokens.json["tokens"].as_array().expect("tokens") {
        let tid = t["id"].as_str().expect("id");
        assert_eq!(
            app.call(
                Method::DELETE,
                &format!("/workspaces/{id}/tokens/{tid}"),
                Some(ADMIN_TOKEN)
            )
            .await
            .status,
            StatusCode::OK
        );
    }
    let own = with_cookie(
        &app,
        Method::GET,
        &format!("/workspaces/{id}/tokens"),
        &cookie,
        None,
        None,
    )
    .await;
    assert_eq!(own.status, StatusCode::UNAUTHORIZED);
}
