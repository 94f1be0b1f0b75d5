//! Lifecycle operations: update, delete (cascade, purge), restart (coalesced), pause, resume,
//! state, abilities, budget, config, hibernate and wake, and the control-plane callbacks
//! (REFERENCE.md §2.4–2.11, §2.19, §2.21, §5.6, §5.7; DECISIONS.md §2 items 4, 10, 14, 15).

use std::collections::HashMap;

use berth_domain::WorkspaceId;
use berth_domain::runtime::{KNOWN_RUNTIMES, is_external_like};
use berth_domain::status::{Transition, WorkspaceStatus};
use berth_domain::validation::{Tier, validate_workspace_dir, validate_workspace_fields};
use berth_provision::BackendKind;
use berth_store::{StatusChange, Workspace, WorkspacePatch};
use secrecy::ExposeSecret as _;
use serde_json::{Map, Value, json};

use crate::provisioning::ProvisionPlan;
use crate::service::WorkspaceService;
use crate::templates::ResolvedTemplate;

/// Keys of `PATCH /workspaces/{id}` only the admin credential may change (DECISIONS.md §2.4).
const ADMIN_ONLY_KEYS: &[&str] = &[
    "tier",
    "runtime",
    "parent_id",
    "workspace_dir",
    "hibernation_idle_minutes",
];

/// Largest `hibernation_idle_minutes` (ten years): the hibernation monitor adds it to a
/// timestamp, and a larger one would leave the calendar.
const HIBERNATION_IDLE_MINUTES_MAX: i64 = 10 * 365 * 24 * 60;

/// Why a lifecycle operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// Unknown (or removed, where that matters) workspace.
    #[error("workspace not found")]
    NotFound,
    /// A field has the wrong type or breaks a rule; the message says which.
    #[error("{0}")]
    Invalid(String),
    /// A workspace token tried to change an admin-only field.
    #[error("{0} can only be changed with the admin credential")]
    AdminOnly(String),
    /// The new name is taken by a live sibling.
    #[error("workspace name already in use; please pick a different name")]
    NameTaken,
    /// Children exist and the delete was not confirmed.
    #[error("confirmation required")]
    ConfirmationRequired {
        /// Live direct children `(id, name)`.
        children: Vec<(WorkspaceId, String)>,
    },
    /// The rows were marked removed but some stops failed.
    #[error("workspace marked removed, but {} stop call(s) failed — please retry: {}", failures.len(), failures.join("; "))]
    StopFailures {
        /// Rows marked removed.
        removed: u64,
        /// The failures.
        failures: Vec<String>,
    },
    /// An ancestor is paused.
    #[error("parent workspace \"{0}\" is paused — resume it first")]
    ParentPaused(String),
    /// No provisioning backend.
    #[error("provisioner not available")]
    NoBackend,
    /// The status does not allow it.
    #[error("workspace is {0}")]
    InvalidState(WorkspaceStatus),
    /// Pause of a missing or paused workspace.
    #[error("workspace not found or already paused")]
    NotPausable,
    /// Resume of a workspace that is not paused.
    #[error("workspace not found or not paused")]
    NotPaused,
    /// Hibernate of a workspace that is not `online`/`degraded`.
    #[error("workspace not found or not in a hibernatable state (must be online or degraded)")]
    NotHibernatable,
    /// Hibernate without `force` of a workspace with active tasks.
    #[error("workspace has active tasks; use ?force=true to terminate them")]
    ActiveTasks(i64),
    /// Hibernate of an external-like workspace: the platform runs nothing it could stop.
    #[error("{0} workspaces are operator-driven — the platform has nothing to hibernate")]
    OperatorDriven(String),
    /// Wake of a workspace that is not hibernated.
    #[error("workspace not found or not hibernated")]
    NotHibernated,
    /// The backend keeps no console (only a control plane does).
    #[error("console output unavailable on this deployment (no control plane)")]
    ConsoleUnavailable,
    /// The control plane failed to hand out the console.
    #[error("control plane returned an error fetching console output")]
    ConsoleFailed(#[source] berth_provision::Error),
    /// The store failed.
    #[error("{context}")]
    Store {
        /// The public message.
        context: &'static str,
        /// The cause.
        #[source]
        source: berth_store::Error,
    },
}

fn store_err(context: &'static str) -> impl FnOnce(berth_store::Error) -> LifecycleError {
    move |source| LifecycleError::Store { context, source }
}

/// What a restart request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestartOutcome {
    /// A restart cycle was queued (coalesced with any running one).
    Provisioning {
        /// Which configuration the cycle uses.
        config_dir: String,
    },
    /// Nothing to restart (external-like or mock runtime).
    Noop {
        /// The runtime.
        runtime: String,
        /// Why.
        message: String,
    },
}

/// The `/state` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkspaceState {
    /// No such row.
    Deleted,
    /// Removed tombstone.
    Removed,
    /// A live workspace and its status.
    Live(WorkspaceStatus),
}

fn string_field(body: &Map<String, Value>, key: &str) -> Result<Option<String>, LifecycleError> {
    match body.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(LifecycleError::Invalid(format!("{key} must be a string"))),
    }
}

