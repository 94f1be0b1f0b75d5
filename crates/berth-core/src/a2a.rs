//! The A2A proxy behind `POST /workspaces/{id}/a2a` (REFERENCE-2.md §4): caller authorisation,
//! payload normalisation, poll delivery into the target's inbox, the mock runtime's canned
//! replies, and push delivery to the agent's URL with dead-agent detection.
//!
//! berth's changes to the reference (§9.4):
//! - every caller is authenticated by the HTTP layer ([`A2aCaller`]); there is no anonymous
//!   "canvas" outside `--dev`, and naming the target's own id bypasses nothing (#30);
//! - redirects are never followed, and a resolved host name is pinned to the addresses the SSRF
//!   check approved, so DNS cannot rebind between check and connect (#31);
//! - the upstream call is bounded by the configured timeout and by `X-Timeout` (#33); a timeout
//!   answers 504 instead of being mistaken for a busy agent (#34);
//! - bodies past the limits are refused, never silently truncated (#35);
//! - only `online`/`degraded` targets are dispatched to (#37); a hibernated one is woken (#38);
//! - normalisation keeps the caller's key order, numbers and escapes byte for byte (#46a).
//!
//! - a busy agent (the connection reset or closed without an answer) gets the message queued
//!   durably (§4.12, `queue.rs`); the queue is bounded per target (429 when full);
//! - a delivered message updates the caller's `last_outbound_at` and the target's token usage
//!   synchronously (§4.10 step 3, §4.14).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use berth_domain::WorkspaceId;
use berth_domain::event::EventType;
use berth_domain::runtime::is_external_like;
use berth_domain::ssrf::{UrlTarget, check_agent_url, check_resolved};
use berth_domain::status::WorkspaceStatus;
use berth_provision::BackendKind;
use berth_store::{NewEvent, Workspace};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::activity::{ActivityEntry, ActivityError};
use crate::service::WorkspaceService;

/// Limits of the proxy's upstream calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct A2aSettings {
    /// Ceiling of one upstream call, from connect to the last body byte (the reference's
    /// 30-minute ceiling, here applied to every caller). `X-Timeout` can only lower it.
    pub request_timeout: Duration,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Largest agent response relayed.
    pub max_response_bytes: usize,
    /// Pending (queued or in-flight) busy-queue items one target may have; more answer 429.
    pub queue_max_per_target: i64,
    /// Delivery attempts of a queued item that fail for another reason than a busy agent
    /// before it is marked `failed`.
    pub queue_max_attempts: i64,
}

impl Default for A2aSettings {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30 * 60),
            connect_timeout: Duration::from_secs(10),
            max_response_bytes: 10 * 1024 * 1024,
            queue_max_per_target: 100,
            queue_max_attempts: 5,
        }
    }
}

/// Who sends an A2A message, as the HTTP layer authenticated it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum A2aCaller {
    /// The admin credential (the canvas / the user): not subject to the hierarchy rule.
    /// `on_behalf_of` (the `X-Workspace-ID` header) is recorded as the sender.
    User {
        /// The workspace the user acts for, if named.
        on_behalf_of: Option<WorkspaceId>,
    },
    /// A live token of this workspace.
    Workspace(WorkspaceId),
    /// No credential, in `--dev` mode only: the claimed `X-Workspace-ID` (if any) is believed
    /// only while that workspace has no live token.
    Dev {
        /// The claimed caller.
        claimed: Option<WorkspaceId>,
    },
}

/// A successful proxy answer.
#[derive(Debug, Clone, PartialEq)]
pub enum A2aReply {
    /// The agent's 2xx answer, relayed as is.
    Delivered {
        /// Upstream status.
        status: u16,
        /// Upstream body (valid JSON).
        body: Vec<u8>,
    },
    /// Poll mode: the message waits in the target's inbox.
    Queued {
        /// The normalised method.
        method: String,
    },
    /// The agent was busy: the message waits in the target's queue (§4.9 step 2).
    BusyQueued {
        /// The queue item.
        queue_id: Uuid,
        /// Queued items of the target.
        queue_depth: i64,
    },
    /// The agent answered ≥ 400 (and is not dead): its status and error text.
    AgentError {
        /// Upstream status.
        status: u16,
        /// The agent's `error` string, else the status's reason phrase.
        error: String,
    },
}

