//! Slow live-event clients over real sockets (issue #6): a WebSocket or SSE client that stops
//! reading is cut off with a clear reason instead of silently losing events, leaves the bus (the
//! `berth_event_subscribers` gauge), and a fast client next to it receives every event in order.
//! Also the browser credential of `GET /ws` (`?token=`), which never reaches a log line.
//!
//! The slow clients shrink their socket's receive buffer so the server's send path fills after
//! a few hundred KiB; events are appended to the log directly (8 KiB payloads, in batches) and
//! reach the clients through the tailer like any committed event.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use berth_core::{CutOff, EventConfig, WorkspaceService};
use berth_domain::WorkspaceId;
use berth_http::{AdminAuth, AppState, HttpConfig};
use futures_util::StreamExt as _;
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::helpers::{ADMIN_TOKEN, Db, TableResolver, TestApp, app, pg_app};
use crate::live::{Sse, ws_connect};

/// Upper bound for waiting on a condition, so a broken server fails the test instead of hanging.
const PATIENCE: Duration = Duration::from_secs(60);
/// Events appended per batch, and the payload size of each.
const BATCH: usize = 50;
const PAYLOAD: usize = 8 * 1024;
/// Batches appended at most before a slow client must have been cut off (about 80 MB).
const MAX_BATCHES: usize = 200;

/// Waits until `check` holds (polling), or fails the test after [`PATIENCE`].
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A second service and router over the test app's store, with the given live-event settings.
fn pressure_service(app: &TestApp, config: EventConfig) -> (WorkspaceService, Router) {
    let service = WorkspaceService::new(
        app.store.clone(),
        Arc::new(berth_provision::NoBackend),
        Arc::new(TableResolver::default()),
        berth_core::TemplateCatalog::load(std::path::Path::new("/nonexistent")),
        berth_core::CoreConfig::default(),
    )
    .with_event_config(config);
    let state = AppState {
        service: service.clone(),
        admin: Arc::new(AdminAuth::new(
            &SecretString::from(ADMIN_TOKEN.to_owned()),
            false,
        )),
        config: Arc::new(HttpConfig::default()),
    };
    (service, crate::openapi::checked(berth_http::router(state)))
}

async fn serve_router(router: Router) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        berth_http::serve(listener, router, async {
            let _ = rx.await;
        })
        .await
        .expect("serve");
    });
    (addr, tx)
}

/// A TCP connection whose receive buffer is as small as the kernel allows.
async fn tiny_socket(addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.connect(addr).await.expect("connect")
}

/// A fast WebSocket client (recording what it gets) and a slow one on a tiny socket (which
/// authenticates the browser way), both subscribed to `service`'s bus.
async fn fast_and_slow(
    addr: SocketAddr,
    service: &WorkspaceService,
) -> (
    Arc<Mutex<Vec<i64>>>,
    tokio_tungstenite::WebSocketStream<TcpStream>,
) {
    let fast = record_ws(
        ws_connect(addr, Some(ADMIN_TOKEN), None)
            .await
            .expect("fast"),
    );
    let req = format!("ws://{addr}/ws?token={ADMIN_TOKEN}")
        .into_client_request()
        .unwrap();
    let (slow, _) = tokio_tungstenite::client_async(req, tiny_socket(addr).await)
        .await
        .expect("slow client connects");
    until("two subscribers", || service.live_subscribers() == 2).await;
    (fast, slow)
}

/// Appends `n` events of `workspace` with large payloads, in one transaction; returns the last
/// sequence id.
async fn append_events(app: &TestApp, workspace: WorkspaceId, n: usize) -> i64 {
    append_sized_events(app, workspace, n, PAYLOAD).await
}