fn nullable_string(
    body: &Map<String, Value>,
    key: &str,
) -> Result<Option<Option<String>>, LifecycleError> {
    match body.get(key) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) if s.is_empty() => Ok(Some(None)),
        Some(Value::String(s)) => Ok(Some(Some(s.clone()))),
        Some(_) => Err(LifecycleError::Invalid(format!(
            "{key} must be a string or null"
        ))),
    }
}

impl WorkspaceService {
    async fn live_row(
        &self,
        id: WorkspaceId,
        context: &'static str,
    ) -> Result<Workspace, LifecycleError> {
        self.store
            .get_workspace(id)
            .await
            .map_err(store_err(context))?
            .filter(|w| w.status != WorkspaceStatus::Removed)
            .ok_or(LifecycleError::NotFound)
    }

    /// The name of the nearest paused ancestor, if any.
    async fn paused_ancestor(&self, id: WorkspaceId) -> Result<Option<String>, LifecycleError> {
        let tree = self.hierarchy().await.map_err(store_err("lookup failed"))?;
        let mut current = tree.parent(id).flatten();
        for _ in 0..berth_domain::access::MAX_ANCESTOR_WALK {
            let Some(p) = current else { return Ok(None) };
            if let Some(row) = self
                .store
                .get_workspace(p)
                .await
                .map_err(store_err("lookup failed"))?
                && row.status == WorkspaceStatus::Paused
            {
                return Ok(Some(row.name));
            }
            current = tree.parent(p).flatten();
        }
        Ok(None)
    }