/// Why the proxy refused or failed (each maps to one row of REFERENCE-2.md §4.15).
#[derive(Debug, thiserror::Error)]
pub enum A2aError {
    /// `X-Workspace-ID` is not a workspace id (or a reserved prefix).
    #[error("invalid caller ID")]
    InvalidCallerId,
    /// The claimed caller has tokens but none was presented.
    #[error("missing caller auth token")]
    MissingCallerToken,
    /// The hierarchy rule denies it.
    #[error("access denied: workspaces cannot communicate per hierarchy rules")]
    Forbidden,
    /// No such (live) target.
    #[error("workspace not found")]
    NotFound,
    /// The target spent its budget.
    #[error("workspace budget limit exceeded")]
    BudgetExceeded,
    /// The body is not a JSON object.
    #[error("invalid JSON")]
    InvalidJson,
    /// `params.message.content` is neither a string nor an array.
    #[error("invalid params.message.content type")]
    InvalidContentType,
    /// `params.message` has neither `parts` nor `content`.
    #[error("params.message must contain either 'parts' (v0.3) or 'content' (v0.2 compat)")]
    MissingParts,
    /// The target is hibernated (a wake was requested) or hibernating.
    #[error("workspace is waking from hibernation")]
    Waking,
    /// The target has no agent URL.
    #[error("workspace has no URL")]
    NoUrl {
        /// Its status.
        status: WorkspaceStatus,
    },
    /// The target is not online.
    #[error("workspace not available")]
    NotAvailable {
        /// Its status.
        status: WorkspaceStatus,
    },
    /// The agent URL fails the SSRF policy.
    #[error("workspace URL is not publicly routable")]
    UnsafeUrl,
    /// The HTTP client could not be built.
    #[error("failed to create proxy request")]
    RequestBuild,
    /// The agent is unreachable and its compute is gone; a restart was requested.
    #[error("workspace agent unreachable — container restart triggered")]
    Restarting {
        /// The agent did answer, with a gateway-style status.
        after_response: bool,
    },
    /// The upstream call hit its deadline.
    #[error("workspace agent did not answer in time")]
    Timeout {
        /// The deadline, in seconds.
        seconds: u64,
    },
    /// The connection broke mid-call (reset / EOF): the agent is probably busy.
    #[error("workspace agent busy — retry after a short backoff")]
    Busy,
    /// The agent is busy and its queue is full.
    #[error("workspace agent busy and its queue is full — retry after a short backoff")]
    QueueFull {
        /// Pending items of the target.
        pending: i64,
    },
    /// No such queue item (or not the caller's).
    #[error("queue item not found")]
    QueueItemNotFound,
    /// Any other transport failure.
    #[error("failed to reach workspace agent")]
    Unreachable,
    /// The agent answered with a redirect (never followed).
    #[error("workspace agent answered with a redirect; redirects are not followed")]
    Redirected {
        /// Upstream status.
        status: u16,
    },
    /// The agent answered 2xx with an empty body.
    #[error("agent returned empty response body")]
    EmptyBody {
        /// Upstream status.
        status: u16,
    },
    /// The agent's 2xx body is not JSON.
    #[error("agent returned invalid JSON")]
    InvalidResponse,
    /// The agent's body exceeds the limit.
    #[error("agent response too large")]
    ResponseTooLarge,
    /// Reading the agent's body failed.
    #[error("failed to read agent response")]
    ReadFailed {
        /// Upstream status.
        status: u16,
        /// Upstream status was 2xx/3xx (the agent got the message).
        delivery_confirmed: bool,
    },
    /// The store failed.
    #[error("{context}")]
    Store {
        /// The public message.
        context: &'static str,
        /// The cause (logged, never sent).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

fn store_err<E: std::error::Error + Send + Sync + 'static>(
    context: &'static str,
) -> impl FnOnce(E) -> A2aError {
    move |e| A2aError::Store {
        context,
        source: Box::new(e),
    }
}

/// Caller ids the reference reserves for in-process callers; refused from the network.
const RESERVED_CALLER_PREFIXES: [&str; 4] = ["webhook:", "system:", "test:", "channel:"];

/// Parses an `X-Workspace-ID` header value: a workspace id, else [`A2aError::InvalidCallerId`].
pub fn parse_caller_header(raw: &str) -> Result<WorkspaceId, A2aError> {
    let raw = raw.trim();
    if RESERVED_CALLER_PREFIXES.iter().any(|p| raw.starts_with(p)) {
        return Err(A2aError::InvalidCallerId);
    }
    WorkspaceId::parse(raw).map_err(|_| A2aError::InvalidCallerId)
}

// ---- Normalisation (§4.3) ---------------------------------------------------------------

/// A JSON object as its members in document order, each value kept as its raw text.
struct Members(Vec<(String, Box<RawValue>)>);

impl<'de> serde::Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Box<RawValue>>()? {
                    // A repeated key: the last one wins, as in every JSON tree.
                    out.retain(|(seen, _): &(String, Box<RawValue>)| *seen != k);
                    out.push((k, v));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl Members {
    fn parse(raw: &str) -> Option<Self> {
        serde_json::from_str(raw).ok()
    }

    fn get(&self, key: &str) -> Option<&RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| &**v)
    }

    fn set(&mut self, key: &str, value: Box<RawValue>) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key.to_owned(), value)),
        }
    }

    fn to_raw(&self) -> Box<RawValue> {
        let mut s = String::from("{");
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&serde_json::to_string(k).unwrap_or_default());
            s.push(':');
            s.push_str(v.get());
        }
        s.push('}');
        raw(s)
    }
}

