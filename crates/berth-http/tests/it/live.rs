//! Live events through a real socket (`berth_http::serve` on `127.0.0.1:0`): the SSE stream
//! (headers, `: ping`, `id:` frames, `Last-Event-ID` resume from the log) and the `GET /ws`
//! WebSocket (credentials, the hierarchy filter, ignored client frames), and commits waking the
//! event tailer (of every instance, on PostgreSQL) without its poll.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use berth_core::{EventConfig, WorkspaceService};
use berth_domain::WorkspaceId;
use berth_http::{AdminAuth, AppState, HttpConfig};
use berth_store::{EventFilter, EventRecord, KeyRing, PgStore, SecretScope, WorkspaceStore};
use futures_util::{SinkExt as _, StreamExt as _};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::helpers::{ADMIN_TOKEN, Setup, TestApp, app};

/// Upper bound for one read, so a broken stream fails the test instead of hanging it.
const READ_LIMIT: Duration = Duration::from_secs(20);

pub(crate) async fn serve(app: &TestApp) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let router = app.router.clone();
    tokio::spawn(async move {
        berth_http::serve(listener, router, async {
            let _ = rx.await;
        })
        .await
        .expect("serve");
    });
    (addr, tx)
}

/// A minimal SSE client over HTTP/1.1 chunked encoding.
pub(crate) struct Sse {
    reader: BufReader<TcpStream>,
    headers: Vec<(String, String)>,
    pub(crate) status: u16,
    pending: String,
}

impl Sse {
    pub(crate) async fn open(
        addr: SocketAddr,
        id: WorkspaceId,
        token: &str,
        last_event_id: Option<i64>,
    ) -> Sse {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Sse::open_on(stream, addr, id, token, last_event_id).await
    }

    /// Opens the stream over an already connected socket.
    pub(crate) async fn open_on(
        mut stream: TcpStream,
        addr: SocketAddr,
        id: WorkspaceId,
        token: &str,
        last_event_id: Option<i64>,
    ) -> Sse {
        let mut req = format!(
            "GET /workspaces/{id}/events/stream HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\nAuthorization: Bearer {token}\r\n"
        );
        if let Some(l) = last_event_id {
            req.push_str(&format!("Last-Event-ID: {l}\r\n"));
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).await.expect("write");
        let mut reader = BufReader::new(stream);
        let mut status_line = String::new();
        reader
            .read_line(&mut status_line)
            .await
            .expect("status line");
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status");
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).await.expect("header");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (k, v) = line.split_once(':').expect("header line");
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
        Sse {
            reader,
            headers,
            status,
            pending: String::new(),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The next chunk of the chunked body (`None` at the end).
    async fn chunk(&mut self) -> Option<String> {
        let mut size = String::new();
        if self.reader.read_line(&mut size).await.ok()? == 0 {
            return None;
        }
        let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if n == 0 {
            return None;
        }
        let mut buf = vec![0; n + 2];
        self.reader.read_exact(&mut buf).await.expect("chunk");
        buf.truncate(n);
        Some(String::from_utf8(buf).expect("utf-8"))
    }

    /// The next SSE block (up to a blank line), comments included.
    pub(crate) async fn block(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.pending.find("\n\n") {
                let block = self.pending[..end].to_owned();
                self.pending.drain(..end + 2);
                return Some(block);
            }
            let chunk = tokio::time::timeout(READ_LIMIT, self.chunk())
                .await
                .expect("SSE read timed out")?;
            self.pending.push_str(&chunk);
        }
    }

    /// The next event frame, skipping comments and id-only frames: `(id, data)`.
    pub(crate) async fn event(&mut self) -> (i64, Value) {
        loop {
            let block = self.block().await.expect("stream ended");
            if block.starts_with(':') {
                continue;
            }
            let mut id = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = Some(v.parse().expect("numeric id"));
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = Some(serde_json::from_str(v).expect("json data"));
                }
            }
            let Some(data) = data else {
                continue; // an id-only frame (a fresh stream's position)
            };
            return (id.expect("id line"), data);
        }
    }
}

