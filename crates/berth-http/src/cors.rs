//! CORS (REFERENCE.md §2.0, REFERENCE-2.md §5) and the `/ws` origin check (REFERENCE.md §8.3),
//! over one origin list (`--cors-origins`).
//!
//! The reference's behaviour, kept: a request without `Origin`, or whose `Origin` is this
//! server's own host, is not a CORS request and passes untouched; an allowed origin gets
//! `Access-Control-Allow-Origin: <origin>`, `Access-Control-Allow-Credentials: true` and
//! `Vary: Origin`; a preflight (`OPTIONS` with `Access-Control-Request-Method`) from an allowed
//! origin is answered **204** with the allowed methods and headers; any request from another
//! origin is answered **403** and goes no further (not rate-limited, not counted).
//!
//! Written by hand rather than with `tower_http::cors`, which answers preflights 200 and lets a
//! disallowed origin's request through to the handler.
//!
//! berth difference: an empty list allows no cross-origin browser access (the reference's `/ws`
//! accepted any origin then).

use axum::extract::Request;
use axum::http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_REQUEST_METHOD, HOST, ORIGIN, VARY,
};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The reference's default `CORS_ORIGINS`.
pub const DEFAULT_CORS_ORIGINS: [&str; 2] = ["http://localhost:3000", "http://localhost:3001"];

/// Methods a preflight allows.
const ALLOW_METHODS: &str = "GET,POST,PUT,PATCH,DELETE,OPTIONS";
/// Request headers a preflight allows.
const ALLOW_HEADERS: &str = "Origin,Content-Type,X-Workspace-ID,Authorization";

/// The allowed browser origins, compared case-insensitively and without a trailing `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsOrigins(Vec<String>);

impl CorsOrigins {
    /// The list from its entries (blank entries are dropped).
    pub fn new<S: AsRef<str>>(origins: impl IntoIterator<Item = S>) -> Self {
        Self(
            origins
                .into_iter()
                .map(|o| normalise(o.as_ref()))
                .filter(|o| !o.is_empty())
                .collect(),
        )
    }

    /// Whether `origin` is on the list.
    pub fn allows(&self, origin: &str) -> bool {
        let origin = normalise(origin);
        self.0.contains(&origin)
    }

    /// The entries.
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

impl Default for CorsOrigins {
    fn default() -> Self {
        Self::new(DEFAULT_CORS_ORIGINS)
    }
}

fn normalise(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// What the origin check decided about a request.
pub(crate) enum OriginCheck<'a> {
    /// No `Origin`, or this server's own: not a cross-origin request.
    NotCors,
    /// An allowed foreign origin (the header's value).
    Allowed(&'a HeaderValue),
    /// A foreign origin that is not allowed (or an unreadable `Origin`).
    Refused,
}

/// Classifies a request by its `Origin` and `Host` headers.
pub(crate) fn check<'a>(origins: &CorsOrigins, headers: &'a HeaderMap) -> OriginCheck<'a> {
    let Some(value) = headers.get(ORIGIN) else {
        return OriginCheck::NotCors;
    };
    let Ok(origin) = value.to_str() else {
        return OriginCheck::Refused;
    };
    if let Some(host) = headers.get(HOST).and_then(|h| h.to_str().ok()) {
        let own = |scheme: &str| {
            origin
                .strip_prefix(scheme)
                .is_some_and(|o| o.eq_ignore_ascii_case(host))
        };
        if own("http://") || own("https://") {
            return OriginCheck::NotCors;
        }
    }
    if origins.allows(origin) {
        OriginCheck::Allowed(value)
    } else {
        OriginCheck::Refused
    }
}

/// The 403 of a refused origin.
pub(crate) fn refused() -> Response {
    (
        StatusCode::FORBIDDEN,
        axum::Json(serde_json::json!({"error": "origin not allowed"})),
    )
        .into_response()
}

/// Middleware: the CORS answer for the configured origins.
pub(crate) async fn cors(
    axum::extract::State(origins): axum::extract::State<std::sync::Arc<CorsOrigins>>,
    req: Request,
    next: Next,
) -> Response {
    let origin = match check(&origins, req.headers()) {
        OriginCheck::NotCors => return next.run(req).await,
        OriginCheck::Refused => return refused(),
        OriginCheck::Allowed(o) => o.clone(),
    };
    let preflight = req.method() == Method::OPTIONS
        && req.headers().contains_key(ACCESS_CONTROL_REQUEST_METHOD);
    let mut resp = if preflight {
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(
            ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOW_METHODS),
        );
        h.insert(
            ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOW_HEADERS),
        );
        r
    } else {
        next.run(req).await
    };
    let h = resp.headers_mut();
    h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(
        ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    h.append(VARY, HeaderValue::from_static("Origin"));
    resp
}
