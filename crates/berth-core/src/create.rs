//! `POST /workspaces`: validate everything in the reference's order, then commit the whole create
//! in one transaction, then provision in the background.
//!
//! The order of checks is normative (REFERENCE.md §2.1): a request that breaks two rules gets the
//! earlier rule's error. berth's changes (DECISIONS.md §2.9 and REFERENCE.md §12.1) are marked
//! "berth:" below.

use std::collections::BTreeMap;

use berth_domain::WorkspaceId;
use berth_domain::compute::{Compute, ComputeError};
use berth_domain::event::EventType;
use berth_domain::naming::{NAME_ATTEMPTS, name_candidate};
use berth_domain::provider::derive_provider_from_model_slug;
use berth_domain::runtime::{
    DEFAULT_EXTERNAL_RUNTIME, DEFAULT_RUNTIME, is_external_like, normalize_external_runtime,
};
use berth_domain::ssrf::{SsrfError, UrlTarget, check_agent_url, check_resolved};
use berth_domain::status::{Transition, WorkspaceStatus};
use berth_domain::validation::{
    DeliveryMode, FieldError, Tier, validate_workspace_access, validate_workspace_dir,
    validate_workspace_fields,
};
use berth_store::{NewEvent, NewIdempotency, NewWorkspace, WorkspaceOrigin};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::provisioning::ProvisionPlan;
use crate::service::WorkspaceService;
use crate::templates::ResolvedTemplate;

/// Largest secret value accepted at create (a secret becomes an environment variable).
const SECRET_VALUE_CAP: usize = 64 * 1024;
/// How often a create retries when a concurrent create took its name between check and insert:
/// every lost race means one more candidate is taken, so 21 attempts exhaust the candidates.
const NAME_RACE_RETRIES: usize = NAME_ATTEMPTS;

/// One `initial_memories` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct InitialMemory {
    /// Memory text.
    pub content: String,
    /// `LOCAL` / `TEAM` / `GLOBAL` (case-insensitive; empty = `LOCAL`).
    pub scope: String,
}

/// A create request after JSON binding, before any validation.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    /// Display name (required).
    pub name: String,
    /// Role ("" = none).
    pub role: String,
    /// Template directory name.
    pub template: String,
    /// Tier (0 = default).
    pub tier: i64,
    /// Model slug.
    pub model: String,
    /// Runtime label.
    pub runtime: String,
    /// Bring-your-own-compute flag.
    pub external: bool,
    /// External agent URL.
    pub url: String,
    /// `push` / `poll` ("" = push).
    pub delivery_mode: String,
    /// Host directory.
    pub workspace_dir: String,
    /// `none` / `read_only` / `read_write` ("" = none).
    pub workspace_access: String,
    /// Parent workspace id.
    pub parent_id: Option<String>,
    /// Budget in cents.
    pub budget_limit: Option<i64>,
    /// Initial workspace secrets, in request order.
    pub secrets: Vec<(String, SecretString)>,
    /// Max concurrent tasks (≤ 0 = 1).
    pub max_concurrent_tasks: i64,
    /// Compute configuration.
    pub compute: Compute,
    /// Canvas position.
    pub canvas: (f64, f64),
    /// Memories to seed.
    pub initial_memories: Vec<InitialMemory>,
}

/// Where a create came from: what the HTTP layer knows that the core needs.
#[derive(Debug, Clone, Default)]
pub struct CreateContext {
    /// The client's `Idempotency-Key`.
    pub idempotency_key: Option<String>,
    /// SHA-256 of the request body (a reused key must come with the same request).
    pub request_hash: [u8; 32],
    /// The platform URL external agents should use.
    pub platform_url: String,
}

/// The body of a successful create (the reference's three 201 shapes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateResponse {
    /// The new workspace.
    pub id: WorkspaceId,
    /// Present (`true`) for external workspaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<bool>,
    /// Status at commit.
    pub status: WorkspaceStatus,
    /// Access mode (container workspaces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_access: Option<String>,
    /// Connection payload with the once-only token (external without URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<serde_json::Value>,
}