async fn set_secret(app: &TestApp, id: WorkspaceId, key: &str) {
    let resp = app
        .post(
            &format!("/workspaces/{id}/secrets"),
            Some(ADMIN_TOKEN),
            &json!({"key": key, "value": "v"}),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
}

#[tokio::test]
async fn sse_resumes_with_last_event_id_receiving_exactly_the_missed_events() {
    let app = app().await;
    let (a, token) = app.container("alpha").await;
    let (b, _) = app.container("beta").await;
    let (addr, _stop) = serve(&app).await;

    let mut sse = Sse::open(addr, a, &token, None).await;
    assert_eq!(sse.status, 200);
    assert_eq!(sse.header("content-type"), Some("text/event-stream"));
    assert_eq!(sse.header("cache-control"), Some("no-cache"));
    assert_eq!(sse.header("x-accel-buffering"), Some("no"));
    let first = sse.block().await.expect("the first block");
    assert!(
        first.starts_with("id: ") && first.ends_with("\n: ping"),
        "a fresh stream starts with its log position and a ping: {first:?}"
    );

    set_secret(&app, b, "OTHER_WORKSPACE").await;
    set_secret(&app, a, "K1").await;
    set_secret(&app, a, "K2").await;
    let (id1, d1) = sse.event().await;
    let (id2, d2) = sse.event().await;
    assert_eq!(d1["type"], "secret.set");
    assert_eq!(d1["data"]["key"], "K1", "B's event is not on A's stream");
    assert!(d1["timestamp"].as_i64().expect("unix ms") > 1_600_000_000_000);
    assert_eq!(d2["data"]["key"], "K2");
    assert!(id2 > id1);
    drop(sse);

    // Missed while disconnected.
    set_secret(&app, a, "K3").await;
    set_secret(&app, b, "OTHER_AGAIN").await;
    set_secret(&app, a, "K4").await;

    let mut resumed = Sse::open(addr, a, &token, Some(id2)).await;
    assert_eq!(resumed.status, 200);
    let (id3, d3) = resumed.event().await;
    let (id4, d4) = resumed.event().await;
    set_secret(&app, a, "K5").await;
    let (id5, d5) = resumed.event().await;
    let got: Vec<&Value> = vec![&d3["data"]["key"], &d4["data"]["key"], &d5["data"]["key"]];
    assert_eq!(got, vec!["K3", "K4", "K5"]);
    assert!(id2 < id3 && id3 < id4 && id4 < id5);
    // Exactly the missed ones: the log has nothing else of A after id2 but these.
    let log = app.get(&format!("/events/{a}?after={id2}")).await;
    let logged: Vec<i64> = log
        .json
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(logged, vec![id3, id4, id5]);
}

/// A stream that drops before its first event still resumes without a gap: its first frame
/// carries the log position (an id-only frame), which the client sends back as `Last-Event-ID`.
/// Before, a drop then reconnected live-only and lost what happened in between.
#[tokio::test]
async fn sse_dropped_before_its_first_event_resumes_from_its_start() {
    let app = app().await;
    let (a, token) = app.container("alpha").await;
    let (addr, _stop) = serve(&app).await;

    let mut sse = Sse::open(addr, a, &token, None).await;
    let first = sse.block().await.expect("the first block");
    let start: i64 = first
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("an id line in the first block: {first:?}"));
    let before = app.get(&format!("/events/{a}")).await;
    let newest = before
        .json
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .max()
        .unwrap_or(0);
    assert!(
        start >= newest,
        "the position covers the log: {start} < {newest}"
    );
    drop(sse);

    set_secret(&app, a, "WHILE_AWAY").await;
    let mut resumed = Sse::open(addr, a, &token, Some(start)).await;
    let (seq, data) = resumed.event().await;
    assert_eq!(data["data"]["key"], "WHILE_AWAY");
    assert!(seq > start);
}