fn raw(s: String) -> Box<RawValue> {
    RawValue::from_string(s).unwrap_or_else(|_| raw_null())
}

fn raw_null() -> Box<RawValue> {
    RawValue::from_string("null".into()).expect("null is JSON")
}

fn raw_json(v: &Value) -> Box<RawValue> {
    raw(v.to_string())
}

/// A normalised JSON-RPC payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalized {
    /// The bytes forwarded to the agent.
    pub bytes: Vec<u8>,
    /// Top-level `method` when it is a string, else `""`.
    pub method: String,
    /// Top-level `id` as text (a string, or a number's digits), if present.
    pub request_id: Option<String>,
}

/// REFERENCE-2.md §4.3: a bare message is wrapped into a JSON-RPC 2.0 envelope (keeping only
/// `method` and `params`, as the reference does) and `params.message` gets a `messageId` and
/// v0.3 `parts`. Everything else keeps its bytes and order.
pub fn normalize(body: &[u8]) -> Result<Normalized, A2aError> {
    let text = std::str::from_utf8(body).map_err(|_| A2aError::InvalidJson)?;
    let mut top = Members::parse(text).ok_or(A2aError::InvalidJson)?;
    if top.get("jsonrpc").is_none() {
        let method = top.get("method").map_or_else(raw_null, RawValue::to_owned);
        let params = top.get("params").map_or_else(raw_null, RawValue::to_owned);
        top = Members(vec![
            ("jsonrpc".into(), raw_json(&json!("2.0"))),
            ("id".into(), raw_json(&json!(Uuid::new_v4()))),
            ("method".into(), method),
            ("params".into(), params),
        ]);
    }
    if let Some(mut params) = top.get("params").and_then(|p| Members::parse(p.get()))
        && let Some(mut message) = params.get("message").and_then(|m| Members::parse(m.get()))
    {
        if message.get("messageId").is_none() {
            message.set("messageId", raw_json(&json!(Uuid::new_v4())));
        }
        if message.get("parts").is_none() {
            let pos = message
                .0
                .iter()
                .position(|(k, _)| k == "content")
                .ok_or(A2aError::MissingParts)?;
            let content: Value =
                serde_json::from_str(message.0[pos].1.get()).map_err(|_| A2aError::InvalidJson)?;
            let parts = match content {
                Value::String(_) => raw(format!(
                    "[{{\"kind\":\"text\",\"text\":{}}}]",
                    message.0[pos].1.get()
                )),
                Value::Array(_) => message.0[pos].1.clone(),
                _ => return Err(A2aError::InvalidContentType),
            };
            message.0[pos] = ("parts".into(), parts);
        }
        params.set("message", message.to_raw());
        top.set("params", params.to_raw());
    }
    let value = |key: &str| {
        top.get(key)
            .and_then(|r| serde_json::from_str::<Value>(r.get()).ok())
    };
    let method = value("method")
        .and_then(|m| m.as_str().map(str::to_owned))
        .unwrap_or_default();
    Ok(Normalized {
        bytes: top.to_raw().get().as_bytes().to_vec(),
        method,
        request_id: top.get("id").and_then(id_text),
    })
}

