//! Handing a committed workspace to the provisioner, and recording failures.

use std::collections::BTreeMap;
use std::path::PathBuf;

use berth_domain::WorkspaceId;
use berth_domain::status::{Transition, WorkspaceStatus};
use berth_domain::template::{DefaultConfig, generated_default_config};
use berth_provision::{BackendKind, ProvisionRequest};
use berth_store::{IssueToken, SecretScope, StatusChange};
use panics::catch_unwind;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use crate::service::WorkspaceService;

/// What the provisioning task needs from a create.
#[derive(Debug, Clone)]
pub(crate) struct ProvisionPlan {
    pub(crate) id: WorkspaceId,
    pub(crate) name: String,
    pub(crate) runtime: String,
    pub(crate) tier: u8,
    pub(crate) role: String,
    pub(crate) model: String,
    pub(crate) template: String,
    pub(crate) template_path: Option<PathBuf>,
    pub(crate) workspace_dir: Option<String>,
    pub(crate) workspace_access: String,
    pub(crate) compute: serde_json::Value,
    /// Environment variables the template requires (`runtime_config.required_env`).
    pub(crate) required_env: Vec<String>,
    /// Files a bundle import stored for the workspace (`workspace_files`), written over the
    /// template or the generated `config.yaml`.
    pub(crate) config_files: BTreeMap<String, Vec<u8>>,
    /// The files API's edits of the configs directory (`workspace_config_edits`), applied last.
    pub(crate) config_edits: Vec<berth_store::ConfigEdit>,
    /// The warm-pool member the create took (`pool.rs`): the start is handed to it instead of
    /// starting an agent, and starts cold when the handover fails.
    pub(crate) claimed: Option<berth_store::ClaimedMember>,
    /// The token and inbound secret the create already stored (a warm-pool claim), handed to
    /// the agent instead of minting new ones.
    pub(crate) credentials: Option<StartCredentials>,
}

/// An agent's credentials, minted and stored before its start.
#[derive(Debug, Clone)]
pub(crate) struct StartCredentials {
    pub(crate) token: SecretString,
    pub(crate) inbound_secret: SecretString,
}

/// Operator credentials that a global secret must never hand to a workspace (REFERENCE.md §5.0
/// step 2); a workspace secret of the same name is the user's own and allowed.
fn is_forbidden_operator_key(key: &str) -> bool {
    const KEYS: &[&str] = &[
        "GITEA_TOKEN",
        "GITEA_PAT",
        "GITHUB_TOKEN",
        "GITHUB_PAT",
        "GH_TOKEN",
        "GITLAB_TOKEN",
        "GL_TOKEN",
        "BITBUCKET_TOKEN",
        "CP_ADMIN_API_TOKEN",
        "CP_ADMIN_TOKEN",
        "INFISICAL_OPERATOR_TOKEN",
        "INFISICAL_BOOTSTRAP_TOKEN",
        "RAILWAY_TOKEN",
        "RAILWAY_PERSONAL_API_TOKEN",
        "HETZNER_TOKEN",
        "HETZNER_API_TOKEN",
    ];
    KEYS.contains(&key)
        || key.starts_with("MOLECULE_OPERATOR_")
        || key.starts_with("BERTH_OPERATOR_")
}

impl WorkspaceService {
    /// Starts provisioning in a tracked background task. Any failure — an error, or a panic in
    /// the backend — marks the workspace `failed` with a code; it never stays `provisioning`.
    pub(crate) async fn start_provisioning(&self, plan: ProvisionPlan) {
        let svc = self.clone();
        // Counted before the task runs, so an older start failing meanwhile already sees it.
        let generation = self.begin_start(plan.id);
        self.spawn(async move { svc.provision_generation(plan, generation).await })
            .await;
    }

    /// Prepares and starts one workspace, recording the outcome (URL, or `failed` with a code).
    pub(crate) async fn provision_now(&self, plan: ProvisionPlan) {
        let generation = self.begin_start(plan.id);
        self.provision_generation(plan, generation).await;
    }

