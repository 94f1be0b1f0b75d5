//! `/metrics` (Prometheus text, admin unless `HttpConfig::metrics_open`), the request-metrics
//! middleware, and `GET /admin/liveness` (REFERENCE-2.md §5, fixing §9.5 #48–49).

use std::time::Instant;

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use berth_api::system::{Liveness, LoopLiveness, PoolInfo, Pools};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Admin;
use crate::{ApiError, AppState};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(metrics))
        .routes(routes!(liveness))
        .routes(routes!(pools))
}

/// Records every request under its matched route template (`unmatched` for the fallback), its
/// method (standard ones only) and its status class.
pub(crate) async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let resp = next.run(req).await;
    state.service.metrics().observe_http(
        method.as_str(),
        &route,
        resp.status().as_u16(),
        started.elapsed(),
    );
    resp
}

/// Prometheus text exposition of the server's metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "system",
    description = "Prometheus text. Needs the admin bearer unless the server runs with `--metrics-open` (the reference's open endpoint).",
    security(("admin" = []), ()),
    responses((status = 200, description = "Prometheus text format.", content_type = "text/plain", body = String)),
)]
async fn metrics(
    admin: Result<Admin, ApiError>,
    State(state): State<AppState>,
) -> Result<Response, ApiError> {
    if !state.config.metrics_open {
        admin?;
    }
    let text = state
        .service
        .render_metrics()
        .await
        .map_err(|e| ApiError::internal("failed to collect metrics", e))?;
    Ok(([(CONTENT_TYPE, berth_core::METRICS_CONTENT_TYPE)], text).into_response())
}

/// 200 `{"subsystems": {<loop>: {last_tick_at, seconds_ago, interval_seconds,
/// stale_after_seconds, stale}}, "stale": [<loop>…], "sweeps_started": bool}`.
#[utoipa::path(
    get,
    path = "/admin/liveness",
    tag = "system",
    security(("admin" = [])),
    responses((status = 200, description = "When each background loop last ticked.", body = Liveness)),
)]
async fn liveness(_: Admin, State(state): State<AppState>) -> Json<Liveness> {
    let now = chrono::Utc::now();
    let loops = state.service.loop_liveness(now);
    let sweeps_started = loops.iter().any(|l| l.last_tick_at.is_some());
    let stale = loops
        .iter()
        .filter(|l| l.stale)
        .map(|l| l.name.to_owned())
        .collect();
    let subsystems: BTreeMap<String, LoopLiveness> = loops
        .iter()
        .map(|l| {
            (
                l.name.to_owned(),
                LoopLiveness {
                    last_tick_at: l
                        .last_tick_at
                        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                    seconds_ago: l.seconds_ago,
                    interval_seconds: l.interval.as_secs(),
                    stale_after_seconds: l.stale_after.as_secs(),
                    stale: l.stale,
                },
            )
        })
        .collect();
    Json(Liveness {
        subsystems,
        stale,
        sweeps_started,
    })
}

/// 200 `{"pools": [{name, backend, target, ready, starting, claimed_last_minute, misses, claims,
/// failures}]}`: the warm pools (`--warm-pool`).
#[utoipa::path(
    get,
    path = "/admin/pools",
    tag = "system",
    security(("admin" = [])),
    responses((status = 200, description = "Each warm pool: its target, its members by state, its claims and misses.", body = Pools)),
)]
async fn pools(_: Admin, State(state): State<AppState>) -> Result<Json<Pools>, ApiError> {
    let pools = state
        .service
        .pool_status()
        .await
        .map_err(|e| ApiError::internal("failed to read the warm pools", e))?;
    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    Ok(Json(Pools {
        pools: pools
            .into_iter()
            .map(|p| PoolInfo {
                name: p.name,
                backend: p.backend.to_owned(),
                target: count(p.target),
                ready: count(p.ready),
                starting: count(p.starting),
                claimed_last_minute: count(p.claimed_last_minute),
                misses: p.misses,
                claims: p.claims,
                failures: p.failures,
            })
            .collect(),
    }))
}