/// The `id` of an already normalised payload (a queued item's body), as [`Normalized::request_id`].
pub(crate) fn request_id(normalized: &str) -> Option<String> {
    Members::parse(normalized)?.get("id").and_then(id_text)
}

/// A JSON-RPC `id` as text: a string's contents, or a number's digits as written.
fn id_text(raw: &RawValue) -> Option<String> {
    match serde_json::from_str::<Value>(raw.get()).ok()? {
        Value::String(s) => Some(s),
        Value::Number(_) => Some(raw.get().to_owned()),
        _ => None,
    }
}

/// The mock runtime's acknowledgements (§4.5).
const MOCK_REPLIES: [&str; 10] = [
    "On it!",
    "Got it — working on it.",
    "Acknowledged.",
    "Sure, give me a moment.",
    "Received, thanks!",
    "Understood.",
    "Will do.",
    "Looking into it now.",
    "Thanks — on my way.",
    "Noted!",
];

/// The mock runtime's canned JSON-RPC reply: deterministic per workspace and request id.
pub fn mock_reply(workspace: WorkspaceId, request_id: &str) -> Vec<u8> {
    let digest = Sha256::digest(format!("{workspace}:{request_id}").as_bytes());
    let n = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) as usize;
    let text = MOCK_REPLIES[n % MOCK_REPLIES.len()];
    json!({"jsonrpc": "2.0", "id": request_id, "result": {"parts": [{"kind": "text", "text": text}]}})
        .to_string()
        .into_bytes()
}

/// Statuses that suggest the agent's compute is gone (§4.10 step 4).
fn gateway_status(status: u16) -> bool {
    matches!(status, 502 | 503 | 504 | 521..=524)
}

/// The error text of a transport failure, with its causes and without the URL (which may carry
/// credentials and is on the row anyway).
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(&format!(" for url ({url})"), "");
        text = text.replace(url.as_str(), "<agent url>");
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// What one upstream call produced.
enum Forward {
    Response {
        status: u16,
        body: Result<Vec<u8>, A2aError>,
    },
    Failed(reqwest::Error),
    TimedOut,
}

/// Everything the rows of one proxied call share.
pub(crate) struct Call<'a> {
    pub(crate) target: &'a Workspace,
    pub(crate) source: Option<Uuid>,
    pub(crate) method: String,
    pub(crate) request: Option<Value>,
    /// The normalised payload, as forwarded (and queued).
    pub(crate) bytes: String,
    /// The call delivers a queued item: a busy agent puts it back instead of queueing again.
    pub(crate) from_queue: bool,
}

impl WorkspaceService {
    /// Replaces the proxy's limits.
    pub fn with_a2a_settings(mut self, settings: A2aSettings) -> Self {
        self.a2a = settings;
        self
    }

    /// `POST /workspaces/{target}/a2a`. The work runs on its own task, so a client that goes
    /// away does not cut a delivery (and its activity rows) in half. `timeout` (`X-Timeout`)
    /// can only shorten the configured ceiling.
    pub async fn proxy_a2a(
        &self,
        target: WorkspaceId,
        caller: A2aCaller,
        body: Vec<u8>,
        timeout: Option<Duration>,
    ) -> Result<A2aReply, A2aError> {
        let svc = self.clone();
        tokio::spawn(async move { svc.proxy_a2a_inner(target, caller, body, timeout).await })
            .await
            .map_err(store_err("proxy task failed"))?
    }

