//! The rest of the API: workspace settings (abilities, budget, config, model, provider,
//! display, console), external credentials, the registry an agent calls, activity, notify,
//! broadcast, session search, bundles, the canvas viewport, the A2A queue, templates import,
//! secret re-encryption and the system routes. Every route of `openapi.json` has a method here
//! or in `lib.rs`, except `GET /ws` (see [`crate::events`] for why the client polls instead) and
//! the alias `/settings/secrets` of `/admin/secrets`.

use berth_api::StatusResponse;
use berth_api::a2a::{DropStaleQuery, Dropped, QueueItem, QueueListQuery};
use berth_api::activity::{
    ActivityEntry, ActivityQuery, Broadcast, BroadcastSent, LogActivity, Notify, SessionSearchItem,
    SessionSearchQuery,
};
use berth_api::registry::{
    AccessDecision, CheckAccess, Discovered, Heartbeat, HeartbeatAck, Peer, Register, Registered,
    UpdateCard,
};
use berth_api::secrets::{
    ModelBody, ProviderBody, ReencryptReport, RotateSecrets, SetModel, SetProvider, SettingSaved,
};
use berth_api::system::{BuildInfo, Display, Liveness, Pools, Viewport, ViewportPatch};
use berth_api::templates::{ImportTemplate, ImportedTemplate};
use berth_api::tokens::{ConnectionBody, MintedToken, TokenList};
use berth_api::workspaces::{
    Abilities, BootstrapFailed, BootstrapFailedAck, Budget, BudgetPatch, ConfigBody, Console,
};
use berth_domain::WorkspaceId;
use reqwest::Method;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::{Client, Error, Result, path_segment};