/// A create's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Created {
    /// The response body.
    pub response: CreateResponse,
    /// Whether this is the stored result of an earlier request with the same idempotency key.
    pub replayed: bool,
}

/// Why a create was refused, in the order the checks run.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// Bind failure or missing name.
    #[error("invalid workspace payload")]
    InvalidPayload,
    /// Field rules (§3.1).
    #[error("invalid workspace fields: {0}")]
    InvalidFields(FieldError),
    /// berth: tier outside 1–4.
    #[error("tier must be between 1 and 4")]
    InvalidTier,
    /// The template path escapes the root, or its manifest is invalid.
    #[error("invalid template: {0}")]
    InvalidTemplate(String),
    /// A template was named but no runtime came out of it.
    #[error("runtime could not be resolved from template {template:?}")]
    RuntimeUnresolved {
        /// The template named.
        template: String,
    },
    /// berth: the runtime is neither built in nor declared by a template.
    #[error("unknown runtime {runtime:?}")]
    UnknownRuntime {
        /// The runtime.
        runtime: String,
    },
    /// A container runtime needs a model.
    #[error("model is required for runtime {runtime:?}")]
    ModelRequired {
        /// The runtime.
        runtime: String,
        /// The template named, if any.
        template: String,
    },
    /// berth: `external: true` with a runtime that is not external-like.
    #[error("external workspaces need an external-like runtime, got {runtime:?}")]
    ExternalRuntimeMismatch {
        /// The runtime.
        runtime: String,
    },
    /// `workspace_dir` rules (§3.2).
    #[error("invalid workspace directory")]
    InvalidWorkspaceDir,
    /// `workspace_access` rules (§3.7).
    #[error("invalid workspace access")]
    InvalidWorkspaceAccess,
    /// Compute rules (§3.6).
    #[error(transparent)]
    InvalidCompute(ComputeError),
    /// The agent URL failed the SSRF policy.
    #[error("unsafe workspace URL: {0}")]
    UnsafeUrl(SsrfError),
    /// Not `push`/`poll`.
    #[error("delivery_mode must be 'push' or 'poll'")]
    InvalidDeliveryMode,
    /// berth: a secret name that cannot be an environment variable, or an oversized value.
    #[error(
        "invalid secret {0:?}: keys must be environment variable names and values at most 64 KiB"
    )]
    InvalidSecret(String),
    /// berth: `parent_id` is not a UUID.
    #[error("invalid parent_id")]
    InvalidParentId,
    /// berth: the parent does not exist or is removed.
    #[error("parent workspace not found")]
    ParentNotFound,
    /// berth: negative budget.
    #[error("budget_limit must not be negative")]
    InvalidBudget,
    /// All 21 candidate names are taken.
    #[error("workspace name already in use; please pick a different name")]
    NameExhausted,
    /// The idempotency key was used with a different request.
    #[error("Idempotency-Key was already used with a different request")]
    IdempotencyMismatch,
    /// The store failed.
    #[error("failed to create workspace")]
    Store(#[source] berth_store::Error),
}

/// Validated pieces of a create, ready to write.
pub(crate) struct Plan {
    name: String,
    role: Option<String>,
    tier: Tier,
    runtime: String,
    model: String,
    template: String,
    template_path: Option<std::path::PathBuf>,
    required_env: Vec<String>,
    external: bool,
    url: Option<String>,
    delivery_mode: DeliveryMode,
    workspace_dir: Option<String>,
    workspace_access: String,
    parent_id: Option<WorkspaceId>,
    compute: Compute,
    secrets: Vec<(String, SecretString)>,
}

impl Plan {
    /// The warm-pool shape of a start of this plan (`pool.rs`).
    fn pool_shape(&self) -> String {
        crate::pool::shape_key(
            &self.template,
            &self.runtime,
            self.tier.get(),
            &self.compute.canonical_json(),
        )
    }
}