    #[tracing::instrument(skip_all, fields(workspace.id = %target))]
    async fn proxy_a2a_inner(
        &self,
        target: WorkspaceId,
        caller: A2aCaller,
        body: Vec<u8>,
        timeout: Option<Duration>,
    ) -> Result<A2aReply, A2aError> {
        let source = self.authorize_a2a(target, caller).await?;
        let row = match self
            .store
            .get_workspace(target)
            .await
            .map_err(store_err("lookup failed"))?
        {
            Some(w) if w.status != WorkspaceStatus::Removed => w,
            _ => return Err(A2aError::NotFound),
        };
        if let Some(limit) = row.budget_limit
            && row.monthly_spend >= limit
        {
            return Err(A2aError::BudgetExceeded);
        }
        let normalized = normalize(&body)?;
        let call = Call {
            target: &row,
            source: source.map(Uuid::from),
            method: normalized.method.clone(),
            request: serde_json::from_slice(&normalized.bytes).ok(),
            bytes: String::from_utf8_lossy(&normalized.bytes).into_owned(),
            from_queue: false,
        };
        if row.delivery_mode == "poll" {
            return self.deliver_poll(&call).await;
        }
        if row.runtime == "mock" {
            let id = normalized
                .request_id
                .clone()
                .unwrap_or_else(|| Uuid::new_v4().to_string());
            let reply = mock_reply(target, &id);
            self.success_row(&call, 200, &reply, 0).await;
            if let Some(caller) = call.source {
                self.touch_outbound(caller).await;
            }
            return Ok(A2aReply::Delivered {
                status: 200,
                body: reply,
            });
        }
        match row.status {
            WorkspaceStatus::Hibernated => {
                if let Err(e) = self.wake(target).await {
                    tracing::warn!(error = %e, "a2a: wake of hibernated target failed");
                }
                return Err(A2aError::Waking);
            }
            WorkspaceStatus::Hibernating => return Err(A2aError::Waking),
            _ => {}
        }
        let url = row.url.clone().filter(|u| !u.is_empty());
        let Some(url) = url else {
            return Err(A2aError::NoUrl { status: row.status });
        };
        if !matches!(
            row.status,
            WorkspaceStatus::Online | WorkspaceStatus::Degraded
        ) {
            return Err(A2aError::NotAvailable { status: row.status });
        }
        self.deliver_push(&call, &url, normalized.bytes, timeout)
            .await
    }

    /// Caller rules (§4.2 without the reference's open paths). Returns the sender to record.
    async fn authorize_a2a(
        &self,
        target: WorkspaceId,
        caller: A2aCaller,
    ) -> Result<Option<WorkspaceId>, A2aError> {
        let workspace = match caller {
            A2aCaller::User { on_behalf_of } => return Ok(on_behalf_of),
            A2aCaller::Workspace(w) => w,
            A2aCaller::Dev { claimed: None } => return Ok(None),
            A2aCaller::Dev { claimed: Some(w) } => {
                if self
                    .store
                    .has_live_token(w)
                    .await
                    .map_err(store_err("auth check failed"))?
                {
                    return Err(A2aError::MissingCallerToken);
                }
                w
            }
        };
        let allowed = self
            .can_communicate(workspace, target)
            .await
            .map_err(store_err("access check failed"))?;
        if allowed {
            Ok(Some(workspace))
        } else {
            Err(A2aError::Forbidden)
        }
    }

    /// Poll mode (§4.4): the inbox row is the delivery, so failing to write it fails the call.
    pub(crate) async fn deliver_poll(&self, call: &Call<'_>) -> Result<A2aReply, A2aError> {
        let entry = ActivityEntry {
            activity_type: "a2a_receive".into(),
            source_id: call.source,
            target_id: Some(call.target.id.into()),
            method: Some(call.method.clone()),
            summary: Some(format!(
                "{} → {} (queued for poll)",
                call.method, call.target.name
            )),
            request_body: call.request.clone(),
            status: "ok".into(),
            ..ActivityEntry::default()
        };
        self.log_activity(call.target.id, entry, Vec::new())
            .await
            .map_err(|e| match e {
                ActivityError::WorkspaceNotFound => A2aError::NotFound,
                other => A2aError::Store {
                    context: "failed to queue message",
                    source: Box::new(other),
                },
            })?;
        Ok(A2aReply::Queued {
            method: call.method.clone(),
        })
    }