    async fn provision_generation(&self, plan: ProvisionPlan, generation: u64) {
        let svc = self;
        let id = plan.id;
        let no_backend = svc.provisioner.kind() == BackendKind::None;
        let clock = std::time::Instant::now();
        let mut secrets = Vec::new();
        let failure = match svc.prepare(&plan).await {
            Err((code, message)) => Some((code.to_owned(), message)),
            Ok(request) => {
                secrets = secret_values(&request);
                // Held until the status the start finished into is checked (lifecycle.rs).
                let _backend = svc.backend_lock(id).await;
                // A claimed warm-pool member gets the start handed over; its URL is on the row
                // since the create. Should the handover fail, the member is stopped and the
                // workspace starts cold, as if there had been no member.
                let mut handed_over = None;
                if let Some(member) = &plan.claimed {
                    match svc.hand_over(member, &request).await {
                        Ok(()) => {
                            handed_over = Some(berth_provision::Started {
                                url: Some(member.url.clone()),
                                instance_id: member.instance_id.clone(),
                            });
                        }
                        Err(e) => {
                            let e = redact(&e, &secrets);
                            tracing::warn!(workspace.id = %id, error = %e, "warm pool handover failed: starting cold");
                            if let Err(e) = svc.provisioner.stop(id).await {
                                tracing::warn!(workspace.id = %id, error = %e, "stopping the pool member failed");
                            }
                        }
                    }
                }
                let from_pool = handed_over.is_some();
                let provisioner = svc.provisioner.clone();
                let outcome = match handed_over {
                    Some(started) => Ok(Ok(started)),
                    None => catch_unwind(async move { provisioner.start(request).await }).await,
                };
                match outcome {
                    Ok(Ok(started)) => {
                        tracing::info!(workspace.id = %id, instance = ?started.instance_id, url = ?started.url, from_pool, "provisioning started");
                        let reported_url = started.url.is_some();
                        // A newer start (a wake or resume after a stop that overtook this
                        // one) has begun and will replace this agent: its URL must not reach
                        // the row, where the newer start's register would take it for its own.
                        let superseded = svc.is_superseded(id, generation);
                        let recorded = if from_pool || superseded {
                            Ok(())
                        } else {
                            svc.store
                                .set_provisioned(id, started.url, started.instance_id)
                                .await
                        };
                        if reported_url && recorded.is_ok() && !superseded {
                            // A register that arrived first waits for this (`registry.rs`).
                            svc.url_recorded.notify_waiters();
                        }
                        // Backends that report a URL run an agent berth can watch.
                        if reported_url && recorded.is_ok() && !superseded {
                            svc.watch_fresh_start(id, generation, &plan.runtime, secrets.clone());
                        }
                        // Deleted, paused or hibernated while it started: stopped again.
                        let undone = svc.undo_start_if_stopped(id).await;
                        match recorded {
                            Ok(()) => None,
                            Err(_) if undone => None,
                            Err(e) => Some((
                                "BACKEND_ERROR".to_owned(),
                                format!("could not record the started workspace: {e}"),
                            )),
                        }
                    }
                    Ok(Err(e)) => Some((e.code().to_owned(), e.to_string())),
                    Err(panic) => Some((
                        "START_FAILED".to_owned(),
                        format!("provision panic: {panic}"),
                    )),
                }
            }
        };
        svc.metrics
            .observe_provision(svc.provisioner.kind(), failure.is_none(), clock.elapsed());
        let Some((code, message)) = failure else {
            return;
        };
        // An agent's output can quote its environment: never store a secret in the row.
        let message = redact(&message, &secrets);
        tracing::warn!(workspace.id = %id, code = %code, error = %message, "provisioning failed");
        if svc.is_superseded(id, generation) {
            // A stop (hibernate, pause, delete) took this start's container away, and a newer
            // start (wake, resume, restart) has begun since: the row's `provisioning` is that
            // start's, which records its own outcome.
            tracing::info!(workspace.id = %id, "a newer start superseded this one; its failure is not recorded");
            return;
        }
        let change = StatusChange {
            transition: Transition::ProvisionFailed,
            payload: json!({"error": message, "code": code}),
            failure: Some((code, message)),
        };
        if let Err(e) = svc.record_provision_failure(id, change).await {
            tracing::error!(workspace.id = %id, error = %e, "could not mark workspace failed");
        }
        if no_backend {
            // The Config tab renders from workspace_config even for failed workspaces.
            let data = json!({"name": plan.name, "runtime": plan.runtime, "tier": plan.tier, "template": plan.template});
            if let Err(e) = svc.store.put_workspace_config(id, data).await {
                tracing::error!(workspace.id = %id, error = %e, "workspace_config write failed");
            }
        }
    }