/// `?k=v&…` of a query type of `berth-api` (its `None` fields left out); `""` when empty.
pub(crate) fn query_string(query: &impl Serialize) -> String {
    let Ok(Value::Object(fields)) = serde_json::to_value(query) else {
        return String::new();
    };
    let pairs: Vec<String> = fields
        .iter()
        .filter_map(|(k, v)| {
            let v = match v {
                Value::Null => return None,
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            Some(format!("{}={}", path_segment(k), path_segment(&v)))
        })
        .collect();
    if pairs.is_empty() {
        String::new()
    } else {
        format!("?{}", pairs.join("&"))
    }
}

impl Client {
    // ---- system --------------------------------------------------------------------------

    /// `GET /buildinfo`.
    pub async fn build_info(&self) -> Result<BuildInfo> {
        self.call(Method::GET, "/buildinfo", None::<&()>).await
    }

    /// `GET /admin/liveness` (admin): whether the background loops are ticking.
    pub async fn liveness(&self) -> Result<Liveness> {
        self.call(Method::GET, "/admin/liveness", None::<&()>).await
    }

    /// `GET /admin/pools` (admin): the warm pools, their members and claims.
    pub async fn pools(&self) -> Result<Pools> {
        self.call(Method::GET, "/admin/pools", None::<&()>).await
    }

    /// `GET /metrics` (admin, unless the server opens it): the Prometheus text.
    pub async fn metrics(&self) -> Result<String> {
        let req = self.request(Method::GET, "/metrics").timeout(self.timeout);
        let resp = Self::check(req.send().await.map_err(Error::Transport)?).await?;
        resp.text().await.map_err(Error::Transport)
    }

    /// `GET /openapi.json`: the server's OpenAPI document.
    pub async fn openapi(&self) -> Result<Value> {
        self.call(Method::GET, "/openapi.json", None::<&()>).await
    }

    /// `GET /canvas/viewport`.
    pub async fn viewport(&self) -> Result<Viewport> {
        self.call(Method::GET, "/canvas/viewport", None::<&()>)
            .await
    }

    /// `PUT /canvas/viewport`.
    pub async fn set_viewport(&self, patch: &ViewportPatch) -> Result<StatusResponse> {
        self.call(Method::PUT, "/canvas/viewport", Some(patch))
            .await
    }

    // ---- workspace settings --------------------------------------------------------------

    /// `PATCH /workspaces/{id}/abilities` (admin).
    pub async fn set_abilities(
        &self,
        id: WorkspaceId,
        abilities: &Abilities,
    ) -> Result<StatusResponse> {
        self.call(
            Method::PATCH,
            &format!("/workspaces/{id}/abilities"),
            Some(abilities),
        )
        .await
    }

    /// `GET /workspaces/{id}/budget` (USD cents).
    pub async fn budget(&self, id: WorkspaceId) -> Result<Budget> {
        self.call(
            Method::GET,
            &format!("/workspaces/{id}/budget"),
            None::<&()>,
        )
        .await
    }

    /// `PATCH /workspaces/{id}/budget` (admin): `None` is unlimited.
    pub async fn set_budget(&self, id: WorkspaceId, limit_cents: Option<i64>) -> Result<Budget> {
        // Budgets in cents are far below 2^53: the JSON number is exact.
        let body = BudgetPatch {
            budget_limit: limit_cents.map(|c| c as f64),
        };
        self.call(
            Method::PATCH,
            &format!("/workspaces/{id}/budget"),
            Some(&body),
        )
        .await
    }

    /// `GET /workspaces/{id}/config`: the `workspace_config` document.
    pub async fn config(&self, id: WorkspaceId) -> Result<ConfigBody> {
        self.call(
            Method::GET,
            &format!("/workspaces/{id}/config"),
            None::<&()>,
        )
        .await
    }

    /// `PATCH /workspaces/{id}/config`: shallow-merges `patch` (a key set to `null` is deleted).
    pub async fn patch_config(
        &self,
        id: WorkspaceId,
        patch: &Map<String, Value>,
    ) -> Result<StatusResponse> {
        self.call(
            Method::PATCH,
            &format!("/workspaces/{id}/config"),
            Some(patch),
        )
        .await
    }

    /// `GET /workspaces/{id}/model` (the `MODEL` secret).
    pub async fn model(&self, id: WorkspaceId) -> Result<ModelBody> {
        self.call(Method::GET, &format!("/workspaces/{id}/model"), None::<&()>)
            .await
    }

    /// `PUT /workspaces/{id}/model` (`""` clears it).
    pub async fn set_model(&self, id: WorkspaceId, model: &str) -> Result<SettingSaved> {
        let body = SetModel {
            model: Some(model.to_owned()),
        };
        self.call(Method::PUT, &format!("/workspaces/{id}/model"), Some(&body))
            .await
    }

    /// `GET /workspaces/{id}/provider` (the `LLM_PROVIDER` secret).
    pub async fn provider(&self, id: WorkspaceId) -> Result<ProviderBody> {
        self.call(
            Method::GET,
            &format!("/workspaces/{id}/provider"),
            None::<&()>,
        )
        .await
    }

    /// `PUT /workspaces/{id}/provider` (`""` clears it).
    pub async fn set_provider(&self, id: WorkspaceId, provider: &str) -> Result<SettingSaved> {
        let body = SetProvider {
            provider: Some(provider.to_owned()),
        };
        self.call(
            Method::PUT,
            &format!("/workspaces/{id}/provider"),
            Some(&body),
        )
        .await
    }

    /// `GET /workspaces/{id}/display` (admin).
    pub async fn display(&self, id: WorkspaceId) -> Result<Display> {
        self.call(
            Method::GET,
            &format!("/workspaces/{id}/display"),
            None::<&()>,
        )
        .await
    }

    /// `GET /workspaces/{id}/console` (admin; a control-plane backend only, else 501).
    pub async fn console(&self, id: WorkspaceId) -> Result<Console> {
        self.call(
            Method::GET,
            &format!("/workspaces/{id}/console"),
            None::<&()>,
        )
        .await
    }

    /// `POST /admin/workspaces/{id}/bootstrap-failed` (admin; a control plane's watcher).
    pub async fn bootstrap_failed(
        &self,
        id: WorkspaceId,
        report: &BootstrapFailed,
    ) -> Result<BootstrapFailedAck> {
        self.call(
            Method::POST,
            &format!("/admin/workspaces/{id}/bootstrap-failed"),
            Some(report),
        )
        .await
    }

    // ---- tokens and external credentials -------------------------------------------------

    /// `GET /workspaces/{id}/tokens?limit=&offset=`.
    pub async fn list_tokens_page(
        &self,
        id: WorkspaceId,
        limit: u32,
        offset: u32,
    ) -> Result<TokenList> {
        self.call(
            Method::GET,
            &format!("/workspaces/{id}/tokens?limit={limit}&offset={offset}"),
            None::<&()>,
        )
        .await
    }

    /// `POST /admin/workspaces/{id}/tokens` (admin): mint a token.
    pub async fn admin_create_token(&self, id: WorkspaceId) -> Result<MintedToken> {
        self.call(
            Method::POST,
            &format!("/admin/workspaces/{id}/tokens"),
            None::<&()>,
        )
        .await
    }

    /// `GET /admin/workspaces/{id}/test-token` (a `--dev` server only).
    pub async fn test_token(&self, id: WorkspaceId) -> Result<MintedToken> {
        self.call(
            Method::GET,
            &format!("/admin/workspaces/{id}/test-token"),
            None::<&()>,
        )
        .await
    }

    /// `GET /workspaces/{id}/external/connection`: an external workspace's connection snippets.
    pub async fn external_connection(&self, id: WorkspaceId) -> Result<ConnectionBody> {
        self.call(
            Method::GET,
            &format!("/workspaces/{id}/external/connection"),
            None::<&()>,
        )
        .await
    }

    /// `POST /workspaces/{id}/external/rotate`: new credentials for an external workspace.
    pub async fn rotate_external(&self, id: WorkspaceId) -> Result<ConnectionBody> {
        self.call(
            Method::POST,
            &format!("/workspaces/{id}/external/rotate"),
            None::<&()>,
        )
        .await
    }

    // ---- the registry (what an agent calls, with its workspace token) ---------------------

    /// `POST /registry/register`.
    pub async fn register(&self, body: &Register) -> Result<Registered> {
        self.call(Method::POST, "/registry/register", Some(body))
            .await
    }

    /// `POST /registry/heartbeat`.
    pub async fn heartbeat(&self, body: &Heartbeat) -> Result<HeartbeatAck> {
        self.call(Method::POST, "/registry/heartbeat", Some(body))
            .await
    }

    /// `POST /registry/update-card`.
    pub async fn update_card(&self, body: &UpdateCard) -> Result<StatusResponse> {
        self.call(Method::POST, "/registry/update-card", Some(body))
            .await
    }

    /// `GET /registry/discover/{id}` as workspace `caller` (`X-Workspace-ID`; the token must
    /// be the caller's).
    pub async fn discover(&self, id: WorkspaceId, caller: WorkspaceId) -> Result<Discovered> {
        let req = self
            .request(Method::GET, &format!("/registry/discover/{id}"))
            .timeout(self.timeout)
            .header("x-workspace-id", caller.to_string());
        self.send("GET /registry/discover", req).await
    }

    /// `GET /registry/{id}/peers` (`q` filters by name).
    pub async fn peers(&self, id: WorkspaceId, q: Option<&str>) -> Result<Vec<Peer>> {
        let q = q
            .map(|q| format!("?q={}", path_segment(q)))
            .unwrap_or_default();
        self.call(
            Method::GET,
            &format!("/registry/{id}/peers{q}"),
            None::<&()>,
        )
        .await
    }

    /// `POST /registry/check-access`.
    pub async fn check_access(&self, body: &CheckAccess) -> Result<AccessDecision> {
        self.call(Method::POST, "/registry/check-access", Some(body))
            .await
    }

    // ---- activity, notify, broadcast, session search -------------------------------------

    /// `GET /workspaces/{id}/activity` with the filters of `query`.
    pub async fn activity(
        &self,
        id: WorkspaceId,
        query: &ActivityQuery,
    ) -> Result<Vec<ActivityEntry>> {
        self.call(
            Method::GET,
            &format!("/workspaces/{id}/activity{}", query_string(query)),
            None::<&()>,
        )
        .await
    }

    /// `POST /workspaces/{id}/activity`: an agent's self-report.
    pub async fn log_activity(
        &self,
        id: WorkspaceId,
        entry: &LogActivity,
    ) -> Result<StatusResponse> {
        self.call(
            Method::POST,
            &format!("/workspaces/{id}/activity"),
            Some(entry),
        )
        .await
    }

    /// `POST /workspaces/{id}/notify`: the agent's message to its user.
    pub async fn notify(&self, id: WorkspaceId, body: &Notify) -> Result<StatusResponse> {
        self.call(
            Method::POST,
            &format!("/workspaces/{id}/notify"),
            Some(body),
        )
        .await
    }

    /// `POST /workspaces/{id}/broadcast`: to every other live workspace of its organisation.
    pub async fn broadcast(&self, id: WorkspaceId, message: &str) -> Result<BroadcastSent> {
        let body = Broadcast {
            message: message.to_owned(),
        };
        self.call(
            Method::POST,
            &format!("/workspaces/{id}/broadcast"),
            Some(&body),
        )
        .await
    }

    /// `GET /workspaces/{id}/session-search?q=&limit=`.
    pub async fn session_search(
        &self,
        id: WorkspaceId,
        query: &SessionSearchQuery,
    ) -> Result<Vec<SessionSearchItem>> {
        self.call(
            Method::GET,
            &format!("/workspaces/{id}/session-search{}", query_string(query)),
            None::<&()>,
        )
        .await
    }

    // ---- A2A queue, bundles, templates import, secret rotation ---------------------------

    /// `GET /workspaces/{id}/a2a/queue/{queue_id}`: a queued A2A message (the 202 of a busy
    /// agent names it).
    pub async fn queue_item(&self, id: WorkspaceId, queue_id: &str) -> Result<QueueItem> {
        self.call(
            Method::GET,
            &format!("/workspaces/{id}/a2a/queue/{}", path_segment(queue_id)),
            None::<&()>,
        )
        .await
    }

    /// `GET /workspaces/{id}/a2a/queue`: the workspace's busy queue (pending items in delivery
    /// order with their `position`, then finished ones newest first), at most `query.limit`.
    pub async fn queue(&self, id: WorkspaceId, query: &QueueListQuery) -> Result<Vec<QueueItem>> {
        self.call(
            Method::GET,
            &format!("/workspaces/{id}/a2a/queue{}", query_string(query)),
            None::<&()>,
        )
        .await
    }

    /// `POST /admin/a2a-queue/drop-stale` (admin).
    pub async fn drop_stale(&self, query: &DropStaleQuery) -> Result<Dropped> {
        self.call(
            Method::POST,
            &format!("/admin/a2a-queue/drop-stale{}", query_string(query)),
            None::<&()>,
        )
        .await
    }

    /// `GET /bundles/export/{id}` (admin): the workspace tree as a bundle (free-form JSON).
    pub async fn export_bundle(&self, id: WorkspaceId) -> Result<Value> {
        self.call(Method::GET, &format!("/bundles/export/{id}"), None::<&()>)
            .await
    }

    /// `POST /bundles/import` (admin): creates the bundle's workspaces.
    pub async fn import_bundle(&self, bundle: &Value) -> Result<Value> {
        self.call(Method::POST, "/bundles/import", Some(bundle))
            .await
    }

    /// `POST /templates/import` (admin).
    pub async fn import_template(&self, template: &ImportTemplate) -> Result<ImportedTemplate> {
        self.call(Method::POST, "/templates/import", Some(template))
            .await
    }

    /// `POST /admin/secrets/rotate` (admin): re-seal every value under the active key.
    pub async fn rotate_secrets(&self, batch_size: Option<u32>) -> Result<ReencryptReport> {
        let body = RotateSecrets { batch_size };
        self.call(Method::POST, "/admin/secrets/rotate", Some(&body))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_types_become_query_strings() {
        let q = ActivityQuery {
            activity_type: Some("agent_log".into()),
            limit: Some("5".into()),
            ..Default::default()
        };
        let s = query_string(&q);
        assert!(s.starts_with('?'), "{s}");
        let mut pairs: Vec<&str> = s[1..].split('&').collect();
        pairs.sort_unstable();
        assert_eq!(pairs, ["limit=5", "type=agent_log"]);
        assert_eq!(query_string(&SessionSearchQuery::default()), "");
        let q = SessionSearchQuery {
            q: Some("a b&c".into()),
            limit: None,
        };
        assert_eq!(query_string(&q), "?q=a%20b%26c");
    }
}
