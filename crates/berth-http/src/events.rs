//! The event log and live events (REFERENCE.md §8, DECISIONS.md §2.3): `GET /events[/{id}]`
//! (admin, newest first, plus `?after=` paging), the per-workspace SSE stream with `id:` lines,
//! keep-alives and `Last-Event-ID` resume, and the authenticated `GET /ws` WebSocket.
//!
//! Both live streams subscribe to the core's bus (a [`LiveEvents`] with a bounded queue) before
//! they read anything. A client that does not read what is queued for it is cut off with a clear
//! reason instead of silently losing events: the events queued before the cut are still written,
//! in order, then SSE clients get an `event: error` frame (with `last_event_id`) and the end of
//! the stream, and reconnect with `Last-Event-ID` (which replays from the log); WebSocket clients
//! get close code 1013 with the reason. A connection that does not accept a single frame within
//! [`berth_core::EventConfig::send_timeout`] is dropped (a cut subscription has already left the
//! bus, so such a connection holds at most its queue).
//!
//! Browsers cannot set `Authorization` on a WebSocket upgrade or an `EventSource`, so both live
//! streams also take the credential as `?token=<credential>` (checked like the header; the
//! request log redacts it).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_api::ErrorBody;
use berth_api::events::{Event, EventsQuery, LiveFrame, StreamQuery as WsQuery, WsFrame};
use berth_core::{
    CutOff, Delivery, Encoding, EventRecord, EventScope, LiveEvent, LiveEvents, Principal,
    WorkspaceService,
};
use berth_domain::WorkspaceId;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Admin, Bearer, WorkspaceAuth, workspace_principal};
use crate::extract::{ApiPath, ApiQuery};
use crate::{ApiError, AppState};

/// Keep-alive comment interval of SSE streams (and ping interval of WebSockets).
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Log rows read per page when an SSE client resumes.
const RESUME_PAGE: i64 = 500;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(all_events))
        .routes(routes!(workspace_events))
        .routes(routes!(sse))
        .routes(routes!(ws))
}

fn event_json(e: EventRecord) -> Event {
    Event {
        created_at: e.created_at,
        event_type: e.event_type,
        id: e.id,
        payload: e.payload,
        seq: e.seq,
        workspace_id: e.workspace_id,
    }
}

async fn page(
    state: &AppState,
    workspace: Option<WorkspaceId>,
    q: EventsQuery,
) -> Result<Json<Vec<Event>>, ApiError> {
    let limit = match q.limit.as_deref() {
        None | Some("") => 100,
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| ApiError::BadRequest("invalid limit".into()))?,
    };
    let events = match q.after.as_deref() {
        None | Some("") => state.service.latest_events(workspace, limit).await,
        Some(a) => {
            let after = a
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| ApiError::BadRequest("invalid after".into()))?;
            state.service.events_after(workspace, after, limit).await
        }
    }
    .map_err(|e| ApiError::internal("query failed", e))?;
    Ok(Json(events.into_iter().map(event_json).collect()))
}

