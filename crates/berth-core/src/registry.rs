//! Agents connecting back: register, heartbeat, update-card; workspace tokens; external
//! credentials; discovery and the access rule (REFERENCE.md §2.12–2.16, REFERENCE-2.md §1).
//!
//! berth closes the reference's bootstrap window (DECISIONS.md §2.5): outside `--dev`, register
//! and heartbeat need a live token of that workspace; register never creates a row; removed,
//! paused, hibernated and failed rows are not revived.

use berth_domain::WorkspaceId;
use berth_domain::event::EventType;
use berth_domain::heartbeat::{HeartbeatReport, clamp_monthly_spend};
use berth_domain::runtime::is_external_like;
use berth_domain::ssrf::SsrfError;
use berth_domain::status::WorkspaceStatus;
use berth_domain::validation::DeliveryMode;
use berth_store::{Heartbeat, IssueToken, NewEvent, Registration, TokenInfo};
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::service::WorkspaceService;

/// Live tokens one workspace may hold through the mint endpoints.
pub const MAX_LIVE_TOKENS: i64 = 50;
/// Largest agent card accepted, serialized.
pub const AGENT_CARD_CAP: usize = 256 * 1024;

/// Who is calling, as far as the credential says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    /// The admin credential.
    Admin,
    /// A live token of this workspace.
    Workspace(WorkspaceId),
    /// No credential, in `--dev` mode.
    Dev,
}

/// Why a registry or token operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The body is malformed or misses required fields.
    #[error("invalid request body")]
    InvalidBody,
    /// Not `push`/`poll`.
    #[error("delivery_mode must be 'push' or 'poll'")]
    InvalidDeliveryMode,
    /// No bearer.
    #[error("missing workspace auth token")]
    MissingToken,
    /// A bearer that is not a live token of this workspace.
    #[error("invalid workspace auth token")]
    InvalidToken,
    /// Unknown workspace.
    #[error("workspace not found")]
    NotFound,
    /// The workspace is removed.
    #[error("workspace removed")]
    Removed,
    /// The workspace's status does not allow it (paused, hibernated, failed).
    #[error("workspace is {0}")]
    InvalidState(WorkspaceStatus),
    /// Push mode without a URL.
    #[error("url is required for push-mode workspaces")]
    UrlRequired,
    /// The agent registered before its provisioner reported where the platform reaches it, and
    /// that did not happen within 60 s: the agent should retry.
    #[error("workspace is still starting: its address is not recorded yet")]
    Starting,
    /// The agent URL failed the SSRF policy.
    #[error("{0}")]
    UnsafeUrl(SsrfError),
    /// The agent card is too large.
    #[error("agent_card must be at most 256 KiB")]
    CardTooLarge,
    /// The agent card holds a NUL character, which PostgreSQL's JSONB cannot store.
    #[error("agent_card must not contain NUL characters")]
    CardHasNul,
    /// 50 live tokens already.
    #[error("maximum 50 active tokens per workspace")]
    TooManyTokens,
    /// Rotate/connection on a container workspace.
    #[error("not an external workspace")]
    NotExternal {
        /// Its runtime.
        runtime: String,
    },
    /// The caller may not see the target.
    #[error("not authorized")]
    Forbidden,
    /// The target cannot be reached now.
    #[error("workspace not available")]
    Unavailable {
        /// Its status.
        status: WorkspaceStatus,
    },
    /// The store failed.
    #[error("{context}")]
    Store {
        /// The public message.
        context: &'static str,
        /// The cause (logged, never sent).
        #[source]
        source: berth_store::Error,
    },
}

/// How long a register waits for the provisioner's URL (see `wait_for_url`).
pub(crate) const URL_WAIT: std::time::Duration = std::time::Duration::from_secs(60);
/// How often that wait re-reads the row when nothing woke it.
const URL_POLL: std::time::Duration = std::time::Duration::from_millis(250);

