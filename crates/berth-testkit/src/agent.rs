//! [`FakeAgent`]: a scripted agent that registers with a berth, heartbeats, and answers A2A
//! `message/send` with the test's closure.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use berth_api::registry::{Heartbeat, Register};
use berth_api::workspaces::CreateWorkspace;
use berth_client::Client;
use berth_domain::WorkspaceId;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::{Error, Result, TestServer, io};

/// What the agent answers to a user's text: the reply text.
pub type Reply = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// How often the agent heartbeats (the server's liveness window is far longer).
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// A fake agent: an HTTP server on a loopback port that speaks just enough A2A (JSON-RPC
/// `message/send` on `/`, the agent card at `/.well-known/agent.json`), registered with a berth
/// as the agent of one workspace and heartbeating until dropped. Every text it receives is kept
/// ([`FakeAgent::received`]) and answered with the reply closure's text.
pub struct FakeAgent {
    workspace_id: WorkspaceId,
    token: String,
    url: String,
    received: Arc<Mutex<Vec<String>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for FakeAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeAgent")
            .field("workspace_id", &self.workspace_id)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct AgentState {
    name: Arc<str>,
    reply: Reply,
    received: Arc<Mutex<Vec<String>>>,
}

impl FakeAgent {
    /// Creates an external workspace named `name` on `server`, serves the agent, registers it
    /// with the workspace's token and starts heartbeating: the workspace is `online` when this
    /// returns.
    pub async fn connect(
        server: &TestServer,
        name: &str,
        reply: impl Fn(&str) -> String + Send + Sync + 'static,
    ) -> Result<Self> {
        let created = server
            .client()
            .create_workspace(&CreateWorkspace {
                name: name.to_owned(),
                external: true,
                ..CreateWorkspace::default()
            })
            .await?;
        let token = created
            .connection
            .map(|c| c.auth_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::Unexpected("the external create returned no token".into()))?;
        Self::attach(server.url(), created.id, &token, name, reply).await
    }

    /// Serves the agent for an existing workspace `id` of the berth at `platform_url`, registers
    /// with `token` (the workspace's bearer token) and starts heartbeating.
    pub async fn attach(
        platform_url: &str,
        id: WorkspaceId,
        token: &str,
        name: &str,
        reply: impl Fn(&str) -> String + Send + Sync + 'static,
    ) -> Result<Self> {
        let received = Arc::new(Mutex::new(Vec::new()));
        let state = AgentState {
            name: name.into(),
            reply: Arc::new(reply),
            received: received.clone(),
        };
        let app = Router::new()
            .route("/", post(rpc))
            .route("/a2a", post(rpc))
            .route("/.well-known/agent.json", get(card))
            .route("/.well-known/agent-card.json", get(card))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(io("binding the agent's port"))?;
        let addr = listener
            .local_addr()
            .map_err(io("reading the agent's port"))?;
        let url = format!("http://{addr}");
        let serving = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });

        let platform = Client::new(platform_url)?.with_token(token);
        let register = Register {
            id: id.to_string(),
            url: url.clone(),
            agent_card: agent_card(name),
            delivery_mode: None,
        };
        let registered = match platform.register(&register).await {
            Ok(registered) => registered,
            Err(e) => {
                serving.abort();
                return Err(e.into());
            }
        };
        // A workspace registered without a token is handed one (reference §2.12); use it.
        let token = registered
            .auth_token
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| token.to_owned());
        let heartbeats = tokio::spawn(heartbeat(platform.with_token(token.clone()), id));
        Ok(Self {
            workspace_id: id,
            token,
            url,
            received,
            tasks: vec![serving, heartbeats],
        })
    }

    /// The workspace this agent serves.
    pub fn workspace_id(&self) -> WorkspaceId {
        self.workspace_id
    }

    /// The workspace's bearer token the agent uses.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The agent's own URL (`http://127.0.0.1:<port>`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The texts received so far, oldest first.
    pub fn received(&self) -> Vec<String> {
        self.received
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Heartbeats every [`HEARTBEAT_EVERY`] until the task is aborted; a failed beat is retried at
/// the next tick.
async fn heartbeat(platform: Client, id: WorkspaceId) {
    let started = tokio::time::Instant::now();
    loop {
        // Absent fields read as zero on the server, so the zeros here say nothing new.
        let beat = Heartbeat {
            workspace_id: id.to_string(),
            error_rate: 0.0,
            sample_error: String::new(),
            active_tasks: 0,
            uptime_seconds: i64::try_from(started.elapsed().as_secs()).unwrap_or(i64::MAX),
            current_task: String::new(),
            monthly_spend: 0,
            runtime_state: String::new(),
            runtime_metadata: Default::default(),
        };
        if let Err(e) = platform.heartbeat(&beat).await {
            tracing::warn!(error = %e, "berth-testkit: fake agent heartbeat failed");
        }
        tokio::time::sleep(HEARTBEAT_EVERY).await;
    }
}

fn agent_card(name: &str) -> Value {
    json!({
        "name": name,
        "description": "berth-testkit fake agent",
        "version": env!("CARGO_PKG_VERSION"),
        "skills": [{"id": "reply", "name": "Reply"}],
    })
}

async fn card(State(state): State<AgentState>) -> Json<Value> {
    Json(agent_card(&state.name))
}

/// JSON-RPC over HTTP: every answer is a 200 with a JSON-RPC body.
async fn rpc(State(state): State<AgentState>, body: axum::body::Bytes) -> Json<Value> {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return Json(rpc_error(Value::Null, -32700, "Parse error"));
    };
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    if request.get("method").and_then(Value::as_str) != Some("message/send") {
        return Json(rpc_error(id, -32601, "Method not found"));
    }
    let Some(message) = request.pointer("/params/message") else {
        return Json(rpc_error(
            id,
            -32602,
            "Invalid params: params.message is required",
        ));
    };
    let text: String = message
        .get("parts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect();
    state
        .received
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(text.clone());
    let answer = (state.reply)(&text);
    let mut result = json!({
        "kind": "message",
        "messageId": uuid::Uuid::new_v4().to_string(),
        "role": "agent",
        "parts": [{"kind": "text", "text": answer}],
    });
    if let (Some(ctx), Some(obj)) = (message.get("contextId"), result.as_object_mut()) {
        obj.insert("contextId".into(), ctx.clone());
    }
    Json(json!({"jsonrpc": "2.0", "id": id, "result": result}))
}

fn rpc_error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}