    /// Watches a start that succeeded until its agent registers: an agent that exits first
    /// (it crashed, or cannot reach the platform) fails the workspace at once with
    /// `START_FAILED` and the tail of its output (secrets redacted), instead of leaving it
    /// `provisioning` until the provision timeout. The watch ends when the workspace leaves
    /// `provisioning`, when a newer start begins, or at the provisioning deadline.
    fn watch_fresh_start(
        &self,
        id: WorkspaceId,
        generation: u64,
        runtime: &str,
        secrets: Vec<String>,
    ) {
        let svc = self.clone();
        let deadline = tokio::time::Instant::now() + self.provision_timeout_for(runtime);
        // Not a tracked task: it only observes, and shutdown must not wait for it.
        tokio::spawn(async move {
            let exit = svc.provisioner.wait_exit(id);
            tokio::pin!(exit);
            loop {
                tokio::select! {
                    out = &mut exit => {
                        if let Ok(Some(said)) = out {
                            svc.fail_exited_start(id, generation, &redact(&said, &secrets)).await;
                        }
                        return;
                    }
                    () = tokio::time::sleep(START_WATCH_POLL) => {
                        if tokio::time::Instant::now() >= deadline || svc.is_superseded(id, generation) {
                            return;
                        }
                        match svc.store.get_workspace(id).await {
                            Ok(Some(w)) if w.status == WorkspaceStatus::Provisioning => {}
                            Ok(_) => return,
                            Err(e) => tracing::debug!(workspace.id = %id, error = %e, "start watch: lookup failed"),
                        }
                    }
                }
            }
        });
    }

    /// Marks a still-`provisioning` workspace whose fresh agent exited `failed`.
    async fn fail_exited_start(&self, id: WorkspaceId, generation: u64, said: &str) {
        if self.is_superseded(id, generation) {
            return;
        }
        let message = format!("the agent exited before it registered: {said}");
        tracing::warn!(workspace.id = %id, "agent exited before it registered");
        let change = StatusChange {
            transition: Transition::ProvisionFailed,
            payload: json!({"error": message, "code": "START_FAILED"}),
            failure: Some(("START_FAILED".to_owned(), message)),
        };
        if let Err(e) = self.record_provision_failure(id, change).await {
            tracing::error!(workspace.id = %id, error = %e, "could not mark workspace failed");
        }
    }

    /// Records a provisioning failure (`change` applies [`Transition::ProvisionFailed`], a
    /// compare-and-set from `provisioning`) and, when the row changed, stops the workspace's
    /// backend in a tracked task: a `failed` workspace has no agent left on any backend, whether
    /// the start it gave up on still runs (a provision timeout, a bootstrap failure), left
    /// processes or a container behind (an agent that exited, a start error), or is still
    /// starting. Every path that marks a workspace `failed` comes here. Returns whether the row
    /// changed.
    pub(crate) async fn record_provision_failure(
        &self,
        id: WorkspaceId,
        change: StatusChange,
    ) -> Result<bool, berth_store::Error> {
        // Read before the change: a start that begins after it is newer than the failure.
        let generation = self.latest_start(id);
        let changed = self.store.transition(id, change).await?;
        if changed && self.provisioner.kind() != BackendKind::None {
            let svc = self.clone();
            self.spawn(async move { svc.stop_failed(id, generation).await })
                .await;
        }
        Ok(changed)
    }

    /// Stops the backend of `id`, marked `failed` when its latest start was `generation`.
    /// Under the backend lock, so it waits for a start still in flight (which then finds the
    /// `failed` status and undoes itself as well), and never stops a newer start: one that
    /// began since (a restart of the failed workspace) leaves the agent alone.
    async fn stop_failed(&self, id: WorkspaceId, generation: Option<u64>) {
        let _backend = self.backend_lock(id).await;
        if self.latest_start(id) != generation {
            return;
        }
        match self.store.get_workspace(id).await {
            Ok(Some(w)) if w.status == WorkspaceStatus::Failed => {}
            Ok(_) => return,
            Err(e) => {
                tracing::error!(workspace.id = %id, error = %e, "could not re-read the failed workspace; its agent is not stopped");
                return;
            }
        }
        match self.provisioner.stop(id).await {
            Ok(()) => tracing::info!(workspace.id = %id, "backend of the failed workspace stopped"),
            Err(e) => {
                tracing::warn!(workspace.id = %id, error = %e, "stopping the failed workspace's backend failed");
            }
        }
    }

    /// Counts a start of `id` beginning on this instance; returns its generation.
    fn begin_start(&self, id: WorkspaceId) -> u64 {
        let mut generations = self
            .start_generations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let generation = generations.entry(id).or_default();
        *generation += 1;
        *generation
    }

