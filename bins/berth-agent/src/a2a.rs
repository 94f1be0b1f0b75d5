//! The agent's A2A surface: a JSON-RPC 2.0 endpoint that echoes `message/send`, the agent card
//! and a health probe.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};

/// JSON-RPC: the body is not JSON.
const PARSE_ERROR: i64 = -32700;
/// JSON-RPC: the body is JSON but not a request object.
const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC: no such method.
const METHOD_NOT_FOUND: i64 = -32601;
/// JSON-RPC: the method exists but the params do not fit it.
const INVALID_PARAMS: i64 = -32602;

/// The agent card served at `/.well-known/agent.json`: shared and replaceable, because a warm-pool
/// member learns its workspace's name only when it is claimed (`pool.rs`).
#[derive(Debug, Clone)]
pub struct SharedCard(Arc<RwLock<Arc<Value>>>);

impl SharedCard {
    /// A shared card starting as `card`.
    pub fn new(card: Value) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(card))))
    }

    /// The current card. The lock is held only to clone the `Arc`, never across an await.
    pub fn get(&self) -> Arc<Value> {
        // A poisoned lock still holds a whole card: writers only ever swap the `Arc`.
        Arc::clone(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Replaces the card; requests served from now on show the new one.
    pub fn set(&self, card: Value) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(card);
    }
}

/// Shared state of the A2A server.
#[derive(Debug, Clone)]
pub struct AgentState {
    card: SharedCard,
    in_flight: Arc<AtomicU64>,
    reply_delay: Duration,
}

impl AgentState {
    /// State serving `card`, counting requests in `in_flight` (read by the heartbeat), taking
    /// `reply_delay` over each `message/send`.
    pub fn new(card: SharedCard, in_flight: Arc<AtomicU64>, reply_delay: Duration) -> Self {
        Self {
            card,
            in_flight,
            reply_delay,
        }
    }
}

/// The A2A listener: while `max` requests are in flight (`max > 0`), every new connection is
/// closed unanswered, which the platform's proxy reads as "busy" and queues the message.
pub struct BusyListener {
    inner: TcpListener,
    in_flight: Arc<AtomicU64>,
    max: u64,
}

impl BusyListener {
    /// Wraps `inner`.
    pub fn new(inner: TcpListener, in_flight: Arc<AtomicU64>, max: u64) -> Self {
        Self {
            inner,
            in_flight,
            max,
        }
    }
}

impl axum::serve::Listener for BusyListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (io, addr) = axum::serve::Listener::accept(&mut self.inner).await;
            if self.max > 0 && self.in_flight.load(Ordering::Relaxed) >= self.max {
                tracing::info!(peer = %addr, "busy: connection closed unanswered");
                drop(io);
                continue;
            }
            return (io, addr);
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// The agent card this runtime presents, both at registration and at `/.well-known/agent.json`.
pub fn agent_card(name: &str) -> Value {
    json!({
        "name": name,
        "description": "berth echo agent",
        "version": env!("CARGO_PKG_VERSION"),
        "skills": [{"id": "echo", "name": "Echo"}],
    })
}

/// The A2A routes.
pub fn router(state: AgentState) -> Router {
    Router::new()
        .route("/", post(rpc))
        .route("/a2a", post(rpc))
        .route("/.well-known/agent.json", get(card))
        .route("/.well-known/agent-card.json", get(card))
        .route("/health", get(health))
        .with_state(state)
}

/// Counts one in-flight request for as long as it lives, so an early return cannot leak a count.
struct InFlight(Arc<AtomicU64>);