#[tokio::test]
async fn sse_refuses_other_tokens_unknown_workspaces_and_bad_cursors() {
    let app = app().await;
    let (a, token_a) = app.container("alpha").await;
    let (b, _) = app.container("beta").await;
    let uri = format!("/workspaces/{b}/events/stream");
    let resp = app.call(Method::GET, &uri, Some(&token_a)).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert_eq!(resp.json, json!({"error": "invalid workspace auth token"}));
    let resp = app.call(Method::GET, &uri, None).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    let missing = WorkspaceId::new_v4();
    let resp = app
        .call(
            Method::GET,
            &format!("/workspaces/{missing}/events/stream"),
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND);
    assert_eq!(resp.json, json!({"error": "workspace not found"}));
    let req = axum::http::Request::builder()
        .uri(format!("/workspaces/{a}/events/stream"))
        .header("authorization", format!("Bearer {token_a}"))
        .header("last-event-id", "abc")
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = app.send(req).await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert_eq!(resp.json, json!({"error": "invalid Last-Event-ID"}));
}

pub(crate) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

pub(crate) async fn ws_connect(
    addr: SocketAddr,
    bearer: Option<&str>,
    workspace_header: Option<WorkspaceId>,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let mut req = format!("ws://{addr}/ws")
        .into_client_request()
        .expect("request");
    if let Some(t) = bearer {
        req.headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    if let Some(w) = workspace_header {
        req.headers_mut()
            .insert("x-workspace-id", w.to_string().parse().unwrap());
    }
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| ws)
}

/// Reads `secret.set` frames until one with key `until`, within one [`READ_LIMIT`]; returns their
/// keys in order.
async fn keys_until(ws: &mut Ws, until: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let deadline = tokio::time::Instant::now() + READ_LIMIT;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("ws read timed out")
            .expect("open")
            .expect("frame");
        let Message::Text(text) = msg else { continue };
        let frame: Value = serde_json::from_str(&text).expect("json frame");
        assert_eq!(
            crate::helpers::keys(&frame),
            crate::helpers::sorted(&["event", "payload", "seq", "timestamp", "workspace_id"])
        );
        chrono::DateTime::parse_from_rfc3339(frame["timestamp"].as_str().unwrap())
            .expect("RFC 3339");
        if frame["event"] != "secret.set" {
            continue;
        }
        let key = frame["payload"]["key"].as_str().unwrap().to_owned();
        keys.push(key.clone());
        if key == until {
            return keys;
        }
    }
}

/// Two parents and three children, with a workspace token minted for `a`, as
/// `(p1, p2, a, b, c, token_a)`: p1 ─ a, b (siblings); p2 ─ c (a's cousin).
async fn family(
    app: &TestApp,
) -> (
    WorkspaceId,
    WorkspaceId,
    WorkspaceId,
    WorkspaceId,
    WorkspaceId,
    String,
) {
    let p1 = app
        .create_id(json!({"name": "p1", "model": "openai/gpt-4o"}))
        .await;
    let p2 = app
        .create_id(json!({"name": "p2", "model": "openai/gpt-4o"}))
        .await;
    let child = |name: &str, parent: WorkspaceId| json!({"name": name, "model": "openai/gpt-4o", "parent_id": parent.to_string()});
    let a = app.create_id(child("a", p1)).await;
    let b = app.create_id(child("b", p1)).await;
    let c = app.create_id(child("c", p2)).await;
    app.service.drain().await;
    let token_a = app.admin_mint(a).await;
    (p1, p2, a, b, c, token_a)
}