    /// `PATCH /workspaces/{id}`: validated, then applied in one transaction. Returns whether the
    /// change needs a restart (`workspace_dir` was present).
    pub async fn update(
        &self,
        id: WorkspaceId,
        body: Map<String, Value>,
        admin: bool,
    ) -> Result<bool, LifecycleError> {
        if !admin && let Some(key) = ADMIN_ONLY_KEYS.iter().find(|k| body.contains_key(**k)) {
            return Err(LifecycleError::AdminOnly((*key).to_owned()));
        }
        let name = string_field(&body, "name")?;
        let role = nullable_string(&body, "role")?;
        let runtime = string_field(&body, "runtime")?;
        validate_workspace_fields(
            name.as_deref().unwrap_or(""),
            role.clone().flatten().as_deref().unwrap_or(""),
            "",
            runtime.as_deref().unwrap_or(""),
        )
        .map_err(|e| LifecycleError::Invalid(e.to_string()))?;
        if name.as_deref() == Some("") {
            return Err(LifecycleError::Invalid("name must not be empty".into()));
        }
        let tier = match body.get("tier") {
            None => None,
            Some(v) => match v.as_i64().map(Tier::resolve) {
                Some(Ok(t)) if v.as_i64() != Some(0) => Some(i64::from(t.get())),
                _ => {
                    return Err(LifecycleError::Invalid(
                        "tier must be between 1 and 4".into(),
                    ));
                }
            },
        };
        if let Some(rt) = &runtime
            && !self.templates.is_known_runtime(rt)
        {
            return Err(LifecycleError::Invalid(format!(
                "unknown runtime {rt:?} (known: {}, or a template's runtime)",
                KNOWN_RUNTIMES.join(", ")
            )));
        }
        let workspace_dir = nullable_string(&body, "workspace_dir")?;
        if let Some(Some(dir)) = &workspace_dir {
            validate_workspace_dir(dir)
                .map_err(|_| LifecycleError::Invalid("invalid workspace directory".into()))?;
        }
        let parent_id = match nullable_string(&body, "parent_id")? {
            None => None,
            Some(None) => Some(None),
            Some(Some(p)) => {
                let p = WorkspaceId::parse(&p)
                    .map_err(|_| LifecycleError::Invalid("invalid parent_id".into()))?;
                let tree = self.hierarchy().await.map_err(store_err("lookup failed"))?;
                if p == id || tree.is_ancestor(id, p) {
                    return Err(LifecycleError::Invalid(
                        "parent_id would create a cycle".into(),
                    ));
                }
                Some(Some(p))
            }
        };
        let hibernation_idle_minutes = match body.get("hibernation_idle_minutes") {
            None => None,
            Some(Value::Null) => Some(None),
            Some(v) => match v.as_i64() {
                Some(m) if m > HIBERNATION_IDLE_MINUTES_MAX => {
                    return Err(LifecycleError::Invalid(format!(
                        "hibernation_idle_minutes must be at most {HIBERNATION_IDLE_MINUTES_MAX} (ten years)"
                    )));
                }
                Some(m) if m > 0 => Some(Some(m)),
                _ => {
                    return Err(LifecycleError::Invalid(
                        "hibernation_idle_minutes must be a positive integer or null".into(),
                    ));
                }
            },
        };
        let number = |key: &str| match body.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| LifecycleError::Invalid(format!("{key} must be a number"))),
        };
        let position = match (number("x")?, number("y")?) {
            (Some(x), Some(y)) => Some((x, y)),
            _ => None,
        };
        let collapsed = match body.get("collapsed") {
            None => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => {
                return Err(LifecycleError::Invalid(
                    "collapsed must be a boolean".into(),
                ));
            }
        };
        let needs_restart = body.contains_key("workspace_dir");
        let parent_changed = parent_id.is_some();
        let patch = WorkspacePatch {
            name,
            role,
            tier,
            parent_id,
            runtime,
            workspace_dir,
            hibernation_idle_minutes,
            position,
            collapsed,
            ..WorkspacePatch::default()
        };
        self.store
            .update_workspace(id, patch)
            .await
            .map_err(|e| match e {
                berth_store::Error::NotFound => LifecycleError::NotFound,
                berth_store::Error::NameTaken => LifecycleError::NameTaken,
                berth_store::Error::ParentNotFound => {
                    LifecycleError::Invalid("parent workspace not found".into())
                }
                other => LifecycleError::Store {
                    context: "update failed",
                    source: other,
                },
            })?;
        if parent_changed {
            self.invalidate_hierarchy().await;
        }
        Ok(needs_restart)
    }

    /// `DELETE /workspaces/{id}`: marks the workspace and its live descendants removed (one
    /// transaction), stops them, and with `purge` deletes every row and backend resource they own.
    /// Returns how many descendants were cascaded.
    pub async fn delete(
        &self,
        id: WorkspaceId,
        confirm: bool,
        purge: bool,
    ) -> Result<usize, LifecycleError> {
        let row = self
            .store
            .get_workspace(id)
            .await
            .map_err(store_err("internal error processing delete request"))?
            .ok_or(LifecycleError::NotFound)?;
        let descendants = self
            .store
            .live_descendants(id)
            .await
            .map_err(store_err("failed to check children"))?;
        if !descendants.is_empty() && !confirm {
            let tree = self
                .hierarchy()
                .await
                .map_err(store_err("failed to check children"))?;
            let mut children = Vec::new();
            for d in descendants
                .iter()
                .filter(|d| tree.parent(**d) == Some(Some(id)))
            {
                if let Some(w) = self
                    .store
                    .get_workspace(*d)
                    .await
                    .map_err(store_err("failed to check children"))?
                {
                    children.push((w.id, w.name));
                }
            }
            if !children.is_empty() {
                return Err(LifecycleError::ConfirmationRequired { children });
            }
        }
        let removed = self.store.remove_workspaces(id, descendants.clone()).await;
        self.forget_tokens(&descendants);
        self.forget_tokens(&[id]);
        let mut removed = removed.map_err(store_err("internal error processing delete request"))?;
        self.invalidate_hierarchy().await;
        // A child created while this delete ran (its create saw the parent still live) is not
        // in the list read above, and a live row under a removed one is out of reach of every
        // later cascade. Found by the model test; such rows are removed (and stopped) as well.
        let mut descendants = descendants;
        let tree = self
            .hierarchy()
            .await
            .map_err(store_err("internal error processing delete request"))?;
        for w in tree.descendants(id) {
            if descendants.contains(&w) {
                continue;
            }
            let live = self
                .store
                .get_workspace(w)
                .await
                .map_err(store_err("internal error processing delete request"))?
                .is_some_and(|r| r.status != WorkspaceStatus::Removed);
            if live {
                let more = self.store.remove_workspaces(w, Vec::new()).await;
                self.forget_tokens(&[w]);
                removed += more.map_err(store_err("internal error processing delete request"))?;
                descendants.push(w);
            }
        }
        let mut failures = Vec::new();
        let mut all: Vec<WorkspaceId> = descendants.iter().rev().copied().collect();
        all.push(id);
        if purge {
            // A purge takes the removed part of the subtree, also parts removed by an earlier
            // delete. A child created while this delete ran is live and not this delete's to
            // take (found by the model test: an unconfirmed purge erased such a child's row
            // without a removal); it stays, as a root once its parent's row is gone.
            let tree = self.hierarchy().await.map_err(store_err("purge failed"))?;
            let mut subtree = tree.descendants(id);
            subtree.reverse();
            subtree.push(id);
            all = Vec::with_capacity(subtree.len());
            for w in subtree {
                let row = self
                    .store
                    .get_workspace(w)
                    .await
                    .map_err(store_err("purge failed"))?;
                match row {
                    Some(r) if r.status == WorkspaceStatus::Removed => all.push(w),
                    Some(r) => {
                        tracing::info!(workspace.id = %w, workspace.status = %r.status, "purge: leaving a workspace created during the delete");
                    }
                    None => {}
                }
            }
        }
        if self.provisioner.kind() != BackendKind::None {
            for w in &all {
                // The rows are `removed` already: a start racing this either finished before
                // the stop or sees `removed` when it checks and stops itself.
                if let Err(e) = self.provisioner.stop(*w).await {
                    failures.push(format!("{w}: {e}"));
                }
            }
        }
        if !failures.is_empty() {
            return Err(LifecycleError::StopFailures { removed, failures });
        }
        if purge {
            // Rows first, backend second: a start racing the purge either finished before the
            // backend purge below (which then takes what it created) or finds no row when it
            // checks and purges again itself (found by the model test).
            self.store
                .purge_workspaces(all.clone())
                .await
                .map_err(store_err("purge failed"))?;
            for w in &all {
                if let Err(e) = self.provisioner.purge(*w).await {
                    tracing::warn!(workspace.id = %w, error = %e, "purging backend resources failed");
                }
                self.drop_backend_lock(*w);
            }
        }
        tracing::info!(workspace.id = %id, workspace.status = %row.status, cascade = descendants.len(), purge, "workspace deleted");
        Ok(descendants.len())
    }

    /// `GET /workspaces/{id}/state`.
    pub async fn state(&self, id: WorkspaceId) -> Result<WorkspaceState, LifecycleError> {
        Ok(
            match self
                .store
                .get_workspace(id)
                .await
                .map_err(store_err("query failed"))?
            {
                None => WorkspaceState::Deleted,
                Some(w) if w.status == WorkspaceStatus::Removed => WorkspaceState::Removed,
                Some(w) => WorkspaceState::Live(w.status),
            },
        )
    }

    /// `POST /workspaces/{id}/restart`: checks, then queues a coalesced restart cycle.
    pub async fn restart(&self, id: WorkspaceId) -> Result<RestartOutcome, LifecycleError> {
        self.restart_with(id, None).await
    }

    /// [`Self::restart`] with the body's explicit `template` (REFERENCE.md §5.6 step 1): it must
    /// name an existing catalog template (else [`LifecycleError::Invalid`], nothing changed), and
    /// becomes the template this and every later start builds from.
    pub async fn restart_with(
        &self,
        id: WorkspaceId,
        template: Option<&str>,
    ) -> Result<RestartOutcome, LifecycleError> {
        let template = template.filter(|t| !t.is_empty());
        if let Some(name) = template {
            let resolved = self
                .templates
                .resolve(name)
                .map_err(|e| LifecycleError::Invalid(format!("invalid template: {e}")))?;
            if !resolved.exists {
                return Err(LifecycleError::Invalid(format!(
                    "invalid template: {name:?} not found"
                )));
            }
        }
        let row = self
            .store
            .get_workspace(id)
            .await
            .map_err(store_err("lookup failed"))?
            .ok_or(LifecycleError::NotFound)?;
        if row.status == WorkspaceStatus::Removed {
            return Err(LifecycleError::InvalidState(row.status));
        }
        if let Some(name) = self.paused_ancestor(id).await? {
            return Err(LifecycleError::ParentPaused(name));
        }
        if is_external_like(&row.runtime) {
            return Ok(RestartOutcome::Noop {
                message: format!(
                    "{} workspaces are operator-driven — restart your local agent; platform has nothing to restart",
                    row.runtime
                ),
                runtime: row.runtime,
            });
        }
        if row.runtime == "mock" {
            return Ok(RestartOutcome::Noop {
                runtime: row.runtime,
                message: "mock workspaces have no container — restart is a no-op".into(),
            });
        }
        if self.provisioner.kind() == BackendKind::None {
            return Err(LifecycleError::NoBackend);
        }
        if Transition::Reprovision.apply(row.status).is_none() {
            return Err(LifecycleError::InvalidState(row.status));
        }
        if let Some(name) = template {
            self.store
                .set_workspace_template(id, Some(name.to_owned()))
                .await
                .map_err(store_err("update failed"))?;
        }
        self.request_restart(id).await;
        let config_dir = match (
            self.stored_template(id).await,
            self.templates.runtime_default(&row.runtime),
        ) {
            (Some((name, _)), _) => name,
            (None, Some(_)) => format!("{}-default", row.runtime),
            (None, None) => "generated".to_owned(),
        };
        Ok(RestartOutcome::Provisioning { config_dir })
    }

    /// Asks for a restart cycle. Requests are coalesced, never dropped (DECISIONS.md §2.14): a
    /// request that arrives while a cycle runs causes exactly one more cycle after it.
    pub async fn request_restart(&self, id: WorkspaceId) {
        if self.provisioner.kind() == BackendKind::None {
            return;
        }
        {
            let mut restarts = self.restarts.lock().await;
            if let Some(pending) = restarts.get_mut(&id) {
                *pending = true;
                return;
            }
            restarts.insert(id, false);
        }
        let svc = self.clone();
        self.spawn(async move {
            loop {
                svc.restart_cycle(id).await;
                let mut restarts = svc.restarts.lock().await;
                match restarts.get_mut(&id) {
                    Some(pending) if *pending => *pending = false,
                    _ => {
                        restarts.remove(&id);
                        return;
                    }
                }
            }
        })
        .await;
    }

    /// Number of restart cycles running (for tests and metrics).
    pub async fn restarts_in_flight(&self) -> usize {
        self.restarts.lock().await.len()
    }

    /// One restart cycle: stop, mark `provisioning`, provision again from the row.
    async fn restart_cycle(&self, id: WorkspaceId) {
        let row = match self.store.get_workspace(id).await {
            Ok(Some(w)) => w,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(workspace.id = %id, error = %e, "restart: lookup failed");
                return;
            }
        };
        if is_external_like(&row.runtime)
            || row.runtime == "mock"
            || Transition::Reprovision.apply(row.status).is_none()
        {
            return;
        }
        if let Ok(Some(_)) = self.paused_ancestor(id).await {
            return;
        }
        {
            let _backend = self.backend_lock(id).await;
            if let Err(e) = self.provisioner.stop(id).await {
                tracing::warn!(workspace.id = %id, error = %e, "restart: stop failed; provisioning anyway");
            }
            let change = StatusChange {
                transition: Transition::Reprovision,
                payload: json!({"name": row.name, "tier": row.tier, "runtime": row.runtime}),
                failure: None,
            };
            match self.store.transition(id, change).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    tracing::error!(workspace.id = %id, error = %e, "restart: could not mark provisioning");
                    return;
                }
            }
        }
        let plan = self.plan_from_row(&row).await;
        self.provision_now(plan).await;
    }

    /// The template the workspace was created (or last restarted) from, when it is still in the
    /// catalog; otherwise `None`, with a log line when one was stored but is gone.
    async fn stored_template(&self, id: WorkspaceId) -> Option<(String, ResolvedTemplate)> {
        let name = match self.store.workspace_template(id).await {
            Ok(name) => name?,
            Err(e) => {
                tracing::error!(workspace.id = %id, error = %e, "could not read the workspace's template");
                return None;
            }
        };
        match self.templates.resolve(&name) {
            Ok(t) if t.exists => Some((name, t)),
            Ok(_) => {
                tracing::warn!(workspace.id = %id, template = %name, "the workspace's template is no longer in the catalog; using the runtime default");
                None
            }
            Err(e) => {
                tracing::warn!(workspace.id = %id, template = %name, error = %e, "the workspace's template is unusable; using the runtime default");
                None
            }
        }
    }

    async fn plan_from_row(&self, row: &Workspace) -> ProvisionPlan {
        let model = match self.store.workspace_secrets(row.id).await {
            Ok(secrets) => secrets
                .into_iter()
                .find(|(k, _)| k == "MODEL")
                .map(|(_, v)| v.expose_secret().to_owned())
                .unwrap_or_default(),
            Err(_) => String::new(),
        };
        // The creation (or last restart's) template, when it is still in the catalog.
        let template = self.stored_template(row.id).await;
        // A bundle import's files are part of the workspace: every provisioning writes them.
        let config_files = match self.store.workspace_files(row.id).await {
            Ok(files) => files
                .into_iter()
                .map(|(path, content)| (path, content.into_bytes()))
                .collect(),
            Err(e) => {
                tracing::error!(workspace.id = %row.id, error = %e, "could not read the workspace's bundle files");
                Default::default()
            }
        };
        // The files API's edits of `/configs` are part of the workspace too.
        let config_edits = match self.store.config_edits(row.id).await {
            Ok(edits) => edits,
            Err(e) => {
                tracing::error!(workspace.id = %row.id, error = %e, "could not read the workspace's config edits");
                Vec::new()
            }
        };
        ProvisionPlan {
            config_edits,
            claimed: None,
            credentials: None,
            id: row.id,
            name: row.name.clone(),
            runtime: row.runtime.clone(),
            tier: u8::try_from(row.tier).unwrap_or(Tier::DEFAULT.get()),
            role: row.role.clone().unwrap_or_default(),
            model,
            workspace_dir: row.workspace_dir.clone(),
            workspace_access: row.workspace_access.clone(),
            compute: row.compute.clone(),
            required_env: match &template {
                Some((_, t)) => t.manifest.required_env.clone(),
                None => self
                    .templates
                    .runtime_default(&row.runtime)
                    .and_then(|_| {
                        self.templates
                            .resolve(&format!("{}-default", row.runtime))
                            .ok()
                    })
                    .map(|t| t.manifest.required_env)
                    .unwrap_or_default(),
            },
            template_path: template.as_ref().map(|(_, t)| t.path.clone()),
            template: template.map(|(name, _)| name).unwrap_or_default(),
            config_files,
        }
    }

    /// `POST /workspaces/{id}/pause`: stops the workspace and its live descendants and marks
    /// them `paused`. Returns how many were paused.
    pub async fn pause(&self, id: WorkspaceId) -> Result<usize, LifecycleError> {
        let row = self
            .live_row(id, "lookup failed")
            .await
            .map_err(|_| LifecycleError::NotPausable)?;
        if row.status == WorkspaceStatus::Paused {
            return Err(LifecycleError::NotPausable);
        }
        let mut targets = vec![id];
        targets.extend(
            self.store
                .live_descendants(id)
                .await
                .map_err(store_err("lookup failed"))?,
        );
        let mut paused = 0;
        for w in targets {
            let Some(row) = self
                .store
                .get_workspace(w)
                .await
                .map_err(store_err("lookup failed"))?
            else {
                continue;
            };
            // Marked first, stopped second: a start racing the pause either finished before
            // this stop or sees `paused` when it checks and stops itself.
            let change = StatusChange {
                transition: Transition::Paused,
                payload: json!({"name": row.name}),
                failure: None,
            };
            if self
                .store
                .transition(w, change)
                .await
                .map_err(store_err("pause failed"))?
            {
                paused += 1;
            }
            if self.provisioner.kind() != BackendKind::None
                && !is_external_like(&row.runtime)
                && let Err(e) = self.provisioner.stop(w).await
            {
                tracing::warn!(workspace.id = %w, error = %e, "pause: stop failed");
            }
        }
        Ok(paused)
    }

    /// `POST /workspaces/{id}/resume`: provisions the workspace and its paused descendants again
    /// (external-like ones go back to waiting for their agent). Returns how many resumed.
    /// berth: a hibernated workspace is woken instead ([`Self::wake`]; count 1).
    pub async fn resume(&self, id: WorkspaceId) -> Result<usize, LifecycleError> {
        let row = self
            .live_row(id, "lookup failed")
            .await
            .map_err(|_| LifecycleError::NotPaused)?;
        if row.status == WorkspaceStatus::Hibernated {
            // berth: resuming a hibernated workspace wakes it (it has no paused subtree).
            return self.wake(id).await.map(|()| 1);
        }
        if row.status != WorkspaceStatus::Paused {
            return Err(LifecycleError::NotPaused);
        }
        if let Some(name) = self.paused_ancestor(id).await? {
            return Err(LifecycleError::ParentPaused(name));
        }
        let mut targets = vec![row];
        for d in self
            .store
            .live_descendants(id)
            .await
            .map_err(store_err("lookup failed"))?
        {
            if let Some(w) = self
                .store
                .get_workspace(d)
                .await
                .map_err(store_err("lookup failed"))?
                && w.status == WorkspaceStatus::Paused
            {
                targets.push(w);
            }
        }
        let needs_backend = targets.iter().any(|w| !is_external_like(&w.runtime));
        if needs_backend && self.provisioner.kind() == BackendKind::None {
            return Err(LifecycleError::NoBackend);
        }
        let mut resumed = 0;
        for w in targets {
            let external = is_external_like(&w.runtime);
            let change = StatusChange {
                transition: if external {
                    Transition::ResumedExternal
                } else {
                    Transition::Resumed
                },
                payload: if external {
                    json!({"name": w.name, "external": true})
                } else {
                    json!({"name": w.name, "tier": w.tier, "runtime": w.runtime})
                },
                failure: None,
            };
            if self
                .store
                .transition(w.id, change)
                .await
                .map_err(store_err("resume failed"))?
            {
                resumed += 1;
                if !external {
                    let plan = self.plan_from_row(&w).await;
                    self.start_provisioning(plan).await;
                }
            }
        }
        Ok(resumed)
    }
}