/// Appends `n` events of `workspace` whose payload carries `filler` bytes, in one transaction;
/// returns the last sequence id.
async fn append_sized_events(
    app: &TestApp,
    workspace: WorkspaceId,
    n: usize,
    filler: usize,
) -> i64 {
    const SQL: &str = "INSERT INTO structure_events (id, event_type, workspace_id, payload, created_at) VALUES ($1, $2, $3, $4, $5)";
    let filler = "x".repeat(filler);
    macro_rules! insert {
        ($pool:expr) => {{
            let mut tx = $pool.begin().await.expect("begin");
            for i in 0..n {
                sqlx::query(SQL)
                    .bind(uuid::Uuid::new_v4())
                    .bind("LOAD_TEST")
                    .bind(uuid::Uuid::from(workspace))
                    .bind(sqlx::types::Json(json!({"i": i, "filler": filler})))
                    .bind(berth_store::now())
                    .execute(&mut *tx)
                    .await
                    .expect("insert event");
            }
            tx.commit().await.expect("commit");
        }};
    }
    match &app.db {
        Db::Sqlite(s) => insert!(s.pool()),
        Db::Postgres(s) => insert!(s.pool()),
    }
    app.store
        .last_event_seq()
        .await
        .expect("last seq")
        .expect("events exist")
}

/// Reads a WebSocket in the background, recording the `seq` of every event frame in order.
fn record_ws(mut ws: crate::live::Ws) -> Arc<Mutex<Vec<i64>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = seen.clone();
    tokio::spawn(async move {
        while let Some(Ok(msg)) = ws.next().await {
            if let Message::Text(text) = msg {
                let frame: Value = serde_json::from_str(&text).expect("json frame");
                out.lock()
                    .unwrap()
                    .push(frame["seq"].as_i64().expect("seq"));
            }
        }
    });
    seen
}

/// The sequence ids of `workspace`'s events after `after`, from the log.
async fn logged_after(app: &TestApp, workspace: WorkspaceId, after: i64) -> Vec<i64> {
    let mut out = Vec::new();
    let mut cursor = after;
    loop {
        let page = app
            .service
            .events_after(Some(workspace), cursor, 1000)
            .await
            .expect("log");
        let Some(last) = page.last() else {
            return out;
        };
        cursor = last.seq;
        out.extend(page.iter().map(|e| e.seq));
    }
}

fn cut_count(service: &WorkspaceService) -> u64 {
    service.live_subscribers_cut(CutOff::QueueFull) + service.live_subscribers_cut(CutOff::Lagged)
}

/// Appends batches while `fast` keeps up, until `done` holds.
async fn load_until(
    app: &TestApp,
    service: &WorkspaceService,
    workspace: WorkspaceId,
    fast: &Arc<Mutex<Vec<i64>>>,
    done: impl Fn(&WorkspaceService) -> bool,
) {
    let mut batches = 0;
    while !done(service) {
        assert!(
            batches < MAX_BATCHES,
            "the slow client was never cut off or dropped ({} subscribers live)",
            service.live_subscribers()
        );
        let last = append_events(app, workspace, BATCH).await;
        until("the fast client to keep up", || {
            fast.lock().unwrap().last().is_some_and(|s| *s >= last)
        })
        .await;
        batches += 1;
    }
}

