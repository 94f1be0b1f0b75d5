#![doc = include_str!("../README.md")]

mod error;
pub mod events;
mod inside;
mod pages;
mod routes;
mod sse;
mod tls;
mod wait;

use std::time::Duration;

use berth_api::secrets::{SecretChanged, SecretEntry, SecretValues, SetSecret};
use berth_api::tokens::{MintedToken, TokenList};
use berth_api::workspaces::{
    CreateWorkspace, CreatedWorkspace, Deleted, Paused, RestartRequest, Restarted, Resumed,
    UpdateWorkspace, Updated, Workspace, WorkspaceStateBody,
};
use berth_api::{StatusResponse, events::Event};
use berth_domain::WorkspaceId;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

pub use berth_api;
pub use error::{Error, Result};
pub use events::StreamEvent;
pub use pages::Page;
pub use reqwest::{Method, StatusCode, Url};
pub use tls::install_tls_provider;

/// The default request timeout of [`Client`] (the event streams and A2A messages have none).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// A client of one berth server. Cheap to clone (clones share one connection pool).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: reqwest::Url,
    token: Option<String>,
    timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// The outcome of [`Client::create_workspace_with_key`].
#[derive(Debug, Clone, PartialEq)]
pub struct Created {
    /// The create's answer.
    pub workspace: CreatedWorkspace,
    /// Whether the server replayed the stored answer of an earlier create with the same
    /// `Idempotency-Key` (`Idempotent-Replayed: true`) instead of creating again.
    pub replayed: bool,
}

/// Options of [`Client::delete_workspace`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    /// `?confirm=true`: also delete the sub-workspaces (without it, a workspace with children
    /// is refused with 409 `confirmation_required`).
    pub confirm: bool,
    /// `?purge=true`: delete every row and backend resource instead of marking it removed.
    pub purge: bool,
}