/// A workspace's budget (`GET/PATCH /workspaces/{id}/budget`, REFERENCE.md §2.7), in USD cents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The limit; `None` is unlimited.
    pub limit: Option<i64>,
    /// Spend this month, as the agent's heartbeats report it.
    pub monthly_spend: i64,
}

impl Budget {
    /// What is left of the limit (negative when overspent); `None` when unlimited.
    pub fn remaining(&self) -> Option<i64> {
        self.limit.map(|l| l.saturating_sub(self.monthly_spend))
    }
}

/// Largest `log_tail` kept from a bootstrap-failed callback, and largest stored failure text.
pub const BOOTSTRAP_TAIL_CAP: usize = 8192;
/// Prefixed to a `log_tail` that was cut to its last [`BOOTSTRAP_TAIL_CAP`] bytes.
pub const TRUNCATION_MARKER: &str = "…[truncated]\n";
/// The error text of a bootstrap-failed callback that carries none.
pub const BOOTSTRAP_DEFAULT_ERROR: &str = "bootstrap failed — see log_tail";

/// The last `cap` bytes of `s`, moved forward to a character boundary, with
/// [`TRUNCATION_MARKER`] in front when anything was cut.
pub fn bootstrap_tail(s: &str, cap: usize) -> String {
    if s.len() <= cap {
        return s.to_owned();
    }
    let mut start = s.len() - cap;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("{TRUNCATION_MARKER}{}", &s[start..])
}