fn is_env_name(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && key.len() <= 255
}

impl WorkspaceService {
    /// Creates a workspace (see the module docs for the order of checks).
    #[tracing::instrument(skip_all, fields(workspace.name = %req.name))]
    pub async fn create(
        &self,
        req: CreateRequest,
        ctx: CreateContext,
    ) -> Result<Created, CreateError> {
        self.create_with_origin(req, ctx, None).await
    }

    /// [`Self::create`], for a bundle import when `origin` is given: the same checks and
    /// provisioning, and the origin (source bundle id, agent card, files) is written in the
    /// create's transaction (`bundles.rs`).
    pub(crate) async fn create_with_origin(
        &self,
        req: CreateRequest,
        ctx: CreateContext,
        origin: Option<WorkspaceOrigin>,
    ) -> Result<Created, CreateError> {
        // An idempotent retry returns the first result before anything else is checked.
        if let Some(key) = &ctx.idempotency_key
            && let Some(replay) = self.replay(key, &ctx.request_hash).await?
        {
            return Ok(replay);
        }
        let plan = self.validate(req.clone()).await?;
        for _ in 0..NAME_RACE_RETRIES {
            match self.write(&plan, &req, &ctx, origin.as_ref()).await {
                Err(CreateError::Store(berth_store::Error::NameTaken)) => continue,
                Err(CreateError::Store(berth_store::Error::IdempotencyKeyUsed)) => {
                    let key = ctx.idempotency_key.as_deref().unwrap_or_default();
                    return self
                        .replay(key, &ctx.request_hash)
                        .await?
                        .ok_or(CreateError::Store(berth_store::Error::IdempotencyKeyUsed));
                }
                other => return other,
            }
        }
        Err(CreateError::NameExhausted)
    }

    async fn replay(
        &self,
        key: &str,
        request_hash: &[u8; 32],
    ) -> Result<Option<Created>, CreateError> {
        let Some(stored) = self
            .store
            .idempotent_create(key)
            .await
            .map_err(CreateError::Store)?
        else {
            return Ok(None);
        };
        if !subtle_eq(&stored.request_hash, request_hash) {
            return Err(CreateError::IdempotencyMismatch);
        }
        let response: CreateResponse = serde_json::from_str(stored.body.expose_secret())
            .map_err(|e| CreateError::Store(berth_store::Error::Corrupt(e.to_string())))?;
        Ok(Some(Created {
            response,
            replayed: true,
        }))
    }