impl Client {
    /// A client of the server at `base_url` (`http://…` or `https://…`; a path prefix is kept),
    /// without a credential.
    pub fn new(base_url: impl AsRef<str>) -> Result<Self> {
        let raw = base_url.as_ref().trim();
        let invalid = |reason: &str| Error::InvalidUrl {
            url: raw.to_owned(),
            reason: reason.to_owned(),
        };
        let mut base = reqwest::Url::parse(raw).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid("only http:// and https:// are supported"));
        }
        if base.host().is_none() {
            return Err(invalid("no host"));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(invalid("a server URL has no query or fragment"));
        }
        // Paths are joined onto the base: make it end with exactly one slash.
        let path = base.path().trim_end_matches('/').to_owned();
        base.set_path(&format!("{path}/"));
        let http = tls::http_client(&base).map_err(Error::Client)?;
        Ok(Self {
            http,
            base,
            token: None,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// The same client with `token` as its bearer credential (the admin token, or a
    /// workspace token for the routes a workspace may call).
    #[must_use]
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The same client with another timeout for ordinary requests (default
    /// [`DEFAULT_TIMEOUT`]); event streams and A2A messages are not bounded by it.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The server's base URL (ending in `/`).
    pub fn base_url(&self) -> &str {
        self.base.as_str()
    }

    // ---- transport -----------------------------------------------------------------------

    /// A request to `path` (absolute, like `/workspaces`), with the bearer when there is one.
    pub(crate) fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let url = format!(
            "{}{}",
            self.base.as_str().trim_end_matches('/'),
            if path.starts_with('/') {
                path.to_owned()
            } else {
                format!("/{path}")
            }
        );
        let mut req = self.http.request(method, url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        req
    }

    /// `resp` when its status is a success, else its [`Error::Api`].
    pub(crate) async fn check(resp: reqwest::Response) -> Result<reqwest::Response> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let bytes = resp.bytes().await.map_err(Error::Transport)?;
        Err(Error::api(status, &bytes))
    }

    /// Sends `req` and decodes a successful answer's JSON body as `T`.
    pub(crate) async fn send<T: DeserializeOwned>(
        &self,
        what: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<T> {
        let resp = req.send().await.map_err(Error::Transport)?;
        let resp = Self::check(resp).await?;
        let bytes = resp.bytes().await.map_err(Error::Transport)?;
        serde_json::from_slice(&bytes).map_err(|source| Error::Decode {
            what: what.to_owned(),
            source,
        })
    }

    /// `method path` with an optional JSON body, decoded as `T`, under the default timeout.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T> {
        let what = format!("{method} {path}");
        let mut req = self.request(method, path).timeout(self.timeout);
        if let Some(b) = body {
            req = req.json(b);
        }
        self.send(&what, req).await
    }

    /// Any route, for what this client has no method for: `method path` with an optional JSON
    /// body; the answer's JSON (`null` for an empty body).
    pub async fn raw(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value> {
        let mut req = self.request(method, path).timeout(self.timeout);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = Self::check(req.send().await.map_err(Error::Transport)?).await?;
        let bytes = resp.bytes().await.map_err(Error::Transport)?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|source| Error::Decode {
            what: path.to_owned(),
            source,
        })
    }

    // ---- system --------------------------------------------------------------------------

    /// `GET /health`: the server's health report (an [`Error::Api`] 503 while its database is
    /// down).
    pub async fn health(&self) -> Result<berth_api::system::Health> {
        self.call(reqwest::Method::GET, "/health", None::<&()>)
            .await
    }

    // ---- workspaces ----------------------------------------------------------------------

    /// `POST /workspaces` (admin).
    pub async fn create_workspace(&self, req: &CreateWorkspace) -> Result<CreatedWorkspace> {
        self.call(reqwest::Method::POST, "/workspaces", Some(req))
            .await
    }

    /// `POST /workspaces` with `Idempotency-Key: key` (admin): retrying with the same key and
    /// the same request returns the first answer (`replayed`) instead of creating again; the
    /// same key with another request is a 422 `IDEMPOTENCY_KEY_REUSED`.
    pub async fn create_workspace_with_key(
        &self,
        req: &CreateWorkspace,
        key: &str,
    ) -> Result<Created> {
        let resp = self
            .request(reqwest::Method::POST, "/workspaces")
            .timeout(self.timeout)
            .header("idempotency-key", key)
            .json(req)
            .send()
            .await
            .map_err(Error::Transport)?;
        let resp = Self::check(resp).await?;
        let replayed = resp
            .headers()
            .get("idempotent-replayed")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
        let bytes = resp.bytes().await.map_err(Error::Transport)?;
        let workspace = serde_json::from_slice(&bytes).map_err(|source| Error::Decode {
            what: "POST /workspaces".into(),
            source,
        })?;
        Ok(Created {
            workspace,
            replayed,
        })
    }

    /// `GET /workspaces` (admin): every workspace, in one answer.
    pub async fn list_workspaces(&self) -> Result<Vec<Workspace<'static>>> {
        self.call(reqwest::Method::GET, "/workspaces", None::<&()>)
            .await
    }

    /// `GET /workspaces/{id}` (open).
    pub async fn workspace(&self, id: WorkspaceId) -> Result<Workspace<'static>> {
        self.call(
            reqwest::Method::GET,
            &format!("/workspaces/{id}"),
            None::<&()>,
        )
        .await
    }

    /// `GET /workspaces/{id}/state`: status, paused, deleted. A deleted or removed workspace is
    /// an [`Error::Api`] 404 whose body says `"deleted": true`.
    pub async fn workspace_state(&self, id: WorkspaceId) -> Result<WorkspaceStateBody> {
        self.call(
            reqwest::Method::GET,
            &format!("/workspaces/{id}/state"),
            None::<&()>,
        )
        .await
    }

    /// `PATCH /workspaces/{id}`: name, role and layout; tier, runtime, parent, directory and
    /// budget with the admin token only.
    pub async fn update_workspace(
        &self,
        id: WorkspaceId,
        patch: &UpdateWorkspace,
    ) -> Result<Updated> {
        self.call(
            reqwest::Method::PATCH,
            &format!("/workspaces/{id}"),
            Some(patch),
        )
        .await
    }

    /// `DELETE /workspaces/{id}` (admin).
    pub async fn delete_workspace(&self, id: WorkspaceId, opts: DeleteOptions) -> Result<Deleted> {
        let mut path = format!("/workspaces/{id}");
        let mut sep = '?';
        for (on, q) in [(opts.confirm, "confirm=true"), (opts.purge, "purge=true")] {
            if on {
                path.push(sep);
                path.push_str(q);
                sep = '&';
            }
        }
        self.call(reqwest::Method::DELETE, &path, None::<&()>).await
    }

    /// `POST /workspaces/{id}/restart` (`template` restarts it from another template).
    pub async fn restart_workspace(
        &self,
        id: WorkspaceId,
        template: Option<&str>,
    ) -> Result<Restarted> {
        let body = RestartRequest {
            template: template.map(str::to_owned),
        };
        self.call(
            reqwest::Method::POST,
            &format!("/workspaces/{id}/restart"),
            Some(&body),
        )
        .await
    }

    /// `POST /workspaces/{id}/pause` (and its sub-workspaces).
    pub async fn pause_workspace(&self, id: WorkspaceId) -> Result<Paused> {
        self.call(
            reqwest::Method::POST,
            &format!("/workspaces/{id}/pause"),
            None::<&()>,
        )
        .await
    }

    /// `POST /workspaces/{id}/resume`.
    pub async fn resume_workspace(&self, id: WorkspaceId) -> Result<Resumed> {
        self.call(
            reqwest::Method::POST,
            &format!("/workspaces/{id}/resume"),
            None::<&()>,
        )
        .await
    }

    /// `POST /workspaces/{id}/hibernate` (`force`: even with active tasks).
    pub async fn hibernate_workspace(
        &self,
        id: WorkspaceId,
        force: bool,
    ) -> Result<StatusResponse> {
        let q = if force { "?force=true" } else { "" };
        self.call(
            reqwest::Method::POST,
            &format!("/workspaces/{id}/hibernate{q}"),
            None::<&()>,
        )
        .await
    }

    /// `POST /workspaces/{id}/wake`: provision a hibernated workspace again.
    pub async fn wake_workspace(&self, id: WorkspaceId) -> Result<StatusResponse> {
        self.call(
            reqwest::Method::POST,
            &format!("/workspaces/{id}/wake"),
            None::<&()>,
        )
        .await
    }

    // ---- tokens --------------------------------------------------------------------------

    /// `GET /workspaces/{id}/tokens`: the live tokens (id, prefix, dates; never a value).
    pub async fn list_tokens(&self, id: WorkspaceId) -> Result<TokenList> {
        self.call(
            reqwest::Method::GET,
            &format!("/workspaces/{id}/tokens"),
            None::<&()>,
        )
        .await
    }

    /// `POST /workspaces/{id}/tokens`: a new token; its value is in the answer only.
    pub async fn create_token(&self, id: WorkspaceId) -> Result<MintedToken> {
        self.call(
            reqwest::Method::POST,
            &format!("/workspaces/{id}/tokens"),
            None::<&()>,
        )
        .await
    }

    /// `DELETE /workspaces/{id}/tokens/{token_id}`.
    pub async fn revoke_token(
        &self,
        id: WorkspaceId,
        token_id: uuid::Uuid,
    ) -> Result<StatusResponse> {
        self.call(
            reqwest::Method::DELETE,
            &format!("/workspaces/{id}/tokens/{token_id}"),
            None::<&()>,
        )
        .await
    }

    // ---- secrets -------------------------------------------------------------------------

    /// `GET /workspaces/{id}/secrets`: keys and dates, never values.
    pub async fn list_secrets(&self, id: WorkspaceId) -> Result<Vec<SecretEntry>> {
        self.call(
            reqwest::Method::GET,
            &format!("/workspaces/{id}/secrets"),
            None::<&()>,
        )
        .await
    }

    /// `PUT /workspaces/{id}/secrets`: set (create or replace) one secret.
    pub async fn set_secret(
        &self,
        id: WorkspaceId,
        key: &str,
        value: &str,
    ) -> Result<SecretChanged> {
        let body = SetSecret {
            key: key.to_owned(),
            value: value.to_owned(),
        };
        self.call(
            reqwest::Method::PUT,
            &format!("/workspaces/{id}/secrets"),
            Some(&body),
        )
        .await
    }

    /// `DELETE /workspaces/{id}/secrets/{key}`.
    pub async fn delete_secret(&self, id: WorkspaceId, key: &str) -> Result<SecretChanged> {
        self.call(
            reqwest::Method::DELETE,
            &format!("/workspaces/{id}/secrets/{}", path_segment(key)),
            None::<&()>,
        )
        .await
    }

    /// `GET /workspaces/{id}/secrets/values`: the decrypted values (a workspace token of that
    /// workspace, or the admin token).
    pub async fn secret_values(&self, id: WorkspaceId) -> Result<SecretValues> {
        self.call(
            reqwest::Method::GET,
            &format!("/workspaces/{id}/secrets/values"),
            None::<&()>,
        )
        .await
    }

    /// `GET /admin/secrets`: the global secrets' keys (admin).
    pub async fn list_global_secrets(&self) -> Result<Vec<SecretEntry>> {
        self.call(reqwest::Method::GET, "/admin/secrets", None::<&()>)
            .await
    }

    /// `PUT /admin/secrets`: set one global secret (admin).
    pub async fn set_global_secret(&self, key: &str, value: &str) -> Result<SecretChanged> {
        let body = SetSecret {
            key: key.to_owned(),
            value: value.to_owned(),
        };
        self.call(reqwest::Method::PUT, "/admin/secrets", Some(&body))
            .await
    }

    /// `DELETE /admin/secrets/{key}` (admin).
    pub async fn delete_global_secret(&self, key: &str) -> Result<SecretChanged> {
        self.call(
            reqwest::Method::DELETE,
            &format!("/admin/secrets/{}", path_segment(key)),
            None::<&()>,
        )
        .await
    }

    // ---- templates -----------------------------------------------------------------------

    /// `GET /templates` (admin): the templates directory; a malformed template is an entry
    /// with `error` and `"code": "TEMPLATE_INVALID"`.
    pub async fn templates(&self) -> Result<Vec<berth_api::templates::TemplateListing>> {
        self.call(reqwest::Method::GET, "/templates", None::<&()>)
            .await
    }

    // ---- events --------------------------------------------------------------------------

    /// `GET /events` or `GET /events/{workspace}` (admin): without `after`, the newest events
    /// first; with `after`, the events after that sequence number, oldest first. `limit` is
    /// 1 to 1000 (the server's default is 100).
    pub async fn event_log(
        &self,
        workspace: Option<WorkspaceId>,
        after: Option<i64>,
        limit: Option<u32>,
    ) -> Result<Vec<Event>> {
        let mut path = match workspace {
            Some(id) => format!("/events/{id}"),
            None => "/events".to_owned(),
        };
        let mut sep = '?';
        if let Some(a) = after {
            path.push_str(&format!("{sep}after={a}"));
            sep = '&';
        }
        if let Some(l) = limit {
            path.push_str(&format!("{sep}limit={l}"));
        }
        self.call(reqwest::Method::GET, &path, None::<&()>).await
    }

    // ---- A2A -----------------------------------------------------------------------------

    /// `POST /workspaces/{id}/a2a` with a JSON-RPC request as is; the agent's JSON-RPC answer
    /// as is (free-form by design). Not bounded by the client's timeout (the server bounds an
    /// A2A call).
    pub async fn a2a(&self, id: WorkspaceId, request: &Value) -> Result<Value> {
        let req = self
            .request(reqwest::Method::POST, &format!("/workspaces/{id}/a2a"))
            .json(request);
        self.send("the A2A proxy", req).await
    }

    /// A2A `message/send` of one user text message to workspace `id`; the JSON-RPC `result`
    /// (the agent's reply message or task; [`reply_text`] reads its text). A JSON-RPC error
    /// answer is an [`Error::Rpc`].
    pub async fn send_message(&self, id: WorkspaceId, text: &str) -> Result<Value> {
        let request = json!({
            "jsonrpc": "2.0",
            "id": 1,
            "method": "message/send",
            "params": {"message": {
                "role": "user",
                "messageId": uuid::Uuid::new_v4().to_string(),
                "parts": [{"kind": "text", "text": text}],
            }},
        });
        let mut answer = self.a2a(id, &request).await?;
        if let Some(err) = answer.get("error") {
            return Err(Error::Rpc {
                code: err.get("code").and_then(Value::as_i64),
                message: err
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("JSON-RPC error")
                    .to_owned(),
                body: answer,
            });
        }
        Ok(answer
            .get_mut("result")
            .map(Value::take)
            .unwrap_or(Value::Null))
    }
}