fn store_err(context: &'static str) -> impl FnOnce(berth_store::Error) -> RegistryError {
    move |source| RegistryError::Store { context, source }
}

/// `POST /registry/register` body.
#[derive(Debug, Clone, Default)]
pub struct RegisterRequest {
    /// The workspace id.
    pub id: String,
    /// The agent URL.
    pub url: String,
    /// The agent card (required).
    pub agent_card: Value,
    /// `push`/`poll`, if the agent says.
    pub delivery_mode: Option<String>,
}

/// The register answer.
#[derive(Debug, Clone)]
pub struct Registered {
    /// The effective delivery mode.
    pub delivery_mode: DeliveryMode,
    /// A token minted because the workspace had none (only possible in `--dev`).
    pub auth_token: Option<SecretString>,
    /// The platform-inbound secret.
    pub platform_inbound_secret: SecretString,
}

/// `POST /registry/heartbeat` body.
#[derive(Debug, Clone, Default)]
pub struct HeartbeatRequest {
    /// The workspace id.
    pub workspace_id: String,
    /// Error rate.
    pub error_rate: f64,
    /// Sample error.
    pub sample_error: String,
    /// Active tasks.
    pub active_tasks: i64,
    /// Uptime.
    pub uptime_seconds: i64,
    /// Current task.
    pub current_task: String,
    /// Spend in cents.
    pub monthly_spend: i64,
    /// `""` or `"wedged"`.
    pub runtime_state: String,
    /// Adapter capability: manages its own status.
    pub status_mgmt: bool,
}

/// A peer as `GET /registry/{id}/peers` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Peer {
    /// Id.
    pub id: WorkspaceId,
    /// Name.
    pub name: String,
    /// Role.
    pub role: Option<String>,
    /// Tier.
    pub tier: i64,
    /// Status.
    pub status: WorkspaceStatus,
    /// Agent card.
    pub agent_card: Option<Value>,
    /// Stored URL.
    pub url: String,
    /// Parent.
    pub parent_id: Option<WorkspaceId>,
    /// Active tasks.
    pub active_tasks: i64,
}

/// A discovery answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Discovered {
    /// The target.
    pub id: WorkspaceId,
    /// Its URL.
    pub url: String,
    /// Its name.
    pub name: String,
}

fn mint_secret() -> SecretString {
    crate::token::mint().plaintext
}

fn parse_id(id: &str) -> Result<WorkspaceId, RegistryError> {
    WorkspaceId::parse(id).map_err(|_| RegistryError::InvalidBody)
}

impl WorkspaceService {
    /// The workspace a bearer token belongs to, if it is live. A verified token is trusted for
    /// [`crate::CoreConfig::token_cache_ttl`] without asking the database again; revocations
    /// through this instance take effect at once (see [`crate::token`]'s cache).
    pub async fn authenticate_token(
        &self,
        bearer: &str,
    ) -> Result<Option<WorkspaceId>, berth_store::Error> {
        let hash = crate::token::hash(bearer);
        let generation = match self.token_cache.get(&hash) {
            Ok(owner) => return Ok(Some(owner)),
            Err(generation) => generation,
        };
        let owner = self.store.validate_token(hash).await?;
        if let Some(owner) = owner {
            self.token_cache.insert(hash, owner, generation);
        }
        Ok(owner)
    }

    /// Forgets the cached tokens of these workspaces: called right after anything that revokes
    /// a token or removes a workspace commits, so this instance refuses the token from then on
    /// (a lookup that read the database before the commit does not put it back: see
    /// [`crate::token`]'s cache).
    pub(crate) fn forget_tokens(&self, workspaces: &[WorkspaceId]) {
        self.token_cache.forget(workspaces);
    }