    /// Every check of REFERENCE.md §2.1 steps 1–17 (and berth's additions), no writes.
    pub(crate) async fn validate(&self, mut req: CreateRequest) -> Result<Plan, CreateError> {
        // 1. Bind: a name is required.
        if req.name.is_empty() {
            return Err(CreateError::InvalidPayload);
        }
        // 2. Field rules.
        validate_workspace_fields(&req.name, &req.role, &req.model, &req.runtime)
            .map_err(CreateError::InvalidFields)?;
        // 4. Tier (berth: range-checked; a forced tier still validates the request's own value).
        let mut tier = Tier::resolve(req.tier).map_err(|_| CreateError::InvalidTier)?;
        if let Some(forced) = self.config.forced_tier {
            tier = forced;
        }
        // 6. Template. berth: the path is always checked (REFERENCE.md §12 #1) and the manifest is
        // parsed as YAML; values from it pass the same field rules as request values (#4).
        let mut template_runtime_resolved = !req.runtime.is_empty();
        let mut resolved: Option<ResolvedTemplate> = None;
        if !req.template.is_empty() {
            let t = self
                .templates
                .resolve(&req.template)
                .map_err(|e| CreateError::InvalidTemplate(e.to_string()))?;
            if req.runtime.is_empty()
                && let Some(rt) = &t.manifest.runtime
            {
                req.runtime = rt.clone();
                template_runtime_resolved = true;
            }
            if req.model.is_empty()
                && let Some(m) = &t.manifest.model
            {
                req.model = m.clone();
            }
            validate_workspace_fields(&req.name, &req.role, &req.model, &req.runtime)
                .map_err(|e| CreateError::InvalidTemplate(e.to_string()))?;
            resolved = Some(t);
        }
        // 7. A named template that yields no runtime.
        if req.runtime.is_empty() && !req.template.is_empty() && !template_runtime_resolved {
            return Err(CreateError::RuntimeUnresolved {
                template: req.template,
            });
        }
        // 8. Default runtime. berth: an external workspace defaults to `external` (§12 #3).
        if req.runtime.is_empty() {
            req.runtime = if req.external {
                DEFAULT_EXTERNAL_RUNTIME
            } else {
                DEFAULT_RUNTIME
            }
            .to_owned();
        }
        // berth: the runtime must be known (§12 #5).
        if !self.templates.is_known_runtime(&req.runtime) {
            return Err(CreateError::UnknownRuntime {
                runtime: req.runtime,
            });
        }
        let external = req.external || is_external_like(&req.runtime);
        // 9. Model required for container runtimes.
        if req.model.is_empty() && !external {
            return Err(CreateError::ModelRequired {
                runtime: req.runtime,
                template: req.template,
            });
        }
        // berth: `external: true` with a container runtime is contradictory (§12 #3).
        if req.external && !is_external_like(&req.runtime) {
            return Err(CreateError::ExternalRuntimeMismatch {
                runtime: req.runtime,
            });
        }
        // 10. Role.
        let role = (!req.role.is_empty()).then(|| req.role.clone());
        // 11. workspace_dir.
        if !req.workspace_dir.is_empty() {
            validate_workspace_dir(&req.workspace_dir)
                .map_err(|_| CreateError::InvalidWorkspaceDir)?;
        }
        // 12. workspace_access.
        let access = validate_workspace_access(&req.workspace_access, &req.workspace_dir)
            .map_err(|_| CreateError::InvalidWorkspaceAccess)?;
        // 13. Compute.
        req.compute
            .validate()
            .map_err(CreateError::InvalidCompute)?;
        // 14. SSRF (DNS is resolved here, bounded by the resolver's timeout).
        if !req.url.is_empty() {
            self.check_url(&req.url)
                .await
                .map_err(CreateError::UnsafeUrl)?;
        }
        // 17. delivery_mode (berth: before any write).
        let delivery_mode = if req.delivery_mode.is_empty() {
            DeliveryMode::Push
        } else {
            DeliveryMode::parse(&req.delivery_mode).ok_or(CreateError::InvalidDeliveryMode)?
        };
        // berth: secrets become environment variables of the agent (§12 #15).
        for (key, value) in &req.secrets {
            if !is_env_name(key) || value.expose_secret().len() > SECRET_VALUE_CAP {
                return Err(CreateError::InvalidSecret(key.clone()));
            }
        }
        // berth: the parent must be a UUID (existence is checked inside the create transaction).
        let parent_id = match req.parent_id.as_deref() {
            None | Some("") => None,
            Some(p) => Some(WorkspaceId::parse(p).map_err(|_| CreateError::InvalidParentId)?),
        };
        if req.budget_limit.is_some_and(|b| b < 0) {
            return Err(CreateError::InvalidBudget);
        }

        // Secrets written with the row: the request's, then MODEL and LLM_PROVIDER (§7.4), which
        // win over request values of the same name as in the reference (they were upserted after).
        let mut secrets: BTreeMap<String, SecretString> = req.secrets.into_iter().collect();
        if !req.model.is_empty() {
            secrets.insert("MODEL".into(), SecretString::from(req.model.clone()));
            if let Some(provider) = derive_provider_from_model_slug(&req.model) {
                secrets.insert(
                    "LLM_PROVIDER".into(),
                    SecretString::from(provider.to_owned()),
                );
            }
        }
        let runtime = if external {
            normalize_external_runtime(&req.runtime).to_owned()
        } else {
            req.runtime
        };
        Ok(Plan {
            name: req.name,
            role,
            tier,
            runtime,
            model: req.model,
            template: req.template,
            required_env: resolved
                .as_ref()
                .map(|t| t.manifest.required_env.clone())
                .unwrap_or_default(),
            template_path: resolved.filter(|t| t.exists).map(|t| t.path),
            external,
            // The reference validates a container workspace's URL but then ignores it (§2.1 step 14).
            url: (external && !req.url.is_empty()).then_some(req.url),
            delivery_mode,
            workspace_dir: (!req.workspace_dir.is_empty()).then_some(req.workspace_dir),
            workspace_access: access.as_str().to_owned(),
            parent_id,
            compute: req.compute,
            secrets: secrets.into_iter().collect(),
        })
    }

