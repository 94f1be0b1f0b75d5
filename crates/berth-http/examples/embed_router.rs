//! Mount berth's API inside your own axum application: your routes beside berth's, your auth in
//! front of it.
//!
//! `cargo run -p berth-http --example embed_router` builds the app and sends it a few requests
//! in-process; to serve it, hand `app` to `axum::serve` as usual.
//!
//! Here the embedder authenticates its users with its own `x-api-key` header and, once a
//! request passes, calls berth with berth's admin credential, which never leaves the process.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::{Router, body::Body};
use berth_core::berth_provision::NoBackend;
use berth_core::berth_store::{KeyRing, SqliteStore};
use berth_core::{CoreConfig, SystemResolver, TemplateCatalog, WorkspaceService};
use berth_http::{AdminAuth, AppState, HttpConfig};
use secrecy::{ExposeSecret as _, SecretString};
use tower::ServiceExt as _;

/// The embedder's own check, then berth's admin bearer for berth's routes.
async fn own_auth(
    berth_admin: Arc<SecretString>,
    mut req: Request,
    next: Next,
) -> Result<Response, StatusCode> {
    if req.headers().get("x-api-key") != Some(&HeaderValue::from_static("let-me-in")) {
        return Err(StatusCode::UNAUTHORIZED);
    }
    let bearer = format!("Bearer {}", berth_admin.expose_secret());
    let value = HeaderValue::from_str(&bearer).map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    req.headers_mut().insert(header::AUTHORIZATION, value);
    Ok(next.run(req).await)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let keys = KeyRing::parse(&KeyRing::generate_line("k1"))?;
    let store = SqliteStore::open(&dir.path().join("berth.db"), keys).await?;
    let service = WorkspaceService::new(
        Arc::new(store),
        Arc::new(NoBackend),
        Arc::new(SystemResolver::default()),
        TemplateCatalog::empty(dir.path().to_path_buf()),
        CoreConfig::default(),
    );
    // berth's admin credential: only this process knows it (generate a long random one).
    let admin = Arc::new(SecretString::from(
        "berth-admin-only-the-host-knows".to_owned(),
    ));
    let berth = berth_http::router(AppState {
        service,
        admin: Arc::new(AdminAuth::new(&admin, false)),
        config: Arc::new(HttpConfig::default()),
    });

    // The embedder's application: its own route, and berth under /berth behind its own auth.
    let app = Router::new()
        .route("/hello", get(|| async { "hello from the host app" }))
        .nest(
            "/berth",
            berth.layer(middleware::from_fn(move |req, next| {
                own_auth(admin.clone(), req, next)
            })),
        );

    for (uri, key) in [
        ("/hello", None),
        ("/berth/workspaces", None),
        ("/berth/workspaces", Some("let-me-in")),
    ] {
        let mut req = Request::get(uri);
        if let Some(key) = key {
            req = req.header("x-api-key", key);
        }
        let resp = app.clone().oneshot(req.body(Body::empty())?).await?;
        println!("GET {uri} (x-api-key: {key:?}) -> {}", resp.status());
    }
    let resp = app
        .clone()
        .oneshot(
            Request::get("/berth/workspaces")
                .header("x-api-key", "let-me-in")
                .body(Body::empty())?,
        )
        .await?;
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "berth answers behind the host's auth"
    );
    let resp = app
        .oneshot(Request::get("/berth/workspaces").body(Body::empty())?)
        .await?;
    assert_eq!(
        resp.status(),
        StatusCode::UNAUTHORIZED,
        "the host's auth runs first"
    );
    Ok(())
}