    /// Resolves and checks the URL, then builds a client pinned to the approved addresses that
    /// never follows redirects and never uses a proxy. A URL that berth's own provisioner
    /// reported (`trusted`) is used as reported: the platform set that address up itself (a
    /// loopback port of the process backend, a published port or bridge address on Docker), so
    /// the SSRF policy, meant for addresses users and agents hand us, does not apply to it.
    async fn a2a_client(&self, url: &str, trusted: bool) -> Result<reqwest::Client, A2aError> {
        let mut builder = berth_provision::client_builder_for(url)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(self.a2a.connect_timeout);
        if trusted {
            return builder.build().map_err(|_| A2aError::RequestBuild);
        }
        match check_agent_url(&self.config.ssrf, url).map_err(|_| A2aError::UnsafeUrl)? {
            UrlTarget::Safe => {}
            UrlTarget::Resolve { host } => {
                let ips = self
                    .resolver
                    .resolve(&host)
                    .await
                    .map_err(|_| A2aError::UnsafeUrl)?;
                check_resolved(&self.config.ssrf, &host, &ips).map_err(|_| A2aError::UnsafeUrl)?;
                let port = reqwest::Url::parse(url)
                    .ok()
                    .and_then(|u| u.port_or_known_default())
                    .ok_or(A2aError::UnsafeUrl)?;
                let addrs: Vec<SocketAddr> =
                    ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
                builder = builder.resolve_to_addrs(&host, &addrs);
            }
        }
        builder.build().map_err(|_| A2aError::RequestBuild)
    }

    /// Push mode (§4.6–4.10).
    pub(crate) async fn deliver_push(
        &self,
        call: &Call<'_>,
        url: &str,
        body: Vec<u8>,
        timeout: Option<Duration>,
    ) -> Result<A2aReply, A2aError> {
        // Trusted only when dispatching to the very URL the row's provisioner recorded.
        let trusted = call.target.url_from_provisioner && call.target.url.as_deref() == Some(url);
        let client = self.a2a_client(url, trusted).await?;
        let limit = timeout.map_or(self.a2a.request_timeout, |t| {
            t.min(self.a2a.request_timeout)
        });
        let max = self.a2a.max_response_bytes;
        let started = Instant::now();
        let request = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        let forward = tokio::time::timeout(limit, async move {
            match request.send().await {
                Err(e) => Forward::Failed(e),
                Ok(mut resp) => {
                    let status = resp.status().as_u16();
                    let mut buf = Vec::new();
                    let body = loop {
                        match resp.chunk().await {
                            Ok(Some(chunk)) => {
                                if buf.len() + chunk.len() > max {
                                    break Err(A2aError::ResponseTooLarge);
                                }
                                buf.extend_from_slice(&chunk);
                            }
                            Ok(None) => break Ok(buf),
                            Err(_) => {
                                break Err(A2aError::ReadFailed {
                                    status,
                                    delivery_confirmed: (200..400).contains(&status),
                                });
                            }
                        }
                    };
                    Forward::Response { status, body }
                }
            }
        })
        .await
        .unwrap_or(Forward::TimedOut);
        let duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        match forward {
            Forward::TimedOut => {
                let seconds = limit.as_secs();
                self.failure_row(call, &format!("no answer within {seconds} s"), duration_ms)
                    .await;
                Err(A2aError::Timeout { seconds })
            }
            Forward::Failed(e) => {
                let text = describe(&e);
                if e.is_connect() && self.compute_dead(call.target).await {
                    self.failure_row(call, &text, duration_ms).await;
                    self.request_restart(call.target.id).await;
                    return Err(A2aError::Restarting {
                        after_response: false,
                    });
                }
                let lower = text.to_ascii_lowercase();
                if lower.contains("connection reset")
                    || lower.contains("eof")
                    || lower.contains("connection closed")
                    || lower.contains("incomplete message")
                {
                    if call.from_queue {
                        // The drain puts the item back in place; no row for a retry.
                        return Err(A2aError::Busy);
                    }
                    return self.queue_busy(call, &text, duration_ms).await;
                }
                self.failure_row(call, &text, duration_ms).await;
                Err(A2aError::Unreachable)
            }
            Forward::Response { status, body } => {
                let body = match body {
                    Ok(b) => b,
                    Err(e) => {
                        self.failure_row(call, &e.to_string(), duration_ms).await;
                        return Err(e);
                    }
                };
                if (300..400).contains(&status) {
                    self.failure_row(
                        call,
                        &format!("agent answered {status} (redirect not followed)"),
                        duration_ms,
                    )
                    .await;
                    return Err(A2aError::Redirected { status });
                }
                if status >= 400 {
                    self.success_row(call, status, &body, duration_ms).await;
                    self.record_usage(call, &body).await;
                    if gateway_status(status) && self.compute_dead(call.target).await {
                        self.request_restart(call.target.id).await;
                        return Err(A2aError::Restarting {
                            after_response: true,
                        });
                    }
                    let error = serde_json::from_slice::<Value>(&body)
                        .ok()
                        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
                        .unwrap_or_else(|| {
                            reqwest::StatusCode::from_u16(status)
                                .ok()
                                .and_then(|s| s.canonical_reason())
                                .unwrap_or_default()
                                .to_owned()
                        });
                    return Ok(A2aReply::AgentError { status, error });
                }
                if body.is_empty() {
                    return Err(A2aError::EmptyBody { status });
                }
                if serde_json::from_slice::<&RawValue>(&body).is_err() {
                    self.failure_row(call, "agent returned invalid JSON", duration_ms)
                        .await;
                    return Err(A2aError::InvalidResponse);
                }
                self.success_row(call, status, &body, duration_ms).await;
                self.record_usage(call, &body).await;
                if let Some(caller) = call.source {
                    self.touch_outbound(caller).await;
                }
                Ok(A2aReply::Delivered { status, body })
            }
        }
    }

