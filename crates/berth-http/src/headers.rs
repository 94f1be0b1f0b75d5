//! The reference's security headers (REFERENCE-2.md §5), on every response: the API's JSON
//! (errors, 404 fallbacks and 413s included), event streams and WebSocket upgrades alike.
//! berth serves no canvas pages, so every path gets the API's `default-src 'self'` policy
//! (the reference's more permissive canvas policy applied to the non-API paths it served pages
//! on).

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::http::header::{
    CONTENT_SECURITY_POLICY, HeaderName, REFERRER_POLICY, STRICT_TRANSPORT_SECURITY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::middleware::Next;
use axum::response::Response;

/// The headers, in the reference's order.
const HEADERS: [(HeaderName, &str); 6] = [
    (X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (X_FRAME_OPTIONS, "DENY"),
    (
        STRICT_TRANSPORT_SECURITY,
        "max-age=31536000; includeSubDomains",
    ),
    (REFERRER_POLICY, "strict-origin-when-cross-origin"),
    (
        HeaderName::from_static("permissions-policy"),
        "camera=(), microphone=(), geolocation=()",
    ),
    (CONTENT_SECURITY_POLICY, "default-src 'self'"),
];

/// Middleware: sets the security headers on the response, replacing a handler's own.
pub(crate) async fn security(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let headers = resp.headers_mut();
    for (name, value) in HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    resp
}