    pub(crate) async fn check_url(&self, url: &str) -> Result<(), SsrfError> {
        match check_agent_url(&self.config.ssrf, url)? {
            UrlTarget::Safe => Ok(()),
            UrlTarget::Resolve { host } => {
                let ips = self
                    .resolver
                    .resolve(&host)
                    .await
                    .map_err(|e| SsrfError::dns(&host, &e))?;
                check_resolved(&self.config.ssrf, &host, &ips)
            }
        }
    }

    /// Picks a free name and writes the whole create in one transaction.
    async fn write(
        &self,
        plan: &Plan,
        req: &CreateRequest,
        ctx: &CreateContext,
        origin: Option<&WorkspaceOrigin>,
    ) -> Result<Created, CreateError> {
        let candidates: Vec<String> = (0..NAME_ATTEMPTS)
            .map(|k| name_candidate(&plan.name, k))
            .collect();
        let taken = self
            .store
            .taken_names(plan.parent_id, candidates.clone())
            .await
            .map_err(CreateError::Store)?;
        let name = candidates
            .into_iter()
            .find(|c| !taken.contains(c))
            .ok_or(CreateError::NameExhausted)?;
        if name != plan.name {
            tracing::info!(workspace.name = %name, "name taken; auto-suffixed");
        }

        let id = WorkspaceId::new_v4();
        let claim = if origin.is_none() {
            self.pool_shape(plan)
        } else {
            // A bundle's files would have to be in place when the agent starts: cold.
            None
        };
        let tier = i64::from(plan.tier.get());
        let mut provisioning = json!({"name": name, "tier": tier, "runtime": plan.runtime});
        if let Some(origin) = origin {
            // The reference's import event names its source bundle (REFERENCE.md §8).
            provisioning["source_bundle_id"] = origin.source_bundle_id.clone().into();
        }
        let mut events = vec![NewEvent {
            event_type: EventType::WorkspaceProvisioning,
            payload: provisioning,
        }];
        let mut status = WorkspaceStatus::Provisioning;
        let mut token = None;
        // A create that may take a warm-pool member mints the agent's credentials now, in its
        // own transaction, so the handover needs no further write (`pool.rs`); when no member is
        // ready, the cold start revokes this token and mints its own, as every start does.
        let mut credentials = None;
        if claim.is_some() {
            let minted = crate::token::mint();
            token = Some(minted.stored);
            credentials = Some(crate::provisioning::StartCredentials {
                token: minted.plaintext,
                inbound_secret: crate::token::mint().plaintext,
            });
        }
        let response = if plan.external {
            let transition = if plan.url.is_some() {
                Transition::ExternalConnected
            } else {
                Transition::ExternalAwaiting
            };
            status = transition.apply(status).unwrap_or(status);
            if let Some(event_type) = transition.event() {
                events.push(NewEvent {
                    event_type,
                    payload: json!({"name": name, "external": true}),
                });
            }
            let connection = if plan.url.is_none() {
                let minted = crate::token::mint();
                let payload = berth_domain::external::connection_payload(
                    &ctx.platform_url,
                    id.as_uuid(),
                    &name,
                    minted.expose(),
                );
                token = Some(minted.stored);
                Some(payload)
            } else {
                None
            };
            CreateResponse {
                id,
                external: Some(true),
                status,
                workspace_access: None,
                connection,
            }
        } else {
            CreateResponse {
                id,
                external: None,
                status,
                workspace_access: Some(plan.workspace_access.clone()),
                connection: None,
            }
        };
        let idempotency =
            match &ctx.idempotency_key {
                Some(key) => Some(NewIdempotency {
                    key: key.clone(),
                    request_hash: ctx.request_hash,
                    status: 201,
                    body: SecretString::from(serde_json::to_string(&response).map_err(|e| {
                        CreateError::Store(berth_store::Error::Corrupt(e.to_string()))
                    })?),
                }),
                None => None,
            };
        let new = NewWorkspace {
            id,
            name: name.clone(),
            role: plan.role.clone(),
            tier,
            runtime: plan.runtime.clone(),
            status,
            url: plan.url.clone(),
            parent_id: plan.parent_id,
            workspace_dir: plan.workspace_dir.clone(),
            workspace_access: plan.workspace_access.clone(),
            budget_limit: req.budget_limit,
            max_concurrent_tasks: berth_domain::validation::max_concurrent_tasks(
                req.max_concurrent_tasks,
            ),
            delivery_mode: plan.delivery_mode.as_str().to_owned(),
            compute: plan.compute.canonical_json(),
            secrets: plan.secrets.clone(),
            canvas: req.canvas,
            token,
            inbound_secret: credentials.as_ref().map(|c| c.inbound_secret.clone()),
            events,
            provisioning_started_at: (!plan.external).then(berth_store::now),
            idempotency,
            // Every later start builds its config from this template (when it still exists).
            template: (!plan.external && !plan.template.is_empty()).then(|| plan.template.clone()),
            claim: claim.clone(),
        };
        let written = match origin {
            None => self.store.create_workspace(new).await,
            Some(origin) => {
                self.store
                    .create_imported_workspace(new, origin.clone())
                    .await
            }
        };
        let mut response = response;
        let mut id = id;
        let claimed = match written {
            Ok(claimed) => claimed,
            Err(berth_store::Error::ParentNotFound) => return Err(CreateError::ParentNotFound),
            Err(e @ berth_store::Error::Backend(_)) => {
                // The error may have come after the database committed (a connection lost, or an
                // unexpected message, while reading COMMIT's answer): the row decides. A create
                // that committed answers 201; the error is logged, not returned.
                // (A create that claimed a pool member took the member's id, which is not
                // known here: it reads as not committed, and the provision-timeout sweep fails
                // the row should it exist.)
                match self.store.get_workspace(id).await {
                    Ok(Some(_)) => {
                        tracing::warn!(workspace.id = %id, error = %e, "create: the store reported an error, but the workspace was committed");
                    }
                    _ => return Err(CreateError::Store(e)),
                }
                None
            }
            Err(other) => return Err(CreateError::Store(other)),
        };
        if let Some(shape) = &claim {
            self.note_claim(shape, claimed.as_ref());
        }
        if let Some(member) = &claimed {
            // The row took the member's id (the stored idempotent answer says so too).
            id = member.id;
            response.id = member.id;
        }
        self.invalidate_hierarchy().await;
        tracing::info!(workspace.id = %id, workspace.runtime = %plan.runtime, workspace.status = %status, "workspace created");
        self.note_created(id, plan.external);

        self.seed_memories(id, &req.initial_memories).await;
        if !plan.external {
            let provision = ProvisionPlan {
                id,
                name,
                runtime: plan.runtime.clone(),
                tier: plan.tier.get(),
                role: plan.role.clone().unwrap_or_default(),
                model: plan.model.clone(),
                template: plan.template.clone(),
                template_path: plan.template_path.clone(),
                workspace_dir: plan.workspace_dir.clone(),
                workspace_access: plan.workspace_access.clone(),
                compute: plan.compute.canonical_json(),
                required_env: plan.required_env.clone(),
                config_files: origin
                    .map(|o| {
                        o.files
                            .iter()
                            .map(|(path, content)| (path.clone(), content.clone().into_bytes()))
                            .collect()
                    })
                    .unwrap_or_default(),
                config_edits: Vec::new(),
                credentials: credentials.filter(|_| claimed.is_some()),
                claimed,
            };
            self.start_provisioning(provision).await;
        }
        Ok(Created {
            response,
            replayed: false,
        })
    }