impl InFlight {
    fn enter(counter: &Arc<AtomicU64>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(counter))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn card(State(state): State<AgentState>) -> Json<Value> {
    Json((*state.card.get()).clone())
}

async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// The JSON-RPC endpoint. Every answer, errors included, is HTTP 200 with a JSON-RPC body, as the
/// JSON-RPC-over-HTTP convention has it; the body is taken raw so a parse failure is ours to report.
async fn rpc(State(state): State<AgentState>, body: axum::body::Bytes) -> Json<Value> {
    let _in_flight = InFlight::enter(&state.in_flight);
    if !state.reply_delay.is_zero() {
        tokio::time::sleep(state.reply_delay).await;
    }
    Json(handle(&body))
}

/// Answers one JSON-RPC request body.
fn handle(body: &[u8]) -> Value {
    let request: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => return error(Value::Null, PARSE_ERROR, "Parse error"),
    };
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    let method = match (request.get("jsonrpc"), request.get("method")) {
        (Some(Value::String(v)), Some(Value::String(m))) if v == "2.0" => m.as_str(),
        _ => return error(id, INVALID_REQUEST, "Invalid Request"),
    };
    match method {
        "message/send" => match echo(request.get("params")) {
            Some(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
            None => error(
                id,
                INVALID_PARAMS,
                "Invalid params: params.message.parts is required",
            ),
        },
        _ => error(id, METHOD_NOT_FOUND, "Method not found"),
    }
}

/// The echo reply to `params.message`: its text parts concatenated behind `echo: `.
fn echo(params: Option<&Value>) -> Option<Value> {
    let message = params?.get("message")?;
    let parts = message.get("parts")?.as_array()?;
    let text: String = parts
        .iter()
        .filter(|p| matches!(p.get("kind").and_then(Value::as_str), Some("text") | None))
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect();
    let mut reply = json!({
        "kind": "message",
        "messageId": uuid::Uuid::new_v4().to_string(),
        "role": "agent",
        "parts": [{"kind": "text", "text": format!("echo: {text}")}],
    });
    if let (Some(ctx), Some(obj)) = (message.get("contextId"), reply.as_object_mut()) {
        obj.insert("contextId".into(), ctx.clone());
    }
    Some(reply)
}

fn error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(body: Value) -> Value {
        handle(body.to_string().as_bytes())
    }

    #[test]
    fn message_send_echoes_the_text_parts() {
        let out = send(json!({
            "jsonrpc": "2.0", "id": 7, "method": "message/send",
            "params": {"message": {"role": "user", "messageId": "m1", "contextId": "c1", "parts": [
                {"kind": "text", "text": "hello "},
                {"kind": "file", "file": {"uri": "x"}},
                {"kind": "text", "text": "world"},
            ]}},
        }));
        assert_eq!(out["jsonrpc"], "2.0");
        assert_eq!(out["id"], 7);
        let result = &out["result"];
        assert_eq!(result["kind"], "message");
        assert_eq!(result["role"], "agent");
        assert_eq!(result["contextId"], "c1");
        assert_eq!(result["parts"][0]["kind"], "text");
        assert_eq!(result["parts"][0]["text"], "echo: hello world");
        let mid = result["messageId"].as_str().unwrap();
        assert!(!mid.is_empty() && mid != "m1");
    }

    #[test]
    fn errors_follow_json_rpc_codes() {
        let out = handle(b"{not json");
        assert_eq!(out["error"]["code"], PARSE_ERROR);
        assert_eq!(out["id"], Value::Null);

        let out = send(json!({"jsonrpc": "2.0", "id": "a", "method": "tasks/get"}));
        assert_eq!(out["error"]["code"], METHOD_NOT_FOUND);
        assert_eq!(out["id"], "a");

        let out = send(json!({"id": 1, "method": "message/send"}));
        assert_eq!(out["error"]["code"], INVALID_REQUEST);

        let out = send(json!({"jsonrpc": "2.0", "id": 2, "method": "message/send", "params": {}}));
        assert_eq!(out["error"]["code"], INVALID_PARAMS);
        assert_eq!(out["id"], 2);
    }

    #[test]
    fn a_shared_card_can_be_replaced() {
        let card = SharedCard::new(agent_card("before"));
        let served = card.clone();
        card.set(agent_card("after"));
        assert_eq!(served.get()["name"], "after");
    }

    #[test]
    fn in_flight_guard_restores_the_count() {
        let counter = Arc::new(AtomicU64::new(0));
        {
            let _a = InFlight::enter(&counter);
            let _b = InFlight::enter(&counter);
            assert_eq!(counter.load(Ordering::Relaxed), 2);
        }
        assert_eq!(counter.load(Ordering::Relaxed), 0);
    }
}