#[tokio::test]
async fn ws_admin_sees_all_a_workspace_token_sees_its_relatives_only() {
    let app = app().await;
    let (p1, p2, a, b, c, token_a) = family(&app).await;
    let (addr, _stop) = serve(&app).await;

    let mut admin = ws_connect(addr, Some(ADMIN_TOKEN), None)
        .await
        .expect("admin connects");
    // The token decides the workspace, whatever X-Workspace-ID claims.
    let mut as_a = ws_connect(addr, Some(&token_a), Some(c))
        .await
        .expect("token connects");
    // Client frames are ignored.
    as_a.send(Message::Text("hello".into()))
        .await
        .expect("send");

    set_secret(&app, c, "COUSIN").await;
    set_secret(&app, b, "SIBLING").await;
    set_secret(&app, p1, "PARENT").await;
    set_secret(&app, p2, "UNCLE").await;
    let resp = app
        .post(
            "/settings/secrets",
            Some(ADMIN_TOKEN),
            &json!({"key": "GLOBAL", "value": "g"}),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK);
    set_secret(&app, a, "SELF").await;

    assert_eq!(
        keys_until(&mut as_a, "SELF").await,
        vec!["SIBLING", "PARENT", "SELF"]
    );
    assert_eq!(
        keys_until(&mut admin, "SELF").await,
        vec!["COUSIN", "SIBLING", "PARENT", "UNCLE", "GLOBAL", "SELF"]
    );
}

#[tokio::test]
async fn ws_needs_a_credential_outside_dev() {
    let app = app().await;
    let resp = app.call(Method::GET, "/ws", None).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        resp.json,
        json!({"error": "admin or workspace auth token required"})
    );
    let resp = app.call(Method::GET, "/ws", Some("not-a-token")).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert_eq!(resp.json, json!({"error": "invalid auth token"}));
    // A credential but no upgrade.
    let resp = app.call(Method::GET, "/ws", Some(ADMIN_TOKEN)).await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert_eq!(resp.json, json!({"error": "websocket upgrade required"}));
    let (addr, _stop) = serve(&app).await;
    match ws_connect(addr, None, None).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("expected a 401 handshake, got {other:?}"),
    }

    // --dev: an anonymous client is the reference's canvas client.
    let dev = Setup {
        dev: true,
        ..Setup::default()
    }
    .start()
    .await;
    let (id, _) = dev.container("alpha").await;
    let (addr, _stop) = serve(&dev).await;
    let mut ws = ws_connect(addr, None, None).await.expect("dev connects");
    set_secret(&dev, id, "DEV").await;
    assert_eq!(keys_until(&mut ws, "DEV").await, vec!["DEV"]);
}

async fn ws_with_query(
    addr: SocketAddr,
    query: &str,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let req = format!("ws://{addr}/ws?{query}")
        .into_client_request()
        .expect("request");
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| ws)
}

fn handshake_status(r: Result<Ws, tokio_tungstenite::tungstenite::Error>) -> u16 {
    match r {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("expected an HTTP refusal, got an upgrade"),
    }
}

#[tokio::test]
async fn ws_takes_the_browser_credential_as_a_token_query_parameter_and_never_logs_it() {
    let logs = crate::helpers::capture_logs(tracing::Level::DEBUG);
    let app = app().await;
    let (_, p2, a, b, c, token_a) = family(&app).await;
    let (addr, _stop) = serve(&app).await;

    // Refused before the upgrade: a wrong, an empty or no credential; both ways at once.
    const WRONG: &str = "wrong-credential-3f9a7c";
    assert_eq!(
        handshake_status(ws_with_query(addr, &format!("token={WRONG}")).await),
        401
    );
    assert_eq!(handshake_status(ws_with_query(addr, "token=").await), 401);
    assert_eq!(handshake_status(ws_with_query(addr, "other=1").await), 401);
    let mut both = format!("ws://{addr}/ws?token={token_a}")
        .into_client_request()
        .unwrap();
    both.headers_mut().insert(
        "authorization",
        format!("Bearer {token_a}").parse().unwrap(),
    );
    match tokio_tungstenite::connect_async(both).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 400);
        }
        other => panic!("expected 400, got {other:?}"),
    }

    let mut admin = ws_with_query(addr, &format!("token={ADMIN_TOKEN}"))
        .await
        .expect("admin connects with ?token=");
    let mut as_a = ws_with_query(addr, &format!("token={token_a}"))
        .await
        .expect("workspace token connects with ?token=");
    set_secret(&app, c, "COUSIN").await;
    set_secret(&app, b, "SIBLING").await;
    set_secret(&app, p2, "UNCLE").await;
    set_secret(&app, a, "SELF").await;
    assert_eq!(keys_until(&mut as_a, "SELF").await, vec!["SIBLING", "SELF"]);
    assert_eq!(
        keys_until(&mut admin, "SELF").await,
        vec!["COUSIN", "SIBLING", "UNCLE", "SELF"]
    );
    drop((admin, as_a));

    let captured = logs.text();
    // The capture works (one positive check, on the secret writes this test makes. tracing's
    // global per-callsite interest cache makes events that other tests' threads reached first
    // racy here: in `cargo test --workspace` runs, create's "workspace created" and the DEBUG
    // request spans were at times missing. Where a request span was captured, its query is
    // redacted).
    assert!(
        captured.contains("secret saved"),
        "logs were captured: {captured}"
    );
    assert_eq!(
        captured.matches("token=").count(),
        captured.matches("token=[redacted]").count(),
        "every logged token parameter is redacted"
    );
    for secret in [ADMIN_TOKEN, token_a.as_str(), WRONG] {
        assert!(
            !captured.contains(secret),
            "a log line carries a credential"
        );
    }
}