async fn metric(router: &Router, name: &str) -> f64 {
    let resp = crate::helpers::send(
        router,
        crate::helpers::admin(axum::http::Method::GET, "/metrics")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(resp.status, StatusCode::OK);
    resp.text
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

#[tokio::test]
async fn a_websocket_client_that_stops_reading_gets_its_queue_then_close_1013_and_a_fast_one_everything()
 {
    let app = app().await;
    let (ws_id, _) = app.container("alpha").await;
    let (service, router) = pressure_service(
        &app,
        EventConfig {
            subscriber_queue: 16,
            stall_timeout: Duration::from_secs(1),
            // Long: the slow client must still be connected when it reads again.
            send_timeout: Duration::from_secs(600),
            poll_interval: Duration::from_millis(20),
            buffer: 10_000,
            ..EventConfig::default()
        },
    );
    let (addr, _stop) = serve_router(router.clone()).await;
    let start = app.store.last_event_seq().await.unwrap().unwrap_or(0);

    let (fast, mut slow) = fast_and_slow(addr, &service).await;

    load_until(&app, &service, ws_id, &fast, |s| cut_count(s) == 1).await;
    // The slow client left the bus; the fast one is still on it.
    until("the cut subscriber to leave the bus", || {
        service.live_subscribers() == 1
    })
    .await;
    assert_eq!(metric(&router, "berth_event_subscribers").await, 1.0);
    assert_eq!(
        metric(&router, "berth_event_connections_dropped_total").await,
        0.0
    );

    // One more batch after the cut: the fast client gets it too.
    let last = append_events(&app, ws_id, BATCH).await;
    until("the fast client to get the last batch", || {
        fast.lock().unwrap().last() == Some(&last)
    })
    .await;
    let all = logged_after(&app, ws_id, start).await;
    assert_eq!(
        *fast.lock().unwrap(),
        all,
        "the fast client got every event in order"
    );

    // The slow client reads again: the events queued before the cut, in order and without a
    // gap, then a close frame saying why and where to resume.
    let mut got = Vec::new();
    let close = loop {
        let msg = tokio::time::timeout(PATIENCE, slow.next())
            .await
            .expect("slow read timed out")
            .expect("a close frame before the end")
            .expect("frame");
        match msg {
            Message::Text(text) => {
                let frame: Value = serde_json::from_str(&text).unwrap();
                got.push(frame["seq"].as_i64().unwrap());
            }
            Message::Close(frame) => break frame.expect("a close frame with a reason"),
            _ => {}
        }
    };
    assert!(!got.is_empty());
    assert_eq!(got[..], all[..got.len()], "a gapless prefix of the log");
    assert!(
        got.len() < all.len(),
        "the slow client was cut before the end"
    );
    assert_eq!(close.code, CloseCode::Again);
    let reason = close.reason.to_string();
    assert!(reason.starts_with("client too slow"), "{reason}");
    assert!(
        reason.ends_with(&format!("(last seq {})", got.last().unwrap())),
        "{reason}"
    );
    // What it missed is in the log after the seq it was told.
    assert_eq!(
        all[got.len()..],
        logged_after(&app, ws_id, *got.last().unwrap()).await[..]
    );
}

#[tokio::test]
async fn a_websocket_client_that_never_reads_is_dropped_and_holds_no_place_on_the_bus() {
    let app = app().await;
    let (ws_id, _) = app.container("alpha").await;
    let (service, router) = pressure_service(
        &app,
        EventConfig {
            subscriber_queue: 16,
            stall_timeout: Duration::from_secs(1),
            send_timeout: Duration::from_secs(1),
            poll_interval: Duration::from_millis(20),
            buffer: 10_000,
            ..EventConfig::default()
        },
    );
    let (addr, _stop) = serve_router(router.clone()).await;
    let start = app.store.last_event_seq().await.unwrap().unwrap_or(0);
    let fast = record_ws(
        ws_connect(addr, Some(ADMIN_TOKEN), None)
            .await
            .expect("fast"),
    );
    let req = format!("ws://{addr}/ws")
        .into_client_request()
        .map(|mut r| {
            r.headers_mut().insert(
                "authorization",
                format!("Bearer {ADMIN_TOKEN}").parse().unwrap(),
            );
            r
        })
        .unwrap();
    let (mut never, _) = tokio_tungstenite::client_async(req, tiny_socket(addr).await)
        .await
        .expect("connects");
    until("two subscribers", || service.live_subscribers() == 2).await;

    // The connection is dropped once a frame waited `send_timeout`; the subscription left with it.
    load_until(&app, &service, ws_id, &fast, |s| {
        s.live_connections_dropped() == 1
    })
    .await;
    until("the cut subscriber to leave the bus", || {
        service.live_subscribers() == 1
    })
    .await;
    assert_eq!(metric(&router, "berth_event_subscribers").await, 1.0);
    assert_eq!(
        metric(&router, "berth_event_connections_dropped_total").await,
        1.0
    );
    // Further load reaches the fast client and costs the dropped one nothing.
    let last = append_events(&app, ws_id, BATCH * 4).await;
    until("the fast client to get everything", || {
        fast.lock().unwrap().last() == Some(&last)
    })
    .await;
    let all = logged_after(&app, ws_id, start).await;
    assert_eq!(
        *fast.lock().unwrap(),
        all,
        "the fast client got every event in order"
    );
    assert_eq!(service.live_subscribers(), 1);

    // The dropped client finds what was in flight, then the end of the connection, no close
    // frame (it could not have taken one).
    let mut prev = start;
    loop {
        match tokio::time::timeout(PATIENCE, never.next())
            .await
            .expect("read timed out")
        {
            Some(Ok(Message::Text(text))) => {
                let frame: Value = serde_json::from_str(&text).unwrap();
                let seq = frame["seq"].as_i64().unwrap();
                assert!(seq > prev, "in order");
                prev = seq;
            }
            Some(Ok(Message::Close(frame))) => panic!("unexpected close frame {frame:?}"),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break,
        }
    }
}

#[tokio::test]
async fn an_sse_client_that_stops_reading_is_cut_off_with_a_reason_and_resumes_from_the_log() {
    sse_cut_off_and_resume(app().await).await;
}

#[tokio::test]
async fn on_postgres_an_sse_client_that_stops_reading_is_cut_off_and_resumes_from_the_log() {
    sse_cut_off_and_resume(pg_app().await).await;
}

async fn sse_cut_off_and_resume(app: TestApp) {
    let (id, token) = app.container("alpha").await;
    let (service, router) = pressure_service(
        &app,
        EventConfig {
            subscriber_queue: 16,
            stall_timeout: Duration::from_secs(1),
            poll_interval: Duration::from_millis(20),
            buffer: 10_000,
            ..EventConfig::default()
        },
    );
    let (addr, _stop) = serve_router(router.clone()).await;
    let start = app.store.last_event_seq().await.unwrap().unwrap_or(0);

    // The fast subscriber: another SSE client of the same workspace, read in the background.
    let mut fast_sse = Sse::open(addr, id, &token, None).await;
    assert_eq!(fast_sse.status, 200);
    let fast = Arc::new(Mutex::new(Vec::new()));
    let out = fast.clone();
    tokio::spawn(async move {
        loop {
            let (seq, _) = fast_sse.event().await;
            out.lock().unwrap().push(seq);
        }
    });
    let mut slow = Sse::open_on(tiny_socket(addr).await, addr, id, &token, None).await;
    assert_eq!(slow.status, 200);
    until("two subscribers", || service.live_subscribers() == 2).await;

    load_until(&app, &service, id, &fast, |s| cut_count(s) == 1).await;
    until("the cut subscriber to leave the bus", || {
        service.live_subscribers() == 1
    })
    .await;
    assert_eq!(metric(&router, "berth_event_subscribers").await, 1.0);
    let last = append_events(&app, id, BATCH).await;
    until("the fast client to get the last batch", || {
        fast.lock().unwrap().last() == Some(&last)
    })
    .await;
    let all = logged_after(&app, id, start).await;
    assert_eq!(
        *fast.lock().unwrap(),
        all,
        "the fast client got every event in order"
    );

    // The slow client reads again: the queued events in order, then the cut-off frame, then
    // the end of the stream.
    let mut got = Vec::new();
    let cut = loop {
        let block = slow
            .block()
            .await
            .expect("the cut-off frame before the end");
        if block.starts_with(": cut off") {
            break block;
        }
        // Comments, and the id-only frame a fresh stream starts with, are not events.
        if block.starts_with(':') || !block.lines().any(|l| l.starts_with("data:")) {
            continue;
        }
        let seq = block
            .lines()
            .find_map(|l| l.strip_prefix("id: "))
            .expect("id line")
            .parse::<i64>()
            .unwrap();
        got.push(seq);
    };
    assert!(
        slow.block().await.is_none(),
        "the stream ends after the cut"
    );
    assert!(!got.is_empty());
    assert_eq!(got[..], all[..got.len()], "a gapless prefix of the log");
    let mut lines = cut.lines();
    assert_eq!(lines.next(), Some(": cut off: queue_full"));
    assert_eq!(lines.next(), Some("event: error"));
    let data: Value =
        serde_json::from_str(lines.next().unwrap().strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(
        data,
        json!({
            "error": "client too slow: events not read in time; reconnect to resume",
            "last_event_id": got.last().unwrap(),
        })
    );

    // Reconnecting with the id it was told delivers exactly what it missed.
    let mut resumed = Sse::open(addr, id, &token, Some(*got.last().unwrap())).await;
    let mut rest = Vec::new();
    while rest.len() < all.len() - got.len() {
        rest.push(resumed.event().await.0);
    }
    assert_eq!(rest[..], all[got.len()..]);
}

/// Issue #19 point 7: an event too large for live delivery travels the live stream as a stub
/// naming its size; the log keeps it whole.
#[tokio::test]
async fn a_large_event_travels_live_as_a_stub_and_whole_in_the_log() {
    let app = app().await;
    let (ws_id, _) = app.container("big").await;
    let (_service, router) = pressure_service(
        &app,
        EventConfig {
            poll_interval: Duration::from_millis(20),
            ..EventConfig::default()
        },
    );
    let (addr, _stop) = serve_router(router).await;
    let mut ws = ws_connect(addr, Some(ADMIN_TOKEN), None)
        .await
        .expect("connect");
    let small = append_sized_events(&app, ws_id, 1, 1024).await;
    let big = append_sized_events(&app, ws_id, 1, 200 * 1024).await;
    let mut frames = Vec::new();
    while frames.len() < 2 {
        let msg = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("frame");
        if let Message::Text(text) = msg {
            let frame: Value = serde_json::from_str(&text).expect("json");
            if frame["event"] == "LOAD_TEST" {
                frames.push(frame);
            }
        }
    }
    assert_eq!(frames[0]["seq"], small);
    assert_eq!(
        frames[0]["payload"]["filler"].as_str().map(str::len),
        Some(1024)
    );
    assert_eq!(frames[1]["seq"], big);
    assert_eq!(
        frames[1]["payload"]["payload_truncated"], true,
        "{}",
        frames[1]
    );
    let bytes = frames[1]["payload"]["payload_bytes"]
        .as_u64()
        .expect("size");
    assert!(bytes > 200 * 1024, "{bytes}");
    // The log has it whole.
    let logged = app
        .service
        .events_after(Some(ws_id), big - 1, 1)
        .await
        .expect("log");
    assert_eq!(
        logged[0].payload["filler"].as_str().map(str::len),
        Some(200 * 1024)
    );
}

/// Issue #19 point 7: a subscriber is bounded in bytes, not only in events: one that stops
/// reading holds at most `subscriber_bytes` of events and is cut off when it makes no room
/// within the stall timeout, although its queue has room for many more events; a fast client
/// beside it, whose bursts pass the same bound for a moment, is never cut.
#[tokio::test]
async fn a_websocket_client_whose_queued_bytes_pass_the_bound_is_cut_off() {
    let app = app().await;
    let (ws_id, _) = app.container("bytes").await;
    let (service, router) = pressure_service(
        &app,
        EventConfig {
            subscriber_queue: 100_000,
            subscriber_bytes: 256 * 1024,
            stall_timeout: Duration::from_secs(1),
            send_timeout: Duration::from_secs(600),
            poll_interval: Duration::from_millis(20),
            buffer: 100_000,
            ..EventConfig::default()
        },
    );
    let (addr, _stop) = serve_router(router.clone()).await;
    let (fast, mut slow) = fast_and_slow(addr, &service).await;

    load_until(&app, &service, ws_id, &fast, |s| {
        s.live_subscribers_cut(CutOff::Backlog) == 1
    })
    .await;
    assert_eq!(
        cut_count(&service),
        0,
        "cut for its bytes, not its count or stall"
    );
    until("the cut subscriber to leave the bus", || {
        service.live_subscribers() == 1
    })
    .await;
    // Its queued events are written, then the close frame says why.
    let close = loop {
        let msg = tokio::time::timeout(PATIENCE, slow.next())
            .await
            .expect("slow read timed out")
            .expect("a close frame before the end")
            .expect("frame");
        if let Message::Close(frame) = msg {
            break frame.expect("a close frame with a reason");
        }
    };
    assert_eq!(close.code, CloseCode::Again);
    assert!(
        close.reason.to_string().contains("too much event data"),
        "{}",
        close.reason
    );
    drop(slow);
    // Nothing stays counted once the slow client is gone and the fast one has caught up.
    let last = append_events(&app, ws_id, 1).await;
    until("the fast client to catch up", || {
        fast.lock().unwrap().last() == Some(&last)
    })
    .await;
    until("the byte count to fall back", || {
        service.live_queued_bytes() < 64 * 1024
    })
    .await;
}