/// The first `cap` bytes of `s`, moved back to a character boundary.
pub fn utf8_head(s: &str, cap: usize) -> &str {
    if s.len() <= cap {
        return s;
    }
    let mut end = cap;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl WorkspaceService {
    /// `PATCH /workspaces/{id}/abilities` (admin): sets the given ability flags.
    pub async fn set_abilities(
        &self,
        id: WorkspaceId,
        broadcast_enabled: Option<bool>,
        talk_to_user_enabled: Option<bool>,
    ) -> Result<(), LifecycleError> {
        if broadcast_enabled.is_none() && talk_to_user_enabled.is_none() {
            return Err(LifecycleError::Invalid(
                "at least one ability field required".into(),
            ));
        }
        let patch = WorkspacePatch {
            broadcast_enabled,
            talk_to_user_enabled,
            ..WorkspacePatch::default()
        };
        self.store
            .update_workspace(id, patch)
            .await
            .map_err(not_found_or("update failed"))
    }

    /// `GET /workspaces/{id}/budget`.
    pub async fn budget(&self, id: WorkspaceId) -> Result<Budget, LifecycleError> {
        let row = self.live_row(id, "query failed").await?;
        Ok(Budget {
            limit: row.budget_limit,
            monthly_spend: row.monthly_spend,
        })
    }

    /// `PATCH /workspaces/{id}/budget` (admin): sets (or with `None` clears) the limit.
    pub async fn set_budget(
        &self,
        id: WorkspaceId,
        limit: Option<i64>,
    ) -> Result<Budget, LifecycleError> {
        if limit.is_some_and(|l| l < 0) {
            return Err(LifecycleError::Invalid(
                "budget_limit must be >= 0 (USD cents)".into(),
            ));
        }
        let patch = WorkspacePatch {
            budget_limit: Some(limit),
            ..WorkspacePatch::default()
        };
        self.store
            .update_workspace(id, patch)
            .await
            .map_err(not_found_or("update failed"))?;
        self.budget(id).await.map_err(|e| match e {
            LifecycleError::Store { source, .. } => LifecycleError::Store {
                context: "update failed",
                source,
            },
            other => other,
        })
    }

    /// `GET /workspaces/{id}/config`: the stored document, `{}` when there is none.
    pub async fn config(&self, id: WorkspaceId) -> Result<Value, LifecycleError> {
        self.live_row(id, "query failed").await?;
        Ok(self
            .store
            .workspace_config(id)
            .await
            .map_err(store_err("query failed"))?
            .unwrap_or_else(|| json!({})))
    }

    /// `PATCH /workspaces/{id}/config`: a shallow merge in one transaction; `null` deletes a key.
    pub async fn patch_config(
        &self,
        id: WorkspaceId,
        patch: Map<String, Value>,
    ) -> Result<Value, LifecycleError> {
        self.store
            .merge_workspace_config(id, patch)
            .await
            .map_err(not_found_or("failed to update config"))
    }

    /// `POST /admin/workspaces/{id}/bootstrap-failed` (REFERENCE.md §2.21): the control plane's
    /// watcher saw the machine's bootstrap crash. A `provisioning` workspace goes `failed` with
    /// code `BOOTSTRAP_FAILED`; any other status is left alone. Returns whether it changed.
    pub async fn bootstrap_failed(
        &self,
        id: WorkspaceId,
        error: Option<String>,
        log_tail: &str,
    ) -> Result<bool, LifecycleError> {
        self.live_row(id, "db update failed").await?;
        let error = error
            .filter(|e| !e.trim().is_empty())
            .unwrap_or_else(|| BOOTSTRAP_DEFAULT_ERROR.to_owned());
        let tail = bootstrap_tail(log_tail, BOOTSTRAP_TAIL_CAP);
        let text = if tail.is_empty() {
            error.clone()
        } else {
            format!("{error}\n\n{tail}")
        };
        let message = utf8_head(&text, BOOTSTRAP_TAIL_CAP).to_owned();
        let change = StatusChange {
            transition: Transition::ProvisionFailed,
            payload: json!({
                "error": error, "log_tail": tail, "code": "BOOTSTRAP_FAILED",
                "source": "bootstrap_watcher",
            }),
            failure: Some(("BOOTSTRAP_FAILED".to_owned(), message)),
        };
        let changed = self
            .record_provision_failure(id, change)
            .await
            .map_err(store_err("db update failed"))?;
        if changed {
            tracing::warn!(workspace.id = %id, "bootstrap failed (control-plane watcher)");
        }
        Ok(changed)
    }

    /// `GET /workspaces/{id}/console` (admin): the machine console, from a control plane.
    pub async fn console(&self, id: WorkspaceId) -> Result<String, LifecycleError> {
        self.live_row(id, "lookup failed").await?;
        match self.provisioner.console(id).await {
            Ok(Some(output)) => Ok(output),
            Ok(None) => Err(LifecycleError::ConsoleUnavailable),
            Err(e) => Err(LifecycleError::ConsoleFailed(e)),
        }
    }

    /// `POST /workspaces/{id}/hibernate` and the idle monitor (REFERENCE.md §2.11, §5.7): claims
    /// the workspace (`hibernating`; only with no active tasks unless `force`), stops it through
    /// the provisioner, and marks it `hibernated` with `WORKSPACE_HIBERNATED {name, tier}`.
    /// Unlike the reference, `force` really hibernates a busy workspace (§12 #31) and every
    /// backend is stopped, the control plane included (§12 #32).
    pub async fn hibernate(&self, id: WorkspaceId, force: bool) -> Result<(), LifecycleError> {
        let row = self
            .live_row(id, "lookup failed")
            .await
            .map_err(|e| match e {
                LifecycleError::NotFound => LifecycleError::NotHibernatable,
                other => other,
            })?;
        if Transition::HibernateStarted.apply(row.status).is_none() {
            return Err(LifecycleError::NotHibernatable);
        }
        if is_external_like(&row.runtime) {
            return Err(LifecycleError::OperatorDriven(row.runtime));
        }
        if row.active_tasks > 0 && !force {
            return Err(LifecycleError::ActiveTasks(row.active_tasks));
        }
        let claimed = self
            .store
            .claim_hibernation(id, !force)
            .await
            .map_err(store_err("hibernate failed"))?;
        if !claimed {
            // Something changed since the read: a heartbeat reported work, or another
            // operation moved the row. Say which.
            return Err(match self.store.get_workspace(id).await {
                Ok(Some(w))
                    if w.active_tasks > 0
                        && Transition::HibernateStarted.apply(w.status).is_some() =>
                {
                    LifecycleError::ActiveTasks(w.active_tasks)
                }
                _ => LifecycleError::NotHibernatable,
            });
        }
        if self.provisioner.kind() != BackendKind::None
            && let Err(e) = self.provisioner.stop(id).await
        {
            // As pause does: the row must not stay `hibernating`; the orphan sweep and the
            // next wake (which starts afresh) deal with a backend that did not stop.
            tracing::warn!(workspace.id = %id, error = %e, "hibernate: stop failed");
        }
        let change = StatusChange {
            transition: Transition::Hibernated,
            payload: json!({"name": row.name, "tier": row.tier}),
            failure: None,
        };
        let done = self
            .store
            .transition(id, change)
            .await
            .map_err(store_err("hibernate failed"))?;
        if done {
            tracing::info!(workspace.id = %id, force, "workspace hibernated");
        } else {
            tracing::info!(workspace.id = %id, "hibernate: the row moved on meanwhile (deleted or paused)");
        }
        Ok(())
    }

    /// Wakes a hibernated workspace (DECISIONS.md §2.14): `hibernated` → `provisioning` with
    /// `WORKSPACE_PROVISIONING {name, tier, runtime}`, then provisions it again from its row,
    /// reusing its volume. The reference's wake never happened (§12 #29).
    pub async fn wake(&self, id: WorkspaceId) -> Result<(), LifecycleError> {
        let row = self
            .live_row(id, "lookup failed")
            .await
            .map_err(|e| match e {
                LifecycleError::NotFound => LifecycleError::NotHibernated,
                other => other,
            })?;
        if row.status != WorkspaceStatus::Hibernated {
            return Err(LifecycleError::NotHibernated);
        }
        if let Some(name) = self.paused_ancestor(id).await? {
            return Err(LifecycleError::ParentPaused(name));
        }
        if self.provisioner.kind() == BackendKind::None {
            return Err(LifecycleError::NoBackend);
        }
        let change = StatusChange {
            transition: Transition::Woken,
            payload: json!({"name": row.name, "tier": row.tier, "runtime": row.runtime}),
            failure: None,
        };
        if !self
            .store
            .transition(id, change)
            .await
            .map_err(store_err("wake failed"))?
        {
            // Another wake (or a delete) won the compare-and-set.
            return Err(LifecycleError::NotHibernated);
        }
        tracing::info!(workspace.id = %id, "waking hibernated workspace");
        let plan = self.plan_from_row(&row).await;
        self.start_provisioning(plan).await;
        Ok(())
    }
}

/// Maps the store's `NotFound` to the operation's, anything else to a store error.
fn not_found_or(context: &'static str) -> impl FnOnce(berth_store::Error) -> LifecycleError {
    move |e| match e {
        berth_store::Error::NotFound => LifecycleError::NotFound,
        source => LifecycleError::Store { context, source },
    }
}

/// Per-workspace restart state: present while a cycle runs; `true` when another is pending.
pub(crate) type RestartMap = HashMap<WorkspaceId, bool>;

/// One async lock per workspace, held by a start until it has checked the status it finished
/// into, and by a restart cycle's stop ([`WorkspaceService::backend_lock`]).
pub(crate) type BackendLocks =
    std::sync::Mutex<HashMap<WorkspaceId, std::sync::Arc<tokio::sync::Mutex<()>>>>;

/// Statuses in which no agent may run: a start that finishes into one of them is undone.
/// Every start moves the row to `provisioning` first, so one that finishes into `failed` was
/// given up on while it ran (a provision timeout).
fn must_not_run(status: WorkspaceStatus) -> bool {
    matches!(
        status,
        WorkspaceStatus::Removed
            | WorkspaceStatus::Paused
            | WorkspaceStatus::Hibernating
            | WorkspaceStatus::Hibernated
            | WorkspaceStatus::Failed
    )
}

impl WorkspaceService {
    /// Serialises the starts (and restart stops) of one workspace. Pause, hibernate and delete
    /// do not wait for it: they change the status first and stop second, and a start checks the
    /// status it finished into ([`Self::undo_start_if_stopped`]). So a start that races one of
    /// them either ended before their stop (which then stops it) or sees their status (and
    /// stops itself): no agent outlives the operation that should have stopped it. The lock
    /// keeps that undo from hitting a newer start (a resume right after the pause).
    pub(crate) async fn backend_lock(&self, id: WorkspaceId) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self
                .backend_locks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            locks.entry(id).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// Forgets the lock and the start count of a purged workspace.
    fn drop_backend_lock(&self, id: WorkspaceId) {
        self.backend_locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&id);
        self.start_generations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&id);
    }

    /// Called (under [`Self::backend_lock`]) right after the backend started `id`: when the
    /// workspace was deleted, paused, hibernated or failed meanwhile, the fresh agent is
    /// stopped again.
    /// Returns whether it was.
    pub(crate) async fn undo_start_if_stopped(&self, id: WorkspaceId) -> bool {
        let status = match self.store.get_workspace(id).await {
            Ok(row) => row.map(|w| w.status),
            Err(e) => {
                tracing::error!(workspace.id = %id, error = %e, "could not re-read the started workspace");
                return false;
            }
        };
        if status.is_some_and(|s| !must_not_run(s)) {
            return false;
        }
        tracing::info!(workspace.id = %id, status = ?status, "the workspace was stopped while it started; stopping the new agent");
        // Purged meanwhile: the late start also re-created what the purge had removed
        // (directory, volumes), so it is purged again (found by the model test).
        let undone = match status {
            None => self.provisioner.purge(id).await,
            Some(_) => self.provisioner.stop(id).await,
        };
        if let Err(e) = undone {
            tracing::warn!(workspace.id = %id, error = %e, "stopping the late agent failed");
        }
        true
    }
}