/// The status and the first SSE block of `GET /workspaces/{id}/events/stream?<query>`.
async fn sse_with_query(addr: SocketAddr, id: WorkspaceId, query: &str) -> (u16, Option<Sse>) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "GET /workspaces/{id}/events/stream?{query} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).await.expect("status");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await.expect("header");
        if line.trim_end().is_empty() {
            break;
        }
    }
    let sse = (status == 200).then(|| Sse {
        reader,
        headers: Vec::new(),
        status,
        pending: String::new(),
    });
    (status, sse)
}

#[tokio::test]
async fn sse_takes_the_browser_credential_as_a_token_query_parameter() {
    let app = app().await;
    let (a, token_a) = app.container("alpha").await;
    let (_, token_b) = app.container("beta").await;
    let (addr, _stop) = serve(&app).await;

    for (query, want) in [
        (format!("token={token_b}"), 401),
        ("token=not-a-token".to_owned(), 401),
        ("token=".to_owned(), 401),
        ("other=1".to_owned(), 401),
    ] {
        assert_eq!(sse_with_query(addr, a, &query).await.0, want, "{query}");
    }
    // Header and query at once.
    let req = axum::http::Request::builder()
        .uri(format!("/workspaces/{a}/events/stream?token={token_a}"))
        .header("authorization", format!("Bearer {token_a}"))
        .body(axum::body::Body::empty())
        .unwrap();
    assert_eq!(app.send(req).await.status, StatusCode::BAD_REQUEST);

    for token in [token_a.as_str(), ADMIN_TOKEN] {
        let (status, sse) = sse_with_query(addr, a, &format!("token={token}")).await;
        assert_eq!(status, 200);
        let mut sse = sse.expect("stream");
        let first = sse.block().await.expect("the first block");
        assert!(first.ends_with(": ping"), "{first:?}");
        let key = format!("K_{}", &token[..4])
            .to_uppercase()
            .replace('-', "_");
        set_secret(&app, a, &key).await;
        let (_, data) = sse.event().await;
        assert_eq!(data["data"]["key"], key.as_str());
    }
}

/// A service over `store` whose tailer never polls in a test's lifetime, behind a served router:
/// only a commit's wake can bring it an event.
async fn unpolled_instance(
    store: Arc<dyn WorkspaceStore>,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let service = WorkspaceService::new(
        store,
        Arc::new(berth_provision::NoBackend),
        Arc::new(crate::helpers::TableResolver::default()),
        berth_core::TemplateCatalog::load(std::path::Path::new("/nonexistent")),
        berth_core::CoreConfig::default(),
    )
    .with_event_config(EventConfig {
        poll_interval: Duration::from_secs(24 * 3600),
        ..EventConfig::default()
    });
    let state = AppState {
        service,
        admin: Arc::new(AdminAuth::new(
            &SecretString::from(ADMIN_TOKEN.to_owned()),
            false,
        )),
        config: Arc::new(HttpConfig::default()),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        berth_http::serve(
            listener,
            crate::openapi::checked(berth_http::router(state)),
            async {
                let _ = rx.await;
            },
        )
        .await
        .expect("serve");
    });
    (addr, tx)
}