/// `GET /events`: the newest 100 events first; `?after=<seq>` pages forward (oldest first).
#[utoipa::path(
    get,
    path = "/events",
    tag = "events",
    security(("admin" = [])),
    params(EventsQuery),
    responses(
        (status = 200, description = "Events of every workspace.", body = Vec<Event>),
        (status = 400, description = "`invalid limit`, `invalid after`.", body = ErrorBody),
    ),
)]
async fn all_events(
    _: Admin,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Json<Vec<Event>>, ApiError> {
    page(&state, None, q).await
}

/// `GET /events/{workspace_id}`.
#[utoipa::path(
    get,
    path = "/events/{workspace_id}",
    tag = "events",
    security(("admin" = [])),
    params(("workspace_id" = String, Path, description = "The workspace id."), EventsQuery),
    responses(
        (status = 200, description = "The workspace's events.", body = Vec<Event>),
        (status = 400, description = "`invalid workspace ID`, `invalid limit`, `invalid after`.", body = ErrorBody),
    ),
)]
async fn workspace_events(
    _: Admin,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Json<Vec<Event>>, ApiError> {
    let id =
        WorkspaceId::parse(&id).map_err(|_| ApiError::BadRequest("invalid workspace ID".into()))?;
    page(&state, Some(id), q).await
}

// ---- SSE ------------------------------------------------------------------------------------

/// One SSE frame: `id: <seq>` and the reference's `data:` shape.
fn sse_frame(e: &EventRecord) -> Bytes {
    let data = LiveFrame {
        data: e.payload.clone(),
        timestamp: e.created_at.timestamp_millis(),
        event_type: e.event_type.clone(),
    };
    let data = serde_json::to_string(&data).expect("serialisable");
    Bytes::from(format!("id: {}\ndata: {data}\n\n", e.seq))
}

/// [`sse_frame`] of a live event, serialised once for all its subscribers.
fn live_sse_frame(e: &LiveEvent) -> Bytes {
    e.encoded(Encoding::Sse, sse_frame)
}

/// The last frame of a cut-off SSE stream: a comment and an `error` event saying why, with the
/// id to resume from.
fn sse_cut_frame(why: CutOff, last_sent: i64) -> Bytes {
    let body = json!({"error": why.reason(), "last_event_id": last_sent});
    Bytes::from(format!(
        ": cut off: {}\nevent: error\ndata: {body}\n\n",
        why.label()
    ))
}

enum Phase {
    Start,
    Run,
    Done,
}

/// The state of one SSE stream: the log backlog being replayed, then the live bus.
struct SseStream {
    service: WorkspaceService,
    id: WorkspaceId,
    live: LiveEvents,
    backlog: VecDeque<EventRecord>,
    /// While replaying: the log cursor.
    resume: Option<i64>,
    /// The last sequence id sent; live events at or below it were replayed already.
    last_sent: i64,
    keep_alive: tokio::time::Interval,
    phase: Phase,
    /// A fresh stream's position in the log, sent as an id-only frame with the first ping, so a
    /// client whose connection drops before the first event resumes from there (the SSE rules
    /// set the last event id even when a frame has no data) instead of live-only.
    start_id: Option<i64>,
}

impl SseStream {
    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            match self.phase {
                Phase::Done => return None,
                Phase::Start => {
                    self.phase = Phase::Run;
                    return Some(match self.start_id {
                        Some(seq) => Bytes::from(format!("id: {seq}\n: ping\n\n")),
                        None => Bytes::from_static(b": ping\n\n"),
                    });
                }
                Phase::Run => {}
            }
            if let Some(e) = self.backlog.pop_front() {
                self.last_sent = e.seq;
                return Some(sse_frame(&e));
            }
            if let Some(cursor) = self.resume {
                match self
                    .service
                    .events_after(Some(self.id), cursor, RESUME_PAGE)
                    .await
                {
                    Ok(rows) if rows.is_empty() => self.resume = None,
                    Ok(rows) => {
                        self.resume = rows.last().map(|e| e.seq);
                        self.backlog.extend(rows);
                    }
                    Err(e) => {
                        tracing::error!(workspace.id = %self.id, error = %e, "SSE resume: reading the log failed");
                        self.phase = Phase::Done;
                        return Some(Bytes::from_static(
                            b"event: error\ndata: {\"error\":\"failed to read the event log\"}\n\n",
                        ));
                    }
                }
                continue;
            }
            tokio::select! {
                d = self.live.next() => match d {
                    // Replayed from the log already.
                    Some(Delivery::Event(e)) if e.seq <= self.last_sent => {}
                    Some(Delivery::Event(e)) => {
                        self.last_sent = e.seq;
                        return Some(live_sse_frame(&e));
                    }
                    Some(Delivery::CutOff(why)) => {
                        tracing::warn!(workspace.id = %self.id, reason = why.label(), last_event_id = self.last_sent, "SSE client cut off");
                        self.phase = Phase::Done;
                        return Some(sse_cut_frame(why, self.last_sent));
                    }
                    None => return None,
                },
                _ = self.keep_alive.tick() => return Some(Bytes::from_static(b": keep-alive\n\n")),
            }
        }
    }
}

/// The credential of a live stream: the `Authorization` bearer, or `?token=` for browsers
/// (`EventSource` and `WebSocket` cannot set headers); both at once is a 400.
pub(crate) fn stream_credential(
    bearer: Option<String>,
    token: Option<String>,
) -> Result<Option<String>, ApiError> {
    match (bearer, token) {
        (Some(_), Some(_)) => Err(ApiError::BadRequest(
            "give the token either in the Authorization header or as ?token=, not both".into(),
        )),
        (Some(t), None) | (None, Some(t)) => Ok(Some(t)),
        (None, None) => Ok(None),
    }
}