    /// Whether the target's compute is definitely gone: the provisioner says "not running"
    /// (errors and external-like runtimes count as alive; so does a restart already in flight).
    async fn compute_dead(&self, target: &Workspace) -> bool {
        if is_external_like(&target.runtime) || self.provisioner.kind() == BackendKind::None {
            return false;
        }
        if self.restarts.lock().await.contains_key(&target.id) {
            return false;
        }
        matches!(self.provisioner.is_running(target.id).await, Ok(false))
    }

    /// The success row (§4.11) and, for a user's call that the agent accepted, `A2A_RESPONSE`.
    pub(crate) async fn success_row(
        &self,
        call: &Call<'_>,
        status: u16,
        body: &[u8],
        duration_ms: i64,
    ) {
        let response: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let tool_trace = response
            .pointer("/result/metadata/tool_trace")
            .filter(|t| !t.is_null() && t.as_array().is_none_or(|a| !a.is_empty()))
            .cloned();
        let mut extra = Vec::new();
        if call.source.is_none() && status < 400 {
            extra.push(NewEvent {
                event_type: EventType::A2aResponse,
                payload: json!({
                    "response_body": response,
                    "method": call.method,
                    "duration_ms": duration_ms,
                }),
            });
        }
        let entry = ActivityEntry {
            activity_type: "a2a_receive".into(),
            source_id: call.source,
            target_id: Some(call.target.id.into()),
            method: Some(call.method.clone()),
            summary: Some(format!("{} → {}", call.method, call.target.name)),
            request_body: call.request.clone(),
            response_body: Some(response),
            tool_trace,
            duration_ms: Some(duration_ms),
            status: if status < 400 { "ok" } else { "error" }.into(),
            error_detail: None,
        };
        self.write_row(call.target.id, entry, extra).await;
    }

    /// The failure row (§4.11).
    pub(crate) async fn failure_row(&self, call: &Call<'_>, error: &str, duration_ms: i64) {
        let entry = ActivityEntry {
            activity_type: "a2a_receive".into(),
            source_id: call.source,
            target_id: Some(call.target.id.into()),
            method: Some(call.method.clone()),
            summary: Some(format!(
                "A2A request to {} failed: {error}",
                call.target.name
            )),
            request_body: call.request.clone(),
            duration_ms: Some(duration_ms),
            status: "error".into(),
            error_detail: Some(error.to_owned()),
            ..ActivityEntry::default()
        };
        self.write_row(call.target.id, entry, Vec::new()).await;
    }