    /// The registry token gate: a live token of `id`; without a bearer only in `--dev`, and only
    /// while the workspace has no live token (the reference's bootstrap, closed otherwise).
    async fn gate(&self, id: WorkspaceId, bearer: Option<&str>) -> Result<(), RegistryError> {
        match bearer {
            Some(b) => match self
                .authenticate_token(b)
                .await
                .map_err(store_err("auth check failed"))?
            {
                Some(owner) if owner == id => Ok(()),
                _ => Err(RegistryError::InvalidToken),
            },
            None if self.config.dev => {
                let has = self
                    .store
                    .has_live_token(id)
                    .await
                    .map_err(store_err("auth check failed"))?;
                if has {
                    Err(RegistryError::MissingToken)
                } else {
                    Ok(())
                }
            }
            None => Err(RegistryError::MissingToken),
        }
    }

    /// Reads the inbound secret, minting one when missing ("lazy heal").
    async fn inbound_secret_or_mint(&self, id: WorkspaceId) -> Result<SecretString, RegistryError> {
        if let Some(s) = self
            .store
            .inbound_secret(id)
            .await
            .map_err(store_err("registration failed"))?
        {
            return Ok(s);
        }
        let s = mint_secret();
        self.store
            .set_inbound_secret(id, s.clone())
            .await
            .map_err(store_err("registration failed"))?;
        Ok(s)
    }