/// The next text frame of `ws`, within one [`READ_LIMIT`] however many pings come first (a
/// per-frame limit would never fire while the server keeps pinging).
async fn next_text(ws: &mut Ws) -> String {
    let deadline = tokio::time::Instant::now() + READ_LIMIT;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("ws read timed out")
            .expect("open")
            .expect("frame");
        if let Message::Text(text) = msg {
            return text.to_string();
        }
    }
}

/// Records a global `secret.set` through `store` and returns its log row.
async fn record_global_secret(store: &dyn WorkspaceStore, key: &str) -> EventRecord {
    store
        .set_secret(
            SecretScope::Global,
            key.to_owned(),
            SecretString::from("v".to_owned()),
            json!({"key": key}),
        )
        .await
        .expect("set secret");
    let seq = store.last_event_seq().await.unwrap().expect("an event");
    let mut rows = store
        .events(EventFilter {
            workspace_id: None,
            after_seq: Some(seq - 1),
            limit: Some(1),
        })
        .await
        .unwrap();
    rows.pop().expect("the event")
}

/// The frame every `/ws` subscriber gets for `e`: the same bytes for all of them (the frame is
/// serialised once per event), carrying the logged event.
fn assert_frame_of(frame: &str, e: &EventRecord) {
    let v: Value = serde_json::from_str(frame).expect("json frame");
    assert_eq!(v["event"], "secret.set");
    assert_eq!(v["seq"], e.seq);
    assert_eq!(v["payload"], e.payload);
    assert_eq!(v["workspace_id"], Value::Null);
}

#[tokio::test]
async fn a_commit_wakes_the_tailer_on_sqlite() {
    let app = app().await;
    let (addr, _stop) = unpolled_instance(app.store.clone()).await;
    let mut first = ws_connect(addr, Some(ADMIN_TOKEN), None).await.unwrap();
    let mut second = ws_connect(addr, Some(ADMIN_TOKEN), None).await.unwrap();
    for key in ["ONE", "TWO"] {
        let e = record_global_secret(app.store.as_ref(), key).await;
        let frame = next_text(&mut first).await;
        assert_frame_of(&frame, &e);
        assert_eq!(next_text(&mut second).await, frame);
    }
}

/// On PostgreSQL a commit wakes the tailer of its own instance (the store's signal) and, through
/// `NOTIFY` after the commit, the tailers of other instances sharing the database: neither polls.
#[tokio::test]
async fn a_commit_wakes_the_tailers_of_every_instance_on_postgres() {
    let url = crate::helpers::fresh_pg_database().await;
    let keys = KeyRing::parse(&KeyRing::generate_line("test")).expect("key ring");
    let here: Arc<dyn WorkspaceStore> =
        Arc::new(PgStore::connect(&url, keys.clone()).await.unwrap());
    let there: Arc<dyn WorkspaceStore> = Arc::new(PgStore::connect(&url, keys).await.unwrap());
    let (addr_here, _stop_here) = unpolled_instance(here.clone()).await;
    let (addr_there, _stop_there) = unpolled_instance(there.clone()).await;
    let mut local = ws_connect(addr_here, Some(ADMIN_TOKEN), None)
        .await
        .unwrap();
    let mut local_too = ws_connect(addr_here, Some(ADMIN_TOKEN), None)
        .await
        .unwrap();
    let mut remote = ws_connect(addr_there, Some(ADMIN_TOKEN), None)
        .await
        .unwrap();
    for key in ["ONE", "TWO"] {
        let e = record_global_secret(here.as_ref(), key).await;
        let frame = next_text(&mut local).await;
        assert_frame_of(&frame, &e);
        assert_eq!(next_text(&mut local_too).await, frame);
        assert_eq!(next_text(&mut remote).await, frame);
    }
    // And the other way round.
    let e = record_global_secret(there.as_ref(), "THREE").await;
    assert_frame_of(&next_text(&mut local).await, &e);
    assert_frame_of(&next_text(&mut remote).await, &e);
}
