#![doc = include_str!("../README.md")]

mod a2a;
mod activity;
mod auth;
mod broadcast;
mod bundles;
mod console;
mod cors;
mod display;
mod error;
mod events;
mod extract;
mod headers;
mod inside;
mod lifecycle;
mod metrics;
mod notify;
mod openapi;
mod peer_info;
mod platform_url;
mod ratelimit;
mod registry;
mod secrets;
mod session_search;
mod system;
mod templates;
mod tokens;
mod trace;
mod viewport;
mod workspaces;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use berth_core::WorkspaceService;
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use auth::{AdminAuth, WorkspaceAuth};
pub use bundles::BUNDLE_BODY_LIMIT;
pub use cors::{CorsOrigins, DEFAULT_CORS_ORIGINS};
pub use error::ApiError;
pub use ipnet::IpNet;
pub use openapi::openapi_json;
pub use ratelimit::{RateLimit, TrustedProxies, parse_trusted_proxy};

/// Largest request body accepted (a create with secrets and memories is far smaller).
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// Settings of the HTTP layer.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// `--dev`: admin routes fail open (loopback only; the binary enforces that).
    pub dev: bool,
    /// The platform URL handed to external agents; derived from the request when unset.
    pub platform_url: Option<String>,
    /// Peers (addresses or networks) whose `X-Forwarded-Proto`/`X-Forwarded-Host`/
    /// `X-Forwarded-For` headers are trusted.
    pub trusted_proxies: TrustedProxies,
    /// Browser origins allowed cross-origin access (CORS and the `/ws` origin check).
    pub cors_origins: CorsOrigins,
    /// The per-client request limit; `None`: no limiter (the default, and `--rate-limit 0`).
    pub rate_limit: Option<RateLimit>,
    /// Request body limit in bytes.
    pub body_limit: usize,
    /// Reported by `/buildinfo`.
    pub git_sha: String,
    /// `GET /metrics` without the admin bearer (the reference's open endpoint); default false.
    pub metrics_open: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            dev: false,
            platform_url: None,
            trusted_proxies: TrustedProxies::default(),
            cors_origins: CorsOrigins::default(),
            rate_limit: None,
            body_limit: DEFAULT_BODY_LIMIT,
            git_sha: "unknown".into(),
            metrics_open: false,
        }
    }
}

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    /// The workspace core.
    pub service: WorkspaceService,
    /// Admin credential check.
    pub admin: Arc<AdminAuth>,
    /// HTTP settings.
    pub config: Arc<HttpConfig>,
}

/// The whole API. Global middleware, outermost first: tracing, security headers, CORS (refused
/// origins end here), request metrics, the rate limiter (so its 429s are counted, fixing
/// REFERENCE-2.md §9.5 #48), then the routes.
pub fn router(state: AppState) -> Router {
    let limit = state.config.body_limit;
    let limiter = state.config.rate_limit.as_ref().map(|r| {
        Arc::new(ratelimit::Limiter::new(
            r,
            state.config.trusted_proxies.clone(),
        ))
    });
    let cors_origins = Arc::new(state.config.cors_origins.clone());
    let (routes, _) = api().split_for_parts();
    let routes = routes
        .fallback(|| async { ApiError::NotFound("not found") })
        .method_not_allowed_fallback(|| async {
            ApiError::Custom(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                serde_json::json!({"error": "method not allowed"}),
            )
        });
    let routes = match limiter {
        Some(l) => routes.layer(axum::middleware::from_fn_with_state(l, ratelimit::limit)),
        None => routes,
    };
    routes
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            console::session_auth,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            cors_origins,
            cors::cors,
        ))
        .layer(axum::middleware::from_fn(headers::security))
        .layer(TraceLayer::new_for_http().make_span_with(trace::make_span::<axum::body::Body>))
        .with_state(state)
}

/// Every route of the API with its documentation: the one place routes are registered (each
/// module's `router()` adds its handlers with `utoipa_axum::routes!`, which routes a handler and
/// documents it from the same annotation). No `.route(` call exists outside `routes!` (a test
/// reads the sources), so the router serves exactly the document's operations.
fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(openapi::serve_document))
        .merge(system::router())
        .merge(workspaces::router())
        .merge(registry::router())
        .merge(tokens::router())
        .merge(secrets::router())
        .merge(events::router())
        .merge(activity::router())
        .merge(notify::router())
        .merge(broadcast::router())
        .merge(display::router())
        .merge(a2a::router())
        .merge(templates::router())
        .merge(bundles::router())
        .merge(viewport::router())
        .merge(metrics::router())
        .merge(session_search::router())
        .merge(inside::router())
        .merge(console::router())
}

/// The OpenAPI 3.1 document of [`router`], generated from the handlers' annotations and the
/// `berth-api` types (served at `GET /openapi.json`, written to `openapi.json` by
/// `cargo xtask openapi`).
pub fn openapi() -> serde_json::Value {
    let (_, doc) = api().split_for_parts();
    let mut doc = serde_json::to_value(&doc).expect("the document serialises");
    openapi::conventions(&mut doc);
    doc
}

/// Serves `router` on `listener` until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
