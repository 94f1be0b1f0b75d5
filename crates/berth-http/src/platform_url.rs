//! The platform URL handed to external agents (REFERENCE.md §9), without trusting clients:
//! the configured URL; else `X-Forwarded-Proto`/`X-Forwarded-Host` but only from a trusted proxy
//! (DECISIONS.md §2.7); else the `Host` the client used.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::HOST;
use axum::http::request::Parts;

use crate::{ApiError, AppState};

/// Extractor for the platform URL of this request.
pub(crate) struct PlatformUrl(pub(crate) String);

fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']' | '_'))
}

impl FromRequestParts<AppState> for PlatformUrl {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(url) = &state.config.platform_url {
            return Ok(PlatformUrl(url.trim_end_matches('/').to_owned()));
        }
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let trusted = peer.is_some_and(|ip| state.config.trusted_proxies.contains(ip));
        let (mut scheme, mut host) = ("http", header(HOST.as_str()).unwrap_or("localhost"));
        if trusted {
            if let Some(p) = header("x-forwarded-proto").filter(|p| *p == "https" || *p == "http") {
                scheme = p;
            }
            if let Some(h) = header("x-forwarded-host") {
                host = h;
            }
        }
        if !valid_host(host) {
            host = "localhost";
        }
        Ok(PlatformUrl(format!("{scheme}://{host}")))
    }
}