/// `GET /workspaces/{id}/events/stream`: the workspace's events as Server-Sent Events. With
/// `Last-Event-ID`, every later event of the workspace is replayed from the log first. The
/// credential is the admin bearer or a token of that workspace, as a header or (for browsers'
/// `EventSource`) as `?token=`.
#[utoipa::path(
    get,
    path = "/workspaces/{id}/events/stream",
    tag = "events",
    description = "Server-Sent Events: each event as `id: <seq>` and `data: <LiveFrame JSON>`, `: ping` keep-alives every 15 s. A stream opened without `Last-Event-ID` starts with an id-only frame (`id: <seq>` and `: ping`), the log's position at connect, so a client that drops before the first event resumes from there. A subscriber that does not keep up is cut off with `event: error` (`{error, last_event_id}`) and resumes with `Last-Event-ID`. The credential may also be given as `?token=` (not both).",
    security(("workspace" = [])),
    params(
        ("id" = String, Path, description = "The workspace id."),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this sequence id: the log is replayed first."),
        WsQuery,
    ),
    responses(
        (status = 200, description = "The event stream (never ends by itself).", content_type = "text/event-stream", body = LiveFrame),
        (status = 400, description = "`invalid Last-Event-ID`, both a header and `?token=`, `invalid workspace ID`.", body = ErrorBody),
    ),
)]
async fn sse(
    auth: Result<WorkspaceAuth, ApiError>,
    State(state): State<AppState>,
    Bearer(bearer): Bearer,
    ApiPath(raw_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<WsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let from_query = bearer.is_none();
    let auth = match stream_credential(bearer, query.token)? {
        Some(token) if from_query => {
            let id = WorkspaceId::parse(&raw_id)
                .map_err(|_| ApiError::BadRequest("invalid workspace ID".into()))?;
            let token = token.trim();
            if token.is_empty() {
                return Err(ApiError::Unauthorized("invalid workspace auth token"));
            }
            let principal = workspace_principal(&state, id, token).await?;
            WorkspaceAuth { id, principal }
        }
        _ => auth?,
    };
    let last_event_id = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .filter(|n| *n >= 0)
                .ok_or_else(|| ApiError::BadRequest("invalid Last-Event-ID".into()))?,
        ),
    };
    // A removed workspace's stream is gone, like its other routes.
    crate::auth::require_live(&state, auth.id).await?;
    // A fresh stream's resume point, read before subscribing: an event committed in between is
    // then replayed on a resume rather than lost (at least once, never less).
    let start_id = match last_event_id {
        Some(_) => None,
        None => Some(
            state
                .service
                .last_event_seq()
                .await
                .map_err(|e| ApiError::internal("failed to read the event log", e))?,
        ),
    };
    // Subscribe before reading the log, so nothing falls between the replay and the live feed.
    let live = state
        .service
        .subscribe_live(EventScope::Workspace(auth.id))
        .await
        .map_err(|e| ApiError::internal("failed to subscribe to events", e))?;
    let stream = SseStream {
        service: state.service.clone(),
        id: auth.id,
        live,
        backlog: VecDeque::new(),
        resume: last_event_id,
        last_sent: last_event_id.unwrap_or(0),
        keep_alive: tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE),
        phase: Phase::Start,
        start_id,
    };
    let body = futures_util::stream::unfold(stream, |mut s| async move {
        s.next_chunk()
            .await
            .map(|chunk| (Ok::<_, Infallible>(chunk), s))
    });
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::HeaderName::from_static("x-accel-buffering"),
                HeaderValue::from_static("no"),
            ),
        ],
        axum::body::Body::from_stream(body),
    )
        .into_response())
}

// ---- WebSocket ------------------------------------------------------------------------------

/// The WebSocket frame of REFERENCE.md §8.2, plus `seq`.
fn ws_frame(e: &EventRecord) -> String {
    serde_json::to_string(&WsFrame {
        event: e.event_type.clone(),
        payload: e.payload.clone(),
        seq: e.seq,
        timestamp: e
            .created_at
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        workspace_id: e.workspace_id,
    })
    .expect("serialisable")
}

/// [`ws_frame`] of a live event, serialised once for all its subscribers.
fn live_ws_frame(e: &LiveEvent) -> Utf8Bytes {
    e.encoded(Encoding::WebSocket, |r| Utf8Bytes::from(ws_frame(r)))
}