    /// The generation of the latest start of `id` on this instance; `None` before the first
    /// (or after a purge).
    fn latest_start(&self, id: WorkspaceId) -> Option<u64> {
        self.start_generations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&id)
            .copied()
    }

    /// Whether a start of `id` newer than `generation` has begun on this instance.
    fn is_superseded(&self, id: WorkspaceId, generation: u64) -> bool {
        self.latest_start(id)
            .is_some_and(|latest| latest != generation)
    }

    /// Shared preparation (REFERENCE.md §5.0, §5.3): the workspace's secrets become its
    /// environment; a fresh token (all older ones revoked) and a fresh platform-inbound secret
    /// go into the configs directory as files. With no backend nothing is minted.
    async fn prepare(
        &self,
        plan: &ProvisionPlan,
    ) -> Result<ProvisionRequest, (&'static str, String)> {
        let fail = |code: &'static str| move |message: String| (code, message);
        let mut request = self.provision_request(plan);
        if self.provisioner.kind() == BackendKind::None {
            return Ok(request);
        }
        // Global secrets first, then the workspace's (which win on the same key).
        let global = self
            .store
            .open_secrets(SecretScope::Global)
            .await
            .map_err(|e| fail("PREPARE_FAILED")(format!("failed to read global secrets: {e}")))?;
        let workspace = self.store.workspace_secrets(plan.id).await.map_err(|e| {
            fail("PREPARE_FAILED")(format!("failed to decrypt workspace secret: {e}"))
        })?;
        let mut merged: BTreeMap<String, SecretString> = BTreeMap::new();
        for g in global {
            let value = g.value.map_err(|e| {
                fail("PREPARE_FAILED")(format!("failed to decrypt global secret {}: {e}", g.key))
            })?;
            merged.insert(g.key, value);
        }
        let forbidden: Vec<String> = merged
            .keys()
            .filter(|k| is_forbidden_operator_key(k) && !workspace.iter().any(|(wk, _)| wk == *k))
            .cloned()
            .collect();
        if !forbidden.is_empty() {
            return Err((
                "FORBIDDEN_ENV",
                format!(
                    "global secrets hold operator credentials that are never handed to workspaces: {}",
                    forbidden.join(", ")
                ),
            ));
        }
        for (k, v) in workspace {
            merged.insert(k, v);
        }
        let mut env: Vec<(String, SecretString)> = merged.into_iter().collect();
        if !plan.model.is_empty() {
            env.retain(|(k, _)| k != "MODEL" && k != "MOLECULE_MODEL");
            env.push(("MODEL".into(), SecretString::from(plan.model.clone())));
            env.push((
                "MOLECULE_MODEL".into(),
                SecretString::from(plan.model.clone()),
            ));
        }
        if !plan.role.is_empty() {
            env.push((
                "MOLECULE_AGENT_ROLE".into(),
                SecretString::from(plan.role.clone()),
            ));
        }
        for hook in &self.env_mutators {
            hook.mutate_env(plan.id, &mut env).await.map_err(|e| {
                (
                    "ENV_HOOK_FAILED",
                    format!("env mutator {:?} failed: {e}", hook.name()),
                )
            })?;
        }
        // `required_env` preflight (REFERENCE.md §4.4; the reference never ran it for Create).
        let missing: Vec<String> = plan
            .required_env
            .iter()
            .filter(|k| !env.iter().any(|(e, _)| e == *k))
            .cloned()
            .collect();
        if !missing.is_empty() {
            let names = missing
                .iter()
                .map(|k| format!("{k:?}"))
                .collect::<Vec<_>>()
                .join(", ");
            let plural = if missing.len() == 1 { "" } else { "s" };
            return Err((
                "MISSING_ENV",
                format!(
                    "missing required env var{plural} {names} — add it under Config → Env Vars (or as a Global secret) and retry"
                ),
            ));
        }
        request.env = env;
        let credentials = match &plan.credentials {
            Some(credentials) => credentials.clone(),
            None => self.mint_start_credentials(plan.id).await?,
        };
        request.secret_files = vec![
            (crate::inside::AUTH_TOKEN_FILE.into(), credentials.token),
            (
                crate::inside::INBOUND_SECRET_FILE.into(),
                credentials.inbound_secret,
            ),
        ];
        Ok(request)
    }

    /// A fresh token (every older one revoked) and inbound secret for a start, stored.
    async fn mint_start_credentials(
        &self,
        id: WorkspaceId,
    ) -> Result<StartCredentials, (&'static str, String)> {
        let minted = crate::token::mint();
        let how = IssueToken {
            revoke_existing: true,
            ..Default::default()
        };
        let issued = self.store.issue_token(id, minted.stored.clone(), how).await;
        // The previous start's token is revoked: not trusted from the cache either.
        self.forget_tokens(&[id]);
        issued.map_err(|e| {
            (
                "PREPARE_FAILED",
                format!("failed to mint workspace token: {e}"),
            )
        })?;
        let inbound = crate::token::mint().plaintext;
        self.store
            .set_inbound_secret(id, inbound.clone())
            .await
            .map_err(|e| {
                (
                    "PREPARE_FAILED",
                    format!("failed to store platform inbound secret: {e}"),
                )
            })?;
        Ok(StartCredentials {
            token: minted.plaintext,
            inbound_secret: inbound,
        })
    }

    pub(crate) fn provision_request(&self, plan: &ProvisionPlan) -> ProvisionRequest {
        // Template choice (REFERENCE.md §2.1 step 27): the named template, else
        // `<runtime>-default`, else a generated config.yaml.
        let template_path = plan
            .template_path
            .clone()
            .or_else(|| self.templates.runtime_default(&plan.runtime));
        let mut config_files = BTreeMap::new();
        if template_path.is_none() {
            let providers = (plan.runtime == "claude-code")
                .then(|| self.templates.claude_code_providers())
                .flatten();
            let cfg = DefaultConfig {
                name: &plan.name,
                role: &plan.role,
                tier: plan.tier,
                runtime: &plan.runtime,
                model: &plan.model,
                claude_code_providers: providers.as_ref(),
            };
            config_files.insert(
                "config.yaml".to_owned(),
                generated_default_config(&cfg).into_bytes(),
            );
        }
        config_files.extend(plan.config_files.clone());
        // The files API's edits come last: a deletion removes the path from the template's copy
        // and from what was generated or imported; a write replaces both.
        let mut removed_config_files = Vec::new();
        for edit in &plan.config_edits {
            match &edit.content {
                Some(content) => {
                    config_files.insert(edit.path.clone(), content.clone());
                }
                None => {
                    let beneath = format!("{}/", edit.path);
                    config_files
                        .retain(|path, _| path != &edit.path && !path.starts_with(&beneath));
                    removed_config_files.push(edit.path.clone());
                }
            }
        }
        ProvisionRequest {
            workspace_id: plan.id,
            name: plan.name.clone(),
            runtime: plan.runtime.clone(),
            tier: plan.tier,
            template_path,
            config_files,
            removed_config_files,
            workspace_dir: plan.workspace_dir.clone(),
            workspace_access: plan.workspace_access.clone(),
            compute: plan.compute.clone(),
            platform_url: self.config.agent_platform_url.clone(),
            env: Vec::new(),
            secret_files: Vec::new(),
        }
    }
}