/// The text of an A2A reply (the `result` of `message/send`): the text parts of a message, or
/// of a task's status message and artifacts, joined by newlines. `None` when it has none.
pub fn reply_text(result: &Value) -> Option<String> {
    fn texts<'a>(parts: Option<&'a Value>, out: &mut Vec<&'a str>) {
        for p in parts.and_then(Value::as_array).into_iter().flatten() {
            if let Some(t) = p.get("text").and_then(Value::as_str) {
                out.push(t);
            }
        }
    }
    let mut out = Vec::new();
    texts(result.get("parts"), &mut out);
    texts(result.pointer("/status/message/parts"), &mut out);
    for a in result
        .get("artifacts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        texts(a.get("parts"), &mut out);
    }
    (!out.is_empty()).then(|| out.join("\n"))
}

/// `s` percent-encoded as one path segment or query value.
pub(crate) fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_checked_and_normalised() {
        let c = Client::new("http://127.0.0.1:8080").unwrap();
        assert_eq!(c.base_url(), "http://127.0.0.1:8080/");
        let c = Client::new("https://berth.example/prefix//").unwrap();
        assert_eq!(c.base_url(), "https://berth.example/prefix/");
        for bad in ["127.0.0.1:8080", "ftp://x", "http://", "http://h/?q=1", ""] {
            assert!(
                matches!(Client::new(bad), Err(Error::InvalidUrl { .. })),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn the_token_never_shows_in_debug() {
        let c = Client::new("http://localhost")
            .unwrap()
            .with_token("s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn reply_text_reads_messages_and_tasks() {
        let msg = json!({"kind": "message", "parts": [{"kind": "text", "text": "echo: hi"}]});
        assert_eq!(reply_text(&msg).as_deref(), Some("echo: hi"));
        let task = json!({"kind": "task", "status": {"message": {"parts": [{"text": "a"}]}},
                          "artifacts": [{"parts": [{"kind": "text", "text": "b"}, {"kind": "file"}]}]});
        assert_eq!(reply_text(&task).as_deref(), Some("a\nb"));
        assert_eq!(reply_text(&json!({"kind": "task"})), None);
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(path_segment("API_KEY"), "API_KEY");
        assert_eq!(path_segment("a/b c"), "a%2Fb%20c");
    }
}