/// `GET /ws`: the admin bearer sees every event; a workspace token (the token decides the
/// workspace, whatever `X-Workspace-ID` says) sees the events of workspaces it may communicate
/// with; no credential is refused outside `--dev`, before any upgrade. The credential comes from
/// `Authorization: Bearer` or, for browsers, which cannot set that header on an upgrade, from
/// `?token=`; giving both is a 400.
#[utoipa::path(
    get,
    path = "/ws",
    tag = "events",
    description = "WebSocket upgrade. Each text message is one event (`WsFrame`); pings every 15 s. The admin bearer sees every event; a workspace token (the token decides the workspace) sees the events of the workspaces it may communicate with. The credential may also be given as `?token=` (not both); `--dev` also accepts none. A client that does not keep up is closed with code 1013 and a reason naming the last sequence id sent.",
    security(("admin" = []), ("workspace" = [])),
    params(WsQuery),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol; messages are `WsFrame` JSON texts.", content_type = "application/json", body = WsFrame),
        (status = 400, description = "`websocket upgrade required`, or both a header and `?token=`.", body = ErrorBody),
        (status = 401, description = "`admin or workspace auth token required`, `invalid auth token`.", body = ErrorBody),
    ),
)]
async fn ws(
    State(state): State<AppState>,
    Bearer(bearer): Bearer,
    ApiQuery(query): ApiQuery<WsQuery>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let credential = stream_credential(bearer, query.token)?;
    let principal = match credential.as_deref().map(str::trim) {
        Some("") => return Err(ApiError::Unauthorized("invalid auth token")),
        Some(t) if state.admin.is_admin_token(t) => Principal::Admin,
        Some(t) => match state.service.authenticate_token(t).await {
            Ok(Some(owner)) => Principal::Workspace(owner),
            Ok(None) => return Err(ApiError::Unauthorized("invalid auth token")),
            Err(e) => return Err(ApiError::internal("auth check failed", e)),
        },
        None if state.config.dev => Principal::Dev,
        None => {
            return Err(ApiError::Unauthorized(
                "admin or workspace auth token required",
            ));
        }
    };
    let upgrade = upgrade.map_err(|_| {
        ApiError::Custom(
            StatusCode::BAD_REQUEST,
            json!({"error": "websocket upgrade required"}),
        )
    })?;
    let live = state
        .service
        .subscribe_live(EventScope::Principal(principal))
        .await
        .map_err(|e| ApiError::internal("failed to subscribe to events", e))?;
    let service = state.service.clone();
    Ok(upgrade.on_upgrade(move |socket| run_ws(socket, live, service)))
}

/// How sending one frame went.
#[derive(PartialEq, Eq)]
enum Sent {
    Ok,
    /// The client did not take the frame within the send timeout.
    TimedOut,
    /// The connection is gone.
    Closed,
}

/// Sends one frame, waiting at most `limit` for the client to take it.
async fn send(socket: &mut WebSocket, msg: Message, limit: Duration) -> Sent {
    match tokio::time::timeout(limit, socket.send(msg)).await {
        Ok(Ok(())) => Sent::Ok,
        Ok(Err(_)) => Sent::Closed,
        Err(_) => Sent::TimedOut,
    }
}

/// The close frame of a cut-off WebSocket: 1013 (try again later) for a slow client, 1011 when
/// the filter failed; the reason names the last sequence id delivered.
fn ws_cut_frame(why: CutOff, last_sent: i64) -> CloseFrame {
    let code = match why {
        CutOff::QueueFull | CutOff::Lagged | CutOff::Backlog => close_code::AGAIN,
        CutOff::FilterFailed => close_code::ERROR,
    };
    // A close reason is at most 123 bytes; this one is well under.
    let reason = format!("{} (last seq {last_sent})", why.reason());
    CloseFrame {
        code,
        reason: reason.into(),
    }
}

async fn run_ws(mut socket: WebSocket, mut live: LiveEvents, service: WorkspaceService) {
    let send_timeout = service.event_config().send_timeout;
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
    let mut last_sent = 0;
    loop {
        tokio::select! {
            incoming = socket.recv() => match incoming {
                // Client frames are read (so pings and closes are answered) and ignored.
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
            d = live.next() => match d {
                Some(Delivery::Event(e)) => {
                    match send(&mut socket, Message::Text(live_ws_frame(&e)), send_timeout).await {
                        Sent::Ok => last_sent = e.seq,
                        Sent::Closed => return,
                        Sent::TimedOut => {
                            tracing::warn!(last_seq = last_sent, "WebSocket client took no frame in time; connection dropped");
                            service.note_live_connection_dropped();
                            return;
                        }
                    }
                }
                Some(Delivery::CutOff(why)) => {
                    tracing::warn!(reason = why.label(), last_seq = last_sent, "WebSocket client cut off");
                    let frame = ws_cut_frame(why, last_sent);
                    let _ = send(&mut socket, Message::Close(Some(frame)), send_timeout).await;
                    return;
                }
                None => return,
            },
            _ = ping.tick() => {
                match send(&mut socket, Message::Ping(Bytes::new()), send_timeout).await {
                    Sent::Ok => {}
                    Sent::Closed => return,
                    Sent::TimedOut => {
                        tracing::warn!(last_seq = last_sent, "WebSocket client took no ping in time; connection dropped");
                        service.note_live_connection_dropped();
                        return;
                    }
                }
            }
        }
    }
}