    /// Writes a proxy row. The delivery already happened, so a failed write is logged, not
    /// turned into a failed call.
    pub(crate) async fn write_row(
        &self,
        target: WorkspaceId,
        entry: ActivityEntry,
        extra: Vec<NewEvent>,
    ) {
        if let Err(e) = self.log_activity(target, entry, extra).await {
            tracing::error!(error = %e, source = ?std::error::Error::source(&e), "a2a: activity row not written");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> Result<(Value, String), A2aError> {
        let n = normalize(s.as_bytes())?;
        Ok((
            serde_json::from_slice(&n.bytes).expect("valid JSON"),
            String::from_utf8(n.bytes).expect("utf-8"),
        ))
    }

    #[test]
    fn envelopes_keep_order_numbers_and_escapes() {
        let input = r#"{"jsonrpc":"2.0","id":12345678901234567890,"method":"message/send","params":{"z":1,"message":{"role":"user","parts":[{"kind":"text","text":"<a&b>"}],"messageId":"m1"},"a":1.0}}"#;
        let n = normalize(input.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(n.bytes).unwrap(), input);
        assert_eq!(n.method, "message/send");
        assert_eq!(n.request_id.as_deref(), Some("12345678901234567890"));
        // A queued item's body gives the same id back.
        assert_eq!(request_id(input), n.request_id);
        assert_eq!(
            request_id(r#"{"jsonrpc":"2.0","id":"abc"}"#).as_deref(),
            Some("abc")
        );
        assert_eq!(request_id(r#"{"jsonrpc":"2.0","id":null}"#), None);
    }

    #[test]
    fn bare_messages_are_wrapped_and_content_becomes_parts() {
        let (v, text) =
            norm(r#"{"id":"mine","method":"message/send","params":{"message":{"role":"user","content":"hi"}},"extra":1}"#)
                .unwrap();
        assert_eq!(v["jsonrpc"], "2.0");
        assert_ne!(v["id"], "mine");
        assert!(v.get("extra").is_none());
        assert_eq!(
            v["params"]["message"]["parts"],
            json!([{"kind": "text", "text": "hi"}])
        );
        assert!(v["params"]["message"].get("content").is_none());
        assert!(v["params"]["message"]["messageId"].is_string());
        assert!(text.starts_with(r#"{"jsonrpc":"2.0","id":"#), "{text}");
        assert!(text.contains(r#"{"role":"user","parts":"#), "{text}");
        let (v, _) = norm(r#"{"jsonrpc":"2.0","method":"m","params":{"message":{"content":[{"kind":"text","text":"x"}]}}}"#).unwrap();
        assert_eq!(v["params"]["message"]["parts"][0]["text"], "x");
        // Payloads without params.message pass unchanged.
        let input = r#"{"jsonrpc":"2.0","method":"tasks/get","params":{"id":"t"}}"#;
        assert_eq!(norm(input).unwrap().1, input);
        let (v, _) = norm("{}").unwrap();
        assert_eq!(v["method"], Value::Null);
    }

    #[test]
    fn malformed_payloads_are_refused() {
        for bad in ["[]", "\"x\"", "not json", "{", "1"] {
            assert!(
                matches!(normalize(bad.as_bytes()), Err(A2aError::InvalidJson)),
                "{bad}"
            );
        }
        assert!(matches!(
            normalize(br#"{"params":{"message":{"content":5}}}"#),
            Err(A2aError::InvalidContentType)
        ));
        assert!(matches!(
            normalize(br#"{"params":{"message":{"role":"user"}}}"#),
            Err(A2aError::MissingParts)
        ));
    }

    #[test]
    fn caller_headers_must_be_workspace_ids() {
        for bad in [
            "webhook:github",
            "system:restart-context",
            "test:x",
            "channel:slack",
            "nope",
        ] {
            assert!(
                matches!(parse_caller_header(bad), Err(A2aError::InvalidCallerId)),
                "{bad}"
            );
        }
        let id = WorkspaceId::new_v4();
        assert_eq!(parse_caller_header(&id.to_string()).unwrap(), id);
    }

    #[test]
    fn mock_replies_are_deterministic() {
        let ws = WorkspaceId::new_v4();
        assert_eq!(mock_reply(ws, "1"), mock_reply(ws, "1"));
        let v: Value = serde_json::from_slice(&mock_reply(ws, "1")).unwrap();
        assert_eq!(v["id"], "1");
        assert!(MOCK_REPLIES.contains(&v["result"]["parts"][0]["text"].as_str().unwrap()));
    }
}
