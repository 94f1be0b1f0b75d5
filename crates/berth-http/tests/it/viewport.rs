//! `GET/PUT /canvas/viewport` (REFERENCE-2.md §7.4–7.5, fixes of §9.6 #54), on SQLite and
//! PostgreSQL: the default, a save read back, `zoom` defaulting to 1, bearer-only PUT, and bad
//! bodies that change nothing.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, Setup, TestApp};

const URI: &str = "/canvas/viewport";

fn put(bearer: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut b = Request::builder()
        .method(Method::PUT)
        .uri(URI)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ORIGIN, "http://localhost:3000");
    if let Some(t) = bearer {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    b.body(body.into()).expect("request")
}

async fn shown(app: &TestApp) -> Value {
    let resp = app.get_anon(URI).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    resp.json
}

async fn the_viewport_is_saved_and_read_back(postgres: bool) {
    let app = Setup {
        postgres,
        ..Setup::default()
    }
    .start()
    .await;
    assert_eq!(shown(&app).await, json!({"x": 0.0, "y": 0.0, "zoom": 1.0}));

    let resp = app
        .send(put(
            Some(ADMIN_TOKEN),
            r#"{"x": 12.5, "y": -40, "zoom": 0.75}"#,
        ))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(resp.json, json!({"status": "saved"}));
    assert_eq!(
        shown(&app).await,
        json!({"x": 12.5, "y": -40.0, "zoom": 0.75})
    );
    assert_eq!(app.db.count("canvas_viewport").await, 1);

    // A live workspace token may save it too; omitted fields take the defaults (zoom 1, not 0).
    let (_, token) = app.container("Canvas user").await;
    let resp = app
        .send(put(Some(&token), r#"{"x": 3, "zoom": null}"#))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(shown(&app).await, json!({"x": 3.0, "y": 0.0, "zoom": 1.0}));
    assert_eq!(
        app.db.count("canvas_viewport").await,
        1,
        "one row, replaced"
    );

    // Refusals change nothing.
    let before = shown(&app).await;
    let invalid = json!({"error": "invalid viewport data"});
    for (body, expected) in [
        ("", invalid.clone()),
        ("{nope", invalid.clone()),
        ("[]", invalid.clone()),
        ("7", invalid.clone()),
        (r#"{"x": "1"}"#, invalid.clone()),
        (r#"{"zoom": true}"#, invalid.clone()),
        (
            r#"{"zoom": 0}"#,
            json!({"error": "invalid viewport data: x and y must be finite and zoom greater than 0"}),
        ),
        (
            r#"{"zoom": -2}"#,
            json!({"error": "invalid viewport data: x and y must be finite and zoom greater than 0"}),
        ),
    ] {
        let resp = app.send(put(Some(ADMIN_TOKEN), body)).await;
        assert_eq!(
            resp.status,
            StatusCode::BAD_REQUEST,
            "{body:?}: {}",
            resp.text
        );
        assert_eq!(resp.json, expected, "{body:?}");
        assert_eq!(shown(&app).await, before, "{body:?} changed the viewport");
    }
    // No bearer (an allowed-looking Origin is not a credential), or a wrong one.
    let resp = app.send(put(None, r#"{"x": 1}"#)).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert_eq!(resp.json, json!({"error": "admin auth required"}));
    for (wrong, message) in [
        ("nope", "invalid admin auth token"),
        ("", "admin auth required"),
    ] {
        let resp = app.send(put(Some(wrong), r#"{"x": 1}"#)).await;
        assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{wrong:?}");
        assert_eq!(resp.json, json!({ "error": message }), "{wrong:?}");
    }
    assert_eq!(shown(&app).await, before);
}

#[tokio::test]
async fn the_viewport_is_saved_and_read_back_sqlite() {
    the_viewport_is_saved_and_read_back(false).await;
}

#[tokio::test]
async fn the_viewport_is_saved_and_read_back_postgres() {
    the_viewport_is_saved_and_read_back(true).await;
}

#[tokio::test]
async fn dev_mode_saves_without_a_bearer() {
    let app = Setup {
        dev: true,
        ..Setup::default()
    }
    .start()
    .await;
    let resp = app.send(put(None, r#"{"x": 1, "y": 2, "zoom": 3}"#)).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    assert_eq!(shown(&app).await, json!({"x": 1.0, "y": 2.0, "zoom": 3.0}));
}