    /// Waits until the provisioner's URL of `id` is recorded (woken by `provisioning.rs`, with a
    /// slow poll for a start recorded by another instance), for at most [`URL_WAIT`]. A workspace
    /// that leaves `provisioning` meanwhile (failed, paused, deleted) ends the wait with its
    /// status.
    async fn wait_for_url(&self, id: WorkspaceId) -> Result<(), RegistryError> {
        let deadline = tokio::time::Instant::now() + URL_WAIT;
        loop {
            let notified = self.url_recorded.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let row = self
                .store
                .get_workspace(id)
                .await
                .map_err(store_err("registration failed"))?
                .ok_or(RegistryError::NotFound)?;
            if row.url.as_deref().is_some_and(|u| !u.is_empty()) {
                return Ok(());
            }
            match row.status {
                WorkspaceStatus::Removed => return Err(RegistryError::Removed),
                WorkspaceStatus::Provisioning => {}
                other => return Err(RegistryError::InvalidState(other)),
            }
            // The start is still in its grace period here: the backend already knows the URL
            // it set up, so the agent need not wait for the grace to end.
            if let Some(url) = self.provisioner.starting_url(id).await {
                self.store
                    .set_provisioned(id, Some(url), None)
                    .await
                    .map_err(store_err("registration failed"))?;
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(RegistryError::Starting);
            }
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep(URL_POLL) => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// `POST /registry/register`.
    #[tracing::instrument(skip_all, fields(workspace.id = %req.id))]
    pub async fn register(
        &self,
        req: RegisterRequest,
        bearer: Option<&str>,
    ) -> Result<Registered, RegistryError> {
        let id = parse_id(&req.id)?;
        if req.agent_card.is_null() {
            return Err(RegistryError::InvalidBody);
        }
        let requested_mode = match req.delivery_mode.as_deref() {
            None | Some("") => None,
            Some(m) => Some(DeliveryMode::parse(m).ok_or(RegistryError::InvalidDeliveryMode)?),
        };
        self.gate(id, bearer).await?;
        let row = self
            .store
            .get_workspace(id)
            .await
            .map_err(store_err("registration failed"))?
            .ok_or(RegistryError::NotFound)?;
        match row.status {
            WorkspaceStatus::Removed => return Err(RegistryError::Removed),
            st if berth_domain::status::Transition::AgentRegistered
                .apply(st)
                .is_none() =>
            {
                return Err(RegistryError::InvalidState(st));
            }
            _ => {}
        }
        // Effective mode: the agent's; else poll for an external workspace that has no URL
        // anywhere (the reference's intended fallback, REFERENCE.md §12 #9); else the row's.
        let mode = requested_mode.unwrap_or_else(|| {
            let no_url = req.url.is_empty() && row.url.as_deref().unwrap_or("").is_empty();
            if no_url && is_external_like(&row.runtime) {
                DeliveryMode::Poll
            } else {
                DeliveryMode::parse(&row.delivery_mode).unwrap_or_default()
            }
        });
        // A container workspace is provisioned by berth, whose provisioner records how the
        // platform reaches it; the agent's self-reported URL is never stored for it (so it needs
        // no SSRF check, and an early register — before the provisioner has returned — is not
        // refused). Every other workspace's URL is user-controlled and must pass the policy.
        let provisioned = !is_external_like(&row.runtime);
        if mode == DeliveryMode::Push && !provisioned {
            if req.url.is_empty() {
                return Err(RegistryError::UrlRequired);
            }
            self.check_url(&req.url)
                .await
                .map_err(RegistryError::UnsafeUrl)?;
        }
        let card = reconcile_card(req.agent_card, &row.name, row.role.as_deref(), id);
        check_card(&card)?;
        // The agent may register before its provisioner has returned the URL the platform
        // reaches it at: wait for it, so `online` always comes with a usable `url`.
        let require_url = provisioned && self.provisioner.kind().reports_url();
        if require_url && row.url.as_deref().unwrap_or("").is_empty() {
            self.wait_for_url(id).await?;
        }
        let had_token = self
            .store
            .has_live_token(id)
            .await
            .map_err(store_err("registration failed"))?;
        let registration = Registration {
            url: (!req.url.is_empty() && !provisioned).then(|| req.url.clone()),
            event_payload: json!({"url": req.url, "agent_card": card, "delivery_mode": mode.as_str()}),
            agent_card: card,
            delivery_mode: mode.as_str().to_owned(),
            require_url,
        };
        self.store
            .register(id, registration)
            .await
            .map_err(|e| match e {
                berth_store::Error::NotFound => RegistryError::NotFound,
                berth_store::Error::InvalidState(WorkspaceStatus::Removed) => {
                    RegistryError::Removed
                }
                berth_store::Error::InvalidState(s) => RegistryError::InvalidState(s),
                other => RegistryError::Store {
                    context: "registration failed",
                    source: other,
                },
            })?;
        let auth_token = if had_token {
            None
        } else {
            let minted = crate::token::mint();
            match self
                .store
                .issue_token(id, minted.stored.clone(), IssueToken::default())
                .await
            {
                Ok(()) => Some(minted.plaintext),
                Err(e) => {
                    tracing::warn!(workspace.id = %id, error = %e, "token mint at register failed");
                    None
                }
            }
        };
        let platform_inbound_secret = self.inbound_secret_or_mint(id).await?;
        tracing::info!(workspace.id = %id, delivery_mode = mode.as_str(), "agent registered");
        self.note_status(id, WorkspaceStatus::Online);
        Ok(Registered {
            delivery_mode: mode,
            auth_token,
            platform_inbound_secret,
        })
    }

    /// `POST /registry/heartbeat`: returns the platform-inbound secret.
    pub async fn heartbeat(
        &self,
        req: HeartbeatRequest,
        bearer: Option<&str>,
    ) -> Result<SecretString, RegistryError> {
        let id = parse_id(&req.workspace_id)?;
        if !req.error_rate.is_finite() {
            return Err(RegistryError::InvalidBody);
        }
        self.gate(id, bearer).await?;
        let hb = Heartbeat {
            error_rate: req.error_rate,
            sample_error: req.sample_error.clone(),
            active_tasks: req.active_tasks.max(0),
            uptime_seconds: req.uptime_seconds.max(0),
            current_task: req.current_task.clone(),
            monthly_spend: clamp_monthly_spend(req.monthly_spend),
            report: HeartbeatReport {
                error_rate: req.error_rate,
                sample_error: req.sample_error,
                runtime_state: req.runtime_state,
                status_mgmt: req.status_mgmt,
            },
            require_url: self.provisioner.kind().reports_url(),
        };
        let outcome = self.heartbeats.submit(id, hb).await.map_err(|e| match e {
            berth_store::Error::NotFound => RegistryError::NotFound,
            other => RegistryError::Store {
                context: "failed to update",
                source: other,
            },
        })?;
        if outcome.status != outcome.previous_status {
            tracing::info!(workspace.id = %id, from = %outcome.previous_status, to = %outcome.status, "status changed by heartbeat");
            self.note_status(id, outcome.status);
        }
        // Spare capacity: deliver what waits in the busy queue (REFERENCE-2.md §4.12). The
        // heartbeat's own read counted the queue, so an empty one costs no task and no query.
        if outcome.a2a_queued > 0
            && req.active_tasks.max(0) < outcome.max_concurrent_tasks
            && matches!(
                outcome.status,
                WorkspaceStatus::Online | WorkspaceStatus::Degraded
            )
        {
            self.spawn_drain(id).await;
        }
        match outcome.inbound_secret {
            Some(secret) => Ok(secret),
            None => self.inbound_secret_or_mint(id).await,
        }
    }

    /// `POST /registry/update-card`.
    pub async fn update_card(
        &self,
        id: &str,
        card: Value,
        bearer: Option<&str>,
    ) -> Result<(), RegistryError> {
        let id = parse_id(id)?;
        if card.is_null() {
            return Err(RegistryError::InvalidBody);
        }
        check_card(&card)?;
        self.gate(id, bearer).await?;
        self.store.update_card(id, card).await.map_err(|e| match e {
            berth_store::Error::NotFound => RegistryError::NotFound,
            other => RegistryError::Store {
                context: "failed to update card",
                source: other,
            },
        })
    }

    /// Live tokens of a workspace, newest first.
    pub async fn list_tokens(
        &self,
        id: WorkspaceId,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<TokenInfo>, RegistryError> {
        self.store
            .list_tokens(id, limit, offset)
            .await
            .map_err(store_err("failed to list tokens"))
    }

    /// Mints a token (cap [`MAX_LIVE_TOKENS`]); the plaintext is returned once.
    pub async fn mint_token(&self, id: WorkspaceId) -> Result<SecretString, RegistryError> {
        let minted = crate::token::mint();
        let how = IssueToken {
            max_live: Some(MAX_LIVE_TOKENS),
            ..Default::default()
        };
        self.store
            .issue_token(id, minted.stored, how)
            .await
            .map_err(|e| match e {
                berth_store::Error::NotFound => RegistryError::NotFound,
                berth_store::Error::TooManyTokens => RegistryError::TooManyTokens,
                other => RegistryError::Store {
                    context: "failed to create token",
                    source: other,
                },
            })?;
        Ok(minted.plaintext)
    }

    /// Revokes one token; `false` when it was not live.
    pub async fn revoke_token(
        &self,
        id: WorkspaceId,
        token_id: uuid::Uuid,
    ) -> Result<bool, RegistryError> {
        let revoked = self.store.revoke_token(id, token_id).await;
        self.forget_tokens(&[id]);
        revoked.map_err(store_err("failed to revoke token"))
    }

    async fn external_row(&self, id: WorkspaceId) -> Result<berth_store::Workspace, RegistryError> {
        let row = self
            .store
            .get_workspace(id)
            .await
            .map_err(store_err("lookup failed"))?
            .filter(|w| w.status != WorkspaceStatus::Removed)
            .ok_or(RegistryError::NotFound)?;
        if !is_external_like(&row.runtime) {
            return Err(RegistryError::NotExternal {
                runtime: row.runtime,
            });
        }
        Ok(row)
    }

    /// `POST /workspaces/{id}/external/rotate`: revokes every token, mints one, returns the
    /// connection payload carrying it.
    pub async fn rotate_external(
        &self,
        id: WorkspaceId,
        platform_url: &str,
    ) -> Result<Value, RegistryError> {
        let row = self.external_row(id).await?;
        let minted = crate::token::mint();
        let how = IssueToken {
            revoke_existing: true,
            max_live: None,
            event: Some(NewEvent {
                event_type: EventType::ExternalCredentialsRotated,
                payload: json!({"workspace_id": id}),
            }),
        };
        let issued = self.store.issue_token(id, minted.stored.clone(), how).await;
        self.forget_tokens(&[id]);
        issued.map_err(store_err("mint failed"))?;
        Ok(berth_domain::external::connection_payload(
            platform_url,
            id.as_uuid(),
            &row.name,
            minted.expose(),
        ))
    }

    /// `GET /workspaces/{id}/external/connection`: the payload without a token.
    pub async fn external_connection(
        &self,
        id: WorkspaceId,
        platform_url: &str,
    ) -> Result<Value, RegistryError> {
        let row = self.external_row(id).await?;
        Ok(berth_domain::external::connection_payload(
            platform_url,
            id.as_uuid(),
            &row.name,
            "",
        ))
    }

    /// Whether `caller` may communicate with `target` (REFERENCE-2.md §1.1).
    pub async fn can_communicate(
        &self,
        caller: WorkspaceId,
        target: WorkspaceId,
    ) -> Result<bool, RegistryError> {
        if caller == target {
            return Ok(true);
        }
        Ok(self
            .hierarchy()
            .await
            .map_err(store_err("lookup failed"))?
            .can_communicate(caller, target))
    }

    /// `GET /registry/discover/{id}` for an authenticated caller.
    pub async fn discover(
        &self,
        caller: WorkspaceId,
        target: WorkspaceId,
    ) -> Result<Discovered, RegistryError> {
        if !self.can_communicate(caller, target).await? {
            return Err(RegistryError::Forbidden);
        }
        let row = self
            .store
            .get_workspace(target)
            .await
            .map_err(store_err("lookup failed"))?
            .ok_or(RegistryError::NotFound)?;
        let url = row.url.clone().unwrap_or_default();
        let reachable = matches!(
            row.status,
            WorkspaceStatus::Online | WorkspaceStatus::Degraded
        );
        if url.is_empty() || !reachable {
            return Err(RegistryError::Unavailable { status: row.status });
        }
        // Dispatch-time check: a URL a user or an agent supplied must still pass the policy (DNS
        // may have changed); one berth's own provisioner reported is used as reported.
        if !row.url_from_provisioner {
            self.check_url(&url)
                .await
                .map_err(RegistryError::UnsafeUrl)?;
        }
        Ok(Discovered {
            id: target,
            url,
            name: row.name,
        })
    }

    /// `GET /registry/{id}/peers`: siblings (or every other root), children, then the parent;
    /// live rows only; `q` filters on name or role, case-insensitively.
    pub async fn peers(&self, id: WorkspaceId, q: &str) -> Result<Vec<Peer>, RegistryError> {
        let rows = self
            .store
            .list_workspaces(berth_store::Page::default())
            .await
            .map_err(store_err("lookup failed"))?;
        let me = match self
            .store
            .get_workspace(id)
            .await
            .map_err(store_err("lookup failed"))?
        {
            Some(w) if w.status != WorkspaceStatus::Removed => w,
            _ => return Err(RegistryError::NotFound),
        };
        let q = q.trim().to_lowercase();
        let matches = |w: &berth_store::Workspace| {
            q.is_empty()
                || w.name.to_lowercase().contains(&q)
                || w.role.as_deref().unwrap_or("").to_lowercase().contains(&q)
        };
        let siblings = rows
            .iter()
            .filter(|w| w.id != id && w.parent_id == me.parent_id);
        let children = rows
            .iter()
            .filter(|w| w.id != id && w.parent_id == Some(id));
        let parent = rows.iter().filter(|w| Some(w.id) == me.parent_id);
        Ok(siblings
            .chain(children)
            .chain(parent)
            .filter(|w| matches(w))
            .map(|w| Peer {
                id: w.id,
                name: w.name.clone(),
                role: w.role.clone(),
                tier: w.tier,
                status: w.status,
                agent_card: w.agent_card.clone(),
                url: w.url.clone().unwrap_or_default(),
                parent_id: w.parent_id,
                active_tasks: w.active_tasks,
            })
            .collect())
    }
}

/// Refuses an agent card larger than [`AGENT_CARD_CAP`] once serialized, or holding a NUL
/// character in any key or string (berth's one rule for client text,
/// [`berth_domain::text`]: the HTTP layer refuses such a request body before it gets here;
/// embedders calling the core directly meet the same rule). Register, card updates and bundle
/// imports all check cards here.
pub(crate) fn check_card(card: &Value) -> Result<(), RegistryError> {
    let len = serde_json::to_vec(card).map_or(usize::MAX, |v| v.len());
    if len > AGENT_CARD_CAP {
        Err(RegistryError::CardTooLarge)
    } else if berth_domain::text::find_nul(Some("agent_card"), card).is_some() {
        Err(RegistryError::CardHasNul)
    } else {
        Ok(())
    }
}

/// Agent-card identity reconciliation (REFERENCE.md §2.12 step 5).
fn reconcile_card(
    mut card: Value,
    row_name: &str,
    row_role: Option<&str>,
    id: WorkspaceId,
) -> Value {
    let id_s = id.to_string();
    let Some(obj) = card.as_object_mut() else {
        return card;
    };
    let name_ok = !row_name.is_empty() && row_name != id_s;
    let card_name = obj
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if (card_name.is_empty() || card_name == id_s) && name_ok {
        obj.insert("name".into(), json!(row_name));
    }
    let name_now = obj
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let desc_empty = obj
        .get("description")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty);
    if desc_empty && !name_now.is_empty() && name_now != id_s {
        obj.insert("description".into(), json!(name_now));
    }
    let role_empty = obj
        .get("role")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty);
    if let Some(role) = row_role.filter(|r| !r.is_empty())
        && role_empty
    {
        obj.insert("role".into(), json!(role));
    }
    card
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret as _;

    #[test]
    fn card_reconciliation() {
        let id = WorkspaceId::new_v4();
        let card = reconcile_card(
            json!({"name": id.to_string()}),
            "Reviewer",
            Some("reviews"),
            id,
        );
        assert_eq!(
            card,
            json!({"name": "Reviewer", "description": "Reviewer", "role": "reviews"})
        );
        let card = reconcile_card(
            json!({"name": "Mine", "description": "d", "role": "r"}),
            "Row",
            Some("x"),
            id,
        );
        assert_eq!(
            card,
            json!({"name": "Mine", "description": "d", "role": "r"})
        );
        let card = reconcile_card(json!({}), &id.to_string(), None, id);
        assert_eq!(card, json!({}));
        assert_eq!(reconcile_card(json!([1]), "n", None, id), json!([1]));
    }

    #[test]
    fn cards_holding_a_nul_are_refused() {
        for card in [
            json!({"name": "a\u{0}b"}),
            json!({"skills": [{"tags": ["\u{0}"]}]}),
            json!({"x\u{0}": 1}),
        ] {
            assert!(
                matches!(check_card(&card), Err(RegistryError::CardHasNul)),
                "{card}"
            );
        }
        assert!(check_card(&json!({"name": "n", "note": "\\u0000"})).is_ok());
    }

    #[test]
    fn secret_values_are_not_debug_printed() {
        let r = Registered {
            delivery_mode: DeliveryMode::Push,
            auth_token: Some(SecretString::from("tok".to_owned())),
            platform_inbound_secret: SecretString::from("inb".to_owned()),
        };
        let dbg = format!("{r:?}");
        assert!(!dbg.contains("tok\"") && !dbg.contains("inb\""));
        assert_eq!(r.platform_inbound_secret.expose_secret(), "inb");
    }
}