    /// The warm-pool shape a create of `plan` can claim a member of: a container workspace
    /// without a host directory whose shape a configured pool has (`pool.rs`).
    fn pool_shape(&self, plan: &Plan) -> Option<String> {
        if plan.external || plan.workspace_dir.is_some() {
            return None;
        }
        let shape = plan.pool_shape();
        self.pools.by_shape(&shape).map(|_| shape)
    }

    /// What a member of a pool of `template` (at `tier`, else the template's) is started from,
    /// and its shape: the template is checked as a create of it with no other field would be. The model is not part of the
    /// shape (it reaches the agent with the handover), so a template without one is given a
    /// stand-in for the check.
    pub(crate) async fn pool_member_plan(
        &self,
        template: &str,
        tier: Option<u8>,
    ) -> Result<(String, ProvisionPlan), String> {
        let request = |model: &str| CreateRequest {
            name: "warm-pool-member".into(),
            template: template.to_owned(),
            model: model.to_owned(),
            tier: tier.map_or(0, i64::from),
            ..Default::default()
        };
        let plan = match self.validate(request("")).await {
            Err(CreateError::ModelRequired { .. }) => self.validate(request("pool-member")).await,
            other => other,
        }
        .map_err(|e| e.to_string())?;
        if plan.external {
            return Err(format!(
                "runtime {:?} runs outside berth: there is nothing to start ahead",
                plan.runtime
            ));
        }
        let shape = plan.pool_shape();
        let member = ProvisionPlan {
            id: WorkspaceId::new_v4(),
            name: String::new(),
            runtime: plan.runtime,
            tier: plan.tier.get(),
            role: String::new(),
            model: String::new(),
            template: plan.template,
            template_path: plan.template_path,
            workspace_dir: None,
            workspace_access: plan.workspace_access,
            compute: plan.compute.canonical_json(),
            required_env: Vec::new(),
            config_files: BTreeMap::new(),
            config_edits: Vec::new(),
            claimed: None,
            credentials: None,
        };
        Ok((shape, member))
    }

    /// Sends `initial_memories` to the memory plugin in the background; never fails a create.
    async fn seed_memories(&self, id: WorkspaceId, memories: &[InitialMemory]) {
        use berth_domain::redact::{
            MEMORY_CONTENT_CAP, MemoryScope, redact_secrets, truncate_utf8,
        };
        if memories.is_empty() {
            return;
        }
        let Some(plugin) = self.memory.clone() else {
            tracing::warn!(workspace.id = %id, count = memories.len(), "initial_memories ignored: no memory plugin configured");
            return;
        };
        let contents: Vec<String> = memories
            .iter()
            .filter(|m| MemoryScope::parse(&m.scope).is_some() && !m.content.is_empty())
            .map(|m| redact_secrets(truncate_utf8(&m.content, MEMORY_CONTENT_CAP)))
            .collect();
        self.spawn(async move {
            for content in contents {
                if let Err(e) = plugin.commit_memory(id, content).await {
                    tracing::warn!(workspace.id = %id, error = %e, "memory seed failed");
                }
            }
        })
        .await;
    }
}

/// Constant-time comparison of two hashes.
fn subtle_eq(a: &[u8; 32], b: &[u8; 32]) -> std::primitive::bool {
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}