/// Panic capture for a future, so a panicking backend cannot leave a workspace `provisioning`.
mod panics {
    use std::any::Any;
    use std::future::Future;

    /// Runs `fut` in its own task and turns a panic into an error message.
    pub(crate) async fn catch_unwind<F, T>(fut: F) -> Result<T, String>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        match tokio::spawn(fut).await {
            Ok(v) => Ok(v),
            Err(e) if e.is_panic() => Err(panic_message(e.into_panic())),
            Err(e) => Err(e.to_string()),
        }
    }

    fn panic_message(p: Box<dyn Any + Send>) -> String {
        if let Some(s) = p.downcast_ref::<&str>() {
            (*s).to_owned()
        } else if let Some(s) = p.downcast_ref::<String>() {
            s.clone()
        } else {
            "unknown panic".to_owned()
        }
    }
}

/// How often a fresh start's watch checks whether the workspace is still `provisioning`.
const START_WATCH_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// The values a start hands the agent that must never appear in a stored message: its
/// environment's values and its secret files (token, inbound secret). Short values (under 6
/// bytes) are left alone: redacting them would mangle ordinary words.
fn secret_values(request: &ProvisionRequest) -> Vec<String> {
    request
        .env
        .iter()
        .map(|(_, v)| v)
        .chain(request.secret_files.iter().map(|(_, v)| v))
        .map(|v| v.expose_secret().to_owned())
        .filter(|v| v.len() >= 6)
        .collect()
}

/// `text` with every occurrence of each of `secrets` replaced by `[redacted]`.
fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_owned();
    for secret in secrets {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), "[redacted]");
        }
    }
    out
}

#[cfg(test)]
mod redaction_tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_and_short_values_left_alone() {
        let secrets = vec!["s3cr3t-value".to_owned(), "tok-abcdef".to_owned()];
        assert_eq!(
            redact(
                "env: KEY=s3cr3t-value, token tok-abcdef; s3cr3t-value",
                &secrets
            ),
            "env: KEY=[redacted], token [redacted]; [redacted]"
        );
        assert_eq!(redact("nothing here", &secrets), "nothing here");
    }
}
